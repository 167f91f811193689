//! `cargo +nightly fuzz run predicate` (from the repository root).
//! Step conditions (`when:`) come from users' YAML: the parser must never
//! panic, loop or recurse without bound, whatever the text; a condition it
//! accepts must print as text that parses back to the same condition, and
//! evaluate without panicking on any JSON.
//!
//! Input: the condition, then optionally a NUL byte and a JSON document used
//! as the value of `$input` and of every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_spec::predicate::{parse, Root, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let (cond, json) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(cond) else {
        return;
    };
    let Ok(expr) = parse(text) else {
        return;
    };
    let printed = expr.to_string();
    if printed.len() > MAX_LEN {
        return; // escapes (a control character prints as \u0001) can lengthen it
    }
    let again = parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
    assert_eq!(again.to_string(), printed, "printing is not stable");
    let value: Option<serde_json::Value> = serde_json::from_slice(json).ok();
    let lookup = |r: &Root| match r {
        Root::Input | Root::Step(_) => value.clone(),
    };
    assert_eq!(expr.eval(&lookup), again.eval(&lookup), "{printed:?}");
});
