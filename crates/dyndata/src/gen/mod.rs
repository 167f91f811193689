//! Synthetic drift streams, the standard benchmarks of stream learning:
//! SEA, Agrawal, rotating Hyperplane and Random RBF with drift (see
//! [`concepts`] for each definition). Pure and seeded: the same
//! [`GenSpec`] gives the same stream, sample for sample.
//!
//! A stream is a sequence of concepts. Drift `j` (at sample `drift_at[j]`)
//! hands over from concept `j` to concept `j + 1`: at once when
//! `drift_width` is 0, else gradually, as MOA's ConceptDriftStream does:
//! sample `t` comes from the newer concept with probability
//! `1 / (1 + e^(-4 (t - p) / w))` (so half-way at `p`, and about 98% at
//! `p + w`). Concepts are SEA's four thresholds, Agrawal's ten functions,
//! or, for Hyperplane and RBF, fresh weights or centroids drawn for each
//! concept (they also drift incrementally by `mag_change` / `change_speed`).

pub mod cli;
pub mod concepts;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use concepts::{Agrawal, Concept, Hyperplane, RandomRbf, Sea, AGRAWAL_FEATURES, SEA_THRESHOLDS};

/// Which generator, with its own parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Sea,
    Agrawal {
        perturbation: f64,
    },
    Hyperplane {
        features: usize,
        drift_features: usize,
        mag_change: f64,
        sigma: f64,
    },
    Rbf {
        features: usize,
        classes: u32,
        centroids: usize,
        drift_centroids: usize,
        change_speed: f64,
    },
}

/// A stream to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    pub kind: Kind,
    pub samples: u64,
    pub seed: u64,
    /// Sample positions of the drifts, increasing.
    pub drift_at: Vec<u64>,
    /// 0: abrupt; else the width of a gradual drift, in samples.
    pub drift_width: u64,
    /// The concept before the first drift and after each; default
    /// 0, 1, 2, ... (modulo the generator's count).
    pub concepts: Option<Vec<usize>>,
    /// Probability that a label is replaced by another class.
    pub noise: f64,
    /// Class imbalance: a drawn sample of class `c` is kept with
    /// probability `w[c] / max(w)` and redrawn otherwise (before label
    /// noise; drift positions count kept samples). `None`: as drawn.
    pub class_weights: Option<Vec<f64>>,
}

/// A stream that cannot be generated as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> GenError {
    GenError::Invalid {
        field,
        message: message.into(),
    }
}

/// Most samples one call generates.
pub const MAX_SAMPLES: u64 = 100_000_000;

impl GenSpec {
    /// Feature names, in column order.
    pub fn feature_names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Agrawal { .. } => AGRAWAL_FEATURES.iter().map(|s| s.to_string()).collect(),
            Kind::Sea => (0..3).map(|i| format!("x{i}")).collect(),
            Kind::Hyperplane { features, .. } | Kind::Rbf { features, .. } => {
                (0..*features).map(|i| format!("x{i}")).collect()
            }
        }
    }

    /// How many distinct concepts the generator has (`None`: unbounded).
    fn concept_count(&self) -> Option<usize> {
        match self.kind {
            Kind::Sea => Some(SEA_THRESHOLDS.len()),
            Kind::Agrawal { .. } => Some(10),
            _ => None,
        }
    }

    fn classes(&self) -> u32 {
        match self.kind {
            Kind::Rbf { classes, .. } => classes,
            _ => 2,
        }
    }

    /// The concept index of each segment.
    pub fn concept_list(&self) -> Result<Vec<usize>, GenError> {
        let n = self.drift_at.len() + 1;
        let list = match &self.concepts {
            Some(c) => c.clone(),
            None => (0..n)
                .map(|i| self.concept_count().map_or(i, |k| i % k))
                .collect(),
        };
        if list.len() != n {
            return Err(invalid(
                "concepts",
                format!(
                    "{} drifts need {n} concepts (one before each drift and one after the last), found {}",
                    self.drift_at.len(),
                    list.len()
                ),
            ));
        }
        if let (Some(k), Some(bad)) = (
            self.concept_count(),
            list.iter().find(|&&c| Some(c) >= self.concept_count()),
        ) {
            return Err(invalid(
                "concepts",
                format!(
                    "concept {bad} does not exist; this generator has concepts 0..={}",
                    k - 1
                ),
            ));
        }
        Ok(list)
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), GenError> {
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return Err(invalid("samples", format!("use 1..={MAX_SAMPLES}")));
        }
        if self.drift_at.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("drift_at", "positions must be increasing"));
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return Err(invalid("noise", "use a probability in [0, 1]"));
        }
        if let Some(w) = &self.class_weights {
            let k = self.classes() as usize;
            if w.len() != k {
                return Err(invalid(
                    "class_weights",
                    format!("give one weight per class: {k}, found {}", w.len()),
                ));
            }
            // A weight of 0 could reject forever; 1e-3 bounds the redraws.
            let max = w.iter().cloned().fold(0.0, f64::max);
            if w.iter()
                .any(|&x| !(x.is_finite() && x > 0.0 && x >= max * 1e-3))
            {
                return Err(invalid(
                    "class_weights",
                    "use finite weights > 0, each at least 1/1000 of the largest",
                ));
            }
        }
        let frac = |v: f64, field: &'static str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("{v}: use a value in [0, 1]")))
            }
        };
        match &self.kind {
            Kind::Sea => {}
            Kind::Agrawal { perturbation } => frac(*perturbation, "perturbation")?,
            Kind::Hyperplane {
                features,
                drift_features,
                mag_change,
                sigma,
            } => {
                if !(1..=10_000).contains(features) {
                    return Err(invalid("features", "use 1..=10000"));
                }
                if drift_features > features {
                    return Err(invalid("drift_features", "at most the number of features"));
                }
                frac(*mag_change, "mag_change")?;
                frac(*sigma, "sigma")?;
            }
            Kind::Rbf {
                features,
                classes,
                centroids,
                drift_centroids,
                change_speed,
            } => {
                if !(1..=10_000).contains(features) {
                    return Err(invalid("features", "use 1..=10000"));
                }
                if !(2..=1000).contains(classes) {
                    return Err(invalid("classes", "use 2..=1000"));
                }
                if !(1..=100_000).contains(centroids) {
                    return Err(invalid("centroids", "use 1..=100000"));
                }
                if drift_centroids > centroids {
                    return Err(invalid(
                        "drift_centroids",
                        "at most the number of centroids",
                    ));
                }
                frac(*change_speed, "change_speed")?;
            }
        }
        self.concept_list().map(|_| ())
    }

    /// Concept `c` of this stream; its parameters are drawn from the seed
    /// and `c`, so a concept is the same wherever it appears.
    fn concept(&self, c: usize) -> Box<dyn Concept> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        match &self.kind {
            Kind::Sea => Box::new(Sea {
                threshold: SEA_THRESHOLDS[c],
            }),
            Kind::Agrawal { perturbation } => Box::new(Agrawal {
                function: c,
                perturbation: *perturbation,
            }),
            Kind::Hyperplane {
                features,
                drift_features,
                mag_change,
                sigma,
            } => Box::new(Hyperplane::new(
                &mut rng,
                *features,
                *drift_features,
                *mag_change,
                *sigma,
            )),
            Kind::Rbf {
                features,
                classes,
                centroids,
                drift_centroids,
                change_speed,
            } => Box::new(RandomRbf::new(
                &mut rng,
                *features,
                *classes,
                *centroids,
                *drift_centroids,
                *change_speed,
            )),
        }
    }

    /// The stream, one `(features, class)` at a time.
    pub fn stream(&self) -> Result<Stream, GenError> {
        self.validate()?;
        let list = self.concept_list()?;
        let mut built: Vec<(usize, Box<dyn Concept>)> = Vec::new();
        let mut slots = Vec::with_capacity(list.len());
        for &c in &list {
            let slot = match built.iter().position(|(k, _)| *k == c) {
                Some(i) => i,
                None => {
                    built.push((c, self.concept(c)));
                    built.len() - 1
                }
            };
            slots.push(slot);
        }
        Ok(Stream {
            spec: self.clone(),
            rng: ChaCha8Rng::seed_from_u64(self.seed),
            concepts: built.into_iter().map(|(_, b)| b).collect(),
            slots,
            t: 0,
            keep: self.class_weights.as_ref().map(|w| {
                let max = w.iter().cloned().fold(0.0, f64::max);
                w.iter().map(|x| x / max).collect()
            }),
        })
    }
}

/// A running stream; see [`GenSpec::stream`].
pub struct Stream {
    spec: GenSpec,
    rng: ChaCha8Rng,
    concepts: Vec<Box<dyn Concept>>,
    /// Segment -> concept slot.
    slots: Vec<usize>,
    t: u64,
    /// Per class, the probability that a drawn sample is kept.
    keep: Option<Vec<f64>>,
}

impl Stream {
    /// The segment sample `t` is drawn from (see the module docs).
    fn segment(&mut self, t: u64) -> usize {
        let w = self.spec.drift_width;
        let mut seg = 0;
        for &p in &self.spec.drift_at {
            let newer = if w == 0 {
                t >= p
            } else {
                let z = -4.0 * (t as f64 - p as f64) / w as f64;
                self.rng.random::<f64>() < 1.0 / (1.0 + z.exp())
            };
            if !newer {
                break;
            }
            seg += 1;
        }
        seg
    }
}

impl Iterator for Stream {
    type Item = (Vec<f64>, u32);

    fn next(&mut self) -> Option<(Vec<f64>, u32)> {
        if self.t >= self.spec.samples {
            return None;
        }
        let seg = self.segment(self.t);
        let (x, mut y) = loop {
            let (x, y) = self.concepts[self.slots[seg]].sample(&mut self.rng);
            match &self.keep {
                Some(k) if self.rng.random::<f64>() >= k[y as usize] => continue,
                _ => break (x, y),
            }
        };
        if self.spec.noise > 0.0 && self.rng.random::<f64>() < self.spec.noise {
            let k = self.spec.classes();
            y = (y + self.rng.random_range(1..k)) % k;
        }
        self.t += 1;
        Some((x, y))
    }
}

/// The whole stream as CSV: a header of feature names and `class`, then
/// one sample a line (integers where the attribute is one, else up to six
/// decimals).
pub fn to_csv(spec: &GenSpec) -> Result<String, GenError> {
    let mut out = spec.feature_names().join(",");
    out.push_str(",class\n");
    for (x, y) in spec.stream()? {
        for v in &x {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                write!(out, "{},", *v as i64).expect("write to String");
            } else {
                let s = format!("{v:.6}");
                out.push_str(s.trim_end_matches('0'));
                out.push(',');
            }
        }
        writeln!(out, "{y}").expect("write to String");
    }
    Ok(out)
}
