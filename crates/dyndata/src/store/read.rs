//! Reading records back by key, with nearby records of a segment merged into
//! one read and every record's CRC checked against the index.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use rusqlite::OptionalExtension;

use super::{io_err, seg_name, Loc, Store, StoreError, Tier};
use crate::segment;
use crate::Batch;

/// Reads of records closer than this are merged into one read.
const READ_GAP: u64 = 64 << 10;

/// Largest single merged read.
const MAX_READ: u64 = 16 << 20;

impl Store {
    fn loc_of(&self, key: u64) -> Result<Loc, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT segment, offset, len, tier FROM samples WHERE key = ?1 AND deleted = 0",
        )?;
        stmt.query_row([key as i64], |r| {
            Ok(Loc {
                key,
                segment: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                len: r.get::<_, i64>(2)? as u64,
                tier: Tier::from_code(r.get(3)?),
            })
        })
        .optional()?
        .ok_or(StoreError::NotFound(key))
    }

    /// Reads samples by key, in the order given. A missing or deleted key is
    /// an error. Each record's CRC is checked.
    pub fn read(&self, keys: &[u64]) -> Result<Batch, StoreError> {
        let locs = self.live_locs(keys)?;
        self.read_locs(&locs)
    }

    pub(super) fn read_bytes(
        &self,
        seg: i64,
        tier: Tier,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(seg));
                let f = File::open(&path).map_err(io_err("open segment", &path))?;
                let mut buf = vec![0; len as usize];
                f.read_exact_at(&mut buf, offset)
                    .map_err(io_err("read segment", &path))?;
                Ok(buf)
            }
            Tier::Cold => {
                let buf = self.cold.get_range(&seg_name(seg), offset, len)?;
                self.cold_reads.fetch_add(1, Ordering::Relaxed);
                self.cold_read_bytes.fetch_add(len, Ordering::Relaxed);
                Ok(buf)
            }
        }
    }

    /// Reads records, merging nearby ones of a segment into one read.
    pub(super) fn read_locs(&self, locs: &[Loc]) -> Result<Batch, StoreError> {
        let n = locs.len();
        let dim = self.dim.unwrap_or(0);
        let mut out = Batch {
            dim,
            keys: vec![0; n],
            timestamps: vec![0; n],
            labels: vec![0; n],
            features: vec![0.0; n * dim],
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| (locs[i].segment, locs[i].offset));
        let mut i = 0;
        while i < n {
            let first = locs[order[i]];
            let start = first.offset;
            let mut end = start + first.len;
            let mut j = i + 1;
            while j < n {
                let l = locs[order[j]];
                if l.segment != first.segment
                    || l.offset > end + READ_GAP
                    || l.offset + l.len - start > MAX_READ
                {
                    break;
                }
                end = end.max(l.offset + l.len);
                j += 1;
            }
            let buf = self.read_bytes(first.segment, first.tier, start, end - start)?;
            for &slot in &order[i..j] {
                let l = locs[slot];
                let at = (l.offset - start) as usize;
                let bad = |source| StoreError::Segment {
                    segment: l.segment,
                    offset: l.offset,
                    source,
                };
                let r = segment::decode(&buf[at..at + l.len as usize]).map_err(bad)?;
                if r.key != l.key || r.total_len as u64 != l.len || r.dim() != dim {
                    return Err(StoreError::Corrupt(format!(
                        "segment {} offset {} holds key {} ({} features), the index expects key {}",
                        l.segment,
                        l.offset,
                        r.key,
                        r.dim(),
                        l.key
                    )));
                }
                out.keys[slot] = r.key;
                out.timestamps[slot] = r.timestamp;
                out.labels[slot] = r.label;
                r.features_to(&mut out.features[slot * dim..(slot + 1) * dim]);
            }
            i = j;
        }
        Ok(out)
    }

    /// Index lookups: one query per key for a few keys, one scan of the
    /// index when the keys are a good part of it.
    fn live_locs(&self, keys: &[u64]) -> Result<Vec<Loc>, StoreError> {
        if keys.len() < 1024 {
            return keys.iter().map(|&k| self.loc_of(k)).collect();
        }
        let rows: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))?;
        if (keys.len() as i64) * 16 < rows {
            return keys.iter().map(|&k| self.loc_of(k)).collect();
        }
        let mut all = HashMap::with_capacity(rows as usize);
        let mut stmt = self.db.prepare_cached(
            "SELECT key, segment, offset, len, tier FROM samples WHERE deleted = 0",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let key = r.get::<_, i64>(0)? as u64;
            all.insert(
                key,
                Loc {
                    key,
                    segment: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    len: r.get::<_, i64>(3)? as u64,
                    tier: Tier::from_code(r.get(4)?),
                },
            );
        }
        keys.iter()
            .map(|k| all.get(k).copied().ok_or(StoreError::NotFound(*k)))
            .collect()
    }

    /// The live samples among `keys` that sit in `tier`, once each, by key.
    pub(super) fn live_locs_in(&self, keys: &[u64], tier: Tier) -> Result<Vec<Loc>, StoreError> {
        let mut locs: Vec<Loc> = self
            .live_locs(keys)?
            .into_iter()
            .filter(|l| l.tier == tier)
            .collect();
        locs.sort_by_key(|l| l.key);
        locs.dedup_by_key(|l| l.key);
        Ok(locs)
    }
}
