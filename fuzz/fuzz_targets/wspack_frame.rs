//! `cargo +nightly fuzz run wspack_frame` (from the repository root).
//! A working-set pack manifest and its frames come from the store: the
//! check against a working set and the frame decoder must never panic, and
//! what they accept must be consistent (frames cover the working set's
//! pages exactly; a decoded frame has exactly its raw length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_rcss_vm::wspack;
use stratus_snapstore::Manifest;

fuzz_target!(|data: &[u8]| {
    // [working-set manifest JSON] 0x00 [pack manifest JSON] 0x00 [frame bytes]
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(ws), Some(pack), frame) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(ws), Ok(pack)) = (Manifest::from_json(ws), Manifest::from_json(pack)) else {
        return;
    };
    if let Ok(per_frame) = wspack::check(&pack, &ws) {
        assert_eq!(per_frame.len(), pack.chunks.len());
        let pages = ws.chunks.iter().filter(|c| !c.is_zero()).count();
        assert_eq!(per_frame.last().map_or(0, |r| r.end), pages);
        for k in 0..pack.chunks.len() {
            if let Ok(raw) = wspack::decode(&pack, k, frame.unwrap_or_default()) {
                assert_eq!(raw.len() as u64, u64::from(pack.chunks[k].len));
                let nz: Vec<_> = ws.chunks.iter().copied().filter(|c| !c.is_zero()).collect();
                let runs = wspack::runs(&nz[per_frame[k].clone()], &raw.clone().into());
                let total: usize = runs.iter().map(|(_, b)| b.len()).sum();
                assert_eq!(total, raw.len());
            }
        }
    }
});
