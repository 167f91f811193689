//! Workflow placement on a cluster control plane: before an invocation's
//! first run, the pure `stratus_placement::workflow::place` decides which
//! worker each step's instances should run on, from the workers' free room
//! ([`ClusterView::workflow_hosts`]) and the bytes expected on each edge;
//! every run then asks its pool for an instance on its step's host
//! (`FunctionPool::acquire_near`), and an instance started for it starts
//! there when that host has room.
//!
//! Affinity is a preference: a warm instance elsewhere serves before a cold
//! start on the named host, and a full host falls back to the cluster's
//! placement policy. `centralised` (the default) asks for nothing: the
//! pools place as they always did.
//!
//! Edge bytes start from a prior ([`PRIOR_EDGE_BYTES`]) and follow what
//! each invocation moved (`EdgeEstimate`), per workflow; a map step plans
//! as many instances as its last invocation ran (at most
//! [`MAX_PLANNED_INSTANCES`]).
//!
//! [`ClusterView::workflow_hosts`]: crate::cluster_view::ClusterView::workflow_hosts

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use stratus_dag::{Plan, RunRecord};
use stratus_placement::workflow::{
    place, Blend, Edge, EdgeEstimate, End, Step, Workflow, WorkflowPolicy,
};
use stratus_placement::Resources;

use crate::Platform;

/// An edge's bytes before any invocation was seen.
pub(crate) const PRIOR_EDGE_BYTES: u64 = 1 << 20;
/// Most instances planned for one step.
pub(crate) const MAX_PLANNED_INSTANCES: u32 = 64;

/// One invocation's placement: per step, the hosts its runs go to in turn
/// (one entry per planned instance; empty for a step that was not placed),
/// and how many runs of each step were sent so far.
#[derive(Debug, Default)]
pub(crate) struct StepHosts {
    hosts: Vec<Vec<Arc<str>>>,
    sent: Vec<u32>,
}

impl StepHosts {
    fn new(hosts: Vec<Vec<Arc<str>>>) -> StepHosts {
        let sent = vec![0; hosts.len()];
        StepHosts { hosts, sent }
    }

    /// The host the next run of `step` would get, without taking it.
    pub(crate) fn peek(&self, step: usize) -> Option<Arc<str>> {
        let h = self.hosts.get(step)?;
        let k = *self.sent.get(step)?;
        (!h.is_empty()).then(|| h[k as usize % h.len()].clone())
    }

    /// How many instances were planned for `step` (its runs' width, as
    /// last seen).
    pub(crate) fn width(&self, step: usize) -> usize {
        self.hosts.get(step).map_or(0, Vec::len)
    }

    /// Whether every run of `step` was placed on `host`.
    pub(crate) fn all_on(&self, step: usize, host: &str) -> bool {
        self.hosts
            .get(step)
            .is_some_and(|h| !h.is_empty() && h.iter().all(|x| &**x == host))
    }

    /// The one host every step was placed on (all of each step's runs),
    /// if there is one.
    pub(crate) fn only_host(&self) -> Option<Arc<str>> {
        let first = self.hosts.first()?.first()?;
        self.hosts
            .iter()
            .all(|h| !h.is_empty() && h.iter().all(|x| x == first))
            .then(|| first.clone())
    }

    /// Per step, the hosts its runs go to in turn.
    pub(crate) fn steps(&self) -> &[Vec<Arc<str>>] {
        &self.hosts
    }

    /// The host for the next run of `step`.
    pub(crate) fn next(&mut self, step: usize) -> Option<Arc<str>> {
        let h = self.hosts.get(step)?;
        let k = self.sent.get_mut(step)?;
        let near = (!h.is_empty()).then(|| h[*k as usize % h.len()].clone());
        *k += 1;
        near
    }
}

/// One workflow's learned shape: its edges' bytes and its steps' widths.
struct Shape {
    /// `(from, to)` of every edge, to notice a redeployed, different plan.
    ends: Vec<(End, End)>,
    bytes: Vec<EdgeEstimate>,
    runs: Vec<u32>,
    /// A worker refused to run it whole (its outputs were too large for
    /// one): not sent whole again before then.
    no_whole_until: Option<std::time::Instant>,
}

/// Edge estimates per workflow name.
#[derive(Default)]
pub(crate) struct Estimates {
    shapes: Mutex<HashMap<String, Shape>>,
}

/// A plan's edges: each step's sources (the input is the control plane's),
/// and the output back to the control plane.
fn ends(plan: &Plan) -> Vec<(End, End)> {
    let mut v = Vec::new();
    for s in 0..plan.step_count() {
        for src in plan.step_sources(s) {
            v.push((src.map_or(End::Control, End::Step), End::Step(s)));
        }
    }
    v.push((End::Step(plan.output_step()), End::Control));
    v
}

impl Estimates {
    fn shape<'a>(map: &'a mut HashMap<String, Shape>, plan: &Plan) -> &'a mut Shape {
        let ends = ends(plan);
        let fresh = || Shape {
            bytes: vec![EdgeEstimate::new(PRIOR_EDGE_BYTES); ends.len()],
            runs: vec![1; plan.step_count()],
            ends: ends.clone(),
            no_whole_until: None,
        };
        let s = map.entry(plan.name().to_string()).or_insert_with(fresh);
        if s.ends != ends {
            *s = fresh();
        }
        s
    }

    /// Records what one invocation of `plan` moved: each step's output
    /// bytes on its out-edges, the input and output on the control plane's.
    pub(crate) fn observe(&self, plan: &Plan, runs: &[RunRecord], input: u64, output: u64) {
        let index: HashMap<&str, usize> = (0..plan.step_count())
            .map(|s| (plan.step_name(s), s))
            .collect();
        let mut out = vec![0u64; plan.step_count()];
        let mut count = vec![0u32; plan.step_count()];
        for r in runs {
            if let Some(&s) = index.get(r.step.as_str()) {
                out[s] = out[s].saturating_add(r.output_bytes);
                count[s] = count[s].saturating_add(1);
            }
        }
        let mut map = self.shapes.lock();
        let shape = Self::shape(&mut map, plan);
        let blend = Blend::default();
        for (i, (from, to)) in shape.ends.iter().enumerate() {
            let bytes = match (from, to) {
                (End::Control, _) => input,
                (_, End::Control) => output,
                (End::Step(s), _) => out[*s],
            };
            shape.bytes[i].observe(bytes, blend);
        }
        for (s, n) in count.into_iter().enumerate() {
            if n > 0 {
                shape.runs[s] = n.min(MAX_PLANNED_INSTANCES);
            }
        }
    }

    /// Each step's runs per invocation, as last seen (1 before any).
    pub(crate) fn widths(&self, plan: &Plan) -> Vec<u32> {
        let mut map = self.shapes.lock();
        Self::shape(&mut map, plan).runs.clone()
    }

    /// Not to run `plan` whole on a worker before `until`.
    pub(crate) fn refuse_whole(&self, plan: &Plan, until: std::time::Instant) {
        let mut map = self.shapes.lock();
        Self::shape(&mut map, plan).no_whole_until = Some(until);
    }

    /// Whether a worker refused to run `plan` whole, lately.
    pub(crate) fn whole_refused(&self, plan: &Plan, now: std::time::Instant) -> bool {
        let mut map = self.shapes.lock();
        Self::shape(&mut map, plan)
            .no_whole_until
            .is_some_and(|t| now < t)
    }

    /// The bytes an invocation of `plan` is expected to hold at once at
    /// most: every step's output (its largest out-edge's estimate).
    pub(crate) fn held_bytes(&self, plan: &Plan) -> u64 {
        let mut map = self.shapes.lock();
        let shape = Self::shape(&mut map, plan);
        let blend = Blend::default();
        let mut out = vec![0u64; plan.step_count()];
        for (&(from, _), e) in shape.ends.iter().zip(&shape.bytes) {
            if let End::Step(s) = from {
                out[s] = out[s].max(e.bytes(blend));
            }
        }
        out.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// The workflow to place: steps at their last width, edges at their
    /// estimated bytes.
    fn workflow(&self, plan: &Plan, need: impl Fn(&str) -> Resources) -> Option<Workflow> {
        let mut map = self.shapes.lock();
        let shape = Self::shape(&mut map, plan);
        let blend = Blend::default();
        let steps = (0..plan.step_count())
            .map(|s| Step {
                name: plan.step_name(s).to_string(),
                instances: shape.runs[s],
                need: need(plan.step_function(s)),
            })
            .collect();
        let edges = shape
            .ends
            .iter()
            .zip(&shape.bytes)
            .map(|(&(from, to), e)| Edge {
                from,
                to,
                bytes: e.bytes(blend),
            })
            .collect();
        Workflow::new(steps, edges).ok()
    }
}

impl Platform {
    /// The policy an invocation of `plan` is placed by: its workflow's
    /// `spec.placement`, else the platform's.
    pub(crate) fn placement_policy(&self, plan: &Plan) -> WorkflowPolicy {
        plan.placement()
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.cfg.workflow_placement)
    }

    /// Where the steps of invocation `id` of `plan` should run; `None` on
    /// one host, under `centralised`, or when nothing could be placed.
    pub(crate) fn place_steps(&self, plan: &Plan, id: &str) -> Option<StepHosts> {
        let view = self.cluster_view.get()?;
        let policy = match self.placement_policy(plan) {
            WorkflowPolicy::Centralised => return None,
            // A new draw per invocation, reproducible from its id.
            WorkflowPolicy::Random { seed } => WorkflowPolicy::Random {
                seed: seed ^ crate::retry::seed_of(id),
            },
            p => p,
        };
        let own = plan.functions();
        let own: Vec<&str> = own.iter().map(|f| &**f).collect();
        let hosts = view.workflow_hosts(&own)?;
        let need = |function: &str| {
            let r = self
                .registry
                .read()
                .functions
                .get(function)
                .map(|p| p.service.resources)
                .unwrap_or_default();
            view.instance_size(stratus_sandbox::Resources {
                millicores: r.millicores,
                memory_bytes: r.memory_bytes,
            })
        };
        let wf = self.estimates.workflow(plan, need)?;
        let p = place(&wf, &hosts, policy);
        let names: Vec<Arc<str>> = hosts
            .hosts()
            .iter()
            .map(|h| h.name.as_str().into())
            .collect();
        let placed = StepHosts::new(
            p.hosts
                .iter()
                .map(|per| {
                    per.iter()
                        .filter(|(h, _)| *h != hosts.control())
                        .flat_map(|&(h, n)| std::iter::repeat_n(names[h].clone(), n as usize))
                        .collect()
                })
                .collect(),
        );
        tracing::debug!(workflow = plan.name(), %policy, hosts = ?placed.hosts, "steps placed");
        placed.hosts.iter().any(|h| !h.is_empty()).then_some(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_dag::RunStatus;

    fn plan() -> Plan {
        let b = stratus_spec::parse(
            "t.yaml",
            "apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
  steps:
    - {name: a, function: f}
    - {name: b, function: g, inputs: [a]}
",
        )
        .unwrap();
        Plan::compile(&b.workflows[0]).unwrap()
    }

    fn run(step: &str, out: u64) -> RunRecord {
        RunRecord {
            step: step.into(),
            run: 0,
            function: String::new(),
            status: RunStatus::Succeeded,
            queued_us: 0,
            started_us: None,
            finished_us: None,
            cold_start_us: 0,
            instance: None,
            input_bytes: 0,
            output_bytes: out,
            error: None,
            attempt: 1,
            retries: Vec::new(),
        }
    }

    #[test]
    fn edges_start_at_the_prior_and_follow_observations() {
        let p = plan();
        let e = Estimates::default();
        let bytes = |e: &Estimates| -> Vec<u64> {
            let wf = e.workflow(&p, |_| Resources::new(100, 64 << 20)).unwrap();
            wf.edges().iter().map(|e| e.bytes).collect()
        };
        // input → a, a → b, b → output.
        assert_eq!(bytes(&e), vec![PRIOR_EDGE_BYTES; 3]);
        for _ in 0..10 {
            e.observe(&p, &[run("a", 5000), run("b", 7)], 10, 7);
        }
        assert_eq!(bytes(&e), vec![10, 5000, 7]);
        let wf = e.workflow(&p, |_| Resources::new(100, 64 << 20)).unwrap();
        assert_eq!(wf.steps()[0].instances, 1);
        // A map of three runs plans three instances.
        e.observe(&p, &[run("a", 1), run("a", 1), run("a", 1)], 0, 0);
        assert_eq!(
            e.workflow(&p, |_| Resources::new(100, 64 << 20))
                .unwrap()
                .steps()[0]
                .instances,
            3
        );
    }

    #[test]
    fn runs_take_their_step_hosts_in_turn() {
        let mut h = StepHosts::new(vec![vec!["x".into(), "y".into()], vec![]]);
        let first: Vec<_> = (0..3).map(|_| h.next(0)).collect();
        assert_eq!(
            first,
            vec![Some("x".into()), Some("y".into()), Some("x".into())]
        );
        assert_eq!(h.next(1), None);
        assert_eq!(h.next(2), None);
    }
}
