//! The active auction policy, swapped at run time.
//!
//! Each batch takes the current policy (an `Arc` clone under a read lock held for
//! nanoseconds) and uses it to the end, so a swap never disturbs an auction in flight; the old
//! component is freed when its last batch finishes. Installing runs the new policy on canary
//! batches first, under the normal limits and host validation; any failure leaves the current
//! policy in place. A fault during an auction never stalls placement: the batch is placed by
//! the native classic policy (or failed, if configured), and a circuit breaker reverts to
//! native after repeated faults, marking the custom policy degraded until an operator installs
//! a policy again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use diego_auction_scoring::{self as s, Batch, Outcome, PlacementError, validate_outcomes};

use crate::auction::AuctionPolicy;
use crate::engine::Host;
use crate::fault::{Fault, LoadError};

/// What to do with a batch whose policy call faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFault {
    /// Place the batch with the native classic policy (placement never stalls).
    Fallback,
    /// Fail every item of the batch (Diego's semantics: the work is retried next batch).
    FailBatch,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Faults within `fault_window` that trip the breaker.
    pub fault_threshold: usize,
    pub fault_window: Duration,
    pub on_fault: OnFault,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            fault_threshold: 3,
            fault_window: Duration::from_secs(300),
            on_fault: OnFault::Fallback,
        }
    }
}

/// The policy placing batches now.
#[derive(Debug, Clone)]
pub enum ActivePolicy {
    /// Diego's classic scoring, compiled into the host.
    Native,
    Wasm(Box<AuctionPolicy>),
}

impl ActivePolicy {
    pub fn name(&self) -> &str {
        match self {
            ActivePolicy::Native => "classic (native)",
            ActivePolicy::Wasm(p) => p.name(),
        }
    }

    pub fn sha256(&self) -> Option<&str> {
        match self {
            ActivePolicy::Native => None,
            ActivePolicy::Wasm(p) => Some(&p.info().sha256),
        }
    }
}

/// Who decided a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum DecidedBy {
    Native,
    Wasm {
        sha256: String,
    },
    /// The Wasm policy faulted; the native policy placed the batch.
    Fallback {
        sha256: String,
        fault: Fault,
    },
    /// The Wasm policy faulted; the batch was failed (`OnFault::FailBatch`).
    Failed {
        sha256: String,
        fault: Fault,
    },
}

#[derive(Debug, Clone)]
pub struct Placement {
    /// One per work item, in batch order.
    pub outcomes: Vec<Outcome>,
    pub decided_by: DecidedBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub name: String,
    pub sha256: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct RegistryStatus {
    pub active: String,
    pub sha256: Option<String>,
    /// The custom policy the breaker switched off, if any.
    pub degraded: Option<Degraded>,
    pub faults_in_window: usize,
    pub total_faults: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot load the policy: {0}")]
    Load(#[from] LoadError),
    #[error("policy failed its canary on the {batch} batch: {fault}")]
    Canary { batch: &'static str, fault: Fault },
}

#[derive(Debug, Default)]
struct Breaker {
    faults: VecDeque<Instant>,
    total: u64,
    degraded: Option<Degraded>,
}

#[derive(Debug)]
pub struct PolicyRegistry {
    current: RwLock<Arc<ActivePolicy>>,
    breaker: Mutex<Breaker>,
    last_batch: Mutex<Option<Arc<Batch>>>,
    config: RegistryConfig,
}

impl PolicyRegistry {
    /// Starts on the native classic policy.
    pub fn new(config: RegistryConfig) -> Self {
        PolicyRegistry {
            current: RwLock::new(Arc::new(ActivePolicy::Native)),
            breaker: Mutex::new(Breaker::default()),
            last_batch: Mutex::new(None),
            config,
        }
    }

    /// The policy placing batches now.
    pub fn current(&self) -> Arc<ActivePolicy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn swap(&self, next: ActivePolicy) -> Arc<ActivePolicy> {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *cur, Arc::new(next))
    }

    /// Loads `bytes`, canaries it, and makes it current.
    pub fn load_and_install(&self, host: &Host, bytes: &[u8]) -> Result<(), InstallError> {
        let policy = host.load_policy(bytes)?;
        self.install(policy)
    }

    /// Canaries `policy` on a synthetic batch and on the last real batch, then makes it
    /// current. On failure the current policy stays.
    pub fn install(&self, policy: AuctionPolicy) -> Result<(), InstallError> {
        let last = self
            .last_batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let synthetic = synthetic_batch();
        let mut canaries: Vec<(&'static str, &Batch)> = vec![("synthetic", &synthetic)];
        if let Some(last) = last.as_deref() {
            canaries.push(("last real", last));
        }
        self.install_after(policy, &canaries)
    }

    /// Like [`install`](Self::install) with the caller's canary batches only.
    pub fn install_with_canaries(
        &self,
        policy: AuctionPolicy,
        canaries: &[Batch],
    ) -> Result<(), InstallError> {
        let named: Vec<(&'static str, &Batch)> = canaries.iter().map(|b| ("given", b)).collect();
        self.install_after(policy, &named)
    }

    fn install_after(
        &self,
        policy: AuctionPolicy,
        canaries: &[(&'static str, &Batch)],
    ) -> Result<(), InstallError> {
        for (name, batch) in canaries {
            if let Err(fault) = run_checked(&policy, batch) {
                tracing::warn!(
                    sha256 = %policy.info().sha256,
                    canary = name,
                    %fault,
                    "auction policy refused: canary failed"
                );
                return Err(InstallError::Canary { batch: name, fault });
            }
        }
        let sha = policy.info().sha256.clone();
        let name = policy.name().to_owned();
        let old = self.swap(ActivePolicy::Wasm(Box::new(policy)));
        {
            let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
            b.faults.clear();
            b.degraded = None;
        }
        tracing::info!(
            old = old.name(),
            old_sha256 = old.sha256().unwrap_or("native"),
            new = %name,
            new_sha256 = %sha,
            "auction policy swapped"
        );
        Ok(())
    }

    /// Reverts to the native classic policy (operator action, or the breaker).
    pub fn revert_to_native(&self) {
        let old = self.swap(ActivePolicy::Native);
        tracing::info!(
            old = old.name(),
            "auction policy reverted to native classic"
        );
    }

    /// Places a batch with the current policy. Never fails: a faulting policy's batch is
    /// placed natively (or failed, per `on_fault`).
    ///
    /// Blocking for up to the policy's deadline (100 ms by default): from async code, call it
    /// on a blocking thread. Concurrent calls are fine (one fresh instance each).
    pub fn place(&self, batch: &Arc<Batch>) -> Placement {
        *self
            .last_batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(batch.clone());
        let policy = self.current();
        let ActivePolicy::Wasm(wasm) = &*policy else {
            return Placement {
                outcomes: s::place_classic(batch),
                decided_by: DecidedBy::Native,
            };
        };
        let sha256 = wasm.info().sha256.clone();
        match run_checked(wasm, batch) {
            Ok(outcomes) => Placement {
                outcomes,
                decided_by: DecidedBy::Wasm { sha256 },
            },
            Err(fault) => {
                tracing::warn!(policy = wasm.name(), %sha256, kind = fault.kind(), %fault, "auction policy fault");
                self.record_fault(wasm, &fault);
                match self.config.on_fault {
                    OnFault::Fallback => Placement {
                        outcomes: s::place_classic(batch),
                        decided_by: DecidedBy::Fallback { sha256, fault },
                    },
                    OnFault::FailBatch => {
                        let message = format!("auction policy fault: {fault}");
                        Placement {
                            outcomes: batch
                                .works
                                .iter()
                                .map(|_| Outcome::Failed(PlacementError::Other(message.clone())))
                                .collect(),
                            decided_by: DecidedBy::Failed { sha256, fault },
                        }
                    }
                }
            }
        }
    }

    fn record_fault(&self, policy: &AuctionPolicy, fault: &Fault) {
        let now = Instant::now();
        let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        b.total += 1;
        b.faults.push_back(now);
        while b
            .faults
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.fault_window)
        {
            b.faults.pop_front();
        }
        if b.faults.len() < self.config.fault_threshold {
            return;
        }
        // Trip only if the faulting policy is still current (a concurrent install wins).
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if cur.sha256() != Some(policy.info().sha256.as_str()) {
            return;
        }
        *cur = Arc::new(ActivePolicy::Native);
        b.faults.clear();
        let reason = format!(
            "{} faults within {:?}; last: {fault}",
            self.config.fault_threshold, self.config.fault_window
        );
        tracing::error!(policy = policy.name(), sha256 = %policy.info().sha256, %reason, "auction policy degraded; reverted to native classic");
        b.degraded = Some(Degraded {
            name: policy.name().to_owned(),
            sha256: policy.info().sha256.clone(),
            reason,
        });
    }

    pub fn status(&self) -> RegistryStatus {
        let cur = self.current();
        let b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        RegistryStatus {
            active: cur.name().to_owned(),
            sha256: cur.sha256().map(str::to_owned),
            degraded: b.degraded.clone(),
            faults_in_window: b.faults.len(),
            total_faults: b.total,
        }
    }
}

/// Calls the policy and re-validates its answer: an invalid placement is a fault.
fn run_checked(policy: &AuctionPolicy, batch: &Batch) -> Result<Vec<Outcome>, Fault> {
    let outcomes = policy.place(batch)?;
    validate_outcomes(batch, &outcomes).map_err(|e| Fault::InvalidOutput(e.to_string()))?;
    Ok(outcomes)
}

/// A small batch touching every path a policy has: two zones, an evacuating cell, existing
/// instances, LRPs of index 0 and 1, a task, a rootfs no cell has.
pub fn synthetic_batch() -> Batch {
    use s::testing::Interner;
    let mut i = Interner::default();
    let preloaded = i.id("preloaded");
    let stack = i.id("cflinuxfs4");
    let process = i.id("canary-process");
    let domain = i.id("canary");
    let cell = |i: &mut Interner, n: u32, zone: &str, evacuating: bool| s::Cell {
        zone: i.id(zone),
        index: n,
        total: s::Resources {
            memory_mb: 8192,
            disk_mb: 16384,
            containers: 100,
        },
        available: s::Resources {
            memory_mb: 4096 + 512 * u64::from(n),
            disk_mb: 8192,
            containers: 50,
        },
        starting_containers: n % 2,
        proxy_memory_mb: 0,
        rootfs_providers: 0,
        volume_drivers: 0,
        placement_tags: 0,
        optional_placement_tags: 0,
        evacuating,
        tasks: 0,
    };
    let cells = vec![
        cell(&mut i, 0, "canary-z1", false),
        cell(&mut i, 1, "canary-z1", false),
        cell(&mut i, 2, "canary-z2", false),
        cell(&mut i, 3, "canary-z2", true),
    ];
    let lrp = |index: u32, memory_mb: u64| s::Work {
        kind: s::WorkKind::Lrp {
            process_guid: process,
            index,
            domain,
        },
        memory_mb,
        disk_mb: 512,
        max_pids: 1024,
        rootfs: s::Rootfs {
            scheme: preloaded,
            name: stack,
        },
        volume_drivers: 0,
        placement_tags: 0,
    };
    let mut works = vec![lrp(0, 256), lrp(1, 256), lrp(2, 1024)];
    let mut task = lrp(0, 128);
    task.kind = s::WorkKind::Task {
        task_guid: i.id("canary-task"),
        domain,
    };
    works.push(task);
    let mut odd = lrp(0, 64);
    odd.rootfs.name = i.id("no-such-stack");
    works.push(odd);
    Batch {
        strings: i.strings,
        settings: s::Settings::default(),
        id_sets: vec![vec![]],
        rootfs_provider_sets: vec![vec![s::RootfsProvider {
            scheme: preloaded,
            stacks: Some(vec![stack]),
        }]],
        cells,
        process_instances: vec![s::ProcessInstances {
            cell: 0,
            process_guid: process,
            count: 1,
        }],
        works,
    }
}
