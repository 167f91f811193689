//! Edge sizes: a prior (the synthesiser's size, a declared size) blended
//! with the bytes observed on the edge.

/// How observations replace the prior: an exponentially weighted mean of
/// the observations with weight `alpha` for the newest, and after
/// `replace_after` observations the prior no longer counts (before that,
/// the estimate moves linearly from the prior to the mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blend {
    alpha: f64,
    replace_after: u32,
}

/// A blend that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("edge estimate blend: alpha {alpha} must be in (0, 1] and replace_after {replace_after} at least 1")]
pub struct BlendError {
    pub alpha: f64,
    pub replace_after: u32,
}

impl Blend {
    pub fn new(alpha: f64, replace_after: u32) -> Result<Blend, BlendError> {
        if !(alpha > 0.0 && alpha <= 1.0) || replace_after == 0 {
            return Err(BlendError {
                alpha,
                replace_after,
            });
        }
        Ok(Blend {
            alpha,
            replace_after,
        })
    }
}

impl Default for Blend {
    /// `alpha` 0.2, the prior gone after 5 observations.
    fn default() -> Blend {
        Blend {
            alpha: 0.2,
            replace_after: 5,
        }
    }
}

/// One edge's expected bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeEstimate {
    prior: u64,
    mean: f64,
    observations: u32,
}

impl EdgeEstimate {
    pub fn new(prior: u64) -> EdgeEstimate {
        EdgeEstimate {
            prior,
            mean: 0.0,
            observations: 0,
        }
    }

    /// Records the bytes one invocation moved on the edge.
    pub fn observe(&mut self, bytes: u64, blend: Blend) {
        let x = bytes as f64;
        self.mean = if self.observations == 0 {
            x
        } else {
            self.mean + blend.alpha * (x - self.mean)
        };
        self.observations = self.observations.saturating_add(1);
    }

    pub fn observations(&self) -> u32 {
        self.observations
    }

    /// The bytes to plan with.
    pub fn bytes(&self, blend: Blend) -> u64 {
        if self.observations >= blend.replace_after {
            return self.mean.round() as u64;
        }
        let w = f64::from(self.observations) / f64::from(blend.replace_after);
        let prior = self.prior as f64;
        (prior + w * (self.mean - prior)).round().max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_until_observed_then_the_observations() {
        let blend = Blend::new(0.5, 2).unwrap();
        let mut e = EdgeEstimate::new(1000);
        assert_eq!(e.bytes(blend), 1000);
        e.observe(3000, blend);
        // Half way from the prior to the first observation.
        assert_eq!(e.bytes(blend), 2000);
        e.observe(5000, blend);
        // The prior is gone: the weighted mean 3000 + 0.5·2000.
        assert_eq!(e.bytes(blend), 4000);
        e.observe(4000, blend);
        assert_eq!(e.bytes(blend), 4000);
        assert_eq!(e.observations(), 3);
    }

    proptest::proptest! {
        /// The estimate stays between the smallest and the largest of the
        /// prior and the observations, and equals the prior until observed.
        #[test]
        fn the_estimate_stays_within_what_it_saw(
            prior in 0u64..1 << 40,
            seen in proptest::collection::vec(0u64..1 << 40, 0..20),
            alpha in 0.01f64..=1.0,
            after in 1u32..10,
        ) {
            let blend = Blend::new(alpha, after).unwrap();
            let mut e = EdgeEstimate::new(prior);
            proptest::prop_assert_eq!(e.bytes(blend), prior);
            let (mut lo, mut hi) = (prior, prior);
            for (i, &b) in seen.iter().enumerate() {
                e.observe(b, blend);
                lo = lo.min(b);
                hi = hi.max(b);
                let x = e.bytes(blend);
                proptest::prop_assert!(lo <= x && x <= hi, "{} not in {}..={}", x, lo, hi);
                if i + 1 >= after as usize {
                    // The prior no longer counts: within the observations.
                    let (olo, ohi) = (seen[..=i].iter().min().unwrap(), seen[..=i].iter().max().unwrap());
                    proptest::prop_assert!(*olo <= x && x <= *ohi);
                }
            }
        }
    }

    #[test]
    fn a_blend_is_checked() {
        for (a, n) in [(0.0, 1), (1.5, 1), (f64::NAN, 1), (0.5, 0), (-0.1, 3)] {
            let err = Blend::new(a, n).unwrap_err();
            assert!(err.to_string().contains("must be in (0, 1]"), "{err}");
        }
        assert!(Blend::new(1.0, 1).is_ok());
    }
}
