//! `cargo +nightly fuzz run segment_decode` (from the repository root).
//! Segment bytes come from disk or an object store: decoding must never
//! panic or allocate by a length it has not checked, and whatever decodes
//! must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_dyndata::segment;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = segment::decode(data) {
        assert!(r.total_len <= data.len());
        let mut again = Vec::new();
        let n = segment::encode(&r.to_sample(), &mut again).expect("decoded sample re-encodes");
        assert_eq!(&again[..], &data[..n]);
    }
    let mut seg = segment::header().to_vec();
    seg.extend_from_slice(data);
    let scan = segment::scan(&seg).expect("valid header");
    assert!(scan.valid_len <= seg.len());
    let mut at = segment::HEADER_LEN;
    for &(off, len) in &scan.records {
        assert_eq!(off, at);
        at += len;
    }
    assert_eq!(at, scan.valid_len);
});
