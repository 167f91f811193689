//! The real files in data/ parse, with the values its README states.

use stratus_synth::trace;

use crate::{azure_shapes, profiles, read};

#[test]
fn data_directory_is_the_repositorys_own() {
    let dir = std::fs::canonicalize(crate::DATA).expect("data/ exists");
    let repo = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
    assert_eq!(dir, repo.join("data"));
    assert!(dir.join("README.md").is_file());
}

#[test]
fn azure_functions_sample_parses_and_joins() {
    let dir = "azure-functions-2019-sample";
    let durations =
        trace::parse_durations("durations.csv", &read(&format!("{dir}/durations.csv"))).unwrap();
    assert_eq!(durations.len(), 100);
    let first = &durations[0];
    assert_eq!(first.count, 14);
    assert_eq!(first.duration.average, 81067.0);
    assert_eq!(first.duration.p100, 81067.0);
    let memory = trace::parse_memory("memory.csv", &read(&format!("{dir}/memory.csv"))).unwrap();
    assert_eq!(memory.len(), 100);
    assert_eq!(memory[0].sample_count, 206908);
    assert_eq!(memory[0].memory_mb.p100, 2444.0);
    let invocations =
        trace::parse_invocations("invocations.csv", &read(&format!("{dir}/invocations.csv")))
            .unwrap();
    assert_eq!(invocations.len(), 100);
    assert!(invocations.iter().all(|r| r.per_minute.len() == 1440));
    assert!(invocations.iter().all(|r| r.trigger.is_none()));
    let total: u64 = invocations
        .iter()
        .flat_map(|r| r.per_minute.iter().map(|&n| u64::from(n)))
        .sum();
    assert!(total > 0);

    // Every sampled function has its app's memory and its invocations.
    let strict = trace::Selection {
        min_count: 0,
        require_memory: true,
        require_invocations: true,
    };
    let joined = trace::join(durations, &memory, invocations, &strict).unwrap();
    assert_eq!(joined.len(), 100);
    assert_eq!(joined, profiles());
}

#[test]
fn azure_dag_shapes_parse_with_the_published_values() {
    let s = azure_shapes();
    // README: 78.7% have width 1, 99% <= 17, maximum 35,385.
    assert_eq!(s.width.name(), "width");
    assert!((s.width.prob_le(1) - 0.787).abs() < 5e-4);
    assert!(s.width.prob_le(17) >= 0.99 && s.width.prob_le(16) < 0.99);
    assert_eq!(s.width.max_value(), 35_385);
    // 12.5% depth 1, 68% <= 2, 99% <= 7, maximum 135.
    assert!((s.depth.prob_le(1) - 0.125).abs() < 5e-4);
    assert!((s.depth.prob_le(2) - 0.68).abs() < 5e-3);
    assert!(s.depth.prob_le(7) >= 0.99 && s.depth.prob_le(6) < 0.99);
    assert_eq!(s.depth.max_value(), 135);
    // 56% have 2 nodes, 95% <= 7, 99% <= 18.
    assert!((s.nodes.prob_le(2) - 0.56).abs() < 5e-3);
    assert!(s.nodes.prob_le(7) >= 0.95 && s.nodes.prob_le(6) < 0.95);
    assert!(s.nodes.prob_le(18) >= 0.99 && s.nodes.prob_le(17) < 0.99);
    assert_eq!(s.nodes.min_value(), 2);
    // The repeated first value is one value, as the inverse transform sees it.
    assert_eq!(s.depth.quantile(0.0), 1);
    assert_eq!(s.depth.quantile(0.2), 2);
}
