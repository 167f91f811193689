//! Compiling a validated workflow into an index-based plan.

use std::collections::HashMap;
use std::sync::Arc;

use stratus_spec::predicate::{Expr, Root};
use stratus_spec::{InputFormat, InputRef, RetryPolicy, Trigger, Workflow};

pub type StepIdx = usize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("workflow '{workflow}' step '{step}': unknown input step '{input}'")]
    UnknownStep {
        workflow: String,
        step: String,
        input: String,
    },
    #[error("workflow '{workflow}': output step '{output}' does not exist")]
    UnknownOutput { workflow: String, output: String },
    #[error("workflow '{workflow}' has no steps")]
    Empty { workflow: String },
}

/// How a step turns arriving items into runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    AllOf,
    FirstOf(usize),
    Batch(usize),
    Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Input,
    Step(StepIdx),
}

#[derive(Debug)]
pub(crate) struct PlanStep {
    pub name: Arc<str>,
    pub function: Arc<str>,
    pub sources: Vec<Source>,
    pub mode: Mode,
    pub format: InputFormat,
    /// (consumer, slot in the consumer's sources)
    pub consumers: Vec<(StepIdx, usize)>,
    /// The step's condition (`when:`), if any.
    pub when: Option<Expr>,
    /// The steps the condition reads, by name: it is evaluated once they
    /// are all done (or skipped).
    pub when_refs: Vec<(Arc<str>, StepIdx)>,
    /// Conditional steps whose condition reads this step's output.
    pub watchers: Vec<StepIdx>,
    /// `retry:`; `None` is one try.
    pub retry: Option<RetryPolicy>,
    /// `catch:`: the step that runs when a run of this one fails for good.
    pub catch: Option<StepIdx>,
    /// This is the catch step of that step: it has no sources and runs
    /// only with the error of a failed run.
    pub catches: Option<StepIdx>,
}

impl PlanStep {
    pub fn produces_list(&self) -> bool {
        matches!(self.mode, Mode::Map | Mode::Batch(_))
    }
}

/// A workflow compiled for execution. Cheap to share between invocations.
#[derive(Debug)]
pub struct Plan {
    pub(crate) name: Arc<str>,
    pub(crate) steps: Vec<PlanStep>,
    pub(crate) output: StepIdx,
    pub(crate) input_consumers: Vec<(StepIdx, usize)>,
    /// Per step: true when its runs receive one unframed item.
    pub(crate) raw_input: Vec<bool>,
    /// `spec.timeoutSeconds`, in µs.
    pub(crate) timeout_us: Option<u64>,
    /// `spec.placement`, as the spec checked it.
    pub(crate) placement: Option<Arc<str>>,
    /// `spec.workerParts`.
    pub(crate) worker_parts: Option<bool>,
    /// `spec.keepInlineBelow`.
    pub(crate) keep_inline_below: Option<u64>,
}

impl Plan {
    /// Compiles a workflow already checked by `stratus_spec` (cycles are
    /// rejected there; a cyclic plan would simply never fire the cycle).
    pub fn compile(wf: &Workflow) -> Result<Plan, PlanError> {
        if wf.steps.is_empty() {
            return Err(PlanError::Empty {
                workflow: wf.name.clone(),
            });
        }
        let index: HashMap<&str, StepIdx> = wf
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut steps: Vec<PlanStep> = Vec::with_capacity(wf.steps.len());
        let handlers: std::collections::HashSet<&str> =
            wf.steps.iter().filter_map(|s| s.catch.as_deref()).collect();
        for s in &wf.steps {
            let mut when_refs: Vec<(Arc<str>, StepIdx)> = Vec::new();
            for p in s.when.iter().flat_map(Expr::paths) {
                let Root::Step(name) = &p.root else { continue };
                let Some(&i) = index.get(name.as_str()) else {
                    return Err(PlanError::UnknownStep {
                        workflow: wf.name.clone(),
                        step: s.name.clone(),
                        input: name.clone(),
                    });
                };
                if !when_refs.iter().any(|(_, j)| *j == i) {
                    when_refs.push((name.as_str().into(), i));
                }
            }
            let mut sources = Vec::new();
            let handler = handlers.contains(s.name.as_str());
            // A catch step's only input is the error it handles.
            for r in if handler { Vec::new() } else { s.sources() } {
                sources.push(match r {
                    InputRef::WorkflowInput => Source::Input,
                    InputRef::Step(name) => match index.get(name.as_str()) {
                        Some(&i) => Source::Step(i),
                        None => {
                            return Err(PlanError::UnknownStep {
                                workflow: wf.name.clone(),
                                step: s.name.clone(),
                                input: name,
                            })
                        }
                    },
                });
            }
            let mode = if s.map.is_some() {
                Mode::Map
            } else {
                match s.trigger {
                    Trigger::AllOf => Mode::AllOf,
                    Trigger::FirstOf(k) => Mode::FirstOf(k.max(1) as usize),
                    Trigger::Batch(n) => Mode::Batch(n.max(1) as usize),
                }
            };
            steps.push(PlanStep {
                name: s.name.as_str().into(),
                function: s.function.as_str().into(),
                sources,
                mode,
                format: s.input_format,
                consumers: Vec::new(),
                when: s.when.clone(),
                when_refs,
                watchers: Vec::new(),
                retry: s.retry,
                catch: None,
                catches: None,
            });
        }
        for c in 0..steps.len() {
            for k in 0..steps[c].when_refs.len() {
                let p = steps[c].when_refs[k].1;
                steps[p].watchers.push(c);
            }
        }
        for (a, s) in wf.steps.iter().enumerate() {
            let Some(h) = s.catch.as_deref() else {
                continue;
            };
            let &h = index.get(h).ok_or_else(|| PlanError::UnknownStep {
                workflow: wf.name.clone(),
                step: s.name.clone(),
                input: h.to_string(),
            })?;
            steps[a].catch = Some(h);
            steps[h].catches = Some(a);
        }
        let mut input_consumers = Vec::new();
        for c in 0..steps.len() {
            for slot in 0..steps[c].sources.len() {
                match steps[c].sources[slot] {
                    Source::Input => input_consumers.push((c, slot)),
                    Source::Step(p) => steps[p].consumers.push((c, slot)),
                }
            }
        }
        let output = match &wf.output {
            Some(o) => *index
                .get(o.as_str())
                .ok_or_else(|| PlanError::UnknownOutput {
                    workflow: wf.name.clone(),
                    output: o.clone(),
                })?,
            // The spec validator guarantees a single sink when `output` is absent.
            // (A step read only by conditions is not a sink.)
            None => steps
                .iter()
                .position(|s| {
                    s.consumers.is_empty() && s.watchers.is_empty() && s.catches.is_none()
                })
                .unwrap_or(steps.len() - 1),
        };
        let raw_input = steps
            .iter()
            .map(|s| match s.mode {
                // A catch step's input: the error JSON, as is.
                _ if s.catches.is_some() => true,
                Mode::Map | Mode::FirstOf(1) | Mode::Batch(1) => true,
                Mode::AllOf => {
                    s.sources.len() == 1
                        && match s.sources[0] {
                            Source::Input => true,
                            Source::Step(p) => !steps[p].produces_list(),
                        }
                }
                _ => false,
            })
            .collect();
        Ok(Plan {
            name: wf.name.as_str().into(),
            steps,
            output,
            input_consumers,
            raw_input,
            timeout_us: wf.timeout_seconds.map(|t| t.saturating_mul(1_000_000)),
            placement: wf.placement.as_deref().map(Arc::from),
            worker_parts: wf.worker_parts,
            keep_inline_below: wf.keep_inline_below,
        })
    }

    /// A one-step plan: invoking a function directly uses the same engine and
    /// the same record format as a workflow.
    pub fn single(function: &str) -> Plan {
        let f: Arc<str> = function.into();
        Plan {
            name: f.clone(),
            steps: vec![PlanStep {
                name: f.clone(),
                function: f,
                sources: vec![Source::Input],
                mode: Mode::AllOf,
                format: InputFormat::Json,
                consumers: Vec::new(),
                when: None,
                when_refs: Vec::new(),
                watchers: Vec::new(),
                retry: None,
                catch: None,
                catches: None,
            }],
            output: 0,
            input_consumers: vec![(0, 0)],
            raw_input: vec![true],
            timeout_us: None,
            placement: None,
            worker_parts: None,
            keep_inline_below: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub fn step_name(&self, s: StepIdx) -> &str {
        &self.steps[s].name
    }

    pub fn step_function(&self, s: StepIdx) -> &Arc<str> {
        &self.steps[s].function
    }

    /// The run-level deadline (`spec.timeoutSeconds`), in µs since the
    /// invocation arrived.
    pub fn timeout_us(&self) -> Option<u64> {
        self.timeout_us
    }

    /// Where step `s`'s inputs come from: `None` is the invocation's input,
    /// `Some(step)` another step's output (a catch step has none).
    pub fn step_sources(&self, s: StepIdx) -> impl Iterator<Item = Option<StepIdx>> + '_ {
        self.steps[s].sources.iter().map(|src| match src {
            Source::Input => None,
            Source::Step(i) => Some(*i),
        })
    }

    /// Whether step `s`'s runs' outputs only ever go on, as they are, as
    /// items of other steps' inputs: not the invocation's output, read by
    /// no `when:`, and not split by a `map:` consumer (a map over a list
    /// step takes its items as they are). Such an output may stay where it
    /// was produced (a catch step's output counts as the step it catches
    /// for).
    pub fn output_passed_on(&self, s: StepIdx) -> bool {
        let t = self.steps[s].catches.unwrap_or(s);
        let st = &self.steps[t];
        t != self.output
            && st.watchers.is_empty()
            && (st.produces_list()
                || st
                    .consumers
                    .iter()
                    .all(|(c, _)| self.steps[*c].mode != Mode::Map))
    }

    /// The one step that maps over step `s`'s output and takes nothing
    /// else, with no condition: its runs may start on the elements as
    /// `s`'s reply arrives (each run is sent exactly its element), if
    /// every consumer of `s` is that one.
    pub fn map_on_arrival(&self, s: StepIdx) -> Option<StepIdx> {
        if !self.output_split_by_maps(s) {
            return None;
        }
        let [(m, _)] = self.steps[s].consumers[..] else {
            return None;
        };
        let ms = &self.steps[m];
        (ms.mode == Mode::Map && ms.sources == [Source::Step(s)] && ms.when.is_none()).then_some(m)
    }

    /// Whether step `s`'s output is only ever split by `map:` consumers
    /// (every consumer maps over it; not the invocation's output, read by
    /// no `when:`, one item, not a catch step): it may be split where it
    /// is produced and its elements kept there
    /// ([`crate::Execution::finish_split`]).
    pub fn output_split_by_maps(&self, s: StepIdx) -> bool {
        let st = &self.steps[s];
        s != self.output
            && st.catches.is_none()
            && st.watchers.is_empty()
            && !st.produces_list()
            && !st.consumers.is_empty()
            && st
                .consumers
                .iter()
                .all(|(c, _)| self.steps[*c].mode == Mode::Map)
    }

    /// The step whose output is the invocation's.
    pub fn output_step(&self) -> StepIdx {
        self.output
    }

    /// The workflow's `spec.placement` (a cluster's workflow placement
    /// policy), if it names one.
    pub fn placement(&self) -> Option<&str> {
        self.placement.as_deref()
    }

    /// The workflow's `spec.workerParts`, if it says.
    pub fn worker_parts(&self) -> Option<bool> {
        self.worker_parts
    }

    /// The workflow's `spec.keepInlineBelow`, if it says.
    pub fn keep_inline_below(&self) -> Option<u64> {
        self.keep_inline_below
    }

    /// Whether step `s` is a `map:` (a run per item of its source).
    pub fn step_maps(&self, s: StepIdx) -> bool {
        self.steps[s].mode == Mode::Map
    }

    /// Distinct functions the plan calls.
    pub fn functions(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.steps.iter().map(|s| s.function.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}
