//! `durability: journal` in the driver, and recovery.
//!
//! A journaled run records its start (input in the chunk store) before its
//! first dispatch. Each successful completion is handed to the group-commit
//! writer and settled (its successors dispatched) only once durable, in the
//! order it was handed over: `seq`. Replaying the start and those
//! completions, in `seq` order, through a fresh [`Execution`] gives the same
//! state (the execution is pure), so after a crash completed steps are not
//! run again, and the runs the replay leaves dispatched but unfinished (in
//! flight at the crash) are dispatched again with the same idempotency key.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use stratus_dag::{Dispatch, ExecStatus, Execution, InvocationKind, Payload, Plan};
use stratus_state::journal::{Entry, JournaledRun, Recovered, RunEnd, RunStart, StepDone};

use super::{micros, CallError, Driver, Finish, Pending, RunOutcome};
use crate::journal::{digest, JournalWriter};
use crate::Platform;

/// One journaled run's side of the journal.
pub(crate) struct RunJournal {
    id: String,
    writer: Arc<JournalWriter>,
    /// The next step record's sequence number.
    seq: u32,
    /// Completions waiting for their record, in hand-over order.
    acks: FuturesOrdered<BoxFuture<'static, RunOutcome>>,
}

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl RunJournal {
    /// Hands a completion over: a success waits for its record, anything
    /// else keeps its place in line.
    fn submit(&mut self, mut o: RunOutcome, failed: bool) {
        let bytes = match &o.result {
            Ok(b) if !failed => b.clone(),
            _ => {
                self.acks.push_back(Box::pin(async move { o }));
                return;
            }
        };
        let d = digest(&bytes);
        let rec = StepDone {
            id: self.id.clone(),
            seq: self.seq,
            run: o.run as u32,
            output: d.hex(),
            output_bytes: bytes.len() as u64,
            unix_us: now_unix_us(),
        };
        self.seq += 1;
        let ack = self.writer.submit(vec![Entry::Step(rec)], vec![(d, bytes)]);
        self.acks.push_back(Box::pin(async move {
            let r = ack
                .await
                .unwrap_or_else(|_| Err("the journal writer has stopped".into()));
            if let Err(e) = r {
                o.result = Err(CallError::Journal(e));
            }
            o
        }));
    }

    /// Records the run's end; not waited for (the output step's record is
    /// already durable, so a crash before this replays to the same result).
    pub(super) fn end(&self, result: &Result<Payload, (u16, String)>) {
        let (ok, status, res, error, payloads) = match result {
            Ok(p) => {
                let b = p.to_bytes();
                let d = digest(&b);
                (true, 200, Some(d.hex()), None, vec![(d, b)])
            }
            Err((s, m)) => (false, *s, None, Some(m.clone()), Vec::new()),
        };
        let end = RunEnd {
            id: self.id.clone(),
            ok,
            status,
            result: res,
            error,
            ended_unix_us: now_unix_us(),
        };
        drop(self.writer.submit(vec![Entry::End(end)], payloads));
    }
}

impl Driver {
    /// The next completion to settle: straight from the calls, or for a
    /// journaled run, once its record is durable.
    pub(super) async fn next_outcome(&mut self) -> Option<RunOutcome> {
        let Some(j) = &mut self.journal else {
            return self.running.next().await;
        };
        loop {
            if self.running.is_empty() && j.acks.is_empty() {
                return None;
            }
            tokio::select! {
                Some(o) = self.running.next(), if !self.running.is_empty() => {
                    j.submit(o, matches!(self.exec.status(), ExecStatus::Failed(_)));
                }
                Some(o) = j.acks.next(), if !j.acks.is_empty() => return Some(o),
            }
        }
    }

    /// Nothing in flight and nothing waiting for its record.
    pub(super) fn idle(&self) -> bool {
        self.running.is_empty() && self.journal.as_ref().is_none_or(|j| j.acks.is_empty())
    }
}

/// A journaled run read back and replayed, ready to go on.
struct Resume {
    run: JournaledRun,
    exec: Execution,
    ready: Vec<Dispatch>,
    max_in_flight: usize,
    metrics: crate::metrics::TargetMetrics,
}

impl Platform {
    /// Records a journaled run's start with its input; `Err` says why the
    /// run cannot be journaled (it is then refused).
    pub(super) async fn begin_journal(
        &self,
        plan: &Plan,
        revision: u64,
        id: &str,
        input: &Bytes,
        received_unix_us: u64,
    ) -> Result<RunJournal, String> {
        let Some(writer) = self.journal.clone() else {
            return Err(format!(
                "workflow '{}' has durability: journal, but this platform has no state directory to journal to (stratus up --state-dir)",
                plan.name()
            ));
        };
        let d = digest(input);
        let start = RunStart {
            id: id.to_string(),
            workflow: plan.name().to_string(),
            revision,
            input: d.hex(),
            input_bytes: input.len() as u64,
            started_unix_us: received_unix_us,
        };
        writer
            .commit(vec![Entry::Start(start)], vec![(d, input.clone())])
            .await
            .map_err(|e| format!("cannot journal the run, so it was not started: {e}"))?;
        Ok(RunJournal {
            id: id.to_string(),
            writer,
            seq: 0,
            acks: FuturesOrdered::new(),
        })
    }

    /// Resumes every unfinished journaled run (in the background); a run
    /// that cannot resume (corrupt record, missing payload, workflow gone or
    /// changed) is recorded as failed with why. Returns how many resume.
    pub(crate) async fn recover_journal(self: &Arc<Self>) -> usize {
        let Some(w) = self.journal.clone() else {
            return 0;
        };
        let w2 = w.clone();
        let runs = match tokio::task::spawn_blocking(move || w2.unfinished()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %crate::error_chain(&e), "cannot read the run journal: unfinished journaled runs do not resume");
                return 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the run journal failed");
                return 0;
            }
        };
        let mut resumed = 0;
        for r in runs {
            let id = r.id().to_string();
            let prepared = match r {
                Recovered::Corrupt { detail, .. } => {
                    Err(format!("its journal record is corrupt ({detail})"))
                }
                Recovered::Run(run) => self.prepare_resume(&w, run).await,
            };
            match prepared {
                Ok(res) => {
                    resumed += 1;
                    let this = self.clone();
                    tokio::spawn(async move { this.resume(res).await });
                }
                Err(why) => {
                    tracing::error!(run = %id, why = %why, "journaled run cannot resume: marked failed");
                    let end = RunEnd {
                        id,
                        ok: false,
                        status: 500,
                        result: None,
                        error: Some(format!("the run could not resume after a restart: {why}")),
                        ended_unix_us: now_unix_us(),
                    };
                    if let Err(e) = w.commit(vec![Entry::End(end)], Vec::new()).await {
                        tracing::error!(error = %e, "cannot mark the run failed in the journal");
                    }
                }
            }
        }
        if resumed > 0 {
            tracing::info!(runs = resumed, "resuming journaled runs left unfinished");
        }
        resumed
    }

    /// Reads a run's payloads back and replays its records.
    async fn prepare_resume(&self, w: &JournalWriter, run: JournaledRun) -> Result<Resume, String> {
        let (plan, revision, metrics, cap) = {
            let reg = self.registry.read();
            let e = reg.workflows.get(&run.start.workflow).ok_or_else(|| {
                format!("workflow '{}' is no longer deployed", run.start.workflow)
            })?;
            (
                e.plan.clone(),
                e.revision,
                e.metrics.clone(),
                e.spec.max_concurrency.map(|n| n as usize),
            )
        };
        if revision != run.start.revision {
            return Err(format!(
                "workflow '{}' is at revision {revision} now, the run started on revision {}",
                run.start.workflow, run.start.revision
            ));
        }
        let mut want = vec![run.start.input.clone()];
        want.extend(run.steps.iter().map(|s| s.output.clone()));
        let mut payloads = w
            .read(&want)
            .await
            .map_err(|e| format!("its journaled payloads cannot be read: {e}"))?
            .into_iter();
        let input = payloads.next().unwrap_or_default();
        let mut exec = Execution::new(plan);
        exec.set_max_map_width(self.cfg.max_map_width);
        exec.set_seed(crate::retry::seed_of(&run.start.id));
        let mut ready = exec.start(input, 0);
        for (s, out) in run.steps.iter().zip(payloads) {
            let r = s.run as usize;
            let Some(i) = ready.iter().position(|d| d.run == r) else {
                return Err(format!(
                    "step record {} names run {r}, which replaying the records before it did not dispatch",
                    s.seq
                ));
            };
            ready.swap_remove(i);
            ready.extend(exec.finish(r, Ok(out), 0));
        }
        ready.sort_by_key(|d| d.run);
        Ok(Resume {
            run,
            exec,
            ready,
            max_in_flight: cap.unwrap_or(self.cfg.max_in_flight),
            metrics,
        })
    }

    async fn resume(self: Arc<Self>, r: Resume) {
        let Some(writer) = self.journal.clone() else {
            return;
        };
        let t0 = Instant::now();
        let id = r.run.start.id.clone();
        let mut d = Driver {
            exec: r.exec,
            running: FuturesUnordered::new(),
            waiting: Default::default(),
            max_in_flight: r.max_in_flight.max(1),
            first_error: None,
            t0,
            id: id.as_str().into(),
            journal: Some(RunJournal {
                id: id.clone(),
                writer,
                seq: r.run.steps.len() as u32,
                acks: FuturesOrdered::new(),
            }),
            data: None,
            placed: None,
            // Journaled outputs are never kept on workers.
            kept: None,
            predone: Default::default(),
            failed: Default::default(),
            // spec.timeoutSeconds counts from the invocation's arrival,
            // which a restart has lost: a resumed run has no deadline.
            deadline: None,
        };
        tracing::debug!(run = %id, redispatched = r.ready.len(), done = r.run.steps.len(), at = micros(t0), "resuming");
        self.dispatch(&mut d, r.ready);
        let fin = Finish {
            id,
            kind: InvocationKind::Workflow,
            metrics: r.metrics,
            received_unix_us: r.run.start.started_unix_us,
            input_bytes: r.run.start.input_bytes,
            pending: Pending {
                platform: self.clone(),
                mark: None,
            },
        };
        let _ = self.run_to_end(d, fin).await;
    }
}
