//! The blob store as this API uses it: app bits, droplets, buildpacks, lifecycle components.
//!
//! Keys: `apps/<guid>/bits/<sha256>.zip`, `droplets/<guid>/<n>.tgz`,
//! `buildpacks/<name>/<sha256>.zip`, `lifecycles/<sha256>.wasm`.

use std::path::Path;

use diego_blobstore::{BlobClient, BlobError};

#[derive(Debug, thiserror::Error)]
#[error("blob store: {0}")]
pub struct BlobsError(String);

fn err(e: impl std::fmt::Display) -> BlobsError {
    BlobsError(e.to_string())
}

#[derive(Debug, Clone)]
pub struct Blobs {
    client: BlobClient,
}

impl Blobs {
    pub fn new(base_url: &str, tls: Option<&diego_tls::Tls>) -> Self {
        Blobs {
            client: BlobClient::with_tls(base_url, tls),
        }
    }

    /// The absolute URL cells download `key` from (and upload it to).
    pub fn url(&self, key: &str) -> String {
        self.client.url(key)
    }

    /// Stores the file at `key`; returns its sha256.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<String, BlobsError> {
        Ok(self.client.put_file(key, path).await.map_err(err)?.sha256)
    }

    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<String, BlobsError> {
        Ok(self.client.put_bytes(key, bytes).await.map_err(err)?.sha256)
    }

    /// The stored blob's sha256, or `None` if there is no such blob.
    pub async fn sha256(&self, key: &str) -> Result<Option<String>, BlobsError> {
        match self.client.info(key).await {
            Ok(info) => Ok(Some(info.sha256)),
            Err(BlobError::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// The blob's bytes, or `None` if there is no such blob.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<bytes::Bytes>, BlobsError> {
        match self.client.get_bytes(key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(BlobError::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Deletes `key`; a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobsError> {
        match self.client.delete(key).await {
            Ok(()) | Err(BlobError::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// The keys under `prefix` (which ends with `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobsError> {
        Ok(self
            .client
            .list(prefix)
            .await
            .map_err(err)?
            .into_iter()
            .map(|b| b.key)
            .collect())
    }

    /// Deletes every blob under `prefix` (which ends with `/`).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobsError> {
        self.client
            .delete_prefix(prefix)
            .await
            .map_err(err)
            .map(|_| ())
    }
}

/// The key of an app's bits.
pub fn bits_key(app_guid: &str, sha256: &str) -> String {
    format!("apps/{app_guid}/bits/{sha256}.zip")
}

/// The key of an app's build cache (what buildpacks keep between stagings; a tar of the
/// staging container's cache directory, replaced by every staging).
pub fn build_cache_key(app_guid: &str) -> String {
    format!("apps/{app_guid}/build-cache.tar")
}

/// The key of an app's `n`th droplet.
pub fn droplet_key(app_guid: &str, n: u64) -> String {
    format!("droplets/{app_guid}/{n}.tgz")
}

pub fn buildpack_key(name: &str, sha256: &str) -> String {
    format!("buildpacks/{name}/{sha256}.zip")
}
