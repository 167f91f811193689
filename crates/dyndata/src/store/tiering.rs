//! Moving records between the hot and the cold tier, by importance score
//! or by recency (see [`TierPolicy`]).

use rusqlite::params;

use super::ingest::{encode, encode_all};
use super::{meta_set, upsert_segment, CompactReport, Entry, Store, StoreError, Tier};
use crate::segment::{self, HEADER_LEN};

/// Which live samples [`Store::retier`] keeps hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierPolicy {
    /// The highest latest importance score first (see
    /// [`Store::set_scores`]); samples never scored count as most important
    /// (they are new since the last scoring), and ties go to the newer
    /// sample. With no scores at all this is recency.
    #[default]
    Importance,
    /// The newest first (timestamp, then key); scores are ignored.
    Recency,
}

impl TierPolicy {
    /// The name a pipeline file uses.
    pub fn name(self) -> &'static str {
        match self {
            TierPolicy::Importance => "importance",
            TierPolicy::Recency => "recency",
        }
    }
}

/// What [`Store::retier`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierReport {
    pub demoted: usize,
    pub promoted: usize,
    pub hot: usize,
    pub cold: usize,
    pub compact: CompactReport,
}

/// A cold object being built by `demote`.
#[derive(Default)]
struct ColdObject {
    records: Vec<u8>,
    /// `(key, offset)` of each record.
    moved: Vec<(u64, u64)>,
}

impl Store {
    /// Moves samples to the cold tier (samples already cold are left).
    /// Returns how many moved. The hot bytes are reclaimed by
    /// [`Store::compact`].
    pub fn demote(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let locs = self.live_locs_in(keys, Tier::Hot)?;
        if locs.is_empty() {
            return Ok(0);
        }
        let batch = self.read_locs(&locs)?;
        // Cut into objects of at most max_segment_bytes.
        let mut objects = vec![ColdObject::default()];
        for s in batch.to_samples() {
            let cur = objects.last_mut().expect("non-empty");
            let rec_len = segment::record_len(s.features.len()) as u64;
            if !cur.moved.is_empty()
                && (HEADER_LEN + cur.records.len()) as u64 + rec_len > self.max_segment_bytes
            {
                objects.push(ColdObject::default());
            }
            let cur = objects.last_mut().expect("non-empty");
            cur.moved
                .push((s.key, (HEADER_LEN + cur.records.len()) as u64));
            encode(&s, &mut cur.records)?;
        }
        let mut written = Vec::new();
        for o in &objects {
            match self.write_segment(Tier::Cold, &o.records) {
                Ok(x) => written.push(x),
                Err(e) => {
                    for &(id, _) in &written {
                        let _ = self.remove_segment(id, Tier::Cold);
                    }
                    return Err(e);
                }
            }
        }
        let res = (|| {
            let tx = self.db.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "UPDATE samples SET segment = ?2, offset = ?3, tier = 1 WHERE key = ?1",
                )?;
                for (o, &(id, len)) in objects.iter().zip(&written) {
                    upsert_segment(&tx, id, Tier::Cold, len)?;
                    for &(key, off) in &o.moved {
                        up.execute(params![key as i64, id, off as i64])?;
                    }
                }
            }
            meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
            tx.commit()
        })();
        if let Err(e) = res {
            for &(id, _) in &written {
                let _ = self.remove_segment(id, Tier::Cold);
            }
            return Err(e.into());
        }
        Ok(locs.len())
    }

    /// Moves samples back to the hot tier (reading them from the cold tier
    /// counts as cold reads). Returns how many moved.
    pub fn promote(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let locs = self.live_locs_in(keys, Tier::Cold)?;
        if locs.is_empty() {
            return Ok(0);
        }
        let batch = self.read_locs(&locs)?;
        let (buf, bounds) = encode_all(batch.to_samples().iter(), 0)?;
        let appended = self.append_hot(&buf, &bounds)?;
        let res = (|| {
            let tx = self.db.transaction()?;
            for t in &appended.touched {
                upsert_segment(&tx, t.id, Tier::Hot, t.new_len)?;
            }
            {
                let mut up = tx.prepare_cached(
                    "UPDATE samples SET segment = ?2, offset = ?3, tier = 0 WHERE key = ?1",
                )?;
                for (l, &(seg, off)) in locs.iter().zip(&appended.locs) {
                    up.execute(params![l.key as i64, seg, off as i64])?;
                }
            }
            meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
            tx.commit()
        })();
        if let Err(e) = res {
            self.undo_append(&appended);
            return Err(e.into());
        }
        Ok(locs.len())
    }

    /// Keeps the first `hot_fraction` of the live samples hot, in the order
    /// `policy` gives, and the rest cold, then compacts.
    pub fn retier(
        &mut self,
        hot_fraction: f64,
        policy: TierPolicy,
    ) -> Result<TierReport, StoreError> {
        if !(0.0..=1.0).contains(&hot_fraction) {
            return Err(StoreError::Invalid(format!(
                "hot fraction must be in [0, 1], got {hot_fraction}"
            )));
        }
        let mut entries = self.entries()?;
        let newer_first =
            |a: &Entry, b: &Entry| b.timestamp.cmp(&a.timestamp).then(b.key.cmp(&a.key));
        match policy {
            TierPolicy::Importance => entries.sort_by(|a, b| {
                let sa = a.score.unwrap_or(f32::INFINITY);
                let sb = b.score.unwrap_or(f32::INFINITY);
                sb.total_cmp(&sa).then(newer_first(a, b))
            }),
            TierPolicy::Recency => entries.sort_by(newer_first),
        }
        let n_hot = ((entries.len() as f64) * hot_fraction).round() as usize;
        let promote: Vec<u64> = entries[..n_hot]
            .iter()
            .filter(|e| e.tier == Tier::Cold)
            .map(|e| e.key)
            .collect();
        let demote: Vec<u64> = entries[n_hot..]
            .iter()
            .filter(|e| e.tier == Tier::Hot)
            .map(|e| e.key)
            .collect();
        let demoted = self.demote(&demote)?;
        let promoted = self.promote(&promote)?;
        let compact = self.compact()?;
        Ok(TierReport {
            demoted,
            promoted,
            hot: n_hot,
            cold: entries.len() - n_hot,
            compact,
        })
    }
}
