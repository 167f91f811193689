//! Hoeffding trees (VFDT, Domingos & Hulten 2000) with Gaussian attribute
//! observers and binary numeric splits, and the Hoeffding Adaptive Tree
//! (Bifet & Gavaldà 2009).

mod hat;
mod ht;
mod leaf;

pub use hat::{HatConfig, HoeffdingAdaptiveTree};
pub use ht::HoeffdingTree;

use crate::ParamError;

/// How a leaf scores classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafPrediction {
    /// The leaf's class weights.
    MajorityClass,
    /// Naive Bayes over the leaf's Gaussians.
    NaiveBayes,
    /// Naive Bayes where it has been right at least as often as the majority
    /// class at this leaf (river's and MOA's default, "nba").
    NaiveBayesAdaptive,
}

/// A Hoeffding tree's parameters. The defaults are river's
/// `HoeffdingTreeClassifier` defaults (MOA's are the same but for `grace_period`).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeConfig {
    /// Weight a leaf must see between split attempts.
    pub grace_period: u32,
    /// One minus the confidence of a split decision.
    pub delta: f64,
    /// Split anyway when the Hoeffding bound falls below this (ties).
    pub tau: f64,
    pub max_depth: Option<u32>,
    /// Candidate thresholds per attribute (evenly spaced in its range).
    pub n_splits: u32,
    /// A split must send more than this fraction of the weight to each side.
    pub min_branch_fraction: f64,
    pub leaf_prediction: LeafPrediction,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            grace_period: 200,
            delta: 1e-7,
            tau: 0.05,
            max_depth: None,
            n_splits: 10,
            min_branch_fraction: 0.01,
            leaf_prediction: LeafPrediction::NaiveBayesAdaptive,
        }
    }
}

impl TreeConfig {
    pub fn check(&self) -> Result<(), ParamError> {
        let bad = |name: &'static str, want: &'static str, got: String| {
            Err(ParamError { name, want, got })
        };
        if self.grace_period == 0 {
            return bad("grace_period", ">= 1", "0".into());
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return bad("delta", "in (0, 1)", self.delta.to_string());
        }
        if !(self.tau >= 0.0 && self.tau.is_finite()) {
            return bad("tau", ">= 0", self.tau.to_string());
        }
        if self.n_splits == 0 {
            return bad("n_splits", ">= 1", "0".into());
        }
        if !(0.0..0.5).contains(&self.min_branch_fraction) {
            return bad(
                "min_branch_fraction",
                "in [0, 0.5)",
                self.min_branch_fraction.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The highest positive score's index (the first on ties), `None` if none is positive.
pub(crate) fn argmax_pub(p: &[f64]) -> Option<usize> {
    leaf::argmax(p)
}
