//! Diego's action language as a serde tree: `{"run": {...}}`, `{"serial": {"actions": [...]}}`.
//!
//! The executor turns a tree of these into steps; the BBS only stores and validates them.

use serde::{Deserialize, Serialize};

use crate::desired_lrp::EnvironmentVariable;
use crate::validate::Problems;

/// How deep an action tree may nest. Deeper trees are refused (they would blow the stack of
/// recursive code downstream and no real workload needs them).
pub const MAX_ACTION_DEPTH: usize = 64;

/// One action. Exactly one variant, named as Diego's JSON names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Fetch a tgz/zip from a URL and extract it into a container path.
    Download(DownloadAction),
    /// Tar a container path and upload it to a URL.
    Upload(UploadAction),
    /// Run a process; a nonzero exit fails the action.
    Run(RunAction),
    /// Fail the inner action if it has not finished in time.
    Timeout(TimeoutAction),
    /// Log a start message, then a success message or a failure prefix with the error.
    EmitProgress(EmitProgressAction),
    /// Run the inner action and ignore its failure.
    Try(TryAction),
    /// Run all concurrently; fail if any fails, after all have finished.
    Parallel(ParallelAction),
    /// Run in order; stop at the first failure.
    Serial(SerialAction),
    /// Run all concurrently; when any exits the rest are cancelled and the result is a failure.
    Codependent(CodependentAction),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadAction {
    pub artifact: String,
    pub from: String,
    pub to: String,
    pub cache_key: String,
    pub log_source: String,
    pub user: String,
    pub checksum_algorithm: String,
    pub checksum_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UploadAction {
    pub artifact: String,
    pub from: String,
    pub to: String,
    pub log_source: String,
    pub user: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    /// Deprecated in Diego; kept for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunAction {
    pub path: String,
    pub args: Vec<String>,
    pub dir: String,
    pub env: Vec<EnvironmentVariable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    pub user: String,
    pub log_source: String,
    pub suppress_log_output: bool,
    pub volume_mounted_files: Vec<File>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutAction {
    #[schema(no_recursion)]
    pub action: Box<Action>,
    #[serde(default)]
    pub timeout_ms: i64,
    /// Deprecated nanosecond form (`timeout`), honoured when `timeout_ms` is 0.
    #[serde(default, rename = "timeout", skip_serializing_if = "is_zero")]
    pub deprecated_timeout_ns: i64,
    #[serde(default)]
    pub log_source: String,
}

impl TimeoutAction {
    /// The effective timeout in milliseconds.
    pub fn effective_timeout_ms(&self) -> i64 {
        if self.timeout_ms > 0 {
            self.timeout_ms
        } else {
            self.deprecated_timeout_ns / 1_000_000
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitProgressAction {
    #[schema(no_recursion)]
    pub action: Box<Action>,
    #[serde(default)]
    pub start_message: String,
    #[serde(default)]
    pub success_message: String,
    #[serde(default)]
    pub failure_message_prefix: String,
    #[serde(default)]
    pub log_source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryAction {
    #[schema(no_recursion)]
    pub action: Box<Action>,
    #[serde(default)]
    pub log_source: String,
}

macro_rules! list_action {
    ($name:ident) => {
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(default)]
            #[schema(no_recursion)]
            pub actions: Vec<Action>,
            #[serde(default)]
            pub log_source: String,
        }
    };
}
list_action!(ParallelAction);
list_action!(SerialAction);
list_action!(CodependentAction);

impl Action {
    /// The actions directly inside this one.
    pub fn children(&self) -> Vec<&Action> {
        match self {
            Action::Download(_) | Action::Upload(_) | Action::Run(_) => vec![],
            Action::Timeout(a) => vec![&a.action],
            Action::EmitProgress(a) => vec![&a.action],
            Action::Try(a) => vec![&a.action],
            Action::Parallel(a) => a.actions.iter().collect(),
            Action::Serial(a) => a.actions.iter().collect(),
            Action::Codependent(a) => a.actions.iter().collect(),
        }
    }

    /// Checks the whole tree, naming the path of each problem (`action.serial[1].run`).
    pub fn validate_into(&self, path: &str, problems: &mut Problems) {
        self.validate_at(path, 1, problems);
    }

    fn validate_at(&self, path: &str, depth: usize, problems: &mut Problems) {
        if depth > MAX_ACTION_DEPTH {
            problems.add(format!(
                "{path}: actions nest deeper than {MAX_ACTION_DEPTH}"
            ));
            return;
        }
        match self {
            Action::Download(a) => {
                let here = format!("{path}.download");
                problems.check(!a.from.is_empty(), || format!("{here}.from is required"));
                problems.check(!a.to.is_empty(), || format!("{here}.to is required"));
                let algorithm = a.checksum_algorithm.to_ascii_lowercase();
                problems.check(
                    a.checksum_value.is_empty()
                        || matches!(algorithm.as_str(), "md5" | "sha1" | "sha256"),
                    || format!("{here}.checksum_algorithm must be md5, sha1 or sha256"),
                );
                problems.check(
                    a.checksum_value.is_empty() == a.checksum_algorithm.is_empty(),
                    || format!("{here}: checksum_algorithm and checksum_value go together"),
                );
            }
            Action::Upload(a) => {
                let here = format!("{path}.upload");
                problems.check(!a.from.is_empty(), || format!("{here}.from is required"));
                problems.check(!a.to.is_empty(), || format!("{here}.to is required"));
            }
            Action::Run(a) => {
                problems.check(!a.path.is_empty(), || {
                    format!("{path}.run.path is required")
                });
            }
            Action::Timeout(a) => {
                problems.check(a.effective_timeout_ms() > 0, || {
                    format!("{path}.timeout.timeout_ms must be > 0")
                });
                a.action
                    .validate_at(&format!("{path}.timeout.action"), depth + 1, problems);
            }
            Action::EmitProgress(a) => {
                a.action
                    .validate_at(&format!("{path}.emit_progress.action"), depth + 1, problems)
            }
            Action::Try(a) => {
                a.action
                    .validate_at(&format!("{path}.try.action"), depth + 1, problems)
            }
            Action::Parallel(a) => {
                Self::validate_list(path, "parallel", &a.actions, depth, problems)
            }
            Action::Serial(a) => Self::validate_list(path, "serial", &a.actions, depth, problems),
            Action::Codependent(a) => {
                Self::validate_list(path, "codependent", &a.actions, depth, problems)
            }
        }
    }

    fn validate_list(
        path: &str,
        kind: &str,
        actions: &[Action],
        depth: usize,
        problems: &mut Problems,
    ) {
        problems.check(!actions.is_empty(), || {
            format!("{path}.{kind}.actions may not be empty")
        });
        for (i, action) in actions.iter().enumerate() {
            action.validate_at(&format!("{path}.{kind}[{i}]"), depth + 1, problems);
        }
    }

    /// A Run action with a path and arguments, as tests and simple clients build them.
    pub fn run(path: impl Into<String>, args: &[&str]) -> Action {
        Action::Run(RunAction {
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..RunAction::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_use_diego_json_names() {
        let json = r#"{"serial":{"actions":[
            {"download":{"from":"http://x/a.tgz","to":"/app","cache_key":"a"}},
            {"timeout":{"action":{"run":{"path":"/bin/true","args":["-x"]}},"timeout_ms":1000}},
            {"emit_progress":{"action":{"try":{"action":{"run":{"path":"ls"}}}},"start_message":"go"}},
            {"codependent":{"actions":[{"run":{"path":"a"}},{"parallel":{"actions":[{"run":{"path":"b"}}]}}]}}
        ]}}"#;
        let action: Action = serde_json::from_str(json).unwrap();
        let mut problems = Problems::new();
        action.validate_into("action", &mut problems);
        problems.into_request_result().unwrap();
        let again: Action = serde_json::from_str(&serde_json::to_string(&action).unwrap()).unwrap();
        assert_eq!(again, action);
    }

    #[test]
    fn bad_trees_are_named() {
        let action: Action =
            serde_json::from_str(r#"{"serial":{"actions":[{"run":{"path":""}},{"timeout":{"action":{"run":{"path":"x"}}}}]}}"#)
                .unwrap();
        let mut problems = Problems::new();
        action.validate_into("action", &mut problems);
        let message = problems.into_request_result().unwrap_err().message;
        assert!(
            message.contains("action.serial[0].run.path is required"),
            "{message}"
        );
        assert!(
            message.contains("action.serial[1].timeout.timeout_ms must be > 0"),
            "{message}"
        );
    }

    #[test]
    fn unknown_actions_and_fields_are_refused() {
        assert!(serde_json::from_str::<Action>(r#"{"runn":{"path":"x"}}"#).is_err());
        assert!(serde_json::from_str::<Action>(r#"{"run":{"path":"x","argz":[]}}"#).is_err());
    }

    #[test]
    fn deep_trees_are_refused() {
        let mut action = Action::run("x", &[]);
        for _ in 0..MAX_ACTION_DEPTH {
            action = Action::Try(TryAction {
                action: Box::new(action),
                log_source: String::new(),
            });
        }
        let mut problems = Problems::new();
        action.validate_into("action", &mut problems);
        assert!(problems.into_request_result().is_err());
    }
}
