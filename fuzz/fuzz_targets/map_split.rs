//! `cargo +nightly fuzz run map_split` (from the repository root).
//! A function's output is untrusted: splitting it for `map` must never panic,
//! and each element must be an exact slice of the output that re-frames to an
//! equivalent JSON array. Split as it arrives (the first byte picks the
//! pieces' length), it must give the same elements, or fail where the whole
//! fails.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratus_dag::{split_json_array, ArrayElement, ArraySplitter, Payload};

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let buf = Bytes::copy_from_slice(data);
    let whole = split_json_array(&buf);
    if let Ok(items) = &whole {
        let framed = Payload::Framed { items: items.clone(), format: Default::default() }.to_bytes();
        let again = split_json_array(&framed).expect("re-framed items parse");
        assert_eq!(&again, items);
    }
    let step = usize::from(step) + 1;
    let mut s = ArraySplitter::new(usize::MAX);
    let mut pieces = Ok(Vec::new());
    for at in (0..buf.len()).step_by(step) {
        match s.feed(&buf.slice(at..(at + step).min(buf.len()))) {
            Ok(e) => pieces.as_mut().expect("no error yet").extend(e),
            Err(e) => {
                pieces = Err(e);
                break;
            }
        }
    }
    if let Ok(p) = &mut pieces {
        match s.finish() {
            Ok(e) => p.extend(e),
            Err(e) => pieces = Err(e),
        }
    }
    let pieces: Result<Vec<Bytes>, _> =
        pieces.and_then(|p| p.into_iter().map(ArrayElement::into_bytes).collect());
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {a:?}, in pieces of {step}: {b:?}"),
    }
});
