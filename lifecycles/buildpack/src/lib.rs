//! The buildpack lifecycle (diego.md §9) as a `diego:lifecycle` component.
//!
//! The guest never touches a container: every call returns a plan the host validates and
//! runs, and staging is a small state machine carried in the continuation.
//!
//! **Builder** (two plans, three short calls):
//! 1. `stage`: download the app bits into the build dir and every buildpack into
//!    `/tmp/buildpacks/<i>`, then run each buildpack's `bin/detect <build_dir>` under `try`,
//!    capturing its exit status and stdout. A request whose buildpacks all say `skip-detect`
//!    (a named buildpack, or a multi-buildpack list) runs no detect.
//! 2. `resume-staging` (detect): pick the first buildpack whose detect exited 0 (or the named
//!    ones, in order) and plan: `bin/supply` for each non-final buildpack, then the final one
//!    (`bin/supply` + `bin/finalize` when it has `bin/finalize`, else the legacy
//!    `bin/compile`), `bin/release` (stdout captured), the droplet tarball, its upload.
//! 3. `resume-staging` (compile): report a failing step with its exit status and log tail,
//!    else parse `default_process_types` from the release YAML into the staging result.
//!
//! **Launcher**: download the droplet into `/home/vcap`, then `bash -c` a launcher script
//! that patches `VCAP_APPLICATION` with the instance index, guid and port, sources
//! `$DEPS_DIR/*/profile.d/*.sh`, `.profile.d/*.sh` and `.profile`, and execs the start
//! command under `bash -c`, with HOME, TMPDIR, PORT, DEPS_DIR, VCAP_SERVICES set.
//!
//! **Healthcheck**: `port` (the default) is a TCP probe on the first port, `http` an HTTP probe
//! on the endpoint, `process` watches the main process; readiness is mapped the same way.

mod release;

use diego_plugin_sdk::export_lifecycle;
use diego_plugin_sdk::lifecycle::{
    BuildpackInfo, CheckPlan, CheckRequest, DownloadSpec, EnvVar, Guest, LaunchPlan, LaunchRequest,
    LifecycleKinds, LifecycleMetadata, LogLevel, NodeOutcome, Observation, PluginError, PluginInfo,
    ProcessType, RunSpec, StagingRequest, StagingResult, StagingStep, UploadSpec, log, run_spec,
    state, status_of,
};
use diego_plugin_sdk::plan::{PlanBuilder, continuation};

const USER: &str = "vcap";
const VCAP_HOME: &str = "/home/vcap";
/// The build dir, and the app dir at run time (the droplet holds `app/` and `deps/`).
const APP_DIR: &str = "/home/vcap/app";
const DEPS_DIR: &str = "/home/vcap/deps";
const CACHE_DIR: &str = "/tmp/cache";
/// Where the build cache is unpacked (see the cache download).
const CACHE_PARENT: &str = "/tmp";
const DROPLET: &str = "/tmp/droplet.tgz";
const LOG_SOURCE: &str = "STG";
/// Bytes of a step's output kept for the failure message (the host keeps the last ones).
const LOG_TAIL: u32 = 4096;
const DETECT_STDOUT: u32 = 1024;
const RELEASE_STDOUT: u32 = 64 << 10;

const PHASE_DETECT: &[u8] = b"detect";
const PHASE_COMPILE: &[u8] = b"compile";

/// Runs the final buildpack: `$1` its dir, `$2` its index, `$3` its name.
const FINAL_SCRIPT: &str = r#"exec 2>&1
bp="$1"; idx="$2"; name="$3"
mkdir -p /tmp/cache /home/vcap/deps/"$idx" /home/vcap/app/.profile.d || exit 1
if [ -e "$bp/bin/finalize" ]; then
  if [ -e "$bp/bin/supply" ]; then
    echo "-----> $name: bin/supply"
    "$bp/bin/supply" /home/vcap/app /tmp/cache /home/vcap/deps "$idx" || exit $?
  fi
  echo "-----> $name: bin/finalize"
  exec "$bp/bin/finalize" /home/vcap/app /tmp/cache /home/vcap/deps "$idx" /home/vcap/app/.profile.d
fi
echo "-----> $name: bin/compile"
exec "$bp/bin/compile" /home/vcap/app /tmp/cache
"#;

/// Runs a non-final buildpack's `bin/supply`: `$1` its dir, `$2` its index, `$3` its name.
const SUPPLY_SCRIPT: &str = r#"exec 2>&1
bp="$1"; idx="$2"; name="$3"
mkdir -p /tmp/cache /home/vcap/deps/"$idx" || exit 1
echo "-----> $name: bin/supply"
exec "$bp/bin/supply" /home/vcap/app /tmp/cache /home/vcap/deps "$idx"
"#;

/// The launcher: `$1` is the start command. Later keys win in JSON objects as every CF
/// runtime parses them, so the instance fields are appended to the app's VCAP_APPLICATION.
const LAUNCHER_SCRIPT: &str = r#"cd "$HOME" || exit 1
mkdir -p "$TMPDIR"
lb='{'; rb='}'
base="${VCAP_APPLICATION:-}"; [ -n "$base" ] || base='{}'
inner="${base#*"$lb"}"; inner="${inner%"$rb"*}"
patch="\"instance_index\":${INSTANCE_INDEX:-0},\"instance_id\":\"${INSTANCE_GUID:-}\",\"port\":${PORT:-8080}"
if [[ "$inner" =~ [^[:space:]] ]]; then
  VCAP_APPLICATION="$lb$inner,$patch$rb"
else
  VCAP_APPLICATION="$lb$patch$rb"
fi
export VCAP_APPLICATION
if [ -d "${DEPS_DIR:-}" ]; then
  for f in "$DEPS_DIR"/*/profile.d/*.sh; do [ -f "$f" ] && . "$f"; done
fi
for f in "$HOME"/.profile.d/*.sh; do [ -f "$f" ] && . "$f"; done
[ -f "$HOME/.profile" ] && . "$HOME/.profile"
exec bash -c "$1"
"#;

struct Buildpack;

fn failed(message: impl Into<String>) -> StagingStep {
    StagingStep::Failed(PluginError::Failed(message.into()))
}

fn buildpack_dir(index: usize) -> String {
    format!("/tmp/buildpacks/{index}")
}

fn staging_env(request_env: &[EnvVar], stack: &str) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = request_env
        .iter()
        .filter(|e| !matches!(e.name.as_str(), "HOME" | "TMPDIR" | "CF_STACK"))
        .cloned()
        .collect();
    for (name, value) in [
        ("HOME", VCAP_HOME),
        ("TMPDIR", "/tmp"),
        ("CF_STACK", stack),
        ("DEPS_DIR", DEPS_DIR),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ] {
        env.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    env
}

fn bash(script: &str, args: &[&str], env: &[EnvVar]) -> RunSpec {
    let mut all = vec!["-c", script, "buildpack"];
    all.extend_from_slice(args);
    let mut spec = run_spec("/bin/bash", &all, USER);
    spec.env = env.to_vec();
    spec.dir = Some(APP_DIR.to_owned());
    spec.log_source = Some(LOG_SOURCE.to_owned());
    spec
}

fn u32_field(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn read_u32(field: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn text(field: &[u8]) -> Option<String> {
    String::from_utf8(field.to_vec()).ok()
}

/// The detect phase's state. Fields: phase, upload URL, cache upload URL, stack, then per
/// buildpack (key, name, detect node id or empty), and the env as trailing (name, value) pairs
/// after a `--env` marker.
struct DetectState {
    droplet_upload_url: String,
    cache_upload_url: String,
    stack: String,
    /// The build cache download (under `try`): its failure is not a staging failure.
    ignored: Option<u32>,
    /// (key, name, detect node; `None` for skip-detect)
    buildpacks: Vec<(String, String, Option<u32>)>,
    env: Vec<EnvVar>,
}

impl DetectState {
    fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<Vec<u8>> = vec![
            PHASE_DETECT.to_vec(),
            self.droplet_upload_url.as_bytes().to_vec(),
            self.cache_upload_url.as_bytes().to_vec(),
            self.stack.as_bytes().to_vec(),
            self.ignored.map(u32_field).unwrap_or_default(),
            u32_field(self.buildpacks.len() as u32),
        ];
        for (key, name, node) in &self.buildpacks {
            fields.push(key.as_bytes().to_vec());
            fields.push(name.as_bytes().to_vec());
            fields.push(node.map(u32_field).unwrap_or_default());
        }
        for e in &self.env {
            fields.push(e.name.as_bytes().to_vec());
            fields.push(e.value.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        state::encode(&refs)
    }

    fn decode(fields: &[&[u8]]) -> Option<DetectState> {
        let [_, url, cache_url, stack, ignored, count, rest @ ..] = fields else {
            return None;
        };
        let count = read_u32(count)? as usize;
        let (bps, env) = rest.split_at_checked(count.checked_mul(3)?)?;
        let buildpacks = bps
            .chunks_exact(3)
            .map(|c| {
                let node = if c[2].is_empty() {
                    None
                } else {
                    Some(read_u32(c[2])?)
                };
                Some((text(c[0])?, text(c[1])?, node))
            })
            .collect::<Option<Vec<_>>>()?;
        if env.len() % 2 != 0 {
            return None;
        }
        let env = env
            .chunks_exact(2)
            .map(|c| {
                Some(EnvVar {
                    name: text(c[0])?,
                    value: text(c[1])?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(DetectState {
            droplet_upload_url: text(url)?,
            cache_upload_url: text(cache_url)?,
            stack: text(stack)?,
            ignored: if ignored.is_empty() {
                None
            } else {
                Some(read_u32(ignored)?)
            },
            buildpacks,
            env,
        })
    }
}

/// The compile phase's state: what to report and which nodes to look at.
struct CompileState {
    buildpack_key: String,
    detected: String,
    release_node: u32,
    /// Nodes whose failure is ignored (the build cache upload).
    ignored: Vec<u32>,
    /// (node, what it was) for the buildpack steps, in order.
    steps: Vec<(u32, String)>,
    /// (key, name) of the buildpacks used.
    used: Vec<(String, String)>,
}

impl CompileState {
    fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<Vec<u8>> = vec![
            PHASE_COMPILE.to_vec(),
            self.buildpack_key.as_bytes().to_vec(),
            self.detected.as_bytes().to_vec(),
            u32_field(self.release_node),
            u32_field(self.ignored.len() as u32),
        ];
        fields.extend(self.ignored.iter().map(|n| u32_field(*n)));
        fields.push(u32_field(self.steps.len() as u32));
        for (node, what) in &self.steps {
            fields.push(u32_field(*node));
            fields.push(what.as_bytes().to_vec());
        }
        for (key, name) in &self.used {
            fields.push(key.as_bytes().to_vec());
            fields.push(name.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        state::encode(&refs)
    }

    fn decode(fields: &[&[u8]]) -> Option<CompileState> {
        let [_, key, detected, release, n_ignored, rest @ ..] = fields else {
            return None;
        };
        let (ignored, rest) = rest.split_at_checked(read_u32(n_ignored)? as usize)?;
        let ignored = ignored
            .iter()
            .map(|f| read_u32(f))
            .collect::<Option<Vec<_>>>()?;
        let (n_steps, rest) = rest.split_first()?;
        let (steps, used) = rest.split_at_checked((read_u32(n_steps)? as usize).checked_mul(2)?)?;
        let steps = steps
            .chunks_exact(2)
            .map(|c| Some((read_u32(c[0])?, text(c[1])?)))
            .collect::<Option<Vec<_>>>()?;
        if used.len() % 2 != 0 {
            return None;
        }
        let used = used
            .chunks_exact(2)
            .map(|c| Some((text(c[0])?, text(c[1])?)))
            .collect::<Option<Vec<_>>>()?;
        Some(CompileState {
            buildpack_key: text(key)?,
            detected: text(detected)?,
            release_node: read_u32(release)?,
            ignored,
            steps,
            used,
        })
    }
}

fn output_tail(stdout: Option<&[u8]>) -> String {
    let s = String::from_utf8_lossy(stdout.unwrap_or_default());
    let s = s.trim_end();
    if s.is_empty() {
        String::new()
    } else {
        format!("\n--- staging log (last lines) ---\n{s}")
    }
}

fn describe_outcome(outcome: &NodeOutcome) -> String {
    match outcome {
        NodeOutcome::Exited(n) => format!("exited with status {n}"),
        NodeOutcome::Failed(m) => m.clone(),
        NodeOutcome::Skipped => "was skipped".to_owned(),
    }
}

fn stage(request: StagingRequest) -> StagingStep {
    if request.buildpacks.is_empty() {
        return StagingStep::Failed(PluginError::InvalidRequest(
            "the buildpack lifecycle needs at least one buildpack".to_owned(),
        ));
    }
    log(
        LogLevel::Info,
        &format!(
            "buildpack: staging {} with {} buildpack(s)",
            request.staging_guid,
            request.buildpacks.len()
        ),
    );
    let skip_detect = request.buildpacks.iter().all(|b| b.skip_detect);
    let env = staging_env(&request.env, &request.stack);
    let mut p = PlanBuilder::new();
    let mut steps = vec![p.download(DownloadSpec {
        artifact: "app bits".to_owned(),
        from: request.app_bits_url.clone(),
        to: APP_DIR.to_owned(),
        cache_key: None,
        checksum: None,
        user: USER.to_owned(),
        log_source: Some(LOG_SOURCE.to_owned()),
    })];
    let mut ignored = None;
    if let Some(url) = &request.build_artifacts_cache_download_url {
        // The cache was uploaded as a tar of CACHE_DIR, whose entries are named after its last
        // component (`cache/...`, as Garden's stream-out names them): it unpacks in the parent.
        let fetch = p.download(DownloadSpec {
            artifact: "build artifacts cache".to_owned(),
            from: url.clone(),
            to: CACHE_PARENT.to_owned(),
            cache_key: None,
            checksum: None,
            user: USER.to_owned(),
            log_source: Some(LOG_SOURCE.to_owned()),
        });
        ignored = Some(fetch.id());
        steps.push(p.try_(fetch));
    }
    for (i, bp) in request.buildpacks.iter().enumerate() {
        steps.push(p.download(DownloadSpec {
            artifact: format!("buildpack {}", bp.name),
            from: bp.url.clone(),
            to: buildpack_dir(i),
            cache_key: Some(format!("buildpack-{}", bp.key)),
            checksum: None,
            user: USER.to_owned(),
            log_source: Some(LOG_SOURCE.to_owned()),
        }));
    }
    let mut buildpacks = Vec::new();
    for (i, bp) in request.buildpacks.iter().enumerate() {
        let node = if skip_detect {
            None
        } else {
            let mut detect = run_spec(
                &format!("{}/bin/detect", buildpack_dir(i)),
                &[APP_DIR],
                USER,
            );
            detect.env = env.clone();
            detect.dir = Some(APP_DIR.to_owned());
            detect.capture_stdout = Some(DETECT_STDOUT);
            detect.suppress_log_output = true;
            let run = p.run(detect);
            let id = run.id();
            steps.push(p.try_(run));
            Some(id)
        };
        buildpacks.push((bp.key.clone(), bp.name.clone(), node));
    }
    let root = p.serial(steps);
    let state = DetectState {
        droplet_upload_url: request.droplet_upload_url,
        cache_upload_url: request.build_artifacts_cache_upload_url.unwrap_or_default(),
        stack: request.stack,
        ignored,
        buildpacks,
        env: request.env,
    };
    match p.build(root) {
        Ok(plan) => StagingStep::Continue(continuation(plan, &[], state.encode())),
        Err(e) => failed(format!("buildpack: {e}")),
    }
}

fn after_detect(st: DetectState, seen: &Observation) -> StagingStep {
    let detect_nodes: Vec<u32> = st.buildpacks.iter().filter_map(|b| b.2).collect();
    // A download failed (app bits or a buildpack): detect never ran.
    if let Some(s) = seen.statuses.iter().find(|s| {
        !detect_nodes.contains(&s.node)
            && Some(s.node) != st.ignored
            && !matches!(s.outcome, NodeOutcome::Exited(0) | NodeOutcome::Skipped)
    }) {
        return failed(format!(
            "downloading failed: {}",
            describe_outcome(&s.outcome)
        ));
    }
    // Which buildpacks run, in order, and what was detected.
    let (chosen, detected): (Vec<usize>, String) = if st.buildpacks.iter().all(|b| b.2.is_none()) {
        let all: Vec<usize> = (0..st.buildpacks.len()).collect();
        let last = st
            .buildpacks
            .last()
            .map(|b| b.1.clone())
            .unwrap_or_default();
        (all, last)
    } else {
        let found = st.buildpacks.iter().enumerate().find_map(|(i, b)| {
            let status = status_of(seen, b.2?)?;
            match status.outcome {
                NodeOutcome::Exited(0) => {
                    let out = String::from_utf8_lossy(status.stdout.as_deref().unwrap_or_default())
                        .lines()
                        .next()
                        .map(str::trim)
                        .unwrap_or_default()
                        .to_owned();
                    Some((i, if out.is_empty() { b.1.clone() } else { out }))
                }
                _ => None,
            }
        });
        match found {
            Some((i, name)) => (vec![i], name),
            None => {
                let names: Vec<&str> = st.buildpacks.iter().map(|b| b.1.as_str()).collect();
                return failed(format!(
                    "no buildpack detected: none of [{}] accepted the app (bin/detect exited nonzero)",
                    names.join(", ")
                ));
            }
        }
    };
    log(LogLevel::Info, &format!("buildpack: using {detected}"));
    let env = staging_env(&st.env, &st.stack);
    let mut p = PlanBuilder::new();
    let mut nodes = Vec::new();
    let mut steps = Vec::new();
    let Some((&final_i, supplies)) = chosen.split_last() else {
        return failed("buildpack: nothing to run");
    };
    for &i in supplies {
        let name = &st.buildpacks[i].1;
        let mut spec = bash(
            SUPPLY_SCRIPT,
            &[&buildpack_dir(i), &i.to_string(), name],
            &env,
        );
        spec.capture_stdout = Some(LOG_TAIL);
        let run = p.run(spec);
        steps.push((run.id(), format!("supply ({name})")));
        nodes.push(run);
    }
    let final_name = st.buildpacks[final_i].1.clone();
    let mut spec = bash(
        FINAL_SCRIPT,
        &[&buildpack_dir(final_i), &final_i.to_string(), &final_name],
        &env,
    );
    spec.capture_stdout = Some(LOG_TAIL);
    let run = p.run(spec);
    steps.push((run.id(), format!("compile ({final_name})")));
    nodes.push(p.emit_progress(
        run,
        &format!("-----> Compiling with {final_name}"),
        "-----> Compiled",
        "Failed to compile",
    ));
    let mut release = run_spec(
        &format!("{}/bin/release", buildpack_dir(final_i)),
        &[APP_DIR],
        USER,
    );
    release.env = env.clone();
    release.dir = Some(APP_DIR.to_owned());
    release.capture_stdout = Some(RELEASE_STDOUT);
    release.suppress_log_output = true;
    let release = p.run(release);
    let release_node = release.id();
    nodes.push(release);
    let tar = bash(
        "mkdir -p /home/vcap/deps && exec tar -czf \"$1\" -C /home/vcap app deps",
        &[DROPLET],
        &env,
    );
    let tar = p.run(tar);
    steps.push((tar.id(), "packing the droplet".to_owned()));
    nodes.push(tar);
    let upload = p.upload(UploadSpec {
        artifact: "droplet".to_owned(),
        from: DROPLET.to_owned(),
        to: st.droplet_upload_url.clone(),
        user: USER.to_owned(),
        log_source: Some(LOG_SOURCE.to_owned()),
    });
    nodes.push(p.emit_progress(
        upload,
        "Uploading droplet...",
        "Uploaded droplet",
        "Failed to upload droplet",
    ));
    let mut ignored = Vec::new();
    if !st.cache_upload_url.is_empty() {
        let up = p.upload(UploadSpec {
            artifact: "build artifacts cache".to_owned(),
            from: CACHE_DIR.to_owned(),
            to: st.cache_upload_url.clone(),
            user: USER.to_owned(),
            log_source: Some(LOG_SOURCE.to_owned()),
        });
        ignored.push(up.id());
        nodes.push(p.try_(up));
    }
    let root = p.serial(nodes);
    let next = CompileState {
        buildpack_key: st.buildpacks[final_i].0.clone(),
        detected,
        release_node,
        ignored,
        steps,
        used: chosen
            .iter()
            .map(|&i| (st.buildpacks[i].0.clone(), st.buildpacks[i].1.clone()))
            .collect(),
    };
    match p.build(root) {
        Ok(plan) => StagingStep::Continue(continuation(plan, &[], next.encode())),
        Err(e) => failed(format!("buildpack: {e}")),
    }
}

fn after_compile(st: CompileState, seen: &Observation) -> StagingStep {
    for (node, what) in &st.steps {
        match status_of(seen, *node) {
            Some(s) => match &s.outcome {
                NodeOutcome::Exited(0) => {}
                NodeOutcome::Exited(n) => {
                    return failed(format!(
                        "{what} failed with exit status {n}{}",
                        output_tail(s.stdout.as_deref())
                    ));
                }
                NodeOutcome::Failed(m) => return failed(format!("{what} failed: {m}")),
                // an earlier step failed and was reported above
                NodeOutcome::Skipped => {}
            },
            None => return failed(format!("{what}: the host reported no status")),
        }
    }
    let release = match status_of(seen, st.release_node) {
        Some(s) if matches!(s.outcome, NodeOutcome::Exited(0)) => {
            String::from_utf8_lossy(s.stdout.as_deref().unwrap_or_default()).into_owned()
        }
        Some(s) => return failed(format!("bin/release {}", describe_outcome(&s.outcome))),
        None => return failed("bin/release: the host reported no status"),
    };
    if let Some(s) = seen
        .statuses
        .iter()
        .find(|s| !st.ignored.contains(&s.node) && !matches!(s.outcome, NodeOutcome::Exited(0)))
    {
        return failed(format!("staging failed: {}", describe_outcome(&s.outcome)));
    }
    let process_types: Vec<ProcessType> = release::default_process_types(&release)
        .into_iter()
        .map(|(name, command)| ProcessType { name, command })
        .collect();
    StagingStep::Done(StagingResult {
        lifecycle_type: "buildpack".to_owned(),
        lifecycle_metadata: LifecycleMetadata {
            buildpack_key: Some(st.buildpack_key),
            detected_buildpack: Some(st.detected),
            buildpacks: st
                .used
                .into_iter()
                .map(|(key, name)| BuildpackInfo {
                    key,
                    name,
                    version: String::new(),
                })
                .collect(),
            docker_image: None,
        },
        process_types,
        sidecars: Vec::new(),
        execution_metadata: String::new(),
    })
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

impl Guest for Buildpack {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "buildpack".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            lifecycle_type: "buildpack".to_owned(),
            kinds: LifecycleKinds::BUILDER | LifecycleKinds::LAUNCHER | LifecycleKinds::HEALTHCHECK,
        }
    }

    fn stage(request: StagingRequest) -> StagingStep {
        stage(request)
    }

    fn resume_staging(bytes: Vec<u8>, seen: Observation) -> StagingStep {
        let Some(fields) = state::decode(&bytes) else {
            return failed("buildpack: corrupt continuation");
        };
        match fields.first().copied() {
            Some(PHASE_DETECT) => match DetectState::decode(&fields) {
                Some(st) => after_detect(st, &seen),
                None => failed("buildpack: corrupt detect continuation"),
            },
            Some(PHASE_COMPILE) => match CompileState::decode(&fields) {
                Some(st) => after_compile(st, &seen),
                None => failed("buildpack: corrupt compile continuation"),
            },
            _ => failed("buildpack: unknown continuation phase"),
        }
    }

    fn launch(request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
        let Some(droplet) = request.droplet_url else {
            return Err(PluginError::InvalidRequest(
                "the buildpack launcher needs a droplet".to_owned(),
            ));
        };
        let command = request.start_command.trim();
        if command.is_empty() {
            return Err(PluginError::InvalidRequest(format!(
                "no start command for process type '{}': the buildpack's release gave none and none was set",
                request.process_type
            )));
        }
        let mut p = PlanBuilder::new();
        let fetch = p.download(DownloadSpec {
            artifact: "droplet".to_owned(),
            from: droplet,
            to: VCAP_HOME.to_owned(),
            cache_key: None,
            checksum: request.droplet_checksum,
            user: USER.to_owned(),
            log_source: None,
        });
        let setup = p
            .build(fetch)
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        let port = request.ports.first().copied().unwrap_or(8080).to_string();
        let ours = [
            "HOME",
            "TMPDIR",
            "PORT",
            "DEPS_DIR",
            "VCAP_APPLICATION",
            "VCAP_SERVICES",
            "LANG",
        ];
        let find = |name: &str| {
            request
                .env
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.value.clone())
        };
        let mut env: Vec<EnvVar> = request
            .env
            .iter()
            .filter(|e| !ours.contains(&e.name.as_str()))
            .cloned()
            .collect();
        env.extend([
            env_var("HOME", APP_DIR),
            env_var("TMPDIR", "/home/vcap/tmp"),
            env_var("PORT", &port),
            env_var("DEPS_DIR", DEPS_DIR),
            env_var(
                "LANG",
                &find("LANG").unwrap_or_else(|| "en_US.UTF-8".to_owned()),
            ),
            env_var(
                "VCAP_APPLICATION",
                &find("VCAP_APPLICATION").unwrap_or_else(|| "{}".to_owned()),
            ),
            env_var(
                "VCAP_SERVICES",
                &find("VCAP_SERVICES").unwrap_or_else(|| "{}".to_owned()),
            ),
        ]);
        let mut main = run_spec(
            "/bin/bash",
            &["-c", LAUNCHER_SCRIPT, "launcher", command],
            USER,
        );
        main.dir = Some(APP_DIR.to_owned());
        main.log_source = Some("APP".to_owned());
        Ok(LaunchPlan {
            setup: Some(setup),
            main,
            sidecars: Vec::new(),
            env,
            ports: request.ports,
        })
    }

    fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
        let port = request.ports.first().copied();
        diego_plugin_sdk::lifecycle::check_plan(&request, port)
    }
}

export_lifecycle!(Buildpack);
