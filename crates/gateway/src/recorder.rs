//! Invocation records: the latest kept in memory, all persisted in batches by
//! a writer thread so the request path never waits on the database.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;
use stratus_dag::InvocationRecord;
use stratus_state::StateStore;

use crate::metrics::Metrics;

enum Msg {
    Record(Arc<InvocationRecord>),
    Flush(mpsc::Sender<()>),
}

pub struct Recorder {
    recent: Mutex<Recent>,
    cap: usize,
    tx: Option<mpsc::SyncSender<Msg>>,
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
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
        persist: bool,
        metrics: Arc<Metrics>,
    ) -> Recorder {
        let tx = persist.then(|| {
            let (tx, rx) = mpsc::sync_channel::<Msg>(BACKLOG);
            let store = store.clone();
            std::thread::Builder::new()
                .name("stratus-recorder".into())
                .spawn(move || writer(rx, store))
                .expect("spawn recorder thread");
            tx
        });
        Recorder {
            recent: Mutex::new(Recent::default()),
            cap,
            tx,
            store,
            metrics,
        }
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

fn writer(rx: mpsc::Receiver<Msg>, store: Arc<dyn StateStore>) {
    // Persisting records is background work: under a burst it yields the CPU to
    // the request path and catches up afterwards (the channel holds the backlog).
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
    let mut batch: Vec<Arc<InvocationRecord>> = Vec::new();
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(a) => acks.push(a),
            }
            if batch.len() < 4096 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.record_invocations(&batch) {
                tracing::warn!(error = %crate::error_chain(&e), n = batch.len(), "could not persist invocation records");
            }
            batch.clear();
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
}
