use super::entry::ENTRY_VERSION;
use super::*;

#[test]
fn keys() {
    for ok in ["a", "spin-r1-00000000deadbeef", "x.y_z-1"] {
        assert_eq!(validate_key(ok), Ok(()), "{ok}");
    }
    let long = "k".repeat(MAX_KEY_LEN + 1);
    for (bad, needle) in [
        ("", "empty"),
        (".tmp-x", "starts with '.'"),
        ("..", "starts with '.'"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("é", "'é'"),
        ("a\0", "'\\0'"),
        (long.as_str(), "longer"),
    ] {
        let e = validate_key(bad).unwrap_err();
        assert!(e.contains(needle), "{bad:?}: {e}");
    }
}

#[test]
fn policies_parse() {
    assert_eq!(
        "lru".parse::<EvictionPolicy>().unwrap(),
        EvictionPolicy::Lru
    );
    assert_eq!(
        " size ".parse::<EvictionPolicy>().unwrap(),
        EvictionPolicy::LargestFirst
    );
    let e = "mru".parse::<EvictionPolicy>().unwrap_err();
    assert!(e.to_string().contains("\"mru\""), "{e}");
    for p in [EvictionPolicy::Lru, EvictionPolicy::LargestFirst] {
        assert_eq!(p.to_string().parse::<EvictionPolicy>().unwrap(), p);
    }
}

fn meta() -> EntryMeta {
    EntryMeta {
        version: ENTRY_VERSION,
        key: "f-r1-0000000000000001".into(),
        memory_bytes: 1 << 20,
        vmstate_bytes: 52_000,
        created_unix_ms: 1,
        boot_id: "b".into(),
    }
}

#[test]
fn entry_meta_round_trips() {
    let m = meta();
    assert_eq!(EntryMeta::parse(&m.to_json()), Ok(m));
}

#[test]
fn entry_meta_refuses_nasty_input() {
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_ENTRY_JSON as usize));
    let mut v: serde_json::Value = serde_json::from_slice(&meta().to_json()).unwrap();
    let with = |k: &str, val: serde_json::Value| {
        let mut v = v.clone();
        v[k] = val;
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not a valid entry"),
        (b"\xff\xfe\x00".to_vec(), "not a valid entry"),
        (b"[]".to_vec(), "not a valid entry"),
        (b"{}".to_vec(), "missing field"),
        (big.into_bytes(), "limit"),
        (with("version", 2.into()), "version 2"),
        (with("key", "../etc".into()), "key"),
        (with("key", "".into()), "empty"),
        (with("memory_bytes", (-1).into()), "not a valid entry"),
        (with("memory_bytes", 1.5.into()), "not a valid entry"),
        (with("boot_id", "b".repeat(65).into()), "boot_id"),
        (with("extra", 1.into()), "unknown field"),
        (
            [&meta().to_json()[..], b"trailing"].concat(),
            "not a valid entry",
        ),
    ];
    v["key"] = serde_json::Value::Null;
    let mut cases = cases;
    cases.push((serde_json::to_vec(&v).unwrap(), "not a valid entry"));
    for (input, needle) in cases {
        let e = EntryMeta::parse(&input).unwrap_err();
        assert!(
            e.contains(needle),
            "{:?}: {e}",
            String::from_utf8_lossy(&input[..input.len().min(80)])
        );
    }
}
