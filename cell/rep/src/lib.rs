//! The rep: a cell's presence, bids, and the work it runs in containers.
//!
//! Diego's rep with its executor embedded as a library:
//! - **presence**: the cell's [`CellPresence`](diego_model::CellPresence) on a BBS lease,
//!   renewed every third of its TTL, released on a clean stop;
//! - **API** (`diego_rep_client`'s routes): `/state` for auctions, `/work` reserves what fits
//!   synchronously and answers the rest, stop and cancel from the BBS, `/v1/drain`;
//! - **lifecycles**: an LRP instance is claimed, its container made, `setup` and `action` run,
//!   its start-up checks awaited, reported RUNNING and monitored until it crashes or is
//!   stopped; a task is started, run, its result read and completed;
//! - **sync** (Diego's bulker): on BBS events and every sync interval, containers, ActualLRPs
//!   and Tasks of this cell are reconciled;
//! - **staging** (beyond Diego): a task with `lifecycle_staging` is staged by its Wasm
//!   lifecycle plug-in (fetched by URL, verified by sha256, cached and loaded once per rep) in
//!   the task's container, or natively for a docker image; it completes with Diego's staging
//!   result JSON;
//! - **logs**: every executor line, staging's `STG` lines and Diego's `CELL` lines are shipped
//!   to the log server (`Config::logs_url`);
//! - **evacuation**: on drain or shutdown, running instances are handed over
//!   (`evacuate_running`) and dropped once their replacements run;
//! - **SSH sessions** (Diego's sshd in each instance, done by Garden): the ssh proxy, holding
//!   the cells' shared secret, opens a session on an upgraded connection and the rep runs
//!   the shell or command as an interactive Garden process, as the instance's user with its
//!   environment ([`diego_rep_client::ssh`]).
//!
//! Containers are named after their work (handle = instance guid or task guid) and carry
//! [`PROPERTY_OWNER`] = the cell id, so a restarted rep finds (and, not knowing them, destroys)
//! what a previous run left behind.
//!
//! Entry points: [`run`] (what `diego cell` calls: the native backend, serves until shutdown,
//! then evacuates) and [`Rep::start`] over any [`Backend`](diego_garden::Backend).

mod api;
mod checks;
mod config;
mod evacuation;
mod lifecycles;
mod logs;
mod lrp;
mod rep;
mod ssh;
mod staging;
mod sync;
mod task;

use std::sync::Arc;

pub use config::{Config, GardenSettings};
pub use lifecycles::ComponentError;
pub use rep::Rep;
pub use staging::{DEFAULT_STAGING_TIMEOUT, STAGING_LOG_SOURCE};
use tokio_util::sync::CancellationToken;

/// The Garden property naming the cell that owns a container.
pub const PROPERTY_OWNER: &str = "diego.cell_id";
/// The Garden property saying what a container runs: `lrp` or `task`.
pub const PROPERTY_KIND: &str = "diego.kind";
/// The Garden property holding an LRP container's process guid.
pub const PROPERTY_PROCESS_GUID: &str = "diego.process_guid";
/// The Garden property holding an LRP container's index.
pub const PROPERTY_INDEX: &str = "diego.index";

/// Why the rep could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RepError {
    /// The configuration cannot work.
    #[error("invalid rep configuration: {0}")]
    Config(String),
    /// The API listener could not be bound or served.
    #[error("rep API on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The container backend could not be opened.
    #[error("garden backend: {0}")]
    Garden(#[from] diego_garden::Error),
    /// The executor could not be opened.
    #[error("executor: {0}")]
    Executor(#[from] diego_executor::ExecutorError),
}

/// Runs a cell: the native Garden backend, the executor and the rep, serving until `shutdown`
/// is cancelled; then the cell evacuates (as on SIGTERM) and the call returns once its work is
/// handed over (or the evacuation timeout passed) and its presence released. A `POST
/// /v1/drain` evacuates and returns the same way.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RepError> {
    let backend = diego_garden::native::NativeBackend::new(config.native_config()).await?;
    let bbs = diego_bbs_client::BbsClient::with_tls(config.bbs_url.clone(), config.tls.as_ref());
    let rep = Rep::start(config, bbs, Arc::new(backend)).await?;
    tokio::select! {
        () = shutdown.cancelled() => rep.evacuate(),
        () = rep.finished() => {}
    }
    rep.finished().await;
    Ok(())
}
