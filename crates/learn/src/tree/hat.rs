//! The Hoeffding Adaptive Tree (Bifet & Gavaldà, "Adaptive Learning from
//! Evolving Data Streams", IDA 2009), as river's
//! `HoeffdingAdaptiveTreeClassifier`: every node watches its own 0/1 error
//! with ADWIN; a node whose error rises grows an alternate subtree, which
//! replaces it once it is significantly better (or is pruned once it is
//! significantly worse). Prediction sums the leaves reached in the tree and
//! in the alternates on the path.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::leaf::{argmax, Leaf, Split};
use super::TreeConfig;
use crate::drift::{Adwin, DriftDetector, DriftState};
use crate::{Learner, ParamError};

/// HAT's parameters on top of the tree's.
#[derive(Debug, Clone, PartialEq)]
pub struct HatConfig {
    pub tree: TreeConfig,
    /// Each node learns with weight Poisson(1) (river: a weight of 0 becomes 1).
    pub bootstrap_sampling: bool,
    /// Both windows must be wider than this before an alternate is judged.
    pub drift_window_threshold: u32,
    /// ADWIN's delta for the nodes' error detectors.
    pub adwin_delta: f64,
    /// Significance of the alternate-versus-original test.
    pub switch_significance: f64,
    pub seed: u64,
}

impl Default for HatConfig {
    fn default() -> Self {
        HatConfig {
            tree: TreeConfig::default(),
            bootstrap_sampling: true,
            drift_window_threshold: 300,
            adwin_delta: 0.002,
            switch_significance: 0.05,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Leaf(Leaf),
    Split {
        feat: u32,
        thr: f64,
        kids: Box<[HatNode; 2]>,
    },
}

#[derive(Debug, Clone)]
struct HatNode {
    kind: Kind,
    det: Adwin,
    alt: Option<Box<HatNode>>,
}

struct Ctx<'a> {
    cfg: &'a HatConfig,
    n_features: usize,
    rng: &'a mut ChaCha8Rng,
    scratch: &'a mut [f64],
}

fn poisson1(rng: &mut ChaCha8Rng) -> u32 {
    let l = (-1.0f64).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

impl HatNode {
    fn leaf(class_w: Vec<f64>, n_features: usize, depth: u32, delta: f64) -> HatNode {
        HatNode {
            kind: Kind::Leaf(Leaf::new(class_w, (0..n_features as u32).collect(), depth)),
            det: Adwin::new(delta).expect("checked"),
            alt: None,
        }
    }

    fn main_leaf(&self, x: &[f32]) -> &Leaf {
        match &self.kind {
            Kind::Leaf(l) => l,
            Kind::Split { feat, thr, kids } => {
                kids[usize::from(f64::from(x[*feat as usize]) > *thr)].main_leaf(x)
            }
        }
    }

    /// Adds the scores of every leaf reached (main path and alternates) to `acc`.
    fn accumulate(&self, x: &[f32], how: super::LeafPrediction, out: &mut [f64], acc: &mut [f64]) {
        if let Some(alt) = &self.alt {
            alt.accumulate(x, how, out, acc);
        }
        match &self.kind {
            Kind::Leaf(l) => {
                l.predict(x, how, out);
                acc.iter_mut().zip(out.iter()).for_each(|(a, o)| *a += o);
            }
            Kind::Split { feat, thr, kids } => {
                kids[usize::from(f64::from(x[*feat as usize]) > *thr)].accumulate(x, how, out, acc)
            }
        }
    }

    fn learn(&mut self, x: &[f32], y: usize, w: f64, cx: &mut Ctx<'_>) {
        let how = cx.cfg.tree.leaf_prediction;
        let nc = cx.scratch.len();
        let pred = {
            let out = &mut cx.scratch[..nc];
            self.main_leaf(x).predict(x, how, out);
            argmax(out)
        };
        let old_err = self.det.estimation();
        let mut change = self.det.update(f64::from(u8::from(pred != Some(y)))) == DriftState::Drift;
        if change && old_err > self.det.estimation() {
            change = false; // the error fell
        }
        match &mut self.kind {
            Kind::Leaf(leaf) => {
                let mut w = w;
                if cx.cfg.bootstrap_sampling {
                    let k = poisson1(cx.rng);
                    if k > 0 {
                        w *= f64::from(k);
                    }
                }
                leaf.learn(x, y, w, how, cx.scratch);
                let tcfg = &cx.cfg.tree;
                if !leaf.due(f64::from(tcfg.grace_period)) {
                    return;
                }
                if tcfg.max_depth.is_some_and(|d| leaf.depth >= d) {
                    leaf.deactivate();
                    return;
                }
                if let Some(Split {
                    feat,
                    thr,
                    left,
                    right,
                }) = leaf.attempt_split(tcfg)
                {
                    let d = leaf.depth + 1;
                    let kids = Box::new([
                        HatNode::leaf(left, cx.n_features, d, cx.cfg.adwin_delta),
                        HatNode::leaf(right, cx.n_features, d, cx.cfg.adwin_delta),
                    ]);
                    self.kind = Kind::Split { feat, thr, kids };
                }
            }
            Kind::Split { .. } => {
                if change {
                    let d = self.depth();
                    self.alt = Some(Box::new(HatNode::leaf(
                        vec![0.0; nc],
                        cx.n_features,
                        d,
                        cx.cfg.adwin_delta,
                    )));
                } else if let Some(alt) = &self.alt {
                    let (wo, wa) = (self.det.width(), alt.det.width());
                    let thr = f64::from(cx.cfg.drift_window_threshold);
                    if wa > 0.0 && wo > thr && wa > thr {
                        let (eo, ea) = (self.det.estimation(), alt.det.estimation());
                        let bound = (2.0
                            * eo
                            * (1.0 - eo)
                            * (2.0 / cx.cfg.switch_significance).ln()
                            * (1.0 / wa + 1.0 / wo))
                            .sqrt();
                        if bound < eo - ea {
                            let alt = self.alt.take().expect("checked");
                            *self = *alt;
                            self.learn(x, y, w, cx);
                            return;
                        } else if bound < ea - eo {
                            self.alt = None;
                        }
                    }
                }
                if let Some(alt) = &mut self.alt {
                    alt.learn(x, y, w, cx);
                }
                if let Kind::Split { feat, thr, kids } = &mut self.kind {
                    kids[usize::from(f64::from(x[*feat as usize]) > *thr)].learn(x, y, w, cx);
                }
            }
        }
    }

    fn depth(&self) -> u32 {
        match &self.kind {
            Kind::Leaf(l) => l.depth,
            Kind::Split { kids, .. } => kids[0].depth().saturating_sub(1),
        }
    }

    fn count(&self) -> (usize, usize) {
        let own = match &self.kind {
            Kind::Leaf(_) => (1, 0),
            Kind::Split { kids, .. } => {
                let (a, b) = (kids[0].count(), kids[1].count());
                (a.0 + b.0, a.1 + b.1)
            }
        };
        match &self.alt {
            Some(alt) => (own.0, own.1 + 1 + alt.count().1),
            None => own,
        }
    }
}

/// A Hoeffding Adaptive Tree over `n_features` numeric attributes.
#[derive(Debug, Clone)]
pub struct HoeffdingAdaptiveTree {
    cfg: HatConfig,
    n_features: usize,
    n_classes: usize,
    root: HatNode,
    rng: ChaCha8Rng,
    scratch: Vec<f64>,
}

impl HoeffdingAdaptiveTree {
    pub fn new(cfg: HatConfig, n_features: usize, n_classes: usize) -> Result<Self, ParamError> {
        cfg.tree.check()?;
        crate::check_shape(n_features, n_classes)?;
        if !(cfg.adwin_delta > 0.0 && cfg.adwin_delta < 1.0) {
            return Err(ParamError {
                name: "adwin_delta",
                want: "in (0, 1)",
                got: cfg.adwin_delta.to_string(),
            });
        }
        if !(cfg.switch_significance > 0.0 && cfg.switch_significance < 1.0) {
            return Err(ParamError {
                name: "switch_significance",
                want: "in (0, 1)",
                got: cfg.switch_significance.to_string(),
            });
        }
        let root = HatNode::leaf(vec![0.0; n_classes], n_features, 0, cfg.adwin_delta);
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Ok(HoeffdingAdaptiveTree {
            cfg,
            n_features,
            n_classes,
            root,
            rng,
            scratch: vec![0.0; n_classes],
        })
    }

    /// (leaves in the main tree, alternate subtrees alive).
    pub fn shape(&self) -> (usize, usize) {
        self.root.count()
    }
}

impl Learner for HoeffdingAdaptiveTree {
    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &[f32], out: &mut [f64]) {
        let mut tmp = crate::Scores::new(self.n_classes);
        out.fill(0.0);
        self.root
            .accumulate(x, self.cfg.tree.leaf_prediction, tmp.as_mut(), out);
        let s: f64 = out.iter().sum();
        if s > 0.0 {
            out.iter_mut().for_each(|o| *o /= s);
        }
    }

    fn learn_one(&mut self, x: &[f32], y: usize) {
        let mut cx = Ctx {
            cfg: &self.cfg,
            n_features: self.n_features,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
        };
        self.root.learn(x, y, 1.0, &mut cx);
    }
}
