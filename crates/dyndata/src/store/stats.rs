//! Sizes and counts of a store.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::{Store, StoreError, Tier};

/// Sizes and counts, for `stratus data ls` and cost reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreStats {
    pub dir: PathBuf,
    pub cold_location: String,
    /// Live samples.
    pub samples: u64,
    /// Deleted, not yet compacted.
    pub deleted: u64,
    pub hot_samples: u64,
    pub cold_samples: u64,
    pub hot_segments: u64,
    pub cold_segments: u64,
    /// Committed segment bytes (headers and unreclaimed records included).
    pub hot_bytes: u64,
    pub cold_bytes: u64,
    /// Bytes of live records.
    pub hot_live_bytes: u64,
    pub cold_live_bytes: u64,
    pub dim: Option<usize>,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    /// `(class name, live samples)`, by class id.
    pub classes: Vec<(String, u64)>,
    /// Reads from the cold tier by this handle, and their bytes.
    pub cold_reads: u64,
    pub cold_read_bytes: u64,
}

impl fmt::Display for StoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store       {}", self.dir.display())?;
        writeln!(
            f,
            "samples     {} live ({} hot, {} cold), {} deleted awaiting compaction",
            self.samples, self.hot_samples, self.cold_samples, self.deleted
        )?;
        match self.dim {
            Some(d) => writeln!(f, "features    {d}")?,
            None => writeln!(f, "features    - (empty store)")?,
        }
        match (self.min_timestamp, self.max_timestamp) {
            (Some(a), Some(b)) => writeln!(f, "time        {a}..={b}")?,
            _ => writeln!(f, "time        -")?,
        }
        writeln!(
            f,
            "hot tier    {} segments, {} bytes ({} live)",
            self.hot_segments, self.hot_bytes, self.hot_live_bytes
        )?;
        writeln!(
            f,
            "cold tier   {} segments, {} bytes ({} live) in {}",
            self.cold_segments, self.cold_bytes, self.cold_live_bytes, self.cold_location
        )?;
        let classes: Vec<String> = self
            .classes
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect();
        write!(f, "classes     {}", classes.join(", "))
    }
}

impl Store {
    /// Counts and sizes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats {
            dir: self.dir.clone(),
            cold_location: self.cold.describe(),
            dim: self.dim,
            cold_reads: self.cold_reads.load(Ordering::Relaxed),
            cold_read_bytes: self.cold_read_bytes.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        {
            let mut stmt = self.db.prepare(
                "SELECT tier, deleted, COUNT(*), COALESCE(SUM(len), 0) FROM samples GROUP BY tier, deleted",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let tier = Tier::from_code(r.get(0)?);
                let deleted: i64 = r.get(1)?;
                let count = r.get::<_, i64>(2)? as u64;
                let bytes = r.get::<_, i64>(3)? as u64;
                match (deleted != 0, tier) {
                    (true, _) => s.deleted += count,
                    (false, Tier::Hot) => {
                        s.hot_samples += count;
                        s.hot_live_bytes += bytes;
                    }
                    (false, Tier::Cold) => {
                        s.cold_samples += count;
                        s.cold_live_bytes += bytes;
                    }
                }
            }
        }
        s.samples = s.hot_samples + s.cold_samples;
        {
            let mut stmt = self.db.prepare(
                "SELECT tier, COUNT(*), COALESCE(SUM(len), 0) FROM segments GROUP BY tier",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let count = r.get::<_, i64>(1)? as u64;
                let bytes = r.get::<_, i64>(2)? as u64;
                match Tier::from_code(r.get(0)?) {
                    Tier::Hot => (s.hot_segments, s.hot_bytes) = (count, bytes),
                    Tier::Cold => (s.cold_segments, s.cold_bytes) = (count, bytes),
                }
            }
        }
        (s.min_timestamp, s.max_timestamp) = self.db.query_row(
            "SELECT MIN(ts), MAX(ts) FROM samples WHERE deleted = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stmt = self.db.prepare(
            "SELECT label, COUNT(*) FROM samples WHERE deleted = 0 GROUP BY label ORDER BY label",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (label, count) = row?;
            s.classes.push((self.labels.name(label), count as u64));
        }
        Ok(s)
    }
}
