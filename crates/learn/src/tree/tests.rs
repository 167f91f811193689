use super::*;
use crate::{prequential, AdaptiveRandomForest, ArfConfig, Learner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SEA-like stream: y = x0 + x1 <= theta (theta switches at `change`), 10% label noise.
fn sea(seed: u64, n: usize, change: usize) -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..n {
        let x: [f32; 3] = [
            rng.random::<f32>() * 10.0,
            rng.random::<f32>() * 10.0,
            rng.random::<f32>() * 10.0,
        ];
        let theta = if i < change { 8.0 } else { 13.0 };
        let mut y = usize::from(x[0] + x[1] <= theta);
        if rng.random::<f64>() < 0.1 {
            y = 1 - y;
        }
        xs.extend_from_slice(&x);
        ys.push(y);
    }
    (xs, ys)
}

#[test]
fn hoeffding_tree_learns_a_threshold_concept() {
    let (xs, ys) = sea(1, 20_000, usize::MAX);
    let mut t = HoeffdingTree::new(TreeConfig::default(), 3, 2).unwrap();
    let p = prequential(&mut t, &xs, 3, &ys, 5000);
    // Bayes-optimal is 0.9 with 10% noise.
    assert!(p.accuracy() > 0.84, "{p:?}");
    assert!(p.windows[3] > 0.86, "{p:?}");
    assert!(t.n_leaves() > 1);
}

#[test]
fn trees_and_forest_are_deterministic_for_a_seed() {
    let (xs, ys) = sea(2, 5000, 2500);
    let run = |seed| {
        let mut a = AdaptiveRandomForest::new(
            ArfConfig {
                seed,
                ..ArfConfig::default()
            },
            3,
            2,
        )
        .unwrap();
        let mut h = HoeffdingAdaptiveTree::new(
            HatConfig {
                seed,
                ..HatConfig::default()
            },
            3,
            2,
        )
        .unwrap();
        (
            prequential(&mut a, &xs, 3, &ys, 500),
            prequential(&mut h, &xs, 3, &ys, 500),
        )
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).0, run(8).0);
}

#[test]
fn adaptive_models_recover_from_an_abrupt_drift_better_than_the_plain_tree() {
    let (xs, ys) = sea(3, 40_000, 20_000);
    let mut ht = HoeffdingTree::new(TreeConfig::default(), 3, 2).unwrap();
    let mut hat = HoeffdingAdaptiveTree::new(HatConfig::default(), 3, 2).unwrap();
    let mut arf = AdaptiveRandomForest::new(ArfConfig::default(), 3, 2).unwrap();
    // Accuracy over the 10,000 samples after the change.
    let after = |m: &mut dyn Learner| {
        let p = prequential(m, &xs, 3, &ys, 10_000);
        p.windows[2]
    };
    let (a_ht, a_hat, a_arf) = (after(&mut ht), after(&mut hat), after(&mut arf));
    assert!(a_hat > a_ht, "hat {a_hat} ht {a_ht}");
    assert!(a_arf > 0.85, "arf {a_arf}");
    assert!(arf.stats().drifts > 0, "{:?}", arf.stats());
}

#[test]
fn max_depth_stops_growth() {
    let (xs, ys) = sea(4, 20_000, usize::MAX);
    let mut t = HoeffdingTree::new(
        TreeConfig {
            max_depth: Some(1),
            ..TreeConfig::default()
        },
        3,
        2,
    )
    .unwrap();
    prequential(&mut t, &xs, 3, &ys, 0);
    assert!(t.n_leaves() <= 2, "{}", t.n_leaves());
    // Leaves at the depth limit stop observing; naive Bayes falls back to counts.
    let cfg = TreeConfig {
        max_depth: Some(1),
        leaf_prediction: LeafPrediction::NaiveBayes,
        ..TreeConfig::default()
    };
    let mut t = HoeffdingTree::new(cfg, 3, 2).unwrap();
    let p = prequential(&mut t, &xs, 3, &ys, 0);
    assert!(p.accuracy() > 0.6, "{p:?}");
}

#[test]
fn leaf_prediction_modes_all_learn() {
    let (xs, ys) = sea(5, 10_000, usize::MAX);
    for lp in [
        LeafPrediction::MajorityClass,
        LeafPrediction::NaiveBayes,
        LeafPrediction::NaiveBayesAdaptive,
    ] {
        let mut t = HoeffdingTree::new(
            TreeConfig {
                leaf_prediction: lp,
                ..TreeConfig::default()
            },
            3,
            2,
        )
        .unwrap();
        let p = prequential(&mut t, &xs, 3, &ys, 0);
        assert!(p.accuracy() > 0.7, "{lp:?}: {}", p.accuracy());
    }
}

#[test]
fn an_empty_model_predicts_nothing() {
    let t = HoeffdingTree::new(TreeConfig::default(), 2, 3).unwrap();
    assert_eq!(t.predict(&[0.0, 1.0]), None);
    let a = AdaptiveRandomForest::new(ArfConfig::default(), 2, 3).unwrap();
    assert_eq!(a.predict(&[0.0, 1.0]), None);
}

#[test]
fn bad_parameters_name_the_field() {
    let e = HoeffdingTree::new(
        TreeConfig {
            delta: 0.0,
            ..TreeConfig::default()
        },
        3,
        2,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "delta must be in (0, 1), got 0");
    assert_eq!(
        HoeffdingTree::new(
            TreeConfig {
                grace_period: 0,
                ..TreeConfig::default()
            },
            3,
            2
        )
        .unwrap_err()
        .name,
        "grace_period"
    );
    assert_eq!(
        HoeffdingTree::new(TreeConfig::default(), 0, 2)
            .unwrap_err()
            .name,
        "n_features"
    );
    assert_eq!(
        HoeffdingTree::new(TreeConfig::default(), 3, 1)
            .unwrap_err()
            .name,
        "n_classes"
    );
    assert_eq!(
        AdaptiveRandomForest::new(
            ArfConfig {
                n_models: 0,
                ..ArfConfig::default()
            },
            3,
            2
        )
        .unwrap_err()
        .name,
        "n_models"
    );
    assert_eq!(
        AdaptiveRandomForest::new(
            ArfConfig {
                drift_delta: 2.0,
                ..ArfConfig::default()
            },
            3,
            2
        )
        .unwrap_err()
        .name,
        "drift_delta"
    );
    assert_eq!(
        HoeffdingAdaptiveTree::new(
            HatConfig {
                adwin_delta: -1.0,
                ..HatConfig::default()
            },
            3,
            2
        )
        .unwrap_err()
        .name,
        "adwin_delta"
    );
}

#[test]
fn subspace_sizes() {
    use crate::MaxFeatures::*;
    assert_eq!(Sqrt.resolve(6), 2);
    assert_eq!(SqrtPlusOne.resolve(6), 3);
    assert_eq!(SqrtPlusOne.resolve(64), 9);
    assert_eq!(Count(100).resolve(6), 6);
}

#[test]
fn predict_learn_is_predict_then_learn() {
    let (xs, ys) = sea(6, 6000, 3000);
    type Make = fn() -> Box<dyn Learner>;
    let makers: [Make; 3] = [
        || {
            Box::new(
                HoeffdingTree::new(
                    TreeConfig {
                        grace_period: 50,
                        ..TreeConfig::default()
                    },
                    3,
                    2,
                )
                .unwrap(),
            )
        },
        || Box::new(HoeffdingAdaptiveTree::new(HatConfig::default(), 3, 2).unwrap()),
        || Box::new(AdaptiveRandomForest::new(ArfConfig::default(), 3, 2).unwrap()),
    ];
    for make in makers {
        let (mut a, mut b) = (make(), make());
        for (x, &y) in xs.chunks_exact(3).zip(&ys) {
            let p = a.predict(x);
            a.learn_one(x, y);
            assert_eq!(p, b.predict_learn(x, y));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// On any finite stream, every learner's scores are finite and sum to 1
    /// (or are all 0 before it knows anything).
    #[test]
    fn scores_are_a_distribution(
        rows in proptest::collection::vec((proptest::collection::vec(-1e6f32..1e6, 3), 0usize..3), 1..400),
        grace in 5u32..60,
    ) {
        let tree = TreeConfig { grace_period: grace, ..TreeConfig::default() };
        let mut models: Vec<Box<dyn Learner>> = vec![
            Box::new(HoeffdingTree::new(tree.clone(), 3, 3).unwrap()),
            Box::new(HoeffdingAdaptiveTree::new(HatConfig { tree: tree.clone(), ..HatConfig::default() }, 3, 3).unwrap()),
            Box::new(AdaptiveRandomForest::new(ArfConfig { n_models: 3, tree, ..ArfConfig::default() }, 3, 3).unwrap()),
        ];
        let mut out = [0.0; 3];
        for m in &mut models {
            for (x, y) in &rows {
                m.predict_proba(x, &mut out);
                let s: f64 = out.iter().sum();
                proptest::prop_assert!(out.iter().all(|p| p.is_finite() && *p >= 0.0), "{out:?}");
                proptest::prop_assert!(s == 0.0 || (s - 1.0).abs() < 1e-9, "{out:?}");
                m.learn_one(x, *y);
            }
        }
    }
}
