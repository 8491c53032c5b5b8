//! A droplet as a DesiredLRP (and as a one-off task's action): the lifecycle's launcher and
//! healthcheck are called here and their plans converted (`plan.rs`), as the CC-bridge builds
//! Diego's recipes.

use std::collections::BTreeMap;

use diego_host::lifecycle::types as t;
use diego_lifecycle_runner::{EXECUTION_METADATA_OPTION, docker_rootfs};
use diego_model::DesiredLrp;
use diego_model::actions::{Action, SerialAction};

use crate::APPS_DOMAIN;
use crate::error::{ApiError, ApiResult};
use crate::lifecycles::launch_and_check;
use crate::model::{App, DropletRecord, HealthCheckType, LifecycleKind, Settings};
use crate::plan::{APP_PORT, check_actions, launch_actions};
use crate::state::State;

/// Diego's log source of an app's web process.
pub const APP_LOG_SOURCE: &str = "APP/PROC/WEB";
/// The router name in a DesiredLRP's `routes`.
pub const CF_ROUTER: &str = "cf-router";

/// The process guid of an app's `version`.
pub fn process_guid(app_guid: &str, version: u64) -> String {
    format!("{app_guid}-{version}")
}

/// The app guid a process guid belongs to (`<app_guid>-<version>`).
pub fn app_guid_of(process_guid: &str) -> Option<&str> {
    let (guid, version) = process_guid.rsplit_once('-')?;
    version.parse::<u64>().ok().map(|_| guid)
}

/// The rootfs an app's containers run on.
pub fn rootfs(app: &App) -> String {
    match (&app.settings.lifecycle, &app.settings.docker_image) {
        (LifecycleKind::Docker, Some(image)) => docker_rootfs(image.trim()),
        _ => format!("preloaded:{}", app.settings.stack),
    }
}

/// The `routes` of an app's DesiredLRPs: [`routes`], and `diego-ssh` when SSH is enabled
/// (the ssh proxy lets users in only then; its value is not read).
pub fn app_routes(settings: &Settings) -> diego_model::desired_lrp::Routes {
    let mut routes = routes(&settings.routes);
    if settings.enable_ssh {
        routes.insert(
            diego_model::desired_lrp::SSH_ROUTES_KEY.to_owned(),
            serde_json::json!({}),
        );
    }
    routes
}

/// The `routes` of an app's DesiredLRPs: `cf-router` → its hostnames on port 8080.
pub fn routes(hostnames: &[String]) -> diego_model::desired_lrp::Routes {
    let mut routes = BTreeMap::new();
    routes.insert(
        CF_ROUTER.to_owned(),
        serde_json::json!([{ "hostnames": hostnames, "port": APP_PORT }]),
    );
    routes
}

fn droplet(app: &App) -> ApiResult<&DropletRecord> {
    app.droplet.as_ref().ok_or_else(|| {
        ApiError::conflict(
            "no_droplet",
            format!(
                "app {:?} has no droplet yet: upload its bits and start it",
                app.name
            ),
        )
    })
}

fn env_vars(app: &App, process_guid: &str) -> Vec<t::EnvVar> {
    let vcap_application = serde_json::json!({
        "application_id": app.guid,
        "application_name": app.name,
        "application_uris": app.settings.routes,
        "name": app.name,
        "uris": app.settings.routes,
        "version": process_guid,
        "application_version": process_guid,
        "limits": {"mem": app.settings.memory_mb, "disk": app.settings.disk_mb},
        "space_name": "diego",
        "organization_name": "diego",
    });
    let mut env: Vec<t::EnvVar> = app
        .settings
        .env
        .iter()
        .map(|(name, value)| t::EnvVar {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    env.retain(|e| e.name != "VCAP_APPLICATION");
    env.push(t::EnvVar {
        name: "VCAP_APPLICATION".to_owned(),
        value: vcap_application.to_string(),
    });
    env
}

fn health_check_type(kind: HealthCheckType) -> t::HealthCheckType {
    match kind {
        HealthCheckType::Port => t::HealthCheckType::Port,
        HealthCheckType::Http => t::HealthCheckType::Http,
        HealthCheckType::Process => t::HealthCheckType::Process,
        HealthCheckType::None => t::HealthCheckType::None,
    }
}

/// Calls the lifecycle the app's droplet was staged with (that version: a droplet starts the
/// way it was built to, whatever was added since) for `command` (the staged web command
/// unless given) and returns the launch and check plans.
async fn plans(
    state: &State,
    app: &App,
    process_guid: &str,
    command: Option<&str>,
) -> ApiResult<(t::LaunchPlan, t::CheckPlan)> {
    let droplet = droplet(app)?;
    let staged = &droplet.staged_from;
    let kind = &staged.lifecycle;
    let plugin = state
        .lifecycles
        .plugin(kind, &staged.lifecycle_sha256, &state.blobs)
        .await?;
    let result = &droplet.staging_result;
    let start_command = command
        .map(str::to_owned)
        .or_else(|| app.settings.command.clone())
        .or_else(|| result.process_types.get("web").cloned())
        .unwrap_or_default();
    let is_docker = kind.is_docker();
    let launch = t::LaunchRequest {
        process_guid: process_guid.to_owned(),
        process_type: "web".to_owned(),
        stack: Some(app.settings.stack.clone()),
        lifecycle_bundle_url: None,
        start_command,
        droplet_url: (!is_docker).then(|| state.blobs.url(&droplet.key)),
        droplet_checksum: (!is_docker && !droplet.sha256.is_empty()).then(|| t::Checksum {
            algorithm: t::ChecksumAlgorithm::Sha256,
            value: droplet.sha256.clone(),
        }),
        docker_image: app.settings.docker_image.clone().filter(|_| is_docker),
        docker_credentials: None,
        execution_metadata: result.execution_metadata.clone(),
        env: env_vars(app, process_guid),
        ports: vec![APP_PORT],
        memory_mb: u64::from(app.settings.memory_mb),
        disk_mb: u64::from(app.settings.disk_mb),
        options: Vec::new(),
    };
    let mut options = Vec::new();
    if is_docker {
        options.push((
            EXECUTION_METADATA_OPTION.to_owned(),
            result.execution_metadata.clone(),
        ));
    }
    let check = t::CheckRequest {
        health_check_type: health_check_type(app.settings.health_check_type),
        ports: vec![APP_PORT],
        http_endpoint: app.settings.health_check_http_endpoint.clone(),
        invocation_timeout_ms: None,
        interval_ms: None,
        start_timeout_ms: Some(state.config.start_timeout.as_millis() as u64),
        readiness: None,
        options,
    };
    launch_and_check(plugin, launch, check).await
}

/// The DesiredLRP of `app` at `process_guid` with `instances`.
pub async fn desired_lrp(
    state: &State,
    app: &App,
    process_guid: &str,
    instances: u32,
) -> ApiResult<DesiredLrp> {
    let (launch, check) = plans(state, app, process_guid, None).await?;
    let actions = launch_actions(&launch)
        .map_err(|e| ApiError::unprocessable("launch_failed", e.to_string()))?;
    let checks = check_actions(&check);
    let lrp = DesiredLrp {
        process_guid: process_guid.to_owned(),
        domain: APPS_DOMAIN.to_owned(),
        rootfs: rootfs(app),
        instances: i32::try_from(instances).unwrap_or(i32::MAX),
        setup: actions.setup,
        action: Some(actions.action),
        monitor: checks.monitor,
        check_definition: checks.check_definition,
        start_timeout_ms: i64::try_from(checks.start_timeout_ms).unwrap_or(i64::MAX),
        memory_mb: i32::try_from(app.settings.memory_mb).unwrap_or(i32::MAX),
        disk_mb: i32::try_from(app.settings.disk_mb).unwrap_or(i32::MAX),
        privileged: false,
        ports: vec![u32::from(APP_PORT)],
        routes: Some(app_routes(&app.settings)),
        log_source: APP_LOG_SOURCE.to_owned(),
        log_guid: app.guid.clone(),
        metrics_guid: app.guid.clone(),
        annotation: app.name.clone(),
        ..DesiredLrp::default()
    };
    lrp.validate()
        .map_err(|e| ApiError::unprocessable("invalid_lrp", e.message))?;
    Ok(lrp)
}

/// The action of a one-off task running `command` on the app's droplet: the launch plan's
/// setup, then its main process.
pub async fn task_action(
    state: &State,
    app: &App,
    task_guid: &str,
    command: &str,
) -> ApiResult<Action> {
    let (launch, _) = plans(state, app, task_guid, Some(command)).await?;
    let actions = launch_actions(&launch)
        .map_err(|e| ApiError::unprocessable("launch_failed", e.to_string()))?;
    Ok(match actions.setup {
        Some(setup) => Action::Serial(SerialAction {
            actions: vec![setup, actions.action],
            log_source: String::new(),
        }),
        None => actions.action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_guids_name_their_app() {
        let guid = "0b8e-4c1d-9f2a";
        let pg = process_guid(guid, 7);
        assert_eq!(pg, "0b8e-4c1d-9f2a-7");
        assert_eq!(app_guid_of(&pg), Some(guid));
        assert_eq!(app_guid_of("no-version-x"), None);
    }

    #[test]
    fn routes_name_the_cf_router() {
        let r = routes(&["a.example".to_owned()]);
        assert_eq!(
            r[CF_ROUTER],
            serde_json::json!([{"hostnames": ["a.example"], "port": 8080}])
        );
    }

    #[test]
    fn ssh_is_a_route_while_enabled() {
        let mut settings: Settings = serde_json::from_value(serde_json::json!({
            "instances": 1, "memory_mb": 64, "disk_mb": 64, "env": {}, "command": null,
            "buildpacks": [], "docker_image": null, "health_check_type": "port",
            "health_check_http_endpoint": null, "routes": ["a.example"],
            "lifecycle": "buildpack", "stack": "cflinuxfs4"
        }))
        .unwrap();
        assert!(
            settings.enable_ssh,
            "records from before the setting have SSH on"
        );
        let on = app_routes(&settings);
        assert!(on.contains_key(diego_model::desired_lrp::SSH_ROUTES_KEY));
        assert!(on.contains_key(CF_ROUTER));
        settings.enable_ssh = false;
        let off = app_routes(&settings);
        assert!(!off.contains_key(diego_model::desired_lrp::SSH_ROUTES_KEY));
    }
}
