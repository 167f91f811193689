//! Deletion, retention and compaction. Deleting marks index rows; compaction
//! rewrites every segment that holds unreferenced bytes, commits the moved
//! rows, then removes the old segment.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use rusqlite::params;

use super::{io_err, meta_set, seg_name, sync_dir, upsert_segment, Store, StoreError, Tier};
use crate::segment::{self, HEADER_LEN};

/// Which samples retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Delete samples older than the newest timestamp minus this.
    pub max_age: Option<i64>,
    /// Then keep at most this many samples (the newest; ties by key).
    pub max_samples: Option<u64>,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    pub segments_rewritten: usize,
    pub segments_removed: usize,
    pub records_dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl fmt::Display for CompactReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compacted: {} segments rewritten, {} removed, {} deleted records dropped, \
             {} -> {} bytes",
            self.segments_rewritten,
            self.segments_removed,
            self.records_dropped,
            self.bytes_before,
            self.bytes_after
        )
    }
}

impl Store {
    /// Deletes samples: unreadable at once, bytes reclaimed by
    /// [`Store::compact`]. Returns how many were live; unknown keys are
    /// ignored.
    pub fn delete(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let tx = self.db.transaction()?;
        let mut n = 0;
        {
            let mut up =
                tx.prepare_cached("UPDATE samples SET deleted = 1 WHERE key = ?1 AND deleted = 0")?;
            for &k in keys {
                n += up.execute([k as i64])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Deletes what `policy` does not keep (see [`RetentionPolicy`]); returns
    /// how many. Run [`Store::compact`] to reclaim the bytes.
    pub fn retention(&mut self, policy: &RetentionPolicy) -> Result<usize, StoreError> {
        let tx = self.db.transaction()?;
        let mut n = 0;
        if let Some(age) = policy.max_age {
            let newest: Option<i64> =
                tx.query_row("SELECT MAX(ts) FROM samples WHERE deleted = 0", [], |r| {
                    r.get(0)
                })?;
            if let Some(newest) = newest {
                n += tx.execute(
                    "UPDATE samples SET deleted = 1 WHERE deleted = 0 AND ts < ?1",
                    [newest.saturating_sub(age)],
                )?;
            }
        }
        if let Some(max) = policy.max_samples {
            let live: i64 =
                tx.query_row("SELECT COUNT(*) FROM samples WHERE deleted = 0", [], |r| {
                    r.get(0)
                })?;
            let excess = live - max.min(i64::MAX as u64) as i64;
            if excess > 0 {
                n += tx.execute(
                    "UPDATE samples SET deleted = 1 WHERE key IN (
                         SELECT key FROM samples WHERE deleted = 0 ORDER BY ts, key LIMIT ?1)",
                    [excess],
                )?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn total_bytes(&self) -> Result<u64, StoreError> {
        let b: i64 = self
            .db
            .query_row("SELECT COALESCE(SUM(len), 0) FROM segments", [], |r| {
                r.get(0)
            })?;
        Ok(b as u64)
    }

    /// Writes a whole new segment (hot file or cold object) holding `records`
    /// (encoded, back to back); returns its id. Not referenced until the
    /// caller commits it.
    pub(super) fn write_segment(
        &mut self,
        tier: Tier,
        records: &[u8],
    ) -> Result<(i64, u64), StoreError> {
        let id = self.next_segment;
        self.next_segment += 1;
        let mut data = Vec::with_capacity(HEADER_LEN + records.len());
        data.extend_from_slice(&segment::header());
        data.extend_from_slice(records);
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(id));
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create segment", &path))?;
                let res = f
                    .write_all_at(&data, 0)
                    .and_then(|()| f.sync_all())
                    .and_then(|()| sync_dir(&self.hot_dir));
                if let Err(e) = res {
                    let _ = fs::remove_file(&path);
                    return Err(io_err("write segment", &path)(e));
                }
            }
            Tier::Cold => self.cold.put(&seg_name(id), &data)?,
        }
        Ok((id, data.len() as u64))
    }

    pub(super) fn remove_segment(&self, id: i64, tier: Tier) -> Result<(), StoreError> {
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(id));
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove segment", &path)(e)),
                }
                sync_dir(&self.hot_dir).map_err(io_err("fsync", &self.hot_dir))
            }
            Tier::Cold => Ok(self.cold.delete(&seg_name(id))?),
        }
    }

    /// Rewrites every segment that holds deleted or moved records, so their
    /// bytes are gone from every file, and drops deleted rows from the index.
    pub fn compact(&mut self) -> Result<CompactReport, StoreError> {
        let mut report = CompactReport {
            bytes_before: self.total_bytes()?,
            ..CompactReport::default()
        };
        let segs: Vec<(i64, Tier, u64, u64, u64)> = {
            let mut stmt = self.db.prepare(
                "SELECT s.id, s.tier, s.len,
                        COALESCE(SUM(CASE WHEN d.deleted = 0 THEN d.len END), 0),
                        COUNT(d.key)
                 FROM segments s LEFT JOIN samples d ON d.segment = s.id
                 GROUP BY s.id ORDER BY s.id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Tier::from_code(r.get(1)?),
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, i64>(4)? as u64,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, tier, len, live, _rows) in segs {
            if live + HEADER_LEN as u64 == len {
                continue;
            }
            if self.active.as_ref().is_some_and(|a| a.id == id) {
                self.active = None;
            }
            let rows: Vec<(u64, u64, u64)> = {
                let mut stmt = self.db.prepare(
                    "SELECT key, offset, len FROM samples
                     WHERE segment = ?1 AND deleted = 0 ORDER BY offset",
                )?;
                let rows = stmt.query_map([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let dropped: usize = self.db.query_row(
                "SELECT COUNT(*) FROM samples WHERE segment = ?1 AND deleted = 1",
                [id],
                |r| r.get(0),
            )?;
            if rows.is_empty() {
                let tx = self.db.transaction()?;
                tx.execute("DELETE FROM samples WHERE segment = ?1", [id])?;
                tx.execute("DELETE FROM segments WHERE id = ?1", [id])?;
                tx.commit()?;
                self.remove_segment(id, tier)?;
                report.segments_removed += 1;
                report.records_dropped += dropped;
                continue;
            }
            let old = self.read_bytes(id, tier, 0, len)?;
            let mut records = Vec::with_capacity(live as usize);
            let mut moved = Vec::with_capacity(rows.len());
            for &(key, off, l) in &rows {
                let rec = old.get(off as usize..(off + l) as usize).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "key {key} at {off}+{l} is past the end of segment {id}"
                    ))
                })?;
                let r = segment::decode(rec).map_err(|source| StoreError::Segment {
                    segment: id,
                    offset: off,
                    source,
                })?;
                if r.key != key {
                    return Err(StoreError::Corrupt(format!(
                        "segment {id} offset {off} holds key {}, the index expects {key}",
                        r.key
                    )));
                }
                moved.push((key, (HEADER_LEN + records.len()) as u64));
                records.extend_from_slice(rec);
            }
            let (new_id, new_len) = self.write_segment(tier, &records)?;
            let res = (|| {
                let tx = self.db.transaction()?;
                upsert_segment(&tx, new_id, tier, new_len)?;
                {
                    let mut up = tx.prepare_cached(
                        "UPDATE samples SET segment = ?2, offset = ?3 WHERE key = ?1",
                    )?;
                    for &(key, off) in &moved {
                        up.execute(params![key as i64, new_id, off as i64])?;
                    }
                }
                tx.execute("DELETE FROM samples WHERE segment = ?1", [id])?;
                tx.execute("DELETE FROM segments WHERE id = ?1", [id])?;
                meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
                tx.commit()
            })();
            if let Err(e) = res {
                let _ = self.remove_segment(new_id, tier);
                return Err(e.into());
            }
            self.remove_segment(id, tier)?;
            report.segments_rewritten += 1;
            report.records_dropped += dropped;
        }
        // Old index pages live on in the WAL until it is checkpointed.
        self.db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        report.bytes_after = self.total_bytes()?;
        Ok(report)
    }
}
