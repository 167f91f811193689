//! `cargo +nightly fuzz run snapcache_entry` (from the repository root).
//! A node snapshot cache's `entry.json` is read back from disk on open: the
//! parser must never panic, must refuse oversized input before decoding, and
//! what it accepts must have a valid key and survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_rcss_vm::snapcache::{validate_key, EntryMeta, MAX_ENTRY_JSON};

fuzz_target!(|data: &[u8]| {
    match EntryMeta::parse(data) {
        Ok(m) => {
            assert!(data.len() as u64 <= MAX_ENTRY_JSON);
            assert_eq!(validate_key(&m.key), Ok(()));
            assert!(!m.key.starts_with('.') && !m.key.contains('/'));
            assert_eq!(EntryMeta::parse(&m.to_json()).as_ref(), Ok(&m));
        }
        Err(e) => {
            assert!(!e.is_empty());
            if data.len() as u64 > MAX_ENTRY_JSON {
                assert!(e.contains("limit"), "{e}");
            }
        }
    }
});
