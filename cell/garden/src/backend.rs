//! The library boundary: everything an executor (or the HTTP server) needs from Garden.
//! [`crate::native::NativeBackend`] implements it on this host, [`crate::client::Client`]
//! against a remote server, so callers use either the same way.

use std::collections::BTreeMap;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::Result;
use crate::types::{
    ContainerInfo, ContainerMetrics, ContainerSpec, NetIn, PortMapping, ProcessEvent, ProcessSpec,
    TtySpec,
};

fn not_interactive(handle: &str, process_id: &str) -> crate::Error {
    crate::Error::InvalidRequest(format!(
        "process {process_id} in container {handle}: this backend runs no interactive processes"
    ))
}

/// A process's output and exit, in order; it ends after [`ProcessEvent::Exit`].
pub type ProcessStream = Pin<Box<dyn Stream<Item = Result<ProcessEvent>> + Send>>;

/// A stream of bytes (a tar archive in or out).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A [`ByteStream`] of one buffer.
pub fn byte_stream(bytes: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// What a finished process produced (see [`Backend::run_and_wait`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Exit status (`128 + n` when killed by signal `n`).
    pub exit_status: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl ProcessOutput {
    /// stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as (lossy) UTF-8.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A Garden backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Creates a container and returns its handle.
    async fn create(&self, spec: ContainerSpec) -> Result<String>;
    /// Destroys a container: processes, cgroups, network, writable layer.
    async fn destroy(&self, handle: &str) -> Result<()>;
    /// Handles of containers whose properties include all of `filter`.
    async fn list(&self, filter: &BTreeMap<String, String>) -> Result<Vec<String>>;
    /// Starts a process; returns its id.
    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<String>;
    /// Streams a process's output from its start, then its exit.
    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream>;
    /// Sends a signal (a Linux signal number) to a process.
    async fn signal(&self, handle: &str, process_id: &str, signal: i32) -> Result<()>;

    /// Writes to the stdin of a process started with [`ProcessSpec::interactive`] (on a
    /// terminal: as typed). Waits while the process does not read.
    async fn write_stdin(&self, handle: &str, process_id: &str, data: Bytes) -> Result<()> {
        let _ = data;
        Err(not_interactive(handle, process_id))
    }
    /// Ends the stdin of an interactive process (on a terminal: the end-of-file character).
    async fn close_stdin(&self, handle: &str, process_id: &str) -> Result<()> {
        Err(not_interactive(handle, process_id))
    }
    /// Changes the terminal size of an interactive process on a terminal (its foreground
    /// process group gets `SIGWINCH`).
    async fn resize(&self, handle: &str, process_id: &str, size: TtySpec) -> Result<()> {
        let _ = size;
        Err(not_interactive(handle, process_id))
    }
    /// Extracts a tar archive at `path` inside the container. The archive is checked as a
    /// whole before anything is written.
    async fn stream_in(&self, handle: &str, path: &str, tar: ByteStream) -> Result<()>;
    /// Archives `path` inside the container as tar; a bad path fails before streaming.
    async fn stream_out(&self, handle: &str, path: &str) -> Result<ByteStream>;
    /// All properties.
    async fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>>;
    /// One property.
    async fn property(&self, handle: &str, name: &str) -> Result<String>;
    /// Sets a property.
    async fn set_property(&self, handle: &str, name: &str, value: &str) -> Result<()>;
    /// Removes a property.
    async fn remove_property(&self, handle: &str, name: &str) -> Result<()>;
    /// State, addresses, ports, properties.
    async fn info(&self, handle: &str) -> Result<ContainerInfo>;
    /// Memory, CPU, disk and pids usage.
    async fn metrics(&self, handle: &str) -> Result<ContainerMetrics>;
    /// Maps a host port to a container port.
    async fn net_in(&self, handle: &str, net_in: NetIn) -> Result<PortMapping>;

    /// What the container got, read-only, as an OCI runtime spec: namespaces, uid/gid
    /// mappings, capability sets, seccomp profile, masked and read-only paths, sysctls,
    /// rlimits, devices (see [`crate::spec`]). Backends that do not describe their
    /// containers answer `InvalidRequest`.
    async fn runtime_spec(&self, handle: &str) -> Result<oci_spec::runtime::Spec> {
        Err(crate::Error::InvalidRequest(format!(
            "this backend does not describe the runtime spec of container {handle}"
        )))
    }

    /// Whether a container exists (Garden's Lookup).
    async fn lookup(&self, handle: &str) -> Result<bool> {
        match self.info(handle).await {
            Ok(_) => Ok(true),
            Err(crate::Error::ContainerNotFound(_)) => Ok(false),
            Err(crate::Error::Remote { kind, .. }) if kind == "ResourceNotFound" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`Backend::stream_in`] from one buffer.
    async fn stream_in_bytes(&self, handle: &str, path: &str, tar: Bytes) -> Result<()> {
        self.stream_in(handle, path, byte_stream(tar)).await
    }

    /// [`Backend::stream_out`] collected into one buffer.
    async fn stream_out_bytes(&self, handle: &str, path: &str) -> Result<Bytes> {
        let mut stream = self.stream_out(handle, path).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }

    /// Runs a process to completion and collects its output.
    async fn run_and_wait(&self, handle: &str, spec: ProcessSpec) -> Result<ProcessOutput> {
        let id = self.run(handle, spec).await?;
        let mut stream = self.attach(handle, &id).await?;
        let mut out = ProcessOutput::default();
        while let Some(ev) = stream.next().await {
            match ev? {
                ProcessEvent::Stdout(b) => out.stdout.extend_from_slice(&b),
                ProcessEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
                ProcessEvent::Exit(code) => {
                    out.exit_status = code;
                    return Ok(out);
                }
            }
        }
        Err(crate::Error::Transport(format!(
            "output of process {id} in container {handle} ended without an exit status"
        )))
    }
}
