//! The Adaptive Random Forest (Gomes et al., "Adaptive random forests for
//! evolving data stream classification", Machine Learning 2017): Hoeffding
//! trees over random attribute subspaces per leaf, online bagging with
//! Poisson(lambda) weights, and per tree an ADWIN warning detector (which
//! starts a background tree) and an ADWIN drift detector (which swaps the
//! background tree in). Votes are weighted by each tree's accuracy since its
//! last reset.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::drift::{Adwin, DriftDetector, DriftState};
use crate::tree::{HoeffdingTree, LeafPrediction, TreeConfig};
use crate::{Learner, ParamError, Scores};

/// How many attributes each leaf observes, from the total `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFeatures {
    /// `round(sqrt(m))` (river's "sqrt").
    Sqrt,
    /// `floor(sqrt(m)) + 1` (MOA's default and the paper's).
    SqrtPlusOne,
    Count(usize),
}

impl MaxFeatures {
    pub fn resolve(self, m: usize) -> usize {
        let k = match self {
            MaxFeatures::Sqrt => (m as f64).sqrt().round() as usize,
            MaxFeatures::SqrtPlusOne => (m as f64).sqrt().floor() as usize + 1,
            MaxFeatures::Count(k) => k,
        };
        k.clamp(1, m)
    }
}

/// ARF's parameters; defaults are river's `ARFClassifier` (with MOA's subspace size).
#[derive(Debug, Clone, PartialEq)]
pub struct ArfConfig {
    pub n_models: usize,
    pub max_features: MaxFeatures,
    /// The Poisson rate of online bagging.
    pub lambda: f64,
    pub tree: TreeConfig,
    pub warning_delta: f64,
    pub drift_delta: f64,
    pub weighted_vote: bool,
    pub seed: u64,
}

impl Default for ArfConfig {
    fn default() -> Self {
        ArfConfig {
            n_models: 10,
            max_features: MaxFeatures::SqrtPlusOne,
            lambda: 6.0,
            tree: TreeConfig {
                grace_period: 50,
                delta: 0.01,
                tau: 0.05,
                leaf_prediction: LeafPrediction::NaiveBayesAdaptive,
                ..TreeConfig::default()
            },
            warning_delta: 0.01,
            drift_delta: 0.001,
            weighted_vote: true,
            seed: 42,
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    tree: HoeffdingTree,
    background: Option<HoeffdingTree>,
    warning: Adwin,
    drift: Adwin,
    seen: f64,
    correct: f64,
}

/// Counters of what the detectors did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArfStats {
    pub warnings: u64,
    pub drifts: u64,
}

#[derive(Debug, Clone)]
pub struct AdaptiveRandomForest {
    cfg: ArfConfig,
    n_features: usize,
    n_classes: usize,
    k: usize,
    members: Vec<Member>,
    rng: ChaCha8Rng,
    scratch: Vec<f64>,
    stats: ArfStats,
}

/// Knuth's Poisson sampler (fine for small rates such as 6).
fn poisson(rate: f64, rng: &mut ChaCha8Rng) -> u32 {
    let l = (-rate).exp();
    let (mut k, mut p) = (0u32, 1.0f64);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

impl AdaptiveRandomForest {
    pub fn new(cfg: ArfConfig, n_features: usize, n_classes: usize) -> Result<Self, ParamError> {
        cfg.tree.check()?;
        crate::check_shape(n_features, n_classes)?;
        let bad = |name, want, got: String| Err(ParamError { name, want, got });
        if cfg.n_models == 0 || cfg.n_models > 1000 {
            return bad("n_models", "in 1..=1000", cfg.n_models.to_string());
        }
        if let MaxFeatures::Count(0) = cfg.max_features {
            return bad("max_features", ">= 1", "0".into());
        }
        if !(cfg.lambda > 0.0 && cfg.lambda <= 100.0) {
            return bad("lambda", "in (0, 100]", cfg.lambda.to_string());
        }
        for (name, d) in [
            ("warning_delta", cfg.warning_delta),
            ("drift_delta", cfg.drift_delta),
        ] {
            if !(d > 0.0 && d < 1.0) {
                return bad(name, "in (0, 1)", d.to_string());
            }
        }
        let k = cfg.max_features.resolve(n_features);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut members = Vec::with_capacity(cfg.n_models);
        for _ in 0..cfg.n_models {
            let tree = HoeffdingTree::with_subspace(
                cfg.tree.clone(),
                n_features,
                n_classes,
                Some(k),
                rng.random(),
            )?;
            members.push(Member {
                tree,
                background: None,
                warning: Adwin::new(cfg.warning_delta).expect("checked"),
                drift: Adwin::new(cfg.drift_delta).expect("checked"),
                seen: 0.0,
                correct: 0.0,
            });
        }
        Ok(AdaptiveRandomForest {
            cfg,
            n_features,
            n_classes,
            k,
            members,
            rng,
            scratch: vec![0.0; n_classes],
            stats: ArfStats::default(),
        })
    }

    /// Attributes each leaf observes.
    pub fn subspace_size(&self) -> usize {
        self.k
    }

    pub fn stats(&self) -> ArfStats {
        self.stats
    }

    fn fresh_tree(&mut self) -> HoeffdingTree {
        HoeffdingTree::with_subspace(
            self.cfg.tree.clone(),
            self.n_features,
            self.n_classes,
            Some(self.k),
            self.rng.random(),
        )
        .expect("checked at construction")
    }
}

impl AdaptiveRandomForest {
    /// Each tree predicts `x` (its vote added to `votes`, weighted as in
    /// `predict_proba`, when given), learns it with a Poisson(lambda) weight,
    /// and feeds its 0/1 error to its warning and drift detectors. The votes
    /// are those `predict_proba` gives before the step: every tree votes
    /// before it learns, and the trees are independent.
    fn step(&mut self, x: &[f32], y: usize, mut votes: Option<&mut [f64]>) {
        for i in 0..self.members.len() {
            let k = poisson(self.cfg.lambda, &mut self.rng);
            let m = &mut self.members[i];
            let acc = if m.seen > 0.0 {
                m.correct / m.seen
            } else {
                0.0
            };
            let wt = if self.cfg.weighted_vote && acc > 0.0 {
                acc
            } else {
                1.0
            };
            let pred = m
                .tree
                .predict_learn_weighted(x, y, f64::from(k), &mut self.scratch);
            if let Some(v) = votes.as_deref_mut() {
                v.iter_mut()
                    .zip(&self.scratch)
                    .for_each(|(v, p)| *v += p * wt);
            }
            let wrong = pred != Some(y);
            m.seen += 1.0;
            m.correct += f64::from(u8::from(!wrong));
            if k > 0 {
                if let Some(bg) = &mut m.background {
                    bg.learn_weighted(x, y, f64::from(k));
                }
            }
            let e = f64::from(u8::from(wrong));
            if m.warning.update(e) == DriftState::Drift {
                self.stats.warnings += 1;
                let bg = self.fresh_tree();
                let m = &mut self.members[i];
                m.background = Some(bg);
                m.warning.reset();
            }
            let m = &mut self.members[i];
            if m.drift.update(e) == DriftState::Drift {
                self.stats.drifts += 1;
                let next = match m.background.take() {
                    Some(bg) => bg,
                    None => self.fresh_tree(),
                };
                let m = &mut self.members[i];
                m.tree = next;
                m.warning.reset();
                m.drift.reset();
                m.seen = 0.0;
                m.correct = 0.0;
            }
        }
    }
}

impl Learner for AdaptiveRandomForest {
    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &[f32], out: &mut [f64]) {
        let mut tmp = Scores::new(self.n_classes);
        let tmp = tmp.as_mut();
        out.fill(0.0);
        for m in &self.members {
            m.tree.predict_proba(x, tmp);
            let acc = if m.seen > 0.0 {
                m.correct / m.seen
            } else {
                0.0
            };
            let wt = if self.cfg.weighted_vote && acc > 0.0 {
                acc
            } else {
                1.0
            };
            out.iter_mut()
                .zip(tmp.iter())
                .for_each(|(o, t)| *o += t * wt);
        }
        let s: f64 = out.iter().sum();
        if s > 0.0 {
            out.iter_mut().for_each(|o| *o /= s);
        }
    }

    fn learn_one(&mut self, x: &[f32], y: usize) {
        self.step(x, y, None);
    }

    fn predict_learn(&mut self, x: &[f32], y: usize) -> Option<usize> {
        let mut votes = Scores::new(self.n_classes);
        self.step(x, y, Some(votes.as_mut()));
        crate::tree_argmax(votes.as_mut())
    }
}
