//! `cargo +nightly fuzz run trace_parse` (from the repository root).
//! Every trace parser must return a value or an error, never panic, loop or
//! blow up, whatever the text; what parses must be usable (quantiles, joins,
//! the Azure shape model).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_synth::shape::{AzureModel, AzureShapes};
use stratus_synth::trace::{self, Selection};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let durations = trace::parse_durations("fuzz.csv", text);
    let memory = trace::parse_memory("fuzz.csv", text);
    let invocations = trace::parse_invocations("fuzz.csv", text);
    if let Ok(rows) = &durations {
        for r in rows {
            for u in [0.0, 0.005, 0.5, 0.999, 1.0] {
                let v = r.duration.quantile(u);
                assert!(v >= 0.0 && v.is_finite());
            }
        }
    }
    if let Ok(rows) = &memory {
        for r in rows {
            assert!(r.memory_mb.quantile(0.5).is_finite());
        }
    }
    if let Ok(d) = durations {
        let m = memory.unwrap_or_default();
        let i = invocations.unwrap_or_default();
        if let Ok(profiles) = trace::join(d, &m, i, &Selection::default()) {
            assert!(!profiles.is_empty());
        }
    }
    if let Ok(cdf) = trace::parse_cdf("fuzz.csv", text) {
        let q = cdf.quantile(0.5);
        assert!(cdf.points().iter().any(|p| p.0 == q));
        let _ = cdf.pmf();
        if cdf.points().len() <= 64 {
            let shapes = AzureShapes {
                nodes: cdf.clone(),
                depth: cdf.clone(),
                width: cdf,
            };
            if let Ok(model) = AzureModel::fit(&shapes, 64) {
                use rand::SeedableRng;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(data.len() as u64);
                for _ in 0..4 {
                    assert!(model.sample(&mut rng).is_feasible());
                }
            }
        }
    }
});
