//! Test helpers: start etcd (one member or a cluster), BBS processes, temp dirs.
//!
//! [`EtcdServer`] and [`EtcdCluster`] run the real `etcd` binary (`ETCD_BIN`, else `etcd` on
//! `PATH`; on Debian `apt-get install etcd-server`) on loopback ports with their data in a
//! temporary directory, and kill it when dropped. Their methods block (they spawn processes and
//! poll them over HTTP with `std`), so they work from any thread or runtime; from async code that
//! must keep running meanwhile, call them in `tokio::task::spawn_blocking`.
//!
//! [`Registry`] runs Debian's `docker-registry` on a loopback port for image tests, and
//! [`push_test_image`] builds an OCI image with `umoci` and pushes it there with `skopeo`.

pub mod bbs;
pub mod dev;
pub mod etcd;
pub mod platform;
pub mod prometheus;
pub mod registry;
pub mod root;

pub use bbs::TestBbs;
pub use dev::{DevConfig, DevPlatform};
pub use etcd::{EtcdCluster, EtcdServer, etcd_binary, free_port};
pub use platform::{Platform, PlatformConfig, Proc};
pub use registry::{
    ImageFile, ImageSpec, PushedImage, Registry, copy_as_docker_v2s2, push_test_image,
    registry_tools,
};

/// What every helper here returns.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// Polls `check` every `every` until it is true or `timeout` passes: how long it took, or an
/// error naming `what`, the last error `check` returned, and `context()` (the logs to read).
pub fn poll_until(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Result<bool>,
    context: impl FnOnce() -> String,
) -> Result<std::time::Duration> {
    let start = std::time::Instant::now();
    let mut last_error = String::new();
    while start.elapsed() < timeout {
        match check() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_error = format!("{e:#}"),
        }
        std::thread::sleep(every);
    }
    anyhow::bail!(
        "timed out after {timeout:?} waiting for {what} (last error: {last_error})\n{}",
        context()
    )
}
