//! `cargo +nightly fuzz run json_str` (from the repository root).
//! The text functions' JSON string reader and writer (`split`, `wc-map`):
//! a string the fast reader accepts is the one `serde_json` reads, and
//! any string written is what `serde_json` writes and reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_functions::handlers::json_str::{read_json_str, write_json_str};

fuzz_target!(|data: &[u8]| {
    if let Some(s) = read_json_str(data) {
        assert_eq!(Some(&s), serde_json::from_slice::<String>(data).ok().as_ref());
    }
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    write_json_str(&mut out, &text);
    assert_eq!(out, serde_json::to_vec(&*text).unwrap());
    if let Some(back) = read_json_str(&out) {
        assert_eq!(back, *text);
    }
});
