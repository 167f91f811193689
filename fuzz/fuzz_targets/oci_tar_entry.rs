//! Layer tar entries on arbitrary bytes: name normalisation, link checks,
//! size limits, PAX records; then the eStargz writer over what was
//! accepted. Must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use stratus_image::estargz::{WriteOptions, Writer};
use stratus_image::tarfmt::{self, TarLimits};

fuzz_target!(|data: &[u8]| {
    let limits = TarLimits {
        max_entry_size: 1 << 20,
        max_entries: 1000,
    };
    let mut w = Writer::new(
        Vec::new(),
        WriteOptions {
            chunk_size: 4096,
            level: flate2::Compression::fast(),
        },
    );
    let _ = tarfmt::for_each_entry(data, limits, |m, r| {
        assert!(!m.name.starts_with('/') && !m.name.split('/').any(|c| c == ".."));
        let mut payload = Vec::new();
        let _ = r.take(m.size).read_to_end(&mut payload);
        let mut m = m.clone();
        m.size = payload.len() as u64;
        let _ = w.append(&m, &mut &payload[..]);
        Ok(())
    });
    let _ = w.finish();
});
