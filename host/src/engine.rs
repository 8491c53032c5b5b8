//! The one engine per process, its epoch ticker, and the linkers of both worlds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::fault::LoadError;
use crate::store::StoreState;

/// How the host is set up. Defaults are sized for an auctioneer or a cell, not for wasmtime's
/// defaults (1000 slots × 4 GiB reservations, which OOM small machines).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where precompiled components are cached. Must be owned by this host and not writable by
    /// anyone else: `.cwasm` files are loaded as trusted native code.
    pub cache_dir: PathBuf,
    /// Largest `.wasm` accepted.
    pub max_component_bytes: u64,
    /// Concurrent instances (pool slots).
    pub max_instances: u32,
    /// Largest linear memory any instance may have (per-call limits are lower). Each pool
    /// slot still *reserves* (not commits) wasmtime's default 4 GiB of address space, which is
    /// what lets compiled code skip bounds checks; RSS is only what guests touch.
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of deadlines.
    pub epoch_tick: Duration,
    /// Guest stack cap (overflow traps as `StackOverflow`).
    pub max_wasm_stack: usize,
    /// Linear memory each pool slot keeps mapped after an instance is dropped; only the
    /// pages the guest dirtied are reset (zeroed or restored from the image), the rest is
    /// released. Why: a fresh instance per call otherwise page-faults every heap page it
    /// touches again (it was a third of a 1,000-cell `place`). Costs up to this much RSS per
    /// slot that has been used. Applies only on Linux 6.7+ (`PAGEMAP_SCAN`); elsewhere memory
    /// is released after each call, as wasmtime does by default.
    pub memory_keep_resident: usize,
}

impl HostConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            cache_dir: cache_dir.into(),
            max_component_bytes: 16 << 20,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            memory_keep_resident: 8 << 20,
        }
    }
}

pub(crate) struct HostInner {
    pub engine: Engine,
    pub config: HostConfig,
    pub policy_linker: Linker<StoreState>,
    pub lifecycle_linker: Linker<StoreState>,
    /// Hex of the engine's precompile compatibility hash: part of every cache key.
    pub engine_key: String,
    /// Whether the cache dir passed the ownership check (else: compile every time).
    pub cache_usable: bool,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl HostInner {
    /// Epoch ticks for a wall-clock budget (rounded up, at least one).
    pub fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick)).max(1) as u64
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The plug-in host. Cheap to clone (an `Arc`); share one per process.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.inner.config)
            .field("engine_key", &self.inner.engine_key)
            .finish_non_exhaustive()
    }
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot configure the Wasm engine: {0}")]
    Engine(String),
    #[error("cannot create the component cache dir {path}: {source}")]
    CacheDir {
        path: String,
        source: std::io::Error,
    },
}

impl Host {
    pub fn new(config: HostConfig) -> Result<Host, HostError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            // A Rust component is a handful of core instances (main module, adapters, shims).
            .total_core_instances(config.max_instances * 8)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size(config.max_memory_bytes)
            .pagemap_scan(Enabled::Auto);
        // Keep memory resident only where the kernel can tell which pages a call dirtied
        // (Linux 6.7+ `PAGEMAP_SCAN`): without it, wasmtime would `memset` the whole kept
        // prefix (at least the guest's 4 MiB initial memory) after every call, which costs more
        // than the page faults it saves; there we keep wasmtime's default (`madvise`).
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(config.memory_keep_resident)
                .table_keep_resident(64 << 10);
        }
        let mut wc = Config::new();
        wc.wasm_component_model(true)
            .epoch_interruption(true)
            // Sync calls only: concurrency support makes every call ~3.5x slower.
            .concurrency_support(false)
            .max_wasm_stack(config.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wc).map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let mut policy_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut policy_linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let mut lifecycle_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut lifecycle_linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        crate::lifecycle::add_host_imports(&mut lifecycle_linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let cache_usable = prepare_cache_dir(&config.cache_dir)?;
        let engine_key = engine_key(&engine);

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            // A weak handle: the ticker must not keep the engine alive.
            let weak = engine.weak();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(tick);
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| HostError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };

        tracing::info!(
            cache_dir = %config.cache_dir.display(),
            cache_usable,
            max_instances = config.max_instances,
            "wasm plug-in host ready"
        );
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                config,
                policy_linker,
                lifecycle_linker,
                engine_key,
                cache_usable,
                stop,
                ticker: Some(ticker),
            }),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Loads an auction policy component from bytes (see [`crate::AuctionPolicy`]).
    ///
    /// Blocking: a first load compiles (tens of ms; a cached load is well under 1 ms). From
    /// async code, call it on a blocking thread (`tokio::task::spawn_blocking`).
    pub fn load_policy(&self, bytes: &[u8]) -> Result<crate::AuctionPolicy, LoadError> {
        crate::auction::load(self, bytes)
    }

    /// Loads an auction policy component from a file.
    pub fn load_policy_file(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<crate::AuctionPolicy, LoadError> {
        let bytes =
            crate::loader::read_capped(path.as_ref(), self.inner.config.max_component_bytes)?;
        self.load_policy(&bytes)
    }

    /// Loads a lifecycle component from bytes.
    pub fn load_lifecycle(
        &self,
        bytes: &[u8],
    ) -> Result<crate::lifecycle::LifecyclePlugin, LoadError> {
        crate::lifecycle::load(self, bytes)
    }

    /// Loads a lifecycle component from a file.
    pub fn load_lifecycle_file(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<crate::lifecycle::LifecyclePlugin, LoadError> {
        let bytes =
            crate::loader::read_capped(path.as_ref(), self.inner.config.max_component_bytes)?;
        self.load_lifecycle(&bytes)
    }
}

/// Creates the cache dir owner-only; reports whether it is safe to load `.cwasm` from it.
fn prepare_cache_dir(dir: &std::path::Path) -> Result<bool, HostError> {
    std::fs::create_dir_all(dir).map_err(|source| HostError::CacheDir {
        path: dir.display().to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let set = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o777);
        if set.is_err() || mode & 0o022 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "component cache dir is writable by others; precompiled cache disabled"
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// A stable hex digest of the engine's compatibility hash (std's `DefaultHasher` output is not
/// promised stable across Rust releases; sha256 is).
fn engine_key(engine: &Engine) -> String {
    use sha2::Digest;
    use std::hash::{Hash, Hasher};
    struct ShaHasher(sha2::Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    crate::loader::hex(&h.0.finalize()[..8])
}
