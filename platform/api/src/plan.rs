//! A lifecycle's launch and check plans in Diego's action language: what the CC-bridge puts in
//! a DesiredLRP (`setup`, `action`, `monitor`, `check_definition`).
//!
//! Pure functions: the plans come from [`diego_host`] already validated (no cycles, no root
//! user), but this conversion checks the arena again rather than trusting it, so a bad plan
//! is an error here, never a stack overflow.

use diego_host::lifecycle::types as t;
use diego_model::actions::{
    Action, CodependentAction, DownloadAction, EmitProgressAction, ParallelAction, ResourceLimits,
    RunAction, SerialAction, TimeoutAction, TryAction, UploadAction,
};
use diego_model::{Check, CheckDefinition, EnvironmentVariable, HttpCheck, TcpCheck};

/// The container port apps listen on (Cloud Foundry's).
pub const APP_PORT: u16 = 8080;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lifecycle plan: {0}")]
pub struct PlanConversionError(pub String);

/// The arena `plan` as an action tree, from its root.
pub fn plan_to_action(plan: &t::ActionPlan) -> Result<Action, PlanConversionError> {
    let mut used = vec![false; plan.nodes.len()];
    node_to_action(plan, plan.root, &mut used, 0)
}

fn node_to_action(
    plan: &t::ActionPlan,
    node: u32,
    used: &mut [bool],
    depth: usize,
) -> Result<Action, PlanConversionError> {
    if depth >= diego_model::actions::MAX_ACTION_DEPTH {
        return Err(PlanConversionError(format!(
            "nested deeper than {}",
            diego_model::actions::MAX_ACTION_DEPTH
        )));
    }
    let i = node as usize;
    let action = plan
        .nodes
        .get(i)
        .ok_or_else(|| PlanConversionError(format!("node {node} is out of range")))?;
    if std::mem::replace(&mut used[i], true) {
        return Err(PlanConversionError(format!("node {node} is used twice")));
    }
    let mut child = |n: u32| node_to_action(plan, n, used, depth + 1).map(Box::new);
    Ok(match action {
        t::Action::Run(r) => Action::Run(run_action(r, &[])),
        t::Action::Download(d) => Action::Download(DownloadAction {
            artifact: d.artifact.clone(),
            from: d.from.clone(),
            to: d.to.clone(),
            cache_key: d.cache_key.clone().unwrap_or_default(),
            log_source: d.log_source.clone().unwrap_or_default(),
            user: d.user.clone(),
            checksum_algorithm: d
                .checksum
                .as_ref()
                .map(|c| algorithm(c.algorithm).to_owned())
                .unwrap_or_default(),
            checksum_value: d
                .checksum
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default(),
        }),
        t::Action::Upload(u) => Action::Upload(UploadAction {
            artifact: u.artifact.clone(),
            from: u.from.clone(),
            to: u.to.clone(),
            log_source: u.log_source.clone().unwrap_or_default(),
            user: u.user.clone(),
        }),
        t::Action::Timeout(x) => Action::Timeout(TimeoutAction {
            action: child(x.action)?,
            timeout_ms: i64::try_from(x.timeout_ms).unwrap_or(i64::MAX),
            deprecated_timeout_ns: 0,
            log_source: String::new(),
        }),
        t::Action::EmitProgress(p) => Action::EmitProgress(EmitProgressAction {
            action: child(p.action)?,
            start_message: p.start_message.clone(),
            success_message: p.success_message.clone(),
            failure_message_prefix: p.failure_message_prefix.clone(),
            log_source: String::new(),
        }),
        t::Action::Try(n) => Action::Try(TryAction {
            action: child(*n)?,
            log_source: String::new(),
        }),
        t::Action::Serial(c) => Action::Serial(SerialAction {
            actions: children(plan, c, used, depth)?,
            log_source: String::new(),
        }),
        t::Action::Parallel(c) => Action::Parallel(ParallelAction {
            actions: children(plan, c, used, depth)?,
            log_source: String::new(),
        }),
        t::Action::Codependent(c) => Action::Codependent(CodependentAction {
            actions: children(plan, c, used, depth)?,
            log_source: String::new(),
        }),
    })
}

fn children(
    plan: &t::ActionPlan,
    nodes: &[u32],
    used: &mut [bool],
    depth: usize,
) -> Result<Vec<Action>, PlanConversionError> {
    nodes
        .iter()
        .map(|&n| node_to_action(plan, n, used, depth + 1))
        .collect()
}

fn algorithm(a: t::ChecksumAlgorithm) -> &'static str {
    match a {
        t::ChecksumAlgorithm::Md5 => "md5",
        t::ChecksumAlgorithm::Sha1 => "sha1",
        t::ChecksumAlgorithm::Sha256 => "sha256",
    }
}

/// A run-spec as a RunAction; `base_env` comes first and the spec's own env wins over it.
pub fn run_action(r: &t::RunSpec, base_env: &[EnvironmentVariable]) -> RunAction {
    let mut env: Vec<EnvironmentVariable> = Vec::new();
    let pairs = base_env.iter().cloned().chain(
        r.env
            .iter()
            .map(|e| EnvironmentVariable::new(&e.name, &e.value)),
    );
    for var in pairs {
        env.retain(|e| e.name != var.name);
        env.push(var);
    }
    RunAction {
        path: r.path.clone(),
        args: r.args.clone(),
        dir: r.dir.clone().unwrap_or_default(),
        env,
        resource_limits: r.resource_limits.nofile.map(|n| ResourceLimits {
            nofile: Some(n),
            nproc: None,
        }),
        user: r.user.clone(),
        log_source: r.log_source.clone().unwrap_or_default(),
        suppress_log_output: r.suppress_log_output,
        volume_mounted_files: Vec::new(),
    }
}

/// A launch plan as a DesiredLRP's `setup` and `action`.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchActions {
    pub setup: Option<Action>,
    pub action: Action,
}

/// Converts a launch plan: the setup arena into a tree; the main run-spec into a RunAction
/// whose env is the plan's env, then the spec's, then `PORT` (always the app port, as Diego
/// sets it); sidecars run codependently with the main process.
pub fn launch_actions(plan: &t::LaunchPlan) -> Result<LaunchActions, PlanConversionError> {
    let setup = plan.setup.as_ref().map(plan_to_action).transpose()?;
    let base: Vec<EnvironmentVariable> = plan
        .env
        .iter()
        .map(|e| EnvironmentVariable::new(&e.name, &e.value))
        .collect();
    let mut main = run_action(&plan.main, &base);
    main.env.retain(|e| e.name != "PORT");
    main.env
        .push(EnvironmentVariable::new("PORT", APP_PORT.to_string()));
    let action = if plan.sidecars.is_empty() {
        Action::Run(main)
    } else {
        let mut actions = vec![Action::Run(main)];
        actions.extend(
            plan.sidecars
                .iter()
                .map(|s| Action::Run(run_action(s, &base))),
        );
        Action::Codependent(CodependentAction {
            actions,
            log_source: String::new(),
        })
    };
    Ok(LaunchActions { setup, action })
}

/// A check plan as Diego's health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckActions {
    /// tcp/http liveness checks (none for a process or no check: the instance is running
    /// once its process starts).
    pub check_definition: Option<CheckDefinition>,
    /// A command probe as Diego's legacy monitor action.
    pub monitor: Option<Action>,
    pub start_timeout_ms: u64,
}

/// Converts a check plan. Readiness checks are not carried over yet (nothing toggles
/// routability on them).
pub fn check_actions(plan: &t::CheckPlan) -> CheckActions {
    let mut checks = Vec::new();
    let mut monitor = None;
    for probe in &plan.checks {
        match probe {
            t::Probe::Tcp(p) => checks.push(Check {
                tcp_check: Some(TcpCheck {
                    port: u32::from(p.port),
                    connect_timeout_ms: p.connect_timeout_ms,
                    interval_ms: p.interval_ms,
                }),
                http_check: None,
            }),
            t::Probe::Http(p) => checks.push(Check {
                tcp_check: None,
                http_check: Some(HttpCheck {
                    port: u32::from(p.port),
                    request_timeout_ms: p.request_timeout_ms,
                    path: p.path.clone(),
                    interval_ms: p.interval_ms,
                }),
            }),
            // Diego's process check: no check at all; the process exiting is the crash.
            t::Probe::ProcessAlive => {}
            t::Probe::Command(r) => monitor = Some(Action::Run(run_action(r, &[]))),
        }
    }
    CheckActions {
        check_definition: (!checks.is_empty()).then(|| CheckDefinition {
            checks,
            log_source: "HEALTH".to_owned(),
            readiness_checks: Vec::new(),
        }),
        monitor,
        start_timeout_ms: plan.start_timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(path: &str, env: &[(&str, &str)]) -> t::RunSpec {
        t::RunSpec {
            path: path.into(),
            args: vec!["-c".into(), "x".into()],
            env: env
                .iter()
                .map(|(n, v)| t::EnvVar {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            dir: Some("/home/vcap/app".into()),
            user: "vcap".into(),
            resource_limits: t::ResourceLimits { nofile: Some(1024) },
            log_source: Some("APP".into()),
            suppress_log_output: false,
            capture_stdout: None,
        }
    }

    fn download() -> t::Action {
        t::Action::Download(t::DownloadSpec {
            artifact: "droplet".into(),
            from: "http://blobs/droplets/a/1.tgz".into(),
            to: "/home/vcap".into(),
            cache_key: None,
            checksum: Some(t::Checksum {
                algorithm: t::ChecksumAlgorithm::Sha256,
                value: "ab".into(),
            }),
            user: "vcap".into(),
            log_source: None,
        })
    }

    #[test]
    fn setup_plan_becomes_a_download_tree() {
        let plan = t::ActionPlan {
            nodes: vec![
                t::Action::Serial(vec![1, 2]),
                download(),
                t::Action::Timeout(t::TimeoutSpec {
                    action: 3,
                    timeout_ms: 5000,
                }),
                t::Action::Try(4),
                t::Action::Run(run("/bin/true", &[])),
            ],
            root: 0,
        };
        let action = plan_to_action(&plan).unwrap();
        let Action::Serial(s) = &action else {
            panic!("{action:?}")
        };
        let Action::Download(d) = &s.actions[0] else {
            panic!()
        };
        assert_eq!(d.from, "http://blobs/droplets/a/1.tgz");
        assert_eq!(d.checksum_algorithm, "sha256");
        assert_eq!(d.checksum_value, "ab");
        let Action::Timeout(x) = &s.actions[1] else {
            panic!()
        };
        assert_eq!(x.timeout_ms, 5000);
        assert!(matches!(&*x.action, Action::Try(_)));
        let mut problems = diego_model::validate::Problems::new();
        action.validate_into("setup", &mut problems);
        problems.into_request_result().unwrap();
    }

    #[test]
    fn bad_arenas_are_errors_not_overflows() {
        let cycle = t::ActionPlan {
            nodes: vec![t::Action::Try(0)],
            root: 0,
        };
        assert!(plan_to_action(&cycle).is_err());
        let out_of_range = t::ActionPlan {
            nodes: vec![t::Action::Serial(vec![7])],
            root: 0,
        };
        assert!(plan_to_action(&out_of_range).is_err());
    }

    #[test]
    fn main_process_gets_plan_env_then_its_own_then_port() {
        let plan = t::LaunchPlan {
            setup: Some(t::ActionPlan {
                nodes: vec![download()],
                root: 0,
            }),
            main: run("/bin/bash", &[("A", "main"), ("PORT", "9")]),
            sidecars: vec![],
            env: vec![
                t::EnvVar {
                    name: "A".into(),
                    value: "plan".into(),
                },
                t::EnvVar {
                    name: "B".into(),
                    value: "plan".into(),
                },
            ],
            ports: vec![8080],
        };
        let actions = launch_actions(&plan).unwrap();
        assert!(matches!(actions.setup, Some(Action::Download(_))));
        let Action::Run(r) = &actions.action else {
            panic!()
        };
        let get = |n: &str| r.env.iter().find(|e| e.name == n).map(|e| e.value.as_str());
        assert_eq!(get("A"), Some("main"));
        assert_eq!(get("B"), Some("plan"));
        assert_eq!(get("PORT"), Some("8080"));
        assert_eq!(r.env.iter().filter(|e| e.name == "PORT").count(), 1);
        assert_eq!(r.user, "vcap");
        assert_eq!(r.dir, "/home/vcap/app");
        assert_eq!(r.log_source, "APP");
        assert_eq!(
            r.resource_limits.as_ref().and_then(|l| l.nofile),
            Some(1024)
        );
    }

    #[test]
    fn sidecars_run_codependently() {
        let plan = t::LaunchPlan {
            setup: None,
            main: run("/app", &[]),
            sidecars: vec![run("/side", &[])],
            env: vec![],
            ports: vec![],
        };
        let actions = launch_actions(&plan).unwrap();
        let Action::Codependent(c) = actions.action else {
            panic!()
        };
        assert_eq!(c.actions.len(), 2);
    }

    #[test]
    fn checks_become_tcp_http_or_nothing() {
        let plan = t::CheckPlan {
            checks: vec![
                t::Probe::Tcp(t::TcpProbe {
                    port: 8080,
                    connect_timeout_ms: 1000,
                    interval_ms: 30_000,
                }),
                t::Probe::Http(t::HttpProbe {
                    port: 8080,
                    path: "/health".into(),
                    request_timeout_ms: 1000,
                    interval_ms: 30_000,
                }),
            ],
            readiness_checks: vec![t::Probe::ProcessAlive],
            start_timeout_ms: 60_000,
        };
        let c = check_actions(&plan);
        let def = c.check_definition.unwrap();
        assert_eq!(def.checks[0].tcp_check.as_ref().unwrap().port, 8080);
        assert_eq!(def.checks[1].http_check.as_ref().unwrap().path, "/health");
        assert!(def.readiness_checks.is_empty());
        assert_eq!(c.start_timeout_ms, 60_000);
        assert!(c.monitor.is_none());

        let process = check_actions(&t::CheckPlan {
            checks: vec![t::Probe::ProcessAlive],
            readiness_checks: vec![],
            start_timeout_ms: 1,
        });
        assert!(process.check_definition.is_none() && process.monitor.is_none());

        let command = check_actions(&t::CheckPlan {
            checks: vec![t::Probe::Command(run("/check", &[]))],
            readiness_checks: vec![],
            start_timeout_ms: 1,
        });
        assert!(matches!(command.monitor, Some(Action::Run(_))));
    }
}
