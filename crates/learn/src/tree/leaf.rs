//! A Hoeffding-tree leaf: class weights, one Gaussian per (attribute, class)
//! for the attributes it observes, naive-Bayes-adaptive prediction, and the
//! split search over `n_splits` candidate thresholds per attribute with the
//! information-gain merit and the Hoeffding bound.

use super::{LeafPrediction, TreeConfig};
use crate::gauss::Gauss;

#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) class_w: Vec<f64>,
    /// The attributes this leaf observes (all, or a random subspace).
    feats: Vec<u32>,
    /// `feats.len() * n_classes`, attribute-major.
    gauss: Vec<Gauss>,
    mc_correct: f64,
    nb_correct: f64,
    last_attempt: f64,
    active: bool,
    pub(crate) depth: u32,
}

/// The split a leaf chose: `x[feat] <= thr` goes left.
#[derive(Debug)]
pub(crate) struct Split {
    pub(crate) feat: u32,
    pub(crate) thr: f64,
    pub(crate) left: Vec<f64>,
    pub(crate) right: Vec<f64>,
}

/// Weighted entropy (bits) of a class distribution.
fn entropy(d: &[f64]) -> f64 {
    let mut h = 0.0;
    let mut sum = 0.0;
    for &v in d {
        if v > 0.0 {
            h -= v * v.log2();
            sum += v;
        }
    }
    if sum > 0.0 {
        (h + sum * sum.log2()) / sum
    } else {
        0.0
    }
}

/// Information gain of splitting `pre` into `l`/`r`; -inf when fewer than two
/// branches hold more than `min_frac` of the weight.
fn info_gain(pre: &[f64], l: &[f64], r: &[f64], min_frac: f64) -> f64 {
    let (wl, wr) = (l.iter().sum::<f64>(), r.iter().sum::<f64>());
    let total = wl + wr;
    if total <= 0.0 || wl / total <= min_frac || wr / total <= min_frac {
        return f64::NEG_INFINITY;
    }
    entropy(pre) - (wl * entropy(l) + wr * entropy(r)) / total
}

pub(crate) fn argmax(p: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in p.iter().enumerate() {
        if v > 0.0 && best.is_none_or(|b| v > p[b]) {
            best = Some(i);
        }
    }
    best
}

impl Leaf {
    pub(crate) fn new(class_w: Vec<f64>, feats: Vec<u32>, depth: u32) -> Leaf {
        let n = feats.len() * class_w.len();
        let last_attempt = class_w.iter().sum();
        Leaf {
            class_w,
            feats,
            gauss: vec![Gauss::default(); n],
            mc_correct: 0.0,
            nb_correct: 0.0,
            last_attempt,
            active: true,
            depth,
        }
    }

    pub(crate) fn total(&self) -> f64 {
        self.class_w.iter().sum()
    }

    fn is_pure(&self) -> bool {
        self.class_w.iter().filter(|&&w| w > 0.0).count() < 2
    }

    /// Majority-class scores: the normalised class weights.
    fn mc(&self, out: &mut [f64]) {
        let t = self.total();
        for (o, &w) in out.iter_mut().zip(&self.class_w) {
            *o = if t > 0.0 { w / t } else { 0.0 };
        }
    }

    /// Naive Bayes over the observed attributes (log-space); classes with no
    /// weight score 0, and attributes with no spread add nothing.
    #[allow(clippy::needless_range_loop)]
    fn nb(&self, x: &[f32], out: &mut [f64]) {
        let t = self.total();
        let nc = self.class_w.len();
        if t <= 0.0 {
            out.fill(0.0);
            return;
        }
        let mut max = f64::NEG_INFINITY;
        for c in 0..nc {
            if self.class_w[c] <= 0.0 {
                out[c] = f64::NEG_INFINITY;
                continue;
            }
            let mut ll = (self.class_w[c] / t).ln();
            for (k, &f) in self.feats.iter().enumerate() {
                if let Some(lp) = self.gauss[k * nc + c].log_pdf(f64::from(x[f as usize])) {
                    ll += lp;
                }
            }
            out[c] = ll;
            max = max.max(ll);
        }
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = if *o == f64::NEG_INFINITY {
                0.0
            } else {
                (*o - max).exp()
            };
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }

    /// Class scores into `out` (all 0 for an empty leaf).
    pub(crate) fn predict(&self, x: &[f32], how: LeafPrediction, out: &mut [f64]) {
        if self.uses_nb(how) {
            self.nb(x, out)
        } else {
            self.mc(out)
        }
    }

    fn uses_nb(&self, how: LeafPrediction) -> bool {
        match how {
            LeafPrediction::MajorityClass => false,
            // An inactive leaf dropped its Gaussians: it can only count classes.
            LeafPrediction::NaiveBayes => self.active,
            LeafPrediction::NaiveBayesAdaptive => self.active && self.nb_correct >= self.mc_correct,
        }
    }

    /// Learns `(x, y)` with weight `w`; `scratch` holds at least `n_classes`.
    pub(crate) fn learn(
        &mut self,
        x: &[f32],
        y: usize,
        w: f64,
        how: LeafPrediction,
        scratch: &mut [f64],
    ) {
        if self.active && how == LeafPrediction::NaiveBayesAdaptive {
            let out = &mut scratch[..self.class_w.len()];
            self.score_nba(x, y, w, out, None);
        }
        self.update(x, y, w);
    }

    /// Scores `x` into `out` exactly as [`Leaf::predict`] (before learning),
    /// then learns `(x, y)` with weight `w` (nothing when `w` is 0), reusing
    /// the naive-Bayes scores when the prediction computed them.
    pub(crate) fn predict_learn(
        &mut self,
        x: &[f32],
        y: usize,
        w: f64,
        how: LeafPrediction,
        out: &mut [f64],
        scratch: &mut [f64],
    ) {
        let nb = self.uses_nb(how);
        if nb {
            self.nb(x, out);
        } else {
            self.mc(out);
        }
        if w <= 0.0 {
            return;
        }
        if self.active && how == LeafPrediction::NaiveBayesAdaptive {
            let s = &mut scratch[..self.class_w.len()];
            self.score_nba(x, y, w, s, nb.then_some(&*out));
        }
        self.update(x, y, w);
    }

    /// The naive-Bayes-adaptive bookkeeping: would the majority class and
    /// naive Bayes each have been right? `nb` is naive Bayes's scores if known.
    fn score_nba(&mut self, x: &[f32], y: usize, w: f64, s: &mut [f64], nb: Option<&[f64]>) {
        self.mc(s);
        if self.total() <= 0.0 || argmax(s) == Some(y) {
            self.mc_correct += w;
        }
        let nb_right = match nb {
            Some(p) => argmax(p) == Some(y),
            None => {
                self.nb(x, s);
                argmax(s) == Some(y)
            }
        };
        if nb_right {
            self.nb_correct += w;
        }
    }

    fn update(&mut self, x: &[f32], y: usize, w: f64) {
        self.class_w[y] += w;
        if self.active {
            let nc = self.class_w.len();
            for (k, &f) in self.feats.iter().enumerate() {
                self.gauss[k * nc + y].update(f64::from(x[f as usize]), w);
            }
        }
    }

    /// Whether enough weight arrived since the last attempt to try a split.
    pub(crate) fn due(&self, grace_period: f64) -> bool {
        self.active && self.total() - self.last_attempt >= grace_period
    }

    pub(crate) fn deactivate(&mut self) {
        self.active = false;
        self.gauss = Vec::new();
    }

    /// River's `_attempt_to_split`: the best and second-best attribute
    /// (and the "no split" option) by information gain; split when their
    /// difference exceeds the Hoeffding bound or the bound is below `tau`.
    pub(crate) fn attempt_split(&mut self, cfg: &TreeConfig) -> Option<Split> {
        self.last_attempt = self.total();
        if self.is_pure() {
            return None;
        }
        let nc = self.class_w.len();
        let mut l = vec![0.0; nc];
        let mut r = vec![0.0; nc];
        // (merit, feature index in feats, threshold); the null split has merit -inf.
        let mut best: (f64, Option<(usize, f64)>) = (f64::NEG_INFINITY, None);
        let mut second = f64::NEG_INFINITY;
        for k in 0..self.feats.len() {
            let g = &self.gauss[k * nc..(k + 1) * nc];
            let (lo, hi) = g
                .iter()
                .filter(|g| g.w > 0.0)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), g| {
                    (lo.min(g.min), hi.max(g.max))
                });
            if lo >= hi {
                continue;
            }
            let bin = (hi - lo) / (f64::from(cfg.n_splits) + 1.0);
            let mut feat_best = (f64::NEG_INFINITY, 0.0);
            for i in 0..cfg.n_splits {
                let thr = lo + bin * (f64::from(i) + 1.0);
                if !(lo < thr && thr < hi) {
                    continue;
                }
                for c in 0..nc {
                    let gc = &g[c];
                    (l[c], r[c]) = if gc.w <= 0.0 {
                        (0.0, 0.0)
                    } else if thr < gc.min {
                        (0.0, gc.w)
                    } else if thr >= gc.max {
                        (gc.w, 0.0)
                    } else {
                        let lw = gc.cdf(thr) * gc.w;
                        (lw, gc.w - lw)
                    };
                }
                let m = info_gain(&self.class_w, &l, &r, cfg.min_branch_fraction);
                if m > feat_best.0 {
                    feat_best = (m, thr);
                }
            }
            if feat_best.0 > best.0 {
                second = best.0;
                best = (feat_best.0, Some((k, feat_best.1)));
            } else if feat_best.0 > second {
                second = feat_best.0;
            }
        }
        let n = self.total();
        let seen = self.class_w.iter().filter(|&&w| w > 0.0).count();
        let range = (seen.max(2) as f64).log2();
        let bound = (range * range * (1.0 / cfg.delta).ln() / (2.0 * n)).sqrt();
        let go = best.0 - second > bound || bound < cfg.tau;
        if !go {
            return None;
        }
        let Some((k, thr)) = best.1 else {
            self.deactivate();
            return None;
        };
        let g = &self.gauss[k * nc..(k + 1) * nc];
        for c in 0..nc {
            let gc = &g[c];
            (l[c], r[c]) = if gc.w <= 0.0 {
                (0.0, 0.0)
            } else if thr < gc.min {
                (0.0, gc.w)
            } else if thr >= gc.max {
                (gc.w, 0.0)
            } else {
                let lw = gc.cdf(thr) * gc.w;
                (lw, gc.w - lw)
            };
        }
        Some(Split {
            feat: self.feats[k],
            thr,
            left: l,
            right: r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_and_gain() {
        assert!((entropy(&[5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert_eq!(entropy(&[3.0, 0.0]), 0.0);
        let g = info_gain(&[5.0, 5.0], &[5.0, 0.0], &[0.0, 5.0], 0.01);
        assert!((g - 1.0).abs() < 1e-12);
        assert_eq!(
            info_gain(&[5.0, 5.0], &[10.0, 0.0], &[0.0, 0.0], 0.01),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn a_separable_attribute_is_chosen() {
        let cfg = TreeConfig {
            grace_period: 10,
            ..TreeConfig::default()
        };
        let mut leaf = Leaf::new(vec![0.0, 0.0], vec![0, 1], 0);
        let mut s = [0.0; 2];
        for i in 0..400 {
            let y = i % 2;
            let x = [y as f32 + (i % 7) as f32 * 0.01, (i % 13) as f32];
            leaf.learn(&x, y, 1.0, LeafPrediction::NaiveBayesAdaptive, &mut s);
        }
        let split = leaf.attempt_split(&cfg).expect("splits");
        assert_eq!(split.feat, 0);
        assert!(split.thr > 0.06 && split.thr < 1.0, "{}", split.thr);
        assert!(split.left[0] > 190.0 && split.right[1] > 190.0, "{split:?}");
    }
}
