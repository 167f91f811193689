//! The joint distribution of (nodes, depth, width) behind [`Shape::Azure`].
//!
//! The Azure DAG shape data is published as three separate CDFs. Drawing the
//! three independently and keeping only consistent triples (see
//! [`ShapeTarget::is_feasible`]) distorts them badly: with the 2021 data only
//! a third of independent draws are consistent and the node-count CDF moves
//! by 0.22 (Kolmogorov–Smirnov distance), because the real quantities are
//! strongly correlated (a 2-node DAG is a chain or a pair). So the model
//! uses, among all joint distributions on consistent triples whose marginals
//! are the three CDFs, the one closest to independence (the I-projection of
//! the product of the marginals, in Kullback–Leibler divergence), found by
//! iterative proportional fitting. Where the marginals cannot be met exactly
//! IPF stops at the closest fit it reaches; [`AzureModel::fit_error`] says
//! how close (3·10⁻⁴ for the 2021 data at `max_nodes` = 100, after 267 sweeps).
//!
//! The fitted joint has the form `p(n, d, w) = a(n)·b(d)·c(w)` on the
//! consistent triples, so one IPF sweep costs `O(|N|·|D| + |W|)` (|N|, |D|,
//! |W|: distinct values up to `max_nodes`), and sampling is exact: draw
//! `(n, d)` from a table, then `w` by inverse transform restricted to
//! `[⌈n/d⌉, n - d + 1]`.
//!
//! Node counts above `max_nodes` are conditioned away (their probability is
//! removed and the rest renormalised), not clipped, so no spike forms at the
//! cap; depths and widths above `max_nodes` cannot occur and are removed too.
//!
//! All arithmetic is IEEE addition, multiplication and division in a fixed
//! order, so the fit and the samples are the same on every platform.
//!
//! [`Shape::Azure`]: super::Shape::Azure
//! [`ShapeTarget::is_feasible`]: super::ShapeTarget::is_feasible

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{ShapeError, ShapeTarget};
use crate::trace::Cdf;

/// The three published CDFs of the Azure DAG shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AzureShapes {
    /// Total nodes per DAG (`total_nodes_cdf.csv`).
    pub nodes: Cdf,
    /// Depth: the longest chain, in nodes (`depth_cdf.csv`).
    pub depth: Cdf,
    /// Maximum width: the most parallel steps (`width_cdf.csv`).
    pub width: Cdf,
}

/// Probability mass functions of nodes, depth and width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marginals {
    pub nodes: Vec<(u64, f64)>,
    pub depth: Vec<(u64, f64)>,
    pub width: Vec<(u64, f64)>,
}

/// IPF stops when every marginal is within this of its target...
const FIT_TOLERANCE: f64 = 1e-10;
/// ...or after this many sweeps...
const MAX_SWEEPS: usize = 2000;
/// ...or when the error has not improved for this many sweeps (the targets
/// cannot be met exactly).
const STALL_SWEEPS: usize = 50;

/// One `(n, d)` pair with a consistent width range `w_idx[lo..hi]`.
#[derive(Debug, Clone, Copy)]
struct Pair {
    n: u32,
    d: u32,
    lo: u32,
    hi: u32,
}

/// The fitted joint distribution; see the module documentation.
#[derive(Debug, Clone)]
pub struct AzureModel {
    n_vals: Vec<u64>,
    d_vals: Vec<u64>,
    w_vals: Vec<u64>,
    targets: [Vec<f64>; 3],
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    /// Prefix sums of `c`: `c_cum[k] = c[0] + ... + c[k-1]`.
    c_cum: Vec<f64>,
    pairs: Vec<Pair>,
    /// Inclusive prefix sums of the pair weights.
    pair_cum: Vec<f64>,
    fit_error: f64,
    sweeps: usize,
}

/// A pmf restricted to values in `1..=max`, renormalised.
fn truncated(cdf: &Cdf, max: u64, what: &str) -> Result<(Vec<u64>, Vec<f64>), ShapeError> {
    let pmf: Vec<(u64, f64)> = cdf
        .pmf()
        .into_iter()
        .filter(|&(v, _)| (1..=max).contains(&v))
        .collect();
    let total: f64 = pmf.iter().map(|p| p.1).sum();
    if pmf.is_empty() || total <= 0.0 {
        return Err(ShapeError::Azure(format!(
            "the {what} CDF '{}' has no probability on 1..={max} (max_nodes); its values \
             range from {} to {}",
            cdf.name(),
            cdf.min_value(),
            cdf.max_value()
        )));
    }
    Ok((
        pmf.iter().map(|p| p.0).collect(),
        pmf.iter().map(|p| p.1 / total).collect(),
    ))
}

impl AzureModel {
    /// Fits the joint distribution for DAGs of at most `max_nodes` nodes.
    /// Fails if no consistent triple has positive probability under all
    /// three CDFs.
    pub fn fit(shapes: &AzureShapes, max_nodes: u64) -> Result<AzureModel, ShapeError> {
        let (n_vals, tn) = truncated(&shapes.nodes, max_nodes, "node count")?;
        let (d_vals, td) = truncated(&shapes.depth, max_nodes, "depth")?;
        let (w_vals, tw) = truncated(&shapes.width, max_nodes, "width")?;

        let mut pairs = Vec::new();
        for (ni, &n) in n_vals.iter().enumerate() {
            for (di, &d) in d_vals.iter().enumerate() {
                if d > n {
                    break;
                }
                let (wmin, wmax) = (n.div_ceil(d), n - d + 1);
                let lo = w_vals.partition_point(|&w| w < wmin);
                let hi = w_vals.partition_point(|&w| w <= wmax);
                if lo < hi {
                    pairs.push(Pair {
                        n: ni as u32,
                        d: di as u32,
                        lo: lo as u32,
                        hi: hi as u32,
                    });
                }
            }
        }
        let mut model = AzureModel {
            a: tn.clone(),
            b: td.clone(),
            c: tw.clone(),
            c_cum: Vec::new(),
            targets: [tn, td, tw],
            n_vals,
            d_vals,
            w_vals,
            pairs,
            pair_cum: Vec::new(),
            fit_error: f64::INFINITY,
            sweeps: 0,
        };
        model.update_c_cum();
        let total: f64 = model.pairs.iter().map(|p| model.pair_weight(p)).sum();
        if model.pairs.is_empty() || total <= 0.0 {
            return Err(ShapeError::Azure(
                "no (nodes, depth, width) combination allowed by the three CDFs is consistent \
                 (depth ≤ nodes, width ≤ nodes - depth + 1, width × depth ≥ nodes)"
                    .into(),
            ));
        }
        model.run_ipf();
        model.finish();
        match model.pair_cum.last() {
            Some(&total) if total.is_finite() && total > 0.0 => Ok(model),
            _ => Err(ShapeError::Azure(
                "fitting the joint distribution failed numerically (probabilities too \
                 extreme); check the CDFs"
                    .into(),
            )),
        }
    }

    fn update_c_cum(&mut self) {
        self.c_cum.clear();
        self.c_cum.push(0.0);
        let mut s = 0.0;
        for &c in &self.c {
            s += c;
            self.c_cum.push(s);
        }
    }

    fn width_mass(&self, p: &Pair) -> f64 {
        (self.c_cum[p.hi as usize] - self.c_cum[p.lo as usize]).max(0.0)
    }

    fn pair_weight(&self, p: &Pair) -> f64 {
        self.a[p.n as usize] * self.b[p.d as usize] * self.width_mass(p)
    }

    /// Current (unnormalised) marginals of n, d and w.
    fn marginal(&self, axis: usize) -> Vec<f64> {
        match axis {
            0 | 1 => {
                let len = if axis == 0 {
                    self.n_vals.len()
                } else {
                    self.d_vals.len()
                };
                let mut m = vec![0.0; len];
                for p in &self.pairs {
                    let k = if axis == 0 { p.n } else { p.d } as usize;
                    m[k] += self.pair_weight(p);
                }
                m
            }
            _ => {
                // c(w) times the mass of the pairs whose range holds w,
                // accumulated with a difference array.
                let mut diff = vec![0.0; self.w_vals.len() + 1];
                for p in &self.pairs {
                    let v = self.a[p.n as usize] * self.b[p.d as usize];
                    diff[p.lo as usize] += v;
                    diff[p.hi as usize] -= v;
                }
                let mut run = 0.0;
                let mut m = vec![0.0; self.w_vals.len()];
                for (k, slot) in m.iter_mut().enumerate() {
                    run += diff[k];
                    *slot = self.c[k] * run.max(0.0);
                }
                m
            }
        }
    }

    /// Scales one axis towards its target; returns the error before scaling.
    fn scale(&mut self, axis: usize) -> f64 {
        let m = self.marginal(axis);
        let z: f64 = m.iter().sum();
        if !(z.is_finite() && z > 0.0) {
            return f64::INFINITY;
        }
        let mut err: f64 = 0.0;
        let target = &self.targets[axis];
        let factors = match axis {
            0 => &mut self.a,
            1 => &mut self.b,
            _ => &mut self.c,
        };
        for ((f, &mk), &t) in factors.iter_mut().zip(&m).zip(target) {
            let share = mk / z;
            err = err.max((share - t).abs());
            if share > 0.0 {
                *f *= t / share;
            }
        }
        if axis == 2 {
            self.update_c_cum();
        }
        err
    }

    fn run_ipf(&mut self) {
        let mut best = f64::INFINITY;
        let mut since_best = 0;
        for sweep in 1..=MAX_SWEEPS {
            let err = self.scale(0).max(self.scale(1)).max(self.scale(2));
            self.sweeps = sweep;
            if err < FIT_TOLERANCE {
                break;
            }
            if err < best * (1.0 - 1e-6) {
                best = err;
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= STALL_SWEEPS {
                    break;
                }
            }
        }
    }

    /// Builds the sampling table and measures the final fit.
    fn finish(&mut self) {
        self.pairs.retain(|p| {
            let w = self.a[p.n as usize] * self.b[p.d as usize] * {
                (self.c_cum[p.hi as usize] - self.c_cum[p.lo as usize]).max(0.0)
            };
            w > 0.0
        });
        let mut s = 0.0;
        self.pair_cum = self
            .pairs
            .iter()
            .map(|p| {
                s += self.a[p.n as usize] * self.b[p.d as usize] * self.width_mass(p);
                s
            })
            .collect();
        let fitted = self.marginals();
        let targets = self.targets();
        self.fit_error = [
            (&fitted.nodes, &targets.nodes),
            (&fitted.depth, &targets.depth),
            (&fitted.width, &targets.width),
        ]
        .into_iter()
        .map(|(f, t)| {
            f.iter()
                .zip(t)
                .map(|(x, y)| (x.1 - y.1).abs())
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    }

    /// The largest difference between a fitted and a target probability of
    /// any single node count, depth or width.
    pub fn fit_error(&self) -> f64 {
        self.fit_error
    }

    /// IPF sweeps used.
    pub fn sweeps(&self) -> usize {
        self.sweeps
    }

    /// The input distributions, restricted to `1..=max_nodes`.
    pub fn targets(&self) -> Marginals {
        let zip = |vals: &[u64], p: &[f64]| vals.iter().copied().zip(p.iter().copied()).collect();
        Marginals {
            nodes: zip(&self.n_vals, &self.targets[0]),
            depth: zip(&self.d_vals, &self.targets[1]),
            width: zip(&self.w_vals, &self.targets[2]),
        }
    }

    /// The marginals of the fitted joint distribution (what [`sample`]
    /// produces), over the same values as [`targets`].
    ///
    /// [`sample`]: AzureModel::sample
    /// [`targets`]: AzureModel::targets
    pub fn marginals(&self) -> Marginals {
        let norm = |vals: &[u64], m: Vec<f64>| {
            let z: f64 = m.iter().sum();
            vals.iter()
                .copied()
                .zip(m.into_iter().map(|x| x / z))
                .collect()
        };
        Marginals {
            nodes: norm(&self.n_vals, self.marginal(0)),
            depth: norm(&self.d_vals, self.marginal(1)),
            width: norm(&self.w_vals, self.marginal(2)),
        }
    }

    /// One consistent (nodes, depth, width) triple.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> ShapeTarget {
        let total = self.pair_cum[self.pair_cum.len() - 1];
        let x = rng.random::<f64>() * total;
        let i = self
            .pair_cum
            .partition_point(|&s| s <= x)
            .min(self.pairs.len() - 1);
        let p = self.pairs[i];
        let (lo, hi) = (p.lo as usize, p.hi as usize);
        let base = self.c_cum[lo];
        let y = base + rng.random::<f64>() * (self.c_cum[hi] - base);
        // First width whose cumulative mass passes y, skipping zero-mass
        // widths; rounding at the top end falls back to the last one with mass.
        let mut k = lo + self.c_cum[lo + 1..=hi].partition_point(|&s| s <= y);
        if k >= hi || self.c[k] <= 0.0 {
            k = (lo..hi).rev().find(|&k| self.c[k] > 0.0).unwrap_or(lo);
        }
        ShapeTarget {
            nodes: self.n_vals[p.n as usize],
            depth: self.d_vals[p.d as usize],
            width: self.w_vals[k],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cdf(name: &str, points: &[(u64, f64)]) -> Cdf {
        Cdf::new(name, points.to_vec()).unwrap()
    }

    #[test]
    fn exact_marginals_when_they_are_consistent() {
        // Half chains of 2, half pairs: nodes = 2, depth 1 or 2, width 2 or 1.
        let shapes = AzureShapes {
            nodes: cdf("nodes", &[(2, 1.0)]),
            depth: cdf("depth", &[(1, 0.5), (2, 1.0)]),
            width: cdf("width", &[(1, 0.5), (2, 1.0)]),
        };
        let m = AzureModel::fit(&shapes, 100).unwrap();
        assert!(m.fit_error() < 1e-9, "{}", m.fit_error());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let t = m.sample(&mut rng);
            assert!(t.is_feasible());
            assert_eq!(t.nodes, 2);
        }
    }

    #[test]
    fn inconsistent_cdfs_are_rejected() {
        let shapes = AzureShapes {
            nodes: cdf("nodes", &[(2, 1.0)]),
            depth: cdf("depth", &[(3, 1.0)]),
            width: cdf("width", &[(1, 1.0)]),
        };
        assert_eq!(
            AzureModel::fit(&shapes, 100).unwrap_err().to_string(),
            "the Azure shape CDFs cannot be used: no (nodes, depth, width) combination allowed \
             by the three CDFs is consistent (depth ≤ nodes, width ≤ nodes - depth + 1, \
             width × depth ≥ nodes)"
        );
        let shapes = AzureShapes {
            nodes: cdf("total_nodes", &[(200, 0.5), (300, 1.0)]),
            depth: cdf("depth", &[(3, 1.0)]),
            width: cdf("width", &[(1, 1.0)]),
        };
        assert_eq!(
            AzureModel::fit(&shapes, 100).unwrap_err().to_string(),
            "the Azure shape CDFs cannot be used: the node count CDF 'total_nodes' has no \
             probability on 1..=100 (max_nodes); its values range from 200 to 300"
        );
    }
}
