//! Invocation records: the latest kept in memory, all persisted in batches by
//! a writer thread so the request path never waits on the database.
//!
//! An invocation is also marked in flight when it starts ([`Recorder::started`]).
//! A mark whose record arrives in the same batch is never written, so a short
//! invocation costs one row; a longer one has its mark persisted with the next
//! batch (within milliseconds) and cleared with its record. Marks left by a
//! crash become records of lost invocations at the next start
//! ([`Recorder::recover_lost`]). The window this leaves: an invocation that
//! started less than one batch before a crash may have no mark yet.
//!
//! The writer also prunes the store to its [`Retention`] every interval. A
//! record that is lost (the backlog was full, or the store failed the
//! write, e.g. on a full disk) is counted in `stratus_records_dropped_total`
//! and reported in the log once per interval; requests are served as usual.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use stratus_dag::{InFlight, InvocationRecord};
use stratus_state::{Retention, StateStore};

use crate::metrics::Metrics;

enum Msg {
    Started(InFlight),
    Record(Arc<InvocationRecord>),
    Flush(mpsc::Sender<()>),
}

/// How records are persisted.
pub struct Persist {
    pub retention: Retention,
    /// Pruning period, and how often losses are logged.
    pub interval: Duration,
}

pub struct Recorder {
    recent: Mutex<Recent>,
    cap: usize,
    tx: Option<mpsc::SyncSender<Msg>>,
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    /// Records dropped for a full backlog since the writer last logged.
    backlog_lost: Arc<AtomicU64>,
}

#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<InvocationRecord>>,
}

const BACKLOG: usize = 100_000;

impl Recorder {
    pub fn new(
        store: Arc<dyn StateStore>,
        cap: usize,
        persist: Option<Persist>,
        metrics: Arc<Metrics>,
    ) -> Recorder {
        let backlog_lost = Arc::new(AtomicU64::new(0));
        let tx = persist.map(|persist| {
            let (tx, rx) = mpsc::sync_channel::<Msg>(BACKLOG);
            let w = Writer {
                store: store.clone(),
                metrics: metrics.clone(),
                persist,
                backlog_lost: backlog_lost.clone(),
                write_lost: 0,
                last_error: None,
            };
            std::thread::Builder::new()
                .name("stratus-recorder".into())
                .spawn(move || w.run(rx))
                .expect("spawn recorder thread");
            tx
        });
        Recorder {
            recent: Mutex::new(Recent::default()),
            cap,
            tx,
            store,
            metrics,
            backlog_lost,
        }
    }

    /// Marks an invocation in flight; its record clears the mark.
    pub fn started(&self, mark: InFlight) {
        if let Some(tx) = &self.tx {
            // A full backlog drops the mark: that invocation, if the platform
            // crashes before it ends, leaves no trace (records are being lost
            // anyway then, and counted).
            let _ = tx.try_send(Msg::Started(mark));
        }
    }

    /// Turns the in-flight marks a previous run of the platform left into
    /// records of lost invocations (persisting only). Returns how many.
    pub fn recover_lost(&self) -> Result<usize, stratus_state::StateError> {
        if self.tx.is_none() {
            return Ok(0);
        }
        let lost = self.store.recover_lost(
            "lost: the platform stopped (crashed or was killed) before this invocation's end was recorded",
        )?;
        if !lost.is_empty() {
            self.metrics.invocations_lost.inc_by(lost.len() as u64);
            let first: Vec<&str> = lost.iter().take(5).map(|r| r.id.as_str()).collect();
            tracing::warn!(
                lost = lost.len(),
                first = ?first,
                "invocations were in flight when the platform last stopped; recorded as lost"
            );
        }
        Ok(lost.len())
    }

    pub fn record(&self, rec: InvocationRecord) {
        let rec = Arc::new(rec);
        {
            let mut g = self.recent.lock();
            g.order.push_back(rec.id.clone());
            g.by_id.insert(rec.id.clone(), rec.clone());
            while g.order.len() > self.cap {
                if let Some(old) = g.order.pop_front() {
                    g.by_id.remove(&old);
                }
            }
        }
        if let Some(tx) = &self.tx {
            if tx.try_send(Msg::Record(rec)).is_err() {
                self.metrics.records_dropped.inc();
                self.backlog_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<InvocationRecord>> {
        if let Some(r) = self.recent.lock().by_id.get(id) {
            return Some(r.clone());
        }
        self.store.get_invocation(id).ok().flatten().map(Arc::new)
    }

    /// Newest first, from the store when persisting, else from memory.
    pub fn list(&self, target: Option<&str>, limit: usize) -> Vec<Arc<InvocationRecord>> {
        if self.tx.is_some() {
            self.flush();
            if let Ok(v) = self.store.list_invocations(target, limit) {
                return v.into_iter().map(Arc::new).collect();
            }
        }
        let g = self.recent.lock();
        g.order
            .iter()
            .rev()
            .filter_map(|id| g.by_id.get(id))
            .filter(|r| target.is_none_or(|t| r.target == t))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Waits until every record so far is persisted (blocking).
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::channel();
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv();
            }
        }
    }
}

struct Writer {
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    persist: Persist,
    backlog_lost: Arc<AtomicU64>,
    /// Records in failed writes since the last report.
    write_lost: u64,
    /// The latest write error since the last report.
    last_error: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // Persisting records is background work: under a burst it yields the CPU to
        // the request path and catches up afterwards (the channel holds the backlog).
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        }
        let interval = self.persist.interval;
        let mut batch: Vec<Arc<InvocationRecord>> = Vec::new();
        let mut marks: Vec<InFlight> = Vec::new();
        let mut acks = Vec::new();
        let mut last_prune = Instant::now();
        loop {
            let mut next = match rx.recv_timeout(interval) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            while let Some(m) = next.take() {
                match m {
                    Msg::Started(f) => marks.push(f),
                    Msg::Record(r) => batch.push(r),
                    Msg::Flush(a) => acks.push(a),
                }
                if batch.len() + marks.len() < 4096 {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() || !marks.is_empty() {
                // A mark whose record is in the same batch need not be written.
                let done: HashSet<&str> = batch.iter().map(|r| r.id.as_str()).collect();
                marks.retain(|m| !done.contains(m.id.as_str()));
                self.write(&marks, &batch);
                batch.clear();
                marks.clear();
            }
            if last_prune.elapsed() >= interval {
                last_prune = Instant::now();
                self.prune();
                self.report_losses();
            }
            for a in acks.drain(..) {
                let _ = a.send(());
            }
        }
    }

    fn write(&mut self, marks: &[InFlight], batch: &[Arc<InvocationRecord>]) {
        match self.store.write_invocations(marks, batch) {
            Ok(()) => {
                if self.metrics.state_write_failing.set(0) == 1 {
                    tracing::info!("invocation records are persisted again");
                }
            }
            Err(e) => {
                let n = batch.len() as u64;
                self.metrics.records_dropped.inc_by(n);
                self.metrics.state_write_errors.inc();
                if self.metrics.state_write_failing.set(1) == 0 {
                    // The first failure is reported at once, later ones per interval.
                    tracing::warn!(error = %crate::error_chain(&e), lost = n, "cannot persist invocation records; invocations go on, their records are lost until the store accepts writes again");
                } else {
                    self.write_lost += n;
                    self.last_error = Some(crate::error_chain(&e));
                }
            }
        }
    }

    fn prune(&self) {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        match self
            .store
            .prune_invocations(&self.persist.retention, now_us)
        {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.records_pruned.inc_by(n);
                tracing::debug!(pruned = n, "invocation records past retention deleted");
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot prune invocation records")
            }
        }
    }

    /// Logs what was lost since the last report, once per interval.
    fn report_losses(&mut self) {
        let backlog = self.backlog_lost.swap(0, Ordering::Relaxed);
        if backlog > 0 {
            tracing::warn!(
                lost = backlog,
                "invocation records dropped: the writer's backlog of {BACKLOG} was full"
            );
        }
        if self.write_lost > 0 {
            tracing::warn!(
                lost = self.write_lost,
                error = self.last_error.take().unwrap_or_default(),
                "invocation records lost: the state store is failing writes"
            );
            self.write_lost = 0;
        }
    }
}
