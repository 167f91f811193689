//! `cargo +nightly fuzz run map_split` (from the repository root).
//! A function's output is untrusted: splitting it for `map` must never panic,
//! and each element must be an exact slice of the output that re-frames to an
//! equivalent JSON array.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratus_dag::{split_json_array, Payload};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Ok(items) = split_json_array(&buf) {
        let framed = Payload::Framed { items: items.clone(), format: Default::default() }.to_bytes();
        let again = split_json_array(&framed).expect("re-framed items parse");
        assert_eq!(again, items);
    }
});
