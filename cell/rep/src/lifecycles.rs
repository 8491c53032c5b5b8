//! The cell's lifecycle plug-ins: one Wasm host per rep, components fetched by URL, verified
//! by sha256, cached on disk and kept loaded by sha256.
//!
//! Loading (compiling) a component is the expensive part, so a component is loaded once per
//! rep and shared by every staging task that names its sha256; concurrent tasks naming the same
//! component wait for one fetch and one load. On disk, `DATA_DIR/lifecycles/components/SHA.wasm`
//! survives restarts (re-verified on every read, written atomically), and the host keeps its
//! precompiled code in `DATA_DIR/lifecycles/compiled` (so a restarted rep skips compiling too).
//! The host is made on first use: a cell that never stages never reserves its engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use diego_host::lifecycle::LifecyclePlugin;
use diego_host::{Host, HostConfig, HostError, LoadError};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// Largest component accepted (the host's own cap).
const MAX_COMPONENT_BYTES: u64 = 16 << 20;
/// Concurrent guest calls (pool slots): staging calls are short and few per cell.
const MAX_INSTANCES: u32 = 8;

/// Why a lifecycle component could not be had. Its text is the staging task's failure reason.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("downloading the lifecycle component {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("the lifecycle component {url} is over the {max}-byte limit")]
    TooLarge { url: String, max: u64 },
    #[error(
        "the lifecycle component {url} does not match its sha256: expected {expected}, got {actual}"
    )]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("caching the lifecycle component in {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error("the plug-in host cannot start: {0}")]
    Host(#[from] HostError),
    #[error("the lifecycle component {url} cannot be loaded: {source}")]
    Load { url: String, source: LoadError },
    #[error("loading the lifecycle component stopped: {0}")]
    Join(String),
}

/// The rep's lifecycle plug-ins (see the module doc).
pub(crate) struct Lifecycles {
    dir: PathBuf,
    http: reqwest::Client,
    host: OnceCell<Host>,
    loaded: Mutex<HashMap<String, Arc<OnceCell<LifecyclePlugin>>>>,
}

impl std::fmt::Debug for Lifecycles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Lifecycles {
    /// Lifecycles kept under `dir` (the rep's `DATA_DIR/lifecycles`), fetched through `http`.
    pub fn new(dir: PathBuf, http: reqwest::Client) -> Lifecycles {
        Lifecycles {
            dir,
            http,
            host: OnceCell::new(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The cell's client for the blob store and download URLs (with its TLS identity).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn component_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("components").join(format!("{sha256}.wasm"))
    }

    /// The loaded component of `sha256`, fetched from `url` (or the disk cache) if this rep has
    /// not loaded it yet.
    pub async fn plugin(&self, url: &str, sha256: &str) -> Result<LifecyclePlugin, ComponentError> {
        let cell = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded.entry(sha256.to_string()).or_default().clone()
        };
        let loaded = cell
            .get_or_try_init(|| self.fetch_and_load(url, sha256))
            .await
            .cloned();
        if loaded.is_err() {
            // only loaded components stay listed: refused shas do not pile up
            let mut listed = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if listed
                .get(sha256)
                .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
            {
                listed.remove(sha256);
            }
        }
        loaded
    }

    async fn host(&self) -> Result<&Host, ComponentError> {
        self.host
            .get_or_try_init(|| async {
                let mut config = HostConfig::new(self.dir.join("compiled"));
                config.max_component_bytes = MAX_COMPONENT_BYTES;
                config.max_instances = MAX_INSTANCES;
                Ok(Host::new(config)?)
            })
            .await
    }

    async fn fetch_and_load(
        &self,
        url: &str,
        sha256: &str,
    ) -> Result<LifecyclePlugin, ComponentError> {
        let path = self.component_path(sha256);
        let bytes = match read_verified(&path, sha256).await {
            Some(bytes) => bytes,
            None => {
                let bytes = self.download(url).await?;
                let actual = hex_sha256(&bytes);
                if actual != sha256 {
                    return Err(ComponentError::Checksum {
                        url: url.to_string(),
                        expected: sha256.to_string(),
                        actual,
                    });
                }
                write_atomically(&path, &bytes).await?;
                tracing::info!(%url, %sha256, bytes = bytes.len(), "lifecycle component cached");
                bytes
            }
        };
        let host = self.host().await?.clone();
        let started = std::time::Instant::now();
        // compiling is CPU-bound and blocking (tens of ms to seconds)
        let loaded = tokio::task::spawn_blocking(move || host.load_lifecycle(&bytes))
            .await
            .map_err(|e| ComponentError::Join(e.to_string()))?
            .map_err(|source| ComponentError::Load {
                url: url.to_string(),
                source,
            })?;
        tracing::info!(%sha256, name = %loaded.describe().name, elapsed = ?started.elapsed(), "lifecycle component loaded");
        Ok(loaded)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, ComponentError> {
        let failed = |reason: String| ComponentError::Download {
            url: url.to_string(),
            reason,
        };
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(e.to_string()))?;
        let too_large = || ComponentError::TooLarge {
            url: url.to_string(),
            max: MAX_COMPONENT_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_COMPONENT_BYTES)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if (bytes.len() + chunk.len()) as u64 > MAX_COMPONENT_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The cached component at `path` if it is there and still matches `sha256`.
async fn read_verified(path: &Path, sha256: &str) -> Option<Vec<u8>> {
    let bytes = tokio::fs::read(path).await.ok()?;
    if hex_sha256(&bytes) == sha256 {
        return Some(bytes);
    }
    tracing::warn!(path = %path.display(), "cached lifecycle component is corrupt; fetching it again");
    None
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a reader
/// never sees half a component.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ComponentError> {
    let cache_err = |source: std::io::Error| ComponentError::Cache {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| cache_err(std::io::Error::other("no parent directory")))?;
    tokio::fs::create_dir_all(dir).await.map_err(cache_err)?;
    let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let written = async {
        tokio::fs::write(&temp, bytes).await?;
        tokio::fs::File::open(&temp).await?.sync_all().await?;
        tokio::fs::rename(&temp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    written.map_err(cache_err)
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cached_component_is_reread_only_while_it_matches_its_sha256() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("components/x.wasm");
        let sha = hex_sha256(b"component");
        write_atomically(&path, b"component")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(
            read_verified(&path, &sha).await.as_deref(),
            Some(&b"component"[..])
        );
        std::fs::write(&path, b"corrupt").unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(read_verified(&path, &sha).await, None);
        let leftovers = std::fs::read_dir(dir.path().join("components"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
