//! The parts header of a body made of kept workflow items
//! (`stratus_nodestore::remote`, sent by a control plane to a worker's
//! agent) over arbitrary bytes: never panics; what it accepts formats back
//! to a header that parses to the same parts, with at most `MAX_PARTS`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stratus_nodestore::remote::{format, parse, parse_id, MAX_PARTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = parse(data) {
        assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
        assert_eq!(parse(format(&parts).as_bytes()).unwrap(), parts);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = parse_id(s) {
            assert_eq!(id.to_string(), s);
        }
    }
});
