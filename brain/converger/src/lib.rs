//! The converger: keeps actual LRPs equal to desired ones by asking the BBS to converge,
//! periodically and on events.
//!
//! While its brain is active it calls the BBS's convergence (`POST /v1/converge`, Diego's
//! ConvergeLRPs and ConvergeTasks) at once, then every `interval` (Diego: 30 s), and at once
//! when a cell's presence is removed (its instances must be placed elsewhere without waiting
//! for the next tick). The BBS does the work; this loop decides when.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diego_bbs_client::{BbsClient, EventStream};
use diego_model::Event;
use diego_model::requests::ConvergeResponse;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ConvergerConfig {
    /// Between periodic passes (Diego's `convergence_repeat_interval`).
    pub interval: Duration,
}

impl Default for ConvergerConfig {
    fn default() -> Self {
        ConvergerConfig {
            interval: Duration::from_secs(30),
        }
    }
}

/// Diego's convergence metrics from a pass the BBS ran for this brain (the BBS repairs; the
/// brain, which runs one pass at a time for the whole platform, reports).
fn publish(r: &ConvergeResponse, took: Duration) {
    use diego_telemetry::names;
    let counts = &r.lrps;
    for (name, value) in [
        (names::LRPS_DESIRED, counts.desired),
        (names::LRPS_RUNNING, counts.running),
        (names::LRPS_CLAIMED, counts.claimed),
        (names::LRPS_UNCLAIMED, counts.unclaimed),
        (names::LRPS_MISSING, counts.missing),
        (names::LRPS_EXTRA, counts.extra),
        (names::CRASHED_ACTUAL_LRPS, counts.crashed),
        (names::CRASHING_DESIRED_LRPS, counts.crashing_desired),
        (names::SUSPECT_RUNNING_ACTUAL_LRPS, counts.suspect_running),
        (names::SUSPECT_CLAIMED_ACTUAL_LRPS, counts.suspect_claimed),
    ] {
        metrics::gauge!(name).set(f64::from(value));
    }
    metrics::gauge!(names::CONVERGENCE_LRP_DURATION).set(took.as_secs_f64());
    metrics::counter!(names::CONVERGENCE_LRP_RUNS).increment(1);
}

/// Why a pass ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The brain became active.
    Elected,
    Interval,
    /// A cell's presence went away.
    CellRemoved,
}

/// A converger for one brain; share it in an `Arc` to read its counters.
#[derive(Debug)]
pub struct Converger {
    bbs: BbsClient,
    config: ConvergerConfig,
    passes: AtomicU64,
    failures: AtomicU64,
    cell_removals: AtomicU64,
    last: Mutex<Option<ConvergeResponse>>,
}

impl Converger {
    pub fn new(bbs: BbsClient, config: ConvergerConfig) -> Self {
        Converger {
            bbs,
            config,
            passes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cell_removals: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Passes asked of the BBS (successful or not).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Passes the BBS did not complete.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Cell presence removals seen.
    pub fn cell_removals(&self) -> u64 {
        self.cell_removals.load(Ordering::Relaxed)
    }

    /// What the last successful pass did.
    pub fn last(&self) -> Option<ConvergeResponse> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Converges at once, then on every tick and cell removal, until `shutdown` (the brain
    /// stepping down or stopping).
    pub async fn run(&self, shutdown: CancellationToken) {
        let removed = Notify::new();
        let watch = self.watch_cells(&removed, shutdown.clone());
        let passes = async {
            self.converge(Trigger::Elected).await;
            let mut tick = tokio::time::interval(self.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: the pass above was it.
            tick.tick().await;
            loop {
                let trigger = tokio::select! {
                    _ = tick.tick() => Trigger::Interval,
                    _ = removed.notified() => {
                        // The next periodic pass is a full interval after this one.
                        tick.reset();
                        Trigger::CellRemoved
                    }
                };
                self.converge(trigger).await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = watch => {}
            _ = passes => {}
        }
    }

    /// Follows the cells stream; wakes a pass on every presence removal.
    async fn watch_cells(&self, removed: &Notify, shutdown: CancellationToken) {
        loop {
            let mut events = self.bbs.subscribe(EventStream::Cells, None, None);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = events.next() => next,
                };
                match next {
                    Ok((_, Event::CellPresenceRemoved { cell })) => {
                        tracing::info!(cell_id = %cell.cell_id, "cell presence removed; converging");
                        self.cell_removals.fetch_add(1, Ordering::Relaxed);
                        removed.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Unrecoverable for this subscription (e.g. its resume point is gone):
                        // start over from now; the periodic pass covers the gap.
                        tracing::warn!(error = %e, "cell event stream failed; subscribing again");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn converge(&self, trigger: Trigger) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // Each pass is a piece of work of its own: the instances it has placed carry its id
        // from the BBS to the auctioneer and the reps.
        let id = diego_telemetry::new_request_id();
        match diego_telemetry::with_request_id(id, self.bbs.converge()).await {
            Ok(r) => {
                publish(&r, started.elapsed());
                // The BBS logs a pass that repaired something; here it is routine.
                tracing::debug!(
                    ?trigger,
                    duration_ms = started.elapsed().as_millis() as u64,
                    lrps_auctioned = r.lrps_auctioned,
                    lrps_created = r.lrps_created,
                    lrps_retired = r.lrps_retired,
                    lrps_suspected = r.lrps_suspected,
                    missing_cells = ?r.missing_cells,
                    tasks_kicked = r.tasks_kicked,
                    tasks_pruned = r.tasks_pruned,
                    callbacks_retried = r.callbacks_retried,
                    "convergence pass"
                );
                *self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?trigger, error = %e, "convergence pass failed");
            }
        }
    }
}
