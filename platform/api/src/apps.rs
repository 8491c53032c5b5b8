//! What each app route does: create/update, bits, start/stop/restart, scale, env, delete,
//! tasks, and the views.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diego_model::requests::{
    ActualLrpsRequest, DesireTaskRequest, DesiredLrpsRequest, TasksRequest,
};
use diego_model::{ActualLrp, ActualLrpState, ErrorType, TaskDefinition};

use crate::archive::ArchiveLimits;
use crate::blobs::bits_key;
use crate::db::AppWrite;
use crate::deploy;
use crate::error::{ApiError, ApiResult};
use crate::launcher::{self, app_guid_of};
use crate::model::*;
use crate::names::{NAME_RULE, is_dns_label, is_env_name, is_hostname};
use crate::plan::APP_PORT;
use crate::staging;
use crate::state::{State, now_ns};
use crate::uploads;
use crate::{APPS_DOMAIN, STAGING_DOMAIN, TASKS_DOMAIN};

/// Most instances an app may ask for.
const MAX_INSTANCES: u32 = 1000;
const MAX_MEMORY_MB: u32 = 64 * 1024;
const MAX_DISK_MB: u32 = 256 * 1024;

pub fn check_name(name: &str) -> ApiResult<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("app name {name:?} is invalid: {NAME_RULE}"),
        ))
    }
}

async fn load(state: &State, name: &str) -> ApiResult<App> {
    state
        .db
        .app(name)
        .await?
        .ok_or_else(|| ApiError::app_not_found(name))
}

fn check_limits(
    instances: Option<u32>,
    memory_mb: Option<u32>,
    disk_mb: Option<u32>,
) -> ApiResult<()> {
    if let Some(n) = instances.filter(|n| *n > MAX_INSTANCES) {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("instances {n} is over the limit of {MAX_INSTANCES}"),
        ));
    }
    if let Some(m) = memory_mb.filter(|m| *m == 0 || *m > MAX_MEMORY_MB) {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("memory_mb {m} must be 1 to {MAX_MEMORY_MB}"),
        ));
    }
    if let Some(d) = disk_mb.filter(|d| *d == 0 || *d > MAX_DISK_MB) {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("disk_mb {d} must be 1 to {MAX_DISK_MB}"),
        ));
    }
    Ok(())
}

fn check_env_names<'a>(names: impl IntoIterator<Item = &'a String>) -> ApiResult<()> {
    for name in names {
        if !is_env_name(name) {
            return Err(ApiError::bad_request(
                "invalid_env",
                format!(
                    "environment variable name {name:?} is invalid: use letters, digits and '_', not starting with a digit"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a settings body on its own (names, limits, formats).
fn check_settings(s: &AppSettings) -> ApiResult<()> {
    check_limits(s.instances, s.memory_mb, s.disk_mb)?;
    if let Some(env) = &s.env {
        check_env_names(env.keys())?;
    }
    if let Some(bad) = s.routes.iter().flatten().find(|r| !is_hostname(r)) {
        return Err(ApiError::bad_request(
            "invalid_route",
            format!("route {bad:?} is not a hostname (dot-separated DNS labels)"),
        ));
    }
    if let Some(e) = s
        .health_check_http_endpoint
        .as_ref()
        .filter(|e| !e.starts_with('/'))
    {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("health_check_http_endpoint {e:?} must start with '/'"),
        ));
    }
    if let Some(stack) = s.stack.as_ref().filter(|s| !is_dns_label(s)) {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("stack {stack:?} is invalid: {NAME_RULE}"),
        ));
    }
    if let Some(image) = s
        .docker_image
        .as_ref()
        .filter(|i| i.chars().any(char::is_whitespace))
    {
        return Err(ApiError::bad_request(
            "invalid_settings",
            format!("docker_image {image:?} may not contain spaces"),
        ));
    }
    Ok(())
}

/// What a settings change asks of a running app.
#[derive(Debug, Default, Clone, Copy)]
struct Changes {
    /// New containers are needed (env, command, limits, health check).
    relaunch: bool,
    routes: bool,
    instances: bool,
}

fn apply(settings: &mut Settings, s: AppSettings) -> Changes {
    let before = settings.clone();
    if let Some(v) = s.instances {
        settings.instances = v;
    }
    if let Some(v) = s.memory_mb {
        settings.memory_mb = v;
    }
    if let Some(v) = s.disk_mb {
        settings.disk_mb = v;
    }
    if let Some(v) = s.env {
        settings.env = v;
    }
    if let Some(v) = s.command {
        settings.command = Some(v).filter(|c| !c.trim().is_empty());
    }
    if let Some(v) = s.buildpacks {
        settings.buildpacks = v;
    }
    if let Some(v) = s.docker_image {
        settings.docker_image = Some(v.trim().to_owned()).filter(|i| !i.is_empty());
        if s.lifecycle.is_none() {
            settings.lifecycle = if settings.docker_image.is_some() {
                LifecycleKind::Docker
            } else {
                LifecycleKind::Buildpack
            };
        }
    }
    if let Some(v) = s.lifecycle {
        settings.lifecycle = v;
    }
    if let Some(v) = s.health_check_type {
        settings.health_check_type = v;
    }
    if let Some(v) = s.health_check_http_endpoint {
        settings.health_check_http_endpoint = Some(v);
    }
    if let Some(v) = s.routes {
        settings.routes = v;
    }
    if let Some(v) = s.stack {
        settings.stack = v;
    }
    if let Some(v) = s.enable_ssh {
        settings.enable_ssh = v;
    }
    Changes {
        relaunch: before.memory_mb != settings.memory_mb
            || before.disk_mb != settings.disk_mb
            || before.env != settings.env
            || before.command != settings.command
            || before.health_check_type != settings.health_check_type
            || before.health_check_http_endpoint != settings.health_check_http_endpoint,
        routes: before.routes != settings.routes || before.enable_ssh != settings.enable_ssh,
        instances: before.instances != settings.instances,
    }
}

fn default_settings(name: &str, domain: &str) -> Settings {
    Settings {
        instances: 1,
        memory_mb: DEFAULT_MEMORY_MB,
        disk_mb: DEFAULT_DISK_MB,
        env: BTreeMap::new(),
        command: None,
        buildpacks: Vec::new(),
        docker_image: None,
        health_check_type: HealthCheckType::Port,
        health_check_http_endpoint: None,
        routes: vec![format!("{name}.{domain}")],
        lifecycle: LifecycleKind::Buildpack,
        stack: DEFAULT_STACK.to_owned(),
        enable_ssh: true,
    }
}

/// `PUT /v1/apps/{name}`: creates the app or updates its settings. Returns the app and
/// whether it was created.
pub async fn put(state: &Arc<State>, name: &str, body: AppSettings) -> ApiResult<(App, bool)> {
    check_name(name)?;
    check_settings(&body)?;
    if let Some(kind) = body.lifecycle.as_ref().filter(|k| !k.is_builtin()) {
        // an unknown lifecycle is refused now, not at the first staging
        crate::lifecycles::added(&state.bbs, kind.as_str()).await?;
    }
    if let Some(named) = &body.buildpacks {
        let all = state.db.buildpacks().await?;
        staging::resolve_buildpacks(named, &all)?;
    }
    let domain = state.config.domain.clone();
    let owned = name.to_owned();
    let (app, created, changes) = state
        .db
        .update_app(name, move |current| {
            let created = current.is_none();
            let now = now_ns();
            let mut app = current.unwrap_or_else(|| App {
                guid: uuid::Uuid::new_v4().to_string(),
                name: owned.clone(),
                settings: default_settings(&owned, &domain),
                state: DesiredState::Stopped,
                bits: None,
                droplet: None,
                version: 0,
                process_guid: None,
                process_launch: None,
                staging: None,
                deployment: None,
                droplet_counter: 0,
                created_at: now,
                updated_at: now,
            });
            let changes = apply(&mut app.settings, body);
            if app.settings.lifecycle == LifecycleKind::Docker
                && app.settings.docker_image.is_none()
            {
                return Err(ApiError::unprocessable(
                    "no_docker_image",
                    "the docker lifecycle needs a docker_image",
                ));
            }
            app.updated_at = now;
            Ok((AppWrite::Put(app.clone()), (app, created, changes)))
        })
        .await?;
    if created {
        state
            .event(&app.guid, "create", format!("Created app {}", app.name))
            .await;
    } else {
        state
            .event(&app.guid, "update", format!("Updated app {}", app.name))
            .await;
        // Settings that need new containers wait for the next start, restart or push (as in
        // Cloud Foundry); instances and routes apply at once.
        apply_in_place(state, &app, changes).await;
    }
    Ok((app, created))
}

/// Carries instances and routes to the app's DesiredLRPs (nothing else changes in place).
async fn apply_in_place(state: &Arc<State>, app: &App, changes: Changes) {
    if app.state != DesiredState::Started {
        return;
    }
    let deploying = state.deployments.is_active(&app.name);
    for pg in app.claimed_process_guids() {
        if changes.routes {
            let request = diego_model::requests::UpdateDesiredLrpRequest {
                process_guid: pg.clone(),
                update: diego_model::desired_lrp::DesiredLrpUpdate {
                    routes: Some(launcher::app_routes(&app.settings)),
                    ..Default::default()
                },
                expected_modification_tag: None,
            };
            if let Err(e) = state.bbs.update_desired_lrp(&request).await {
                tracing::warn!(process_guid = %pg, error = %e, "cannot update routes");
            }
        }
    }
    // During a deployment the rolling steps pick the new count up.
    if changes.instances
        && !deploying
        && let Some(pg) = &app.process_guid
    {
        deploy::set_instances(state, pg, app.settings.instances).await;
    }
}

/// `PUT /v1/apps/{name}/bits`: the uploaded archive at `upload` (zip or tgz) becomes the
/// app's bits (as a zip in the blob store).
pub async fn put_bits(state: &Arc<State>, name: &str, upload: &Path) -> ApiResult<App> {
    let app = load(state, name).await?;
    let zip = uploads::prepare_zip(
        upload,
        &state.config.data_dir.join("tmp"),
        ArchiveLimits::for_uploads(state.config.max_upload_bytes),
    )
    .await?;
    if zip.contents.files.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_bits",
            "the app directory is empty",
        ));
    }
    let key = bits_key(&app.guid, &zip.sha256);
    let stored = state.blobs.put_file(&key, zip.path()).await?;
    let bits = BitsRecord {
        key,
        sha256: stored,
    };
    let guid = app.guid.clone();
    let (app, old) = state
        .db
        .update_app(name, move |current| {
            let mut app = current.filter(|a| a.guid == guid).ok_or_else(|| {
                ApiError::conflict("app_changed", "the app was deleted during the upload")
            })?;
            let old = app.bits.replace(bits);
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), (app, old)))
        })
        .await?;
    let sha = app
        .bits
        .as_ref()
        .map(|b| b.sha256.clone())
        .unwrap_or_default();
    if let Some(old) = old.filter(|o| app.bits.as_ref().is_some_and(|b| b.key != o.key))
        && let Err(e) = state.blobs.delete(&old.key).await
    {
        tracing::warn!(key = %old.key, error = %e, "cannot delete old bits");
    }
    state
        .event(
            &app.guid,
            "upload",
            format!("Uploaded bits ({})", sha.get(..12).unwrap_or(&sha)),
        )
        .await;
    Ok(app)
}

/// `start` and `restart`: stage if the droplet is not what the app asks for (bits, named
/// buildpacks, docker image, lifecycle, stack), else deploy when needed — always on a restart,
/// on a start when nothing runs or the running version has other settings. What was set in
/// motion is recorded before this returns: the answer has the PENDING staging (its deployment
/// follows) or the DEPLOYING deployment; with nothing to do it is the app as it was.
pub async fn start(state: &Arc<State>, name: &str, restart: bool) -> ApiResult<App> {
    let app = mark_started(state, name).await?;
    let kind = if restart { "restart" } else { "start" };
    state
        .event(
            &app.guid,
            kind,
            format!(
                "{} app {}",
                if restart { "Restarting" } else { "Starting" },
                app.name
            ),
        )
        .await;
    // Staging inputs (buildpacks resolved) are computed only when staging is needed, so a
    // restart whose named buildpack was deleted since still runs its droplet.
    if staging::needs_staging(&app) {
        match staging::begin(state, name, false).await? {
            staging::Begun::Staging(app) | staging::Begun::UnderWay(app) => return Ok(app),
            staging::Begun::Current => {}
        }
    }
    let app = load(state, name).await?;
    if (restart || !up_to_date(state, &app).await?)
        && let Some(app) = deploy::start(state, name).await?
    {
        return Ok(app);
    }
    Ok(app)
}

/// Records that the app should run (STARTED) and answers it as written.
async fn mark_started(state: &State, name: &str) -> ApiResult<App> {
    let app = load(state, name).await?;
    let guid = app.guid.clone();
    state
        .db
        .update_app(name, move |current| {
            let mut app = current
                .filter(|a| a.guid == guid)
                .ok_or_else(|| ApiError::conflict("app_changed", "the app was deleted"))?;
            app.state = DesiredState::Started;
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), app))
        })
        .await
}

/// `restage`: stages the app again whatever its droplet (Cloud Foundry's `cf restage`: picks
/// up the current version of its lifecycle and buildpacks), then runs the new droplet as a
/// start does. The running version keeps serving until the new one is up.
pub async fn restage(state: &Arc<State>, name: &str) -> ApiResult<App> {
    let app = mark_started(state, name).await?;
    state
        .event(&app.guid, "restage", format!("Restaging app {}", app.name))
        .await;
    match staging::begin(state, name, true).await? {
        staging::Begun::Staging(app) | staging::Begun::UnderWay(app) => Ok(app),
        staging::Begun::Current => load(state, name).await,
    }
}

/// Whether what runs (or is being deployed) is the app's droplet with its settings.
async fn up_to_date(state: &State, app: &App) -> ApiResult<bool> {
    let current = |launch: Option<&Launch>| launch.is_none_or(|l| l.is_current_for(app));
    if state.deployments.is_active(&app.name)
        && let Some(d) = app
            .deployment
            .as_ref()
            .filter(|d| d.state == DeploymentState::Deploying)
    {
        return Ok(current(d.launch.as_ref()));
    }
    Ok(current(app.process_launch.as_ref()) && running_or_deploying(state, app).await?)
}

/// Whether the app's current version is desired in the BBS (or a deployment is under way).
async fn running_or_deploying(state: &State, app: &App) -> ApiResult<bool> {
    if state.deployments.is_active(&app.name) {
        return Ok(true);
    }
    let Some(pg) = &app.process_guid else {
        return Ok(false);
    };
    match state.bbs.desired_lrp(pg).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The app's DesiredLRPs in the BBS (every version, claimed or not).
async fn app_lrps(state: &State, app_guid: &str) -> ApiResult<Vec<String>> {
    let lrps = state
        .bbs
        .desired_lrps(&DesiredLrpsRequest {
            domain: APPS_DOMAIN.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(lrps
        .into_iter()
        .map(|l| l.process_guid)
        .filter(|pg| app_guid_of(pg) == Some(app_guid))
        .collect())
}

/// `stop`: the app's DesiredLRPs are removed; its droplet is kept.
pub async fn stop(state: &Arc<State>, name: &str) -> ApiResult<App> {
    load(state, name).await?;
    state.deployments.cancel_and_wait(name).await;
    let app = state
        .db
        .update_app(name, move |current| {
            let mut app =
                current.ok_or_else(|| ApiError::conflict("app_changed", "the app was deleted"))?;
            app.state = DesiredState::Stopped;
            app.process_guid = None;
            app.process_launch = None;
            app.deployment = None;
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), app))
        })
        .await?;
    // Recorded first: the bulk pass now sees these as orphans, never as missing.
    for pg in app_lrps(state, &app.guid).await? {
        deploy::remove_lrp(state, &pg).await;
    }
    state
        .event(&app.guid, "stop", format!("Stopped app {}", app.name))
        .await;
    Ok(app)
}

/// `scale`: instances at once; memory or disk through a rolling redeploy (recorded before
/// this returns, as `start` does).
pub async fn scale(state: &Arc<State>, name: &str, body: ScaleRequest) -> ApiResult<App> {
    check_limits(body.instances, body.memory_mb, body.disk_mb)?;
    load(state, name).await?;
    let settings = AppSettings {
        instances: body.instances,
        memory_mb: body.memory_mb,
        disk_mb: body.disk_mb,
        ..AppSettings::default()
    };
    let (app, changes) = state
        .db
        .update_app(name, move |current| {
            let mut app =
                current.ok_or_else(|| ApiError::conflict("app_changed", "the app was deleted"))?;
            let changes = apply(&mut app.settings, settings);
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), (app, changes)))
        })
        .await?;
    let s = &app.settings;
    state
        .event(
            &app.guid,
            "scale",
            format!(
                "Scaled app {} to {} instances, {} MB memory, {} MB disk",
                app.name, s.instances, s.memory_mb, s.disk_mb
            ),
        )
        .await;
    if changes.relaunch
        && app.state == DesiredState::Started
        && let Some(app) = deploy::start(state, name).await?
    {
        return Ok(app);
    }
    apply_in_place(state, &app, changes).await;
    Ok(app)
}

/// `PUT /v1/apps/{name}/env`: `{KEY: "v"}` sets, `{KEY: null}` unsets, merged in the write
/// (concurrent calls lose nothing). Like Cloud Foundry, a running app sees the change at its
/// next start, restart or push.
pub async fn set_env(
    state: &Arc<State>,
    name: &str,
    body: BTreeMap<String, Option<String>>,
) -> ApiResult<App> {
    check_env_names(body.keys())?;
    let owned = name.to_owned();
    let app = state
        .db
        .update_app(name, move |current| {
            let mut app = current.ok_or_else(|| ApiError::app_not_found(&owned))?;
            for (k, v) in body {
                match v {
                    Some(v) => app.settings.env.insert(k, v),
                    None => app.settings.env.remove(&k),
                };
            }
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), app))
        })
        .await?;
    state
        .event(
            &app.guid,
            "update",
            format!("Updated the environment of app {}", app.name),
        )
        .await;
    Ok(app)
}

/// `DELETE /v1/apps/{name}`: its DesiredLRPs, tasks, blobs, events and record.
pub async fn delete(state: &Arc<State>, name: &str) -> ApiResult<()> {
    let app = load(state, name).await?;
    state.deployments.cancel_and_wait(name).await;
    let guid = app.guid.clone();
    state
        .db
        .update_app(name, move |current| match current {
            Some(a) if a.guid == guid => Ok((AppWrite::Delete, ())),
            _ => Ok((AppWrite::Keep, ())),
        })
        .await?;
    for pg in app_lrps(state, &app.guid).await? {
        deploy::remove_lrp(state, &pg).await;
    }
    for domain in [STAGING_DOMAIN, TASKS_DOMAIN] {
        let tasks = state
            .bbs
            .tasks(&TasksRequest {
                domain: domain.to_owned(),
                ..Default::default()
            })
            .await?;
        for task in tasks.iter().filter(|t| {
            t.task_definition.annotation == app.guid
                || t.task_guid.starts_with(&format!("{}-task-", app.guid))
        }) {
            remove_task(state, &task.task_guid).await;
        }
    }
    state
        .blobs
        .delete_prefix(&format!("apps/{}/", app.guid))
        .await?;
    state
        .blobs
        .delete_prefix(&format!("droplets/{}/", app.guid))
        .await?;
    state.db.delete_events(&app.guid).await?;
    state.api_log(&app.guid, &format!("Deleted app {}", app.name));
    Ok(())
}

/// Cancels (if still running) and deletes a task; best effort.
async fn remove_task(state: &State, task_guid: &str) {
    let _ = state.bbs.cancel_task(task_guid).await;
    let _ = state.bbs.resolving_task(task_guid).await;
    if let Err(e) = state.bbs.delete_task(task_guid).await
        && e.kind() != Some(ErrorType::ResourceNotFound)
    {
        tracing::warn!(task_guid, error = %e, "cannot delete a task");
    }
}

/// `POST /v1/apps/{name}/tasks`: runs `command` on the app's droplet.
pub async fn run_task(state: &Arc<State>, name: &str, body: TaskRequest) -> ApiResult<TaskView> {
    let app = load(state, name).await?;
    if body.command.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_task",
            "a task needs a command",
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let task_name = body.name.clone().unwrap_or_else(|| id[..8].to_owned());
    if !is_dns_label(&task_name) {
        return Err(ApiError::bad_request(
            "invalid_task",
            format!("task name {task_name:?} is invalid: {NAME_RULE}"),
        ));
    }
    let task_guid = format!("{}-task-{id}", app.guid);
    let annotation = serde_json::json!({"name": task_name, "command": body.command}).to_string();
    // The command travels in the task's annotation, which the BBS caps: say so before asking.
    let max = diego_model::desired_lrp::MAX_ANNOTATION_BYTES;
    if annotation.len() > max {
        return Err(ApiError::unprocessable(
            "command_too_long",
            format!(
                "the task command is {} bytes; with its name it must fit in {max} bytes",
                body.command.len()
            ),
        ));
    }
    let action = launcher::task_action(state, &app, &task_guid, &body.command).await?;
    let definition = TaskDefinition {
        rootfs: launcher::rootfs(&app),
        action: Some(action),
        memory_mb: app.settings.memory_mb as i32,
        disk_mb: app.settings.disk_mb as i32,
        log_guid: app.guid.clone(),
        log_source: format!("APP/TASK/{task_name}"),
        metrics_guid: app.guid.clone(),
        annotation,
        ..TaskDefinition::default()
    };
    let request = DesireTaskRequest {
        task_definition: definition,
        task_guid: task_guid.clone(),
        domain: TASKS_DOMAIN.to_owned(),
    };
    state.bbs.desire_task(&request).await?;
    state
        .event(
            &app.guid,
            "task",
            format!("Task {task_name} ({task_guid}): {}", body.command),
        )
        .await;
    let task = state.bbs.task(&task_guid).await?;
    Ok(task_view(&task))
}

fn task_view(task: &diego_model::Task) -> TaskView {
    let annotation: serde_json::Value =
        serde_json::from_str(&task.task_definition.annotation).unwrap_or_default();
    let field = |k: &str| {
        annotation
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    TaskView {
        guid: task.task_guid.clone(),
        name: field("name"),
        command: field("command"),
        state: format!("{:?}", task.state),
        failed: task.failed,
        failure_reason: task.failure_reason.clone(),
        result: task.result.clone(),
        created_at: task.created_at,
    }
}

/// `GET /v1/apps/{name}/tasks`.
pub async fn tasks(state: &State, name: &str) -> ApiResult<Vec<TaskView>> {
    let app = load(state, name).await?;
    let prefix = format!("{}-task-", app.guid);
    let mut tasks: Vec<TaskView> = state
        .bbs
        .tasks(&TasksRequest {
            domain: TASKS_DOMAIN.to_owned(),
            ..Default::default()
        })
        .await?
        .iter()
        .filter(|t| t.task_guid.starts_with(&prefix))
        .map(task_view)
        .collect();
    tasks.sort_by_key(|t| t.created_at);
    Ok(tasks)
}

/// `GET /v1/apps/{name}/events`.
pub async fn events(state: &State, name: &str) -> ApiResult<Vec<AppEvent>> {
    let app = load(state, name).await?;
    state.db.events(&app.guid).await
}

/// Where an app answers: each route's URL through the router (`router_port` 80 is left out).
fn app_urls(config: &crate::ApiConfig, routes: &[String]) -> Vec<String> {
    routes
        .iter()
        .map(|host| match config.router_port {
            80 => format!("http://{host}"),
            port => format!("http://{host}:{port}"),
        })
        .collect()
}

fn instance_view(a: &ActualLrp, now: i64) -> InstanceView {
    let running = a.state == ActualLrpState::Running;
    InstanceView {
        index: a.index,
        state: serde_json::to_value(a.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        since: a.since,
        cell_id: a.cell_id.clone(),
        address: a.address.clone(),
        host_port: a
            .ports
            .iter()
            .find(|p| p.container_port == u32::from(APP_PORT))
            .map(|p| p.host_port)
            .unwrap_or(0),
        crash_count: a.crash_count,
        crash_reason: a.crash_reason.clone(),
        placement_error: a.placement_error.clone(),
        uptime_s: if running {
            u64::try_from((now - a.since).max(0) / 1_000_000_000).unwrap_or(0)
        } else {
            0
        },
        process_guid: a.process_guid.clone(),
        instance_guid: a.instance_guid.clone(),
        usage: None,
    }
}

/// `GET /v1/apps/{name}` (and every route that answers with the app).
pub async fn view(state: &State, app: &App) -> AppView {
    let now = now_ns();
    let mut instances = Vec::new();
    for pg in app.claimed_process_guids() {
        let filter = ActualLrpsRequest {
            process_guid: pg.clone(),
            ..Default::default()
        };
        match state.bbs.actual_lrps(&filter).await {
            Ok(actuals) => instances.extend(actuals.iter().map(|a| instance_view(a, now))),
            Err(e) => tracing::warn!(process_guid = %pg, error = %e, "cannot list instances"),
        }
    }
    instances.sort_by(|a, b| (a.index, &a.process_guid).cmp(&(b.index, &b.process_guid)));
    let mut staging = app.staging.as_ref().map(|s| StagingView {
        task_guid: s.task_guid.clone(),
        state: s.state,
        error: s.error.clone(),
    });
    // A pending staging may already be running on a cell; the record learns it on the next poll.
    if let Some(s) = staging
        .as_mut()
        .filter(|s| s.state == StagingState::Pending)
        && let Ok(task) = state.bbs.task(&s.task_guid).await
        && task.state == diego_model::TaskState::Running
    {
        s.state = StagingState::Running;
    }
    let lifecycle = lifecycle_view(state, app).await;
    AppView {
        guid: app.guid.clone(),
        name: app.name.clone(),
        state: app.state,
        urls: app_urls(&state.config, &app.settings.routes),
        settings: app.settings.clone(),
        lifecycle,
        bits: app.bits.clone(),
        droplet: app.droplet.as_ref().map(|d| DropletView {
            number: d.number,
            key: d.key.clone(),
            sha256: d.sha256.clone(),
            lifecycle_type: d.staging_result.lifecycle_type.clone(),
            detected_buildpack: d
                .staging_result
                .lifecycle_metadata
                .detected_buildpack
                .clone(),
            process_types: d.staging_result.process_types.clone(),
            docker_image: d.staging_result.lifecycle_metadata.docker_image.clone(),
        }),
        version: app.version,
        process_guid: app.process_guid.clone(),
        staging,
        deployment: app.deployment.as_ref().map(|d| DeploymentView {
            state: d.state,
            from: d.from.clone(),
            to: d.to.clone(),
            error: d.error.clone(),
        }),
        instances,
        created_at: app.created_at,
        updated_at: app.updated_at,
    }
}

/// The lifecycle the app uses: the version its droplet was staged with, or (no droplet of
/// that lifecycle yet) the one staging would use now.
async fn lifecycle_view(state: &State, app: &App) -> LifecycleView {
    let kind = app.settings.lifecycle.clone();
    let mut view = LifecycleView {
        kind: kind.clone(),
        name: String::new(),
        version: String::new(),
        sha256: String::new(),
    };
    let staged = app
        .droplet
        .as_ref()
        .map(|d| &d.staged_from)
        .filter(|s| s.lifecycle == kind);
    let (sha256, version) = match staged {
        Some(s) => (s.lifecycle_sha256.clone(), s.lifecycle_version.clone()),
        None => match state
            .lifecycles
            .resolve(&kind, &state.bbs, &state.blobs)
            .await
        {
            Ok(r) => (r.sha256, r.version),
            Err(e) => {
                tracing::debug!(lifecycle = %kind, error = %e, "cannot resolve the lifecycle");
                return view;
            }
        },
    };
    if let Ok(plugin) = state.lifecycles.plugin(&kind, &sha256, &state.blobs).await {
        view.name.clone_from(&plugin.describe().name);
        if version.is_empty() {
            view.version.clone_from(&plugin.describe().version);
        }
    }
    if !version.is_empty() {
        view.version = version;
    }
    view.sha256 = sha256;
    view
}

/// `GET /v1/apps`.
pub async fn summaries(state: &State) -> ApiResult<Vec<AppSummary>> {
    let apps = state.db.apps().await?;
    let actuals = match state
        .bbs
        .actual_lrps(&ActualLrpsRequest {
            domain: APPS_DOMAIN.to_owned(),
            ..Default::default()
        })
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list instances");
            Vec::new()
        }
    };
    Ok(apps
        .into_iter()
        .map(|app| {
            let running = app.process_guid.as_ref().map_or(0, |pg| {
                actuals
                    .iter()
                    .filter(|a| &a.process_guid == pg && a.state == ActualLrpState::Running)
                    .count() as u32
            });
            AppSummary {
                name: app.name.clone(),
                guid: app.guid.clone(),
                state: app.state,
                instances: app.settings.instances,
                running,
                memory_mb: app.settings.memory_mb,
                disk_mb: app.settings.disk_mb,
                urls: app_urls(&state.config, &app.settings.routes),
                lifecycle: app.settings.lifecycle.clone(),
            }
        })
        .collect())
}

/// Loads the app `name` and answers its view.
pub async fn view_by_name(state: &State, name: &str) -> ApiResult<AppView> {
    let app = load(state, name).await?;
    let mut view = view(state, &app).await;
    add_usage(state, &mut view.instances).await;
    Ok(view)
}

/// Asks each running instance's cell what it uses (at once, each call bounded: a cell that
/// does not answer leaves that instance without usage, never delays the view for long).
async fn add_usage(state: &State, instances: &mut [InstanceView]) {
    if !instances.iter().any(|i| i.state == "RUNNING") {
        return;
    }
    let cells = match state.bbs.cells().await {
        Ok(cells) => cells,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list cells for usage");
            return;
        }
    };
    let asks = instances.iter().map(|i| {
        let rep = cells
            .iter()
            .find(|c| c.cell_id == i.cell_id && i.state == "RUNNING")
            .map(|c| {
                diego_rep_client::RepClient::with_tls(
                    &c.rep_url,
                    Duration::from_secs(2),
                    state.config.tls.as_ref(),
                )
            });
        let (pg, ig) = (i.process_guid.clone(), i.instance_guid.clone());
        async move {
            match rep {
                Some(rep) => rep.instance_metrics(&pg, &ig).await.ok(),
                None => None,
            }
        }
    });
    let usage = futures::future::join_all(asks).await;
    for (instance, usage) in instances.iter_mut().zip(usage) {
        instance.usage = usage;
    }
}
