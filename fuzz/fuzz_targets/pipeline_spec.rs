//! `cargo +nightly fuzz run pipeline_spec` (from the repository root).
//! The pipeline parser must never panic, loop or blow up, and every error
//! must carry a position inside the file. Table options it accepts are
//! usable (a valid delimiter, limits of at least 1); what it accepts of
//! stream learner parameters, drift detectors and any_of/all_of triggers
//! must build.
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
                // Stream learners and drift detectors / composed triggers:
                // what the parser accepted must build.
                if let Some(l) = &p.model.learner {
                    l.check().expect("the parser checked the learner's parameters");
                }
                let _ = stratus_dyndata::trigger::Trigger::new(&p.trigger);
            }
            Err(errors) => {
                assert!(!errors.0.is_empty());
                // YAML breaks lines at \n, \r\n and a lone \r (str::lines
                // does not split at a lone \r).
                let breaks = text.matches('\n').count() + text.matches('\r').count()
                    - text.matches("\r\n").count();
                let lines = breaks as u32 + 2;
                for e in &errors.0 {
                    assert!(e.pos.line <= lines, "{e}");
                }
            }
        }
    }
});
