//! Structural invariants of generated DAGs, for random shapes and seeds.

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stratus_synth::{build_layered, synthesize, Inputs, ShapeTarget, SynthConfig};

use crate::{azure_shapes, render::check_with_spec_parser, trace_shape};

/// A consistent (nodes, depth, width): n in [w + d - 1, w·d].
fn target() -> impl Strategy<Value = ShapeTarget> {
    (1u64..=12, 1u64..=12)
        .prop_flat_map(|(d, w)| (Just(d), Just(w), (w + d - 1)..=(w * d)))
        .prop_map(|(depth, width, nodes)| ShapeTarget {
            nodes,
            depth,
            width,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn layered_dags_have_their_target_shape(target in target(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = build_layered(target, &mut rng).unwrap();
        prop_assert!(t.is_topological(), "acyclic: inputs come first");
        prop_assert_eq!(t.sinks().len(), 1, "single sink");
        let levels = t.levels();
        let joins: Vec<usize> = (0..t.nodes.len()).filter(|&i| t.nodes[i].synthetic_join).collect();
        let body = t.nodes.len() - joins.len();
        prop_assert_eq!(body as u64, target.nodes);
        let mut widths = vec![0u64; target.depth as usize];
        for i in 0..body {
            widths[levels[i]] += 1;
            // Edges join consecutive levels only; level > 0 has a parent.
            prop_assert_eq!(t.nodes[i].inputs.is_empty(), levels[i] == 0);
            for &j in &t.nodes[i].inputs {
                prop_assert_eq!(levels[j] + 1, levels[i]);
            }
        }
        prop_assert_eq!(widths.len() as u64, target.depth);
        prop_assert_eq!(widths.iter().copied().max().unwrap(), target.width);
        // Every non-final node has a child.
        let mut has_child = vec![false; t.nodes.len()];
        for n in &t.nodes {
            for &j in &n.inputs {
                has_child[j] = true;
            }
        }
        for (node, child) in t.nodes.iter().zip(&has_child).take(t.nodes.len() - 1) {
            prop_assert!(*child, "node {} has no child", node.name);
        }
        // Fan-in never exceeds the width of the level above.
        for i in 0..body {
            if levels[i] > 0 {
                prop_assert!(t.nodes[i].inputs.len() as u64 <= widths[levels[i] - 1]);
            }
        }
        // A join exactly when the last level is wide; it reads all of it.
        let last = *widths.last().unwrap();
        prop_assert_eq!(joins.len(), usize::from(last > 1));
        if let Some(&j) = joins.first() {
            prop_assert_eq!(j, t.nodes.len() - 1);
            prop_assert_eq!(t.nodes[j].inputs.len() as u64, last);
        }
        // The last level is a single node whenever that is possible.
        let d = target.depth;
        if d >= 2 && target.nodes - 1 <= (d - 1) * target.width {
            prop_assert_eq!(last, 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn azure_dags_are_valid_workflows(seed in any::<u64>(), index in 0u32..200) {
        let shapes = azure_shapes();
        let config = SynthConfig {
            seed,
            count: index + 1,
            cost: stratus_synth::NodeCost::Fixed { duration_ms: 1.0, memory_mb: 1 },
            ..SynthConfig::default()
        };
        let synth = stratus_synth::Synthesizer::new(
            config,
            Inputs { profiles: &[], azure: Some(&shapes) },
        ).unwrap();
        let dag = synth.dag(index);
        let (n, d, w) = trace_shape(&dag);
        let shape = ShapeTarget { nodes: n, depth: d, width: w };
        prop_assert!(shape.is_feasible(), "{:?}", shape);
        prop_assert!(n <= 100);
        check_with_spec_parser(&dag);
        // Same as generating the whole batch.
        let again = synthesize(synth.config(), Inputs { profiles: &[], azure: Some(&shapes) })
            .unwrap();
        prop_assert_eq!(&again[index as usize], &dag);
    }
}

/// CSV-like text: header names, numbers, separators, quotes, CR, BOM.
fn csv_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("HashOwner".to_string()),
        Just("HashApp".to_string()),
        Just("HashFunction".to_string()),
        Just("Count".to_string()),
        Just("Average".to_string()),
        Just("SampleCount".to_string()),
        Just("AverageAllocatedMb".to_string()),
        (0u32..=100).prop_map(|p| format!("percentile_Average_{p}")),
        (0u32..=100).prop_map(|p| format!("AverageAllocatedMb_pct{p}")),
        (0u32..=5).prop_map(|m| format!("minute_{m}")),
        Just("cdf".to_string()),
        Just("width".to_string()),
        Just("Trigger".to_string()),
        (0u32..5).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        prop_oneof![Just(0.0f64), Just(0.5), Just(1.0), Just(1.0000001)]
            .prop_map(|x| x.to_string()),
        Just(",".to_string()),
        Just(",".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\"".to_string()),
        Just("\u{feff}".to_string()),
        Just("-".to_string()),
        Just("é".to_string()),
        Just(String::new()),
    ];
    proptest::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A stand-in for the cargo-fuzz target where cargo-fuzz is not
    /// installed: no parser panics, and what parses is usable.
    #[test]
    fn parsers_never_panic(text in csv_like()) {
        use stratus_synth::trace;
        if let Ok(rows) = trace::parse_durations("f.csv", &text) {
            for r in &rows {
                let v = r.duration.quantile(0.5);
                prop_assert!(v.is_finite() && v >= 0.0);
            }
        }
        if let Ok(rows) = trace::parse_memory("f.csv", &text) {
            prop_assert!(rows.iter().all(|r| r.memory_mb.quantile(0.3).is_finite()));
        }
        if let Ok(rows) = trace::parse_invocations("f.csv", &text) {
            prop_assert!(rows.iter().all(|r| !r.per_minute.is_empty()));
        }
        if let Ok(cdf) = trace::parse_cdf("f.csv", &text) {
            let shapes = stratus_synth::AzureShapes {
                nodes: cdf.clone(),
                depth: cdf.clone(),
                width: cdf,
            };
            if let Ok(model) = stratus_synth::shape::AzureModel::fit(&shapes, 50) {
                let mut rng = ChaCha8Rng::seed_from_u64(1);
                prop_assert!(model.sample(&mut rng).is_feasible());
            }
        }
    }
}
