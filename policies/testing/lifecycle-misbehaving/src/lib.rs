//! A lifecycle that behaves in the trial calls `diego lifecycles add` makes, and misbehaves in
//! a real staging as the app's `MISBEHAVE` environment variable says: `trap` (a Wasm trap),
//! `loop` (never returns), `memory` (grows until it is stopped) or `invalid-plan` (a cyclic
//! plan). Each must fail only that staging, with the reason in the app's staging log. Without
//! the variable it stages the bits as they are and serves them with python3 http.server.

use diego_plugin_sdk::export_lifecycle;
use diego_plugin_sdk::lifecycle::{
    Action, ActionPlan, CheckPlan, CheckRequest, DownloadSpec, Guest, LaunchPlan, LaunchRequest,
    LifecycleKinds, LifecycleMetadata, Observation, PluginError, PluginInfo, Probe, ProcessType,
    StagingRequest, StagingResult, StagingStep, TcpProbe, UploadSpec, run_spec,
};
use diego_plugin_sdk::plan::{PlanBuilder, continuation};

const USER: &str = "vcap";
const HOME: &str = "/home/vcap";
const APP: &str = "/home/vcap/app";

struct Misbehaving;

fn misbehave(how: &str) -> Option<StagingStep> {
    match how {
        "trap" => core::arch::wasm32::unreachable(),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "invalid-plan" => {
            // node 1 points back at node 2, which contains it: a cycle the host must refuse
            let plan = ActionPlan {
                nodes: vec![
                    Action::Run(run_spec("/bin/true", &[], USER)),
                    Action::Try(2),
                    Action::Serial(vec![0, 1]),
                ],
                root: 2,
            };
            Some(StagingStep::Continue(continuation(plan, &[], Vec::new())))
        }
        _ => None,
    }
}

impl Guest for Misbehaving {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "misbehaving".to_owned(),
            version: "1.0.0".to_owned(),
            lifecycle_type: "static".to_owned(),
            kinds: LifecycleKinds::BUILDER | LifecycleKinds::LAUNCHER | LifecycleKinds::HEALTHCHECK,
        }
    }

    fn stage(request: StagingRequest) -> StagingStep {
        if let Some(var) = request.env.iter().find(|e| e.name == "MISBEHAVE")
            && let Some(step) = misbehave(&var.value)
        {
            return step;
        }
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
        let upload = p.upload(UploadSpec {
            artifact: "droplet".to_owned(),
            from: APP.to_owned(),
            to: request.droplet_upload_url,
            user: USER.to_owned(),
            log_source: Some("STG".to_owned()),
        });
        let root = p.serial([fetch, upload]);
        match p.build(root) {
            Ok(plan) => StagingStep::Continue(continuation(plan, &[], b"uploaded".to_vec())),
            Err(e) => StagingStep::Failed(PluginError::Failed(e.to_string())),
        }
    }

    fn resume_staging(_state: Vec<u8>, _seen: Observation) -> StagingStep {
        StagingStep::Done(StagingResult {
            lifecycle_type: "static".to_owned(),
            lifecycle_metadata: LifecycleMetadata {
                buildpack_key: None,
                detected_buildpack: Some("misbehaving".to_owned()),
                buildpacks: Vec::new(),
                docker_image: None,
            },
            process_types: vec![ProcessType {
                name: "web".to_owned(),
                command: "python3 -m http.server $PORT --bind 0.0.0.0 --directory /home/vcap/app"
                    .to_owned(),
            }],
            sidecars: Vec::new(),
            execution_metadata: String::new(),
        })
    }

    fn launch(request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
        let droplet = request
            .droplet_url
            .ok_or_else(|| PluginError::InvalidRequest("no droplet".to_owned()))?;
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
            env: Vec::new(),
            ports: request.ports,
        })
    }

    fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
        Ok(CheckPlan {
            checks: vec![Probe::Tcp(TcpProbe {
                port: request.ports.first().copied().unwrap_or(8080),
                connect_timeout_ms: 1000,
                interval_ms: 30_000,
            })],
            readiness_checks: Vec::new(),
            start_timeout_ms: request.start_timeout_ms.unwrap_or(60_000),
        })
    }
}

export_lifecycle!(Misbehaving);
