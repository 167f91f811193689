//! `model` fields of the stream learners (`hoeffding_tree`, `hat`, `arf`,
//! `online_logreg`):
//!
//! ```yaml
//! model:
//!   id: arf                 # hoeffding_tree | hat | arf
//!   grace_period: 50        # weight between split attempts (HT/HAT 200, ARF 50)
//!   delta: 0.01             # split confidence (HT/HAT 1e-7, ARF 0.01)
//!   tau: 0.05               # tie threshold
//!   max_depth: null         # default unlimited
//!   leaf_prediction: nba    # mc | nb | nba
//!   seed: 42                # hat, arf
//!   n_models: 10            # arf
//!   lambda: 6               # arf: Poisson rate of online bagging
//!   max_features: sqrt+1    # arf: sqrt+1 (MOA) | sqrt (river) | a count
//!   warning_delta: 0.01     # arf: ADWIN delta of the warning detector
//!   drift_delta: 0.001      # arf: ADWIN delta of the drift detector
//! model:
//!   id: online_logreg       # per-sample SGD logistic/softmax regression on
//!   lr: 0.01                #   standardised inputs (river's StandardScaler | LogisticRegression)
//! ```
//!
//! A field that the chosen id does not take is an unknown field.

use stratus_learn::{
    ArfConfig, HatConfig, LeafPrediction, LearnerSpec, LinearConfig, MaxFeatures, TreeConfig,
};
use stratus_yaml::Node;

use super::{Ctx, MapView, ModelId};

fn tree_fields(
    ctx: &mut Ctx<'_>,
    m: &mut MapView<'_>,
    t: &mut TreeConfig,
    nodes: &mut Vec<(&'static str, stratus_yaml::Pos)>,
) {
    if let Some(v) = m.get("grace_period") {
        nodes.push(("grace_period", v.pos));
        if let Some(x) = ctx.int(v, "model.grace_period", 1, 1 << 30) {
            t.grace_period = x as u32;
        }
    }
    if let Some(v) = m.get("delta") {
        nodes.push(("delta", v.pos));
        if let Some(x) = ctx.num(
            v,
            "model.delta",
            |d| d > 0.0 && d < 1.0,
            "use a value in (0, 1)",
        ) {
            t.delta = x;
        }
    }
    if let Some(v) = m.get("tau") {
        nodes.push(("tau", v.pos));
        if let Some(x) = ctx.num(v, "model.tau", |d| d >= 0.0, "must be >= 0") {
            t.tau = x;
        }
    }
    if let Some(v) = m.get("max_depth") {
        nodes.push(("max_depth", v.pos));
        if let Some(x) = ctx.int(v, "model.max_depth", 1, 1000) {
            t.max_depth = Some(x as u32);
        }
    }
    if let Some(v) = m.get("leaf_prediction") {
        let choices = [
            ("mc", LeafPrediction::MajorityClass),
            ("nb", LeafPrediction::NaiveBayes),
            ("nba", LeafPrediction::NaiveBayesAdaptive),
        ];
        if let Some(x) = ctx.choice(v, "model.leaf_prediction", &choices) {
            t.leaf_prediction = x;
        }
    }
}

fn seed(ctx: &mut Ctx<'_>, m: &mut MapView<'_>, into: &mut u64) {
    if let Some(v) = m.get("seed") {
        if let Some(x) = ctx.int(v, "model.seed", 0, i64::MAX) {
            *into = x as u64;
        }
    }
}

fn max_features(ctx: &mut Ctx<'_>, v: &Node) -> Option<MaxFeatures> {
    match v.as_scalar() {
        Some("sqrt") => Some(MaxFeatures::Sqrt),
        Some("sqrt+1") => Some(MaxFeatures::SqrtPlusOne),
        _ => ctx
            .int(v, "model.max_features", 1, 1 << 20)
            .map(|k| MaxFeatures::Count(k as usize)),
    }
}

/// Stream learner `id` with the defaults a pipeline file gets (river's),
/// `None` for a batch model.
pub fn default_learner(id: ModelId) -> Option<LearnerSpec> {
    match id {
        ModelId::HoeffdingTree => Some(LearnerSpec::HoeffdingTree(TreeConfig::default())),
        ModelId::Hat => Some(LearnerSpec::Hat(HatConfig {
            seed: 42,
            ..HatConfig::default()
        })),
        ModelId::Arf => Some(LearnerSpec::Arf(ArfConfig::default())),
        ModelId::OnlineLogReg => Some(LearnerSpec::OnlineLogReg(LinearConfig::default())),
        ModelId::LogReg | ModelId::Mlp | ModelId::Cnn => None,
    }
}

/// Reads the parameters of stream learner `id` from the `model` mapping
/// (before its `finish`), with river's defaults for what is absent.
pub(super) fn read_learner(
    ctx: &mut Ctx<'_>,
    m: &mut MapView<'_>,
    id: ModelId,
) -> Option<LearnerSpec> {
    let errors_before = ctx.errors.len();
    let mut nodes = Vec::new();
    let spec = match id {
        ModelId::HoeffdingTree => {
            let mut t = TreeConfig::default();
            tree_fields(ctx, m, &mut t, &mut nodes);
            LearnerSpec::HoeffdingTree(t)
        }
        ModelId::Hat => {
            let mut h = HatConfig {
                seed: 42,
                ..HatConfig::default()
            };
            tree_fields(ctx, m, &mut h.tree, &mut nodes);
            seed(ctx, m, &mut h.seed);
            LearnerSpec::Hat(h)
        }
        ModelId::Arf => {
            let mut a = ArfConfig::default();
            tree_fields(ctx, m, &mut a.tree, &mut nodes);
            seed(ctx, m, &mut a.seed);
            if let Some(v) = m.get("n_models") {
                if let Some(x) = ctx.int(v, "model.n_models", 1, 1000) {
                    a.n_models = x as usize;
                }
            }
            if let Some(v) = m.get("lambda") {
                if let Some(x) = ctx.num(
                    v,
                    "model.lambda",
                    |l| l > 0.0 && l <= 100.0,
                    "use a rate in (0, 100]",
                ) {
                    a.lambda = x;
                }
            }
            if let Some(v) = m.get("max_features") {
                if let Some(x) = max_features(ctx, v) {
                    a.max_features = x;
                }
            }
            for (key, field, into) in [
                ("warning_delta", "model.warning_delta", &mut a.warning_delta),
                ("drift_delta", "model.drift_delta", &mut a.drift_delta),
            ] {
                if let Some(v) = m.get(key) {
                    if let Some(x) =
                        ctx.num(v, field, |d| d > 0.0 && d < 1.0, "use a value in (0, 1)")
                    {
                        *into = x;
                    }
                }
            }
            LearnerSpec::Arf(a)
        }
        ModelId::OnlineLogReg => {
            let mut c = LinearConfig::default();
            if let Some(v) = m.get("lr") {
                nodes.push(("lr", v.pos));
                if let Some(x) = ctx.num(
                    v,
                    "model.lr",
                    |l| l > 0.0 && l <= 10.0,
                    "use a rate in (0, 10]",
                ) {
                    c.lr = x;
                }
            }
            LearnerSpec::OnlineLogReg(c)
        }
        ModelId::LogReg | ModelId::Mlp | ModelId::Cnn => return None,
    };
    if ctx.errors.len() > errors_before {
        return None;
    }
    // The learner's own checks (ranges the parser above cannot see).
    if let Err(e) = spec.check() {
        let pos = nodes
            .iter()
            .find(|(n, _)| *n == e.name)
            .map_or(m.pos, |(_, p)| *p);
        ctx.error(
            pos,
            &format!("model.{}", e.name),
            format!("must be {}, got {}", e.want, e.got),
        );
        return None;
    }
    Some(spec)
}

#[cfg(test)]
mod tests;
