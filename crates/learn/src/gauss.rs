//! A weighted Gaussian estimator (Welford's running mean and variance, with
//! the per-class minimum and maximum) and the normal CDF it needs.

use std::f64::consts::PI;

/// Running weighted mean/variance of one attribute for one class, with its
/// observed range. `w == 0` means nothing was seen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauss {
    pub(crate) w: f64,
    mean: f64,
    m2: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Cached on update for the naive-Bayes hot path: `1 / (2 var)` (0 when
    /// there is no spread) and `-ln(2 pi var) / 2`.
    inv_2var: f64,
    log_norm: f64,
}

impl Default for Gauss {
    fn default() -> Self {
        Gauss {
            w: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            inv_2var: 0.0,
            log_norm: 0.0,
        }
    }
}

impl Gauss {
    #[inline]
    pub(crate) fn update(&mut self, x: f64, w: f64) {
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        self.w += w;
        let d = x - self.mean;
        self.mean += w * d / self.w;
        self.m2 += w * d * (x - self.mean);
        let var = self.var();
        if var > 0.0 {
            self.inv_2var = 0.5 / var;
            self.log_norm = -0.5 * (2.0 * PI * var).ln();
        } else {
            self.inv_2var = 0.0;
        }
    }

    /// Sample variance (ddof 1), 0 while the weight is at most 1.
    #[inline]
    pub(crate) fn var(&self) -> f64 {
        if self.w > 1.0 {
            (self.m2 / (self.w - 1.0)).max(0.0)
        } else {
            0.0
        }
    }

    /// The log of the density at `x`, or `None` where it is undefined (no
    /// spread). Naive Bayes skips those terms, as river's
    /// `do_naive_bayes_prediction` does.
    #[inline]
    pub(crate) fn log_pdf(&self, x: f64) -> Option<f64> {
        if self.inv_2var <= 0.0 {
            return None;
        }
        let d = x - self.mean;
        Some(self.log_norm - d * d * self.inv_2var)
    }

    /// P(X <= x) under this Gaussian; a step at the mean when there is no spread.
    pub(crate) fn cdf(&self, x: f64) -> f64 {
        let var = self.var();
        if var <= 0.0 {
            return if x >= self.mean { 1.0 } else { 0.0 };
        }
        0.5 * (1.0 + erf((x - self.mean) / (var.sqrt() * std::f64::consts::SQRT_2)))
    }
}

/// The error function (Numerical Recipes' `erfc` Chebyshev fit, relative
/// error below 1.2e-7 everywhere).
pub(crate) fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-6,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [1.0, 2.0, 4.0, 7.0, 11.0];
        let mut g = Gauss::default();
        for x in xs {
            g.update(x, 1.0);
        }
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 4.0;
        assert!((g.var() - var).abs() < 1e-12);
        assert_eq!((g.min, g.max), (1.0, 11.0));
        assert!((g.cdf(mean) - 0.5).abs() < 1e-6);
        // A weight of 2 is two copies.
        let mut h = Gauss::default();
        for x in xs {
            h.update(x, 2.0);
        }
        assert!((h.mean - mean).abs() < 1e-12);
    }
}
