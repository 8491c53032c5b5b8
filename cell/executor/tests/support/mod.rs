//! Shared by the test binaries: a local HTTP file server that counts requests and records
//! uploads, archive builders, an executor in a temp dir, and log collection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use diego_executor::{Config, Executor, LogEvent, LogLine, LogSubscription, LogTags, RunContext};
use diego_garden::Backend;

/// One upload the server received.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub body: Bytes,
    pub content_md5: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Files {
    pub files: Arc<Mutex<HashMap<String, Bytes>>>,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    pub uploads: Arc<Mutex<Vec<Upload>>>,
    /// Requests to /hang that were dropped by the client (the server saw it go).
    pub hangs_dropped: Arc<Mutex<usize>>,
}

impl Files {
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_string(), Bytes::from(bytes));
    }

    pub fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.uploads.lock().unwrap().clone()
    }
}

/// A file server on 127.0.0.1: `GET /files/{name}`, `GET /slow/{name}` (the same after
/// 300 ms, counted when answered), `GET /hang` (never answers),
/// `POST /upload/{name}`.
#[derive(Debug)]
pub struct Server {
    pub url: String,
    pub files: Files,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct DropCounter(Arc<Mutex<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

impl Server {
    pub async fn start() -> Server {
        let files = Files::default();
        let app = Router::new()
            .route(
                "/files/{name}",
                get(
                    |State(f): State<Files>, Path(name): Path<String>| async move {
                        *f.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
                        match f.files.lock().unwrap().get(&name) {
                            Some(b) => Ok(b.clone()),
                            None => Err(StatusCode::NOT_FOUND),
                        }
                    },
                ),
            )
            .route(
                "/slow/{name}",
                get(
                    |State(f): State<Files>, Path(name): Path<String>| async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        *f.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
                        match f.files.lock().unwrap().get(&name) {
                            Some(b) => Ok(b.clone()),
                            None => Err(StatusCode::NOT_FOUND),
                        }
                    },
                ),
            )
            .route(
                "/hang",
                get(|State(f): State<Files>| async move {
                    *f.hits.lock().unwrap().entry("hang".into()).or_default() += 1;
                    let _counter = DropCounter(f.hangs_dropped.clone());
                    std::future::pending::<()>().await;
                    "never"
                }),
            )
            .route(
                "/upload/{name}",
                post(
                    |State(f): State<Files>,
                     Path(name): Path<String>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        let content_md5 = headers
                            .get("content-md5")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        f.uploads.lock().unwrap().push(Upload {
                            name,
                            body,
                            content_md5,
                        });
                        StatusCode::CREATED
                    },
                ),
            )
            .with_state(files.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { url, files, task }
    }

    pub fn file_url(&self, name: &str) -> String {
        format!("{}/files/{name}", self.url)
    }
}

/// A tar archive of `(path, contents)` regular files (mode 0644), and directories for
/// paths ending in `/`.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The same, gzipped.
pub fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar(entries)).unwrap();
    gz.finish().unwrap()
}

/// A zip archive of `(path, contents)` files (0755), and directories for paths ending in `/`.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    for (path, data) in entries {
        if path.ends_with('/') {
            z.add_directory(*path, opts).unwrap();
        } else {
            z.start_file(*path, opts).unwrap();
            z.write_all(data).unwrap();
        }
    }
    z.finish().unwrap().into_inner()
}

/// `(path, contents)` of the regular files in a tar archive.
pub fn untar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, data));
        }
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An executor over `backend` with its cache and temp dirs under `dir`, and a short
/// graceful shutdown interval.
pub fn executor(backend: Arc<dyn Backend>, dir: &std::path::Path) -> Executor {
    Executor::new(
        backend,
        Config {
            cache_dir: dir.join("cache"),
            temp_dir: dir.join("tmp"),
            graceful_shutdown_interval: Duration::from_millis(500),
            ..Config::default()
        },
    )
    .unwrap()
}

pub fn ctx(source: &str, instance: &str) -> RunContext {
    RunContext {
        tags: LogTags {
            log_guid: "log-guid".into(),
            source_type: source.into(),
            instance: instance.into(),
        },
        ..RunContext::default()
    }
}

/// Every line received so far (panics on a drop notice: tests never lag).
pub fn drain(sub: &mut LogSubscription) -> Vec<LogLine> {
    let mut out = Vec::new();
    while let Some(ev) = sub.try_recv() {
        match ev {
            LogEvent::Line(l) => out.push(l),
            LogEvent::Dropped(n) => panic!("dropped {n} lines"),
        }
    }
    out
}

/// `SOURCE instance stream: message` for each line, for readable assertions.
pub fn render(lines: &[LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {}: {}",
                l.source_type,
                l.instance,
                match l.stream {
                    diego_executor::LogStream::Stdout => "out",
                    diego_executor::LogStream::Stderr => "err",
                },
                l.message
            )
        })
        .collect()
}
