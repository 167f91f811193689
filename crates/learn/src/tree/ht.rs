//! The Hoeffding tree (VFDT) classifier, optionally with a random attribute
//! subspace per leaf (the base learner of the Adaptive Random Forest).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::leaf::{argmax, Leaf, Split};
use super::TreeConfig;
use crate::{Learner, ParamError};

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Leaf(Leaf),
    Split {
        feat: u32,
        thr: f64,
        kids: Box<[Node; 2]>,
    },
}

/// Draws the attributes a new leaf observes: all of them, or `k` at random.
#[derive(Debug, Clone)]
pub(crate) struct Subspace {
    pub(crate) n_features: usize,
    pub(crate) k: Option<usize>,
    pub(crate) rng: ChaCha8Rng,
}

impl Subspace {
    pub(crate) fn draw(&mut self) -> Vec<u32> {
        let mut all: Vec<u32> = (0..self.n_features as u32).collect();
        match self.k {
            Some(k) if k < self.n_features => {
                for i in 0..k {
                    let j = self.rng.random_range(i..self.n_features);
                    all.swap(i, j);
                }
                all.truncate(k);
                all.sort_unstable();
                all
            }
            _ => all,
        }
    }
}

/// A Hoeffding tree over `n_features` numeric attributes and `n_classes` classes.
#[derive(Debug, Clone)]
pub struct HoeffdingTree {
    cfg: TreeConfig,
    n_classes: usize,
    root: Node,
    sub: Subspace,
    scratch: Vec<f64>,
    n_leaves: usize,
}

impl HoeffdingTree {
    pub fn new(cfg: TreeConfig, n_features: usize, n_classes: usize) -> Result<Self, ParamError> {
        Self::with_subspace(cfg, n_features, n_classes, None, 0)
    }

    /// A tree whose leaves each observe `k` random attributes (drawn with `seed`).
    pub fn with_subspace(
        cfg: TreeConfig,
        n_features: usize,
        n_classes: usize,
        k: Option<usize>,
        seed: u64,
    ) -> Result<Self, ParamError> {
        cfg.check()?;
        crate::check_shape(n_features, n_classes)?;
        let mut sub = Subspace {
            n_features,
            k,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        let root = Node::Leaf(Leaf::new(vec![0.0; n_classes], sub.draw(), 0));
        Ok(HoeffdingTree {
            cfg,
            n_classes,
            root,
            sub,
            scratch: vec![0.0; n_classes],
            n_leaves: 1,
        })
    }

    /// Leaves in the tree.
    pub fn n_leaves(&self) -> usize {
        self.n_leaves
    }

    fn leaf(&self, x: &[f32]) -> &Leaf {
        let mut node = &self.root;
        loop {
            match node {
                Node::Leaf(l) => return l,
                Node::Split { feat, thr, kids } => {
                    node = &kids[usize::from(f64::from(x[*feat as usize]) > *thr)]
                }
            }
        }
    }

    /// The predicted class, or `None` while the reached leaf knows nothing.
    pub fn predict_opt(&self, x: &[f32], out: &mut [f64]) -> Option<usize> {
        self.predict_proba(x, out);
        argmax(out)
    }

    /// Learns one sample with weight `w` (ARF's online bagging passes Poisson weights).
    pub fn learn_weighted(&mut self, x: &[f32], y: usize, w: f64) {
        let node = descend(&mut self.root, x);
        let Node::Leaf(leaf) = node else {
            unreachable!()
        };
        leaf.learn(x, y, w, self.cfg.leaf_prediction, &mut self.scratch);
        grow(node, &self.cfg, &mut self.sub, &mut self.n_leaves);
    }

    /// Scores `x` into `out` (as `predict_proba`), then learns it with weight
    /// `w` (not at all when `w` is 0), descending the tree once.
    pub fn predict_learn_weighted(
        &mut self,
        x: &[f32],
        y: usize,
        w: f64,
        out: &mut [f64],
    ) -> Option<usize> {
        let node = descend(&mut self.root, x);
        let Node::Leaf(leaf) = node else {
            unreachable!()
        };
        leaf.predict_learn(x, y, w, self.cfg.leaf_prediction, out, &mut self.scratch);
        let pred = argmax(out);
        if w > 0.0 {
            grow(node, &self.cfg, &mut self.sub, &mut self.n_leaves);
        }
        pred
    }
}

fn descend<'a>(mut node: &'a mut Node, x: &[f32]) -> &'a mut Node {
    while let Node::Split { feat, thr, kids } = node {
        node = &mut kids[usize::from(f64::from(x[*feat as usize]) > *thr)];
    }
    node
}

/// Tries to split leaf `node` if it is due.
fn grow(node: &mut Node, cfg: &TreeConfig, sub: &mut Subspace, n_leaves: &mut usize) {
    let Node::Leaf(leaf) = node else { return };
    if !leaf.due(f64::from(cfg.grace_period)) {
        return;
    }
    if cfg.max_depth.is_some_and(|d| leaf.depth >= d) {
        leaf.deactivate();
        return;
    }
    if let Some(Split {
        feat,
        thr,
        left,
        right,
    }) = leaf.attempt_split(cfg)
    {
        let depth = leaf.depth + 1;
        let kids = Box::new([
            Node::Leaf(Leaf::new(left, sub.draw(), depth)),
            Node::Leaf(Leaf::new(right, sub.draw(), depth)),
        ]);
        *node = Node::Split { feat, thr, kids };
        *n_leaves += 1;
    }
}

impl Learner for HoeffdingTree {
    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &[f32], out: &mut [f64]) {
        self.leaf(x).predict(x, self.cfg.leaf_prediction, out);
    }

    fn learn_one(&mut self, x: &[f32], y: usize) {
        self.learn_weighted(x, y, 1.0);
    }

    fn predict_learn(&mut self, x: &[f32], y: usize) -> Option<usize> {
        let mut s = crate::Scores::new(self.n_classes);
        self.predict_learn_weighted(x, y, 1.0, s.as_mut())
    }
}
