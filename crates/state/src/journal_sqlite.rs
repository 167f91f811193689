//! [`Journal`] in its own SQLite database (`journal.db` beside `state.db`),
//! with `synchronous = FULL`: a committed append is on disk. It has a
//! connection of its own, so a journal commit never waits behind the
//! invocation recorder's writes.

use std::collections::HashSet;
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use crate::journal::{
    checksum, Entry, Journal, JournaledRun, Recovered, RunEnd, RunStart, RunSummary, StepDone,
};
use crate::StateError;

pub struct SqliteJournal {
    conn: Mutex<Connection>,
}

impl SqliteJournal {
    pub fn open(path: &Path) -> Result<SqliteJournal, StateError> {
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<SqliteJournal, StateError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteJournal, StateError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                id TEXT PRIMARY KEY NOT NULL, workflow TEXT NOT NULL,
                started_unix_us INTEGER NOT NULL, start_body TEXT NOT NULL, start_sum INTEGER NOT NULL,
                ended_unix_us INTEGER, end_body TEXT, end_sum INTEGER);
             CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_unix_us);
             CREATE INDEX IF NOT EXISTS runs_by_end ON runs (ended_unix_us);
             CREATE TABLE IF NOT EXISTS steps (
                id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, sum INTEGER NOT NULL,
                PRIMARY KEY (id, seq)) WITHOUT ROWID;
             -- Which runs name which payload digest: pruning asks whether any
             -- remaining run names one without reading every record.
             CREATE TABLE IF NOT EXISTS refs (
                id TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (id, digest)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS refs_by_digest ON refs (digest);",
        )?;
        Ok(SqliteJournal {
            conn: Mutex::new(conn),
        })
    }

    fn load(conn: &Connection, id: &str) -> Result<Option<Recovered>, StateError> {
        let row: Option<(String, i64, Option<String>, Option<i64>)> = conn
            .query_row(
                "SELECT start_body, start_sum, end_body, end_sum FROM runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((start_body, start_sum, end_body, end_sum)) = row else {
            return Ok(None);
        };
        let corrupt = |detail: String| {
            Ok(Some(Recovered::Corrupt {
                id: id.to_string(),
                detail,
            }))
        };
        let start: RunStart = match decode(&start_body, start_sum) {
            Ok(s) => s,
            Err(e) => return corrupt(format!("start record: {e}")),
        };
        let end: Option<RunEnd> = match (end_body, end_sum) {
            (Some(b), Some(s)) => match decode(&b, s) {
                Ok(e) => Some(e),
                Err(e) => return corrupt(format!("end record: {e}")),
            },
            (None, None) => None,
            _ => return corrupt("end record: body or checksum missing".into()),
        };
        let mut stmt =
            conn.prepare_cached("SELECT seq, body, sum FROM steps WHERE id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut steps = Vec::new();
        for row in rows {
            let (seq, body, sum) = row?;
            let s: StepDone = match decode(&body, sum) {
                Ok(s) => s,
                Err(e) => return corrupt(format!("step record {seq}: {e}")),
            };
            if i64::from(s.seq) != seq {
                return corrupt(format!(
                    "step record {seq}: its body says sequence {}",
                    s.seq
                ));
            }
            if s.seq as usize != steps.len() {
                return corrupt(format!(
                    "step record {seq}: sequence {} is missing",
                    steps.len()
                ));
            }
            steps.push(s);
        }
        Ok(Some(Recovered::Run(JournaledRun { start, steps, end })))
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &str, sum: i64) -> Result<T, String> {
    if checksum(body) != sum {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(body).map_err(|e| format!("does not parse: {e}"))
}

fn encode<T: serde::Serialize>(v: &T) -> (String, i64) {
    let body = serde_json::to_string(v).expect("journal records serialize");
    let sum = checksum(&body);
    (body, sum)
}

impl Journal for SqliteJournal {
    fn append(&self, entries: &[Entry]) -> Result<(), StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut start = tx.prepare_cached(
                "INSERT INTO runs (id, workflow, started_unix_us, start_body, start_sum) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut step = tx.prepare_cached(
                "INSERT OR REPLACE INTO steps (id, seq, body, sum) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut end = tx.prepare_cached(
                "UPDATE runs SET ended_unix_us = ?2, end_body = ?3, end_sum = ?4 WHERE id = ?1 AND end_body IS NULL",
            )?;
            let mut refs =
                tx.prepare_cached("INSERT OR IGNORE INTO refs (id, digest) VALUES (?1, ?2)")?;
            for e in entries {
                match e {
                    Entry::Start(s) => {
                        let (body, sum) = encode(s);
                        start.execute(params![
                            s.id,
                            s.workflow,
                            s.started_unix_us as i64,
                            body,
                            sum
                        ])?;
                        refs.execute(params![s.id, s.input])?;
                    }
                    Entry::Step(s) => {
                        let (body, sum) = encode(s);
                        step.execute(params![s.id, s.seq, body, sum])?;
                        refs.execute(params![s.id, s.output])?;
                    }
                    Entry::End(x) => {
                        let (body, sum) = encode(x);
                        if end.execute(params![x.id, x.ended_unix_us as i64, body, sum])? > 0 {
                            if let Some(d) = &x.result {
                                refs.execute(params![x.id, d])?;
                            }
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn unfinished(&self) -> Result<Vec<Recovered>, StateError> {
        let conn = self.conn.lock();
        let ids: Vec<String> = {
            let mut stmt = conn.prepare(
                "SELECT id FROM runs WHERE end_body IS NULL ORDER BY started_unix_us, id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = Self::load(&conn, &id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Recovered>, StateError> {
        Self::load(&self.conn.lock(), id)
    }

    fn list(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunSummary>, StateError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, workflow, started_unix_us, ended_unix_us, end_body FROM runs
             WHERE ?1 IS NULL OR workflow = ?1 ORDER BY started_unix_us DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![workflow, limit as i64], |r| {
            let end: Option<String> = r.get(4)?;
            Ok(RunSummary {
                id: r.get(0)?,
                workflow: r.get(1)?,
                started_unix_us: r.get::<_, i64>(2)? as u64,
                ended_unix_us: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                ok: end.and_then(|b| serde_json::from_str::<RunEnd>(&b).ok().map(|e| e.ok)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune(&self, ended_before_unix_us: u64) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let old: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM runs WHERE ended_unix_us IS NOT NULL AND ended_unix_us < ?1",
            )?;
            let rows = stmt.query_map(params![ended_before_unix_us as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut candidates = HashSet::new();
        {
            let mut names = tx.prepare_cached("SELECT digest FROM refs WHERE id = ?1")?;
            for id in &old {
                let rows = names.query_map(params![id], |r| r.get::<_, String>(0))?;
                for d in rows {
                    candidates.insert(d?);
                }
                tx.execute("DELETE FROM steps WHERE id = ?1", params![id])?;
                tx.execute("DELETE FROM runs WHERE id = ?1", params![id])?;
                tx.execute("DELETE FROM refs WHERE id = ?1", params![id])?;
            }
        }
        // Content addressing shares chunks between runs: keep what others name.
        let mut gone = Vec::new();
        {
            let mut named =
                tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM refs WHERE digest = ?1)")?;
            for d in candidates {
                if !named.query_row(params![d], |r| r.get::<_, bool>(0))? {
                    gone.push(d);
                }
            }
        }
        tx.commit()?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests;
