//! Retraining triggers. Pure state machines fed the stream in batches.
//!
//! [`Trigger::observe`] takes the next samples of the stream and returns the
//! **cut points** where the trigger fired: a cut `c` (in `0..=len`) means
//! "retrain on everything up to and including the first `c` samples of this
//! batch". Cuts are ascending and distinct. Only a time trigger can cut at
//! 0 (a time boundary passed between the previous batch and this one).
//!
//! - `every_samples: N`: after every N-th sample of the stream.
//! - `every_time: T`: boundaries at `t0 + kT` (`t0` = first timestamp).
//!   When a sample at or past the next boundary arrives, the trigger fires
//!   just before it (the data before the boundary), once, however many
//!   boundaries a gap skipped.
//! - `drift`: the stream is cut into detection windows of W samples. The
//!   first window is the reference. Each later window is compared to the
//!   reference; when the distance exceeds the threshold the trigger fires
//!   after that window, which becomes the new reference (the data the new
//!   model saw). Otherwise the reference stays, so slow drift accumulates.
//!   The first model is the trainer's business (it trains on the first
//!   window); the trigger only fires on drift.
//!   - `mmd`: unbiased MMD² (Gretton et al. 2012) with the RBF kernel
//!     `k(x, y) = exp(−‖x − y‖² / (2σ²))`, the bandwidth by the median
//!     heuristic: `σ²` = median squared distance between distinct points of
//!     the pooled sample (mean of the non-zero ones if the median is 0).
//!     Windows over [`MAX_MMD_POINTS`] are subsampled evenly.
//!   - `ks`: the largest two-sample Kolmogorov–Smirnov statistic
//!     `D = sup |F_ref − F_cur|` over the features, in [0, 1].
//! - `performance`: the trainer reports, per sample, whether the current
//!   model predicted it correctly (before training on it). When the last W
//!   predictions are all in and their accuracy is below `min_accuracy`, the
//!   trigger fires and starts a fresh window for the new model.
//! - `drift: {detector: ...}`: ADWIN, DDM, EDDM or Page-Hinkley
//!   (`stratus-learn`) fed the current model's 0/1 error per sample; fires
//!   after the sample where the detector says Drift. [`Trigger::drift_cuts`]
//!   tells which cuts a detector caused (the pipeline's drift action applies
//!   to those).
//! - `any_of` / `all_of` with `min_gap`: see `compose`.

use crate::spec::TriggerSpec;

mod compose;

/// The drift distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftMetric {
    Mmd,
    Ks,
}

/// Windows larger than this are subsampled (evenly) for MMD, which is
/// quadratic in the window size.
pub const MAX_MMD_POINTS: usize = 1000;

/// Bad input to a trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the performance trigger needs per-sample correctness (Observation::correct)")]
    NeedsCorrectness,
    #[error(
        "trigger.drift.feature: {index} is out of range; the data has {dim} features (0-based)"
    )]
    Feature { index: usize, dim: usize },
    #[error("feature count changed from {0} to {1}")]
    Dim(usize, usize),
}

/// The next samples of the stream, in stream order.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub timestamps: &'a [i64],
    /// `len × dim`, row-major.
    pub features: &'a [f32],
    pub dim: usize,
    /// Whether the current model predicted each sample correctly.
    pub correct: Option<&'a [bool]>,
}

#[derive(Debug, Clone)]
enum State {
    EverySamples {
        every: u64,
        seen: u64,
    },
    EveryTime {
        every: i64,
        t0: Option<i64>,
        next: i64,
        since: u64,
    },
    Drift {
        metric: DriftMetric,
        window: usize,
        threshold: f64,
        dim: Option<usize>,
        reference: Option<Vec<f32>>,
        current: Vec<f32>,
    },
    Performance {
        min_accuracy: f64,
        window: usize,
        recent: std::collections::VecDeque<bool>,
        correct: usize,
    },
    Detector(stratus_learn::Detector, Option<usize>),
    Compose(compose::Compose),
}

/// A retraining trigger (see the module docs).
#[derive(Debug, Clone)]
pub struct Trigger {
    state: State,
    /// Distances computed so far (drift) or accuracies at full windows
    /// (performance), for reports.
    history: Vec<f64>,
    /// The cuts of the last `observe` that a drift detector caused.
    drift_cuts: Vec<usize>,
}

impl Trigger {
    pub fn new(spec: &TriggerSpec) -> Trigger {
        let state = match spec.clone() {
            TriggerSpec::EverySamples(n) => State::EverySamples {
                every: n.max(1),
                seen: 0,
            },
            TriggerSpec::EveryTime(t) => State::EveryTime {
                every: t.max(1),
                t0: None,
                next: 0,
                since: 0,
            },
            TriggerSpec::Drift {
                metric,
                window,
                threshold,
            } => State::Drift {
                metric,
                window: window.max(2),
                threshold,
                dim: None,
                reference: None,
                current: Vec::new(),
            },
            TriggerSpec::Performance {
                min_accuracy,
                window,
            } => State::Performance {
                min_accuracy,
                window: window.max(1),
                recent: Default::default(),
                correct: 0,
            },
            // The parser checked the parameters; a bad spec built by hand
            // falls back to the detector's defaults rather than panic.
            TriggerSpec::Detector {
                detector, feature, ..
            } => State::Detector(
                detector.build().unwrap_or_else(|_| {
                    stratus_learn::DetectorSpec::adwin()
                        .build()
                        .expect("defaults are valid")
                }),
                feature,
            ),
            TriggerSpec::Compose {
                all,
                triggers,
                min_gap,
            } => State::Compose(compose::Compose::new(all, &triggers, min_gap)),
        };
        Trigger {
            state,
            history: Vec::new(),
            drift_cuts: Vec::new(),
        }
    }

    /// The cuts of the last [`Trigger::observe`] that a drift detector caused.
    pub fn drift_cuts(&self) -> &[usize] {
        &self.drift_cuts
    }

    /// Drift distances or window accuracies computed so far, in order.
    pub fn history(&self) -> &[f64] {
        &self.history
    }

    /// Feeds the next samples; returns the cut points where it fired.
    pub fn observe(&mut self, obs: &Observation<'_>) -> Result<Vec<usize>, TriggerError> {
        let n = obs.timestamps.len();
        let mut cuts = Vec::new();
        self.drift_cuts.clear();
        match &mut self.state {
            State::Detector(det, Some(f)) => {
                use stratus_learn::{DriftDetector, DriftState};
                if *f >= obs.dim || obs.features.len() != n * obs.dim {
                    return Err(TriggerError::Feature {
                        index: *f,
                        dim: obs.dim,
                    });
                }
                for i in 0..n {
                    let x = f64::from(obs.features[i * obs.dim + *f]);
                    if det.update(x) == DriftState::Drift {
                        cuts.push(i + 1);
                    }
                }
                self.drift_cuts.clone_from(&cuts);
            }
            State::Detector(det, None) => {
                use stratus_learn::{DriftDetector, DriftState};
                let c = obs.correct.ok_or(TriggerError::NeedsCorrectness)?;
                if c.len() != n {
                    return Err(TriggerError::Length {
                        what: "correct",
                        expected: n,
                        got: c.len(),
                    });
                }
                for (i, &ok) in c.iter().enumerate() {
                    if det.update(f64::from(u8::from(!ok))) == DriftState::Drift {
                        cuts.push(i + 1);
                    }
                }
                self.drift_cuts.clone_from(&cuts);
            }
            State::Compose(c) => {
                let (cut, drift) = c.observe(obs)?;
                cuts = cut;
                self.drift_cuts = drift;
            }
            State::EverySamples { every, seen } => {
                for i in 0..n {
                    *seen += 1;
                    if *seen % *every == 0 {
                        cuts.push(i + 1);
                    }
                }
            }
            State::EveryTime {
                every,
                t0,
                next,
                since,
            } => {
                for (i, &ts) in obs.timestamps.iter().enumerate() {
                    let start = *t0.get_or_insert_with(|| {
                        *next = ts.saturating_add(*every);
                        ts
                    });
                    if ts >= *next {
                        if *since > 0 {
                            cuts.push(i);
                        }
                        *since = 0;
                        let k = (ts as i128 - start as i128).div_euclid(*every as i128) + 1;
                        *next = (start as i128 + k * *every as i128).min(i64::MAX as i128) as i64;
                    }
                    *since += 1;
                }
            }
            State::Drift {
                metric,
                window,
                threshold,
                dim,
                reference,
                current,
            } => {
                if obs.features.len() != n * obs.dim {
                    return Err(TriggerError::Length {
                        what: "features",
                        expected: n * obs.dim,
                        got: obs.features.len(),
                    });
                }
                let d = *dim.get_or_insert(obs.dim);
                if d != obs.dim {
                    return Err(TriggerError::Dim(d, obs.dim));
                }
                for i in 0..n {
                    current.extend_from_slice(&obs.features[i * d..(i + 1) * d]);
                    if current.len() < *window * d {
                        continue;
                    }
                    let cur = std::mem::take(current);
                    match reference {
                        None => *reference = Some(cur),
                        Some(r) => {
                            let dist = match metric {
                                DriftMetric::Mmd => mmd2_rbf(r, &cur, d),
                                DriftMetric::Ks => ks_max(r, &cur, d),
                            };
                            self.history.push(dist);
                            if dist > *threshold {
                                cuts.push(i + 1);
                                *reference = Some(cur);
                            }
                        }
                    }
                }
            }
            State::Performance {
                min_accuracy,
                window,
                recent,
                correct,
            } => {
                let c = obs.correct.ok_or(TriggerError::NeedsCorrectness)?;
                if c.len() != n {
                    return Err(TriggerError::Length {
                        what: "correct",
                        expected: n,
                        got: c.len(),
                    });
                }
                for (i, &ok) in c.iter().enumerate() {
                    recent.push_back(ok);
                    *correct += usize::from(ok);
                    if recent.len() > *window {
                        *correct -= usize::from(recent.pop_front().unwrap_or(false));
                    }
                    if recent.len() == *window {
                        let acc = *correct as f64 / *window as f64;
                        if acc < *min_accuracy {
                            self.history.push(acc);
                            cuts.push(i + 1);
                            recent.clear();
                            *correct = 0;
                        }
                    }
                }
            }
        }
        Ok(cuts)
    }
}

/// Evenly spaced rows, at most `max`.
fn subsample(x: &[f32], dim: usize, max: usize) -> Vec<&[f32]> {
    let n = x.len() / dim.max(1);
    let take = n.min(max);
    (0..take)
        .map(|j| {
            let i = j * n / take;
            &x[i * dim..(i + 1) * dim]
        })
        .collect()
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// The median-heuristic bandwidth `σ²` for the pooled rows of `x` and `y`.
pub fn median_bandwidth2(x: &[f32], y: &[f32], dim: usize) -> f64 {
    let pooled: Vec<&[f32]> = subsample(x, dim, MAX_MMD_POINTS)
        .into_iter()
        .chain(subsample(y, dim, MAX_MMD_POINTS))
        .collect();
    let mut d: Vec<f64> = Vec::with_capacity(pooled.len() * pooled.len() / 2);
    for i in 0..pooled.len() {
        for j in (i + 1)..pooled.len() {
            d.push(dist2(pooled[i], pooled[j]));
        }
    }
    if d.is_empty() {
        return 1.0;
    }
    let mid = d.len() / 2;
    let (_, &mut median, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
    if median > 0.0 {
        return median;
    }
    let nz: Vec<f64> = d.into_iter().filter(|&v| v > 0.0).collect();
    if nz.is_empty() {
        1.0
    } else {
        nz.iter().sum::<f64>() / nz.len() as f64
    }
}

/// Unbiased MMD² between the rows of `x` and `y` (`· × dim`) with an RBF
/// kernel of median-heuristic bandwidth. Near 0 (possibly slightly
/// negative) for samples of one distribution.
pub fn mmd2_rbf(x: &[f32], y: &[f32], dim: usize) -> f64 {
    let xs = subsample(x, dim, MAX_MMD_POINTS);
    let ys = subsample(y, dim, MAX_MMD_POINTS);
    let (n, m) = (xs.len(), ys.len());
    if n < 2 || m < 2 {
        return 0.0;
    }
    let s2 = median_bandwidth2(x, y, dim);
    let k = |a: &[f32], b: &[f32]| (-dist2(a, b) / (2.0 * s2)).exp();
    let within = |v: &[&[f32]]| {
        let mut s = 0.0;
        for i in 0..v.len() {
            for j in (i + 1)..v.len() {
                s += 2.0 * k(v[i], v[j]);
            }
        }
        s / (v.len() * (v.len() - 1)) as f64
    };
    let mut cross = 0.0;
    for a in &xs {
        for b in &ys {
            cross += k(a, b);
        }
    }
    within(&xs) + within(&ys) - 2.0 * cross / (n * m) as f64
}

/// The two-sample Kolmogorov–Smirnov statistic `sup |F_a − F_b|`.
pub fn ks_statistic(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable_by(f32::total_cmp);
    b.sort_unstable_by(f32::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The largest per-feature KS statistic between the rows of `x` and `y`.
pub fn ks_max(x: &[f32], y: &[f32], dim: usize) -> f64 {
    let mut col_a = Vec::with_capacity(x.len() / dim.max(1));
    let mut col_b = Vec::with_capacity(y.len() / dim.max(1));
    (0..dim)
        .map(|f| {
            col_a.clear();
            col_b.clear();
            col_a.extend(x.iter().skip(f).step_by(dim).copied());
            col_b.extend(y.iter().skip(f).step_by(dim).copied());
            ks_statistic(&col_a, &col_b)
        })
        .fold(0.0, f64::max)
}

/// Asymptotic p-value of a two-sample KS statistic `d` for sample sizes `n`
/// and `m` (Kolmogorov distribution with Stephens' small-sample correction).
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn obs<'a>(ts: &'a [i64], f: &'a [f32], dim: usize) -> Observation<'a> {
        Observation {
            timestamps: ts,
            features: f,
            dim,
            correct: None,
        }
    }

    #[test]
    fn every_samples_fires_after_each_nth() {
        let mut t = Trigger::new(&TriggerSpec::EverySamples(3));
        let cuts: Vec<Vec<usize>> = [2usize, 4, 3, 1]
            .iter()
            .map(|&len| {
                let ts = vec![0; len];
                t.observe(&obs(&ts, &[], 0)).unwrap()
            })
            .collect();
        // Samples 3, 6 and 9 of the stream: batch 2 index 0 → cut 1, cut 4; batch 3 cut 3.
        assert_eq!(cuts, vec![vec![], vec![1, 4], vec![3], vec![]]);
    }

    #[test]
    fn every_time_fires_before_the_sample_that_crosses() {
        let mut t = Trigger::new(&TriggerSpec::EveryTime(5));
        let a = t.observe(&obs(&[0, 1, 5, 9], &[], 0)).unwrap();
        // Boundary 10 is crossed by the first sample of the next batch (cut
        // 0); the gap over boundaries 15, 20 and 25 fires once.
        let b = t.observe(&obs(&[10, 11, 25, 26], &[], 0)).unwrap();
        let c = t.observe(&obs(&[29, 30], &[], 0)).unwrap();
        assert_eq!((a, b, c), (vec![2], vec![0, 2], vec![1]));
    }

    fn gaussian(rng: &mut ChaCha8Rng, n: usize, dim: usize, mean: f32) -> Vec<f32> {
        (0..n * dim)
            .map(|_| {
                // Box–Muller.
                let u1: f32 = rng.random_range(1e-7..1.0);
                let u2: f32 = rng.random();
                mean + (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    }

    /// Windows 1–3 from N(0,1), window 4 from N(3,1), 5–6 from N(3,1):
    /// fires exactly after window 4 (sample 200), and not again.
    #[test]
    fn drift_fires_after_the_shifted_window() {
        for (metric, threshold) in [(DriftMetric::Mmd, 0.1), (DriftMetric::Ks, 0.4)] {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let dim = 3;
            let mut stream = gaussian(&mut rng, 150, dim, 0.0);
            stream.extend(gaussian(&mut rng, 150, dim, 3.0));
            let ts: Vec<i64> = (0..300).collect();
            let mut t = Trigger::new(&TriggerSpec::Drift {
                metric,
                window: 50,
                threshold,
            });
            // Feed in uneven batches of 70.
            let mut fired = Vec::new();
            for start in (0..300).step_by(70) {
                let end = (start + 70).min(300);
                let cuts = t
                    .observe(&obs(&ts[start..end], &stream[start * dim..end * dim], dim))
                    .unwrap();
                fired.extend(cuts.into_iter().map(|c| start + c));
            }
            assert_eq!(fired, vec![200], "{metric:?}: history {:?}", t.history());
            assert_eq!(t.history().len(), 5);
        }
    }

    #[test]
    fn performance_fires_when_window_accuracy_drops() {
        let mut t = Trigger::new(&TriggerSpec::Performance {
            min_accuracy: 0.75,
            window: 4,
        });
        let c = [
            true, true, true, true,  // acc 1.0
            false, // last 4: T T T F = 0.75, not below
            false, // T T F F = 0.5 → fire at 6, reset
            true, true, false, // only 3 in the new window
            false, // T T F F = 0.5 → fire at 10
        ];
        let ts = [0i64; 10];
        let cuts = t
            .observe(&Observation {
                timestamps: &ts,
                features: &[],
                dim: 0,
                correct: Some(&c),
            })
            .unwrap();
        assert_eq!(cuts, vec![6, 10]);
        assert_eq!(t.history(), &[0.5, 0.5]);
        assert_eq!(
            t.observe(&obs(&ts, &[], 0)),
            Err(TriggerError::NeedsCorrectness)
        );
    }

    #[test]
    fn distances() {
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert!((ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
        assert!(ks_p_value(0.0, 100, 100) > 0.99);
        assert!(ks_p_value(0.5, 100, 100) < 1e-9);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let a = gaussian(&mut rng, 200, 2, 0.0);
        let b = gaussian(&mut rng, 200, 2, 0.0);
        let c = gaussian(&mut rng, 200, 2, 1.0);
        let same = mmd2_rbf(&a, &b, 2);
        let shifted = mmd2_rbf(&a, &c, 2);
        assert!(same.abs() < 0.02, "{same}");
        assert!(shifted > 0.1, "{shifted}");
        // Bandwidth of two points at distance 2 (and themselves): σ² = 4.
        assert_eq!(median_bandwidth2(&[0.0, 0.0], &[2.0, 0.0], 2), 4.0);
    }
}
