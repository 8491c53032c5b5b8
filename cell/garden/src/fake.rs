//! An in-memory [`Backend`] for unit tests of code above Garden (executor, API): containers are
//! records, processes echo their argv on stdout and exit 0 (or `exit N` with `argv == ["exit",
//! "N"]`), stream_in stores the archive and stream_out returns it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use crate::backend::{Backend, ByteStream, ProcessStream};
use crate::error::{Error, Result};
use crate::types::{
    ContainerInfo, ContainerMetrics, ContainerSpec, NetIn, PortMapping, ProcessEvent, ProcessSpec,
};

#[derive(Debug, Default)]
struct FakeContainer {
    properties: BTreeMap<String, String>,
    processes: HashMap<String, Vec<ProcessEvent>>,
    files: HashMap<String, Bytes>,
    ports: Vec<PortMapping>,
    runtime: oci_spec::runtime::Spec,
}

/// In-memory backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    containers: Mutex<HashMap<String, FakeContainer>>,
}

impl FakeBackend {
    fn with<T>(&self, handle: &str, f: impl FnOnce(&mut FakeContainer) -> Result<T>) -> Result<T> {
        let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let c = map
            .get_mut(handle)
            .ok_or_else(|| Error::ContainerNotFound(handle.to_string()))?;
        f(c)
    }
}

#[async_trait::async_trait]
impl Backend for FakeBackend {
    async fn create(&self, spec: ContainerSpec) -> Result<String> {
        let handle = spec
            .handle
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&handle) {
            return Err(Error::HandleExists(handle));
        }
        map.insert(
            handle.clone(),
            FakeContainer {
                runtime: crate::spec::runtime_spec(&spec, &handle),
                properties: spec.properties,
                ..FakeContainer::default()
            },
        );
        Ok(handle)
    }

    async fn destroy(&self, handle: &str) -> Result<()> {
        let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(handle)
            .map(drop)
            .ok_or_else(|| Error::ContainerNotFound(handle.to_string()))
    }

    async fn list(&self, filter: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, c)| filter.iter().all(|(k, v)| c.properties.get(k) == Some(v)))
            .map(|(h, _)| h.clone())
            .collect();
        v.sort();
        Ok(v)
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let code = match spec.argv.as_slice() {
            [cmd, n] if cmd == "exit" => n.parse().unwrap_or(1),
            _ => 0,
        };
        let out = format!("{}\n", spec.argv.join(" "));
        self.with(handle, |c| {
            c.processes.insert(
                id.clone(),
                vec![ProcessEvent::Stdout(out.into()), ProcessEvent::Exit(code)],
            );
            Ok(())
        })?;
        Ok(id)
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream> {
        let events = self.with(handle, |c| {
            c.processes
                .get(process_id)
                .cloned()
                .ok_or_else(|| Error::ProcessNotFound {
                    handle: handle.to_string(),
                    id: process_id.to_string(),
                })
        })?;
        Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
    }

    async fn signal(&self, handle: &str, _process_id: &str, _signal: i32) -> Result<()> {
        self.with(handle, |_| Ok(()))
    }

    async fn stream_in(&self, handle: &str, path: &str, mut tar: ByteStream) -> Result<()> {
        use futures::StreamExt;
        let mut buf = Vec::new();
        while let Some(chunk) = tar.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let tar = Bytes::from(buf);
        self.with(handle, |c| {
            c.files.insert(path.to_string(), tar);
            Ok(())
        })
    }

    async fn stream_out(&self, handle: &str, path: &str) -> Result<ByteStream> {
        let bytes = self.with(handle, |c| {
            c.files.get(path).cloned().ok_or_else(|| Error::PathEscape {
                handle: handle.to_string(),
                path: path.to_string(),
                reason: "not found in the fake".into(),
            })
        })?;
        Ok(crate::backend::byte_stream(bytes))
    }

    async fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>> {
        self.with(handle, |c| Ok(c.properties.clone()))
    }

    async fn property(&self, handle: &str, name: &str) -> Result<String> {
        self.with(handle, |c| {
            c.properties
                .get(name)
                .cloned()
                .ok_or_else(|| Error::PropertyNotFound {
                    handle: handle.to_string(),
                    name: name.to_string(),
                })
        })
    }

    async fn set_property(&self, handle: &str, name: &str, value: &str) -> Result<()> {
        self.with(handle, |c| {
            c.properties.insert(name.to_string(), value.to_string());
            Ok(())
        })
    }

    async fn remove_property(&self, handle: &str, name: &str) -> Result<()> {
        self.with(handle, |c| {
            c.properties
                .remove(name)
                .map(drop)
                .ok_or_else(|| Error::PropertyNotFound {
                    handle: handle.to_string(),
                    name: name.to_string(),
                })
        })
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo> {
        self.with(handle, |c| {
            let mut process_ids: Vec<String> = c.processes.keys().cloned().collect();
            process_ids.sort();
            Ok(ContainerInfo {
                handle: handle.to_string(),
                state: "active".into(),
                init_pid: 0,
                container_ip: None,
                host_ip: None,
                mapped_ports: c.ports.clone(),
                properties: c.properties.clone(),
                process_ids,
                oom_killed: false,
            })
        })
    }

    async fn runtime_spec(&self, handle: &str) -> Result<oci_spec::runtime::Spec> {
        self.with(handle, |c| Ok(c.runtime.clone()))
    }

    async fn metrics(&self, handle: &str) -> Result<ContainerMetrics> {
        self.with(handle, |_| Ok(ContainerMetrics::default()))
    }

    async fn net_in(&self, handle: &str, net_in: NetIn) -> Result<PortMapping> {
        self.with(handle, |c| {
            let m = PortMapping {
                host_port: if net_in.host_port == 0 {
                    61000
                } else {
                    net_in.host_port
                },
                container_port: net_in.container_port,
            };
            c.ports.push(m);
            Ok(m)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::client::Client;

    /// The HTTP server and client against the fake: every route round-trips, errors keep
    /// their kind. No root needed.
    #[tokio::test]
    async fn api_and_client_round_trip_against_the_fake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(FakeBackend::default());
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.clone();
        let server = tokio::spawn(crate::api::serve(listener, backend, async move {
            stop.cancelled().await
        }));
        let c = Client::new(format!("http://{addr}"));
        c.ping().await.unwrap();

        let mut props = BTreeMap::new();
        props.insert("role".to_string(), "web".to_string());
        let spec = ContainerSpec {
            handle: Some("h1".into()),
            properties: props.clone(),
            ..ContainerSpec::from_dir("/")
        };
        assert_eq!(c.create(spec.clone()).await.unwrap(), "h1");
        assert!(
            matches!(c.create(spec).await, Err(Error::Remote { kind, .. }) if kind == "ResourceExists")
        );
        c.create(ContainerSpec::from_dir("/")).await.unwrap();
        assert_eq!(c.list(&props).await.unwrap(), vec!["h1".to_string()]);
        assert_eq!(c.list(&BTreeMap::new()).await.unwrap().len(), 2);

        let out = c
            .run_and_wait(
                "h1",
                ProcessSpec {
                    argv: vec!["exit".into(), "3".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (out.exit_status, out.stdout_str().as_str()),
            (3, "exit 3\n")
        );
        c.stream_in_bytes("h1", "/a b", Bytes::from_static(b"tar"))
            .await
            .unwrap();
        assert_eq!(
            c.stream_out_bytes("h1", "/a b").await.unwrap(),
            Bytes::from_static(b"tar")
        );
        c.set_property("h1", "k", "v w").await.unwrap();
        assert_eq!(c.property("h1", "k").await.unwrap(), "v w");
        c.remove_property("h1", "k").await.unwrap();
        assert_eq!(c.properties("h1").await.unwrap(), props);
        let m = c
            .net_in(
                "h1",
                NetIn {
                    host_port: 0,
                    container_port: 8080,
                },
            )
            .await
            .unwrap();
        assert_eq!(c.info("h1").await.unwrap().mapped_ports, vec![m]);
        c.metrics("h1").await.unwrap();
        assert!(
            matches!(c.info("nope").await, Err(Error::Remote { kind, .. }) if kind == "ResourceNotFound")
        );
        assert!(!c.lookup("nope").await.unwrap());
        c.destroy("h1").await.unwrap();
        assert_eq!(c.list(&BTreeMap::new()).await.unwrap().len(), 1);

        token.cancel();
        server.await.unwrap().unwrap();
    }
}
