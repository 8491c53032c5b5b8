//! Per-call stores: the limits, the deny-all WASI context, the bounded stderr and log.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::engine::HostInner;
use crate::fault::{CallEvidence, Fault, classify};

/// Per-call limits (per plug-in: hard-coded caps become user pain).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one call, instantiation included (epoch deadline).
    pub deadline: Duration,
    /// Linear memory cap; growth beyond it traps.
    pub memory_bytes: usize,
    /// Captured guest stderr (where a panic message goes).
    pub stderr_bytes: usize,
    /// Input caps, checked before anything is lowered into the guest.
    pub max_cells: usize,
    pub max_works: usize,
    pub max_string_bytes: usize,
    /// Output cap: bytes of guest-provided strings in one answer (log lines, messages, plans).
    pub max_output_bytes: usize,
    /// Log lines a lifecycle may emit per call (beyond: dropped, counted).
    pub max_log_lines: usize,
}

impl Limits {
    /// Auction `place`: 100 ms, 64 MiB.
    pub fn auction() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            stderr_bytes: 64 << 10,
            max_cells: 20_000,
            max_works: 10_000,
            max_string_bytes: 8 << 20,
            max_output_bytes: 1 << 20,
            max_log_lines: 0,
        }
    }

    /// Lifecycle calls: 1 s, 32 MiB.
    pub fn lifecycle() -> Self {
        Limits {
            deadline: Duration::from_secs(1),
            memory_bytes: 32 << 20,
            stderr_bytes: 64 << 10,
            max_cells: 0,
            max_works: 0,
            max_string_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_log_lines: 200,
        }
    }
}

/// StoreLimits that remembers what it refused, so a memory fault is named as such.
#[derive(Debug)]
pub(crate) struct GuardedLimits {
    inner: StoreLimits,
    pub limit: usize,
    pub denied: Option<usize>,
}

impl ResourceLimiter for GuardedLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let verdict = self.inner.memory_growing(current, desired, maximum);
        if !matches!(verdict, Ok(true)) {
            self.denied = Some(desired);
        }
        verdict
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A lifecycle's `log` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: GuardedLimits,
    stderr: MemoryOutputPipe,
    pub logs: Vec<LogLine>,
    pub logs_dropped: usize,
    pub max_log_lines: usize,
    pub max_log_bytes: usize,
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreState")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fresh store for one call, with its limits armed.
pub(crate) fn new_store(host: &HostInner, limits: &Limits) -> Store<StoreState> {
    let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
    // Deny-all: the builder's defaults give no env, args, preopens, network or name lookup;
    // stdin is closed and stdout discarded. Random is seeded so a run can be replayed.
    let wasi = WasiCtxBuilder::new()
        .stderr(stderr.clone())
        .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5d; 32]))
        .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x1e; 32]))
        .insecure_random_seed(0)
        .build();
    let limiter = GuardedLimits {
        inner: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build(),
        limit: limits.memory_bytes,
        denied: None,
    };
    let state = StoreState {
        wasi,
        table: ResourceTable::new(),
        limiter,
        stderr,
        logs: Vec::new(),
        logs_dropped: 0,
        max_log_lines: limits.max_log_lines,
        max_log_bytes: limits.max_output_bytes,
    };
    let mut store = Store::new(&host.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(host.deadline_ticks(limits.deadline));
    store
}

/// Turns a failed call's error into a [`Fault`], with what the store saw.
pub(crate) fn fault_of(store: &Store<StoreState>, limits: &Limits, err: &wasmtime::Error) -> Fault {
    let data = store.data();
    let evidence = CallEvidence {
        memory_denied: data.limiter.denied,
        memory_limit: data.limiter.limit,
        deadline: limits.deadline,
        stderr: String::from_utf8_lossy(&data.stderr.contents()).into_owned(),
    };
    classify(err, &evidence)
}
