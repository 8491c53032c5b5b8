//! Request bodies that are archives: streamed to a temp file (never whole in memory), capped,
//! then checked and normalised to a zip (`archive.rs`) on a blocking thread.

use std::path::{Path, PathBuf};

use axum::body::Body;
use futures::StreamExt;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use crate::archive::{self, ArchiveKind, ArchiveLimits, Contents};
use crate::error::{ApiError, ApiResult};

/// Writes the body to a temp file in `tmp_dir`; more than `max_bytes` is a 413.
pub async fn receive(body: Body, tmp_dir: &Path, max_bytes: u64) -> ApiResult<TempPath> {
    let path = tempfile::NamedTempFile::new_in(tmp_dir)
        .map_err(|e| ApiError::internal(format!("cannot create a temp file: {e}")))?
        .into_temp_path();
    let io = |e: std::io::Error| ApiError::internal(format!("cannot write the upload: {e}"));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .await
        .map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("upload_interrupted", format!("the upload broke off: {e}"))
        })?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload is over the limit of {max_bytes} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(path)
}

/// An upload as a zip: the file to store, its sha256 and what it holds.
#[derive(Debug)]
pub struct PreparedZip {
    /// The converted zip, if the upload was a tgz (else the upload itself is the zip).
    converted: Option<TempPath>,
    upload: PathBuf,
    pub contents: Contents,
    pub sha256: String,
}

impl PreparedZip {
    pub fn path(&self) -> &Path {
        self.converted.as_deref().unwrap_or(&self.upload)
    }
}

/// Checks the archive at `upload` (within `limits`) and converts a tgz to a zip (in `tmp_dir`).
pub async fn prepare_zip(
    upload: &Path,
    tmp_dir: &Path,
    limits: ArchiveLimits,
) -> ApiResult<PreparedZip> {
    let upload = upload.to_owned();
    let tmp_dir = tmp_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let bad = |e: archive::ArchiveError| match e {
            archive::ArchiveError::Io(e) => {
                ApiError::internal(format!("cannot convert the archive: {e}"))
            }
            archive::ArchiveError::TooLarge(m) => ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "archive_too_large",
                m,
            ),
            e => ApiError::unprocessable("invalid_archive", e.to_string()),
        };
        let (converted, contents) = match archive::detect(&upload).map_err(bad)? {
            ArchiveKind::Zip => (None, archive::zip_contents(&upload, limits).map_err(bad)?),
            ArchiveKind::TarGz => {
                let out = tempfile::NamedTempFile::new_in(&tmp_dir)
                    .map_err(|e| ApiError::internal(format!("cannot create a temp file: {e}")))?
                    .into_temp_path();
                let contents = archive::tgz_to_zip(&upload, &out, limits).map_err(bad)?;
                (Some(out), contents)
            }
        };
        let sha256 = sha256_file(converted.as_deref().unwrap_or(&upload))
            .map_err(|e| ApiError::internal(format!("cannot read the upload: {e}")))?;
        Ok(PreparedZip {
            converted,
            upload,
            contents,
            sha256,
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("archive worker failed: {e}")))?
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}
