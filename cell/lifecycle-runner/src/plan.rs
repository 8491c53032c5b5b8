//! Walks a validated action plan (the arena a lifecycle returned) and observes every node.
//!
//! Why not `diego_executor`: staging needs a per-node observation (each detect's exit status
//! and captured stdout, under `try`), which the executor's `Action` steps do not report; the
//! arena is walked directly, with Diego's semantics for each composite:
//!
//! - `serial` stops at the first failure; `parallel` runs all and fails if any failed;
//! - `codependent`: the first child to finish (success included) cancels the rest, and the
//!   whole fails; `timeout` cancels its subtree when it fires; cancelled processes are killed;
//! - `try` ignores its child's failure; `emit-progress` logs start, success or `prefix: error`.
//!
//! Leaves report `exited(n)` (run), `exited(0)` on success or `failed(reason)` (download,
//! upload), `failed("cancelled: ...")` when cancelled while running, `skipped` when never run.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use diego_host::capabilities::{ContainerRef, PlanLog, ProcessExit, RunProcess, Transfer};
use diego_host::lifecycle::types::{Action, ActionPlan, NodeOutcome, NodeStatus, Observation};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// What running a plan did.
#[derive(Debug, Clone)]
pub struct PlanRun {
    /// `Err(reason)` if the root failed (Diego's wording: "Exited with status N", ...).
    pub result: Result<(), String>,
    /// The status of every run/download/upload node (no captured files yet).
    pub observation: Observation,
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

struct Walker<'a, C> {
    caps: &'a C,
    container: &'a ContainerRef,
    plan: &'a ActionPlan,
    statuses: Mutex<BTreeMap<u32, NodeStatus>>,
    started: Mutex<BTreeSet<u32>>,
}

/// Runs `plan` (already validated by `diego_host::lifecycle::validate_plan`) in `container`.
pub async fn run_plan<C>(caps: &C, container: &ContainerRef, plan: &ActionPlan) -> PlanRun
where
    C: RunProcess + Transfer + PlanLog,
{
    let w = Walker {
        caps,
        container,
        plan,
        statuses: Mutex::new(BTreeMap::new()),
        started: Mutex::new(BTreeSet::new()),
    };
    let result = w.walk(plan.root).await;
    let mut statuses = w.statuses.into_inner().unwrap_or_else(|e| e.into_inner());
    for leaf in leaves(plan, plan.root) {
        statuses.entry(leaf).or_insert(NodeStatus {
            node: leaf,
            outcome: NodeOutcome::Skipped,
            stdout: None,
        });
    }
    PlanRun {
        result,
        observation: Observation {
            statuses: statuses.into_values().collect(),
            files: Vec::new(),
        },
    }
}

/// The run/download/upload nodes under `node` (validation guarantees a tree of bounded depth).
fn leaves(plan: &ActionPlan, node: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        match plan.nodes.get(n as usize) {
            Some(Action::Run(_) | Action::Download(_) | Action::Upload(_)) => out.push(n),
            Some(Action::Timeout(t)) => stack.push(t.action),
            Some(Action::EmitProgress(e)) => stack.push(e.action),
            Some(Action::Try(c)) => stack.push(*c),
            Some(Action::Serial(c) | Action::Parallel(c) | Action::Codependent(c)) => {
                stack.extend(c.iter().copied());
            }
            None => {}
        }
    }
    out
}

impl<C> Walker<'_, C>
where
    C: RunProcess + Transfer + PlanLog,
{
    fn record(&self, node: u32, outcome: NodeOutcome, stdout: Option<Vec<u8>>) {
        if let Ok(mut s) = self.statuses.lock() {
            s.insert(
                node,
                NodeStatus {
                    node,
                    outcome,
                    stdout,
                },
            );
        }
    }

    fn start(&self, node: u32) {
        if let Ok(mut s) = self.started.lock() {
            s.insert(node);
        }
    }

    /// Marks the running leaves under `node` as cancelled (their futures were dropped).
    fn cancel(&self, node: u32, reason: &str) {
        let started = self.started.lock().map(|s| s.clone()).unwrap_or_default();
        for leaf in leaves(self.plan, node) {
            let done = self
                .statuses
                .lock()
                .map(|s| s.contains_key(&leaf))
                .unwrap_or(true);
            if started.contains(&leaf) && !done {
                self.record(
                    leaf,
                    NodeOutcome::Failed(format!("cancelled: {reason}")),
                    None,
                );
            }
        }
    }

    fn log(&self, message: &str) {
        self.caps.log(self.container, "PLAN", message);
    }

    fn walk(&self, node: u32) -> BoxFut<'_> {
        Box::pin(async move {
            let Some(action) = self.plan.nodes.get(node as usize) else {
                return Err(format!("plan node {node} does not exist"));
            };
            match action {
                Action::Run(spec) => {
                    self.start(node);
                    match self.caps.run(self.container, spec).await {
                        Ok(ProcessExit::Exited { status, stdout }) => {
                            self.record(node, NodeOutcome::Exited(status), stdout);
                            if status == 0 {
                                Ok(())
                            } else {
                                Err(format!("Exited with status {status}"))
                            }
                        }
                        Ok(ProcessExit::Killed { reason }) => {
                            self.record(node, NodeOutcome::Failed(reason.clone()), None);
                            Err(reason)
                        }
                        Err(e) => {
                            self.record(node, NodeOutcome::Failed(e.to_string()), None);
                            Err(e.to_string())
                        }
                    }
                }
                Action::Download(d) => {
                    self.start(node);
                    let r = self
                        .caps
                        .download(
                            self.container,
                            &d.from,
                            &d.to,
                            d.checksum.as_ref(),
                            d.cache_key.as_deref(),
                            &d.user,
                        )
                        .await;
                    self.transferred(node, &format!("Downloading {}", d.artifact), r)
                }
                Action::Upload(u) => {
                    self.start(node);
                    let r = self
                        .caps
                        .upload(self.container, &u.from, &u.to, &u.user)
                        .await;
                    self.transferred(node, &format!("Uploading {}", u.artifact), r)
                }
                Action::Timeout(t) => {
                    let limit = Duration::from_millis(t.timeout_ms);
                    match tokio::time::timeout(limit, self.walk(t.action)).await {
                        Ok(r) => r,
                        Err(_) => {
                            let reason = format!("timed out after {limit:?}");
                            self.cancel(t.action, &reason);
                            Err(reason)
                        }
                    }
                }
                Action::EmitProgress(e) => {
                    if !e.start_message.is_empty() {
                        self.log(&e.start_message);
                    }
                    let r = self.walk(e.action).await;
                    match &r {
                        Ok(()) if !e.success_message.is_empty() => self.log(&e.success_message),
                        Err(err) if !e.failure_message_prefix.is_empty() => {
                            self.log(&format!("{}: {err}", e.failure_message_prefix));
                        }
                        _ => {}
                    }
                    r
                }
                Action::Try(inner) => {
                    if let Err(e) = self.walk(*inner).await {
                        tracing::debug!(node, error = %e, "failure ignored by try");
                    }
                    Ok(())
                }
                Action::Serial(children) => {
                    for c in children {
                        self.walk(*c).await?;
                    }
                    Ok(())
                }
                Action::Parallel(children) => {
                    let results =
                        futures::future::join_all(children.iter().map(|c| self.walk(*c))).await;
                    results
                        .into_iter()
                        .collect::<Result<Vec<()>, String>>()
                        .map(|_| ())
                }
                Action::Codependent(children) => {
                    let mut running: FuturesUnordered<_> = children
                        .iter()
                        .map(|c| {
                            let c = *c;
                            async move { (c, self.walk(c).await) }
                        })
                        .collect();
                    let first = running.next().await;
                    drop(running);
                    let Some((done, result)) = first else {
                        return Ok(());
                    };
                    for c in children.iter().filter(|c| **c != done) {
                        self.cancel(*c, "a codependent action exited");
                    }
                    match result {
                        Err(e) => Err(e),
                        Ok(()) => Err("a codependent action exited".to_owned()),
                    }
                }
            }
        })
    }

    fn transferred(
        &self,
        node: u32,
        what: &str,
        r: Result<(), diego_host::capabilities::CapabilityError>,
    ) -> Result<(), String> {
        match r {
            Ok(()) => {
                self.record(node, NodeOutcome::Exited(0), None);
                Ok(())
            }
            Err(e) => {
                let reason = format!("{what} failed: {e}");
                self.record(node, NodeOutcome::Failed(reason.clone()), None);
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use diego_host::capabilities::CapabilityError;
    use diego_host::lifecycle::types::{
        Checksum, DownloadSpec, ResourceLimits, RunSpec, TimeoutSpec,
    };

    /// `exit N` exits N with stdout "out N"; `sleep MS` sleeps then exits 0; downloads from
    /// a URL containing "bad" fail.
    struct Fake;

    impl RunProcess for Fake {
        async fn run(
            &self,
            _: &ContainerRef,
            spec: &RunSpec,
        ) -> Result<ProcessExit, CapabilityError> {
            let arg: u64 = spec.args[0].parse().unwrap();
            if spec.path == "sleep" {
                tokio::time::sleep(Duration::from_millis(arg)).await;
                return Ok(ProcessExit::Exited {
                    status: 0,
                    stdout: None,
                });
            }
            Ok(ProcessExit::Exited {
                status: arg as i32,
                stdout: spec
                    .capture_stdout
                    .map(|_| format!("out {arg}").into_bytes()),
            })
        }
    }

    impl Transfer for Fake {
        async fn download(
            &self,
            _: &ContainerRef,
            from: &str,
            _: &str,
            _: Option<&Checksum>,
            _: Option<&str>,
            _: &str,
        ) -> Result<(), CapabilityError> {
            if from.contains("bad") {
                return Err(CapabilityError {
                    capability: "download",
                    message: "404".into(),
                });
            }
            Ok(())
        }

        async fn upload(
            &self,
            _: &ContainerRef,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<(), CapabilityError> {
            Ok(())
        }
    }

    impl PlanLog for Fake {
        fn log(&self, _: &ContainerRef, _: &str, _: &str) {}
    }

    fn run(path: &str, arg: u64) -> Action {
        Action::Run(RunSpec {
            path: path.into(),
            args: vec![arg.to_string()],
            env: vec![],
            dir: None,
            user: "vcap".into(),
            resource_limits: ResourceLimits { nofile: None },
            log_source: None,
            suppress_log_output: false,
            capture_stdout: Some(64),
        })
    }

    fn download(from: &str) -> Action {
        Action::Download(DownloadSpec {
            artifact: "a".into(),
            from: from.into(),
            to: "/x".into(),
            cache_key: None,
            checksum: None,
            user: "vcap".into(),
            log_source: None,
        })
    }

    async fn walk(nodes: Vec<Action>) -> PlanRun {
        let root = nodes.len() as u32 - 1;
        run_plan(
            &Fake,
            &ContainerRef("c".into()),
            &ActionPlan { nodes, root },
        )
        .await
    }

    /// `(node, "exited 1" | "skipped" | "failed: reason")`.
    fn outcomes(run: &PlanRun) -> Vec<(u32, String)> {
        run.observation
            .statuses
            .iter()
            .map(|s| {
                let o = match &s.outcome {
                    NodeOutcome::Exited(n) => format!("exited {n}"),
                    NodeOutcome::Failed(m) => format!("failed: {m}"),
                    NodeOutcome::Skipped => "skipped".to_owned(),
                };
                (s.node, o)
            })
            .collect()
    }

    #[tokio::test]
    async fn try_keeps_a_serial_going_and_a_failure_skips_the_rest() {
        let r = walk(vec![
            run("exit", 1),
            Action::Try(0),
            run("exit", 0),
            run("exit", 7),
            run("exit", 0),
            Action::Serial(vec![1, 2, 3, 4]),
        ])
        .await;
        assert_eq!(r.result, Err("Exited with status 7".into()));
        assert_eq!(
            outcomes(&r),
            vec![
                (0, "exited 1".to_owned()),
                (2, "exited 0".to_owned()),
                (3, "exited 7".to_owned()),
                (4, "skipped".to_owned()),
            ]
        );
        assert_eq!(
            r.observation.statuses[0].stdout.as_deref(),
            Some(&b"out 1"[..])
        );
    }

    #[tokio::test]
    async fn a_failed_download_is_reported_and_parallel_runs_everything() {
        let r = walk(vec![
            download("http://bad/x"),
            run("exit", 0),
            Action::Parallel(vec![0, 1]),
        ])
        .await;
        assert!(
            r.result
                .as_ref()
                .unwrap_err()
                .contains("Downloading a failed")
        );
        assert!(outcomes(&r)[0].1.contains("404"));
        assert_eq!(outcomes(&r)[1], (1, "exited 0".to_owned()));
    }

    #[tokio::test]
    async fn timeout_and_codependent_cancel_running_nodes() {
        let r = walk(vec![
            run("sleep", 10_000),
            Action::Timeout(TimeoutSpec {
                action: 0,
                timeout_ms: 20,
            }),
        ])
        .await;
        assert!(
            r.result
                .as_ref()
                .unwrap_err()
                .starts_with("timed out after")
        );
        assert!(
            outcomes(&r)[0]
                .1
                .starts_with("failed: cancelled: timed out")
        );

        let r = walk(vec![
            run("sleep", 10_000),
            run("sleep", 10),
            Action::Codependent(vec![0, 1]),
        ])
        .await;
        assert_eq!(r.result, Err("a codependent action exited".into()));
        assert_eq!(
            outcomes(&r),
            vec![
                (
                    0,
                    "failed: cancelled: a codependent action exited".to_owned()
                ),
                (1, "exited 0".to_owned()),
            ]
        );
    }
}
