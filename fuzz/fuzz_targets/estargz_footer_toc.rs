//! eStargz footer, TOC member, TOC JSON validation and chunk decoding on
//! arbitrary bytes: must return errors, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_image::estargz::{self, TocLimits};

fuzz_target!(|data: &[u8]| {
    let limits = TocLimits {
        max_toc_member: 1 << 20,
        max_toc_json: 4 << 20,
        max_entries: 10_000,
        max_file_size: 1 << 30,
        max_chunk_size: 1 << 20,
    };
    if data.len() >= 51 {
        let _ = estargz::parse_footer(&data[data.len() - 51..]);
    }
    // The bytes as TOC JSON, with the TOC at their end.
    let _ = estargz::parse_toc(data, data.len() as u64, &limits);
    // The bytes as a whole blob.
    let read = |off: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let end = off.checked_add(len).filter(|&e| e <= data.len() as u64);
        match end {
            Some(e) => Ok(data[off as usize..e as usize].to_vec()),
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    };
    if let Ok((toc, _)) = estargz::read_toc(data.len() as u64, &limits, read) {
        for spans in toc.chunks.values() {
            for s in spans {
                if let Some(member) = data.get(s.blob_offset as usize..s.blob_end as usize) {
                    let _ = estargz::decode_chunk(s, member);
                }
            }
        }
    }
});
