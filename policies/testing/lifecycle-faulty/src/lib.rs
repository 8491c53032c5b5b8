//! A lifecycle that misbehaves in every call but `describe`: the host must cut `stage` off at
//! its deadline, refuse the cyclic plan `launch` returns (naming the node), and report the
//! panic of `healthcheck` — each with a message a user can act on.

use diego_plugin_sdk::export_lifecycle;
use diego_plugin_sdk::lifecycle::{
    Action, ActionPlan, CheckPlan, CheckRequest, Guest, LaunchPlan, LaunchRequest, LifecycleKinds,
    Observation, PluginError, PluginInfo, StagingRequest, StagingStep, run_spec,
};

struct Faulty;

impl Guest for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "faulty".to_owned(),
            version: "0.0.0".to_owned(),
            lifecycle_type: "faulty".to_owned(),
            kinds: LifecycleKinds::all(),
        }
    }

    fn stage(_request: StagingRequest) -> StagingStep {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn resume_staging(_state: Vec<u8>, _seen: Observation) -> StagingStep {
        StagingStep::Failed(PluginError::Unsupported("no staging".to_owned()))
    }

    fn launch(_request: LaunchRequest) -> Result<LaunchPlan, PluginError> {
        // Node 2 is a serial of 0 and 1, and node 1 points back at node 2: a cycle. Built by
        // hand on purpose: the SDK's PlanBuilder cannot express it.
        let setup = ActionPlan {
            nodes: vec![
                Action::Run(run_spec("/bin/true", &[], "vcap")),
                Action::Try(2),
                Action::Serial(vec![0, 1]),
            ],
            root: 2,
        };
        Ok(LaunchPlan {
            setup: Some(setup),
            main: run_spec("/bin/app", &[], "vcap"),
            sidecars: Vec::new(),
            env: Vec::new(),
            ports: vec![8080],
        })
    }

    fn healthcheck(request: CheckRequest) -> Result<CheckPlan, PluginError> {
        panic!("healthcheck bug: {} ports", request.ports.len());
    }
}

export_lifecycle!(Faulty);
