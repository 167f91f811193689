//! An invocation placed over several workers, run by all of them
//! ([`crate::whole::Spread`]): worker-side triggering across hosts.
//!
//! Every taking-part worker runs the whole [`crate::Execution`] on its own.
//! Run `i` of step `s` is owned by one of them ([`Spread::owner`]): the
//! owner calls it, and tells the other workers whose steps need it
//! ([`listeners`]) how it ended with a [`RunEvent`] (`POST`
//! [`EVENT_PATH`], worker to worker); they feed that to their execution
//! instead of calling ([`apply`]). An event
//! carries the output's bytes only to the workers that read them
//! ([`readers`]): the owners of the step's consumers, the one that
//! answers with the invocation's output ([`Spread::collector`]), and all
//! of them when a `when:` reads the output (each evaluates the condition
//! itself). The others get its length, and its items' count when `map:`
//! consumers split it, which is all their execution needs to fire the
//! same runs. Since every execution sees the outcome of every run its
//! steps depend on (the collector's sees all), they take the same
//! decisions on them (retries, catch steps, skips, failure), and a run is
//! known to all by (step, index, attempt) whatever order the events
//! arrive in.
//!
//! Pure: who owns and who reads what, the event's wire and its checks.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::exec::{Execution, RunError, RunId};
use crate::plan::{Mode, Plan, StepIdx};
use crate::split_json_array;
use crate::whole::{Spread, WorkflowWireError};

/// The route.
pub const EVENT_PATH: &str = "/v1/agent/workflows/event";

/// The most bytes an event's head may take.
pub const MAX_EVENT_HEAD: usize = 64 << 10;

/// How a run ended, from its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub invocation: String,
    pub step: u32,
    pub index: u32,
    pub attempt: u32,
    /// The owner's index among the peers.
    pub from: u32,
    /// How long the call took (µs).
    pub took_us: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The output is `len` bytes: they follow the head when `sent`; else
    /// `split` is its items' count where `map:` consumers split it.
    Succeeded {
        len: u64,
        sent: bool,
        split: Option<u32>,
    },
    Failed {
        message: String,
        status: u16,
        retryable: bool,
    },
    /// From the control plane: the invocation runs elsewhere (a peer
    /// failed); stop waiting for it.
    Abandoned { why: String },
}

impl Spread {
    /// The worker that calls run `index` of step `step`.
    pub fn owner(&self, step: StepIdx, index: usize) -> u32 {
        let o = &self.owners[step];
        o[index % o.len()]
    }

    /// Whether this worker calls run `index` of step `step`.
    pub fn owns(&self, step: StepIdx, index: usize) -> bool {
        self.owner(step, index) == self.me
    }

    /// The worker that answers with the invocation's output (the first
    /// owner of the output step), the run records of skipped steps and the
    /// breakdown.
    pub fn collector(&self, plan: &Plan) -> u32 {
        self.owners[plan.output][0]
    }
}

/// Per step, per peer: whether it is told how the step's runs end. A peer
/// is told what its own steps need, transitively: their sources, the
/// steps their conditions read, the step a catch step catches (and that
/// step's catch step's runs, which stand in for it); the collector is
/// told everything. The others' executions never learn of those runs, so
/// a peer is done when its own steps are settled
/// ([`Spread::own_settled`]), not when its execution is finished.
pub fn listeners(plan: &Plan, sp: &Spread) -> Vec<Vec<bool>> {
    let n = plan.steps.len();
    // needs[t]: the steps t's runs depend on (t included).
    let mut needs: Vec<Vec<bool>> = vec![vec![false; n]; n];
    for (t, need) in needs.iter_mut().enumerate() {
        let mut stack = vec![t];
        while let Some(u) = stack.pop() {
            if std::mem::replace(&mut need[u], true) {
                continue;
            }
            let us = &plan.steps[u];
            for src in &us.sources {
                if let crate::plan::Source::Step(v) = src {
                    stack.push(*v);
                }
            }
            stack.extend(us.when_refs.iter().map(|&(_, r)| r));
            stack.extend(us.catches);
            stack.extend(us.catch);
        }
    }
    let collector = sp.collector(plan) as usize;
    let mut out = vec![vec![false; sp.peers.len()]; n];
    for (s, row) in out.iter_mut().enumerate() {
        row[collector] = true;
        for (t, need) in needs.iter().enumerate() {
            if need[s] {
                for &p in &sp.owners[t] {
                    row[p as usize] = true;
                }
            }
        }
    }
    out
}

impl Spread {
    /// Whether every step this worker owns is settled in `exec`: it has
    /// nothing left to call.
    pub fn own_settled(&self, exec: &Execution) -> bool {
        (0..self.owners.len())
            .filter(|&s| self.owners[s].contains(&self.me))
            .all(|s| exec.step_settled(s))
    }
}

/// Per peer, whether it reads the bytes of an output of `step` (a catch
/// step's: of the step it stands in for); `all` when every peer does.
pub fn readers(plan: &Plan, sp: &Spread, step: StepIdx) -> Vec<bool> {
    let t = plan.steps[step].catches.unwrap_or(step);
    let ts = &plan.steps[t];
    // A catch run's output is not split where it is produced: whoever
    // maps over it splits it.
    let maps = ts
        .consumers
        .iter()
        .any(|(c, _)| plan.steps[*c].mode == Mode::Map);
    let everyone = !ts.watchers.is_empty() || (maps && t != step && !ts.produces_list());
    let mut r = vec![everyone; sp.peers.len()];
    for (c, _) in &ts.consumers {
        for &h in &sp.owners[*c] {
            r[h as usize] = true;
        }
    }
    if t == plan.output {
        r[sp.collector(plan) as usize] = true;
    }
    r
}

/// Per peer, whether it is sent the invocation's input: the owners of the
/// steps reading it, and every peer when a `when:` reads `$input` or a
/// `map:` splits it.
pub fn input_readers(plan: &Plan, sp: &Spread) -> Vec<bool> {
    let everyone = plan
        .input_consumers
        .iter()
        .any(|(c, _)| plan.steps[*c].mode == Mode::Map)
        || plan.steps.iter().any(|s| {
            s.when.as_ref().is_some_and(|w| {
                w.paths()
                    .iter()
                    .any(|p| p.root == stratus_spec::predicate::Root::Input)
            })
        });
    let mut r = vec![everyone; sp.peers.len()];
    for (c, _) in &plan.input_consumers {
        for &h in &sp.owners[*c] {
            r[h as usize] = true;
        }
    }
    r
}

/// How an output splits for `map:` consumers, which decides what a peer
/// that does not read it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// No `map:` consumer splits it: the length is enough.
    No,
    /// `map:` consumers split it into this many items.
    Items(u32),
    /// `map:` consumers would split it but it is not a JSON array (or has
    /// too many items): every peer must read it, to fail the same way.
    Unsplittable,
}

impl Split {
    /// The items' count a non-reader is told, if any.
    pub fn count(self) -> Option<u32> {
        match self {
            Split::Items(n) => Some(n),
            Split::No | Split::Unsplittable => None,
        }
    }

    /// Whether every peer must be sent the bytes.
    pub fn to_everyone(self) -> bool {
        self == Split::Unsplittable
    }
}

/// How `output` (of a run of `step`) splits for `step`'s `map:` consumers.
pub fn split_count(plan: &Plan, step: StepIdx, output: &Bytes) -> Split {
    let ps = &plan.steps[step];
    let maps = ps
        .consumers
        .iter()
        .any(|(c, _)| plan.steps[*c].mode == Mode::Map);
    if !maps || ps.produces_list() || ps.catches.is_some() {
        return Split::No;
    }
    match split_json_array(output) {
        Ok(items) => u32::try_from(items.len()).map_or(Split::Unsplittable, Split::Items),
        Err(_) => Split::Unsplittable,
    }
}

/// Feeds `run` (dispatched here, owned by another worker) the outcome its
/// owner reported, `bytes` the output when sent; returns the runs that
/// became ready.
pub fn apply(
    exec: &mut Execution,
    run: RunId,
    outcome: &Outcome,
    bytes: Bytes,
    now: u64,
) -> Vec<crate::Dispatch> {
    match outcome {
        Outcome::Succeeded { sent: true, .. } => exec.finish(run, Ok(bytes), now),
        Outcome::Succeeded {
            len,
            split: Some(n),
            ..
        } => {
            let more = exec.finish_split(run, vec![Bytes::new(); *n as usize], now);
            exec.set_run_bytes(run, None, Some(*len));
            more
        }
        Outcome::Succeeded { len, .. } => {
            let more = exec.finish(run, Ok(Bytes::new()), now);
            exec.set_run_bytes(run, None, Some(*len));
            more
        }
        Outcome::Failed {
            message,
            status,
            retryable,
        } => exec.fail_run(
            run,
            RunError {
                message: message.clone(),
                status: *status,
                retryable: *retryable,
            },
            now,
        ),
        Outcome::Abandoned { .. } => Vec::new(),
    }
}

/// An event's body: `[u32 length][JSON head][output bytes when sent]`.
pub fn format_event(ev: &RunEvent, bytes: Option<&Bytes>) -> Vec<Bytes> {
    let json = serde_json::to_vec(ev).expect("plain data");
    let mut first = BytesMut::with_capacity(4 + json.len());
    first.put_u32(json.len() as u32);
    first.extend_from_slice(&json);
    let mut out = vec![first.freeze()];
    if let Some(b) = bytes.filter(|b| !b.is_empty()) {
        out.push(b.clone());
    }
    out
}

/// An event body, checked: its head within [`MAX_EVENT_HEAD`], and the
/// bytes after it exactly the output's when sent, none otherwise.
pub fn parse_event(body: &Bytes) -> Result<(RunEvent, Bytes), WorkflowWireError> {
    let Some(len) = body.get(..4) else {
        return Err(WorkflowWireError::Short(body.len()));
    };
    let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
    if len > MAX_EVENT_HEAD || 4 + len > body.len() {
        return Err(WorkflowWireError::HeadLength {
            len,
            max: MAX_EVENT_HEAD,
        });
    }
    let ev: RunEvent = serde_json::from_slice(&body[4..4 + len])
        .map_err(|e| WorkflowWireError::Head(e.to_string()))?;
    let rest = body.slice(4 + len..);
    let want = match &ev.outcome {
        Outcome::Succeeded {
            len, sent: true, ..
        } => *len,
        _ => 0,
    };
    if want != rest.len() as u64 {
        return Err(WorkflowWireError::Items {
            items: want,
            body: rest.len(),
        });
    }
    Ok((ev, rest))
}

#[cfg(test)]
mod tests;
