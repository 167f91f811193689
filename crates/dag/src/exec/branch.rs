//! Conditions and skips.
//!
//! ```text
//!   step with when: ── waiting (arrivals held) ──► every step it reads done?
//!        │                                              │ evaluate
//!        │                          true ◄──────────────┴──────────► false
//!        │                            │                                 │
//!        │              open: fire what the held items allow        skipped
//!        ▼                                                              │
//!   every input skipped ────────────────────────────────────────────► skipped
//!                                                                       │
//!   consumers: that input counts as complete with no items ◄────────────┘
//! ```
//! Join rules once inputs are skipped: `allOf` fires over the inputs that ran
//! (a skipped input adds no item; framing is unchanged); `firstOf: k` counts
//! items from the inputs that ran and, when the inputs end with fewer than k
//! because some were skipped, fires with those that arrived; `batch` sends a
//! final partial batch as usual; a `map` over a skipped step is skipped. A
//! step all of whose inputs were skipped is skipped. A condition reading a
//! skipped step sees its value as missing.

use bytes::Bytes;
use serde_json::Value;
use stratus_spec::predicate::Root;

use super::{Dispatch, ExecStatus, Execution, RunState, Slot};
use crate::payload::Payload;
use crate::plan::{Mode, StepIdx};
use crate::record::{RunRecord, RunStatus};

impl Execution {
    /// The name of the output step when it was skipped: the result is then
    /// JSON `null`.
    pub fn output_skipped(&self) -> Option<&str> {
        self.output_skipped
            .then(|| self.plan.step_name(self.plan.output))
    }

    /// Decides `c`'s condition once every step it reads is done.
    pub(super) fn check_gate(&mut self, c: StepIdx, now: u64, out: &mut Vec<Dispatch>) {
        if !matches!(self.status, ExecStatus::Running) {
            return;
        }
        let plan = self.plan.clone();
        let ps = &plan.steps[c];
        let (Some(when), true) = (&ps.when, self.steps[c].waiting) else {
            return;
        };
        if self.steps[c].done || !ps.when_refs.iter().all(|&(_, r)| self.steps[r].done) {
            return;
        }
        let mut values: Vec<(Root, Option<Value>)> = Vec::new();
        for p in when.paths() {
            if values.iter().any(|(r, _)| *r == p.root) {
                continue;
            }
            let v = match &p.root {
                Root::Input => serde_json::from_slice(&self.input).ok(),
                Root::Step(name) => ps
                    .when_refs
                    .iter()
                    .find(|(n, _)| **n == **name)
                    .and_then(|&(_, r)| self.value_of(r)),
            };
            values.push((p.root.clone(), v));
        }
        let lookup = |root: &Root| {
            values
                .iter()
                .find(|(r, _)| r == root)
                .and_then(|(_, v)| v.clone())
        };
        if when.eval(&lookup) {
            self.open(c, now, out);
        } else {
            self.skip(c, "its condition was false", now, out);
        }
    }

    /// A done step's output as JSON: a list's items as an array. Missing
    /// when it was skipped or an output is not JSON.
    fn value_of(&self, step: StepIdx) -> Option<Value> {
        let st = &self.steps[step];
        if st.skipped {
            return None;
        }
        let parse = |o: &Option<Bytes>| serde_json::from_slice::<Value>(o.as_deref()?).ok();
        if self.plan.steps[step].produces_list() {
            st.outputs
                .iter()
                .map(parse)
                .collect::<Option<Vec<Value>>>()
                .map(Value::Array)
        } else {
            st.outputs.first().and_then(parse)
        }
    }

    /// The condition held: fire what the held arrivals allow.
    fn open(&mut self, c: StepIdx, now: u64, out: &mut Vec<Dispatch>) {
        let st = &mut self.steps[c];
        st.waiting = false;
        let pred = st.last_pred;
        match self.plan.steps[c].mode {
            Mode::Map => {
                for (i, b) in std::mem::take(&mut self.steps[c].held) {
                    self.fire(c, i, vec![b], pred, now, out);
                }
            }
            Mode::FirstOf(k) if st.pending.len() >= k => {
                let items: Vec<Bytes> = st.pending.drain(..k).collect();
                st.pending.clear();
                st.closed = true;
                self.fire(c, 0, items, pred, now, out);
            }
            Mode::Batch(n) => {
                while self.steps[c].pending.len() >= n {
                    let items: Vec<Bytes> = self.steps[c].pending.drain(..n).collect();
                    let idx = self.steps[c].fired;
                    self.fire(c, idx, items, pred, now, out);
                }
            }
            Mode::FirstOf(_) | Mode::AllOf => {}
        }
        self.try_complete(c, now, out);
    }

    /// Skips `c` (no run), then its consumers' inputs and conditions learn it.
    pub(super) fn skip(&mut self, c: StepIdx, why: &str, now: u64, out: &mut Vec<Dispatch>) {
        let st = &mut self.steps[c];
        if st.done {
            return;
        }
        st.closed = true;
        st.done = true;
        st.skipped = true;
        st.waiting = false;
        st.held.clear();
        st.pending.clear();
        let pred = st.last_pred;
        let plan = self.plan.clone();
        let ps = &plan.steps[c];
        self.runs.push(RunState {
            step: c,
            index: 0,
            pred,
            record: RunRecord {
                step: ps.name.to_string(),
                run: 0,
                function: ps.function.to_string(),
                status: RunStatus::Skipped,
                queued_us: now,
                started_us: None,
                finished_us: Some(now),
                cold_start_us: 0,
                instance: None,
                input_bytes: 0,
                output_bytes: 0,
                error: Some(format!("skipped: {why}")),
                attempt: 1,
                retries: Vec::new(),
            },
            extra: None,
        });
        if c == plan.output && matches!(self.status, ExecStatus::Running) {
            self.output_skipped = true;
            self.output_at = Some(now);
            self.status = ExecStatus::Succeeded(Payload::Raw(Bytes::from_static(b"null")));
        }
        for &(consumer, slot) in &ps.consumers {
            self.skip_slot(consumer, slot, now, out);
        }
        for &w in &ps.watchers {
            self.check_gate(w, now, out);
        }
    }

    /// Source `slot` of `c` was skipped: it is complete, with no items.
    fn skip_slot(&mut self, c: StepIdx, slot: usize, now: u64, out: &mut Vec<Dispatch>) {
        let st = &mut self.steps[c];
        if st.closed {
            return;
        }
        let s: &mut Slot = &mut st.slots[slot];
        s.skipped = true;
        s.total = Some(s.received);
        self.try_complete(c, now, out);
    }
}

#[cfg(test)]
mod tests;
