//! The developer's commands, as `cf` has them: `push`, `apps`, `app`, `scale`, `restart`,
//! `stop`, `start`, `delete`, `logs`, `events`, `env`, `set-env`, `run-task`,
//! `create-buildpack`, `buildpacks`. They talk to the apps API (`diego api`, or the one in
//! `diego dev`), found at `--api-url` / `DIEGO_API` (default: `diego dev`'s).
//!
//! Progress goes to stderr while a command waits; data goes to stdout (`-o json` for
//! scripts). Exit codes as for every command (see `main.rs`): 4 when the API refuses the
//! request (bad name, empty directory, unknown buildpack, failed staging), 3 not found.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diego_apps_api::{
    AppSettings, AppsClient, AppsClientError, ArchiveFormat, HealthCheckType, LifecycleKind,
    ScaleRequest, TaskRequest,
};
use futures::StreamExt as _;
use serde_json::Value;

use crate::manifest::{self, ManifestApp};

/// How output is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The app's name (a DNS label: lowercase letters, digits and dashes); optional with a
    /// manifest naming one app.
    pub name: Option<String>,
    /// The app's directory.
    #[arg(short = 'p', long = "path")]
    pub path: Option<PathBuf>,
    /// A buildpack by name (repeat for several; default: detection over all installed).
    #[arg(short = 'b', long = "buildpack")]
    pub buildpacks: Vec<String>,
    /// Run this Docker image instead of staging bits with buildpacks.
    #[arg(long = "docker-image", conflicts_with_all = ["path", "buildpacks"])]
    pub docker_image: Option<String>,
    /// Stage and run with this lifecycle: buildpack, docker or one added with
    /// `diego lifecycles add` (default: docker with an image, else buildpack).
    #[arg(long = "lifecycle", conflicts_with = "buildpacks")]
    pub lifecycle: Option<String>,
    /// Instances.
    #[arg(short = 'i', long)]
    pub instances: Option<u32>,
    /// Memory per instance (256M, 1G).
    #[arg(short = 'm', long, value_parser = parse_size)]
    pub memory: Option<u32>,
    /// Disk per instance (1G).
    #[arg(short = 'k', long = "disk", value_parser = parse_size)]
    pub disk: Option<u32>,
    /// The start command (default: the buildpack's or the image's).
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// port, http, process or none.
    #[arg(short = 'u', long = "health-check-type")]
    pub health_check_type: Option<String>,
    /// The path the http health check asks.
    #[arg(long = "endpoint")]
    pub health_check_http_endpoint: Option<String>,
    /// A manifest (default: manifest.yml in the app's directory, if there is one).
    #[arg(short = 'f', long = "manifest")]
    pub manifest: Option<PathBuf>,
    /// How long to wait for staging and the first instance.
    #[arg(long, default_value = "15m", value_parser = crate::cell::parse_duration)]
    pub timeout: Duration,
    /// Refuse SSH into the app's instances (`diego enable-ssh` turns it back on).
    #[arg(long)]
    pub no_ssh: bool,
}

fn parse_size(text: &str) -> Result<u32, String> {
    let mb = manifest::parse_size_mb(text)?;
    u32::try_from(mb).map_err(|_| format!("{text:?} is too large"))
}

/// A refused request, or a push that failed: exit code 4 (see `commands::exit_code`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

pub(crate) fn client(api_url: &str) -> AppsClient {
    AppsClient::with_tls(api_url, crate::tls::command_identity())
}

/// Prints one value: JSON, or the text `text` renders.
fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    let rendered = match output {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Text => text(value),
    };
    crate::commands::print_line(&rendered)
}

/// An app view as JSON, with `url` (its first route's URL) beside `urls`.
fn to_value(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(v).context("cannot render the API's answer")?;
    if let Some(first) = value.get("urls").and_then(|u| u.get(0)).cloned()
        && let Some(object) = value.as_object_mut()
    {
        object.insert("url".into(), first);
    }
    Ok(value)
}

/// The settings a push asks for: the manifest's, overridden by the flags.
fn settings(args: &PushArgs, from_manifest: &ManifestApp) -> anyhow::Result<AppSettings> {
    let mb = |size: Option<manifest::Size>| -> anyhow::Result<Option<u32>> {
        size.map(|s| u32::try_from(s.0).context("a size in the manifest is too large"))
            .transpose()
    };
    let mut s = AppSettings {
        instances: args.instances.or(from_manifest.instances),
        memory_mb: args.memory.or(mb(from_manifest.memory)?),
        disk_mb: args.disk.or(mb(from_manifest.disk_quota)?),
        command: args.command.clone().or(from_manifest.command.clone()),
        enable_ssh: args.no_ssh.then_some(false),
        ..Default::default()
    };
    let buildpacks = if !args.buildpacks.is_empty() {
        args.buildpacks.clone()
    } else {
        from_manifest
            .buildpacks
            .clone()
            .or_else(|| from_manifest.buildpack.clone().map(|b| vec![b]))
            .unwrap_or_default()
    };
    s.buildpacks = Some(buildpacks);
    s.docker_image = args
        .docker_image
        .clone()
        .or(from_manifest.docker.as_ref().map(|d| d.image.clone()));
    if let Some(env) = &from_manifest.env {
        s.env = Some(
            env.iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        );
    }
    if let Some(routes) = &from_manifest.routes {
        s.routes = Some(routes.iter().map(|r| r.route.clone()).collect());
    }
    let check = args
        .health_check_type
        .clone()
        .or(from_manifest.health_check_type.clone());
    if let Some(check) = check {
        s.health_check_type = Some(match check.as_str() {
            "port" => HealthCheckType::Port,
            "http" => HealthCheckType::Http,
            "process" => HealthCheckType::Process,
            "none" => HealthCheckType::None,
            other => bail!("unknown health check type {other:?}: port, http, process or none"),
        });
    }
    s.health_check_http_endpoint = args
        .health_check_http_endpoint
        .clone()
        .or(from_manifest.health_check_http_endpoint.clone());
    s.stack = from_manifest.stack.clone();
    s.lifecycle = args
        .lifecycle
        .clone()
        .or(from_manifest.lifecycle.clone())
        .map(LifecycleKind::from);
    Ok(s)
}

pub async fn push(api_url: &str, args: PushArgs, output: Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest_path = args.manifest.clone().or_else(|| {
        let dir = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
        let p = dir.join("manifest.yml");
        p.exists().then_some(p)
    });
    let from_manifest = match &manifest_path {
        Some(p) => manifest::load(p, args.name.as_deref())?,
        None => ManifestApp::default(),
    };
    let name = args
        .name
        .clone()
        .or(from_manifest.name.clone())
        .context("name the app: diego push NAME (or a manifest with a name)")?;
    let settings = settings(&args, &from_manifest)?;
    let docker = match &settings.lifecycle {
        Some(kind) => kind.is_docker(),
        None => settings.docker_image.is_some(),
    };
    let dir = args
        .path
        .clone()
        .or(from_manifest.path.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    // Zip before creating anything: an empty directory is refused with nothing made.
    let bits = if docker {
        None
    } else {
        Some(crate::bits::zip_dir(&dir).map_err(|e| Failed(format!("{e:#}")))?)
    };
    let api = client(api_url);
    // Only a 404 means "new": on any other error nothing is known, so nothing is touched.
    let existed = match api.app(&name).await {
        Ok(_) => true,
        Err(e) if e.status() == Some(404) => false,
        Err(e) => return Err(api_failed(e)),
    };
    eprintln!(
        "{} {name}...",
        if existed { "Updating" } else { "Creating" }
    );
    let result = push_and_wait(&api, &name, &settings, bits, args.timeout).await;
    let view = match result {
        Ok(view) => view,
        Err(e) => {
            // A first push that failed leaves nothing half-created.
            if !existed
                && api.app(&name).await.is_ok()
                && let Err(d) = api.delete_app(&name).await
            {
                tracing::warn!(error = %d, app = %name, "could not delete the failed app");
            }
            return Err(e);
        }
    };
    eprintln!(
        "{name} is running ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    print(output, &view, |v| {
        let mut out = String::new();
        out.push_str(&format!("name:       {name}\n"));
        if let Some(url) = v["url"].as_str() {
            out.push_str(&format!("url:        {url}\n"));
        }
        out.push_str(&instances_line(v));
        out
    })
}

/// `static-site 0.1.0 (component static-site, sha256 1a2b3c4d5e6f)`.
fn lifecycle_line(l: &Value) -> String {
    let kind = l["type"].as_str().unwrap_or("?");
    let mut line = kind.to_owned();
    if let Some(version) = l["version"].as_str().filter(|v| !v.is_empty()) {
        line.push_str(&format!(" {version}"));
    }
    let component = l["name"].as_str().filter(|n| !n.is_empty() && *n != kind);
    let sha = l["sha256"].as_str().and_then(|s| s.get(..12));
    match (component, sha) {
        (Some(c), Some(sha)) => line.push_str(&format!(" (component {c}, sha256 {sha})")),
        (None, Some(sha)) => line.push_str(&format!(" (sha256 {sha})")),
        _ => {}
    }
    line
}

fn instances_line(v: &Value) -> String {
    let instances = v["instances"].as_array().cloned().unwrap_or_default();
    let running = instances.iter().filter(|i| i["state"] == "RUNNING").count();
    format!(
        "instances:  {running}/{}",
        v["settings"]["instances"]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| instances.len().to_string())
    )
}

/// Creates or updates the app, uploads its bits, starts it, and follows staging (its log on
/// stderr) and the deployment until an instance of the new version runs.
async fn push_and_wait(
    api: &AppsClient,
    name: &str,
    settings: &AppSettings,
    bits: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    api.put_app(name, settings).await.map_err(api_failed)?;
    if let Some(bits) = bits {
        eprintln!("Uploading {} KiB of app bits...", bits.len().div_ceil(1024));
        api.upload_bits(name, bits, ArchiveFormat::Zip)
            .await
            .map_err(api_failed)?;
    }
    let app = to_value(&api.app(name).await.map_err(api_failed)?)?;
    follow(api, name, &app, timeout, api.start(name)).await
}

/// Sends `action` (a start or a restage of `before`, the app as it was) and follows what it
/// set in motion until an instance of the new version runs, with staging's log on stderr
/// meanwhile, as cf shows it (subscribed before the action can start a staging).
async fn follow(
    api: &AppsClient,
    name: &str,
    before: &Value,
    timeout: Duration,
    action: impl std::future::Future<Output = Result<diego_apps_api::AppView, AppsClientError>>,
) -> anyhow::Result<Value> {
    let guid = before["guid"].as_str().unwrap_or_default().to_string();
    let logs = tokio::spawn(follow_staging_log(api.logs(), guid));
    let outcome = async {
        let started = to_value(&action.await.map_err(api_failed)?)?;
        wait_running(api, name, before, &started, timeout).await
    }
    .await;
    logs.abort();
    outcome
}

async fn follow_staging_log(client: diego_logs::LogClient, guid: String) {
    let Ok(stream) = client.stream(&guid, false).await else {
        return;
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(Ok(line)) = stream.next().await {
        if line.source_type == "STG" {
            eprintln!("   {} {}", line.tag(), line.message);
        }
    }
}

/// Follows what a start or restart set in motion (`started`, the API's answer; `before`, the
/// app as it was) until an instance of the version it deploys runs: the staging it began (by
/// task guid), then the deployment that staging leads to, or the deployment it began (by its
/// `to`). A start that set nothing in motion is done once an instance runs.
async fn wait_running(
    api: &AppsClient,
    name: &str,
    before: &Value,
    started: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let in_flight = |v: &Value| v["state"] == "PENDING" || v["state"] == "RUNNING";
    let staging_task = Some(&started["staging"])
        .filter(|s| in_flight(s))
        .and_then(|s| s["task_guid"].as_str())
        .map(str::to_owned);
    let previous = before["process_guid"].as_str().map(str::to_owned);
    let mut target = Some(&started["deployment"])
        .filter(|d| d["state"] == "DEPLOYING")
        .and_then(|d| d["to"].as_str())
        .map(str::to_owned);
    let mut staged = staging_task.is_none();
    loop {
        let view = to_value(&api.app(name).await.map_err(api_failed)?)?;
        if let Some(task) = &staging_task
            && !staged
        {
            let staging = &view["staging"];
            if staging["task_guid"].as_str() != Some(task) {
                return Err(Failed(format!(
                    "another push of {name} replaced this one's staging"
                ))
                .into());
            }
            if staging["state"] == "FAILED" {
                let error = staging["error"].as_str().unwrap_or("staging failed");
                return Err(Failed(format!("staging {name} failed: {error}")).into());
            }
            if staging["state"] == "SUCCEEDED" {
                eprintln!("Staging complete; starting {name}...");
                staged = true;
            }
        }
        let deployment = &view["deployment"];
        if staged && target.is_none() {
            // The deployment a finished staging leads to is the first one not to the old version.
            target = deployment["to"]
                .as_str()
                .filter(|to| Some(*to) != previous.as_deref())
                .map(str::to_owned);
        }
        let instances = view["instances"].as_array().cloned().unwrap_or_default();
        let running = |pg: Option<&str>| {
            instances.iter().any(|i| {
                i["state"] == "RUNNING" && (pg.is_none() || i["process_guid"].as_str() == pg)
            })
        };
        match &target {
            Some(to) if deployment["to"].as_str() == Some(to) => {
                if deployment["state"] == "FAILED" {
                    let error = deployment["error"]
                        .as_str()
                        .unwrap_or("the new version did not start");
                    return Err(Failed(format!("starting {name} failed: {error}")).into());
                }
                if deployment["state"] == "DEPLOYED" && running(Some(to)) {
                    return Ok(view);
                }
            }
            Some(_) => {}
            // Nothing was set in motion: done once the app runs.
            None if staged && staging_task.is_none() && running(None) => return Ok(view),
            None => {}
        }
        if let Some(error) = instances.iter().find_map(|i| {
            i["placement_error"]
                .as_str()
                .filter(|e| !e.is_empty() && target.as_deref() == i["process_guid"].as_str())
        }) {
            return Err(Failed(format!("{name} cannot be placed: {error}")).into());
        }
        if Instant::now() > deadline {
            bail!("{name} did not start within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The API's refusals become exit code 4 (or 3 for not found), with its message.
fn api_failed(e: AppsClientError) -> anyhow::Error {
    anyhow::Error::new(e)
}

pub async fn apps(api_url: &str, output: Output) -> anyhow::Result<()> {
    let apps = to_value(&client(api_url).apps().await?)?;
    print(output, &apps, |v| {
        let mut out = format!(
            "{:<24} {:<9} {:<10} {:<8} {}",
            "name", "state", "instances", "memory", "urls"
        );
        for a in v.as_array().cloned().unwrap_or_default() {
            let urls: Vec<String> = a["urls"]
                .as_array()
                .map(|u| {
                    u.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "\n{:<24} {:<9} {:<10} {:<8} {}",
                a["name"].as_str().unwrap_or("?"),
                a["state"].as_str().unwrap_or("?"),
                format!("{}/{}", a["running"], a["instances"]),
                format!("{}M", a["memory_mb"]),
                urls.join(", ")
            ));
        }
        out
    })
}

pub async fn app(api_url: &str, name: &str, output: Output) -> anyhow::Result<()> {
    let view = to_value(&client(api_url).app(name).await?)?;
    print(output, &view, |v| {
        let mut out = format!(
            "name:        {}\nstate:       {}\nurl:         {}\nlifecycle:   {}\n{}\n\n",
            v["name"].as_str().unwrap_or(name),
            v["state"].as_str().unwrap_or("?"),
            v["url"].as_str().unwrap_or("-"),
            lifecycle_line(&v["lifecycle"]),
            instances_line(v),
        );
        out.push_str(&format!(
            "     {:<9} {:<21} {:>6} {:>16} {:>16} {:<8} {:<7} {}",
            "state", "since", "cpu", "memory", "disk", "crashes", "uptime", "details"
        ));
        for i in v["instances"].as_array().cloned().unwrap_or_default() {
            let details = [
                i["crash_reason"].as_str().unwrap_or_default(),
                i["placement_error"].as_str().unwrap_or_default(),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
            let usage = &i["usage"];
            let (cpu, memory, disk) = if usage.is_object() {
                (
                    format!("{:.1}%", usage["cpu_percent"].as_f64().unwrap_or(0.0)),
                    used_of(&usage["memory_bytes"], &usage["memory_limit_bytes"]),
                    used_of(&usage["disk_bytes"], &usage["disk_limit_bytes"]),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            out.push_str(&format!(
                "\n#{:<3} {:<9} {:<21} {:>6} {:>16} {:>16} {:<8} {:<7} {}",
                i["index"],
                i["state"].as_str().unwrap_or("?"),
                since(i["since"].as_i64()),
                cpu,
                memory,
                disk,
                i["crash_count"],
                format!("{}s", i["uptime_s"].as_u64().unwrap_or(0)),
                details
            ));
        }
        out
    })
}

/// `23.1M of 256M`, as cf shows usage (`of` left out when unlimited).
fn used_of(used: &Value, limit: &Value) -> String {
    let mib = |b: u64| {
        let m = b as f64 / f64::from(1 << 20);
        if m >= 1024.0 {
            format!("{:.1}G", m / 1024.0)
        } else {
            format!("{m:.1}M")
        }
    };
    match (used.as_u64(), limit.as_u64()) {
        (Some(u), Some(l)) if l > 0 => format!("{} of {}", mib(u), mib(l)),
        (Some(u), _) => mib(u),
        _ => "-".into(),
    }
}

fn since(ns: Option<i64>) -> String {
    ns.filter(|n| *n > 0)
        .map(|n| utc_seconds(n / 1_000_000_000))
        .unwrap_or_else(|| "-".into())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds (UTC).
fn utc_seconds(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    pub name: String,
    #[arg(short = 'i', long)]
    pub instances: Option<u32>,
    #[arg(short = 'm', long, value_parser = parse_size)]
    pub memory: Option<u32>,
    #[arg(short = 'k', long = "disk", value_parser = parse_size)]
    pub disk: Option<u32>,
}

pub async fn scale(api_url: &str, args: ScaleArgs, output: Output) -> anyhow::Result<()> {
    if args.instances.is_none() && args.memory.is_none() && args.disk.is_none() {
        bail!("say what to scale: -i INSTANCES, -m MEMORY or -k DISK");
    }
    let view = client(api_url)
        .scale(
            &args.name,
            &ScaleRequest {
                instances: args.instances,
                memory_mb: args.memory,
                disk_mb: args.disk,
            },
        )
        .await?;
    print(output, &to_value(&view)?, |v| {
        format!("scaled {}; {}", args.name, instances_line(v))
    })
}

pub async fn restart(api_url: &str, name: &str) -> anyhow::Result<()> {
    let api = client(api_url);
    let before = to_value(&api.app(name).await?)?;
    let started = to_value(&api.restart(name).await?)?;
    eprintln!("Restarting {name}...");
    wait_running(&api, name, &before, &started, Duration::from_secs(900)).await?;
    eprintln!("{name} is running");
    Ok(())
}

pub async fn start(api_url: &str, name: &str) -> anyhow::Result<()> {
    let api = client(api_url);
    let before = to_value(&api.app(name).await?)?;
    let started = to_value(&api.start(name).await?)?;
    wait_running(&api, name, &before, &started, Duration::from_secs(900)).await?;
    eprintln!("{name} is running");
    Ok(())
}

pub async fn stop(api_url: &str, name: &str) -> anyhow::Result<()> {
    client(api_url).stop(name).await?;
    eprintln!("{name} stopped");
    Ok(())
}

pub async fn delete(api_url: &str, name: &str, force: bool) -> anyhow::Result<()> {
    if !force {
        use std::io::IsTerminal as _;
        if !std::io::stdin().is_terminal() {
            bail!("delete {name}: add -f to delete without asking");
        }
        eprint!("Really delete the app {name}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not deleted");
            return Ok(());
        }
    }
    client(api_url).delete_app(name).await?;
    eprintln!("deleted {name}");
    Ok(())
}

pub async fn logs(api_url: &str, name: &str, recent: bool) -> anyhow::Result<()> {
    let api = client(api_url);
    let app = to_value(&api.app(name).await?)?;
    let guid = app["guid"].as_str().unwrap_or_default().to_string();
    let logs = api.logs();
    if recent {
        for line in logs.recent(&guid).await? {
            crate::commands::print_line(&log_line(&line))?;
        }
        return Ok(());
    }
    let stream = logs.stream(&guid, false).await?;
    let mut stream = std::pin::pin!(stream);
    while let Some(line) = stream.next().await {
        crate::commands::print_line(&log_line(&line?))?;
    }
    Ok(())
}

/// cf's log line: `2026-12-05T10:00:00.123Z [APP/PROC/WEB/0] OUT message`.
fn log_line(e: &diego_logs::LogEnvelope) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(e.timestamp).unwrap_or(0));
    let stream = match e.stream {
        diego_logs::LogStream::Stdout => "OUT",
        diego_logs::LogStream::Stderr => "ERR",
    };
    format!(
        "   {} {} {stream} {}",
        humantime::format_rfc3339_millis(t),
        e.tag(),
        e.message
    )
}

pub async fn events(api_url: &str, name: &str, output: Output) -> anyhow::Result<()> {
    let events = to_value(&client(api_url).events(name).await?)?;
    print(output, &events, |v| {
        let mut out = format!("{:<22} {:<24} {}", "time", "event", "description");
        for e in v.as_array().cloned().unwrap_or_default() {
            out.push_str(&format!(
                "\n{:<22} {:<24} {}",
                since(e["timestamp"].as_i64()),
                e["type"].as_str().or(e["kind"].as_str()).unwrap_or("?"),
                e["message"].as_str().unwrap_or_default()
            ));
        }
        out
    })
}

pub async fn env(api_url: &str, name: &str, output: Output) -> anyhow::Result<()> {
    let app = to_value(&client(api_url).app(name).await?)?;
    let env = app["settings"]["env"].clone();
    print(output, &env, |v| {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    })
}

pub async fn set_env(api_url: &str, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    client(api_url)
        .set_env(name, &[(key.to_string(), Some(value.to_string()))].into())
        .await?;
    eprintln!("set {key} for {name}; `diego restart {name}` for running instances to see it");
    Ok(())
}

pub async fn run_task(
    api_url: &str,
    name: &str,
    command: &str,
    task_name: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let request = TaskRequest {
        command: command.to_string(),
        name: task_name,
    };
    let task = to_value(&client(api_url).run_task(name, &request).await?)?;
    print(output, &task, |v| {
        format!(
            "task {} started for {name}",
            v["task_guid"]
                .as_str()
                .or(v["guid"].as_str())
                .unwrap_or("?")
        )
    })
}

pub async fn create_buildpack(
    api_url: &str,
    name: &str,
    dir: &Path,
    position: Option<u32>,
) -> anyhow::Result<()> {
    let zip = crate::bits::zip_dir(dir).map_err(|e| Failed(format!("{e:#}")))?;
    client(api_url)
        .put_buildpack(name, position, zip, ArchiveFormat::Zip)
        .await?;
    eprintln!("buildpack {name} created");
    Ok(())
}

/// `diego restage NAME`: stage again with the current lifecycle version and buildpacks,
/// then roll the new droplet out; follows it as `push` does.
pub async fn restage(api_url: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let api = client(api_url);
    let before = to_value(&api.app(name).await.map_err(api_failed)?)?;
    let view = follow(&api, name, &before, timeout, api.restage(name)).await?;
    eprintln!("{name} is running");
    println!("lifecycle:   {}", lifecycle_line(&view["lifecycle"]));
    Ok(())
}

pub async fn buildpacks(api_url: &str, output: Output) -> anyhow::Result<()> {
    let list = to_value(&client(api_url).buildpacks().await?)?;
    print(output, &list, |v| {
        let mut out = format!("{:<9} {}", "position", "name");
        for b in v.as_array().cloned().unwrap_or_default() {
            out.push_str(&format!(
                "\n{:<9} {}",
                b["position"],
                b["name"].as_str().unwrap_or("?")
            ));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_as_cf_shows_it() {
        let v = |n: u64| Value::from(n);
        assert_eq!(used_of(&v(24_222_105), &v(256 << 20)), "23.1M of 256.0M");
        assert_eq!(used_of(&v(1 << 20), &v(0)), "1.0M");
        assert_eq!(used_of(&v(3 << 30), &v(4 << 30)), "3.0G of 4.0G");
        assert_eq!(used_of(&Value::Null, &v(1)), "-");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_seconds(1_796_428_800), "2026-12-05T00:00:00Z");
    }
}
