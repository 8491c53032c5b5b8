//! diego-lifecycle-runner: runs a lifecycle plug-in's plans in Garden containers.
//!
//! The host ([`diego_host::lifecycle`]) calls the guest and validates what it returns; this
//! crate does the container work:
//!
//! - [`GardenCaps`] implements the host's capability traits ([`diego_host::capabilities`]) over
//!   any [`diego_garden::Backend`];
//! - [`run_plan`] walks a validated plan and records every node's outcome (see `plan.rs` for
//!   why it walks the arena instead of converting to `diego_executor`'s actions);
//! - [`stage`] drives `stage` → run plan → capture files → `resume-staging` → … → done;
//!   a guest's failure surfaces as its own message ("no buildpack detected", "compile (x)
//!   failed with exit status N" with the log tail);
//! - [`launch`] runs the launch plan's setup and starts its main process with the instance's
//!   environment; [`await_healthy`] runs a check plan's probes natively until they pass;
//! - [`stage_docker`] / [`launch_docker`] (`docker.rs`): the Docker lifecycle's image work —
//!   the image config resolved natively and handed to the guest, the app container created on
//!   the image's layers (`docker://…`).
//!
//! Guest calls are synchronous and short (the host caps each at ~1 s), so they run inline.

mod docker;
mod garden;
mod plan;

use std::time::{Duration, Instant};

use diego_host::LogLine;
use diego_host::capabilities::{
    CapabilityError, ContainerFiles, ContainerRef, PlanLog, Probe, ProcessExit, RunProcess,
};
use diego_host::lifecycle::types::{
    CapturedFile, CheckPlan, LaunchPlan, LaunchRequest, Probe as ProbeSpec, StagingRequest,
    StagingResult,
};
use diego_host::lifecycle::{LifecycleError, LifecyclePlugin, StagingStep};

pub use docker::{
    EXECUTION_METADATA_OPTION, IMAGE_CONFIG_OPTION, docker_container_spec, docker_rootfs,
    launch_docker, stage_docker,
};
pub use garden::{GUEST_LOG_SOURCE, GardenCaps, LogSink};
pub use plan::{PlanRun, run_plan};

/// Staging calls the guest at most this many times.
pub const MAX_STAGING_STEPS: usize = 16;

/// Why staging, launching or a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The guest failed (its message, e.g. "no buildpack detected"), faulted, or returned a
    /// plan the host refused.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The request cannot be served (e.g. a docker request without an image).
    #[error("{0}")]
    Request(String),
    /// The docker image could not be resolved (not found, unauthorized, unreachable...).
    #[error("resolving the docker image failed: {0}")]
    Image(#[from] diego_garden::image::ImageError),
    #[error("staging did not finish after {0} steps")]
    TooManySteps(usize),
    #[error("launch setup failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error("the app process exited with status {0} before it was healthy")]
    Exited(i32),
    #[error("instance never healthy after {0:?}: {1}")]
    NeverHealthy(Duration, String),
}

/// A finished staging.
#[derive(Debug, Clone)]
pub struct Staged {
    pub result: StagingResult,
    /// What the guest logged, over all its calls.
    pub guest_logs: Vec<LogLine>,
    /// Plans run.
    pub plans: usize,
}

/// Stages in `container`: calls the guest, runs each plan it returns, hands back what was
/// observed, until the guest is done or fails.
pub async fn stage(
    plugin: &LifecyclePlugin,
    caps: &GardenCaps,
    container: &ContainerRef,
    request: &StagingRequest,
) -> Result<Staged, RunnerError> {
    let mut guest_logs = Vec::new();
    let mut called = plugin.stage(request)?;
    for plans in 0..MAX_STAGING_STEPS {
        caps.forward_guest_logs(&called.logs);
        guest_logs.append(&mut called.logs);
        let c = match called.value {
            StagingStep::Done(result) => {
                return Ok(Staged {
                    result,
                    guest_logs,
                    plans,
                });
            }
            StagingStep::Continue(c) => c,
        };
        let run = run_plan(caps, container, &c.plan).await;
        tracing::info!(
            container = %container.0,
            step = plans,
            result = ?run.result,
            "staging plan ran"
        );
        let mut seen = run.observation;
        for capture in &c.captures {
            let read = caps
                .read_file(container, &capture.path, capture.max_bytes)
                .await?;
            seen.files.push(CapturedFile {
                path: capture.path.clone(),
                truncated: read.as_ref().is_some_and(|(_, t)| *t),
                contents: read.map(|(b, _)| b),
            });
        }
        called = plugin.resume_staging(&c.state, &seen)?;
    }
    Err(RunnerError::TooManySteps(MAX_STAGING_STEPS))
}

/// The instance a launch is for (Diego's INSTANCE_INDEX / INSTANCE_GUID).
#[derive(Debug, Clone)]
pub struct Instance {
    pub index: u32,
    pub guid: String,
}

/// A launched app process.
#[derive(Debug)]
pub struct Launched {
    pub process_id: String,
    pub plan: LaunchPlan,
    exit: tokio::sync::watch::Receiver<Option<i32>>,
}

impl Launched {
    /// The exit status, once the main process exited.
    pub fn exit_status(&self) -> Option<i32> {
        *self.exit.borrow()
    }
}

/// Calls the launcher, runs its setup plan, and starts the main process with the plan's env,
/// the main run-spec's env and the instance's (later wins).
pub async fn launch(
    plugin: &LifecyclePlugin,
    caps: &GardenCaps,
    container: &ContainerRef,
    request: &LaunchRequest,
    instance: &Instance,
) -> Result<Launched, RunnerError> {
    let plan = plugin.launch(request)?.value;
    start_plan(caps, container, plan, instance).await
}

/// Runs a launch plan's setup and starts its main process (see [`launch`]).
pub(crate) async fn start_plan(
    caps: &GardenCaps,
    container: &ContainerRef,
    plan: LaunchPlan,
    instance: &Instance,
) -> Result<Launched, RunnerError> {
    if let Some(setup) = &plan.setup {
        let run = run_plan(caps, container, setup).await;
        run.result.map_err(RunnerError::Setup)?;
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let pairs = plan
        .env
        .iter()
        .chain(&plan.main.env)
        .map(|e| (e.name.clone(), e.value.clone()))
        .chain([
            ("INSTANCE_INDEX".to_owned(), instance.index.to_string()),
            ("INSTANCE_GUID".to_owned(), instance.guid.clone()),
            ("CF_INSTANCE_INDEX".to_owned(), instance.index.to_string()),
            ("CF_INSTANCE_GUID".to_owned(), instance.guid.clone()),
        ]);
    for (name, value) in pairs {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    let mut main = plan.main.clone();
    main.env.clear();
    let (id, exit) = caps.spawn(container, &main, &env).await?;
    Ok(Launched {
        process_id: id,
        plan,
        exit,
    })
}

/// One probe, once. `process_alive` says whether the main process still runs.
pub async fn probe_once(
    caps: &GardenCaps,
    container: &ContainerRef,
    probe: &ProbeSpec,
    process_alive: bool,
) -> Result<bool, CapabilityError> {
    match probe {
        ProbeSpec::Tcp(t) => {
            caps.probe_port(
                container,
                t.port,
                Duration::from_millis(t.connect_timeout_ms),
            )
            .await
        }
        ProbeSpec::Http(h) => {
            caps.probe_http(
                container,
                h.port,
                &h.path,
                Duration::from_millis(h.request_timeout_ms),
            )
            .await
        }
        ProbeSpec::ProcessAlive => Ok(process_alive),
        ProbeSpec::Command(spec) => Ok(matches!(
            caps.run(container, spec).await?,
            ProcessExit::Exited { status: 0, .. }
        )),
    }
}

/// Diego's startup phase: runs the liveness checks every half second until all pass within
/// the plan's start timeout; fails early if the process exits.
pub async fn await_healthy(
    caps: &GardenCaps,
    container: &ContainerRef,
    plan: &CheckPlan,
    launched: &Launched,
) -> Result<(), RunnerError> {
    let limit = Duration::from_millis(plan.start_timeout_ms);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = launched.exit_status() {
            return Err(RunnerError::Exited(status));
        }
        let mut failing = None;
        for (i, probe) in plan.checks.iter().enumerate() {
            if !probe_once(caps, container, probe, true).await? {
                failing = Some(format!("check {i} ({probe:?}) failing"));
                break;
            }
        }
        let Some(failing) = failing else {
            caps.log(container, "HEALTH", "healthy");
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(RunnerError::NeverHealthy(limit, failing));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether every readiness check passes now (routability; never kills the instance).
pub async fn ready(
    caps: &GardenCaps,
    container: &ContainerRef,
    plan: &CheckPlan,
    launched: &Launched,
) -> Result<bool, CapabilityError> {
    let alive = launched.exit_status().is_none();
    for probe in &plan.readiness_checks {
        if !probe_once(caps, container, probe, alive).await? {
            return Ok(false);
        }
    }
    Ok(true)
}
