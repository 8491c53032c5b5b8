//! The lifecycles this API stages and launches with: the built-in buildpack and docker
//! components, embedded in the binary, and the ones operators add (`diego lifecycles add`).
//!
//! Every component lives in the blob store as `lifecycles/<sha256>.wasm` (cells download it
//! for staging, by digest); added ones are recorded in the BBS, so every API and a restarted
//! platform find them. The launcher and healthcheck run here, as the CC-bridge runs Diego's
//! recipe builders, with the component a droplet was staged with: upgrading a lifecycle
//! changes what the next staging uses, never how an existing droplet starts.
//!
//! An added component is checked before anything is stored: the host's load checks (size,
//! world and WIT version, imports), then trial calls with synthetic requests — staging (every
//! phase, as if each plan succeeded), launch and healthcheck — whose plans the host validates
//! as it validates real ones. A fault (trap, deadline, memory) or an invalid plan refuses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use diego_host::lifecycle::types as t;
use diego_host::lifecycle::{LifecycleError, LifecyclePlugin, PlanCaps, StagingStep};
use diego_host::{Host, HostConfig};
use diego_model::{ErrorType, LifecycleRecord, LifecycleVersion};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::blobs::Blobs;
use crate::error::{ApiError, ApiResult};
use crate::model::{App, LifecycleEntry, LifecycleKind, LifecycleVersionView};

static BUILDPACK_WASM: &[u8] = include_bytes!(env!("DIEGO_LIFECYCLE_BUILDPACK_WASM"));
static DOCKER_WASM: &[u8] = include_bytes!(env!("DIEGO_LIFECYCLE_DOCKER_WASM"));

/// The largest component `PUT /v1/lifecycles/{name}` takes (the host's own cap).
pub const MAX_COMPONENT_BYTES: usize = 16 << 20;

/// How many staging phases a trial follows before it accepts a component that keeps asking
/// for more (real stagings are bounded by their timeout).
const TRIAL_PHASES: usize = 8;

/// The blob-store key of a lifecycle component.
pub fn component_key(sha256: &str) -> String {
    format!("lifecycles/{sha256}.wasm")
}

/// One embedded component: its bytes, digest, and whether it is in the blob store yet.
#[derive(Debug)]
struct Builtin {
    bytes: &'static [u8],
    sha256: String,
    published: OnceCell<()>,
}

impl Builtin {
    fn new(bytes: &'static [u8]) -> Self {
        Builtin {
            bytes,
            sha256: format!("{:x}", Sha256::digest(bytes)),
            published: OnceCell::new(),
        }
    }
}

/// A lifecycle version chosen for a staging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub sha256: String,
    pub version: String,
    /// The blob-store key of its component.
    pub key: String,
}

/// What the checks of an added component found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub version: LifecycleVersion,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Lifecycles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache_dir: PathBuf,
    host: OnceCell<Host>,
    buildpack: Builtin,
    docker: Builtin,
    /// Loaded components by sha256 (a component is compiled once per process).
    loaded: Mutex<HashMap<String, LifecyclePlugin>>,
}

impl Lifecycles {
    /// `cache_dir` keeps the precompiled components (owned by this process).
    pub fn new(cache_dir: PathBuf) -> Self {
        Lifecycles {
            inner: Arc::new(Inner {
                cache_dir,
                host: OnceCell::new(),
                buildpack: Builtin::new(BUILDPACK_WASM),
                docker: Builtin::new(DOCKER_WASM),
                loaded: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn builtin(&self, kind: &LifecycleKind) -> Option<&Builtin> {
        match kind {
            LifecycleKind::Buildpack => Some(&self.inner.buildpack),
            LifecycleKind::Docker => Some(&self.inner.docker),
            LifecycleKind::Added(_) => None,
        }
    }

    /// Uploads a built-in component to the blob store once (again after a failure); added
    /// ones are uploaded when they are added.
    pub async fn publish(&self, kind: &LifecycleKind, blobs: &Blobs) -> ApiResult<()> {
        let Some(builtin) = self.builtin(kind) else {
            return Ok(());
        };
        let key = component_key(&builtin.sha256);
        builtin
            .published
            .get_or_try_init(|| async {
                if blobs.sha256(&key).await? != Some(builtin.sha256.clone()) {
                    blobs
                        .put_bytes(&key, Bytes::from_static(builtin.bytes))
                        .await?;
                }
                tracing::info!(lifecycle = kind.as_str(), %key, "lifecycle published");
                Ok::<(), ApiError>(())
            })
            .await?;
        Ok(())
    }

    async fn host(&self) -> ApiResult<Host> {
        let inner = self.inner.clone();
        Ok(inner
            .host
            .get_or_try_init(|| async {
                let mut config = HostConfig::new(inner.cache_dir.clone());
                // Launch, healthcheck and trial calls run here, a few at a time.
                config.max_instances = 8;
                tokio::task::spawn_blocking(move || Host::new(config))
                    .await
                    .map_err(|e| ApiError::internal(format!("wasm host start failed: {e}")))?
                    .map_err(|e| ApiError::internal(format!("wasm host: {e}")))
            })
            .await?
            .clone())
    }

    /// Loads `bytes` (on a blocking thread), with the plan caps of `kind`.
    async fn load(
        &self,
        kind: &LifecycleKind,
        bytes: Bytes,
    ) -> ApiResult<Result<LifecyclePlugin, String>> {
        let host = self.host().await?;
        let docker = kind.is_docker();
        tokio::task::spawn_blocking(move || {
            host.load_lifecycle(&bytes)
                .map(|plugin| {
                    if docker {
                        // Docker images run as their configured user, root by default (as in
                        // Diego); an unprivileged container maps it to an unprivileged host id.
                        plugin.with_plan_caps(PlanCaps {
                            forbidden_users: Vec::new(),
                            ..PlanCaps::default()
                        })
                    } else {
                        plugin
                    }
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ApiError::internal(format!("lifecycle load failed: {e}")))
    }

    /// The component `sha256` of lifecycle `kind`, loaded: a built-in's embedded one, or the
    /// blob store's. A built-in version this binary no longer embeds and the blob store no
    /// longer has falls back to the embedded one (a droplet outlives a platform upgrade).
    pub async fn plugin(
        &self,
        kind: &LifecycleKind,
        sha256: &str,
        blobs: &Blobs,
    ) -> ApiResult<LifecyclePlugin> {
        let builtin = self.builtin(kind);
        let sha256 = match builtin {
            Some(b) if sha256.is_empty() => b.sha256.as_str(),
            _ => sha256,
        };
        if let Some(plugin) = self.cached(sha256) {
            return Ok(plugin);
        }
        let (sha256, bytes) = match builtin {
            Some(b) if b.sha256 == sha256 => (sha256, Bytes::from_static(b.bytes)),
            _ => match blobs.get_bytes(&component_key(sha256)).await? {
                Some(bytes) if format!("{:x}", Sha256::digest(&bytes)) == sha256 => (sha256, bytes),
                Some(_) => {
                    return Err(ApiError::internal(format!(
                        "the blob store's copy of lifecycle {kind} {sha256} is corrupt"
                    )));
                }
                None => match builtin {
                    Some(b) => {
                        tracing::info!(lifecycle = %kind, %sha256, "that built-in version is gone; using the embedded one");
                        if let Some(plugin) = self.cached(&b.sha256) {
                            return Ok(plugin);
                        }
                        (b.sha256.as_str(), Bytes::from_static(b.bytes))
                    }
                    None => {
                        return Err(ApiError::conflict(
                            "lifecycle_missing",
                            format!(
                                "the component {sha256} of lifecycle {kind} is not in the blob store: add the lifecycle again or restage the app"
                            ),
                        ));
                    }
                },
            },
        };
        let plugin = self.load(kind, bytes).await?.map_err(|e| {
            ApiError::internal(format!("cannot load the {kind} lifecycle {sha256}: {e}"))
        })?;
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        Ok(loaded.entry(sha256.to_owned()).or_insert(plugin).clone())
    }

    fn cached(&self, sha256: &str) -> Option<LifecyclePlugin> {
        let loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.get(sha256).cloned()
    }

    /// The version staging `kind` uses now: a built-in's embedded component, or an added
    /// lifecycle's current version from the BBS (an unknown name is a 422).
    pub async fn resolve(
        &self,
        kind: &LifecycleKind,
        bbs: &diego_bbs_client::BbsClient,
        blobs: &Blobs,
    ) -> ApiResult<Resolved> {
        if let Some(b) = self.builtin(kind) {
            let plugin = self.plugin(kind, &b.sha256, blobs).await?;
            return Ok(Resolved {
                sha256: b.sha256.clone(),
                version: plugin.describe().version.clone(),
                key: component_key(&b.sha256),
            });
        }
        let record = added(bbs, kind.as_str()).await?;
        let current = record.current().ok_or_else(|| {
            ApiError::unprocessable(
                "unknown_lifecycle",
                format!("lifecycle {kind} has no version"),
            )
        })?;
        Ok(Resolved {
            sha256: current.sha256.clone(),
            version: current.version.clone(),
            key: component_key(&current.sha256),
        })
    }

    /// The built-in lifecycles as `GET /v1/lifecycles` lists them.
    pub async fn builtin_entries(&self, blobs: &Blobs) -> ApiResult<Vec<LifecycleEntry>> {
        let mut entries = Vec::new();
        for kind in [LifecycleKind::Buildpack, LifecycleKind::Docker] {
            let b = self.builtin(&kind).expect("a built-in");
            let plugin = self.plugin(&kind, &b.sha256, blobs).await?;
            entries.push(LifecycleEntry {
                name: kind.as_str().to_owned(),
                builtin: true,
                versions: vec![LifecycleVersionView {
                    version: plugin.describe().version.clone(),
                    sha256: b.sha256.clone(),
                    component_name: plugin.describe().name.clone(),
                    lifecycle_type: plugin.describe().lifecycle_type.clone(),
                    export: plugin.info().export.clone(),
                    size_bytes: b.bytes.len() as u64,
                    added_at: 0,
                }],
                apps: Vec::new(),
                warnings: Vec::new(),
            });
        }
        Ok(entries)
    }

    /// Checks a component an operator adds as lifecycle `name`: loads it and makes trial
    /// calls. A component that cannot serve apps is a 422 saying why. The version's `url` is
    /// left for the caller, who stores the component.
    pub async fn check(&self, name: &str, bytes: Bytes) -> ApiResult<Checked> {
        let kind = LifecycleKind::Added(name.to_owned());
        let refused = |why: String| {
            ApiError::unprocessable(
                "invalid_lifecycle",
                format!("lifecycle {name:?} refused: {why}"),
            )
        };
        let plugin = self.load(&kind, bytes).await?.map_err(refused)?;
        let trial = tokio::task::spawn_blocking({
            let plugin = plugin.clone();
            move || trial(&plugin)
        })
        .await
        .map_err(|e| ApiError::internal(format!("lifecycle trial failed: {e}")))?;
        let warnings = trial.map_err(refused)?;
        let described = plugin.describe();
        // the digest and size as the host loaded them
        let info = plugin.info();
        // Loaded already: keep it for launches.
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.sha256.clone(), plugin.clone());
        Ok(Checked {
            version: LifecycleVersion {
                version: described.version.clone(),
                sha256: info.sha256.clone(),
                url: String::new(),
                component_name: described.name.clone(),
                lifecycle_type: described.lifecycle_type.clone(),
                export: info.export.clone(),
                size_bytes: info.size,
                added_at: 0,
            },
            warnings,
        })
    }
}

/// The added lifecycle `name` from the BBS (a 422 when there is none).
pub async fn added(bbs: &diego_bbs_client::BbsClient, name: &str) -> ApiResult<LifecycleRecord> {
    match bbs.lifecycle(name).await {
        Ok(record) => Ok(record),
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => Err(ApiError::unprocessable(
            "unknown_lifecycle",
            format!(
                "no lifecycle named {name:?}: `diego lifecycles list` shows them, `diego lifecycles add` adds one"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A lifecycle version as `GET /v1/lifecycles` shows it.
pub fn version_view(v: &LifecycleVersion) -> LifecycleVersionView {
    LifecycleVersionView {
        version: v.version.clone(),
        sha256: v.sha256.clone(),
        component_name: v.component_name.clone(),
        lifecycle_type: v.lifecycle_type.clone(),
        export: v.export.clone(),
        size_bytes: v.size_bytes,
        added_at: v.added_at,
    }
}

/// Trial calls with synthetic requests: what any app would make the component do. Answers
/// warnings (the guest's own refusals, which real requests may not meet) or why it is refused
/// (faults and invalid plans, which no request excuses).
fn trial(plugin: &LifecyclePlugin) -> Result<Vec<String>, String> {
    let d = plugin.describe();
    let needed =
        t::LifecycleKinds::BUILDER | t::LifecycleKinds::LAUNCHER | t::LifecycleKinds::HEALTHCHECK;
    if !d.kinds.contains(needed) {
        return Err(format!(
            "an app lifecycle builds, launches and health-checks, but {} {} says it implements only {:?}",
            d.name, d.version, d.kinds
        ));
    }
    if d.version.trim().is_empty() {
        return Err("describe() gives no version".to_owned());
    }
    let mut warnings = Vec::new();
    let mut noted = |call: &str, e: LifecycleError| match e {
        LifecycleError::Plugin { .. } => {
            warnings.push(format!("trial {call}: {e}"));
            Ok(())
        }
        LifecycleError::Fault { .. } | LifecycleError::Plan { .. } => {
            Err(format!("trial {call}: {e}"))
        }
    };
    match plugin.stage(&trial_staging_request()) {
        Ok(called) => {
            let mut step = called.value;
            for _ in 0..TRIAL_PHASES {
                let StagingStep::Continue(c) = step else {
                    break;
                };
                let seen = succeeded(&c);
                match plugin.resume_staging(&c.state, &seen) {
                    Ok(next) => step = next.value,
                    Err(e) => {
                        noted("resume-staging", e)?;
                        break;
                    }
                }
            }
        }
        Err(e) => noted("stage", e)?,
    }
    if let Err(e) = plugin.launch(&trial_launch_request()) {
        noted("launch", e)?;
    }
    if let Err(e) = plugin.healthcheck(&trial_check_request()) {
        noted("healthcheck", e)?;
    }
    Ok(warnings)
}

/// What the host would observe if every node of `c`'s plan exited 0 and no file was there.
fn succeeded(c: &t::Continuation) -> t::Observation {
    let statuses = c
        .plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            matches!(
                a,
                t::Action::Run(_) | t::Action::Download(_) | t::Action::Upload(_)
            )
        })
        .map(|(n, a)| t::NodeStatus {
            node: n as u32,
            outcome: t::NodeOutcome::Exited(0),
            stdout: match a {
                t::Action::Run(r) if r.capture_stdout.is_some() => Some(b"ok\n".to_vec()),
                _ => None,
            },
        })
        .collect();
    t::Observation {
        statuses,
        files: c
            .captures
            .iter()
            .map(|cap| t::CapturedFile {
                path: cap.path.clone(),
                contents: None,
                truncated: false,
            })
            .collect(),
    }
}

const TRIAL_URL: &str = "http://trial.invalid";

fn trial_staging_request() -> t::StagingRequest {
    t::StagingRequest {
        staging_guid: "trial".to_owned(),
        stack: "cflinuxfs4".to_owned(),
        lifecycle_bundle_url: None,
        app_bits_url: format!("{TRIAL_URL}/bits.zip"),
        droplet_upload_url: format!("{TRIAL_URL}/droplet.tgz"),
        build_artifacts_cache_download_url: Some(format!("{TRIAL_URL}/cache.tar")),
        build_artifacts_cache_upload_url: Some(format!("{TRIAL_URL}/cache.tar")),
        buildpacks: Vec::new(),
        docker_image: None,
        docker_credentials: None,
        env: Vec::new(),
        memory_mb: 1024,
        disk_mb: 4096,
        timeout_ms: 15 * 60 * 1000,
        options: Vec::new(),
    }
}

fn trial_launch_request() -> t::LaunchRequest {
    t::LaunchRequest {
        process_guid: "trial-1".to_owned(),
        process_type: "web".to_owned(),
        stack: Some("cflinuxfs4".to_owned()),
        lifecycle_bundle_url: None,
        start_command: "./start".to_owned(),
        droplet_url: Some(format!("{TRIAL_URL}/droplet.tgz")),
        droplet_checksum: Some(t::Checksum {
            algorithm: t::ChecksumAlgorithm::Sha256,
            value: "0".repeat(64),
        }),
        docker_image: None,
        docker_credentials: None,
        execution_metadata: String::new(),
        env: Vec::new(),
        ports: vec![8080],
        memory_mb: 256,
        disk_mb: 1024,
        options: Vec::new(),
    }
}

fn trial_check_request() -> t::CheckRequest {
    t::CheckRequest {
        health_check_type: t::HealthCheckType::Port,
        ports: vec![8080],
        http_endpoint: None,
        invocation_timeout_ms: None,
        interval_ms: None,
        start_timeout_ms: Some(60_000),
        readiness: None,
        options: Vec::new(),
    }
}

/// Calls the launcher and the healthcheck on a blocking thread (each call is capped at ~1 s).
pub async fn launch_and_check(
    plugin: LifecyclePlugin,
    launch: t::LaunchRequest,
    check: t::CheckRequest,
) -> ApiResult<(t::LaunchPlan, t::CheckPlan)> {
    tokio::task::spawn_blocking(move || {
        let plan = plugin
            .launch(&launch)
            .map_err(|e| ApiError::unprocessable("launch_failed", e.to_string()))?
            .value;
        let checks = plugin
            .healthcheck(&check)
            .map_err(|e| ApiError::unprocessable("healthcheck_failed", e.to_string()))?
            .value;
        Ok((plan, checks))
    })
    .await
    .map_err(|e| ApiError::internal(format!("lifecycle call failed: {e}")))?
}

// ---- `GET/PUT/DELETE /v1/lifecycles[/{name}]` ----

/// The apps set to use each lifecycle, by lifecycle name.
fn users(apps: &[App]) -> HashMap<String, Vec<String>> {
    let mut users: HashMap<String, Vec<String>> = HashMap::new();
    for app in apps {
        users
            .entry(app.settings.lifecycle.as_str().to_owned())
            .or_default()
            .push(app.name.clone());
    }
    users
}

fn entry(record: &LifecycleRecord, apps: Vec<String>) -> LifecycleEntry {
    LifecycleEntry {
        name: record.name.clone(),
        builtin: false,
        versions: record.versions.iter().map(version_view).collect(),
        apps,
        warnings: Vec::new(),
    }
}

/// `GET /v1/lifecycles`: the built-in ones, then the added ones by name.
pub async fn list(state: &crate::state::State) -> ApiResult<Vec<LifecycleEntry>> {
    let mut users = users(&state.db.apps().await?);
    let mut entries = state.lifecycles.builtin_entries(&state.blobs).await?;
    for e in &mut entries {
        e.apps = users.remove(&e.name).unwrap_or_default();
    }
    for record in state.bbs.lifecycles().await? {
        let apps = users.remove(&record.name).unwrap_or_default();
        entries.push(entry(&record, apps));
    }
    Ok(entries)
}

/// `GET /v1/lifecycles/{name}`.
pub async fn get(state: &crate::state::State, name: &str) -> ApiResult<LifecycleEntry> {
    let all = list(state).await?;
    all.into_iter().find(|e| e.name == name).ok_or_else(|| {
        ApiError::not_found(
            "lifecycle_not_found",
            format!("no lifecycle named {name:?}: `diego lifecycles list` shows them"),
        )
    })
}

fn check_name(name: &str) -> ApiResult<()> {
    let mut p = diego_model::validate::Problems::new();
    diego_model::lifecycle::validate_lifecycle_name(name, &mut p);
    p.into_request_result()
        .map_err(|e| ApiError::unprocessable("invalid_lifecycle_name", e.message))
}

/// `PUT /v1/lifecycles/{name}` with a component: checks it, stores it in the blob store and
/// records it in the BBS as the lifecycle's current version. Nothing is stored for a refused
/// component.
pub async fn add(
    state: &crate::state::State,
    name: &str,
    bytes: Bytes,
) -> ApiResult<LifecycleEntry> {
    check_name(name)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_component",
            "the body is empty: send the lifecycle's .wasm component",
        ));
    }
    let mut checked = state.lifecycles.check(name, bytes.clone()).await?;
    let sha256 = checked.version.sha256.clone();
    let key = component_key(&sha256);
    checked.version.url = state.blobs.url(&key);
    if state.blobs.sha256(&key).await?.as_deref() != Some(sha256.as_str()) {
        state.blobs.put_bytes(&key, bytes).await?;
    }
    let record = match state
        .bbs
        .add_lifecycle_version(name, &checked.version)
        .await
    {
        Ok(record) => record,
        Err(diego_bbs_client::ClientError::Bbs { error, .. })
            if error.kind == ErrorType::ResourceConflict =>
        {
            return Err(ApiError::conflict(
                "lifecycle_version_exists",
                error.message,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(lifecycle = %name, version = %checked.version.version, %sha256, "lifecycle added");
    let apps = users(&state.db.apps().await?)
        .remove(name)
        .unwrap_or_default();
    let mut entry = entry(&record, apps);
    entry.warnings = checked.warnings;
    Ok(entry)
}

/// `DELETE /v1/lifecycles/{name}`: refused while an app is set to use it. Components no
/// droplet was staged with leave the blob store.
pub async fn remove(state: &crate::state::State, name: &str) -> ApiResult<LifecycleEntry> {
    if LifecycleKind::from(name.to_owned()).is_builtin() {
        return Err(ApiError::bad_request(
            "builtin_lifecycle",
            format!("{name} is a built-in lifecycle and cannot be removed"),
        ));
    }
    check_name(name)?;
    // Read once: the droplets that keep components are those of these apps (none of which
    // may use the lifecycle any more).
    let all = state.db.apps().await?;
    let apps = users(&all).remove(name).unwrap_or_default();
    if !apps.is_empty() {
        return Err(ApiError::conflict(
            "lifecycle_in_use",
            format!(
                "lifecycle {name} is used by {}: move them to another lifecycle or delete them first",
                apps.join(", ")
            ),
        ));
    }
    let record = match state.bbs.remove_lifecycle(name).await {
        Ok(record) => record,
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => {
            return Err(ApiError::not_found(
                "lifecycle_not_found",
                format!("no lifecycle named {name:?}"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let staged_with: std::collections::HashSet<&str> = all
        .iter()
        .flat_map(|app| {
            let launches = [
                app.droplet.as_ref(),
                app.process_launch.as_ref().map(|l| &l.droplet),
                app.deployment
                    .as_ref()
                    .and_then(|d| d.launch.as_ref())
                    .map(|l| &l.droplet),
            ];
            launches
                .into_iter()
                .flatten()
                .map(|d| d.staged_from.lifecycle_sha256.as_str())
                .collect::<Vec<_>>()
        })
        .collect();
    for v in &record.versions {
        if !staged_with.contains(v.sha256.as_str())
            && let Err(e) = state.blobs.delete(&component_key(&v.sha256)).await
        {
            tracing::warn!(lifecycle = %name, sha256 = %v.sha256, error = %e, "cannot delete a removed lifecycle's component");
        }
    }
    tracing::info!(lifecycle = %name, "lifecycle removed");
    Ok(entry(&record, Vec::new()))
}
