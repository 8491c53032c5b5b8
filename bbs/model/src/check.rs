//! Health checks declared on a DesiredLRP (`check_definition`).

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CheckDefinition {
    /// Liveness checks: startup waits for one to pass; later a failure crashes the instance.
    pub checks: Vec<Check>,
    pub log_source: String,
    /// Readiness checks toggle `routable` and never kill the instance.
    pub readiness_checks: Vec<Check>,
}

/// Exactly one of `tcp_check` and `http_check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_check: Option<TcpCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_check: Option<HttpCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TcpCheck {
    pub port: u32,
    pub connect_timeout_ms: u64,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCheck {
    pub port: u32,
    pub request_timeout_ms: u64,
    pub path: String,
    pub interval_ms: u64,
}

impl CheckDefinition {
    pub fn validate_into(&self, problems: &mut Problems) {
        for (kind, checks) in [
            ("checks", &self.checks),
            ("readiness_checks", &self.readiness_checks),
        ] {
            for (i, check) in checks.iter().enumerate() {
                let here = format!("check_definition.{kind}[{i}]");
                match (&check.tcp_check, &check.http_check) {
                    (Some(tcp), None) => valid_port(problems, &here, tcp.port),
                    (None, Some(http)) => valid_port(problems, &here, http.port),
                    _ => problems.add(format!(
                        "{here} must have exactly one of tcp_check and http_check"
                    )),
                }
            }
        }
    }
}

fn valid_port(problems: &mut Problems, here: &str, port: u32) {
    problems.check((1..=65535).contains(&port), || {
        format!("{here}.port must be 1 to 65535")
    });
}
