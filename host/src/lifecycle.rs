//! Lifecycle components (builder / launcher / healthcheck): load, call, validate plans.
//!
//! Every call runs on a fresh instance under [`Limits::lifecycle`] (1 s, 32 MiB) and returns
//! a plan the host validates whole before anything runs. Running the plans is the executor's
//! job, through the traits in [`crate::capabilities`]. A lifecycle fault has no fallback: the
//! staging task or the LRP fails with the [`LifecycleError`]'s message.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::engine::{Host, HostInner};
use crate::fault::{Fault, LoadError, truncate};
use crate::loader::{ComponentInfo, WorldSpec, load_component};
use crate::store::{Limits, LogLine, StoreState, fault_of, new_store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/lifecycle",
        world: "lifecycle",
    });
}

use bindings::LifecyclePre;
use bindings::diego::lifecycle::host::{self as host_iface, LogLevel};

/// The `diego:lifecycle/plugin` types (requests, plans, observations, results).
pub mod types {
    pub use super::bindings::diego::lifecycle::host::LogLevel;
    pub use super::bindings::exports::diego::lifecycle::plugin::*;
}

use types as t;

pub(crate) const SPEC: WorldSpec = WorldSpec {
    world: "lifecycle",
    interface: "diego:lifecycle/plugin",
    version: "0.1.0",
};

/// The only import a lifecycle has: bounded logging, never blocking.
impl host_iface::Host for StoreState {
    fn log(&mut self, level: LogLevel, message: String) {
        let used: usize = self.logs.iter().map(|l| l.message.len()).sum();
        if self.logs.len() >= self.max_log_lines || used + message.len() > self.max_log_bytes {
            self.logs_dropped += 1;
            return;
        }
        let level = match level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        };
        tracing::debug!(level, message = truncate(&message, 1024), "lifecycle log");
        self.logs.push(LogLine { level, message });
    }
}

pub(crate) fn add_host_imports(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    host_iface::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
}

/// Caps on a plan returned by a guest. The plan is the security boundary: nothing runs
/// unless all of it passes.
#[derive(Debug, Clone)]
pub struct PlanCaps {
    pub max_nodes: usize,
    pub max_depth: usize,
    /// Any one string (path, arg, env value, URL, message).
    pub max_string_bytes: usize,
    /// All strings of the plan together.
    pub max_total_bytes: usize,
    /// Children of a composite, args, env vars.
    pub max_list_len: usize,
    pub max_timeout_ms: u64,
    /// Users a run may not use.
    pub forbidden_users: Vec<String>,
    /// If not empty, every download/upload URL must start with one of these.
    pub allowed_url_prefixes: Vec<String>,
    pub max_captures: usize,
    pub max_capture_bytes: u32,
    /// Continuation state handed back to `resume-staging`.
    pub max_state_bytes: usize,
}

impl Default for PlanCaps {
    fn default() -> Self {
        PlanCaps {
            max_nodes: 1000,
            max_depth: 32,
            max_string_bytes: 16 << 10,
            max_total_bytes: 1 << 20,
            max_list_len: 256,
            max_timeout_ms: 6 * 3600 * 1000,
            forbidden_users: vec!["root".to_owned()],
            allowed_url_prefixes: Vec::new(),
            max_captures: 16,
            max_capture_bytes: 1 << 20,
            max_state_bytes: 64 << 10,
        }
    }
}

/// A refused plan, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan rejected: {}{reason}", node.map(|n| format!("node {n}: ")).unwrap_or_default())]
pub struct PlanError {
    pub node: Option<u32>,
    pub reason: String,
}

fn plan_err(node: Option<u32>, reason: impl Into<String>) -> PlanError {
    PlanError {
        node,
        reason: reason.into(),
    }
}

/// Why a lifecycle call gave nothing to run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    /// The guest faulted (deadline, memory, panic...).
    #[error("lifecycle '{name}' {fault} in {call}")]
    Fault {
        name: String,
        call: &'static str,
        fault: Fault,
    },
    /// The guest answered with an error of its own.
    #[error("lifecycle '{name}' failed in {call}: {error}")]
    Plugin {
        name: String,
        call: &'static str,
        error: String,
    },
    #[error("lifecycle '{name}' returned an invalid {call} answer: {error}")]
    Plan {
        name: String,
        call: &'static str,
        error: PlanError,
    },
}

/// A call's value with the log lines the guest emitted.
#[derive(Debug, Clone)]
pub struct Called<T> {
    pub value: T,
    pub logs: Vec<LogLine>,
    pub logs_dropped: usize,
}

/// What a staging step asks for next, validated.
#[derive(Debug, Clone)]
pub enum StagingStep {
    /// Run this (validated) plan, capture these files, then `resume_staging(state, seen)`.
    Continue(t::Continuation),
    Done(t::StagingResult),
}

/// A loaded, type-checked lifecycle component.
#[derive(Clone)]
pub struct LifecyclePlugin {
    host: Arc<HostInner>,
    pre: LifecyclePre<StoreState>,
    info: ComponentInfo,
    limits: Limits,
    caps: PlanCaps,
    described: t::PluginInfo,
}

impl std::fmt::Debug for LifecyclePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecyclePlugin")
            .field("info", &self.info)
            .field("name", &self.described.name)
            .finish_non_exhaustive()
    }
}

pub(crate) fn load(host: &Host, bytes: &[u8]) -> Result<LifecyclePlugin, LoadError> {
    let (component, info) = load_component(host, bytes, SPEC)?;
    let link_err = |e: wasmtime::Error| LoadError::Link {
        world: SPEC.world,
        message: format!("{e:#}"),
    };
    let instance_pre = host
        .inner
        .lifecycle_linker
        .instantiate_pre(&component)
        .map_err(link_err)?;
    let pre = LifecyclePre::new(instance_pre).map_err(link_err)?;
    let mut plugin = LifecyclePlugin {
        host: host.inner.clone(),
        pre,
        info,
        limits: Limits::lifecycle(),
        caps: PlanCaps::default(),
        described: t::PluginInfo {
            name: String::new(),
            version: String::new(),
            lifecycle_type: String::new(),
            kinds: t::LifecycleKinds::empty(),
        },
    };
    let described = plugin
        .call("describe", |inst, store| {
            inst.diego_lifecycle_plugin().call_describe(store)
        })
        .map_err(|e| match e {
            LifecycleError::Fault { fault, .. } => LoadError::Describe(fault),
            other => LoadError::Describe(Fault::Other(other.to_string())),
        })?
        .value;
    plugin.described = described;
    Ok(plugin)
}

impl LifecyclePlugin {
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// What `describe` said at load: name, version, lifecycle type, kinds.
    pub fn describe(&self) -> &t::PluginInfo {
        &self.described
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_plan_caps(mut self, caps: PlanCaps) -> Self {
        self.caps = caps;
        self
    }

    fn call<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&bindings::Lifecycle, &mut wasmtime::Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<Called<R>, LifecycleError> {
        let mut store = new_store(&self.host, &self.limits);
        let fault = |fault| LifecycleError::Fault {
            name: self.described.name.clone(),
            call,
            fault,
        };
        let inst = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| fault(Fault::Instantiate(format!("{e:#}"))))?;
        let value = f(&inst, &mut store).map_err(|e| fault(fault_of(&store, &self.limits, &e)))?;
        let data = store.into_data();
        Ok(Called {
            value,
            logs: data.logs,
            logs_dropped: data.logs_dropped,
        })
    }

    fn check_input(&self, call: &'static str, bytes: usize) -> Result<(), LifecycleError> {
        if bytes > self.limits.max_string_bytes {
            return Err(LifecycleError::Fault {
                name: self.described.name.clone(),
                call,
                fault: Fault::InputTooLarge(format!(
                    "{bytes} bytes (cap {})",
                    self.limits.max_string_bytes
                )),
            });
        }
        Ok(())
    }

    fn step(
        &self,
        call: &'static str,
        step: Called<t::StagingStep>,
    ) -> Result<Called<StagingStep>, LifecycleError> {
        let name = self.described.name.clone();
        let value =
            match step.value {
                t::StagingStep::Continue(c) => {
                    validate_continuation(&c, &self.caps)
                        .map_err(|error| LifecycleError::Plan { name, call, error })?;
                    StagingStep::Continue(c)
                }
                t::StagingStep::Done(r) => {
                    let bytes = staging_result_bytes(&r);
                    if bytes > self.limits.max_output_bytes {
                        return Err(LifecycleError::Plan {
                            name,
                            call,
                            error: plan_err(None, format!("staging result is {bytes} bytes")),
                        });
                    }
                    StagingStep::Done(r)
                }
                t::StagingStep::Failed(e) => {
                    return Err(LifecycleError::Plugin {
                        name,
                        call,
                        error: plugin_error(&e),
                    });
                }
            };
        Ok(Called {
            value,
            logs: step.logs,
            logs_dropped: step.logs_dropped,
        })
    }

    /// Builder, first phase.
    pub fn stage(
        &self,
        request: &t::StagingRequest,
    ) -> Result<Called<StagingStep>, LifecycleError> {
        self.check_input("stage", staging_request_bytes(request))?;
        let step = self.call("stage", |i, s| {
            i.diego_lifecycle_plugin().call_stage(s, request)
        })?;
        self.step("stage", step)
    }

    /// Builder, next phase, after the host ran the previous plan and observed `seen`.
    pub fn resume_staging(
        &self,
        state: &[u8],
        seen: &t::Observation,
    ) -> Result<Called<StagingStep>, LifecycleError> {
        self.check_input("resume-staging", state.len() + observation_bytes(seen))?;
        let step = self.call("resume-staging", |i, s| {
            i.diego_lifecycle_plugin()
                .call_resume_staging(s, state, seen)
        })?;
        self.step("resume-staging", step)
    }

    /// Launcher.
    pub fn launch(
        &self,
        request: &t::LaunchRequest,
    ) -> Result<Called<t::LaunchPlan>, LifecycleError> {
        self.check_input("launch", launch_request_bytes(request))?;
        let out = self.call("launch", |i, s| {
            i.diego_lifecycle_plugin().call_launch(s, request)
        })?;
        let name = self.described.name.clone();
        match out.value {
            Ok(plan) => {
                validate_launch(&plan, &self.caps).map_err(|error| LifecycleError::Plan {
                    name,
                    call: "launch",
                    error,
                })?;
                Ok(Called {
                    value: plan,
                    logs: out.logs,
                    logs_dropped: out.logs_dropped,
                })
            }
            Err(e) => Err(LifecycleError::Plugin {
                name,
                call: "launch",
                error: plugin_error(&e),
            }),
        }
    }

    /// Healthcheck.
    pub fn healthcheck(
        &self,
        request: &t::CheckRequest,
    ) -> Result<Called<t::CheckPlan>, LifecycleError> {
        let bytes = request.http_endpoint.as_ref().map_or(0, String::len)
            + options_bytes(&request.options)
            + request.ports.len() * 2;
        self.check_input("healthcheck", bytes)?;
        let out = self.call("healthcheck", |i, s| {
            i.diego_lifecycle_plugin().call_healthcheck(s, request)
        })?;
        let name = self.described.name.clone();
        match out.value {
            Ok(plan) => {
                validate_check(&plan, &self.caps).map_err(|error| LifecycleError::Plan {
                    name,
                    call: "healthcheck",
                    error,
                })?;
                Ok(Called {
                    value: plan,
                    logs: out.logs,
                    logs_dropped: out.logs_dropped,
                })
            }
            Err(e) => Err(LifecycleError::Plugin {
                name,
                call: "healthcheck",
                error: plugin_error(&e),
            }),
        }
    }
}

fn plugin_error(e: &t::PluginError) -> String {
    let (kind, m) = match e {
        t::PluginError::Unsupported(m) => ("unsupported", m),
        t::PluginError::InvalidRequest(m) => ("invalid request", m),
        t::PluginError::Failed(m) => ("failed", m),
    };
    format!("{kind}: {}", truncate(m, 4096))
}

fn env_bytes(env: &[t::EnvVar]) -> usize {
    env.iter().map(|e| e.name.len() + e.value.len()).sum()
}

fn staging_request_bytes(r: &t::StagingRequest) -> usize {
    r.staging_guid.len()
        + r.stack.len()
        + r.app_bits_url.len()
        + r.droplet_upload_url.len()
        + r.build_artifacts_cache_download_url
            .as_ref()
            .map_or(0, String::len)
        + r.build_artifacts_cache_upload_url
            .as_ref()
            .map_or(0, String::len)
        + r.buildpacks
            .iter()
            .map(|b| b.name.len() + b.key.len() + b.url.len())
            .sum::<usize>()
        + r.docker_image.as_ref().map_or(0, String::len)
        + r.lifecycle_bundle_url.as_ref().map_or(0, String::len)
        + r.docker_credentials
            .as_ref()
            .map_or(0, |c| c.user.len() + c.password.len())
        + env_bytes(&r.env)
        + r.options
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

fn options_bytes(options: &[(String, String)]) -> usize {
    options.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn launch_request_bytes(r: &t::LaunchRequest) -> usize {
    r.process_guid.len()
        + r.process_type.len()
        + r.stack.as_ref().map_or(0, String::len)
        + r.lifecycle_bundle_url.as_ref().map_or(0, String::len)
        + r.start_command.len()
        + r.droplet_url.as_ref().map_or(0, String::len)
        + r.docker_image.as_ref().map_or(0, String::len)
        + r.docker_credentials
            .as_ref()
            .map_or(0, |c| c.user.len() + c.password.len())
        + r.execution_metadata.len()
        + env_bytes(&r.env)
        + options_bytes(&r.options)
}

fn observation_bytes(o: &t::Observation) -> usize {
    o.statuses
        .iter()
        .map(|s| {
            s.stdout.as_ref().map_or(0, Vec::len)
                + match &s.outcome {
                    t::NodeOutcome::Failed(m) => m.len(),
                    _ => 0,
                }
        })
        .sum::<usize>()
        + o.files
            .iter()
            .map(|f| f.path.len() + f.contents.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

fn staging_result_bytes(r: &t::StagingResult) -> usize {
    let m = &r.lifecycle_metadata;
    r.lifecycle_type.len()
        + r.execution_metadata.len()
        + m.buildpack_key.as_ref().map_or(0, String::len)
        + m.detected_buildpack.as_ref().map_or(0, String::len)
        + m.docker_image.as_ref().map_or(0, String::len)
        + m.buildpacks
            .iter()
            .map(|b| b.key.len() + b.name.len() + b.version.len())
            .sum::<usize>()
        + r.process_types
            .iter()
            .map(|p| p.name.len() + p.command.len())
            .sum::<usize>()
        + r.sidecars
            .iter()
            .map(|s| {
                s.name.len()
                    + s.command.len()
                    + s.process_types.iter().map(String::len).sum::<usize>()
            })
            .sum::<usize>()
}

/// Accumulates string sizes and checks each one.
struct Strings<'a> {
    caps: &'a PlanCaps,
    total: usize,
}

impl Strings<'_> {
    fn check(&mut self, node: Option<u32>, what: &str, s: &str) -> Result<(), PlanError> {
        if s.len() > self.caps.max_string_bytes {
            return Err(plan_err(
                node,
                format!(
                    "{what} is {} bytes (cap {})",
                    s.len(),
                    self.caps.max_string_bytes
                ),
            ));
        }
        self.total += s.len();
        if self.total > self.caps.max_total_bytes {
            return Err(plan_err(
                node,
                format!(
                    "plan strings exceed {} bytes in total",
                    self.caps.max_total_bytes
                ),
            ));
        }
        Ok(())
    }

    fn list(&self, node: Option<u32>, what: &str, len: usize) -> Result<(), PlanError> {
        if len > self.caps.max_list_len {
            return Err(plan_err(
                node,
                format!("{what} has {len} entries (cap {})", self.caps.max_list_len),
            ));
        }
        Ok(())
    }

    fn user(&mut self, node: Option<u32>, user: &str) -> Result<(), PlanError> {
        self.check(node, "user", user)?;
        if user.is_empty() {
            return Err(plan_err(node, "runs without a user"));
        }
        if self.caps.forbidden_users.iter().any(|u| u == user) {
            return Err(plan_err(node, format!("runs as forbidden user {user:?}")));
        }
        Ok(())
    }

    fn url(&mut self, node: Option<u32>, what: &str, url: &str) -> Result<(), PlanError> {
        self.check(node, what, url)?;
        let allowed = &self.caps.allowed_url_prefixes;
        if !allowed.is_empty() && !allowed.iter().any(|p| url.starts_with(p.as_str())) {
            return Err(plan_err(
                node,
                format!("{what} {url:?} is not an allowed URL"),
            ));
        }
        Ok(())
    }

    fn run(&mut self, node: Option<u32>, r: &t::RunSpec) -> Result<(), PlanError> {
        self.check(node, "path", &r.path)?;
        if r.path.is_empty() {
            return Err(plan_err(node, "run has an empty path"));
        }
        self.list(node, "args", r.args.len())?;
        for a in &r.args {
            self.check(node, "arg", a)?;
        }
        self.env(node, &r.env)?;
        if let Some(d) = &r.dir {
            self.check(node, "dir", d)?;
        }
        self.user(node, &r.user)?;
        if let Some(l) = &r.log_source {
            self.check(node, "log source", l)?;
        }
        if let Some(n) = r.capture_stdout
            && n > self.caps.max_capture_bytes
        {
            return Err(plan_err(
                node,
                format!(
                    "captures {n} bytes of stdout (cap {})",
                    self.caps.max_capture_bytes
                ),
            ));
        }
        Ok(())
    }

    fn env(&mut self, node: Option<u32>, env: &[t::EnvVar]) -> Result<(), PlanError> {
        self.list(node, "env", env.len())?;
        for e in env {
            self.check(node, "env name", &e.name)?;
            self.check(node, "env value", &e.value)?;
            if e.name.is_empty() || e.name.contains('=') {
                return Err(plan_err(node, format!("invalid env name {:?}", e.name)));
            }
        }
        Ok(())
    }

    fn action(&mut self, node: u32, a: &t::Action) -> Result<(), PlanError> {
        let n = Some(node);
        match a {
            t::Action::Run(r) => self.run(n, r),
            t::Action::Download(d) => {
                self.check(n, "artifact", &d.artifact)?;
                self.url(n, "download from", &d.from)?;
                self.check(n, "download to", &d.to)?;
                if let Some(k) = &d.cache_key {
                    self.check(n, "cache key", k)?;
                }
                if let Some(c) = &d.checksum {
                    self.check(n, "checksum", &c.value)?;
                }
                if let Some(l) = &d.log_source {
                    self.check(n, "log source", l)?;
                }
                self.user(n, &d.user)
            }
            t::Action::Upload(u) => {
                self.check(n, "artifact", &u.artifact)?;
                self.check(n, "upload from", &u.from)?;
                self.url(n, "upload to", &u.to)?;
                if let Some(l) = &u.log_source {
                    self.check(n, "log source", l)?;
                }
                self.user(n, &u.user)
            }
            t::Action::Timeout(x) => {
                if x.timeout_ms == 0 || x.timeout_ms > self.caps.max_timeout_ms {
                    return Err(plan_err(
                        n,
                        format!(
                            "timeout of {} ms outside 1..={} ms",
                            x.timeout_ms, self.caps.max_timeout_ms
                        ),
                    ));
                }
                Ok(())
            }
            t::Action::EmitProgress(p) => {
                self.check(n, "start message", &p.start_message)?;
                self.check(n, "success message", &p.success_message)?;
                self.check(n, "failure prefix", &p.failure_message_prefix)
            }
            t::Action::Try(_) => Ok(()),
            t::Action::Serial(c) | t::Action::Parallel(c) | t::Action::Codependent(c) => {
                self.list(n, "children", c.len())?;
                if c.is_empty() {
                    return Err(plan_err(n, "composite action has no children"));
                }
                Ok(())
            }
        }
    }
}

fn children(a: &t::Action) -> &[u32] {
    match a {
        t::Action::Timeout(x) => std::slice::from_ref(&x.action),
        t::Action::EmitProgress(p) => std::slice::from_ref(&p.action),
        t::Action::Try(c) => std::slice::from_ref(c),
        t::Action::Serial(c) | t::Action::Parallel(c) | t::Action::Codependent(c) => c,
        t::Action::Run(_) | t::Action::Download(_) | t::Action::Upload(_) => &[],
    }
}

/// Validates an action plan: a tree (every node reachable exactly once from the root, so no
/// cycles and no shared subtrees), indices in range, depth and node caps, string caps, no
/// forbidden user, timeouts capped, URLs allowed. The error names the offending node.
pub fn validate_plan(plan: &t::ActionPlan, caps: &PlanCaps) -> Result<(), PlanError> {
    validate_plan_with(plan, &mut Strings { caps, total: 0 })
}

fn validate_plan_with(plan: &t::ActionPlan, strings: &mut Strings<'_>) -> Result<(), PlanError> {
    let caps = strings.caps;
    let len = plan.nodes.len();
    if len == 0 {
        return Err(plan_err(None, "plan has no nodes"));
    }
    if len > caps.max_nodes {
        return Err(plan_err(
            None,
            format!("plan has {len} nodes (cap {})", caps.max_nodes),
        ));
    }
    if plan.root as usize >= len {
        return Err(plan_err(
            None,
            format!("root {} is out of range ({len} nodes)", plan.root),
        ));
    }
    let mut seen = vec![false; len];
    seen[plan.root as usize] = true;
    // Iterative DFS: (node, depth). Depth is bounded, but a guest controls the shape.
    let mut stack = vec![(plan.root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > caps.max_depth {
            return Err(plan_err(
                Some(node),
                format!("nested deeper than {} levels", caps.max_depth),
            ));
        }
        let action = &plan.nodes[node as usize];
        strings.action(node, action)?;
        for &child in children(action) {
            if child as usize >= len {
                return Err(plan_err(
                    Some(node),
                    format!("refers to node {child}, out of range ({len} nodes)"),
                ));
            }
            if seen[child as usize] {
                return Err(plan_err(
                    Some(node),
                    format!("refers to node {child} again (cycle or shared subtree)"),
                ));
            }
            seen[child as usize] = true;
            stack.push((child, depth + 1));
        }
    }
    if let Some(orphan) = seen.iter().position(|s| !s) {
        return Err(plan_err(
            Some(orphan as u32),
            format!("is not reachable from root {}", plan.root),
        ));
    }
    Ok(())
}

/// A continuation: its plan, its captures and its state size.
pub fn validate_continuation(c: &t::Continuation, caps: &PlanCaps) -> Result<(), PlanError> {
    let mut strings = Strings { caps, total: 0 };
    validate_plan_with(&c.plan, &mut strings)?;
    if c.captures.len() > caps.max_captures {
        return Err(plan_err(
            None,
            format!("{} captures (cap {})", c.captures.len(), caps.max_captures),
        ));
    }
    for cap in &c.captures {
        strings.check(None, "capture path", &cap.path)?;
        if cap.max_bytes > caps.max_capture_bytes {
            return Err(plan_err(
                None,
                format!(
                    "capture of {:?} asks {} bytes (cap {})",
                    cap.path, cap.max_bytes, caps.max_capture_bytes
                ),
            ));
        }
    }
    if c.state.len() > caps.max_state_bytes {
        return Err(plan_err(
            None,
            format!(
                "continuation state is {} bytes (cap {})",
                c.state.len(),
                caps.max_state_bytes
            ),
        ));
    }
    Ok(())
}

/// A launch plan: setup plan, main and sidecar processes, env, ports.
pub fn validate_launch(p: &t::LaunchPlan, caps: &PlanCaps) -> Result<(), PlanError> {
    let mut strings = Strings { caps, total: 0 };
    if let Some(setup) = &p.setup {
        validate_plan_with(setup, &mut strings)?;
    }
    strings
        .run(None, &p.main)
        .map_err(|e| plan_err(None, format!("main process: {}", e.reason)))?;
    strings.list(None, "sidecars", p.sidecars.len())?;
    for (i, s) in p.sidecars.iter().enumerate() {
        strings
            .run(None, s)
            .map_err(|e| plan_err(None, format!("sidecar {i}: {}", e.reason)))?;
    }
    strings.env(None, &p.env)?;
    strings.list(None, "ports", p.ports.len())?;
    if p.ports.contains(&0) {
        return Err(plan_err(None, "port 0 is not a port"));
    }
    Ok(())
}

/// A check plan: probes with sane ports, paths and intervals.
pub fn validate_check(p: &t::CheckPlan, caps: &PlanCaps) -> Result<(), PlanError> {
    let mut strings = Strings { caps, total: 0 };
    strings.list(None, "checks", p.checks.len())?;
    strings.list(None, "readiness checks", p.readiness_checks.len())?;
    for (i, probe) in p.checks.iter().chain(&p.readiness_checks).enumerate() {
        let bad = |m: String| plan_err(None, format!("probe {i}: {m}"));
        match probe {
            t::Probe::Tcp(x) => {
                if x.port == 0 || x.interval_ms == 0 || x.connect_timeout_ms == 0 {
                    return Err(bad(
                        "tcp probe needs a port, an interval and a timeout".into()
                    ));
                }
            }
            t::Probe::Http(x) => {
                if x.port == 0 || x.interval_ms == 0 || x.request_timeout_ms == 0 {
                    return Err(bad(
                        "http probe needs a port, an interval and a timeout".into()
                    ));
                }
                if !x.path.starts_with('/') {
                    return Err(bad(format!("http path {:?} must start with '/'", x.path)));
                }
                strings.check(None, "http path", &x.path)?;
            }
            t::Probe::ProcessAlive => {}
            t::Probe::Command(r) => strings.run(None, r).map_err(|e| bad(e.reason))?,
        }
    }
    if p.start_timeout_ms > caps.max_timeout_ms {
        return Err(plan_err(
            None,
            format!("start timeout {} ms over the cap", p.start_timeout_ms),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(user: &str) -> t::Action {
        t::Action::Run(t::RunSpec {
            path: "/bin/true".into(),
            args: vec![],
            env: vec![],
            dir: None,
            user: user.into(),
            resource_limits: t::ResourceLimits { nofile: None },
            log_source: None,
            suppress_log_output: false,
            capture_stdout: None,
        })
    }

    fn plan(nodes: Vec<t::Action>, root: u32) -> t::ActionPlan {
        t::ActionPlan { nodes, root }
    }

    #[test]
    fn accepts_a_tree() {
        let p = plan(
            vec![run("vcap"), run("vcap"), t::Action::Serial(vec![0, 1])],
            2,
        );
        assert_eq!(validate_plan(&p, &PlanCaps::default()), Ok(()));
    }

    #[test]
    fn names_the_bad_node() {
        let caps = PlanCaps::default();
        let out_of_range = plan(vec![run("vcap"), t::Action::Serial(vec![0, 7])], 1);
        assert_eq!(
            validate_plan(&out_of_range, &caps).map_err(|e| e.node),
            Err(Some(1))
        );

        let cycle = plan(vec![t::Action::Try(1), t::Action::Try(0)], 0);
        let e = validate_plan(&cycle, &caps).unwrap_err();
        assert_eq!(e.node, Some(1));
        assert!(e.to_string().contains("cycle"), "{e}");

        let shared = plan(vec![run("vcap"), t::Action::Parallel(vec![0, 0])], 1);
        assert_eq!(
            validate_plan(&shared, &caps).map_err(|e| e.node),
            Err(Some(1))
        );

        let root = plan(
            vec![run("vcap"), run("root"), t::Action::Serial(vec![0, 1])],
            2,
        );
        let e = validate_plan(&root, &caps).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plan rejected: node 1: runs as forbidden user \"root\""
        );

        let orphan = plan(vec![run("vcap"), run("vcap")], 0);
        assert_eq!(
            validate_plan(&orphan, &caps).map_err(|e| e.node),
            Err(Some(1))
        );

        let deep: Vec<t::Action> = (0..40)
            .map(|i| {
                if i == 39 {
                    run("vcap")
                } else {
                    t::Action::Try(i + 1)
                }
            })
            .collect();
        let e = validate_plan(&plan(deep, 0), &caps).unwrap_err();
        assert!(e.reason.contains("deeper"), "{e}");

        let mut long = run("vcap");
        if let t::Action::Run(r) = &mut long {
            r.args.push("x".repeat(caps.max_string_bytes + 1));
        }
        assert_eq!(
            validate_plan(&plan(vec![long], 0), &caps).map_err(|e| e.node),
            Err(Some(0))
        );
    }

    #[test]
    fn checks_urls_against_the_allow_list() {
        let caps = PlanCaps {
            allowed_url_prefixes: vec!["https://blobstore.internal/".into()],
            ..PlanCaps::default()
        };
        let download = |from: &str| {
            plan(
                vec![t::Action::Download(t::DownloadSpec {
                    artifact: "app".into(),
                    from: from.into(),
                    to: "/app".into(),
                    cache_key: None,
                    checksum: None,
                    user: "vcap".into(),
                    log_source: None,
                })],
                0,
            )
        };
        assert_eq!(
            validate_plan(&download("https://blobstore.internal/x.tgz"), &caps),
            Ok(())
        );
        let e = validate_plan(&download("https://evil.example/x.tgz"), &caps).unwrap_err();
        assert_eq!(e.node, Some(0));
    }
}
