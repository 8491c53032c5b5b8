//! The capabilities a lifecycle's plans need, declared here and implemented by the cell.
//!
//! The seam: a lifecycle guest never calls these. It returns a plan (an arena of Diego
//! actions, validated by [`crate::lifecycle::validate_plan`]); the *plan executor* — which
//! comes with the cell's executor (`cell/executor`, planned) — walks the validated plan and
//! performs each node through these traits, natively and asynchronously, then reports what it
//! saw as an `Observation` for `resume-staging`. Health probes from a `check-plan` run the same
//! way, every few seconds, without calling the guest.
//!
//! Why traits here and not in the cell: `diego-host` imports no cell crate (layering: the
//! executor depends on the host, never the reverse), and the same plan executor can run
//! against a fake implementation in tests.
//!
//! Every method is cancellable by dropping its future, must not block the calling thread, and
//! enforces its own byte caps (a guest can ask for large captures; the host caps them first).

use std::future::Future;
use std::time::Duration;

use crate::lifecycle::types::{Checksum, RunSpec};

/// The container a plan runs in (staging or app instance), as the cell names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef(pub String);

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessExit {
    Exited {
        status: i32,
        stdout: Option<Vec<u8>>,
    },
    /// Killed by the cell (timeout, codependent sibling exited, cancellation).
    Killed { reason: String },
}

/// A capability failure, shown to the user with the node that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{capability}: {message}")]
pub struct CapabilityError {
    pub capability: &'static str,
    pub message: String,
}

/// Run a process in a container (Diego's RunAction), as `spec.user`, with its env, dir and
/// limits; capture up to `spec.capture_stdout` bytes of stdout.
pub trait RunProcess: Send + Sync {
    fn run(
        &self,
        container: &ContainerRef,
        spec: &RunSpec,
    ) -> impl Future<Output = Result<ProcessExit, CapabilityError>> + Send;
}

/// Read and write files inside a container.
pub trait ContainerFiles: Send + Sync {
    /// Up to `max_bytes` of the file; `None` if it does not exist. The bool says "truncated".
    fn read_file(
        &self,
        container: &ContainerRef,
        path: &str,
        max_bytes: u32,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, bool)>, CapabilityError>> + Send;

    fn write_file(
        &self,
        container: &ContainerRef,
        path: &str,
        contents: &[u8],
        user: &str,
    ) -> impl Future<Output = Result<(), CapabilityError>> + Send;
}

/// Download (and extract) into a container, and upload a container path (Diego's
/// Download/UploadAction). Implementations check URLs against their allow-list on the
/// *resolved* target, not on the string.
pub trait Transfer: Send + Sync {
    fn download(
        &self,
        container: &ContainerRef,
        from_url: &str,
        to_path: &str,
        checksum: Option<&Checksum>,
        cache_key: Option<&str>,
        user: &str,
    ) -> impl Future<Output = Result<(), CapabilityError>> + Send;

    fn upload(
        &self,
        container: &ContainerRef,
        from_path: &str,
        to_url: &str,
        user: &str,
    ) -> impl Future<Output = Result<(), CapabilityError>> + Send;
}

/// Health probes, run natively by the cell on the check plan's schedule.
pub trait Probe: Send + Sync {
    /// TCP connect to the container's port.
    fn probe_port(
        &self,
        container: &ContainerRef,
        port: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, CapabilityError>> + Send;

    /// HTTP GET; healthy on a 2xx answer.
    fn probe_http(
        &self,
        container: &ContainerRef,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, CapabilityError>> + Send;
}

/// Where plan progress and guest log lines go (the app's or the staging task's log stream).
pub trait PlanLog: Send + Sync {
    fn log(&self, container: &ContainerRef, source: &str, message: &str);
}
