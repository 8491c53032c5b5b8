//! A typed client of the blob store.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::SHA256_HEADER;
use crate::error::BlobError;
use crate::file::hex_digest;
use crate::key::{validate_key, validate_prefix};
use crate::store::BlobInfo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a local file per chunk of an upload.
const READ_CHUNK: usize = 64 * 1024;

/// Talks to a blob store at a base URL such as `http://10.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct BlobClient {
    base_url: String,
    http: reqwest::Client,
}

impl BlobClient {
    pub fn new(base_url: &str) -> BlobClient {
        Self::with_tls(base_url, None)
    }

    /// A client presenting `tls`'s identity to a blob store serving mutual TLS.
    pub fn with_tls(base_url: &str, tls: Option<&diego_tls::Tls>) -> BlobClient {
        BlobClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: diego_tls::client_builder(tls)
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// The absolute URL of `key`, the one cells download from. Valid keys need no escaping;
    /// an invalid key gives a URL the server refuses.
    pub fn url(&self, key: &str) -> String {
        format!("{}/v1/blobs/{key}", self.base_url)
    }

    fn list_url(&self) -> String {
        format!("{}/v1/blobs", self.base_url)
    }

    /// Sends a request and turns a non-2xx answer into an error naming `key`.
    async fn send(
        &self,
        key: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BlobError> {
        let response = request.send().await.map_err(|source| BlobError::Request {
            key: key.to_owned(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(BlobError::NotFound {
                key: key.to_owned(),
            });
        }
        let message = response.text().await.unwrap_or_default();
        Err(BlobError::Server {
            key: key.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        key: &str,
        response: reqwest::Response,
    ) -> Result<T, BlobError> {
        response.json().await.map_err(|source| BlobError::Request {
            key: key.to_owned(),
            source,
        })
    }

    /// Uploads `bytes` as `key`; the server checks them against their sha256.
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<BlobInfo, BlobError> {
        validate_key(key)?;
        let bytes = bytes.into();
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        let sha256 = hex_digest(hasher);
        let request = self
            .http
            .put(self.url(key))
            .query(&[("sha256", &sha256)])
            .body(bytes);
        Self::json(key, self.send(key, request).await?).await
    }

    /// Streams the file at `path` as `key`. The file is hashed first, so the server stores it
    /// only if what arrived is what the file held.
    pub async fn put_file(&self, key: &str, path: impl AsRef<Path>) -> Result<BlobInfo, BlobError> {
        validate_key(key)?;
        let path = path.as_ref();
        let open = || async {
            tokio::fs::File::open(path)
                .await
                .map_err(BlobError::io(format!(
                    "cannot open {} to upload as {key:?}",
                    path.display()
                )))
        };
        let read_error = || {
            BlobError::io(format!(
                "cannot read {} to upload as {key:?}",
                path.display()
            ))
        };
        let mut file = open().await?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer).await.map_err(read_error())?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buffer[..n]);
        }
        let sha256 = hex_digest(hasher);
        let file = open().await?;
        let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, READ_CHUNK));
        let request = self
            .http
            .put(self.url(key))
            .query(&[("sha256", &sha256)])
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        Self::json(key, self.send(key, request).await?).await
    }

    /// The whole blob in memory, checked against its digest.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, BlobError> {
        validate_key(key)?;
        let response = self.send(key, self.http.get(self.url(key))).await?;
        let expected = digest_header(&response);
        let bytes = response
            .bytes()
            .await
            .map_err(|source| BlobError::Request {
                key: key.to_owned(),
                source,
            })?;
        if let Some(expected) = expected {
            let mut hasher = Sha256::new();
            hasher.update(&bytes);
            check_digest(key, expected, hex_digest(hasher))?;
        }
        Ok(bytes)
    }

    /// Streams the blob into `path`, atomically: to a temp file beside it, checked against
    /// the digest, then renamed. On any failure `path` is untouched.
    pub async fn download_to(
        &self,
        key: &str,
        path: impl AsRef<Path>,
    ) -> Result<BlobInfo, BlobError> {
        validate_key(key)?;
        let path = path.as_ref();
        let response = self.send(key, self.http.get(self.url(key))).await?;
        let expected = digest_header(&response);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let write_error =
            || BlobError::io(format!("cannot write blob {key:?} to {}", path.display()));
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .map_err(write_error())?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| BlobError::Request {
                key: key.to_owned(),
                source,
            })?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_error())?;
        }
        file.flush().await.map_err(write_error())?;
        file.sync_all().await.map_err(write_error())?;
        drop(file);
        let sha256 = hex_digest(hasher);
        if let Some(expected) = expected {
            check_digest(key, expected, sha256.clone())?;
        }
        temp_path
            .persist(path)
            .map_err(|e| write_error()(e.error))?;
        Ok(BlobInfo {
            key: key.to_owned(),
            size,
            sha256,
        })
    }

    /// The size and digest of `key` (a `HEAD`).
    pub async fn info(&self, key: &str) -> Result<BlobInfo, BlobError> {
        validate_key(key)?;
        let response = self.send(key, self.http.head(self.url(key))).await?;
        let malformed = |what: &str| BlobError::Server {
            key: key.to_owned(),
            status: response.status().as_u16(),
            message: format!("the reply has no valid {what}"),
        };
        let size = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("Content-Length"))?;
        let sha256 = digest_header(&response).ok_or_else(|| malformed(SHA256_HEADER))?;
        Ok(BlobInfo {
            key: key.to_owned(),
            size,
            sha256,
        })
    }

    /// Deletes `key`; `NotFound` if there was no such blob.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        self.send(key, self.http.delete(self.url(key))).await?;
        Ok(())
    }

    /// Deletes every blob whose key starts with `prefix` (not empty); returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlobError> {
        validate_prefix(prefix)?;
        let request = self
            .http
            .delete(self.list_url())
            .query(&[("prefix", prefix)]);
        let response = self.send(prefix, request).await?;
        #[derive(serde::Deserialize)]
        struct Deleted {
            deleted: u64,
        }
        let deleted: Deleted = Self::json(prefix, response).await?;
        Ok(deleted.deleted)
    }

    /// Every blob whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>, BlobError> {
        validate_prefix(prefix)?;
        let request = self.http.get(self.list_url()).query(&[("prefix", prefix)]);
        Self::json(prefix, self.send(prefix, request).await?).await
    }
}

fn digest_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn check_digest(key: &str, expected: String, actual: String) -> Result<(), BlobError> {
    if expected == actual {
        Ok(())
    } else {
        Err(BlobError::DigestMismatch {
            key: key.to_owned(),
            expected,
            actual,
        })
    }
}
