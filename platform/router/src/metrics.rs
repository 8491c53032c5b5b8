//! The router's counters, plain atomics read through a snapshot for whoever emits metrics.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    responses: [AtomicU64; 5],
    retries: AtomicU64,
    bad_endpoints: AtomicU64,
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub requests: u64,
    pub responses_1xx: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    /// Tries of another endpoint after one failed.
    pub retries: u64,
    /// Times an endpoint was marked bad.
    pub bad_endpoints: u64,
}

impl Counters {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_endpoint(&self) {
        self.bad_endpoints.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |i: usize| self.responses[i].load(Ordering::Relaxed);
        MetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            responses_1xx: r(0),
            responses_2xx: r(1),
            responses_3xx: r(2),
            responses_4xx: r(3),
            responses_5xx: r(4),
            retries: self.retries.load(Ordering::Relaxed),
            bad_endpoints: self.bad_endpoints.load(Ordering::Relaxed),
        }
    }
}
