//! Task: a one-off unit of work, and its state machine PENDING → RUNNING → COMPLETED → RESOLVING.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actions::{Action, File};
use crate::desired_lrp::{
    CachedDependency, CertificateProperties, EnvironmentVariable, ImageLayer, LogRateLimit,
    MetricTagValue, Network, SecurityGroupRule, VolumeMount,
};
use crate::staging::LifecycleStaging;
use crate::validate::Problems;
use crate::{BbsError, Timestamp};

/// The longest task result Diego keeps.
pub const MAX_RESULT_BYTES: usize = 10 * 1024;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum TaskState {
    #[default]
    Invalid,
    Pending,
    Running,
    Completed,
    Resolving,
}

impl TaskState {
    /// Diego's `ValidateTransitionTo`: only Pending→Running, Running→Completed and
    /// Completed→Resolving. (Cancel and fail also complete a PENDING task; the BBS checks those
    /// calls on their own.)
    pub fn validate_transition_to(self, to: TaskState) -> Result<(), BbsError> {
        use TaskState::*;
        match (self, to) {
            (Pending, Running) | (Running, Completed) | (Completed, Resolving) => Ok(()),
            _ => Err(BbsError::transition(self, to)),
        }
    }
}

/// What to run: everything a client gives when it desires a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TaskDefinition {
    pub rootfs: String,
    pub env: Vec<EnvironmentVariable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub disk_mb: i32,
    pub memory_mb: i32,
    pub cpu_weight: u32,
    pub privileged: bool,
    pub log_source: String,
    pub log_guid: String,
    pub metrics_guid: String,
    /// A file in the container whose contents become the task's `result`.
    pub result_file: String,
    /// Where the BBS POSTs the result once the task completes.
    pub completion_callback_url: String,
    pub annotation: String,
    pub egress_rules: Vec<SecurityGroupRule>,
    pub cached_dependencies: Vec<CachedDependency>,
    pub legacy_download_user: String,
    pub trusted_system_certificates_path: String,
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub placement_tags: Vec<String>,
    pub max_pids: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_properties: Option<CertificateProperties>,
    pub image_username: String,
    pub image_password: String,
    pub image_layers: Vec<ImageLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_rate_limit: Option<LogRateLimit>,
    pub metric_tags: BTreeMap<String, MetricTagValue>,
    pub volume_mounted_files: Vec<File>,
    /// A staging task: the rep stages with this lifecycle plug-in instead of running an
    /// `action` (beyond Diego; see `staging.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_staging: Option<LifecycleStaging>,
}

impl TaskDefinition {
    pub fn validate_into(&self, p: &mut Problems) {
        p.rootfs(&self.rootfs);
        match (&self.action, &self.lifecycle_staging) {
            (Some(_), Some(_)) => p.add("a task has an action or lifecycle_staging, not both"),
            (Some(action), None) => action.validate_into("action", p),
            (None, Some(staging)) => staging.validate_into(p),
            (None, None) => p.add("action is required"),
        }
        p.resources(self.memory_mb, self.disk_mb, self.max_pids, self.cpu_weight);
        p.annotation(&self.annotation);
        if !self.completion_callback_url.is_empty() {
            let url = &self.completion_callback_url;
            p.check(
                url.starts_with("http://") || url.starts_with("https://"),
                || format!("completion_callback_url {url:?} must be an http or https URL"),
            );
        }
        p.image_credentials(&self.image_username, &self.image_password);
    }
}

/// A task as the BBS stores it. Diego's JSON embeds the definition in the record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Task {
    #[serde(flatten)]
    pub task_definition: TaskDefinition,
    pub task_guid: String,
    pub domain: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub first_completed_at: Timestamp,
    pub state: TaskState,
    pub cell_id: String,
    pub result: String,
    pub failed: bool,
    pub failure_reason: String,
    pub rejection_count: i32,
    pub rejection_reason: String,
}

/// The body the BBS POSTs to a task's completion callback URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCallbackResponse {
    pub task_guid: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
    pub annotation: String,
    pub created_at: Timestamp,
}

impl Task {
    pub fn callback_response(&self) -> TaskCallbackResponse {
        TaskCallbackResponse {
            task_guid: self.task_guid.clone(),
            failed: self.failed,
            failure_reason: self.failure_reason.clone(),
            result: self.result.clone(),
            annotation: self.task_definition.annotation.clone(),
            created_at: self.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn only_diegos_transitions_are_valid() {
        let all = [Invalid, Pending, Running, Completed, Resolving];
        for from in all {
            for to in all {
                let ok = matches!(
                    (from, to),
                    (Pending, Running) | (Running, Completed) | (Completed, Resolving)
                );
                assert_eq!(
                    from.validate_transition_to(to).is_ok(),
                    ok,
                    "{from:?} -> {to:?}"
                );
            }
        }
        let err = Running.validate_transition_to(Pending).unwrap_err();
        assert_eq!(err.message, "Cannot transition from Running to Pending");
    }

    #[test]
    fn task_json_embeds_its_definition() {
        let task = Task {
            task_guid: "t1".into(),
            state: Pending,
            task_definition: TaskDefinition {
                rootfs: "preloaded:x".into(),
                memory_mb: 64,
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&task).unwrap();
        assert_eq!(v["rootfs"], "preloaded:x");
        assert_eq!(v["state"], "Pending");
        assert_eq!(serde_json::from_value::<Task>(v).unwrap(), task);
    }
}
