//! `cargo +nightly fuzz run spec_parse -- -dict=fuzz/dicts/spec_parse.dict`
//! (from the repository root; the dictionary holds the format's keys, the
//! failure-handling ones `retry`/`catch`/`timeoutSeconds` included).
//! The parser must never panic, loop or blow up, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bundle) = stratus_spec::parse("fuzz.yaml", text) {
            let _ = stratus_spec::validate_refs(&bundle, &|name| name.len() % 2 == 0);
        }
    }
});
