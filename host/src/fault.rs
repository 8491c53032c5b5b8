//! What can go wrong with a plug-in, at load and at call time.

use std::time::Duration;

use wasmtime::Trap;

/// Why a component was not loaded. Nothing of it ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: u64, max: u64 },
    #[error("cannot read component {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid component: {0}")]
    Compile(String),
    #[error(
        "component exports {found}, but this host supports {supported}: rebuild the plug-in \
         against diego-plugin-sdk for {supported} (this host does not speak that WIT version)"
    )]
    UnknownVersion { found: String, supported: String },
    #[error(
        "component does not export {expected} (its exports: {exports}); is it a plug-in of the {world} world?"
    )]
    WrongWorld {
        expected: String,
        world: &'static str,
        exports: String,
    },
    /// The component imports something the host does not provide, or its exports do not
    /// type-check against the world.
    #[error("component does not link against the {world} world: {message}")]
    Link {
        world: &'static str,
        message: String,
    },
    #[error("describe() failed: {0}")]
    Describe(Fault),
}

/// Why one call into a plug-in failed. The instance is dropped; the host goes on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its {0:?} deadline")]
    Deadline(Duration),
    #[error("exceeded its memory cap of {limit} bytes (tried to grow to {requested} bytes)")]
    Memory { limit: usize, requested: usize },
    #[error("panicked: {message}")]
    Panic { message: String },
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("input over the cap: {0}")]
    InputTooLarge(String),
    #[error("output over the cap: {0}")]
    OutputTooLarge(String),
    /// The call returned, but its answer is refused by the host's own checks (a placement
    /// that does not fit, a plan that does not validate, a length mismatch).
    #[error("invalid answer: {0}")]
    InvalidOutput(String),
    #[error("failed: {0}")]
    Other(String),
}

impl Fault {
    /// A short, stable label for metrics (`plugin_faults_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Deadline(_) => "deadline",
            Fault::Memory { .. } => "memory",
            Fault::Panic { .. } => "panic",
            Fault::StackOverflow => "stack_overflow",
            Fault::Trap(_) => "trap",
            Fault::Instantiate(_) => "instantiate",
            Fault::InputTooLarge(_) => "input_too_large",
            Fault::OutputTooLarge(_) => "output_too_large",
            Fault::InvalidOutput(_) => "invalid_output",
            Fault::Other(_) => "other",
        }
    }
}

/// What the store saw during the failed call, to tell the faults apart.
#[derive(Debug, Default)]
pub(crate) struct CallEvidence {
    /// The memory growth the limiter refused, if any.
    pub memory_denied: Option<usize>,
    pub memory_limit: usize,
    pub deadline: Duration,
    /// Captured guest stderr (bounded).
    pub stderr: String,
}

/// Classifies a wasmtime error from a call.
pub(crate) fn classify(err: &wasmtime::Error, evidence: &CallEvidence) -> Fault {
    // Checked first: with `trap_on_grow_failure` a refused growth surfaces as a plain error,
    // and a guest whose allocator gives up first traps as `unreachable` after printing.
    if let Some(requested) = evidence.memory_denied {
        return Fault::Memory {
            limit: evidence.memory_limit,
            requested,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Deadline(evidence.deadline),
        Some(Trap::StackOverflow) => Fault::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match panic_message(&evidence.stderr) {
            Some(message) => Fault::Panic { message },
            None if evidence.stderr.contains("memory allocation of") => Fault::Memory {
                limit: evidence.memory_limit,
                requested: evidence.memory_limit,
            },
            None => Fault::Trap(format!("unreachable code reached{}", stderr_tail(evidence))),
        },
        Some(trap) => Fault::Trap(format!("{trap}{}", stderr_tail(evidence))),
        None => Fault::Other(format!("{err:#}{}", stderr_tail(evidence))),
    }
}

fn stderr_tail(evidence: &CallEvidence) -> String {
    let s = evidence.stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {})", truncate(s, 512))
    }
}

/// The message of a Rust panic as printed by std:
/// `thread '<unnamed>' panicked at src/lib.rs:20:9:\n<message>\nnote: run with ...`.
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.find("panicked at ")?;
    let rest = &stderr[at..];
    let body = match rest.find('\n') {
        Some(nl) => &rest[nl + 1..],
        // Old format: `panicked at 'message', src/lib.rs:1:1`.
        None => rest.trim_start_matches("panicked at "),
    };
    let body = body.split("\nnote: run with").next().unwrap_or(body).trim();
    Some(truncate(body, 1024).to_owned())
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_rust_panic_messages() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:20:9:\npolicy bug: no score\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("policy bug: no score")
        );
        assert_eq!(panic_message("nothing"), None);
    }
}
