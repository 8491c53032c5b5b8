//! The host's capability traits ([`diego_host::capabilities`]) over a [`diego_garden::Backend`].
//!
//! - [`RunProcess`]: `Backend::run` + `attach`, as the spec's user, env and dir; output lines go
//!   to the log (unless suppressed); the *last* `capture-stdout` bytes are kept (a log's end is
//!   what explains a failure; detect and release outputs are far below the cap). A run whose
//!   future is dropped (timeout, codependent sibling, cancellation) is SIGKILLed.
//! - [`ContainerFiles`]: `stream_out`/`stream_in` of one-entry tar archives.
//! - [`Transfer`]: HTTP GET of a tgz or tar (checksum verified), entries re-owned to the run
//!   user and extracted with `stream_in`; uploads stream a path out and POST it (a single file
//!   as its contents, a directory as tar). The URL allow-list is enforced by plan validation
//!   ([`diego_host::lifecycle::PlanCaps::allowed_url_prefixes`]) before anything runs.
//! - [`Probe`]: TCP connect / HTTP GET to the container's IP from the cell.
//! - [`PlanLog`]: tagged lines kept in memory (bounded) and traced, and handed as they come
//!   to a [`LogSink`] if one is set (a cell streams staging output while the plan runs).
//!
//! Downloads may be tar, tgz or zip (Cloud Foundry's app bits and buildpacks are zips): a zip
//! is re-packed as tar, entries escaping the destination refused.
//!
//! Not yet: `resource-limits.nofile` (Garden's process spec has no rlimits), the download
//! cache (`cache-key` is ignored).

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diego_garden::tarstream::zip_to_tar;
use diego_garden::{Backend, ProcessEvent, ProcessSpec};
use diego_host::capabilities::{
    CapabilityError, ContainerFiles, ContainerRef, PlanLog, Probe, ProcessExit, RunProcess,
    Transfer,
};
use diego_host::lifecycle::types::{Checksum, ChecksumAlgorithm, RunSpec};
use futures::StreamExt;

/// Lines kept by [`GardenCaps::logs`].
const MAX_LOG_LINES: usize = 10_000;
/// Largest download or upload held in memory.
const MAX_TRANSFER_BYTES: usize = 1 << 30;

fn cap_err(capability: &'static str, message: impl std::fmt::Display) -> CapabilityError {
    CapabilityError {
        capability,
        message: message.to_string(),
    }
}

/// Receives every log line as it is logged: `(source, message)`. Called inline: it must not
/// block.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The log source of a guest's own log lines handed to the [`LogSink`].
pub const GUEST_LOG_SOURCE: &str = "LIFECYCLE";

/// The capabilities of one cell over its Garden backend.
#[derive(Clone)]
pub struct GardenCaps {
    backend: Arc<dyn Backend>,
    http: reqwest::Client,
    logs: Arc<Mutex<Vec<String>>>,
    sink: Option<LogSink>,
}

impl std::fmt::Debug for GardenCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GardenCaps").finish_non_exhaustive()
    }
}

impl GardenCaps {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        GardenCaps {
            backend,
            http: reqwest::Client::new(),
            logs: Arc::new(Mutex::new(Vec::new())),
            sink: None,
        }
    }

    /// These capabilities downloading and uploading through `http` (the cell's client, which
    /// presents its TLS identity to a blob store serving mutual TLS).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// These capabilities with every log line also handed to `sink` as it is logged.
    pub fn with_log_sink(mut self, sink: LogSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Hands a guest's own log lines to the sink (source [`GUEST_LOG_SOURCE`]); they are
    /// already traced by the host and kept in [`crate::Staged::guest_logs`].
    pub fn forward_guest_logs(&self, lines: &[diego_host::LogLine]) {
        if let Some(sink) = &self.sink {
            for line in lines {
                sink(GUEST_LOG_SOURCE, &line.message);
            }
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Every log line so far, `source: message`.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Starts a long-running process (an app's main process) and returns its id; its output
    /// goes to the log until it exits.
    pub async fn spawn(
        &self,
        container: &ContainerRef,
        spec: &RunSpec,
        extra_env: &[(String, String)],
    ) -> Result<(String, tokio::sync::watch::Receiver<Option<i32>>), CapabilityError> {
        let mut ps = process_spec(spec);
        ps.env
            .extend(extra_env.iter().map(|(n, v)| format!("{n}={v}")));
        let id = self
            .backend
            .run(&container.0, ps)
            .await
            .map_err(|e| cap_err("run", e))?;
        let mut stream = self
            .backend
            .attach(&container.0, &id)
            .await
            .map_err(|e| cap_err("run", e))?;
        let this = self.clone();
        let c = container.clone();
        let source = spec.log_source.clone().unwrap_or_else(|| "APP".to_owned());
        let quiet = spec.suppress_log_output;
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b)) => {
                        if !quiet {
                            this.log_bytes(&c, &source, &b);
                        }
                    }
                    Ok(ProcessEvent::Exit(code)) => {
                        this.log(&c, &source, &format!("Exit status {code}"));
                        let _ = exit_tx.send(Some(code));
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(container = %c.0, error = %e, "app output stream failed");
                        break;
                    }
                }
            }
        });
        Ok((id, exit_rx))
    }

    fn log_bytes(&self, container: &ContainerRef, source: &str, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            self.log(container, source, line);
        }
    }

    /// `(uid, gid)` of `user` in the container, creating `dir` as that user on the way.
    async fn ids_and_mkdir(
        &self,
        container: &ContainerRef,
        user: &str,
        dir: &str,
    ) -> Result<(u64, u64), CapabilityError> {
        let out = self
            .backend
            .run_and_wait(
                &container.0,
                ProcessSpec {
                    argv: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "mkdir -p \"$1\" && id -u && id -g".into(),
                        "sh".into(),
                        dir.into(),
                    ],
                    user: Some(user.to_owned()),
                    ..ProcessSpec::default()
                },
            )
            .await
            .map_err(|e| cap_err("files", e))?;
        if out.exit_status != 0 {
            return Err(cap_err(
                "files",
                format!(
                    "cannot create {dir} as {user}: {}",
                    out.stderr_str().trim_end()
                ),
            ));
        }
        let ids: Vec<u64> = out
            .stdout_str()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        match ids.as_slice() {
            [uid, gid] => Ok((*uid, *gid)),
            _ => Err(cap_err("files", format!("cannot resolve user {user}"))),
        }
    }

    async fn exists(&self, container: &ContainerRef, path: &str) -> Result<bool, CapabilityError> {
        let out = self
            .backend
            .run_and_wait(
                &container.0,
                ProcessSpec {
                    argv: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "test -e \"$1\"".into(),
                        "sh".into(),
                        path.into(),
                    ],
                    ..ProcessSpec::default()
                },
            )
            .await
            .map_err(|e| cap_err("files", e))?;
        Ok(out.exit_status == 0)
    }

    async fn container_ip(&self, container: &ContainerRef) -> Result<String, CapabilityError> {
        self.backend
            .info(&container.0)
            .await
            .map_err(|e| cap_err("probe", e))?
            .container_ip
            .ok_or_else(|| cap_err("probe", format!("container {} has no network", container.0)))
    }
}

fn process_spec(spec: &RunSpec) -> ProcessSpec {
    let mut argv = vec![spec.path.clone()];
    argv.extend(spec.args.iter().cloned());
    ProcessSpec {
        argv,
        env: spec
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect(),
        dir: spec.dir.clone(),
        user: Some(spec.user.clone()),
        ..ProcessSpec::default()
    }
}

/// SIGKILLs a process whose run was abandoned (its future dropped before the exit).
struct KillOnDrop {
    backend: Arc<dyn Backend>,
    handle: String,
    id: String,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (backend, handle, id) = (self.backend.clone(), self.handle.clone(), self.id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = backend.signal(&handle, &id, SIGKILL).await {
                    tracing::debug!(%handle, %id, error = %e, "kill of an abandoned process");
                }
            });
        }
    }
}

const SIGKILL: i32 = 9;

/// The last `cap` bytes written.
struct Tail {
    cap: usize,
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }
}

impl RunProcess for GardenCaps {
    async fn run(
        &self,
        container: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ProcessExit, CapabilityError> {
        let id = self
            .backend
            .run(&container.0, process_spec(spec))
            .await
            .map_err(|e| cap_err("run", e))?;
        let mut guard = KillOnDrop {
            backend: self.backend.clone(),
            handle: container.0.clone(),
            id: id.clone(),
            armed: true,
        };
        let mut stream = self
            .backend
            .attach(&container.0, &id)
            .await
            .map_err(|e| cap_err("run", e))?;
        let source = spec.log_source.as_deref().unwrap_or("PLAN");
        let mut tail = spec.capture_stdout.map(|cap| Tail {
            cap: cap as usize,
            buf: Vec::new(),
        });
        while let Some(ev) = stream.next().await {
            match ev.map_err(|e| cap_err("run", e))? {
                ProcessEvent::Stdout(b) => {
                    if let Some(t) = tail.as_mut() {
                        t.push(&b);
                    }
                    if !spec.suppress_log_output {
                        self.log_bytes(container, source, &b);
                    }
                }
                ProcessEvent::Stderr(b) => {
                    if !spec.suppress_log_output {
                        self.log_bytes(container, source, &b);
                    }
                }
                ProcessEvent::Exit(status) => {
                    guard.armed = false;
                    return Ok(ProcessExit::Exited {
                        status,
                        stdout: tail.map(|t| t.buf),
                    });
                }
            }
        }
        Err(cap_err(
            "run",
            format!("process {id} ended without an exit status"),
        ))
    }
}

/// The first regular file of a tar archive, up to `max` bytes.
fn first_file(tar_bytes: &[u8], max: usize) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            let size = entry.header().size()? as usize;
            let mut out = Vec::new();
            entry.take(max as u64).read_to_end(&mut out)?;
            return Ok(Some((out, size > max)));
        }
    }
    Ok(None)
}

fn split_path(path: &str) -> Result<(&str, &str), CapabilityError> {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() => Ok((if dir.is_empty() { "/" } else { dir }, name)),
        _ => Err(cap_err("files", format!("not a file path: {path}"))),
    }
}

impl ContainerFiles for GardenCaps {
    async fn read_file(
        &self,
        container: &ContainerRef,
        path: &str,
        max_bytes: u32,
    ) -> Result<Option<(Vec<u8>, bool)>, CapabilityError> {
        if !self.exists(container, path).await? {
            return Ok(None);
        }
        let tar_bytes = self
            .backend
            .stream_out_bytes(&container.0, path)
            .await
            .map_err(|e| cap_err("files", e))?;
        first_file(&tar_bytes, max_bytes as usize).map_err(|e| cap_err("files", e))
    }

    async fn write_file(
        &self,
        container: &ContainerRef,
        path: &str,
        contents: &[u8],
        user: &str,
    ) -> Result<(), CapabilityError> {
        let (dir, name) = split_path(path)?;
        let (uid, gid) = self.ids_and_mkdir(container, user, dir).await?;
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_uid(uid);
        header.set_gid(gid);
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut header, name, contents)
            .map_err(|e| cap_err("files", e))?;
        let tar_bytes = builder.into_inner().map_err(|e| cap_err("files", e))?;
        self.backend
            .stream_in_bytes(&container.0, dir, Bytes::from(tar_bytes))
            .await
            .map_err(|e| cap_err("files", e))
    }
}

fn verify(bytes: &[u8], checksum: &Checksum) -> Result<(), CapabilityError> {
    use sha2::Digest as _;
    let actual = match checksum.algorithm {
        ChecksumAlgorithm::Md5 => hex(&md5::Md5::digest(bytes)),
        ChecksumAlgorithm::Sha1 => hex(&sha1::Sha1::digest(bytes)),
        ChecksumAlgorithm::Sha256 => hex(&sha2::Sha256::digest(bytes)),
    };
    if actual.eq_ignore_ascii_case(checksum.value.trim()) {
        Ok(())
    } else {
        Err(cap_err(
            "download",
            format!(
                "checksum mismatch: expected {}, got {actual}",
                checksum.value
            ),
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tar of `archive` (tar or gzip'd tar) with every entry owned by `uid:gid`.
fn reowned_tar(archive: &[u8], uid: u64, gid: u64) -> std::io::Result<Vec<u8>> {
    let plain: Vec<u8> = if archive.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(archive)
            .take(MAX_TRANSFER_BYTES as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > MAX_TRANSFER_BYTES {
            return Err(std::io::Error::other("archive too large once decompressed"));
        }
        out
    } else if archive.starts_with(b"PK") {
        let mut out = Vec::new();
        zip_to_tar(
            std::io::Cursor::new(archive),
            &mut out,
            MAX_TRANSFER_BYTES as u64,
        )?;
        out
    } else {
        archive.to_vec()
    };
    let mut input = tar::Archive::new(plain.as_slice());
    let mut builder = tar::Builder::new(Vec::new());
    for entry in input.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut header = entry.header().clone();
        header.set_uid(uid);
        header.set_gid(gid);
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| std::io::Error::other("link without a target"))?
                    .into_owned();
                builder.append_link(&mut header, &path, &target)?;
            }
            _ => builder.append_data(&mut header, &path, &mut entry)?,
        }
    }
    builder.into_inner()
}

impl Transfer for GardenCaps {
    async fn download(
        &self,
        container: &ContainerRef,
        from_url: &str,
        to_path: &str,
        checksum: Option<&Checksum>,
        _cache_key: Option<&str>,
        user: &str,
    ) -> Result<(), CapabilityError> {
        let resp = self
            .http
            .get(from_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| cap_err("download", format!("{from_url}: {e}")))?;
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_TRANSFER_BYTES as u64)
        {
            return Err(cap_err("download", format!("{from_url}: too large")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| cap_err("download", format!("{from_url}: {e}")))?;
        if let Some(c) = checksum {
            verify(&bytes, c)?;
        }
        let (uid, gid) = self.ids_and_mkdir(container, user, to_path).await?;
        let tar_bytes = reowned_tar(&bytes, uid, gid)
            .map_err(|e| cap_err("download", format!("{from_url}: {e}")))?;
        self.backend
            .stream_in_bytes(&container.0, to_path, Bytes::from(tar_bytes))
            .await
            .map_err(|e| cap_err("download", e))
    }

    async fn upload(
        &self,
        container: &ContainerRef,
        from_path: &str,
        to_url: &str,
        _user: &str,
    ) -> Result<(), CapabilityError> {
        let tar_bytes = self
            .backend
            .stream_out_bytes(&container.0, from_path)
            .await
            .map_err(|e| cap_err("upload", e))?;
        // a single file is uploaded as its contents, a directory as tar (as Diego does)
        let single = {
            let mut archive = tar::Archive::new(tar_bytes.as_ref());
            let entries: Vec<bool> = archive
                .entries()
                .map_err(|e| cap_err("upload", e))?
                .map(|e| e.map(|e| e.header().entry_type().is_file()))
                .collect::<Result<_, _>>()
                .map_err(|e| cap_err("upload", e))?;
            entries == [true]
        };
        let body = if single {
            first_file(&tar_bytes, MAX_TRANSFER_BYTES)
                .map_err(|e| cap_err("upload", e))?
                .map(|(b, _)| Bytes::from(b))
                .unwrap_or_default()
        } else {
            tar_bytes
        };
        self.http
            .post(to_url)
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(|_| ())
            .map_err(|e| cap_err("upload", format!("{to_url}: {e}")))
    }
}

impl Probe for GardenCaps {
    async fn probe_port(
        &self,
        container: &ContainerRef,
        port: u16,
        timeout: Duration,
    ) -> Result<bool, CapabilityError> {
        let ip = self.container_ip(container).await?;
        Ok(matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip.as_str(), port)))
                .await,
            Ok(Ok(_))
        ))
    }

    async fn probe_http(
        &self,
        container: &ContainerRef,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<bool, CapabilityError> {
        let ip = self.container_ip(container).await?;
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let res = self
            .http
            .get(format!("http://{ip}:{port}{path}"))
            .timeout(timeout)
            .send()
            .await;
        Ok(res.is_ok_and(|r| r.status().is_success()))
    }
}

impl PlanLog for GardenCaps {
    fn log(&self, container: &ContainerRef, source: &str, message: &str) {
        tracing::info!(container = %container.0, source, "{message}");
        if let Some(sink) = &self.sink {
            sink(source, message);
        }
        if let Ok(mut logs) = self.logs.lock()
            && logs.len() < MAX_LOG_LINES
        {
            logs.push(format!("{source}: {message}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, contents, mode) in entries {
            let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            zip.start_file(*name, options).unwrap();
            zip.write_all(contents).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn zips_are_extracted_as_tar_owned_by_the_run_user_with_their_modes() {
        let zip = zip_of(&[
            ("bin/detect", b"#!/bin/sh\n", 0o755),
            ("README", b"hi", 0o644),
        ]);
        let tar_bytes = reowned_tar(&zip, 2000, 2000).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/detect".to_owned(), 0o755, 2000),
                ("README".to_owned(), 0o644, 2000)
            ]
        );
    }

    #[test]
    fn zip_entries_escaping_the_destination_are_refused() {
        let zip = zip_of(&[("../evil", b"x", 0o644)]);
        let err = reowned_tar(&zip, 0, 0).unwrap_err();
        assert!(err.to_string().contains("escapes"), "{err}");
    }
}
