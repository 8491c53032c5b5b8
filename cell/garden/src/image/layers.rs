//! Layers into the cache: `layers/<sha256>/`, downloaded once per digest (pulls of a layer
//! in this process are serialised), streamed to a temporary file while hashed and sized
//! against the manifest's descriptor, unpacked only once verified, into a temporary dir
//! renamed into place. A mismatch leaves nothing in the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::reference::sha256_hex;
use super::registry::error_chain;
use super::{ImageError, ImageRef, Puller, Result, lock};
use crate::rootfs;

impl Puller {
    fn layer_lock(&self, hex: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.layer_locks)
            .entry(hex.to_string())
            .or_default()
            .clone()
    }

    /// `cache/<hex>`, downloading and unpacking the layer unless it is there; true if downloaded.
    pub(super) async fn layer(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cache: &Path,
    ) -> Result<(PathBuf, bool)> {
        let digest = desc.digest().to_string();
        let hex = sha256_hex(&digest)
            .map_err(|()| ImageError::BadDocument {
                image: image.to_string(),
                what: "manifest".into(),
                message: format!("bad layer digest {}", desc.digest()),
            })?
            .to_string();
        let dest = cache.join(&hex);
        if dest.is_dir() {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((dest, false));
        }
        let layer_lock = self.layer_lock(&hex);
        let result = {
            let _guard = layer_lock.lock().await;
            if dest.is_dir() {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                Ok((dest, false))
            } else {
                self.download_layer(image, desc, &hex, cache)
                    .await
                    .map(|d| {
                        self.downloads.fetch_add(1, Ordering::Relaxed);
                        (d, true)
                    })
            }
        };
        {
            let mut locks = lock(&self.layer_locks);
            // the map's reference and ours: nobody else waits on it
            if Arc::strong_count(&layer_lock) == 2 {
                locks.remove(&hex);
            }
        }
        result
    }

    async fn download_layer(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        hex: &str,
        cache: &Path,
    ) -> Result<PathBuf> {
        let cache_err = |source: crate::Error| ImageError::Cache {
            image: image.to_string(),
            digest: desc.digest().to_string(),
            source: Box::new(source),
        };
        tokio::fs::create_dir_all(cache)
            .await
            .map_err(|e| cache_err(crate::Error::io(format!("create {}", cache.display()), e)))?;
        let blob = cache.join(format!(".tmp-blob-{hex}-{}", uuid::Uuid::new_v4().simple()));
        let result = self.download_blob(image, desc, &blob).await;
        let result = match result {
            Ok(()) => {
                let (blob2, media_type, hex, cache) = (
                    blob.clone(),
                    desc.media_type().to_string(),
                    hex.to_string(),
                    cache.to_path_buf(),
                );
                tokio::task::spawn_blocking(move || {
                    rootfs::unpack_blob(&blob2, &media_type, &hex, &cache)
                })
                .await
                .map_err(|e| crate::Error::Transport(format!("unpack task: {e}")))
                .and_then(|r| r)
                .map_err(cache_err)
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&blob).await;
        result
    }

    /// Streams a blob into `path`, hashing it; `Err` (and `path` removed by the caller) when
    /// its size or digest is not the descriptor's.
    async fn download_blob(&self, image: &ImageRef, desc: &Descriptor, path: &Path) -> Result<()> {
        let url = format!("{}/blobs/{}", self.base_url(image)?, desc.digest());
        let mut resp = self.get(image, &url, "*/*").await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let io_err = |e: std::io::Error| ImageError::Cache {
            image: image.to_string(),
            digest: desc.digest().to_string(),
            source: Box::new(crate::Error::io(format!("write {}", path.display()), e)),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Transport {
            url: url.clone(),
            message: error_chain(&e),
        })? {
            size += chunk.len() as u64;
            if size > desc.size() {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {}", desc.digest()),
                    image: image.to_string(),
                    expected: desc.digest().to_string(),
                    actual: format!("(more than the {} bytes the manifest names)", desc.size()),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != desc.digest().to_string() {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {}", desc.digest()),
                image: image.to_string(),
                expected: desc.digest().to_string(),
                actual,
            });
        }
        tracing::debug!(image = %image, layer = %desc.digest(), size, "downloaded layer");
        Ok(())
    }
}
