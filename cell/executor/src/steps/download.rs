//! Download: HTTP GET an archive (tgz, tar or zip) and extract it into the container at `to`.
//!
//! The bytes go to a file first (the cache entry, or a temporary file), hashed as they come,
//! so a checksum is verified before anything reaches the container; then the file is
//! decompressed (a zip re-packed as tar) on a blocking thread and streamed into
//! [`diego_garden::Backend::stream_in`].

use std::io::{BufRead, BufReader, Write};

use bytes::Bytes;
use diego_garden::ByteStream;
use diego_garden::tarstream::zip_to_tar;
use diego_model::actions::DownloadAction;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cache::{Digests, Hasher};
use crate::error::StepError;
use crate::executor::Cx;
use crate::logs::Emitter;
use crate::steps::byte_size;

const CHUNK: usize = 64 * 1024;

pub(super) async fn perform(
    action: &DownloadAction,
    emitter: &Emitter,
    cx: &Cx<'_>,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let fail = |reason: String| StepError::Download {
        artifact: action.artifact.clone(),
        reason,
    };
    let _permit = tokio::select! {
        permit = cx.shared.downloads.acquire() => permit.map_err(|e| fail(e.to_string()))?,
        () = cancel.cancelled() => return Err(StepError::Cancelled),
    };
    if !action.artifact.is_empty() {
        emitter.stdout(&format!("Downloading {}...", action.artifact));
    }
    let result = tokio::select! {
        r = download(action, cx) => r.map_err(fail),
        () = cancel.cancelled() => Err(StepError::Cancelled),
    };
    match &result {
        Ok(size) if !action.artifact.is_empty() => {
            emitter.stdout(&format!(
                "Downloaded {} ({})",
                action.artifact,
                byte_size(*size)
            ));
        }
        Err(e @ StepError::Download { .. }) => {
            tracing::info!(handle = cx.handle, to = %action.to, error = %e, "download failed");
            emitter.stderr(&e.to_string());
        }
        _ => {}
    }
    result.map(drop)
}

/// Fetches (or finds in the cache), verifies and streams in; returns the archive's size.
async fn download(action: &DownloadAction, cx: &Cx<'_>) -> Result<u64, String> {
    let url = reqwest::Url::parse(&action.from).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme {:?}", url.scheme()));
    }
    let shared = cx.shared;
    let (file, size) = if action.cache_key.is_empty() {
        let (tmp, size, digests) = fetch(shared, url, &shared.config.temp_dir).await?;
        verify(action, &digests)?;
        // the open file outlives the path, which is deleted here
        (open(&tmp)?, size)
    } else {
        let lock = shared.cache.lock_for(&action.cache_key);
        let _guard = lock.lock().await;
        let cached = shared
            .cache
            .get(&action.cache_key, &action.from)
            .filter(|e| {
                // same key and URL but another checksum: the artifact changed; fetch again
                verify(action, &e.digests).is_ok()
            });
        let entry = match cached {
            Some(entry) => {
                tracing::debug!(handle = cx.handle, key = %action.cache_key, "download cache hit");
                entry
            }
            None => {
                let (tmp, size, digests) = fetch(shared, url, shared.cache.dir()).await?;
                verify(action, &digests)?;
                shared
                    .cache
                    .insert(&action.cache_key, &action.from, tmp, size, &digests)
                    .map_err(|e| format!("caching the download: {e}"))?
            }
        };
        (open(&entry.data)?, entry.size)
    };
    stream_in(cx, &action.to, file).await?;
    Ok(size)
}

fn verify(action: &DownloadAction, digests: &Digests) -> Result<(), String> {
    match digests.verify(&action.checksum_algorithm, &action.checksum_value) {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
}

fn open(path: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::File::open(path).map_err(|e| format!("opening the downloaded file: {e}"))
}

/// GETs `url` into a temporary file in `dir`, hashing as it goes.
async fn fetch(
    shared: &crate::executor::Shared,
    url: reqwest::Url,
    dir: &std::path::Path,
) -> Result<(tempfile::TempPath, u64, Digests), String> {
    // errors name neither the URL nor its query: signed URLs carry credentials
    let response = shared
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    let (std_file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hasher = Hasher::default();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading the response: {}", e.without_url()))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("writing the download: {e}"))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("writing the download: {e}"))?;
    Ok((path, size, hasher.finish()))
}

/// What an archive's first bytes say it is.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Gzip,
    Zip,
    Tar,
}

fn sniff(head: &[u8]) -> Format {
    if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else {
        Format::Tar
    }
}

/// Streams the archive in `file` (tar, gzipped tar, or zip converted to tar) into the
/// container at `to`.
async fn stream_in(cx: &Cx<'_>, to: &str, file: std::fs::File) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let format = sniff(
        reader
            .fill_buf()
            .map_err(|e| format!("reading the download: {e}"))?,
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<diego_garden::Result<Bytes>>(4);
    let pump = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = match format {
            Format::Gzip => {
                std::io::copy(&mut flate2::bufread::MultiGzDecoder::new(reader), &mut out)
                    .and_then(|_| out.flush())
            }
            Format::Tar => std::io::copy(&mut reader, &mut out).and_then(|_| out.flush()),
            Format::Zip => zip_to_tar(reader, out, u64::MAX),
        };
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            let _ = tx.blocking_send(Err(diego_garden::Error::io("unpacking the download", e)));
        }
    });
    let stream: ByteStream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let result = cx
        .backend()
        .stream_in(cx.handle, to, stream)
        .await
        .map_err(|e| format!("copying into the container failed: {e}"));
    let _ = pump.await;
    result
}

/// Writes into the channel feeding `stream_in`, in chunks; a closed channel is BrokenPipe.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<diego_garden::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archives_are_recognised_by_their_first_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Format::Gzip);
        assert_eq!(sniff(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(sniff(b"app/\0\0\0"), Format::Tar);
        assert_eq!(sniff(b""), Format::Tar);
    }

    #[test]
    fn zips_are_repacked_as_tar() {
        use std::io::Cursor;
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        zip.add_directory("bin/", opts).unwrap();
        zip.start_file("bin/run", opts).unwrap();
        zip.write_all(b"#!/bin/sh\n").unwrap();
        zip.add_symlink("run", "bin/run", opts).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert_eq!(sniff(&bytes), Format::Zip);

        let mut tar_bytes = Vec::new();
        zip_to_tar(Cursor::new(bytes), &mut tar_bytes, u64::MAX).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries: Vec<(String, tar::EntryType, u32, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let (kind, mode) = (e.header().entry_type(), e.header().mode().unwrap());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, kind, mode, data)
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin".into(), tar::EntryType::Directory, 0o755, vec![]),
                (
                    "bin/run".into(),
                    tar::EntryType::Regular,
                    0o755,
                    b"#!/bin/sh\n".to_vec()
                ),
                ("run".into(), tar::EntryType::Symlink, 0o777, vec![]),
            ]
        );
    }

    #[test]
    fn zip_entries_escaping_the_destination_are_refused() {
        use std::io::Cursor;
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("../evil", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let err = zip_to_tar(Cursor::new(bytes), Vec::new(), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("escapes"), "{err}");
    }
}
