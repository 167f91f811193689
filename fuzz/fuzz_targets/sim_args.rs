//! `cargo +nightly fuzz run sim_args` (from the repository root).
//! `stratus sim`'s argument parsers (keep-alive policy, node memory,
//! cold-start cost) must never panic, and a policy that parses prints as a
//! name that parses back to the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_scaling::PolicySpec;
use stratus_sim::config::{parse_cold_start, parse_memory};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_memory(s);
    let _ = parse_cold_start(s);
    if let Ok(p) = s.parse::<PolicySpec>() {
        let again: PolicySpec = p.to_string().parse().expect("a printed policy parses");
        assert_eq!(again, p);
    }
});
