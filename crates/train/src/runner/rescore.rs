//! `tiering.rescore: hot`: a scoring selection that reads and re-scores
//! only the hot samples (and any never scored), while each cold sample
//! keeps the score it had when it was last scored and is read only if the
//! draw selects it. Where the tiering policy keeps the high scores hot,
//! the draw rarely reaches into the cold tier.
//!
//! ```text
//!   entries ──► hot or unscored ──read──► forward pass ──► fresh scores ─┐
//!           └─► cold, scored ─────────────────────────► stored scores ───┴─► sample_proportional
//!                                                                              │
//!        selected: rows already read  +  cold rows read now (cold reads) ◄─────┘
//! ```

use stratus_dyndata::select::{self, Selected, Strategy};
use stratus_dyndata::{Batch, Entry, Tier};

use super::{RunError, Runner};

/// What [`Runner::select_rescoring_hot`] picked.
pub(super) struct HotSelection {
    /// Indices into `rows` (not into the candidates), with their weights.
    pub selected: Vec<Selected>,
    /// The selected samples' rows, in the order of `selected`.
    pub rows: Batch,
    /// The fresh scores, by key, to record in the store.
    pub scores: Vec<(u64, f32)>,
}

/// Candidates that must be (re-)scored: hot, or never scored.
pub(super) fn fresh_indices(entries: &[Entry]) -> Vec<usize> {
    (0..entries.len())
        .filter(|&i| entries[i].tier == Tier::Hot || entries[i].score.is_none())
        .collect()
}

impl Runner<'_> {
    pub(super) fn select_rescoring_hot(
        &self,
        entries: &[Entry],
        strategy: Strategy,
        budget: f64,
        seed: u64,
    ) -> Result<HotSelection, RunError> {
        let n = entries.len();
        let fresh = fresh_indices(entries);
        let fresh_keys: Vec<u64> = fresh.iter().map(|&i| entries[i].key).collect();
        let batch = self.store.read(&fresh_keys)?;
        let fresh_scores = if fresh.is_empty() {
            Vec::new()
        } else {
            self.importance_scores(strategy, &batch.features, &batch.labels)?
        };
        // Candidate index -> row of `batch`.
        let mut row_of = vec![usize::MAX; n];
        let mut s: Vec<f32> = entries.iter().map(|e| e.score.unwrap_or(0.0)).collect();
        for (row, &i) in fresh.iter().enumerate() {
            row_of[i] = row;
            s[i] = fresh_scores[row];
        }
        let m = select::budget_size(n, budget).map_err(|e| self.select_err(e))?;
        let picked = select::sample_proportional(&s, m, seed).map_err(|e| self.select_err(e))?;
        let cold: Vec<u64> = picked
            .iter()
            .filter(|p| row_of[p.index] == usize::MAX)
            .map(|p| entries[p.index].key)
            .collect();
        let cold_rows = if cold.is_empty() {
            Batch::new(batch.dim)
        } else {
            self.store.read(&cold)?
        };
        let mut rows = Batch::new(batch.dim);
        let mut next_cold = 0;
        let mut selected = Vec::with_capacity(picked.len());
        for (j, p) in picked.iter().enumerate() {
            let (b, r) = match row_of[p.index] {
                usize::MAX => {
                    next_cold += 1;
                    (&cold_rows, next_cold - 1)
                }
                r => (&batch, r),
            };
            rows.keys.push(b.keys[r]);
            rows.timestamps.push(b.timestamps[r]);
            rows.labels.push(b.labels[r]);
            rows.features.extend_from_slice(b.row(r));
            selected.push(Selected {
                index: j,
                weight: p.weight,
            });
        }
        Ok(HotSelection {
            selected,
            rows,
            scores: fresh_keys.into_iter().zip(fresh_scores).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: u64, score: Option<f32>, tier: Tier) -> Entry {
        Entry {
            key,
            timestamp: key as i64,
            label: 0,
            score,
            tier,
        }
    }

    #[test]
    fn hot_and_never_scored_samples_are_rescored_cold_scored_ones_are_not() {
        let e = [
            entry(0, Some(1.0), Tier::Cold),
            entry(1, None, Tier::Cold),
            entry(2, Some(0.5), Tier::Hot),
            entry(3, None, Tier::Hot),
            entry(4, Some(9.0), Tier::Cold),
        ];
        assert_eq!(fresh_indices(&e), vec![1, 2, 3]);
        assert!(fresh_indices(&[]).is_empty());
    }
}
