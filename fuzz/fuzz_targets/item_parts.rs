//! The wire of kept workflow items (`stratus_nodestore::remote`) over
//! arbitrary bytes: the parts header a control plane sends a worker's
//! agent, the steps a part runs on its worker, the instances a split's map runs
//! on as it arrives, and the item list
//! an agent answers a split with, and the inline byte count. Never
//! panics; what is accepted formats back to text that parses to the same, within
//! the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stratus_nodestore::remote::{
    format, format_items, format_map_then, format_then, parse, parse_id, parse_inline_below,
    parse_items, parse_map_then, parse_then, MAX_INLINE_BELOW, MAX_MAP_SLOTS, MAX_PARTS, MAX_THEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = parse(data) {
        assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
        assert_eq!(parse(format(&parts).as_bytes()).unwrap(), parts);
    }
    if let Ok(steps) = parse_then(data) {
        assert!(!steps.is_empty() && steps.len() <= MAX_THEN);
        for (k, st) in steps.iter().enumerate() {
            assert!(!st.sources.is_empty() && st.sources.iter().all(|&s| s <= k));
            assert!(st.json || st.sources.len() == 1);
        }
        assert_eq!(parse_then(format_then(&steps).as_bytes()).unwrap(), steps);
    }
    if let Ok(ids) = parse_map_then(data) {
        assert!(!ids.is_empty() && ids.len() <= MAX_MAP_SLOTS);
        assert_eq!(parse_map_then(format_map_then(&ids).as_bytes()).unwrap(), ids);
    }
    if let Ok(n) = parse_inline_below(data) {
        assert!(n <= MAX_INLINE_BELOW);
        assert_eq!(parse_inline_below(n.to_string().as_bytes()).unwrap(), n);
    }
    if let Ok(items) = parse_items(data, 1000) {
        assert!(items.len() <= 1000);
        assert_eq!(parse_items(format_items(&items).as_bytes(), 1000).unwrap(), items);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = parse_id(s) {
            assert_eq!(id.to_string(), s);
        }
    }
});
