//! The API's records (what the redb file keeps) and the JSON views its routes answer with.
//!
//! One set of types serves the server and [`crate::AppsClient`], so the two cannot drift.

use std::collections::BTreeMap;

use diego_model::StagingResult;
use serde::{Deserialize, Serialize};

/// Memory an app gets unless told otherwise (Cloud Foundry's default is 1 GiB; ours is small).
pub const DEFAULT_MEMORY_MB: u32 = 256;
pub const DEFAULT_DISK_MB: u32 = 1024;
pub const DEFAULT_STACK: &str = "cflinuxfs4";
/// How many events an app keeps (older ones are dropped).
pub const MAX_EVENTS_PER_APP: usize = 100;

/// Whether the app should run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredState {
    Started,
    #[default]
    Stopped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    #[default]
    Port,
    Http,
    Process,
    None,
}

/// How the app is staged and launched: a built-in lifecycle (Diego's `lifecycle_type`
/// buildpack or docker) or one an operator added with `diego lifecycles add`, by its name.
/// Stored and sent as the name, so records written before added lifecycles existed read the
/// same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum LifecycleKind {
    #[default]
    Buildpack,
    Docker,
    /// An added lifecycle, by the name it was added under.
    Added(String),
}

impl LifecycleKind {
    pub fn as_str(&self) -> &str {
        match self {
            LifecycleKind::Buildpack => "buildpack",
            LifecycleKind::Docker => "docker",
            LifecycleKind::Added(name) => name,
        }
    }

    pub fn is_docker(&self) -> bool {
        *self == LifecycleKind::Docker
    }

    pub fn is_builtin(&self) -> bool {
        !matches!(self, LifecycleKind::Added(_))
    }
}

impl From<String> for LifecycleKind {
    fn from(name: String) -> Self {
        match name.as_str() {
            "buildpack" => LifecycleKind::Buildpack,
            "docker" => LifecycleKind::Docker,
            _ => LifecycleKind::Added(name),
        }
    }
}

impl From<LifecycleKind> for String {
    fn from(kind: LifecycleKind) -> Self {
        kind.as_str().to_owned()
    }
}

impl std::fmt::Display for LifecycleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user sets on an app (the body of `PUT /v1/apps/{name}` fills these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub instances: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub env: BTreeMap<String, String>,
    pub command: Option<String>,
    /// Buildpack names in order; empty: detect among all, in position order.
    pub buildpacks: Vec<String>,
    pub docker_image: Option<String>,
    pub health_check_type: HealthCheckType,
    pub health_check_http_endpoint: Option<String>,
    /// Route hostnames (`<name>.<domain>` unless set).
    pub routes: Vec<String>,
    pub lifecycle: LifecycleKind,
    pub stack: String,
    /// Users may SSH into the app's instances (`diego ssh`; on unless turned off, as in
    /// Cloud Foundry).
    #[serde(default = "ssh_default")]
    pub enable_ssh: bool,
}

fn ssh_default() -> bool {
    true
}

/// `PUT /v1/apps/{name}`: every field optional; what is missing keeps its value (or default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u32>,
    /// Replaces the whole environment (use `PUT /v1/apps/{name}/env` to change single keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// An empty string clears the command (the staged one is used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buildpacks: Option<Vec<String>>,
    /// An empty string clears the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_type: Option<HealthCheckType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_http_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Defaults to `docker` when a docker image is set, else `buildpack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_ssh: Option<bool>,
}

/// The app's uploaded bits, as stored in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitsRecord {
    pub key: String,
    pub sha256: String,
}

/// What a droplet was staged from: when any of it changes, `start` stages again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StagingInputs {
    pub lifecycle: LifecycleKind,
    /// The lifecycle component's sha256.
    pub lifecycle_sha256: String,
    /// The version the component described itself with (empty in records from before).
    pub lifecycle_version: String,
    pub stack: String,
    pub bits_sha256: Option<String>,
    pub docker_image: Option<String>,
    /// `name:sha256` of each buildpack offered, in order.
    pub buildpacks: Vec<String>,
    /// Whether the buildpacks were named (skip detect) or offered for detection.
    pub buildpacks_named: bool,
}

/// A staged droplet. Docker droplets have no blob (`key` empty): the image is the droplet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropletRecord {
    /// The droplet's number (the `<n>` of `droplets/<guid>/<n>.tgz`).
    pub number: u64,
    pub key: String,
    pub sha256: String,
    pub staging_result: StagingResult,
    pub staged_from: StagingInputs,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StagingState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl StagingState {
    pub fn is_done(self) -> bool {
        matches!(self, StagingState::Succeeded | StagingState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingRecord {
    pub task_guid: String,
    pub state: StagingState,
    pub error: Option<String>,
    /// The droplet number this staging produces.
    pub droplet_number: u64,
    pub inputs: StagingInputs,
    /// When staging was asked for (nanoseconds since the Unix epoch).
    pub started_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentState {
    Deploying,
    Deployed,
    Failed,
}

/// A deployment from one process guid (none on a fresh start) to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub state: DeploymentState,
    pub from: Option<String>,
    pub to: String,
    pub error: Option<String>,
    /// What `to` runs (records written before this field existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// What one version of an app runs: the droplet and the settings its DesiredLRP is built
/// from. Settings changed later take effect at the next start, restart or push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub droplet: DropletRecord,
    pub settings: Settings,
}

impl Launch {
    /// What `app` would launch now (`None` without a droplet).
    pub fn of(app: &App) -> Option<Launch> {
        Some(Launch {
            droplet: app.droplet.clone()?,
            settings: app.settings.clone(),
        })
    }

    /// Whether a version launched this way is what `app` asks for now: the same droplet and
    /// the same settings that need new containers. Instances and routes are applied to a
    /// running version in place, so they do not count.
    pub fn is_current_for(&self, app: &App) -> bool {
        let (a, b) = (&self.settings, &app.settings);
        app.droplet
            .as_ref()
            .is_some_and(|d| d.number == self.droplet.number && d.key == self.droplet.key)
            && a.memory_mb == b.memory_mb
            && a.disk_mb == b.disk_mb
            && a.env == b.env
            && a.command == b.command
            && a.health_check_type == b.health_check_type
            && a.health_check_http_endpoint == b.health_check_http_endpoint
    }

    /// `app` as this version runs it: its droplet and settings, with the app's live instances
    /// and routes.
    pub fn applied_to(&self, app: &App) -> App {
        let mut launched = app.clone();
        launched.droplet = Some(self.droplet.clone());
        launched.settings = Settings {
            instances: app.settings.instances,
            routes: app.settings.routes.clone(),
            enable_ssh: app.settings.enable_ssh,
            ..self.settings.clone()
        };
        launched
    }
}

/// An app as the redb file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub settings: Settings,
    pub state: DesiredState,
    pub bits: Option<BitsRecord>,
    pub droplet: Option<DropletRecord>,
    /// Deployment counter: process guids are `<guid>-<version>`.
    pub version: u64,
    /// The DesiredLRP that serves the app (none before its first deployment or once stopped).
    pub process_guid: Option<String>,
    /// What `process_guid` runs (records written before this field existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_launch: Option<Launch>,
    pub staging: Option<StagingRecord>,
    pub deployment: Option<DeploymentRecord>,
    /// Droplets staged so far (numbers the next one).
    pub droplet_counter: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl App {
    /// Every process guid this app claims now (its current one and a deployment's target).
    pub fn claimed_process_guids(&self) -> Vec<String> {
        let mut guids: Vec<String> = self.process_guid.iter().cloned().collect();
        if let Some(d) = &self.deployment
            && d.state == DeploymentState::Deploying
        {
            guids.push(d.to.clone());
            guids.extend(d.from.iter().cloned());
        }
        guids.sort();
        guids.dedup();
        guids
    }
}

/// A buildpack as the redb file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buildpack {
    pub name: String,
    /// Detection order (1 first).
    pub position: u32,
    pub key: String,
    pub sha256: String,
}

/// One entry of an app's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEvent {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// `crash`, `staging_succeeded`, `staging_failed`, `start`, `stop`, `restart`, `scale`,
    /// `update`, `deploy`, `deploy_failed`, `create`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_description: Option<String>,
}

// ---- views (response bodies) ----

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub domain: String,
    pub bbs_url: String,
    pub api_url: String,
    pub version: String,
}

/// An entry of `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub guid: String,
    pub state: DesiredState,
    pub instances: u32,
    /// Instances RUNNING now (of the app's current process).
    pub running: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub urls: Vec<String>,
    pub lifecycle: LifecycleKind,
}

/// One instance, as the BBS knows it (and, when running, what it uses, as its cell says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub index: i32,
    /// Diego's state: UNCLAIMED, CLAIMED, RUNNING, CRASHED.
    pub state: String,
    /// Nanoseconds since the Unix epoch.
    pub since: i64,
    pub cell_id: String,
    pub address: String,
    /// The host port mapped to 8080 (0 when not running).
    pub host_port: u32,
    pub crash_count: i32,
    pub crash_reason: String,
    pub placement_error: String,
    /// Seconds since it became RUNNING (0 otherwise).
    pub uptime_s: u64,
    /// The process guid (version) it belongs to.
    pub process_guid: String,
    pub instance_guid: String,
    /// CPU, memory and disk in use of its limits, from its cell (`GET /v1/apps/{name}` only;
    /// absent when not running or the cell did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<diego_rep_client::InstanceMetrics>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropletView {
    pub number: u64,
    pub key: String,
    pub sha256: String,
    pub lifecycle_type: String,
    pub detected_buildpack: String,
    pub process_types: BTreeMap<String, String>,
    pub docker_image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingView {
    pub task_guid: String,
    pub state: StagingState,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub state: DeploymentState,
    pub from: Option<String>,
    pub to: String,
    pub error: Option<String>,
}

/// The lifecycle an app uses: its name (`type`: buildpack, docker or an added one), the
/// component's own name, and the version and digest its droplet was staged with (before the
/// first staging: the version staging would use now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleView {
    #[serde(rename = "type")]
    pub kind: LifecycleKind,
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// One version of a lifecycle, as `GET /v1/lifecycles` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleVersionView {
    pub version: String,
    pub sha256: String,
    /// The name the component describes itself with.
    pub component_name: String,
    /// Diego's `lifecycle_type` it implements.
    pub lifecycle_type: String,
    /// The versioned interface it exports (`diego:lifecycle/plugin@0.1.0`).
    pub export: String,
    pub size_bytes: u64,
    /// When it was added (ns since the epoch; 0 for a built-in).
    pub added_at: i64,
}

/// An entry of `GET /v1/lifecycles` (and the answer of `PUT` and `DELETE
/// /v1/lifecycles/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEntry {
    pub name: String,
    pub builtin: bool,
    /// Oldest first; the last is the one staging uses.
    pub versions: Vec<LifecycleVersionView>,
    /// The apps set to use it.
    pub apps: Vec<String>,
    /// What the trial calls of an added component noticed without refusing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /v1/apps/{name}` (and the answer of every route that changes an app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub guid: String,
    pub name: String,
    pub state: DesiredState,
    pub settings: Settings,
    pub urls: Vec<String>,
    pub lifecycle: LifecycleView,
    pub bits: Option<BitsRecord>,
    pub droplet: Option<DropletView>,
    pub version: u64,
    pub process_guid: Option<String>,
    pub staging: Option<StagingView>,
    pub deployment: Option<DeploymentView>,
    /// Every instance of every version the app runs now, from the BBS.
    pub instances: Vec<InstanceView>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /v1/apps/{name}/scale`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u32>,
}

/// `POST /v1/apps/{name}/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskRequest {
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A task run on an app's droplet (`cf run-task`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub guid: String,
    pub name: String,
    pub command: String,
    /// Diego's task state: Pending, Running, Completed, Resolving.
    pub state: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
    pub created_at: i64,
}

/// An entry of `GET /v1/buildpacks` (and the answer of `PUT /v1/buildpacks/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackView {
    pub name: String,
    pub position: u32,
    pub key: String,
    pub sha256: String,
    pub url: String,
}

/// Every error body: `{"error": "...", "code": "snake_case"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}
