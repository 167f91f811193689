//! `cargo +nightly fuzz run manifest_parse` (from the repository root).
//! Manifests and batch responses come from remote stores and servers:
//! parsing must never panic, whatever parses must be internally consistent
//! (contiguous chunks cover exactly the blob) and must round-trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratus_snapstore::{manifest::Manifest, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_json(data) {
        let mut next = 0u64;
        for c in &m.chunks {
            assert!(c.len > 0 && c.end() <= m.size);
            if m.kind.is_contiguous() {
                assert_eq!(c.offset, next);
                next = c.end();
            }
        }
        if m.kind.is_contiguous() {
            assert_eq!(next, m.size);
        }
        let again = Manifest::from_json(&m.to_json()).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
    let body = Bytes::copy_from_slice(data);
    if let Ok(records) = wire::decode(&body) {
        let framed: usize = records
            .iter()
            .map(|r| wire::HEADER_LEN + r.payload.len())
            .sum();
        assert_eq!(framed, data.len());
    }
});
