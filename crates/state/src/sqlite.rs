//! The embedded SQLite store.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use stratus_dag::{InFlight, Interruption, InvocationRecord};

use crate::{now_unix_ms, Retention, StateError, StateStore, StoredResource};

const SCHEMA_VERSION: i64 = 1;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<SqliteStore, StateError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StateError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Corrupt(format!(
                "state database has schema version {version}, newer than this binary's {SCHEMA_VERSION}; upgrade stratus"
            )));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS revisions (
                kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL,
                spec_json TEXT NOT NULL, source TEXT NOT NULL, created_unix_ms INTEGER NOT NULL,
                PRIMARY KEY (kind, name, revision));
             CREATE TABLE IF NOT EXISTS resources (
                kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL,
                updated_unix_ms INTEGER NOT NULL, PRIMARY KEY (kind, name));
             -- Rows are appended in arrival order, so rowid order is time order.
             CREATE TABLE IF NOT EXISTS invocations (
                id TEXT NOT NULL, target TEXT NOT NULL, received_unix_us INTEGER NOT NULL,
                ok INTEGER NOT NULL, record_json TEXT NOT NULL);
             -- Listing by target scans backwards from the newest row and stops at the
             -- limit: no index to maintain on the hot insert path.
             CREATE UNIQUE INDEX IF NOT EXISTS invocations_by_id ON invocations (id);
             -- Invocations started and not finished; emptied at every start.
             CREATE TABLE IF NOT EXISTS in_flight (
                id TEXT PRIMARY KEY NOT NULL, record_json TEXT NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

impl StateStore for SqliteStore {
    fn put_resources(&self, items: &[StoredResource]) -> Result<Vec<u64>, StateError> {
        let mut conn = self.conn.lock();
        // Immediate: take the write lock before reading the latest
        // revisions, so that another connection's deploy waits (busy
        // timeout) instead of failing the read-then-write upgrade.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_unix_ms();
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let latest: Option<(u64, String)> = tx
                .query_row(
                    "SELECT revision, spec_json FROM revisions WHERE kind = ?1 AND name = ?2
                     ORDER BY revision DESC LIMIT 1",
                    params![it.kind, it.name],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .optional()?;
            let rev = match latest {
                Some((rev, spec)) if spec == it.spec_json => rev,
                Some((rev, _)) => rev + 1,
                None => 1,
            };
            tx.execute(
                "INSERT OR IGNORE INTO revisions (kind, name, revision, spec_json, source, created_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![it.kind, it.name, rev as i64, it.spec_json, it.source, now as i64],
            )?;
            tx.execute(
                "INSERT INTO resources (kind, name, revision, updated_unix_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, name) DO UPDATE SET revision = excluded.revision, updated_unix_ms = excluded.updated_unix_ms",
                params![it.kind, it.name, rev as i64, now as i64],
            )?;
            out.push(rev);
        }
        tx.commit()?;
        Ok(out)
    }

    fn delete_resource(&self, kind: &str, name: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        Ok(conn.execute(
            "DELETE FROM resources WHERE kind = ?1 AND name = ?2",
            params![kind, name],
        )? > 0)
    }

    fn list_resources(&self) -> Result<Vec<StoredResource>, StateError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT r.kind, r.name, r.revision, v.spec_json, v.source, r.updated_unix_ms
             FROM resources r JOIN revisions v ON v.kind = r.kind AND v.name = r.name AND v.revision = r.revision
             ORDER BY r.kind DESC, r.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredResource {
                kind: r.get(0)?,
                name: r.get(1)?,
                revision: r.get::<_, i64>(2)? as u64,
                spec_json: r.get(3)?,
                source: r.get(4)?,
                updated_unix_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_invocations(
        &self,
        started: &[InFlight],
        finished: &[Arc<InvocationRecord>],
    ) -> Result<(), StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut mark = tx.prepare_cached(
                "INSERT OR REPLACE INTO in_flight (id, record_json) VALUES (?1, ?2)",
            )?;
            for f in started {
                let json =
                    serde_json::to_string(f).map_err(|e| StateError::Corrupt(e.to_string()))?;
                mark.execute(params![f.id, json])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO invocations (id, target, received_unix_us, ok, record_json) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut unmark = tx.prepare_cached("DELETE FROM in_flight WHERE id = ?1")?;
            for r in finished {
                let json =
                    serde_json::to_string(r).map_err(|e| StateError::Corrupt(e.to_string()))?;
                insert.execute(params![
                    r.id,
                    r.target,
                    r.received_unix_us as i64,
                    r.ok,
                    json
                ])?;
                unmark.execute(params![r.id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn in_flight(&self) -> Result<Vec<InFlight>, StateError> {
        read_marks(&self.conn.lock())
    }

    fn recover_lost(&self, reason: &str) -> Result<Vec<InvocationRecord>, StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let lost: Vec<InvocationRecord> = read_marks(&tx)?
            .iter()
            .map(|m| m.interrupted(Interruption::Lost, reason.to_string()))
            .collect();
        {
            // A record that exists already (it cannot, as records and marks are
            // written together) wins over the mark.
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO invocations (id, target, received_unix_us, ok, record_json) VALUES (?1, ?2, ?3, 0, ?4)",
            )?;
            for r in &lost {
                let json =
                    serde_json::to_string(r).map_err(|e| StateError::Corrupt(e.to_string()))?;
                insert.execute(params![r.id, r.target, r.received_unix_us as i64, json])?;
            }
            tx.execute("DELETE FROM in_flight", [])?;
        }
        tx.commit()?;
        Ok(lost)
    }

    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StateError> {
        let conn = self.conn.lock();
        let json: Option<String> = conn
            .query_row(
                "SELECT record_json FROM invocations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StateError::Corrupt(format!("invocation {id}: {e}")))
        })
        .transpose()
    }

    fn list_invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StateError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT record_json FROM invocations WHERE (?1 IS NULL OR target = ?1)
             ORDER BY rowid DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![target, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for j in rows {
            out.push(serde_json::from_str(&j?).map_err(|e| StateError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    fn prune_invocations(&self, r: &Retention, now_unix_us: u64) -> Result<u64, StateError> {
        let mut deleted = 0;
        if let Some(age) = r.max_age {
            // Rows are in (roughly) arrival order: look at the oldest batch,
            // delete those past the cutoff, stop at the first batch that had
            // a younger one.
            let cutoff = now_unix_us.saturating_sub(age.as_micros() as u64) as i64;
            loop {
                let k = self.conn.lock().execute(
                    "DELETE FROM invocations WHERE rowid IN
                     (SELECT rowid FROM (SELECT rowid, received_unix_us FROM invocations
                                         ORDER BY rowid LIMIT ?2)
                      WHERE received_unix_us < ?1)",
                    params![cutoff, PRUNE_BATCH],
                )? as i64;
                deleted += k as u64;
                if k < PRUNE_BATCH {
                    break;
                }
            }
        }
        if let Some(max) = r.max_records {
            let n = self.invocation_count()?;
            if n > max {
                deleted += self.delete_oldest(n - max)?;
            }
        }
        if let Some(max) = r.max_bytes {
            // Deleting rows frees whole pages only as they empty: measure
            // again after each round.
            for _ in 0..8 {
                let used = self.used_bytes()?;
                let n = self.invocation_count()?;
                if used <= max || n == 0 {
                    break;
                }
                let per_row = (used / n).max(1);
                deleted += self.delete_oldest((used - max).div_ceil(per_row))?;
            }
        }
        Ok(deleted)
    }
}

/// Rows deleted per statement while pruning: the lock is released between
/// batches so that reads and the writer are not held up for long.
const PRUNE_BATCH: i64 = 5_000;

impl SqliteStore {
    /// Deletes up to `n` of the oldest invocation records.
    fn delete_oldest(&self, mut n: u64) -> Result<u64, StateError> {
        let mut deleted = 0;
        while n > 0 {
            let batch = (n as i64).min(PRUNE_BATCH);
            let k = self.conn.lock().execute(
                "DELETE FROM invocations WHERE rowid IN
                 (SELECT rowid FROM invocations ORDER BY rowid LIMIT ?1)",
                params![batch],
            )? as u64;
            deleted += k;
            if k < batch as u64 {
                break;
            }
            n -= k;
        }
        Ok(deleted)
    }

    fn invocation_count(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .lock()
            .query_row("SELECT count(*) FROM invocations", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Bytes of database pages in use (free pages excluded).
    pub fn used_bytes(&self) -> Result<u64, StateError> {
        let conn = self.conn.lock();
        let q = |p: &str| conn.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
        let (pages, free, size) = (q("page_count")?, q("freelist_count")?, q("page_size")?);
        Ok(((pages - free).max(0) * size) as u64)
    }
}

/// The in-flight marks, oldest first.
fn read_marks(conn: &Connection) -> Result<Vec<InFlight>, StateError> {
    let mut stmt = conn.prepare("SELECT id, record_json FROM in_flight")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row?;
        out.push(
            serde_json::from_str::<InFlight>(&json)
                .map_err(|e| StateError::Corrupt(format!("in-flight mark {id}: {e}")))?,
        );
    }
    out.sort_by(|a, b| (a.received_unix_us, &a.id).cmp(&(b.received_unix_us, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, only, record_ids, records, Backend};

    /// Handles on one database file.
    struct File(tempfile::TempDir);

    impl Backend for File {
        fn open(&self) -> Box<dyn StateStore> {
            Box::new(SqliteStore::open(&self.0.path().join("state.db")).unwrap())
        }
    }

    #[test]
    fn sqlite_passes_the_conformance_suite() {
        conformance::run_all(&mut || Box::new(File(tempfile::tempdir().unwrap())));
    }

    #[test]
    fn pruning_by_bytes_gets_under_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        s.record_invocations(&records(4_000, 0)).unwrap();
        let before = s.used_bytes().unwrap();
        assert!(before > 1 << 20, "{before}");
        let max = 256 << 10;
        let r = only(|r| r.max_bytes = Some(max));
        let gone = s.prune_invocations(&r, 0).unwrap();
        assert!(s.used_bytes().unwrap() <= max);
        let left = record_ids(&s);
        assert_eq!(left.len() as u64, 4_000 - gone);
        assert!(!left.is_empty(), "does not delete everything");
        assert_eq!(left.last().unwrap(), "r3999", "the newest stay");
    }
}
