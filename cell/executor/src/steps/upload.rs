//! Upload: stream `from` out of the container and POST it to `to`.
//!
//! A single file is uploaded as its contents (what Diego does: droplets, build artifacts
//! caches); a directory is uploaded as the tar archive Garden streams out. The body is spooled
//! to a temporary file first, so it goes with a `Content-MD5` (Diego's uploader sends one; the
//! Cloud Controller's blobstore checks it) and a `Content-Length`.

use std::io::{Read, Seek, Write};

use base64::Engine;
use diego_model::actions::UploadAction;
use futures::StreamExt;
use md5::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::error::StepError;
use crate::executor::Cx;
use crate::logs::Emitter;
use crate::steps::byte_size;

const CHUNK: usize = 64 * 1024;

pub(super) async fn perform(
    action: &UploadAction,
    emitter: &Emitter,
    cx: &Cx<'_>,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let fail = |reason: String| StepError::Upload {
        artifact: action.artifact.clone(),
        reason,
    };
    let _permit = tokio::select! {
        permit = cx.shared.uploads.acquire() => permit.map_err(|e| fail(e.to_string()))?,
        () = cancel.cancelled() => return Err(StepError::Cancelled),
    };
    if !action.artifact.is_empty() {
        emitter.stdout(&format!("Uploading {}...", action.artifact));
    }
    let result = tokio::select! {
        r = upload(action, cx) => r.map_err(fail),
        () = cancel.cancelled() => Err(StepError::Cancelled),
    };
    match &result {
        Ok(size) if !action.artifact.is_empty() => {
            emitter.stdout(&format!(
                "Uploaded {} ({})",
                action.artifact,
                byte_size(*size)
            ));
        }
        Err(e @ StepError::Upload { .. }) => {
            tracing::info!(handle = cx.handle, from = %action.from, error = %e, "upload failed");
            if !action.artifact.is_empty() {
                emitter.stderr(&e.to_string());
            }
        }
        _ => {}
    }
    result.map(drop)
}

async fn upload(action: &UploadAction, cx: &Cx<'_>) -> Result<u64, String> {
    let url = reqwest::Url::parse(&action.to).map_err(|e| format!("invalid URL: {e}"))?;
    let temp_dir = &cx.shared.config.temp_dir;
    let mut tar_stream = cx
        .backend()
        .stream_out(cx.handle, &action.from)
        .await
        .map_err(|e| format!("failed to establish stream from container: {e}"))?;
    let spool = tempfile::tempfile_in(temp_dir)
        .map_err(|e| format!("creating a file in {}: {e}", temp_dir.display()))?;
    let mut spool = tokio::fs::File::from_std(spool);
    while let Some(chunk) = tar_stream.next().await {
        let chunk = chunk.map_err(|e| format!("streaming out of the container: {e}"))?;
        spool
            .write_all(&chunk)
            .await
            .map_err(|e| format!("spooling the upload: {e}"))?;
    }
    spool
        .flush()
        .await
        .map_err(|e| format!("spooling the upload: {e}"))?;
    let spool = spool.into_std().await;
    let temp_dir = temp_dir.clone();
    let (body, size, md5) = tokio::task::spawn_blocking(move || prepare_body(spool, &temp_dir))
        .await
        .map_err(|e| format!("preparing the upload: {e}"))??;

    let body = tokio::fs::File::from_std(body);
    let stream = futures::stream::unfold(body, |mut state| async move {
        let mut buf = vec![0u8; CHUNK];
        match state.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), state))
            }
            Err(e) => Some((Err(e), state)),
        }
    });
    let response = cx
        .shared
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(
            "Content-MD5",
            base64::engine::general_purpose::STANDARD.encode(md5),
        )
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| format!("failed to upload payload: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("failed to upload payload: HTTP status {status}"));
    }
    Ok(size)
}

/// From the spooled tar: the one regular file's contents, or the whole tar (a directory).
/// Returns the body (rewound), its size and MD5.
fn prepare_body(
    mut tar_file: std::fs::File,
    temp_dir: &std::path::Path,
) -> Result<(std::fs::File, u64, [u8; 16]), String> {
    let io = |e: std::io::Error| format!("reading the spooled upload: {e}");
    tar_file.rewind().map_err(io)?;
    let single_file = {
        let mut archive = tar::Archive::new(&mut tar_file);
        let mut entries = archive.entries().map_err(io)?;
        let first_is_file = match entries.next() {
            Some(first) => first.map_err(io)?.header().entry_type().is_file(),
            None => false,
        };
        first_is_file && entries.next().is_none()
    };
    tar_file.rewind().map_err(io)?;
    let mut body = if single_file {
        let mut archive = tar::Archive::new(&mut tar_file);
        let mut entries = archive.entries().map_err(io)?;
        let mut entry = entries
            .next()
            .ok_or_else(|| "the archive lost its entry".to_string())?
            .map_err(io)?;
        let mut out = tempfile::tempfile_in(temp_dir).map_err(io)?;
        std::io::copy(&mut entry, &mut out).map_err(io)?;
        out
    } else {
        tar_file
    };
    body.rewind().map_err(io)?;
    let mut hasher = md5::Md5::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = body.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    body.rewind().map_err(io)?;
    body.flush().map_err(io)?;
    Ok((body, size, hasher.finalize().into()))
}
