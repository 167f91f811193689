//! Stream learners and drift detectors, pure and seeded: no IO, no clock, no
//! threads. Every learner sees one sample at a time (`learn_one`) and is
//! evaluated test-then-train (`eval::prequential`).
//!
//! - `drift`: ADWIN, DDM, EDDM, Page-Hinkley behind `DriftDetector`.
//! - `tree`: the Hoeffding tree (VFDT) and the Hoeffding Adaptive Tree.
//! - `arf`: the Adaptive Random Forest.
//! - `linear`: online logistic / softmax regression (per-sample SGD).
//! - `eval`: prequential accuracy, overall and per sliding window.

pub mod arf;
pub mod drift;
pub mod eval;
mod gauss;
pub mod linear;
pub mod tree;

pub use arf::{AdaptiveRandomForest, ArfConfig, MaxFeatures};
pub use drift::{Detector, DetectorSpec, DriftDetector, DriftState};
pub use eval::{prequential, Prequential};
pub use linear::{LinearConfig, OnlineLogReg};
pub use tree::{HatConfig, HoeffdingAdaptiveTree, HoeffdingTree, LeafPrediction, TreeConfig};

/// A learner parameter out of range (`name` is the parameter's name).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be {want}, got {got}")]
pub struct ParamError {
    pub name: &'static str,
    pub want: &'static str,
    pub got: String,
}

pub(crate) fn check_shape(n_features: usize, n_classes: usize) -> Result<(), ParamError> {
    if n_features == 0 {
        return Err(ParamError {
            name: "n_features",
            want: ">= 1",
            got: "0".into(),
        });
    }
    if n_classes < 2 {
        return Err(ParamError {
            name: "n_classes",
            want: ">= 2",
            got: n_classes.to_string(),
        });
    }
    Ok(())
}

/// A classifier that learns one sample at a time. `x` holds the sample's
/// features (always the same count); `y < n_classes()`.
pub trait Learner: Send {
    fn n_classes(&self) -> usize;

    /// Class scores into `out` (`n_classes()` long), summing to 1, or all 0
    /// while the model knows nothing about `x`.
    fn predict_proba(&self, x: &[f32], out: &mut [f64]);

    fn learn_one(&mut self, x: &[f32], y: usize);

    /// The highest-scoring class, or `None` while the model knows nothing.
    fn predict(&self, x: &[f32]) -> Option<usize> {
        let mut s = Scores::new(self.n_classes());
        self.predict_proba(x, s.as_mut());
        tree_argmax(s.as_mut())
    }

    /// Test-then-train in one call: the prediction `predict` would give now,
    /// then `learn_one`. Learners override it to share the work.
    fn predict_learn(&mut self, x: &[f32], y: usize) -> Option<usize> {
        let p = self.predict(x);
        self.learn_one(x, y);
        p
    }

    /// Learns the rows of `xs` (row-major, `xs.len() / ys.len()` features each) in order.
    fn learn_many(&mut self, xs: &[f32], ys: &[usize]) {
        if ys.is_empty() {
            return;
        }
        let d = xs.len() / ys.len();
        for (x, &y) in xs.chunks_exact(d).zip(ys) {
            self.learn_one(x, y);
        }
    }

    /// Predicts each row of `xs` into `out` (`None` as above).
    fn predict_many(&self, xs: &[f32], d: usize, out: &mut Vec<Option<usize>>) {
        out.clear();
        out.extend(xs.chunks_exact(d).map(|x| self.predict(x)));
    }
}

pub(crate) fn tree_argmax(p: &[f64]) -> Option<usize> {
    tree::argmax_pub(p)
}

/// Score scratch on the stack for up to 16 classes.
pub(crate) enum Scores {
    Stack([f64; 16], usize),
    Heap(Vec<f64>),
}

impl Scores {
    pub(crate) fn new(n: usize) -> Scores {
        if n <= 16 {
            Scores::Stack([0.0; 16], n)
        } else {
            Scores::Heap(vec![0.0; n])
        }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [f64] {
        match self {
            Scores::Stack(a, n) => &mut a[..*n],
            Scores::Heap(v) => v,
        }
    }
}

/// A stream learner named with its parameters (what a pipeline file asks for).
#[derive(Debug, Clone, PartialEq)]
pub enum LearnerSpec {
    HoeffdingTree(TreeConfig),
    Hat(HatConfig),
    Arf(ArfConfig),
    OnlineLogReg(LinearConfig),
}

impl LearnerSpec {
    /// The learner for `n_features` attributes and `n_classes` classes.
    pub fn build(
        &self,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Box<dyn Learner>, ParamError> {
        Ok(match self {
            LearnerSpec::HoeffdingTree(c) => {
                Box::new(HoeffdingTree::new(c.clone(), n_features, n_classes)?)
            }
            LearnerSpec::Hat(c) => Box::new(HoeffdingAdaptiveTree::new(
                c.clone(),
                n_features,
                n_classes,
            )?),
            LearnerSpec::Arf(c) => {
                Box::new(AdaptiveRandomForest::new(c.clone(), n_features, n_classes)?)
            }
            LearnerSpec::OnlineLogReg(c) => {
                Box::new(OnlineLogReg::new(c.clone(), n_features, n_classes)?)
            }
        })
    }

    /// Checks the parameters alone (the shape is the data's business).
    pub fn check(&self) -> Result<(), ParamError> {
        self.build(1, 2).map(drop)
    }

    /// The parameters as JSON-friendly (name, value) pairs, for reports.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let tree = |t: &TreeConfig| {
            vec![
                ("grace_period", t.grace_period.to_string()),
                ("delta", t.delta.to_string()),
                ("tau", t.tau.to_string()),
                (
                    "max_depth",
                    t.max_depth.map_or("none".into(), |d| d.to_string()),
                ),
                ("leaf_prediction", format!("{:?}", t.leaf_prediction)),
            ]
        };
        match self {
            LearnerSpec::HoeffdingTree(t) => tree(t),
            LearnerSpec::Hat(h) => {
                let mut v = tree(&h.tree);
                v.push(("seed", h.seed.to_string()));
                v
            }
            LearnerSpec::Arf(a) => {
                let mut v = tree(&a.tree);
                v.extend([
                    ("n_models", a.n_models.to_string()),
                    ("lambda", a.lambda.to_string()),
                    ("max_features", format!("{:?}", a.max_features)),
                    ("seed", a.seed.to_string()),
                ]);
                v
            }
            LearnerSpec::OnlineLogReg(c) => vec![("lr", c.lr.to_string())],
        }
    }
}
