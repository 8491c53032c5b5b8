//! Staging by a lifecycle plug-in: what a staging Task carries and what it results in.
//!
//! Beyond Diego: Diego's staging task downloads the lifecycle's `builder` binary and runs it
//! with a RunAction. Here a lifecycle is a WebAssembly component that the cell's rep runs
//! natively (`diego-lifecycle-runner`) in the task's container; the task names the component
//! and carries the staging request instead of an action. The result (the task's `result`) is
//! Diego's staging result JSON, [`StagingResult`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// Largest staging timeout a task may ask for (Diego's default staging timeout is 15 min).
pub const MAX_STAGING_TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// A staging Task's instructions to the rep: which lifecycle, and the staging request for it.
/// The task's `env`, `memory_mb`, `disk_mb`, `image_username`/`image_password` (registry
/// credentials) and `log_guid` apply as for any task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleStaging {
    /// Where the cell downloads the lifecycle component (a `.wasm` file).
    pub lifecycle_url: String,
    /// The component's sha256 (64 lowercase hex digits); the rep refuses other bytes and
    /// caches components by it.
    pub lifecycle_sha256: String,
    /// The stack (e.g. `cflinuxfs4`); informational for docker staging.
    pub stack: String,
    /// Where the app bits (a zip or tgz) are downloaded from; empty for docker staging.
    pub app_bits_url: String,
    /// Where the droplet (a tgz) is uploaded; empty for docker staging.
    pub droplet_upload_url: String,
    /// The buildpack cache: downloaded before and uploaded after staging; empty for none.
    pub build_cache_download_url: String,
    pub build_cache_upload_url: String,
    /// Buildpacks in detection order; a single one with `skip_detect` is used as named.
    pub buildpacks: Vec<StagingBuildpack>,
    /// A Docker image reference; when set the docker path is taken (no container, no bits).
    pub docker_image: String,
    /// Guest-specific options (the WIT's `options`).
    pub options: BTreeMap<String, String>,
    /// Staging gives up after this long (0: the rep's default, 15 minutes).
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StagingBuildpack {
    pub name: String,
    pub key: String,
    /// Where the buildpack (a zip or tgz) is downloaded from.
    pub url: String,
    pub skip_detect: bool,
}

impl LifecycleStaging {
    pub fn validate_into(&self, p: &mut Problems) {
        let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        p.check(url_ok(&self.lifecycle_url), || {
            format!(
                "lifecycle_staging.lifecycle_url {:?} must be an http or https URL",
                self.lifecycle_url
            )
        });
        p.check(
            self.lifecycle_sha256.len() == 64
                && self
                    .lifecycle_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            || "lifecycle_staging.lifecycle_sha256 must be 64 lowercase hex digits".to_string(),
        );
        if self.docker_image.trim().is_empty() {
            for (name, url) in [
                ("app_bits_url", &self.app_bits_url),
                ("droplet_upload_url", &self.droplet_upload_url),
            ] {
                p.check(url_ok(url), || {
                    format!("lifecycle_staging.{name} {url:?} must be an http or https URL")
                });
            }
        }
        for (name, url) in [
            ("build_cache_download_url", &self.build_cache_download_url),
            ("build_cache_upload_url", &self.build_cache_upload_url),
        ] {
            p.check(url.is_empty() || url_ok(url), || {
                format!("lifecycle_staging.{name} {url:?} must be empty or an http or https URL")
            });
        }
        for (i, bp) in self.buildpacks.iter().enumerate() {
            p.check(!bp.name.is_empty() && url_ok(&bp.url), || {
                format!("lifecycle_staging.buildpacks[{i}] needs a name and an http or https url")
            });
        }
        p.check(self.timeout_ms <= MAX_STAGING_TIMEOUT_MS, || {
            format!(
                "lifecycle_staging.timeout_ms {} is over the limit of {MAX_STAGING_TIMEOUT_MS}",
                self.timeout_ms
            )
        });
    }
}

/// Diego's staging result JSON (what the builder writes to its result file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct StagingResult {
    pub lifecycle_type: String,
    pub lifecycle_metadata: LifecycleMetadata,
    /// Process type name (e.g. `web`) to its start command.
    pub process_types: BTreeMap<String, String>,
    /// The lifecycle's opaque execution metadata, handed back to its launcher.
    pub execution_metadata: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LifecycleMetadata {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub buildpack_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detected_buildpack: String,
    pub buildpacks: Vec<BuildpackMetadata>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub docker_image: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BuildpackMetadata {
    pub key: String,
    pub name: String,
    pub version: String,
}
