//! `cargo +nightly fuzz run sim_args` (from the repository root).
//! `stratus sim`'s argument parsers (keep-alive policy, node memory,
//! cold-start cost; workflow mode: workflows, workflow-placement policy,
//! payload) must never panic, and a policy that parses prints as a name
//! that parses back to the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_scaling::PolicySpec;
use stratus_sim::config::{parse_cold_start, parse_memory};
use stratus_sim::workflows::{parse_kinds, parse_payload, parse_policies};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_memory(s);
    let _ = parse_cold_start(s);
    let _ = parse_kinds(s);
    let _ = parse_payload(s);
    if let Ok(ps) = parse_policies(s, 1) {
        for p in ps {
            let again = parse_policies(&p.to_string(), 1).expect("a printed policy parses");
            assert_eq!(again, vec![p]);
        }
    }
    if let Ok(p) = s.parse::<PolicySpec>() {
        let again: PolicySpec = p.to_string().parse().expect("a printed policy parses");
        assert_eq!(again, p);
    }
});
