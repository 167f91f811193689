//! Online logistic regression, river's `StandardScaler | LogisticRegression`
//! (two classes) and `StandardScaler | SoftmaxRegression` (more): one SGD
//! step per sample on the log loss, inputs standardised by running means and
//! variances (Welford; population variance, a feature of variance 0 maps to
//! 0). The scaler learns each sample before the model's step, as river's
//! pipeline does; prediction uses the statistics so far.
//!
//! - Two classes: weights and an intercept, both stepped by `lr`
//!   (river: `SGD(0.01)`, `intercept_lr` 0.01, no L2); p = σ(w·z + b).
//! - More: one weight vector per class, no intercept (river's
//!   `SoftmaxRegression`); p = softmax(W z), gradient p − onehot(y).
//!
//! Before the first sample it knows nothing (`predict` is `None`).

use crate::{check_shape, Learner, ParamError};

/// Parameters of [`OnlineLogReg`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearConfig {
    /// SGD learning rate, in (0, 10].
    pub lr: f64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig { lr: 0.01 }
    }
}

/// Online (per-sample SGD) logistic or softmax regression on standardised inputs.
#[derive(Debug, Clone)]
pub struct OnlineLogReg {
    lr: f64,
    n_classes: usize,
    d: usize,
    /// Samples seen, running means and sums of squared deviations.
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// Binary: `d` weights; softmax: `n_classes * d`.
    w: Vec<f64>,
    b: f64,
    z: Vec<f64>,
}

impl OnlineLogReg {
    pub fn new(c: LinearConfig, n_features: usize, n_classes: usize) -> Result<Self, ParamError> {
        check_shape(n_features, n_classes)?;
        if !(c.lr > 0.0 && c.lr <= 10.0) {
            return Err(ParamError {
                name: "lr",
                want: "in (0, 10]",
                got: c.lr.to_string(),
            });
        }
        let k = if n_classes == 2 { 1 } else { n_classes };
        Ok(OnlineLogReg {
            lr: c.lr,
            n_classes,
            d: n_features,
            n: 0.0,
            mean: vec![0.0; n_features],
            m2: vec![0.0; n_features],
            w: vec![0.0; k * n_features],
            b: 0.0,
            z: vec![0.0; n_features],
        })
    }

    fn standardise(&self, x: &[f32], z: &mut [f64]) {
        for j in 0..self.d {
            let var = if self.n > 0.0 {
                self.m2[j] / self.n
            } else {
                0.0
            };
            z[j] = if var > 0.0 {
                (f64::from(x[j]) - self.mean[j]) / var.sqrt()
            } else {
                0.0
            };
        }
    }

    /// Class probabilities of standardised `z` into `out`.
    fn proba(&self, z: &[f64], out: &mut [f64]) {
        if self.n_classes == 2 {
            let s: f64 = self.w.iter().zip(z).map(|(w, v)| w * v).sum::<f64>() + self.b;
            let p1 = 1.0 / (1.0 + (-s.clamp(-500.0, 500.0)).exp());
            out[0] = 1.0 - p1;
            out[1] = p1;
            return;
        }
        for (c, o) in out.iter_mut().enumerate() {
            let w = &self.w[c * self.d..(c + 1) * self.d];
            *o = w.iter().zip(z).map(|(w, v)| w * v).sum();
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

impl Learner for OnlineLogReg {
    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &[f32], out: &mut [f64]) {
        if self.n == 0.0 {
            out.fill(0.0);
            return;
        }
        let mut z = vec![0.0; self.d];
        self.standardise(x, &mut z);
        self.proba(&z, out);
    }

    fn learn_one(&mut self, x: &[f32], y: usize) {
        self.n += 1.0;
        for ((&xj, mean), m2) in x.iter().zip(&mut self.mean).zip(&mut self.m2) {
            let v = f64::from(xj);
            let delta = v - *mean;
            *mean += delta / self.n;
            *m2 += delta * (v - *mean);
        }
        let mut z = std::mem::take(&mut self.z);
        self.standardise(x, &mut z);
        let mut p = vec![0.0; self.n_classes];
        self.proba(&z, &mut p);
        if self.n_classes == 2 {
            let g = p[1] - if y == 1 { 1.0 } else { 0.0 };
            for (w, v) in self.w.iter_mut().zip(&z) {
                *w -= self.lr * g * v;
            }
            self.b -= self.lr * g;
        } else {
            for (c, pc) in p.iter().enumerate() {
                let g = pc - if c == y { 1.0 } else { 0.0 };
                let w = &mut self.w[c * self.d..(c + 1) * self.d];
                for (w, v) in w.iter_mut().zip(&z) {
                    *w -= self.lr * g * v;
                }
            }
        }
        self.z = z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prequential;

    /// A linearly separable stream: class 1 when x0 + x1 > 1 (x in [0, 1]², a
    /// fixed pseudo-random sequence).
    fn stream(n: usize) -> (Vec<f32>, Vec<usize>) {
        let (mut xs, mut ys, mut s) = (Vec::new(), Vec::new(), 12345u64);
        for _ in 0..n {
            let mut next = || {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (s >> 40) as f32 / (1u64 << 24) as f32
            };
            let (a, b) = (next(), next());
            xs.extend([a, b]);
            ys.push(usize::from(a + b > 1.0));
        }
        (xs, ys)
    }

    #[test]
    fn learns_a_linear_concept_and_knows_nothing_before() {
        let (xs, ys) = stream(5000);
        let mut m = OnlineLogReg::new(LinearConfig::default(), 2, 2).unwrap();
        assert_eq!(m.predict(&xs[..2]), None);
        let p = prequential(&mut m, &xs, 2, &ys, 0);
        assert!(p.accuracy() > 0.95, "{}", p.accuracy());
        // Softmax with three classes: class 2 never appears, so it never wins.
        let mut m = OnlineLogReg::new(LinearConfig { lr: 0.05 }, 2, 3).unwrap();
        let p = prequential(&mut m, &xs, 2, &ys, 0);
        assert!(p.accuracy() > 0.95, "{}", p.accuracy());
        assert_ne!(m.predict(&[0.9, 0.9]), Some(2));
    }

    #[test]
    fn a_constant_feature_is_ignored_and_bad_rates_are_refused() {
        let (xs, ys) = stream(3000);
        let with_const: Vec<f32> = xs.chunks(2).flat_map(|r| [r[0], 7.0, r[1]]).collect();
        let mut m = OnlineLogReg::new(LinearConfig::default(), 3, 2).unwrap();
        let p = prequential(&mut m, &with_const, 3, &ys, 0);
        assert!(p.accuracy() > 0.95, "{}", p.accuracy());
        for lr in [0.0, -1.0, f64::NAN, 11.0] {
            let e = OnlineLogReg::new(LinearConfig { lr }, 2, 2).unwrap_err();
            assert_eq!(e.name, "lr");
        }
    }
}
