//! Blobs on local disk: atomic writes, reads of a consistent version, listing and deletion.
//!
//! Layout under the store's directory: `blobs/<key>` holds each blob (header + bytes, see
//! `file`), `tmp/` holds uploads in progress. Both are on one filesystem, so a finished upload
//! is renamed into place atomically; `tmp/` is emptied on open, so an upload interrupted by a
//! crash leaves nothing behind either.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::error::BlobError;
use crate::file::{HEADER_LEN, Header, hex_digest, is_sha256_hex};
use crate::key::{validate_key, validate_prefix};

/// What the store knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Limits of a [`BlobStore`].
#[derive(Debug, Clone, Copy)]
pub struct BlobStoreConfig {
    /// The largest blob accepted (413 beyond).
    pub max_blob_bytes: u64,
    /// Writes are refused (507) when the filesystem would have less than this free.
    pub min_free_bytes: u64,
}

impl Default for BlobStoreConfig {
    fn default() -> Self {
        BlobStoreConfig {
            max_blob_bytes: 2 << 30,
            min_free_bytes: 512 << 20,
        }
    }
}

/// The disk is checked again after every this many bytes of an upload.
const FREE_CHECK_EVERY: u64 = 64 << 20;

/// Blobs under one directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub(crate) config: BlobStoreConfig,
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store in `dir` with the default limits.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, BlobError> {
        Self::open_with(dir, BlobStoreConfig::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, config: BlobStoreConfig) -> Result<Self, BlobError> {
        let root = dir.as_ref().to_path_buf();
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(BlobError::io(format!("cannot create {}", dir.display())))?;
        }
        // Whatever is in tmp/ was being uploaded when a previous process died.
        let entries = std::fs::read_dir(&tmp)
            .map_err(BlobError::io(format!("cannot read {}", tmp.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "removed an interrupted upload"),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove an interrupted upload")
                }
            }
        }
        Ok(BlobStore {
            config,
            root,
            blobs,
            tmp,
        })
    }

    pub fn config(&self) -> BlobStoreConfig {
        self.config
    }

    fn path_of(&self, key: &str) -> PathBuf {
        // Keys are validated: relative, no `.`/`..`, so the join stays under `blobs/`.
        self.blobs.join(key)
    }

    /// Bytes available to this process on the store's filesystem; `None` if unknown.
    fn free_bytes(&self) -> Option<u64> {
        match nix::sys::statvfs::statvfs(&self.root) {
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            Ok(stat) => Some(
                u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())),
            ),
            Err(e) => {
                debug!(error = %e, "cannot read the free space of the blob store's disk");
                None
            }
        }
    }

    /// Refuses a write of `more` bytes that would leave less than `min_free_bytes` free.
    fn check_free(&self, key: &str, more: u64) -> Result<(), BlobError> {
        if self.config.min_free_bytes == 0 {
            return Ok(());
        }
        let Some(free) = self.free_bytes() else {
            return Ok(());
        };
        if free.saturating_sub(more) < self.config.min_free_bytes {
            warn!(
                key,
                free,
                min = self.config.min_free_bytes,
                "disk nearly full; refusing a blob"
            );
            return Err(BlobError::InsufficientStorage {
                key: key.to_owned(),
                free,
                min: self.config.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Stores `body` as `key`, replacing any previous blob atomically. With `expected_sha256`,
    /// a blob with another digest is refused and nothing is stored. `declared_len` (the
    /// request's Content-Length) lets a too-large or too-big-for-the-disk upload be refused
    /// before any byte is written.
    pub async fn put<S, E>(
        &self,
        key: &str,
        expected_sha256: Option<&str>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        validate_key(key)?;
        let expected = expected_sha256
            .map(|sha| {
                let sha = sha.to_ascii_lowercase();
                if is_sha256_hex(&sha) {
                    Ok(sha)
                } else {
                    Err(BlobError::BadRequest {
                        key: key.to_owned(),
                        message: format!("sha256 {sha:?} is not 64 hex digits"),
                    })
                }
            })
            .transpose()?;
        let max = self.config.max_blob_bytes;
        if declared_len.is_some_and(|len| len > max) {
            return Err(BlobError::TooLarge {
                key: key.to_owned(),
                max,
            });
        }
        self.check_free(key, declared_len.unwrap_or(0))?;

        let temp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.tmp)
            .map_err(BlobError::io(format!(
                "cannot create a temp file in {}",
                self.tmp.display()
            )))?;
        // The temp file is deleted when `temp_path` is dropped: on any error below, and if
        // this future is dropped because the client went away.
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let write_error = || BlobError::io(format!("cannot write blob {key:?}"));
        file.write_all(&[0; HEADER_LEN])
            .await
            .map_err(write_error())?;

        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut unchecked = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::UploadInterrupted {
                key: key.to_owned(),
                message: e.to_string(),
            })?;
            let len = chunk.len() as u64;
            size += len;
            if size > max {
                return Err(BlobError::TooLarge {
                    key: key.to_owned(),
                    max,
                });
            }
            unchecked += len;
            if unchecked >= FREE_CHECK_EVERY {
                self.check_free(key, 0)?;
                unchecked = 0;
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_error())?;
        }
        let sha256 = hex_digest(hasher);
        if let Some(expected) = expected
            && expected != sha256
        {
            return Err(BlobError::DigestMismatch {
                key: key.to_owned(),
                expected,
                actual: sha256,
            });
        }
        let header = Header {
            sha256: sha256.clone(),
            size,
        };
        file.flush().await.map_err(write_error())?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(write_error())?;
        file.write_all(&header.encode())
            .await
            .map_err(write_error())?;
        file.flush().await.map_err(write_error())?;
        file.sync_all().await.map_err(write_error())?;
        drop(file);

        let target = self.path_of(key);
        let owned_key = key.to_owned();
        tokio::task::spawn_blocking(move || install(&owned_key, temp_path, &target))
            .await
            .map_err(|e| BlobError::Io {
                context: format!("storing blob {key:?} stopped"),
                source: std::io::Error::other(e.to_string()),
            })??;
        debug!(key, size, sha256, "stored a blob");
        Ok(BlobInfo {
            key: key.to_owned(),
            size,
            sha256,
        })
    }

    /// Opens `key` for reading: its info, and the file positioned at its first byte. The open
    /// file keeps this version readable even if the blob is replaced or deleted meanwhile.
    pub async fn open_blob(&self, key: &str) -> Result<(BlobInfo, tokio::fs::File), BlobError> {
        validate_key(key)?;
        let path = self.path_of(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => {
                return Err(BlobError::NotFound {
                    key: key.to_owned(),
                });
            }
            Err(e) => return Err(BlobError::io(format!("cannot open blob {key:?}"))(e)),
        };
        let read_error = || BlobError::io(format!("cannot read blob {key:?}"));
        let metadata = file.metadata().await.map_err(read_error())?;
        if metadata.is_dir() {
            return Err(BlobError::NotFound {
                key: key.to_owned(),
            });
        }
        let corrupt = |reason: String| BlobError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header)
            .await
            .map_err(|e| corrupt(format!("cannot read its header: {e}")))?;
        let header = Header::decode(&header).map_err(corrupt)?;
        if metadata.len() != HEADER_LEN as u64 + header.size {
            return Err(corrupt(format!(
                "its header says {} bytes but the file holds {}",
                header.size,
                metadata.len().saturating_sub(HEADER_LEN as u64)
            )));
        }
        let info = BlobInfo {
            key: key.to_owned(),
            size: header.size,
            sha256: header.sha256,
        };
        Ok((info, file))
    }

    /// The size and digest of `key`.
    pub async fn info(&self, key: &str) -> Result<BlobInfo, BlobError> {
        self.open_blob(key).await.map(|(info, _)| info)
    }

    /// The whole blob in memory (for small blobs).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, BlobError> {
        let (info, mut file) = self.open_blob(key).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .await
            .map_err(BlobError::io(format!("cannot read blob {key:?}")))?;
        Ok(Bytes::from(bytes))
    }

    /// Deletes `key`; `NotFound` if there is no such blob.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        let path = self.path_of(key);
        let blobs = self.blobs.clone();
        let key = key.to_owned();
        run_blocking(&key.clone(), move || {
            if path.is_dir() {
                return Err(BlobError::NotFound { key });
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => return Err(BlobError::NotFound { key }),
                Err(e) => return Err(BlobError::io(format!("cannot delete blob {key:?}"))(e)),
            }
            if let Some(parent) = path.parent() {
                prune_empty_dirs(parent, &blobs);
            }
            Ok(())
        })
        .await
    }

    /// Every blob whose key starts with `prefix` (a plain string prefix), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>, BlobError> {
        validate_prefix(prefix)?;
        let keys = self.keys_with_prefix(prefix).await?;
        let mut infos = Vec::with_capacity(keys.len());
        for key in keys {
            match self.info(&key).await {
                Ok(info) => infos.push(info),
                // Deleted since it was listed.
                Err(BlobError::NotFound { .. }) => {}
                Err(e) => warn!(key, error = %e, "skipping a blob that cannot be read"),
            }
        }
        Ok(infos)
    }

    /// Deletes every blob whose key starts with `prefix`, which must not be empty; returns how
    /// many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlobError> {
        validate_prefix(prefix)?;
        if prefix.is_empty() {
            return Err(BlobError::BadRequest {
                key: prefix.to_owned(),
                message: "deleting needs a non-empty prefix (refusing to delete every blob)"
                    .to_owned(),
            });
        }
        let keys = self.keys_with_prefix(prefix).await?;
        let mut deleted = 0;
        for key in keys {
            match self.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(BlobError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        info!(prefix, deleted, "deleted blobs by prefix");
        Ok(deleted)
    }

    /// The keys under `prefix`, walking only the directory its whole segments name.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let whole = prefix.rsplit_once('/').map_or("", |(whole, _)| whole);
        let start = if whole.is_empty() {
            self.blobs.clone()
        } else {
            self.blobs.join(whole)
        };
        let blobs = self.blobs.clone();
        let prefix = prefix.to_owned();
        run_blocking(&prefix.clone(), move || {
            let mut keys = Vec::new();
            walk(&blobs, &start, &mut keys)
                .map_err(BlobError::io(format!("cannot list blobs under {prefix:?}")))?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        })
        .await
    }
}

/// Moves a finished upload into place: creates the key's directories, renames, and syncs the
/// directory so the rename survives a crash.
fn install(key: &str, temp: tempfile::TempPath, target: &Path) -> Result<(), BlobError> {
    let conflict = |e: &std::io::Error| BlobError::Conflict {
        key: key.to_owned(),
        reason: format!("a blob and a directory cannot share a name ({e})"),
    };
    let parent = target.parent().unwrap_or(target);
    let mut temp = temp;
    // A concurrent delete may remove an empty directory between creating it and renaming
    // into it; trying again is enough.
    for attempt in 1..=3 {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return Err(match e.kind() {
                ErrorKind::NotADirectory | ErrorKind::AlreadyExists => conflict(&e),
                _ => BlobError::io(format!("cannot create the directory of blob {key:?}"))(e),
            });
        }
        match temp.persist(target) {
            Ok(()) => break,
            Err(e) if e.error.kind() == ErrorKind::NotFound && attempt < 3 => temp = e.path,
            Err(e) => {
                return Err(match e.error.kind() {
                    ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => conflict(&e.error),
                    _ => BlobError::io(format!("cannot move blob {key:?} into place"))(e.error),
                });
            }
        }
    }
    if let Err(e) = std::fs::File::open(parent).and_then(|dir| dir.sync_all()) {
        warn!(key, error = %e, "cannot sync the directory of a stored blob");
    }
    Ok(())
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Collects the keys of the files under `dir` (relative to `blobs`); a missing `dir` is empty.
fn walk(blobs: &Path, dir: &Path, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(blobs, &path, keys)?;
        } else if file_type.is_file()
            && let Ok(relative) = path.strip_prefix(blobs)
            && let Some(key) = relative.to_str()
        {
            keys.push(key.to_owned());
        }
    }
    Ok(())
}

/// Removes `dir` and its parents while they are empty, stopping at `blobs`.
fn prune_empty_dirs(dir: &Path, blobs: &Path) {
    let mut dir = dir;
    while dir != blobs && dir.starts_with(blobs) {
        // Fails (and stops) when the directory is not empty, e.g. a concurrent upload.
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
}

/// Runs blocking file-system work off the async threads.
async fn run_blocking<T: Send + 'static>(
    key: &str,
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobError::Io {
            context: format!("file-system work for {key:?} stopped"),
            source: std::io::Error::other(e.to_string()),
        })?
}
