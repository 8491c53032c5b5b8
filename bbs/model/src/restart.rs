//! Diego's crash restart policy (`models/restart_calculator.go`).
//!
//! The first three crashes restart at once; then the instance waits 30 s, 60 s, 2 m, 4 m, 8 m and
//! 16 m (capped) before the converger restarts it; after 200 crashes it stays CRASHED for good.
//! The count resets only when an instance had been RUNNING for over five minutes when it crashed.

use std::time::Duration;

use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub immediate_restarts: i32,
    /// The first backoff step, doubled per crash past the immediate ones (Diego: 30 s, fixed;
    /// ours is configurable so tests and dev clusters can watch the schedule in seconds).
    pub backoff_min: Duration,
    pub max_backoff: Duration,
    pub max_restart_attempts: i32,
}

/// The shortest backoff step.
pub const CRASH_BACKOFF_MIN: Duration = Duration::from_secs(30);
/// A crash of an instance that had run this long resets its crash count to 1.
pub const CRASH_RESET_TIMEOUT: Duration = Duration::from_secs(5 * 60);

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            immediate_restarts: 3,
            backoff_min: CRASH_BACKOFF_MIN,
            max_backoff: Duration::from_secs(16 * 60),
            max_restart_attempts: 200,
        }
    }
}

impl RestartPolicy {
    /// `floor(log2(ceil(max_backoff / backoff_min)))`: 5 with the defaults.
    pub fn max_backoff_count(&self) -> u32 {
        let steps = self
            .max_backoff
            .as_nanos()
            .div_ceil(self.backoff_min.as_nanos().max(1))
            .max(1);
        u128::BITS - 1 - steps.leading_zeros()
    }

    /// How long an instance with `crash_count` crashes waits before it is restarted; `None` when
    /// it is never restarted again.
    pub fn backoff(&self, crash_count: i32) -> Option<Duration> {
        if crash_count < self.immediate_restarts {
            return Some(Duration::ZERO);
        }
        if crash_count >= self.max_restart_attempts {
            return None;
        }
        let exponent = u32::try_from(crash_count - self.immediate_restarts)
            .unwrap_or(0)
            .min(self.max_backoff_count());
        Some((self.backoff_min * 2u32.pow(exponent)).min(self.max_backoff))
    }

    /// Diego's `ShouldRestart(now, crashedAt, crashCount)`, times in ns since the epoch.
    pub fn should_restart(&self, now: Timestamp, crashed_at: Timestamp, crash_count: i32) -> bool {
        match self.backoff(crash_count) {
            None => false,
            Some(backoff) if backoff.is_zero() => true,
            Some(backoff) => {
                let backoff_ns = i64::try_from(backoff.as_nanos()).unwrap_or(i64::MAX);
                crashed_at.saturating_add(backoff_ns) <= now
            }
        }
    }

    /// Restart without waiting for the converger (the first three crashes).
    pub fn should_restart_immediately(&self, crash_count: i32) -> bool {
        self.should_restart(0, 0, crash_count)
    }

    /// The crash count after a crash of an instance that was `was_running` since `since`.
    pub fn next_crash_count(
        &self,
        previous: i32,
        was_running: bool,
        since: Timestamp,
        now: Timestamp,
    ) -> i32 {
        let reset_ns = i64::try_from(CRASH_RESET_TIMEOUT.as_nanos()).unwrap_or(i64::MAX);
        if was_running && now.saturating_sub(since) > reset_ns {
            1
        } else {
            previous.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn backoff_schedule_matches_diego() {
        let p = RestartPolicy::default();
        assert_eq!(p.max_backoff_count(), 5);
        let secs: Vec<Option<u64>> = (0..10).map(|c| p.backoff(c).map(|d| d.as_secs())).collect();
        assert_eq!(
            secs,
            vec![
                Some(0),
                Some(0),
                Some(0),
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(960),
                Some(960)
            ]
        );
        assert_eq!(p.backoff(199).map(|d| d.as_secs()), Some(960));
        assert_eq!(p.backoff(200), None);
        let fast = RestartPolicy {
            backoff_min: Duration::from_secs(2),
            max_backoff: Duration::from_secs(64),
            ..RestartPolicy::default()
        };
        let secs: Vec<u64> = (3..10)
            .filter_map(|c| fast.backoff(c))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 64, 64]);
    }

    #[test]
    fn should_restart_waits_out_the_backoff() {
        let p = RestartPolicy::default();
        assert!(p.should_restart_immediately(2));
        assert!(!p.should_restart_immediately(3));
        let crashed = 1000 * S;
        assert!(!p.should_restart(crashed + 29 * S, crashed, 3));
        assert!(p.should_restart(crashed + 30 * S, crashed, 3));
        assert!(!p.should_restart(crashed + 10_000 * S, crashed, 200));
    }

    #[test]
    fn crash_count_resets_after_five_minutes_running() {
        let p = RestartPolicy::default();
        assert_eq!(p.next_crash_count(7, true, 0, 301 * S), 1);
        assert_eq!(p.next_crash_count(7, true, 0, 299 * S), 8);
        assert_eq!(p.next_crash_count(7, false, 0, 301 * S), 8);
    }
}
