//! `cargo +nightly fuzz run jsonl_parse` (from the repository root).
//! The live-ingest JSON lines parser must never panic; every sample it
//! returns is valid for the store, and every error names a line of the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let dim = (data.first().copied().unwrap_or(0) % 4) as usize;
        let dim = (dim > 0).then_some(dim);
        match stratus_dyndata::jsonl::parse("fuzz", text, dim, 7) {
            Ok(samples) => {
                for (i, s) in samples.iter().enumerate() {
                    assert_eq!(s.key, 7 + i as u64);
                    assert!(s.label >= 0);
                    assert!(!s.features.is_empty());
                    assert_eq!(s.features.len(), samples[0].features.len());
                    assert!(s.features.iter().all(|f| f.is_finite()));
                }
            }
            Err(e) => {
                assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{e}");
                assert!(e.col >= 1, "{e}");
            }
        }
    }
});
