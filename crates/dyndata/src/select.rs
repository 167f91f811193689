//! Data selection: importance scores and the subsets trained on. Pure.
//!
//! All inputs are contiguous row-major `&[f32]` matrices (`n × k`
//! probabilities, `n × dim` embeddings or features) so scoring runs over a
//! whole window at once. Every selection is returned as [`Selected`]
//! `(index, weight)` sorted by index.
//!
//! # Weights
//!
//! A trainer minimises the weighted mean loss over the subset `S` of size
//! `m`, `(1/m) Σ_{i∈S} w_i ℓ_i`. Weights are chosen so that this estimates
//! the mean loss over all `N` candidates, `(1/N) Σ_i ℓ_i`, and average about 1.
//!
//! # Sampling without replacement in proportion to a score
//!
//! [`sample_proportional`] uses **randomised systematic πps sampling**
//! (Madow 1949; Hartley & Rao 1962), which draws exactly `m` distinct items
//! with *exact* inclusion probabilities `π_i`:
//!
//! 1. Scores are floored at [`SCORE_FLOOR`] × their mean, so every item has
//!    `π_i > 0` (needed for unbiasedness); all-zero scores mean uniform.
//! 2. `π_i = min(1, c·s_i)` with `c` chosen so that `Σ π_i = m` (items
//!    whose share would exceed 1 are taken with certainty and `c` is
//!    recomputed over the rest).
//! 3. The items are put in a random order (seeded), laid end to end as
//!    intervals of length `π_i` on `[0, m)`, and the items whose interval
//!    holds one of the points `u, u+1, ..., u+m−1` (`u ~ U[0,1)`) are taken.
//!    Each interval is at most 1 long, so it holds a point with probability
//!    exactly `π_i`, and never two.
//!
//! With `p_i = π_i / m` (the per-draw selection probability, `Σ p_i = 1`),
//! each kept item gets weight `w_i = 1/(N·p_i) = m/(N·π_i)`. Then
//! `E[(1/m) Σ_{i∈S} w_i x_i] = (1/m) Σ_i π_i · m/(N π_i) x_i = (1/N) Σ_i x_i`
//! for any vector `x` (the Horvitz–Thompson estimator): the loss estimate is
//! unbiased. Uniform sampling is the special case `w_i = 1`.
//!
//! # Strategies
//!
//! | strategy | candidates | how | weight |
//! |---|---|---|---|
//! | `all` | everything | all | 1 |
//! | `new_data` | since the last trigger | all | 1 |
//! | `uniform` | everything | uniform without replacement | 1 |
//! | `freshness` | everything | ∝ `2^(−r/m)`, `r` = samples newer than it | 1 (biased towards new data on purpose) |
//! | `loss` | everything | ∝ per-sample loss | unbiased |
//! | `gradnorm` | everything | ∝ last-layer gradient norm | unbiased |
//! | `uncertainty_margin` | everything | ∝ `1 − (p₁ − p₂)` | unbiased |
//! | `uncertainty_entropy` | everything | ∝ `−Σ p log p` | unbiased |
//! | `kcenter` | everything | k-center greedy per class and chunk | 1 |
//! | `craig` | everything | facility-location greedy per class and chunk | cluster size × m/N |

use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A selection strategy (the `selection.strategy` of a pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    All,
    NewData,
    Uniform,
    Freshness,
    Loss,
    GradNorm,
    UncertaintyMargin,
    UncertaintyEntropy,
    KCenter,
    Craig,
}

impl Strategy {
    /// Every strategy, in documentation order.
    pub const ALL: [Strategy; 10] = [
        Strategy::All,
        Strategy::NewData,
        Strategy::Uniform,
        Strategy::Freshness,
        Strategy::Loss,
        Strategy::GradNorm,
        Strategy::UncertaintyMargin,
        Strategy::UncertaintyEntropy,
        Strategy::KCenter,
        Strategy::Craig,
    ];

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::All => "all",
            Strategy::NewData => "new_data",
            Strategy::Uniform => "uniform",
            Strategy::Freshness => "freshness",
            Strategy::Loss => "loss",
            Strategy::GradNorm => "gradnorm",
            Strategy::UncertaintyMargin => "uncertainty_margin",
            Strategy::UncertaintyEntropy => "uncertainty_entropy",
            Strategy::KCenter => "kcenter",
            Strategy::Craig => "craig",
        }
    }

    /// Whether the strategy samples in proportion to a model-based score
    /// (and so needs a forward pass over the candidates).
    pub fn needs_model(self) -> bool {
        matches!(
            self,
            Strategy::Loss
                | Strategy::GradNorm
                | Strategy::UncertaintyMargin
                | Strategy::UncertaintyEntropy
        )
    }
}

/// One kept sample: its index among the candidates and its loss weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub index: usize,
    pub weight: f32,
}

/// Bad input to a scoring or selection function.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("score {index} is {score}; scores must be finite and >= 0")]
    InvalidScore { index: usize, score: f32 },
    #[error("label {label} of sample {index} is not a class in 0..{classes}")]
    Label {
        index: usize,
        label: i64,
        classes: usize,
    },
    #[error("{0} needs at least {1}")]
    TooSmall(&'static str, usize),
    #[error("budget {0} is not in (0, 1]")]
    Budget(f64),
    #[error("strategy {0} needs {1}")]
    Missing(&'static str, &'static str),
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), SelectError> {
    if expected == got {
        Ok(())
    } else {
        Err(SelectError::Length {
            what,
            expected,
            got,
        })
    }
}

fn class_of(label: i64, index: usize, k: usize) -> Result<usize, SelectError> {
    usize::try_from(label)
        .ok()
        .filter(|&c| c < k)
        .ok_or(SelectError::Label {
            index,
            label,
            classes: k,
        })
}

/// How many of `n` candidates a budget keeps: `round(n·budget)`, at least 1
/// when `n > 0`.
pub fn budget_size(n: usize, budget: f64) -> Result<usize, SelectError> {
    if !(budget > 0.0 && budget <= 1.0) {
        return Err(SelectError::Budget(budget));
    }
    Ok(((n as f64 * budget).round() as usize).clamp(n.min(1), n))
}

// ---------------------------------------------------------------- scores

/// Turns each row of `logits` (`n × k`) into probabilities in place.
pub fn softmax_rows(logits: &mut [f32], k: usize) {
    if k == 0 {
        return;
    }
    for row in logits.chunks_exact_mut(k) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// Cross-entropy `−ln p_y` per sample, from probabilities (`n × k`).
pub fn loss_scores(
    probs: &[f32],
    k: usize,
    labels: &[i64],
    out: &mut [f32],
) -> Result<(), SelectError> {
    let n = labels.len();
    check_len("probabilities", n * k, probs.len())?;
    check_len("output", n, out.len())?;
    for (i, (row, o)) in probs.chunks_exact(k.max(1)).zip(out.iter_mut()).enumerate() {
        let y = class_of(labels[i], i, k)?;
        *o = -row[y].max(1e-12).ln();
    }
    Ok(())
}

/// GradNorm scores: the norm of the gradient of softmax cross-entropy with
/// respect to the last layer's weights and bias, in closed form.
///
/// For logits `z = W h + b`, `∂ℓ/∂z = p − e_y`, so `∂ℓ/∂W = (p − e_y) hᵀ`
/// and `∂ℓ/∂b = p − e_y`, and
/// `‖∇_{W,b} ℓ‖ = ‖p − e_y‖ · √(‖h‖² + 1)`: one forward pass, no backward.
/// `probs` is `n × k`, `emb` (the penultimate activations `h`) is `n × dim`.
pub fn gradnorm_scores(
    probs: &[f32],
    k: usize,
    labels: &[i64],
    emb: &[f32],
    dim: usize,
    out: &mut [f32],
) -> Result<(), SelectError> {
    let n = labels.len();
    check_len("probabilities", n * k, probs.len())?;
    check_len("embeddings", n * dim, emb.len())?;
    check_len("output", n, out.len())?;
    for i in 0..n {
        let y = class_of(labels[i], i, k)?;
        let p = &probs[i * k..(i + 1) * k];
        // ‖p − e_y‖² = Σ p_j² − 2 p_y + 1
        let sq: f32 = p.iter().map(|v| v * v).sum::<f32>() - 2.0 * p[y] + 1.0;
        let h = &emb[i * dim..(i + 1) * dim];
        let hh: f32 = h.iter().map(|v| v * v).sum();
        out[i] = (sq.max(0.0) * (hh + 1.0)).sqrt();
    }
    Ok(())
}

/// Margin uncertainty `1 − (p₁ − p₂)` (top two probabilities), in [0, 1].
pub fn margin_scores(probs: &[f32], k: usize, out: &mut [f32]) -> Result<(), SelectError> {
    if k < 2 {
        return Err(SelectError::TooSmall("margin uncertainty", 2));
    }
    check_len("probabilities", out.len() * k, probs.len())?;
    for (row, o) in probs.chunks_exact(k).zip(out.iter_mut()) {
        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &v in row {
            if v > a {
                b = a;
                a = v;
            } else if v > b {
                b = v;
            }
        }
        *o = (1.0 - (a - b)).clamp(0.0, 1.0);
    }
    Ok(())
}

/// Entropy `−Σ p ln p` of each row (`0 ln 0 = 0`), in [0, ln k].
pub fn entropy_scores(probs: &[f32], k: usize, out: &mut [f32]) -> Result<(), SelectError> {
    check_len("probabilities", out.len() * k, probs.len())?;
    for (row, o) in probs.chunks_exact(k.max(1)).zip(out.iter_mut()) {
        let h: f32 = row.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
        *o = h.max(0.0);
    }
    Ok(())
}

/// Freshness scores: `2^(−r/half_life)` where `r` is how many candidates
/// are newer (later timestamp; ties: later index is newer). The newest
/// scores 1 and a score halves every `half_life` samples back in time.
/// Rank-based, so irregular timestamps do not matter.
pub fn freshness_scores(
    timestamps: &[i64],
    half_life: f64,
    out: &mut [f32],
) -> Result<(), SelectError> {
    check_len("output", timestamps.len(), out.len())?;
    let mut order: Vec<usize> = (0..timestamps.len()).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse((timestamps[i], i)));
    let h = half_life.max(1e-9);
    for (r, &i) in order.iter().enumerate() {
        out[i] = (-(r as f64) / h).exp2() as f32;
    }
    Ok(())
}

// ---------------------------------------------------------------- sampling

/// Scores are floored at this fraction of their mean so that every item has
/// a positive inclusion probability.
pub const SCORE_FLOOR: f64 = 1e-3;

/// Exact inclusion probabilities `π` (`Σ π = m`) used by
/// [`sample_proportional`] for scores `scores` (see the module docs).
pub fn inclusion_probabilities(scores: &[f32], m: usize) -> Result<Vec<f64>, SelectError> {
    let n = scores.len();
    if let Some((index, &score)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
    {
        return Err(SelectError::InvalidScore { index, score });
    }
    if m >= n {
        return Ok(vec![1.0; n]);
    }
    if m == 0 {
        return Ok(vec![0.0; n]);
    }
    let total: f64 = scores.iter().map(|&s| s as f64).sum();
    if total <= 0.0 {
        return Ok(vec![m as f64 / n as f64; n]);
    }
    let floor = SCORE_FLOOR * total / n as f64;
    let s: Vec<f64> = scores.iter().map(|&x| (x as f64).max(floor)).collect();
    let total: f64 = s.iter().sum();
    let max = s.iter().copied().fold(0.0, f64::max);
    if m as f64 * max < total {
        // Nothing is taken with certainty: one pass.
        let c = m as f64 / total;
        return Ok(s.iter().map(|x| x * c).collect());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut rest = total;
    let mut certain = 0;
    while certain < m && (m - certain) as f64 * s[order[certain]] >= rest {
        rest -= s[order[certain]];
        certain += 1;
    }
    let c = (m - certain) as f64 / rest;
    let mut pi: Vec<f64> = s.iter().map(|x| (x * c).min(1.0)).collect();
    for &i in &order[..certain] {
        pi[i] = 1.0;
    }
    Ok(pi)
}

fn permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Systematic draw of `m` items with inclusion probabilities `pi`.
fn systematic(pi: &[f64], m: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let perm = permutation(pi.len(), rng);
    let mut point: f64 = rng.random();
    let mut cum = 0.0;
    let mut out = Vec::with_capacity(m);
    for (pos, &i) in perm.iter().enumerate() {
        cum += pi[i];
        if pos + 1 == perm.len() {
            cum = cum.max(m as f64); // absorb rounding: the last interval ends at m
        }
        if out.len() < m && point < cum {
            out.push(i);
            point += 1.0;
        }
    }
    out.sort_unstable();
    out
}

/// Draws `m` of `scores.len()` items without replacement in proportion to
/// their scores, with unbiased weights `m/(N·π_i)` (see the module docs).
pub fn sample_proportional(
    scores: &[f32],
    m: usize,
    seed: u64,
) -> Result<Vec<Selected>, SelectError> {
    let n = scores.len();
    let m = m.min(n);
    let pi = inclusion_probabilities(scores, m)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok(systematic(&pi, m, &mut rng)
        .into_iter()
        .map(|i| Selected {
            index: i,
            weight: (m as f64 / (n as f64 * pi[i])) as f32,
        })
        .collect())
}

/// Every candidate, weight 1.
pub fn all(n: usize) -> Vec<Selected> {
    (0..n)
        .map(|index| Selected { index, weight: 1.0 })
        .collect()
}

/// Candidates `first_new..n` (those since the last trigger, when the
/// candidates are in stream order), weight 1.
pub fn new_data(first_new: usize, n: usize) -> Vec<Selected> {
    (first_new.min(n)..n)
        .map(|index| Selected { index, weight: 1.0 })
        .collect()
}

/// `m` of `n` uniformly without replacement, weight 1.
pub fn uniform(n: usize, m: usize, seed: u64) -> Vec<Selected> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m = m.min(n);
    let mut p: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = rng.random_range(i..n);
        p.swap(i, j);
    }
    let mut idx = p[..m].to_vec();
    idx.sort_unstable();
    idx.into_iter()
        .map(|index| Selected { index, weight: 1.0 })
        .collect()
}

/// `m` samples drawn in proportion to [`freshness_scores`] with half-life
/// `m`, weight 1 (the bias towards recent data is the point).
pub fn freshness(timestamps: &[i64], m: usize, seed: u64) -> Result<Vec<Selected>, SelectError> {
    let mut s = vec![0.0; timestamps.len()];
    freshness_scores(timestamps, m.max(1) as f64, &mut s)?;
    let mut sel = sample_proportional(&s, m, seed)?;
    for x in &mut sel {
        x.weight = 1.0;
    }
    Ok(sel)
}

// ---------------------------------------------------------------- coresets

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-center greedy (Sener & Savarese 2018) over the rows of `features`
/// (`n × dim`): start from a seeded random point, then repeatedly take the
/// point farthest from everything taken. Returns indices (sorted), weight 1.
/// O(n·m·dim).
pub fn kcenter_greedy(
    features: &[f32],
    dim: usize,
    m: usize,
    seed: u64,
) -> Result<Vec<Selected>, SelectError> {
    let n = rows(features, dim)?;
    let m = m.min(n);
    if m == 0 {
        return Ok(Vec::new());
    }
    let row = |i: usize| &features[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let first = rng.random_range(0..n);
    let mut mind: Vec<f32> = (0..n).map(|i| dist2(row(i), row(first))).collect();
    let mut taken = vec![first];
    mind[first] = -1.0;
    while taken.len() < m {
        let (j, _) = mind
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("n > 0");
        taken.push(j);
        let c = row(j);
        for (i, d) in mind.iter_mut().enumerate() {
            if *d >= 0.0 {
                *d = d.min(dist2(row(i), c));
            }
        }
        mind[j] = -1.0;
    }
    taken.sort_unstable();
    Ok(taken
        .into_iter()
        .map(|index| Selected { index, weight: 1.0 })
        .collect())
}

fn rows(features: &[f32], dim: usize) -> Result<usize, SelectError> {
    if dim == 0 {
        return Err(SelectError::TooSmall("a feature matrix", 1));
    }
    if features.len() % dim != 0 {
        return Err(SelectError::Length {
            what: "features",
            expected: features.len() / dim * dim,
            got: features.len(),
        });
    }
    Ok(features.len() / dim)
}

/// CRAIG (Mirzasoleiman et al. 2020): greedy maximisation of the facility
/// location function `F(S) = Σ_i max_{j∈S} (d_max − ‖x_i − x_j‖)` with lazy
/// evaluations, then each chosen `j` is weighted by its cluster size `γ_j`
/// (the points nearer to it than to any other chosen point; ties to the
/// earlier choice). Returns `(index, γ_j)` sorted by index. O(n²·dim)
/// time and O(n²) memory: use [`coreset`] to split large sets.
pub fn craig(features: &[f32], dim: usize, m: usize) -> Result<Vec<(usize, usize)>, SelectError> {
    let n = rows(features, dim)?;
    let m = m.min(n);
    if m == 0 {
        return Ok(Vec::new());
    }
    let row = |i: usize| &features[i * dim..(i + 1) * dim];
    let mut d = vec![0f32; n * n];
    let mut dmax = 0f32;
    for i in 0..n {
        for j in (i + 1)..n {
            let v = dist2(row(i), row(j)).sqrt();
            d[i * n + j] = v;
            d[j * n + i] = v;
            dmax = dmax.max(v);
        }
    }
    // sim(i, j) = dmax − d(i, j) ≥ 0; best[i] = max over chosen j.
    let mut best = vec![0f32; n];
    let gain = |j: usize, best: &[f32]| -> f64 {
        (0..n)
            .map(|i| ((dmax - d[i * n + j]) - best[i]).max(0.0) as f64)
            .sum()
    };
    #[derive(PartialEq)]
    struct Cand(f64, usize);
    impl Eq for Cand {}
    impl PartialOrd for Cand {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Cand {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
        }
    }
    let mut heap: BinaryHeap<Cand> = (0..n).map(|j| Cand(gain(j, &best), j)).collect();
    let mut chosen = Vec::with_capacity(m);
    while chosen.len() < m {
        let Some(Cand(_, j)) = heap.pop() else { break };
        let g = gain(j, &best);
        // Submodularity: gains only shrink, so a fresh gain at least the
        // next stale bound is the true maximum.
        if heap.peek().is_none_or(|top| g >= top.0) {
            chosen.push(j);
            for (i, b) in best.iter_mut().enumerate() {
                *b = b.max(dmax - d[i * n + j]);
            }
        } else {
            heap.push(Cand(g, j));
        }
    }
    let mut size = vec![0usize; n];
    for i in 0..n {
        let mut arg = chosen[0];
        for &j in &chosen[1..] {
            if d[i * n + j] < d[i * n + arg] {
                arg = j;
            }
        }
        size[arg] += 1;
    }
    let mut out: Vec<(usize, usize)> = chosen.into_iter().map(|j| (j, size[j])).collect();
    out.sort_unstable();
    Ok(out)
}

/// Largest chunk a coreset is computed over (CRAIG holds a chunk² matrix).
pub const CORESET_CHUNK: usize = 1024;

/// A coreset of `m` of the rows of `features`, computed per class (when
/// `labels` is given) and per chunk of at most `chunk` consecutive rows;
/// each chunk gets its share of `m` by largest remainder. `KCenter` weights
/// are 1; `Craig` weights are cluster sizes × m/N, so they sum to about m.
pub fn coreset(
    strategy: Strategy,
    features: &[f32],
    dim: usize,
    labels: Option<&[i64]>,
    m: usize,
    chunk: usize,
    seed: u64,
) -> Result<Vec<Selected>, SelectError> {
    let n = rows(features, dim)?;
    if let Some(l) = labels {
        check_len("labels", n, l.len())?;
    }
    let m = m.min(n);
    let chunk = chunk.max(1);
    // Groups: classes in order of first appearance, then chunks.
    let mut groups: Vec<(i64, Vec<usize>)> = Vec::new();
    for i in 0..n {
        let c = labels.map_or(0, |l| l[i]);
        match groups.iter_mut().find(|g| g.0 == c) {
            Some(g) => g.1.push(i),
            None => groups.push((c, vec![i])),
        }
    }
    let class_sizes: Vec<usize> = groups.iter().map(|g| g.1.len()).collect();
    let mut parts: Vec<Vec<usize>> = Vec::new();
    let mut part_class = Vec::new();
    for (c, (_, idx)) in groups.iter().enumerate() {
        for ch in idx.chunks(chunk) {
            parts.push(ch.to_vec());
            part_class.push(c);
        }
    }
    // m over the classes, then each class's share over its chunks.
    let class_share = apportion(m, &class_sizes);
    let mut share = Vec::with_capacity(parts.len());
    for (c, &k) in class_share.iter().enumerate() {
        let sizes: Vec<usize> = parts
            .iter()
            .zip(&part_class)
            .filter(|(_, &pc)| pc == c)
            .map(|(p, _)| p.len())
            .collect();
        share.extend(apportion(k, &sizes));
    }
    let mut out = Vec::with_capacity(m);
    let mut sub = Vec::new();
    for (pi, (part, &k)) in parts.iter().zip(&share).enumerate() {
        if k == 0 {
            continue;
        }
        sub.clear();
        for &i in part {
            sub.extend_from_slice(&features[i * dim..(i + 1) * dim]);
        }
        match strategy {
            Strategy::Craig => {
                for (j, size) in craig(&sub, dim, k)? {
                    out.push(Selected {
                        index: part[j],
                        weight: (size as f64 * m as f64 / n as f64) as f32,
                    });
                }
            }
            _ => {
                let s = seed ^ (pi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for x in kcenter_greedy(&sub, dim, k, s)? {
                    out.push(Selected {
                        index: part[x.index],
                        weight: 1.0,
                    });
                }
            }
        }
    }
    out.sort_unstable_by_key(|s| s.index);
    Ok(out)
}

/// Splits `total` over groups in proportion to `sizes` by largest
/// remainder (ties to the earlier group), never more than a group's size.
fn apportion(total: usize, sizes: &[usize]) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    let total = total.min(n);
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let quotas: Vec<f64> = sizes
        .iter()
        .map(|&s| total as f64 * s as f64 / n as f64)
        .collect();
    let mut share: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut left = total - share.iter().sum::<usize>();
    let mut by_rem: Vec<usize> = (0..sizes.len()).collect();
    by_rem.sort_by(|&a, &b| {
        (quotas[b] - quotas[b].floor())
            .total_cmp(&(quotas[a] - quotas[a].floor()))
            .then(a.cmp(&b))
    });
    for &g in by_rem.iter().cycle().take(2 * sizes.len()) {
        if left == 0 {
            break;
        }
        if share[g] < sizes[g] {
            share[g] += 1;
            left -= 1;
        }
    }
    share
}

// ---------------------------------------------------------------- dispatch

/// What a strategy may need about the candidates (in stream order).
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidates<'a> {
    /// Number of candidates.
    pub n: usize,
    /// `n × dim` features (coresets).
    pub features: &'a [f32],
    pub dim: usize,
    pub labels: &'a [i64],
    pub timestamps: &'a [i64],
    /// Candidates `first_new..n` arrived since the last trigger.
    pub first_new: usize,
    /// `n × classes` predicted probabilities (model-based strategies).
    pub probs: Option<&'a [f32]>,
    pub classes: usize,
    /// `n × emb_dim` penultimate activations (gradnorm).
    pub embeddings: Option<&'a [f32]>,
    pub emb_dim: usize,
}

/// Runs `strategy` with `budget` over the candidates.
pub fn select(
    strategy: Strategy,
    budget: f64,
    c: &Candidates<'_>,
    seed: u64,
) -> Result<Vec<Selected>, SelectError> {
    let m = budget_size(c.n, budget)?;
    let probs = || {
        c.probs
            .ok_or(SelectError::Missing(strategy.name(), "probabilities"))
    };
    let mut scores = vec![0f32; c.n];
    match strategy {
        Strategy::All => return Ok(all(c.n)),
        Strategy::NewData => return Ok(new_data(c.first_new, c.n)),
        Strategy::Uniform => return Ok(uniform(c.n, m, seed)),
        Strategy::Freshness => {
            check_len("timestamps", c.n, c.timestamps.len())?;
            return freshness(c.timestamps, m, seed);
        }
        Strategy::KCenter | Strategy::Craig => {
            check_len("features", c.n * c.dim, c.features.len())?;
            return coreset(
                strategy,
                c.features,
                c.dim,
                Some(c.labels).filter(|l| l.len() == c.n),
                m,
                CORESET_CHUNK,
                seed,
            );
        }
        Strategy::Loss => loss_scores(probs()?, c.classes, c.labels, &mut scores)?,
        Strategy::GradNorm => {
            let emb = c
                .embeddings
                .ok_or(SelectError::Missing("gradnorm", "embeddings"))?;
            gradnorm_scores(probs()?, c.classes, c.labels, emb, c.emb_dim, &mut scores)?
        }
        Strategy::UncertaintyMargin => margin_scores(probs()?, c.classes, &mut scores)?,
        Strategy::UncertaintyEntropy => entropy_scores(probs()?, c.classes, &mut scores)?,
    }
    sample_proportional(&scores, m, seed)
}

#[cfg(test)]
mod tests;
