//! Parts of a plan that one worker may run by itself: a dispatched run
//! (the root) and the steps after it, on the same worker, that would run
//! on nothing but outputs made inside the part. The worker triggers them
//! itself, in dataflow order, passing outputs on from memory and framing a
//! fan-in as the execution would; the execution later takes their outcomes
//! as if it had dispatched them (the engine's `chain` module).
//!
//! A part has one sink: every member's output but one goes only to other
//! members, so no step outside the part waits on a member for longer than
//! the part takes (its answer comes back whole).

use stratus_spec::InputFormat;

use crate::plan::{Mode, Plan, Source, StepIdx};

/// One step of a part after its root: the step, where its input comes
/// from (members by index: 0 is the root, `k` the part's `k`-th step),
/// and whether those are framed as a JSON array (else it is one output,
/// passed on as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartStep {
    pub step: StepIdx,
    pub sources: Vec<usize>,
    pub json: bool,
}

impl Plan {
    /// Whether a run of `s` may start a part or belong to one: one output
    /// (not a list, not a catch step's) that only goes on whole to other
    /// steps ([`Plan::output_passed_on`]).
    fn part_output(&self, s: StepIdx) -> bool {
        let st = &self.steps[s];
        !st.produces_list() && st.catches.is_none() && self.output_passed_on(s)
    }

    /// Whether `c` runs once on its sources (no `when:`, not a map, batch
    /// or first-of, not a catch step), framed as the worker can frame them.
    fn part_member(&self, c: StepIdx) -> Option<bool> {
        let ct = &self.steps[c];
        let plain = ct.mode == Mode::AllOf && ct.when.is_none() && self.part_output(c);
        if !plain || ct.sources.contains(&Source::Input) {
            return None;
        }
        match (self.raw_input[c], ct.format) {
            (true, _) => Some(false),
            (false, InputFormat::Json) => Some(true),
            (false, InputFormat::Multipart) => None,
        }
    }

    /// The part a run of `root` may take along: at most `max` steps, each
    /// `on_host`, each running on outputs of the root and earlier members
    /// alone, in an order where sources come first; empty when there is
    /// none. Every member's output but the last one's goes only to other
    /// members (the root's too).
    pub fn part(
        &self,
        root: StepIdx,
        on_host: impl Fn(StepIdx) -> bool,
        max: usize,
    ) -> Vec<PartStep> {
        if !self.part_output(root) {
            return Vec::new();
        }
        // Grow from the root: a consumer joins once all its sources are in.
        let mut members = vec![root];
        let mut framed = vec![false];
        let mut k = 0;
        while k < members.len() && members.len() <= max {
            for &(c, _) in &self.steps[members[k]].consumers {
                if members.len() > max || members.contains(&c) || !on_host(c) {
                    continue;
                }
                let Some(json) = self.part_member(c) else {
                    continue;
                };
                let all_in = self.steps[c]
                    .sources
                    .iter()
                    .all(|s| matches!(s, Source::Step(p) if members.contains(p)));
                if all_in {
                    members.push(c);
                    framed.push(json);
                }
            }
            k += 1;
        }
        // One sink: while two members' outputs go outside the part, drop
        // the later one and what runs on it; then drop what comes after
        // the sink (it would only delay the answer).
        loop {
            let outside: Vec<usize> = (0..members.len())
                .filter(|&i| {
                    self.steps[members[i]]
                        .consumers
                        .iter()
                        .any(|(c, _)| !members.contains(c))
                })
                .collect();
            let mut dropped = match outside[..] {
                [.., _, last] => vec![members[last]],
                [sink] if sink + 1 < members.len() => members[sink + 1..].to_vec(),
                _ => break,
            };
            for &m in &members {
                let on_dropped = self.steps[m]
                    .sources
                    .iter()
                    .any(|s| matches!(s, Source::Step(p) if dropped.contains(p)));
                if on_dropped && !dropped.contains(&m) {
                    dropped.push(m);
                }
            }
            let keep: Vec<bool> = members.iter().map(|m| !dropped.contains(m)).collect();
            let mut it = keep.iter();
            members.retain(|_| *it.next().expect("one per member"));
            let mut it = keep.iter();
            framed.retain(|_| *it.next().expect("one per member"));
        }
        members
            .iter()
            .zip(&framed)
            .skip(1)
            .map(|(&m, &json)| PartStep {
                step: m,
                sources: self.steps[m]
                    .sources
                    .iter()
                    .map(|s| match s {
                        Source::Step(p) => members.iter().position(|x| x == p).expect("in"),
                        Source::Input => unreachable!("members take no input"),
                    })
                    .collect(),
                json,
            })
            .collect()
    }
}
