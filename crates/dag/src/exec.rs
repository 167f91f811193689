//! One invocation's state machine.
//!
//! ```text
//!   start(input) ──► items delivered to consumers of $input
//!        │
//!        ▼
//!   step trigger holds? ──yes──► Dispatch(run) ──► driver calls the function
//!        ▲                                              │
//!        └──── items delivered to consumers ◄── finish(run, output)
//! ```
//! The invocation's output is ready when the output step completes (or is
//! skipped: see [`Execution::output_skipped`]); the execution is finished
//! when, in addition, no dispatched run is outstanding. Conditions and skips
//! are in the `branch` submodule; retries, catch steps and the run-level
//! timeout in `retry`.

use std::sync::Arc;

use bytes::Bytes;

use crate::payload::{split_json_array, Payload};
use crate::plan::{Mode, Plan, Source, StepIdx};
use crate::record::{Breakdown, RunRecord, RunStatus};

pub use retry::{backoff_us, RunError};

/// Index of a run within its execution.
pub type RunId = usize;

/// A run the driver must execute: call `function` with `input`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub run: RunId,
    pub step: StepIdx,
    pub function: Arc<str>,
    pub input: Payload,
    /// Which try of `run` this is: 1 for the first. A retry keeps its `run`
    /// (and so its idempotency key).
    pub attempt: u32,
    /// Do not call before this time (µs, the backoff of a retry); 0 for
    /// a first try.
    pub not_before_us: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExecStatus {
    Running,
    Succeeded(Payload),
    Failed(String),
}

#[derive(Debug, Default)]
struct Slot {
    /// Items by index (a list source's items may arrive out of order).
    items: Vec<Option<Bytes>>,
    received: usize,
    total: Option<usize>,
    /// The source was skipped: complete, with no items.
    skipped: bool,
}

impl Slot {
    fn complete(&self) -> bool {
        self.total == Some(self.received)
    }
}

#[derive(Debug, Default)]
struct StepState {
    slots: Vec<Slot>,
    /// Items in arrival order not yet given to a run (firstOf, batch).
    pending: Vec<Bytes>,
    /// Producer run of the most recent arrival (the critical-path predecessor).
    last_pred: Option<RunId>,
    fired: usize,
    completed: usize,
    /// No more runs will fire.
    closed: bool,
    done: bool,
    /// Its condition is not yet evaluated: arrivals are held, nothing fires.
    waiting: bool,
    /// Map items held while `waiting`, as (index, item).
    held: Vec<(usize, Bytes)>,
    /// Skipped (also `closed` and `done`, with no runs).
    skipped: bool,
    /// Outputs by run index.
    outputs: Vec<Option<Bytes>>,
    /// Its output's elements, split where it was produced
    /// ([`Execution::finish_split`]): what its `map:` consumers take.
    split: Option<Vec<Bytes>>,
    runs: Vec<RunId>,
}

struct RunState {
    step: StepIdx,
    index: usize,
    pred: Option<RunId>,
    record: RunRecord,
    /// Only for runs of steps with `retry:` and of catch steps (boxed: the
    /// common run stays small).
    extra: Option<Box<RunExtra>>,
}

#[derive(Default)]
struct RunExtra {
    /// The input, kept for retries (only when the step has `retry:`).
    input: Option<Payload>,
    /// A catch step's run: the (step, run index) whose output it stands in for.
    stands_for: Option<(StepIdx, usize)>,
}

pub struct Execution {
    plan: Arc<Plan>,
    steps: Vec<StepState>,
    runs: Vec<RunState>,
    status: ExecStatus,
    outstanding: usize,
    output_at: Option<u64>,
    /// Most items one `map` may split its input into.
    max_map_width: usize,
    /// The execution failed because a map was wider than `max_map_width`.
    too_wide: bool,
    /// The workflow input, for conditions that read `$input`.
    input: Bytes,
    /// The output step was skipped: the result is JSON `null`.
    output_skipped: bool,
    /// Seeds the jitter of retry backoffs.
    seed: u64,
    /// The run-level timeout ended the execution.
    timed_out: bool,
}

impl Execution {
    pub fn new(plan: Arc<Plan>) -> Execution {
        let steps = plan
            .steps
            .iter()
            .map(|s| StepState {
                slots: s.sources.iter().map(|_| Slot::default()).collect(),
                waiting: s.when.is_some(),
                ..StepState::default()
            })
            .collect();
        Execution {
            plan,
            steps,
            runs: Vec::new(),
            status: ExecStatus::Running,
            outstanding: 0,
            output_at: None,
            max_map_width: usize::MAX,
            too_wide: false,
            input: Bytes::new(),
            output_skipped: false,
            seed: 0,
            timed_out: false,
        }
    }

    /// Caps how many items a `map` may split one input into: a wider one
    /// fails the execution before any of its runs is dispatched (see
    /// [`Execution::map_too_wide`]). Unlimited by default.
    pub fn set_max_map_width(&mut self, n: usize) {
        self.max_map_width = n;
    }

    /// True when the execution failed because a map was too wide: the
    /// caller's input was too large, not a function's fault.
    pub fn map_too_wide(&self) -> bool {
        self.too_wide
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    pub fn status(&self) -> &ExecStatus {
        &self.status
    }

    /// True once the result is known and no dispatched run is outstanding.
    pub fn is_finished(&self) -> bool {
        !matches!(self.status, ExecStatus::Running) && self.outstanding == 0
    }

    /// Feeds the workflow input; returns the first runs to dispatch.
    pub fn start(&mut self, input: Bytes, now: u64) -> Vec<Dispatch> {
        let mut out = Vec::new();
        self.input = input.clone();
        // Conditions that read only $input are decided before anything runs.
        for c in 0..self.plan.steps.len() {
            self.check_gate(c, now, &mut out);
        }
        let consumers = self.plan.input_consumers.clone();
        for (c, slot) in consumers {
            self.deliver_whole(c, slot, input.clone(), None, now, &mut out);
        }
        out
    }

    /// The driver got an instance slot for `run` and is sending the request.
    pub fn started(&mut self, run: RunId, now: u64, cold_start_us: u64, instance: &str) {
        let r = &mut self.runs[run].record;
        r.started_us = Some(now);
        r.cold_start_us = cold_start_us;
        r.instance = Some(instance.to_string());
        r.status = RunStatus::Running;
    }

    /// A run finished; returns the runs that became ready (or, for a failed
    /// run of a step with `retry:`, the same run again). An error here is
    /// retryable with status 502; [`Execution::fail_run`] says which.
    pub fn finish(&mut self, run: RunId, result: Result<Bytes, String>, now: u64) -> Vec<Dispatch> {
        match result {
            Ok(bytes) => self.succeed_run(run, bytes, now),
            Err(e) => self.fail_run(run, RunError::retryable(e, 502), now),
        }
    }

    /// Marks `run` finished at `now`; false (nothing to do) for a duplicate
    /// report or once the execution has ended, which abandons the run.
    fn close_run(&mut self, run: RunId, error: Option<&str>, now: u64) -> bool {
        let rec = &mut self.runs[run].record;
        if rec.finished_us.is_some() {
            return false; // duplicate report: ignore
        }
        self.outstanding -= 1;
        rec.finished_us = Some(now);
        if rec.started_us.is_none() {
            rec.started_us = Some(now);
        }
        if !matches!(self.status, ExecStatus::Running) {
            rec.status = RunStatus::Abandoned;
            rec.error = error.map(str::to_string);
            return false;
        }
        true
    }

    /// Run `run` succeeded with a JSON array that was split where it was
    /// produced into `items` (kept there; see
    /// [`Plan::output_split_by_maps`]): its step's `map:` consumers take
    /// them instead of splitting its output. The run's output is recorded
    /// as empty; [`Execution::set_run_bytes`] gives its true size.
    pub fn finish_split(&mut self, run: RunId, items: Vec<Bytes>, now: u64) -> Vec<Dispatch> {
        if let Some(rs) = self.runs.get(run) {
            self.steps[rs.step].split = Some(items);
        }
        self.succeed_run(run, Bytes::new(), now)
    }

    /// Corrects run `run`'s recorded byte counts where its payloads were
    /// stand-ins for data kept elsewhere (items on a worker).
    pub fn set_run_bytes(&mut self, run: RunId, input: Option<u64>, output: Option<u64>) {
        if let Some(rs) = self.runs.get_mut(run) {
            if let Some(n) = input {
                rs.record.input_bytes = n;
            }
            if let Some(n) = output {
                rs.record.output_bytes = n;
            }
        }
    }

    fn succeed_run(&mut self, run: RunId, bytes: Bytes, now: u64) -> Vec<Dispatch> {
        let mut out = Vec::new();
        if !self.close_run(run, None, now) {
            return out;
        }
        let rs = &mut self.runs[run];
        rs.record.status = RunStatus::Succeeded;
        rs.record.output_bytes = bytes.len() as u64;
        let stands_for = rs.extra.take().and_then(|e| e.stands_for);
        let (step, index) = match stands_for {
            Some(orig) => {
                // A catch step's run: it completed; its output is the
                // failed run's.
                self.steps[rs.step].completed += 1;
                orig
            }
            None => (rs.step, rs.index),
        };
        self.publish(step, index, run, bytes, now, &mut out);
        out
    }

    /// Run `index` of `step` produced `bytes` (itself, or through a catch
    /// step's run `run`).
    fn publish(
        &mut self,
        step: StepIdx,
        index: usize,
        run: RunId,
        bytes: Bytes,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        let st = &mut self.steps[step];
        st.completed += 1;
        if st.outputs.len() <= index {
            st.outputs.resize(index + 1, None);
        }
        st.outputs[index] = Some(bytes.clone());
        if self.plan.steps[step].produces_list() {
            for (c, slot) in self.plan.steps[step].consumers.clone() {
                self.deliver_item(c, slot, index, bytes.clone(), Some(run), now, out);
            }
        }
        self.check_done(step, Some(run), now, out);
    }

    fn fail(&mut self, msg: String) {
        self.status = ExecStatus::Failed(msg);
        for r in &mut self.runs {
            if r.record.finished_us.is_none() && r.record.status == RunStatus::Queued {
                r.record.status = RunStatus::Abandoned;
            }
        }
    }

    /// A step that closed and whose runs all completed is done: publish its output.
    fn check_done(
        &mut self,
        step: StepIdx,
        pred: Option<RunId>,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        let st = &mut self.steps[step];
        if st.done || !st.closed || st.completed < st.fired {
            return;
        }
        st.done = true;
        let plan = self.plan.clone();
        let ps = &plan.steps[step];
        if ps.produces_list() {
            let total = st.fired;
            for &(c, slot) in &ps.consumers {
                self.set_total(c, slot, total, now, out);
            }
        } else if let Some(Some(b)) = st.outputs.first().cloned() {
            for &(c, slot) in &ps.consumers {
                self.deliver_whole(c, slot, b.clone(), pred, now, out);
            }
        }
        if step == self.plan.output && matches!(self.status, ExecStatus::Running) {
            let st = &self.steps[step];
            let outputs: Vec<Bytes> = st
                .outputs
                .iter()
                .map(|o| o.clone().unwrap_or_default())
                .collect();
            let payload = if ps.produces_list() {
                Payload::Framed {
                    items: outputs,
                    format: stratus_spec::InputFormat::Json,
                }
            } else {
                Payload::Raw(outputs.into_iter().next().unwrap_or_default())
            };
            self.output_at = Some(now);
            self.status = ExecStatus::Succeeded(payload);
        }
        for w in plan.steps[step].watchers.clone() {
            self.check_gate(w, now, out);
        }
    }

    /// Delivers a single-item output (or the workflow input) to one consumer
    /// slot; a `map` consumer splits it into items.
    fn deliver_whole(
        &mut self,
        c: StepIdx,
        slot: usize,
        b: Bytes,
        pred: Option<RunId>,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        if self.steps[c].closed {
            return; // skipped, or firstOf already fired
        }
        if self.plan.steps[c].mode == Mode::Map {
            let split = match self.plan.steps[c].sources[slot] {
                Source::Step(p) => self.steps[p].split.clone(),
                Source::Input => None,
            };
            match split.map_or_else(|| split_json_array(&b), Ok) {
                Ok(items) if items.len() > self.max_map_width => {
                    let src = self.source_name(c, slot);
                    self.too_wide = true;
                    self.fail(format!(
                        "step '{}': map over {src} has {} items, more than the limit of {} items per map",
                        self.plan.steps[c].name,
                        items.len(),
                        self.max_map_width
                    ));
                }
                Ok(items) => {
                    let n = items.len();
                    for (i, it) in items.into_iter().enumerate() {
                        self.deliver_item(c, slot, i, it, pred, now, out);
                    }
                    self.set_total(c, slot, n, now, out);
                }
                Err(e) => {
                    let src = self.source_name(c, slot);
                    self.fail(format!(
                        "step '{}': map over {src}: {e}",
                        self.plan.steps[c].name
                    ));
                }
            }
        } else {
            self.deliver_item(c, slot, 0, b, pred, now, out);
            self.set_total(c, slot, 1, now, out);
        }
    }

    fn source_name(&self, c: StepIdx, slot: usize) -> String {
        match self.plan.steps[c].sources[slot] {
            Source::Input => "$input".to_string(),
            Source::Step(p) => format!("'{}'", self.plan.steps[p].name),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_item(
        &mut self,
        c: StepIdx,
        slot: usize,
        index: usize,
        b: Bytes,
        pred: Option<RunId>,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        if !matches!(self.status, ExecStatus::Running) {
            return;
        }
        let mode = self.plan.steps[c].mode;
        let st = &mut self.steps[c];
        if st.closed {
            return; // firstOf already fired: late items are dropped
        }
        st.last_pred = pred;
        let s = &mut st.slots[slot];
        if s.items.len() <= index {
            s.items.resize(index + 1, None);
        }
        s.items[index] = Some(b.clone());
        s.received += 1;
        if st.waiting {
            // Held until the condition is decided.
            match mode {
                Mode::Map => st.held.push((index, b)),
                Mode::FirstOf(_) | Mode::Batch(_) => st.pending.push(b),
                Mode::AllOf => {}
            }
            return;
        }
        match mode {
            Mode::Map => self.fire(c, index, vec![b], pred, now, out),
            Mode::FirstOf(k) => {
                st.pending.push(b);
                if st.pending.len() >= k {
                    let items = std::mem::take(&mut st.pending);
                    st.closed = true;
                    self.fire(c, 0, items, pred, now, out);
                }
            }
            Mode::Batch(n) => {
                st.pending.push(b);
                if st.pending.len() >= n {
                    let items = std::mem::take(&mut st.pending);
                    let idx = st.fired;
                    self.fire(c, idx, items, pred, now, out);
                }
            }
            Mode::AllOf => {}
        }
    }

    /// A source slot learnt how many items it will get in all.
    fn set_total(
        &mut self,
        c: StepIdx,
        slot: usize,
        total: usize,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        if !matches!(self.status, ExecStatus::Running) {
            return;
        }
        self.steps[c].slots[slot].total = Some(total);
        self.try_complete(c, now, out);
    }

    /// Every input of `c` is complete: fire what the trigger says, skip the
    /// step if every input was skipped, or wait for its condition.
    fn try_complete(&mut self, c: StepIdx, now: u64, out: &mut Vec<Dispatch>) {
        if !matches!(self.status, ExecStatus::Running) {
            return;
        }
        let st = &mut self.steps[c];
        if st.closed || !st.slots.iter().all(Slot::complete) {
            return;
        }
        if st.slots.iter().all(|s| s.skipped) {
            self.skip(c, "every input was skipped", now, out);
            return;
        }
        if st.waiting {
            return;
        }
        let pred = st.last_pred;
        match self.plan.steps[c].mode {
            Mode::AllOf => {
                let items = st
                    .slots
                    .iter_mut()
                    .flat_map(|s| s.items.drain(..).map(Option::unwrap_or_default))
                    .collect();
                st.closed = true;
                self.fire(c, 0, items, pred, now, out);
            }
            Mode::FirstOf(_) if !st.pending.is_empty() && st.slots.iter().any(|s| s.skipped) => {
                // Fewer than k items, because inputs were skipped: fire with
                // what arrived rather than never.
                let items = std::mem::take(&mut st.pending);
                st.closed = true;
                self.fire(c, 0, items, pred, now, out);
            }
            Mode::FirstOf(k) => {
                let got = st.pending.len();
                let name = self.plan.steps[c].name.clone();
                self.fail(format!("step '{name}': firstOf {k} can never fire: its inputs produced only {got} item(s)"));
            }
            Mode::Batch(_) => {
                st.closed = true;
                if !st.pending.is_empty() {
                    let items = std::mem::take(&mut st.pending);
                    let idx = st.fired;
                    self.fire(c, idx, items, pred, now, out);
                }
                self.check_done(c, pred, now, out);
            }
            Mode::Map => {
                st.closed = true;
                self.check_done(c, pred, now, out);
            }
        }
    }

    fn fire(
        &mut self,
        c: StepIdx,
        index: usize,
        items: Vec<Bytes>,
        pred: Option<RunId>,
        now: u64,
        out: &mut Vec<Dispatch>,
    ) {
        let ps = &self.plan.steps[c];
        let input = if self.plan.raw_input[c] && items.len() == 1 {
            Payload::Raw(items.into_iter().next().unwrap_or_default())
        } else {
            Payload::Framed {
                items,
                format: ps.format,
            }
        };
        let run = self.runs.len();
        self.runs.push(RunState {
            step: c,
            index,
            pred,
            record: RunRecord {
                step: ps.name.to_string(),
                run: index as u32,
                function: ps.function.to_string(),
                status: RunStatus::Queued,
                queued_us: now,
                started_us: None,
                finished_us: None,
                cold_start_us: 0,
                instance: None,
                input_bytes: input.len() as u64,
                output_bytes: 0,
                error: None,
                attempt: 1,
                retries: Vec::new(),
            },
            // Kept for a retry only: no copy on the path without one.
            extra: ps.retry.map(|_| {
                Box::new(RunExtra {
                    input: Some(input.clone()),
                    stands_for: None,
                })
            }),
        });
        let st = &mut self.steps[c];
        st.fired += 1;
        st.runs.push(run);
        self.outstanding += 1;
        out.push(Dispatch {
            run,
            step: c,
            function: ps.function.clone(),
            input,
            attempt: 1,
            not_before_us: 0,
        });
    }

    /// Whether step `s` will dispatch no more runs and has none
    /// outstanding: it is done (or skipped); a catch step, once the step
    /// it catches is.
    pub fn step_settled(&self, s: StepIdx) -> bool {
        match self.plan.steps[s].catches {
            Some(x) => self.steps[x].done && self.steps[s].completed >= self.steps[s].fired,
            None => self.steps[s].done,
        }
    }

    /// Run `run`'s index within its step (its map branch or batch number;
    /// a catch step's run: the failed run's).
    pub fn run_index(&self, run: RunId) -> Option<usize> {
        self.runs.get(run).map(|r| r.index)
    }

    /// Run records, in dispatch order.
    pub fn records(&self) -> Vec<RunRecord> {
        self.runs.iter().map(|r| r.record.clone()).collect()
    }

    /// Splits `total_us` along the critical path: from the output step's last
    /// run back through the runs whose completion triggered each next one.
    pub fn breakdown(&self, total_us: u64) -> Breakdown {
        let mut b = Breakdown {
            total_us,
            ..Breakdown::default()
        };
        let out = &self.steps[self.plan.output];
        let mut cur = out
            .runs
            .iter()
            .copied()
            .filter(|&r| self.runs[r].record.finished_us.is_some())
            .max_by_key(|&r| self.runs[r].record.finished_us);
        if !matches!(self.status, ExecStatus::Succeeded(_)) || self.output_skipped {
            // Failed, or the output skipped: follow the last run that finished.
            cur = (0..self.runs.len())
                .filter(|&r| self.runs[r].record.finished_us.is_some())
                .max_by_key(|&r| self.runs[r].record.finished_us);
        }
        while let Some(r) = cur {
            let rec = &self.runs[r].record;
            b.queue_us += rec.queue_us();
            b.cold_start_us += rec.cold_start_us;
            b.exec_us += rec.exec_us();
            // Earlier tries: their queue, cold start and exec, and the
            // backoff between tries, which counts as queueing.
            let mut due = rec.queued_us;
            for a in rec.retries.iter().rev() {
                let (s, f) = (
                    a.started_us.unwrap_or(a.queued_us),
                    a.finished_us.unwrap_or(due),
                );
                b.cold_start_us += a.cold_start_us;
                b.exec_us += f.saturating_sub(s);
                b.queue_us += s
                    .saturating_sub(a.queued_us)
                    .saturating_sub(a.cold_start_us)
                    + due.saturating_sub(f);
                due = a.queued_us;
            }
            cur = self.runs[r].pred;
        }
        let accounted = b.queue_us + b.cold_start_us + b.exec_us;
        b.overhead_us = total_us.saturating_sub(accounted);
        b
    }

    /// When the output became ready (µs), if it has.
    pub fn output_at(&self) -> Option<u64> {
        self.output_at
    }
}

mod branch;
mod retry;
#[cfg(test)]
mod tests;
