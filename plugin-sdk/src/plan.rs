//! Build action plans (Diego's action language as an arena of nodes) without index mistakes.
//!
//! Every constructor returns a [`Node`] handle; composites take the handles of nodes built
//! before them, so a plan built here is acyclic by construction. Using a node twice or a
//! handle from another builder is recorded and reported by [`PlanBuilder::build`] — the host
//! would refuse such a plan anyway, naming the node.

use crate::lifecycle::{
    Action, ActionPlan, Capture, Continuation, DownloadSpec, EmitProgressSpec, RunSpec,
    TimeoutSpec, UploadSpec,
};

/// A node of the plan under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    index: u32,
    builder: u64,
}

impl Node {
    /// The node's index in the plan (as reported back in `Observation.statuses`).
    pub fn id(self) -> u32 {
        self.index
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A node was used as a child twice (or as a child and the root).
    Reused(u32),
    /// A handle from another builder.
    Foreign(u32),
    Empty,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Reused(n) => write!(f, "plan node {n} is used more than once"),
            PlanError::Foreign(n) => write!(f, "plan node {n} comes from another plan builder"),
            PlanError::Empty => write!(f, "plan has no nodes"),
        }
    }
}

impl std::error::Error for PlanError {}

#[derive(Debug)]
pub struct PlanBuilder {
    nodes: Vec<Action>,
    used: Vec<bool>,
    tag: u64,
    error: Option<PlanError>,
}

impl Default for PlanBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PlanBuilder {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PlanBuilder {
            nodes: Vec::new(),
            used: Vec::new(),
            tag: NEXT.fetch_add(1, Ordering::Relaxed),
            error: None,
        }
    }

    fn push(&mut self, action: Action) -> Node {
        self.nodes.push(action);
        self.used.push(false);
        Node {
            index: (self.nodes.len() - 1) as u32,
            builder: self.tag,
        }
    }

    fn take(&mut self, node: Node) -> u32 {
        if node.builder != self.tag {
            self.error.get_or_insert(PlanError::Foreign(node.index));
        } else if let Some(used) = self.used.get_mut(node.index as usize) {
            if *used {
                self.error.get_or_insert(PlanError::Reused(node.index));
            }
            *used = true;
        }
        node.index
    }

    pub fn run(&mut self, spec: RunSpec) -> Node {
        self.push(Action::Run(spec))
    }

    pub fn download(&mut self, spec: DownloadSpec) -> Node {
        self.push(Action::Download(spec))
    }

    pub fn upload(&mut self, spec: UploadSpec) -> Node {
        self.push(Action::Upload(spec))
    }

    pub fn timeout(&mut self, inner: Node, timeout_ms: u64) -> Node {
        let action = self.take(inner);
        self.push(Action::Timeout(TimeoutSpec { action, timeout_ms }))
    }

    pub fn emit_progress(
        &mut self,
        inner: Node,
        start: &str,
        success: &str,
        failure: &str,
    ) -> Node {
        let action = self.take(inner);
        self.push(Action::EmitProgress(EmitProgressSpec {
            action,
            start_message: start.to_owned(),
            success_message: success.to_owned(),
            failure_message_prefix: failure.to_owned(),
        }))
    }

    /// Diego's `try`: run `inner` and ignore its failure.
    pub fn try_(&mut self, inner: Node) -> Node {
        let action = self.take(inner);
        self.push(Action::Try(action))
    }

    pub fn serial(&mut self, children: impl IntoIterator<Item = Node>) -> Node {
        let ids = children.into_iter().map(|c| self.take(c)).collect();
        self.push(Action::Serial(ids))
    }

    pub fn parallel(&mut self, children: impl IntoIterator<Item = Node>) -> Node {
        let ids = children.into_iter().map(|c| self.take(c)).collect();
        self.push(Action::Parallel(ids))
    }

    pub fn codependent(&mut self, children: impl IntoIterator<Item = Node>) -> Node {
        let ids = children.into_iter().map(|c| self.take(c)).collect();
        self.push(Action::Codependent(ids))
    }

    /// The finished plan rooted at `root`.
    pub fn build(mut self, root: Node) -> Result<ActionPlan, PlanError> {
        if self.nodes.is_empty() {
            return Err(PlanError::Empty);
        }
        let root = self.take(root);
        match self.error {
            Some(e) => Err(e),
            None => Ok(ActionPlan {
                nodes: self.nodes,
                root,
            }),
        }
    }
}

/// A staging step that runs `plan`, captures `captures` (path, max bytes) and resumes with
/// `state`.
pub fn continuation(plan: ActionPlan, captures: &[(&str, u32)], state: Vec<u8>) -> Continuation {
    Continuation {
        plan,
        captures: captures
            .iter()
            .map(|(p, n)| Capture {
                path: (*p).to_owned(),
                max_bytes: *n,
            })
            .collect(),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::run_spec;

    #[test]
    fn builds_children_before_parents() {
        let mut p = PlanBuilder::new();
        let a = p.run(run_spec("/bin/a", &[], "vcap"));
        let b = p.run(run_spec("/bin/b", &[], "vcap"));
        let t = p.timeout(b, 1000);
        let root = p.serial([a, t]);
        let plan = p.build(root).expect("valid");
        assert_eq!(plan.root, 3);
        assert!(matches!(&plan.nodes[3], Action::Serial(c) if c == &vec![0, 2]));
    }

    #[test]
    fn reports_reuse_and_foreign_nodes() {
        let mut p = PlanBuilder::new();
        let a = p.run(run_spec("/bin/a", &[], "vcap"));
        let root = p.parallel([a, a]);
        assert_eq!(p.build(root).err(), Some(PlanError::Reused(0)));

        let mut other = PlanBuilder::new();
        let foreign = other.run(run_spec("/bin/x", &[], "vcap"));
        let mut p = PlanBuilder::new();
        let root = p.try_(foreign);
        assert_eq!(p.build(root).err(), Some(PlanError::Foreign(0)));
    }
}
