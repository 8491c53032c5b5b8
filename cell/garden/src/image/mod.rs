//! Images from OCI registries (the distribution API): resolve `docker://HOST[:PORT]/NAME[:TAG]`
//! (or `docker:///NAME` on the default registry), read the image's config, and pull its layers
//! into the depot's layer cache (`layers/<sha256>/`, the cache [`crate::rootfs`] fills from OCI
//! layouts), so containers from the same image share them.
//!
//! Every blob (manifest by digest, config, layer) is checked against its sha256 digest; a layer
//! is streamed to a temporary file while it is hashed, unpacked only once it verified, into a
//! temporary dir renamed into place. A mismatch leaves nothing in the cache. Pulls of one layer
//! in this process are serialised, so two containers created together download it once; two
//! processes sharing a depot at worst both download it (the rename decides, nothing is torn).
//!
//! Registries on loopback and those listed in [`RegistryConfig::insecure_registries`] are spoken
//! to over plain HTTP, all others over HTTPS (which needs the crate's `tls` feature). Auth is
//! anonymous, or per the distribution spec's `WWW-Authenticate` challenge: Basic with configured
//! credentials, or a Bearer token fetched from the challenge's realm (with the credentials, if
//! any, else anonymously).
//!
//! Split by concern: `reference` (parsing `docker://` references), `registry` (the HTTP
//! client: auth, tokens, manifests), `config` (resolving manifest, index and config with
//! `oci_spec::image`'s types), `layers` (download, digest verification while streaming, the
//! layer cache); this module holds the public types and [`Puller`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

mod config;
mod layers;
mod reference;
mod registry;

pub use reference::ImageRef;

/// Docker Hub, the registry of `docker:///name` unless configured otherwise.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Everything that can go wrong resolving or pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed.
    #[error("bad image reference {reference:?}: {reason}")]
    BadReference {
        /// As given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry has no such repository, tag or blob.
    #[error("image {image} not found: {message}")]
    NotFound {
        /// The image reference.
        image: String,
        /// The registry's words.
        message: String,
    },
    /// The registry refused our credentials (or their absence).
    #[error("registry refused access to {image}: {message}")]
    Unauthorized {
        /// The image reference.
        image: String,
        /// The registry's words.
        message: String,
    },
    /// A blob's content does not match its digest; nothing of it was kept.
    #[error("digest mismatch for {what} of {image}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `layer sha256:…`, `config`, `manifest`.
        what: String,
        /// The image reference.
        image: String,
        /// The digest the manifest names.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry answered {status} for {url}: {message}")]
    Registry {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body (truncated).
        message: String,
    },
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach registry for {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The image uses something we do not support (schema 1, no linux manifest, zstd layers).
    #[error("image {image} is not supported: {message}")]
    Unsupported {
        /// The image reference.
        image: String,
        /// Why.
        message: String,
    },
    /// A manifest, index or config is malformed.
    #[error("image {image}: bad {what}: {message}")]
    BadDocument {
        /// The image reference.
        image: String,
        /// `manifest`, `index`, `config`.
        what: String,
        /// The parse error.
        message: String,
    },
    /// An HTTPS registry, but this build has no TLS.
    #[error(
        "registry {registry} needs https: build diego-garden with the `tls` feature, or list it in insecure_registries"
    )]
    TlsUnavailable {
        /// The registry host.
        registry: String,
    },
    /// Writing to or unpacking into the layer cache failed.
    #[error("layer {digest} of {image}: {source}")]
    Cache {
        /// The image reference.
        image: String,
        /// The layer digest.
        digest: String,
        /// The underlying error.
        #[source]
        source: Box<crate::Error>,
    },
}

impl From<ImageError> for crate::Error {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::BadReference { .. }
            | ImageError::NotFound { .. }
            | ImageError::Unauthorized { .. }
            | ImageError::Unsupported { .. } => crate::Error::InvalidRequest(e.to_string()),
            other => crate::Error::io("pull image", std::io::Error::other(other)),
        }
    }
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Username and password for a registry (Basic auth, or to obtain a Bearer token).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where images come from and how to talk to their registries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// Registry of `docker:///name` (default Docker Hub).
    pub default_registry: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Credentials per registry (`host[:port]`).
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            default_registry: DOCKER_HUB.into(),
            insecure_registries: Vec::new(),
            credentials: BTreeMap::new(),
        }
    }
}

/// A port the image exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExposedPort {
    /// Port number.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
}

/// Transport protocol of an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default when the image names none).
    Tcp,
    /// UDP.
    Udp,
}

/// What the builder records of an image: its process defaults and where it was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// The reference as normalised (`docker://host/repo:tag`).
    pub reference: String,
    /// The digest of the (platform) manifest; pulling `…@digest` gets exactly this image.
    pub manifest_digest: String,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `User` (name, uid or uid:gid), if set.
    pub user: Option<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `ExposedPorts`, sorted.
    pub exposed_ports: Vec<ExposedPort>,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

impl ImageConfig {
    /// The argv to run, Docker's way: an `entrypoint` override replaces the image's entrypoint
    /// and drops its cmd; a `cmd` override replaces the cmd. Empty when the image names nothing.
    pub fn argv(&self, entrypoint: Option<&[String]>, cmd: Option<&[String]>) -> Vec<String> {
        let (ep, default_cmd): (&[String], &[String]) = match entrypoint {
            Some(ep) => (ep, &[]),
            None => (&self.entrypoint, &self.cmd),
        };
        let mut argv = ep.to_vec();
        argv.extend_from_slice(cmd.unwrap_or(default_cmd));
        argv
    }
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Layers downloaded by this pull.
    pub downloaded: Vec<String>,
    /// Layers found in the cache.
    pub cached: Vec<String>,
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Its config.
    pub config: ImageConfig,
    /// Overlayfs lower dirs, top layer first.
    pub lower_dirs: Vec<PathBuf>,
    /// What was downloaded.
    pub stats: PullStats,
}

/// Pulls images; one per backend, so concurrent pulls of a layer are serialised.
#[derive(Debug)]
pub struct Puller {
    cfg: RegistryConfig,
    http: reqwest::Client,
    /// `Authorization` values per `registry/repository`.
    auth: Mutex<HashMap<String, String>>,
    /// One lock per layer digest being pulled.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
    cache_hits: AtomicU64,
}

/// `sha256:HEX` of `data`.
fn digest_of(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Puller {
    fn default() -> Self {
        Puller::new(RegistryConfig::default())
    }
}

/// Reads an image's config (for the builder), with the default [`RegistryConfig`].
pub async fn inspect(reference: &str) -> Result<ImageConfig> {
    Puller::default().inspect(reference).await
}

impl Puller {
    /// A puller for `cfg`.
    pub fn new(cfg: RegistryConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "registry client with default settings");
                reqwest::Client::new()
            });
        Puller {
            cfg,
            http,
            auth: Mutex::new(HashMap::new()),
            layer_locks: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// The registry settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Layers downloaded and layers found cached, since this puller was made.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.downloads.load(Ordering::Relaxed),
            self.cache_hits.load(Ordering::Relaxed),
        )
    }

    /// Parses `reference` with this puller's default registry.
    pub fn parse(&self, reference: &str) -> Result<ImageRef> {
        ImageRef::parse(reference, &self.cfg.default_registry)
    }

    /// Resolves `reference` and reads its config; downloads no layer.
    pub async fn inspect(&self, reference: &str) -> Result<ImageConfig> {
        let image = self.parse(reference)?;
        Ok(self.resolve(&image).await?.0)
    }

    /// Resolves `reference` and makes sure every layer is in `cache` (`layers/<sha256>/`).
    pub async fn pull(&self, reference: &str, cache: &Path) -> Result<PulledImage> {
        let image = self.parse(reference)?;
        let (config, layers) = self.resolve(&image).await?;
        let mut stats = PullStats::default();
        let mut lower_dirs = Vec::with_capacity(layers.len());
        for layer in &layers {
            let (dir, downloaded) = self.layer(&image, layer, cache).await?;
            if downloaded {
                stats.downloaded.push(layer.digest().to_string());
            } else {
                stats.cached.push(layer.digest().to_string());
            }
            lower_dirs.push(dir);
        }
        lower_dirs.reverse();
        tracing::info!(image = %image, downloaded = stats.downloaded.len(), cached = stats.cached.len(), "pulled image");
        Ok(PulledImage {
            config,
            lower_dirs,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_follows_docker() {
        let c = ImageConfig {
            reference: String::new(),
            manifest_digest: String::new(),
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec![],
            user: None,
            working_dir: None,
            exposed_ports: vec![],
            layers: vec![],
        };
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(c.argv(None, None), s(&["/bin/app", "--serve"]));
        assert_eq!(c.argv(None, Some(&s(&["x"]))), s(&["/bin/app", "x"]));
        assert_eq!(c.argv(Some(&s(&["sh"])), None), s(&["sh"]));
        assert_eq!(
            c.argv(Some(&s(&["sh"])), Some(&s(&["-c", "x"]))),
            s(&["sh", "-c", "x"])
        );
    }

    #[tokio::test]
    async fn https_needs_tls() {
        if cfg!(feature = "tls") {
            return;
        }
        let err = inspect("docker://registry.example/app:v1")
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::TlsUnavailable { .. }), "{err}");
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
