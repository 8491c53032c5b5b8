//! A scripted Garden backend for the rep's tests: garden's in-memory fake, plus processes that
//! live until signalled or ended by the test, and containers that can vanish behind the
//! rep's back. Processes do what their argv says:
//! - `serve`: runs until signalled (exit 128+n), ended with [`TestBackend::exit`], or its
//!   container is destroyed (137);
//! - `exit N`: exits N at once;
//! - `write PATH CONTENT`: writes a file the rep can stream out (as tar), exits 0;
//! - anything else: exits 0.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use diego_garden::fake::FakeBackend;
use diego_garden::{
    Backend, ByteStream, ContainerInfo, ContainerMetrics, ContainerSpec, Error, NetIn, PortMapping,
    ProcessEvent, ProcessSpec, ProcessStream, Result,
};
use tokio::sync::watch;

/// (handle, process id) → the process's exit status once it has one.
type Processes = Mutex<HashMap<(String, String), watch::Sender<Option<i32>>>>;

#[derive(Debug, Default)]
pub struct TestBackend {
    fake: FakeBackend,
    next_id: AtomicU64,
    processes: Processes,
    /// argv of every process started, by handle.
    pub started: Mutex<Vec<(String, Vec<String>)>>,
    /// env of every process started, by handle.
    pub envs: Mutex<HashMap<String, Vec<String>>>,
}

impl TestBackend {
    /// Ends every `serve` process of `handle` with `status`.
    pub fn exit(&self, handle: &str, status: i32) {
        for ((h, _), tx) in self.processes.lock().unwrap().iter() {
            if h == handle && tx.borrow().is_none() {
                tx.send_replace(Some(status));
            }
        }
    }

    /// Removes the container without telling its processes (a container lost behind the
    /// rep's back).
    pub async fn vanish(&self, handle: &str) {
        self.fake.destroy(handle).await.unwrap();
    }

    pub async fn handles(&self) -> Vec<String> {
        self.fake.list(&BTreeMap::new()).await.unwrap()
    }

    fn end_all(&self, handle: &str, status: i32) {
        self.exit(handle, status);
    }
}

fn tar_of(path: &str, content: &str) -> bytes::Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    let name = path.rsplit('/').next().unwrap_or("file");
    builder
        .append_data(&mut header, name, content.as_bytes())
        .unwrap();
    bytes::Bytes::from(builder.into_inner().unwrap())
}

#[async_trait::async_trait]
impl Backend for TestBackend {
    async fn create(&self, spec: ContainerSpec) -> Result<String> {
        self.fake.create(spec).await
    }

    async fn destroy(&self, handle: &str) -> Result<()> {
        self.end_all(handle, 137);
        self.fake.destroy(handle).await
    }

    async fn list(&self, filter: &BTreeMap<String, String>) -> Result<Vec<String>> {
        self.fake.list(filter).await
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<String> {
        self.fake.info(handle).await?;
        let id = format!("p{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let status = match spec.argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["serve", ..] => None,
            ["exit", n] => Some(n.parse().unwrap_or(1)),
            ["write", path, content] => {
                self.fake
                    .stream_in_bytes(handle, path, tar_of(path, content))
                    .await?;
                Some(0)
            }
            _ => Some(0),
        };
        self.started
            .lock()
            .unwrap()
            .push((handle.to_string(), spec.argv.clone()));
        self.envs
            .lock()
            .unwrap()
            .insert(handle.to_string(), spec.env.clone());
        let (tx, _) = watch::channel(status);
        self.processes
            .lock()
            .unwrap()
            .insert((handle.to_string(), id.clone()), tx);
        Ok(id)
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream> {
        let mut rx = self
            .processes
            .lock()
            .unwrap()
            .get(&(handle.to_string(), process_id.to_string()))
            .map(watch::Sender::subscribe)
            .ok_or_else(|| Error::ProcessNotFound {
                handle: handle.to_string(),
                id: process_id.to_string(),
            })?;
        Ok(Box::pin(futures::stream::once(async move {
            let status = rx
                .wait_for(Option::is_some)
                .await
                .map(|s| s.unwrap_or(137))
                .unwrap_or(137);
            Ok(ProcessEvent::Exit(status))
        })))
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: i32) -> Result<()> {
        let processes = self.processes.lock().unwrap();
        let tx = processes
            .get(&(handle.to_string(), process_id.to_string()))
            .ok_or_else(|| Error::ProcessNotFound {
                handle: handle.to_string(),
                id: process_id.to_string(),
            })?;
        if tx.borrow().is_none() {
            tx.send_replace(Some(128 + signal));
        }
        Ok(())
    }

    async fn stream_in(&self, handle: &str, path: &str, tar: ByteStream) -> Result<()> {
        self.fake.stream_in(handle, path, tar).await
    }

    async fn stream_out(&self, handle: &str, path: &str) -> Result<ByteStream> {
        self.fake.stream_out(handle, path).await
    }

    async fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>> {
        self.fake.properties(handle).await
    }

    async fn property(&self, handle: &str, name: &str) -> Result<String> {
        self.fake.property(handle, name).await
    }

    async fn set_property(&self, handle: &str, name: &str, value: &str) -> Result<()> {
        self.fake.set_property(handle, name, value).await
    }

    async fn remove_property(&self, handle: &str, name: &str) -> Result<()> {
        self.fake.remove_property(handle, name).await
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo> {
        let mut info = self.fake.info(handle).await?;
        // checks probe the container's address: here, the test's own loopback listeners
        info.container_ip = Some("127.0.0.1".into());
        Ok(info)
    }

    async fn metrics(&self, handle: &str) -> Result<ContainerMetrics> {
        self.fake.metrics(handle).await
    }

    async fn net_in(&self, handle: &str, net_in: NetIn) -> Result<PortMapping> {
        self.fake.net_in(handle, net_in).await
    }
}
