//! diego-executor: Diego's executor action language, run against a Garden container.
//!
//! An [`Action`](diego_model::Action) tree is validated and turned by the transformer into
//! one step per action (Diego's `depot/transformer` and `depot/steps`), then performed
//! against a container through any [`diego_garden::Backend`]:
//!
//! - `run`: a process; each line of its output is a [`LogLine`]; a nonzero exit fails
//!   ("Exited with status N"); cancelled, it gets SIGTERM, then SIGKILL after the graceful
//!   shutdown interval.
//! - `download`: HTTP GET of a tgz or tar, verified (md5/sha1/sha256) and streamed into the
//!   container; kept in a local cache by `cache_key`; at most `max_concurrent_downloads` at once.
//! - `upload`: a file (its contents) or directory (as tar) streamed out and POSTed.
//! - `timeout`, `emit_progress`, `try`, `parallel`, `serial`, `codependent`: as Diego.
//!
//! Cancelling [`RunContext::cancel`] stops the whole tree. Log lines are tagged with the
//! source (an action's `log_source` overrides the default for its subtree) and the instance,
//! and fan out to [`Executor::subscribe`]rs.

mod cache;
pub mod error;
mod executor;
pub mod logs;
mod steps;
mod transformer;

pub use error::StepError;
pub use executor::{Config, Executor, ExecutorError, LogTags, RunContext};
pub use logs::{LogEvent, LogHub, LogLine, LogStream, LogSubscription};
