//! The Docker lifecycle (diego.md §9) as a `diego:lifecycle` component.
//!
//! The guest never touches a registry or a container; the cell does that natively and the
//! guest decides what it means:
//!
//! **Builder** (one call, no plan): the cell resolves the image (`diego_garden::image::
//! inspect`, with the request's registry credentials) and passes its config to `stage` as
//! JSON in the option [`IMAGE_CONFIG_OPTION`] (`docker-image-config`: `entrypoint`, `cmd`,
//! `env`, `user`, `working_dir`, `exposed_ports[{port, protocol}]`, `reference`,
//! `manifest_digest`, `layers`). `stage` answers `done` with `lifecycle_type` "docker", the
//! image in the lifecycle metadata, `web` = entrypoint + cmd joined, and Diego's
//! `execution_metadata` JSON `{cmd, entrypoint, workdir, user, ports[{Port, Protocol}]}` plus
//! `env` (the image's `KEY=VALUE` list, which the launcher needs). An image with neither
//! entrypoint nor cmd fails staging.
//!
//! **Launcher**: no setup (the container's rootfs is the image's layers, `docker://…`, pulled
//! by the cell); the main process is the image's entrypoint + cmd, as the image's user (root
//! when it names none — which the host refuses unless its plan caps allow it) in its working
//! dir (`/` when none). A start command other than the staged `web` command replaces the cmd
//! as `docker run IMAGE ARGS…` does: split into words and appended to the entrypoint, or run
//! with `/bin/sh -c` when the image has no entrypoint. Environment: the image's, then the
//! app's, then `PORT` (the first port of the request, else the first exposed one, else 8080).
//!
//! **Healthcheck**: as the buildpack lifecycle — `port` (the default) a TCP probe, `http` an
//! HTTP probe on the endpoint, `process` watches the main process; readiness alike. The port
//! is the request's first, else the first exposed port of the execution metadata passed in
//! the option `execution-metadata`.

use diego_plugin_sdk::export_lifecycle;
use diego_plugin_sdk::lifecycle::{
    CheckPlan, CheckRequest, EnvVar, Guest, LaunchPlan, LaunchRequest, LifecycleKinds,
    LifecycleMetadata, LogLevel, Observation, PluginError, PluginInfo, ProcessType, StagingRequest,
    StagingResult, StagingStep, log, run_spec,
};
use serde_json::{Value, json};

/// The staging option carrying the image config the cell resolved (JSON).
pub const IMAGE_CONFIG_OPTION: &str = "docker-image-config";
/// The healthcheck option carrying the staged execution metadata (JSON), for its ports.
pub const EXECUTION_METADATA_OPTION: &str = "execution-metadata";
/// Docker's default user.
const DEFAULT_USER: &str = "root";
const DEFAULT_PORT: u16 = 8080;

struct Docker;

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidRequest(message.into())
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// What the launcher needs of an image: Diego's execution metadata (plus `env`).
#[derive(Debug, Default)]
struct Metadata {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
    /// (port, protocol)
    ports: Vec<(u16, String)>,
}

impl Metadata {
    /// From the cell's image config (`diego_garden::image::ImageConfig` as JSON).
    fn from_image_config(v: &Value) -> Metadata {
        Metadata {
            entrypoint: strings(&v["entrypoint"]),
            cmd: strings(&v["cmd"]),
            env: strings(&v["env"]),
            workdir: text(&v["working_dir"]),
            user: text(&v["user"]),
            ports: v["exposed_ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            let port = u16::try_from(p["port"].as_u64()?).ok()?;
                            let protocol = p["protocol"].as_str().unwrap_or("tcp").to_owned();
                            Some((port, protocol))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// From the staged execution metadata.
    fn parse(s: &str) -> Option<Metadata> {
        let v: Value = serde_json::from_str(s).ok()?;
        v.as_object()?;
        Some(Metadata {
            entrypoint: strings(&v["entrypoint"]),
            cmd: strings(&v["cmd"]),
            env: strings(&v["env"]),
            workdir: text(&v["workdir"]),
            user: text(&v["user"]),
            ports: v["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            let port = u16::try_from(p["Port"].as_u64()?).ok()?;
                            let protocol = p["Protocol"].as_str().unwrap_or("tcp").to_owned();
                            Some((port, protocol))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Diego's `execution_metadata` JSON (empty fields left out, as Diego's omitempty does).
    fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        if !self.cmd.is_empty() {
            m.insert("cmd".into(), json!(self.cmd));
        }
        if !self.entrypoint.is_empty() {
            m.insert("entrypoint".into(), json!(self.entrypoint));
        }
        if let Some(w) = &self.workdir {
            m.insert("workdir".into(), json!(w));
        }
        if let Some(u) = &self.user {
            m.insert("user".into(), json!(u));
        }
        if !self.ports.is_empty() {
            let ports: Vec<Value> = self
                .ports
                .iter()
                .map(|(port, protocol)| json!({"Port": port, "Protocol": protocol}))
                .collect();
            m.insert("ports".into(), Value::Array(ports));
        }
        if !self.env.is_empty() {
            m.insert("env".into(), json!(self.env));
        }
        Value::Object(m).to_string()
    }

    fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The `web` process type: entrypoint + cmd joined with spaces (as Diego records it).
    fn web_command(&self) -> String {
        self.argv().join(" ")
    }

    fn first_tcp_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|(_, proto)| proto.eq_ignore_ascii_case("tcp"))
            .map(|(p, _)| *p)
    }
}

/// Splits a command line into words: whitespace separates, `'…'` and `"…"` quote, `\` escapes
/// (outside single quotes). `None` for an unterminated quote.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => word.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            ch @ ('"' | '\\' | '$' | '`') => word.push(ch),
                            ch => {
                                word.push('\\');
                                word.push(ch);
                            }
                        },
                        ch => word.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

fn stage(request: StagingRequest) -> StagingStep {
    let image = request.docker_image.clone().unwrap_or_default();
    let Some(raw) = option(&request.options, IMAGE_CONFIG_OPTION) else {
        return StagingStep::Failed(invalid(format!(
            "the docker lifecycle needs the image config: the cell resolves the image and passes it in the option '{IMAGE_CONFIG_OPTION}'"
        )));
    };
    let config: Value = match serde_json::from_str(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return StagingStep::Failed(invalid(format!(
                "option '{IMAGE_CONFIG_OPTION}' is not a JSON object"
            )));
        }
        Err(e) => {
            return StagingStep::Failed(invalid(format!(
                "option '{IMAGE_CONFIG_OPTION}' is not JSON: {e}"
            )));
        }
    };
    let reference = text(&config["reference"]).unwrap_or_else(|| image.clone());
    let metadata = Metadata::from_image_config(&config);
    if metadata.argv().is_empty() {
        return StagingStep::Failed(PluginError::Failed(format!(
            "the docker image {reference} has no command: it sets neither ENTRYPOINT nor CMD"
        )));
    }
    log(
        LogLevel::Info,
        &format!(
            "docker: staged {} ({}): web = {}",
            reference,
            config["manifest_digest"].as_str().unwrap_or("?"),
            metadata.web_command()
        ),
    );
    StagingStep::Done(StagingResult {
        lifecycle_type: "docker".to_owned(),
        lifecycle_metadata: LifecycleMetadata {
            buildpack_key: None,
            detected_buildpack: None,
            buildpacks: Vec::new(),
            docker_image: Some(if image.is_empty() { reference } else { image }),
        },
        process_types: vec![ProcessType {
            name: "web".to_owned(),
            command: metadata.web_command(),
        }],
        sidecars: Vec::new(),
        execution_metadata: metadata.to_json(),
    })
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// Sets `name` (a later value replaces an earlier one, keeping the later position).
fn set(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    env.retain(|e| e.name != name);
    env.push(env_var(name, value));
}

fn launch(request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
    let metadata = Metadata::parse(&request.execution_metadata).ok_or_else(|| {
        invalid("the docker launcher needs the staging's execution metadata (a JSON object)")
    })?;
    let start = request.start_command.trim();
    let argv: Vec<String> = if start.is_empty() || start == metadata.web_command() {
        metadata.argv()
    } else if metadata.entrypoint.is_empty() {
        vec!["/bin/sh".to_owned(), "-c".to_owned(), start.to_owned()]
    } else {
        let words = shell_words(start)
            .ok_or_else(|| invalid(format!("start command has an unterminated quote: {start}")))?;
        metadata.entrypoint.iter().cloned().chain(words).collect()
    };
    let Some((path, args)) = argv.split_first() else {
        return Err(invalid(format!(
            "no command for process type '{}': the image has neither ENTRYPOINT nor CMD and no start command was set",
            request.process_type
        )));
    };
    let ports = if request.ports.is_empty() {
        metadata
            .ports
            .iter()
            .filter(|(_, proto)| proto.eq_ignore_ascii_case("tcp"))
            .map(|(p, _)| *p)
            .collect()
    } else {
        request.ports.clone()
    };
    let port = ports
        .first()
        .copied()
        .or(metadata.first_tcp_port())
        .unwrap_or(DEFAULT_PORT);
    let mut env = Vec::new();
    for kv in &metadata.env {
        if let Some((name, value)) = kv.split_once('=') {
            set(&mut env, name, value);
        }
    }
    for e in &request.env {
        set(&mut env, &e.name, &e.value);
    }
    set(&mut env, "PORT", &port.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let user = metadata.user.as_deref().unwrap_or(DEFAULT_USER);
    let mut main = run_spec(path, &args, user);
    main.dir = Some(metadata.workdir.clone().unwrap_or_else(|| "/".to_owned()));
    main.log_source = Some("APP".to_owned());
    Ok(LaunchPlan {
        setup: None,
        main,
        sidecars: Vec::new(),
        env,
        ports,
    })
}

fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
    // The request's ports, else the first TCP port the image exposes.
    let exposed = option(&request.options, EXECUTION_METADATA_OPTION)
        .and_then(Metadata::parse)
        .and_then(|m| m.first_tcp_port());
    diego_plugin_sdk::lifecycle::check_plan(&request, request.ports.first().copied().or(exposed))
}

impl Guest for Docker {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "docker".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            lifecycle_type: "docker".to_owned(),
            kinds: LifecycleKinds::BUILDER | LifecycleKinds::LAUNCHER | LifecycleKinds::HEALTHCHECK,
        }
    }

    fn stage(request: StagingRequest) -> StagingStep {
        stage(request)
    }

    fn resume_staging(_state: Vec<u8>, _seen: Observation) -> StagingStep {
        StagingStep::Failed(PluginError::Failed(
            "docker: staging has no plan to resume (it is done in one call)".to_owned(),
        ))
    }

    fn launch(request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
        launch(request)
    }

    fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
        healthcheck(request)
    }
}

export_lifecycle!(Docker);
