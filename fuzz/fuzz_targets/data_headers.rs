//! The by-reference headers of the node data store over arbitrary bytes:
//! the reply's output file name (from an untrusted function) and the
//! request's input paths and framing. Never panic; an accepted output name
//! is one plain path component; accepted input paths are absolute and
//! have no `.`/`..` components.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stratus_nodestore::wire::{parse_in_paths, parse_out_name, Framing};

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = parse_out_name(data) {
        assert!(!name.contains('/') && !name.starts_with('.') && !name.is_empty());
        assert_eq!(std::path::Path::new(name).components().count(), 1);
    }
    let mut parts = data.split(|b| *b == b'\n');
    let framing = parts.next().map(Framing::parse);
    let framing = match framing {
        Some(Ok(f)) => f,
        _ => Framing::Json,
    };
    if let Ok(paths) = parse_in_paths(parts, framing) {
        for p in paths {
            assert!(p.is_absolute());
            assert!(p
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)));
        }
    }
});
