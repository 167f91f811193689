//! The agent's start-request parser over arbitrary bytes: never panics; an
//! accepted request passes its own checks and survives a JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stratus_agent::request::{parse_start, MAX_ID_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_start(data) {
        assert!(req.validate().is_ok());
        assert!(!req.id.is_empty() && req.id.len() <= MAX_ID_LEN);
        assert!(req.command.iter().all(|c| !c.contains('\0')));
        let again = serde_json::to_vec(&req).unwrap();
        assert_eq!(parse_start(&again).unwrap(), req);
    }
});
