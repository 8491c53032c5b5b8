//! Worked example (docs/plugins.md): a "static site" lifecycle.
//!
//! Staging, in two steps (each a fresh, short call):
//! 1. `stage`: download the app bits, then run a check that `index.html` exists; ask the host
//!    to capture the check's stdout.
//! 2. `resume-staging`: if the check exited 0, upload the droplet; otherwise fail.
//! 3. `resume-staging` again, after the upload: finish with a `web` process.
//!
//! Launch: download the droplet, serve it with the stack's python3 (`http.server`) on $PORT. Healthcheck: a TCP
//! probe on the first port (run natively by the host, never by calling the guest).

use diego_plugin_sdk::export_lifecycle;
use diego_plugin_sdk::lifecycle::{
    CheckPlan, CheckRequest, DownloadSpec, Guest, LaunchPlan, LaunchRequest, LifecycleKinds,
    LifecycleMetadata, LogLevel, NodeOutcome, Observation, PluginError, PluginInfo, Probe,
    ProcessType, StagingRequest, StagingResult, StagingStep, TcpProbe, UploadSpec, env, log,
    run_spec, state, status_of,
};
use diego_plugin_sdk::plan::{PlanBuilder, continuation};

const USER: &str = "vcap";
const HOME: &str = "/home/vcap";
const APP: &str = "/home/vcap/app";

struct StaticSite;

/// Continuation state: the check node to look at, and the droplet upload URL (empty once the
/// upload has been planned).
fn encode_state(upload_url: &str, check_node: u32) -> Vec<u8> {
    state::encode(&[&check_node.to_le_bytes(), upload_url.as_bytes()])
}

fn decode_state(bytes: &[u8]) -> Option<(u32, String)> {
    match state::decode(bytes)?.as_slice() {
        [node, url] => Some((
            u32::from_le_bytes((*node).try_into().ok()?),
            String::from_utf8(url.to_vec()).ok()?,
        )),
        _ => None,
    }
}

fn failed(message: &str) -> StagingStep {
    StagingStep::Failed(PluginError::Failed(message.to_owned()))
}

impl Guest for StaticSite {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "static-site".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            lifecycle_type: "static".to_owned(),
            kinds: LifecycleKinds::BUILDER | LifecycleKinds::LAUNCHER | LifecycleKinds::HEALTHCHECK,
        }
    }

    fn stage(request: StagingRequest) -> StagingStep {
        log(LogLevel::Info, "static-site: staging");
        let mut p = PlanBuilder::new();
        let fetch = p.download(DownloadSpec {
            artifact: "app bits".to_owned(),
            from: request.app_bits_url,
            to: APP.to_owned(),
            cache_key: None,
            checksum: None,
            user: USER.to_owned(),
            log_source: Some("STG".to_owned()),
        });
        let mut check = run_spec("/bin/sh", &["-c", "test -f index.html && echo ok"], USER);
        check.dir = Some(APP.to_owned());
        check.capture_stdout = Some(1024);
        let check = p.run(check);
        let check_id = check.id();
        let root = p.serial([fetch, check]);
        match p.build(root) {
            Ok(plan) => StagingStep::Continue(continuation(
                plan,
                &[],
                encode_state(&request.droplet_upload_url, check_id),
            )),
            Err(e) => failed(&e.to_string()),
        }
    }

    fn resume_staging(state: Vec<u8>, seen: Observation) -> StagingStep {
        let Some((check, upload_url)) = decode_state(&state) else {
            return failed("static-site: corrupt continuation");
        };
        // After the upload (the second plan; its node numbers are its own): done.
        if upload_url.is_empty() {
            return StagingStep::Done(StagingResult {
                lifecycle_type: "static".to_owned(),
                lifecycle_metadata: LifecycleMetadata {
                    buildpack_key: None,
                    detected_buildpack: Some("static-site".to_owned()),
                    buildpacks: Vec::new(),
                    docker_image: None,
                },
                process_types: vec![ProcessType {
                    name: "web".to_owned(),
                    command:
                        "python3 -m http.server $PORT --bind 0.0.0.0 --directory /home/vcap/app"
                            .to_owned(),
                }],
                sidecars: Vec::new(),
                execution_metadata: String::new(),
            });
        }
        match status_of(&seen, check).map(|s| &s.outcome) {
            Some(NodeOutcome::Exited(0)) => {}
            _ => return failed("static-site: no index.html in the app"),
        }
        let mut p = PlanBuilder::new();
        let upload = p.upload(UploadSpec {
            artifact: "droplet".to_owned(),
            from: APP.to_owned(),
            to: upload_url,
            user: USER.to_owned(),
            log_source: Some("STG".to_owned()),
        });
        let root = p.emit_progress(
            upload,
            "Uploading droplet...",
            "Uploaded droplet",
            "Failed to upload droplet",
        );
        match p.build(root) {
            Ok(plan) => StagingStep::Continue(continuation(plan, &[], encode_state("", check))),
            Err(e) => failed(&e.to_string()),
        }
    }

    fn launch(request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
        let Some(droplet) = request.droplet_url else {
            return Err(PluginError::InvalidRequest(
                "static-site needs a droplet".to_owned(),
            ));
        };
        let mut p = PlanBuilder::new();
        let fetch = p.download(DownloadSpec {
            artifact: "droplet".to_owned(),
            from: droplet,
            // the droplet is a tar of the app directory (`app/...`), as Diego's are
            to: HOME.to_owned(),
            cache_key: None,
            checksum: request.droplet_checksum,
            user: USER.to_owned(),
            log_source: None,
        });
        let setup = p
            .build(fetch)
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        let mut main = run_spec("/bin/sh", &["-c", &request.start_command], USER);
        main.dir = Some(APP.to_owned());
        Ok(LaunchPlan {
            setup: Some(setup),
            main,
            sidecars: Vec::new(),
            env: env(&[("HOME", APP)]),
            ports: request.ports,
        })
    }

    fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
        let port = request.ports.first().copied().unwrap_or(8080);
        Ok(CheckPlan {
            checks: vec![Probe::Tcp(TcpProbe {
                port,
                connect_timeout_ms: request.invocation_timeout_ms.unwrap_or(1000),
                interval_ms: request.interval_ms.unwrap_or(30_000),
            })],
            readiness_checks: Vec::new(),
            start_timeout_ms: request.start_timeout_ms.unwrap_or(60_000),
        })
    }
}

export_lifecycle!(StaticSite);
