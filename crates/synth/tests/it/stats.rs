//! Statistics with fixed seeds: the generated shapes follow the published
//! CDFs, and sampled costs reproduce their percentiles.
//!
//! Tolerances: 20,000 samples; Kolmogorov–Smirnov distance ≤ 0.015 between
//! the generated shapes and the published CDFs (the 99.9% critical value for
//! this many samples is 0.014; the consistency rule itself moves the
//! marginals by 3·10⁻⁴, checked separately against 10⁻³; with seed 2021 the
//! distances are 0.004 for nodes, 0.003 for depth and 0.002 for width), and
//! for percentile points |F̂(p_q) − q| ≤ 0.01 (about 4 standard errors at
//! q = 0.5).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stratus_synth::shape::Marginals;
use stratus_synth::{
    Inputs, NodeCost, PayloadDist, Shape, SynthConfig, Synthesizer, DEFAULT_MEMORY_MB,
};

use crate::{azure_shapes, profiles, trace_shape};

const SAMPLES: u32 = 20_000;
const KS_TOLERANCE: f64 = 0.015;
const PERCENTILE_TOLERANCE: f64 = 0.01;

/// sup |F̂ − F| over the jump points of both step functions.
fn ks(samples: &[u64], cdf: impl Fn(u64) -> f64, support: &[u64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let mut points: Vec<u64> = sorted.iter().chain(support).copied().collect();
    points.sort_unstable();
    points.dedup();
    let n = sorted.len() as f64;
    points
        .into_iter()
        .map(|x| {
            let emp = sorted.partition_point(|&s| s <= x) as f64 / n;
            (emp - cdf(x)).abs()
        })
        .fold(0.0, f64::max)
}

/// KS distance between two pmfs over the same values.
fn ks_pmf(a: &[(u64, f64)], b: &[(u64, f64)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut fa, mut fb, mut d) = (0.0, 0.0, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        fa += x.1;
        fb += y.1;
        d = d.max((fa - fb).abs());
    }
    d
}

fn micro_cost() -> NodeCost {
    NodeCost::Fixed {
        duration_ms: 1.0,
        memory_mb: 1,
    }
}

#[test]
fn consistency_rule_keeps_the_published_marginals() {
    let shapes = azure_shapes();
    let synth = Synthesizer::new(
        SynthConfig {
            cost: micro_cost(),
            ..SynthConfig::default()
        },
        Inputs {
            profiles: &[],
            azure: Some(&shapes),
        },
    )
    .unwrap();
    let model = synth.azure_model().unwrap();
    let (fit, target): (Marginals, Marginals) = (model.marginals(), model.targets());
    assert!(model.fit_error() < 1e-3, "fit error {}", model.fit_error());
    for (name, f, t) in [
        ("nodes", &fit.nodes, &target.nodes),
        ("depth", &fit.depth, &target.depth),
        ("width", &fit.width, &target.width),
    ] {
        let d = ks_pmf(f, t);
        assert!(d < 1e-3, "{name}: KS(fitted, published) = {d}");
    }
}

#[test]
fn azure_shapes_follow_the_published_cdfs() {
    let shapes = azure_shapes();
    let config = SynthConfig {
        seed: 2021,
        count: SAMPLES,
        cost: micro_cost(),
        payload: PayloadDist::Fixed(1),
        ..SynthConfig::default()
    };
    let synth = Synthesizer::new(
        config,
        Inputs {
            profiles: &[],
            azure: Some(&shapes),
        },
    )
    .unwrap();
    let (mut nodes, mut depth, mut width) = (Vec::new(), Vec::new(), Vec::new());
    let mut joins = 0;
    for dag in synth.generate() {
        let (n, d, w) = trace_shape(&dag);
        nodes.push(n);
        depth.push(d);
        width.push(w);
        joins += usize::from(dag.output().profile == "join");
    }
    // Against the published CDFs themselves (not truncated at max_nodes =
    // 100, which removes 0.08% of their mass).
    for (name, samples, cdf) in [
        ("nodes", &nodes, &shapes.nodes),
        ("depth", &depth, &shapes.depth),
        ("width", &width, &shapes.width),
    ] {
        let support: Vec<u64> = cdf.points().iter().map(|p| p.0).collect();
        let d = ks(samples, |x| cdf.prob_le(x), &support);
        assert!(d <= KS_TOLERANCE, "{name}: KS = {d}");
    }
    assert!(nodes.iter().all(|&n| n <= 100));
    // Depth-1 DAGs (12.5%) and full last levels need the synthetic join.
    let share = joins as f64 / SAMPLES as f64;
    assert!((0.10..0.25).contains(&share), "join share {share}");
}

/// Empirical CDF at each percentile point of a profile.
fn check_percentiles(what: &str, samples: &[f64], probs: &[f64], values: &[f64]) {
    let n = samples.len() as f64;
    for (&q, &v) in probs.iter().zip(values) {
        if q == 0.0 || q == 1.0 {
            continue;
        }
        let emp = samples.iter().filter(|&&s| s <= v).count() as f64 / n;
        assert!(
            (emp - q).abs() <= PERCENTILE_TOLERANCE,
            "{what}: F̂({v}) = {emp}, expected {q}"
        );
    }
    let (lo, hi) = (values[0], values[values.len() - 1]);
    assert!(samples.iter().all(|&s| (lo..=hi).contains(&s)), "{what}");
}

#[test]
fn durations_and_memory_reproduce_their_percentiles() {
    let all = profiles();
    // A function whose seven duration percentiles all differ, so each
    // percentile point is a continuity point of its CDF.
    let p = all
        .iter()
        .find(|p| p.duration.values().windows(2).all(|w| w[0] < w[1]))
        .expect("the sample has such a function")
        .clone();
    // Through the whole generator: one profile, one node per DAG, no clipping.
    let config = SynthConfig {
        seed: 99,
        count: SAMPLES,
        shape: Shape::Chain(1),
        max_duration_ms: 3_600_000.0,
        ..SynthConfig::default()
    };
    let one = [p.clone()];
    let dags = stratus_synth::synthesize(
        &config,
        Inputs {
            profiles: &one,
            azure: None,
        },
    )
    .unwrap();
    let durations: Vec<f64> = dags.iter().map(|d| d.nodes[0].duration_ms).collect();
    assert!(dags.iter().all(|d| d.nodes[0].profile == p.function));
    check_percentiles(
        "duration",
        &durations,
        &stratus_synth::trace::DurationPercentiles::PROBS,
        &p.duration.values(),
    );

    // Memory: an app with distinct percentiles, sampled directly.
    let m = all
        .iter()
        .filter_map(|p| p.memory_mb)
        .find(|m| m.values().windows(2).all(|w| w[0] < w[1]))
        .expect("the sample has such an app");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mem: Vec<f64> = (0..SAMPLES)
        .map(|_| m.quantile(rand::Rng::random(&mut rng)))
        .collect();
    check_percentiles(
        "memory",
        &mem,
        &stratus_synth::trace::MemoryPercentiles::PROBS,
        &m.values(),
    );
    // Without memory data: the default.
    let bare = stratus_synth::FunctionProfile {
        memory_mb: None,
        ..p
    };
    assert_eq!(bare.sample_memory_mb(&mut rng), DEFAULT_MEMORY_MB);
}

#[test]
fn default_payload_is_small_with_a_heavy_tail() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let dist = PayloadDist::Production;
    let samples: Vec<u64> = (0..SAMPLES).map(|_| dist.sample(&mut rng)).collect();
    let n = samples.len() as f64;
    let share = |limit: u64| samples.iter().filter(|&&s| s <= limit).count() as f64 / n;
    assert!((share(1024) - 0.5).abs() <= PERCENTILE_TOLERANCE);
    assert!((share(256 * 1024) - 0.99).abs() <= 0.003);
    assert!((share(16) - 0.0405).abs() <= PERCENTILE_TOLERANCE);
    assert!(samples.iter().all(|&s| (16..=8 << 20).contains(&s)));
    assert!(samples.iter().any(|&s| s > 1 << 20), "a tail into MiBs");
}

#[test]
fn profiles_are_chosen_uniformly() {
    let all = profiles();
    let config = SynthConfig {
        seed: 3,
        count: 2_000,
        shape: Shape::Chain(10),
        ..SynthConfig::default()
    };
    let dags = stratus_synth::synthesize(
        &config,
        Inputs {
            profiles: &all,
            azure: None,
        },
    )
    .unwrap();
    let mut counts = std::collections::HashMap::new();
    for n in dags.iter().flat_map(|d| &d.nodes) {
        *counts.entry(n.profile.as_str()).or_insert(0u32) += 1;
    }
    // 20,000 draws over 100 functions: 200 each; all within ±30%.
    assert_eq!(counts.len(), 100);
    assert!(
        counts.values().all(|&c| (140..=260).contains(&c)),
        "{counts:?}"
    );
}
