//! `cargo +nightly fuzz run pipeline_spec` (from the repository root).
//! The pipeline parser must never panic, loop or blow up, and every error
//! must carry a position inside the file. Table options it accepts are
//! usable (a valid delimiter, limits of at least 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_dyndata::csv::Encoding;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match stratus_dyndata::spec::parse("fuzz.yaml", text) {
            Ok(p) => {
                assert!(p.selection.budget > 0.0 && p.selection.budget <= 1.0);
                let opts = p.data.csv_options();
                let t = &opts.table;
                assert!(t.delimiter.is_ascii() && !b"\"\r\n".contains(&t.delimiter));
                assert!(t.max_values >= 1);
                for c in &t.columns {
                    match &c.encoding {
                        Some(Encoding::Hash { buckets }) => assert!(*buckets >= 1),
                        Some(Encoding::OneHot { values, max_values }) => {
                            assert!(*max_values >= 1);
                            assert!(values.as_ref().is_none_or(|v| !v.is_empty()));
                        }
                        None => {}
                    }
                }
            }
            Err(errors) => {
                assert!(!errors.0.is_empty());
                // YAML breaks lines at a lone CR too.
                let lines = text.split(['\n', '\r']).count() as u32 + 2;
                for e in &errors.0 {
                    assert!(e.pos.line <= lines, "{e}");
                }
            }
        }
    }
});
