//! diego-host against real guests built from this repo (see `diego-plugin-artifacts`).
//! One test binary: linking wasmtime is what costs on 2 cores.

mod faults;
mod lifecycle;
mod loading;
mod policies;
mod registry;

use diego_host::{Host, HostConfig};
use tempfile::TempDir;

/// A host with a small pool and its own cache dir (kept alive by the returned guard).
pub fn host() -> (Host, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = Host::new(small(dir.path().join("cache"))).expect("host starts");
    (host, dir)
}

pub fn small(cache: std::path::PathBuf) -> HostConfig {
    let mut config = HostConfig::new(cache);
    config.max_instances = 16;
    config
}

pub fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest {path} not built: {e}"))
}
