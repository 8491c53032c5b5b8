//! [`StepError`]: why an action failed, worded for the user (it becomes a Task's
//! `failure_reason` or an LRP's crash reason), as Diego words it.

use std::time::Duration;

/// Why a step (and so the action it was built from) failed. `Display` is the user-facing
/// failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The action tree was refused before anything ran.
    #[error("invalid action: {0}")]
    Invalid(String),
    /// A Run action's process exited with a nonzero status.
    #[error("Exited with status {status}{}", if *.out_of_memory { " (out of memory)" } else { "" })]
    Exited {
        /// The exit status (`128 + n` when killed by signal `n`).
        status: i32,
        /// Whether the container's OOM killer had acted when the process exited.
        out_of_memory: bool,
    },
    /// The step was cancelled (its process, if any, was signalled and has exited).
    #[error("cancelled")]
    Cancelled,
    /// A Timeout action's inner action did not finish in time; it was cancelled.
    #[error("timed out after {}", go_duration(*.0))]
    TimedOut(Duration),
    /// A Download action failed; `reason` never contains the URL (it may hold credentials).
    #[error("Downloading {}failed: {reason}", artifact_prefix(.artifact))]
    Download {
        /// The action's `artifact` (may be empty).
        artifact: String,
        /// What went wrong.
        reason: String,
    },
    /// An Upload action failed; `reason` never contains the URL.
    #[error("Uploading {}failed: {reason}", artifact_prefix(.artifact))]
    Upload {
        /// The action's `artifact` (may be empty).
        artifact: String,
        /// What went wrong.
        reason: String,
    },
    /// One action of a Codependent group exited successfully, so the group was stopped.
    #[error("Codependent step exited: {0}")]
    CodependentExited(String),
    /// Several concurrent actions failed (Parallel, Codependent); joined with `; ` as Diego does.
    #[error("{}", join(.0))]
    Aggregate(Vec<StepError>),
    /// The container backend refused or failed an operation (start a process, signal it, ...).
    #[error("{context}: {message}")]
    Backend {
        /// What the executor was doing.
        context: String,
        /// The backend's error.
        message: String,
    },
}

impl StepError {
    /// Whether this is (only) a cancellation, not a failure of its own.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, StepError::Cancelled)
    }

    pub(crate) fn backend(context: impl Into<String>, e: impl std::fmt::Display) -> StepError {
        StepError::Backend {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

fn artifact_prefix(artifact: &str) -> String {
    if artifact.is_empty() {
        String::new()
    } else {
        format!("{artifact} ")
    }
}

fn join(errors: &[StepError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A duration as Go's `time.Duration.String()` prints it (`500ms`, `1s`, `1.5s`, `2m0s`),
/// which is how Diego's messages show durations.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = d.as_secs();
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    let secs = trim_fraction(nanos % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `value / unit` with the fraction's trailing zeros dropped.
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_diego() {
        assert_eq!(
            StepError::Exited {
                status: 3,
                out_of_memory: false
            }
            .to_string(),
            "Exited with status 3"
        );
        assert_eq!(
            StepError::Exited {
                status: 137,
                out_of_memory: true
            }
            .to_string(),
            "Exited with status 137 (out of memory)"
        );
        assert_eq!(
            StepError::TimedOut(Duration::from_millis(250)).to_string(),
            "timed out after 250ms"
        );
        assert_eq!(
            StepError::Download {
                artifact: "app".into(),
                reason: "HTTP 404".into()
            }
            .to_string(),
            "Downloading app failed: HTTP 404"
        );
        assert_eq!(
            StepError::Upload {
                artifact: String::new(),
                reason: "x".into()
            }
            .to_string(),
            "Uploading failed: x"
        );
        assert_eq!(
            StepError::Aggregate(vec![
                StepError::Cancelled,
                StepError::Exited {
                    status: 1,
                    out_of_memory: false
                }
            ])
            .to_string(),
            "cancelled; Exited with status 1"
        );
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
    }
}
