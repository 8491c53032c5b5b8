//! Lifecycle plug-ins an operator added to the platform.
//!
//! Beyond Diego: Diego's lifecycles are bundles of binaries the Cloud Controller is configured
//! with. Here a lifecycle is a WebAssembly component: its bytes live in the blob store and the
//! BBS records which ones exist, so every cell and a restarted platform find them. The
//! built-in buildpack and docker lifecycles ship inside the binary and are not recorded.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::validate::Problems;

/// The longest lifecycle name (a DNS label).
pub const MAX_LIFECYCLE_NAME_LEN: usize = 63;
/// How many versions a record keeps (older ones drop off the list; droplets staged with them
/// keep working, since their components stay in the blob store).
pub const MAX_LIFECYCLE_VERSIONS: usize = 20;
/// Names the built-in lifecycles use, refused for added ones.
pub const BUILTIN_LIFECYCLES: [&str; 2] = ["buildpack", "docker"];

const MAX_TEXT_LEN: usize = 1024;

/// A lifecycle an operator added, with every version added so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LifecycleRecord {
    /// What apps name it by (`diego push --lifecycle NAME`).
    pub name: String,
    /// Oldest first; the last is the current one, which staging uses.
    pub versions: Vec<LifecycleVersion>,
}

impl LifecycleRecord {
    /// The version staging uses now.
    pub fn current(&self) -> Option<&LifecycleVersion> {
        self.versions.last()
    }
}

/// One component of a lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LifecycleVersion {
    /// The version the component describes itself with.
    pub version: String,
    /// The component's sha256 (64 lowercase hex digits).
    pub sha256: String,
    /// Where cells download it (the blob store).
    pub url: String,
    /// The name the component describes itself with.
    pub component_name: String,
    /// Diego's `lifecycle_type` it implements.
    pub lifecycle_type: String,
    /// The versioned interface it exports, e.g. `diego:lifecycle/plugin@0.1.0`.
    pub export: String,
    pub size_bytes: u64,
    /// When it was added (ns since the epoch).
    pub added_at: Timestamp,
}

/// Whether `name` may name an added lifecycle: a DNS label, not a built-in's name.
pub fn validate_lifecycle_name(name: &str, p: &mut Problems) {
    let label = !name.is_empty()
        && name.len() <= MAX_LIFECYCLE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    p.check(label, || {
        format!(
            "lifecycle name {name:?} must be 1 to {MAX_LIFECYCLE_NAME_LEN} lowercase letters, digits and dashes, not starting or ending with a dash"
        )
    });
    p.check(!BUILTIN_LIFECYCLES.contains(&name), || {
        format!("{name:?} is a built-in lifecycle's name")
    });
}

impl LifecycleVersion {
    pub fn validate_into(&self, p: &mut Problems) {
        let text = |field: &str, value: &str, p: &mut Problems| {
            p.check(
                value.len() <= MAX_TEXT_LEN && !value.chars().any(char::is_control),
                || {
                    format!(
                        "{field} must be at most {MAX_TEXT_LEN} bytes without control characters"
                    )
                },
            );
        };
        p.check(!self.version.trim().is_empty(), || {
            "version is required".to_string()
        });
        text("version", &self.version, p);
        text("component_name", &self.component_name, p);
        text("lifecycle_type", &self.lifecycle_type, p);
        text("export", &self.export, p);
        text("url", &self.url, p);
        p.check(
            self.sha256.len() == 64
                && self
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            || "sha256 must be 64 lowercase hex digits".to_string(),
        );
        p.check(
            self.url.starts_with("http://") || self.url.starts_with("https://"),
            || format!("url {:?} must be an http or https URL", self.url),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(name: &str) -> Vec<String> {
        let mut p = Problems::new();
        validate_lifecycle_name(name, &mut p);
        p.into_request_result()
            .err()
            .map(|e| vec![e.message])
            .unwrap_or_default()
    }

    #[test]
    fn names_are_dns_labels_and_not_builtins() {
        assert!(problems("static-site").is_empty());
        assert!(problems("a1").is_empty());
        for bad in [
            "",
            "Static",
            "a/b",
            "-a",
            "a-",
            "docker",
            "buildpack",
            &"a".repeat(64),
        ] {
            assert!(!problems(bad).is_empty(), "{bad:?} is refused");
        }
    }

    #[test]
    fn versions_need_a_digest_and_a_url() {
        let mut v = LifecycleVersion {
            version: "1.0.0".into(),
            sha256: "a".repeat(64),
            url: "http://127.0.0.1:8891/v1/blobs/lifecycles/x.wasm".into(),
            ..LifecycleVersion::default()
        };
        let mut p = Problems::new();
        v.validate_into(&mut p);
        assert!(p.into_request_result().is_ok());
        v.sha256 = "A".repeat(64);
        v.url = "file:///etc/passwd".into();
        let mut p = Problems::new();
        v.validate_into(&mut p);
        let message = p.into_request_result().unwrap_err().message;
        assert!(
            message.contains("sha256") && message.contains("url"),
            "{message}"
        );
    }
}
