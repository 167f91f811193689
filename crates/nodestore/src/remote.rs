//! Items kept on the worker that produced them (`stratus up
//! --workflow-data workers`): the headers between the control plane's
//! engine and the workers' agents, and the parser of the one that names a
//! request body's parts. See `docs/agent-api.md`.
//!
//! - A proxied invocation with [`KEEP_HEADER`] (the invocation id): on a
//!   2xx reply the agent keeps the body in its node data store and answers
//!   with an empty body, [`ITEM_HEADER`] (the item's id) and
//!   [`ITEM_BYTES_HEADER`]. With [`INLINE_BELOW_HEADER`] (`n`), a 2xx
//!   reply shorter than `n` bytes is not kept: it comes back as it is,
//!   with no item header, as a relayed reply would.
//! - A proxied invocation with [`PARTS_HEADER`]: the function's body is
//!   made of the parts in order: `b<len>` takes the next `len` bytes of the
//!   request's own body; `i<len>@<host:port>/<id>` is item `id` of `len`
//!   bytes, read from this agent's store or fetched from the agent at
//!   `host:port`.
//! - With [`KEEP_HEADER`] and [`SPLIT_HEADER`] (`json`): a 2xx reply that
//!   is a JSON array is split into its elements, each kept as an item; the
//!   answer has [`ITEMS_HEADER`] (how many), [`ITEM_BYTES_HEADER`] (the
//!   whole reply's size) and a body listing them ([`format_items`]). A
//!   reply that is no JSON array comes back as it is.
//! - With [`KEEP_HEADER`] and [`THEN_HEADER`] (instance ids of the same
//!   agent): a chain run on the worker. The first instance's 2xx reply is
//!   kept and passed on, from memory, as the body of the next instance,
//!   whose reply is kept and passed on, and so on; the chain stops at the
//!   first answer that is not 2xx. The agent answers 200 with
//!   [`CHAIN_HEADER`] and a JSON body, [`ChainReply`]: one [`ChainStep`]
//!   per instance that ran.

use crate::ledger::ItemId;

/// Request: keep the reply under this invocation.
pub const KEEP_HEADER: &str = "stratus-keep";
/// Request (with [`KEEP_HEADER`]): a reply shorter than this many bytes
/// comes back inline instead of being kept ([`parse_inline_below`]).
pub const INLINE_BELOW_HEADER: &str = "stratus-inline-below";
/// The most bytes [`INLINE_BELOW_HEADER`] may name.
pub const MAX_INLINE_BELOW: u64 = 64 << 10;
/// Reply: the kept item's id (32 hex digits).
pub const ITEM_HEADER: &str = "stratus-item";
/// Reply: the kept item's size in bytes.
pub const ITEM_BYTES_HEADER: &str = "stratus-item-bytes";
/// Request: split the kept reply (`json`: a JSON array's elements).
pub const SPLIT_HEADER: &str = "stratus-split";
/// Reply: how many items the split reply became.
pub const ITEMS_HEADER: &str = "stratus-items";
/// Request: the parts of the function's body.
pub const PARTS_HEADER: &str = "stratus-parts";
/// Request: the instances (of the same agent) the kept reply goes on to,
/// in order ([`format_then`]).
pub const THEN_HEADER: &str = "stratus-then";
/// Reply: the body is a [`ChainReply`] of this many steps.
pub const CHAIN_HEADER: &str = "stratus-chain";
/// The most instances a chain passes a reply on to.
pub const MAX_THEN: usize = 32;
/// The longest instance id.
const MAX_INSTANCE_ID: usize = 64;
/// The most bytes of a failed step's answer a chain reply carries.
pub const MAX_CHAIN_ERROR: usize = 4096;
/// The most parts one body may have.
pub const MAX_PARTS: usize = 4096;
/// The longest invocation id kept.
pub const MAX_INVOCATION: usize = 128;
/// The longest `host:port` of an agent.
const MAX_AUTHORITY: usize = 262;

/// One part of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The next `len` bytes of the request's body.
    Body(u64),
    /// An item kept by the agent at `at` (`host:port`).
    Item { len: u64, at: String, id: ItemId },
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Body(n) | Part::Item { len: n, .. } => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("{PARTS_HEADER}: part {index} ({text:?}): {why}")]
    Part {
        index: usize,
        text: String,
        why: &'static str,
    },
    #[error("{PARTS_HEADER}: more than {MAX_PARTS} parts")]
    TooMany,
    #[error("not UTF-8")]
    NotText,
    #[error("kept items: line {index} ({text:?}): {why}")]
    Item {
        index: usize,
        text: String,
        why: &'static str,
    },
    #[error("kept items: more than {0}")]
    TooManyItems(usize),
    #[error("item id {0:?}: give 32 lowercase hex digits")]
    Id(String),
    #[error("invocation id {0:?}: give 1 to {MAX_INVOCATION} of A-Z a-z 0-9 . _ -")]
    Invocation(String),
    #[error("{THEN_HEADER}: instance {index} ({text:?}): give 1 to {MAX_INSTANCE_ID} of A-Z a-z 0-9 . _ -")]
    Then { index: usize, text: String },
    #[error("{THEN_HEADER}: more than {MAX_THEN} instances")]
    TooLong,
    #[error("{INLINE_BELOW_HEADER}: {0:?}: give a byte count of 0 to {MAX_INLINE_BELOW}")]
    InlineBelow(String),
}

/// One instance's run in a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainStep {
    /// The instance's answer (or the agent's, when it did not answer).
    pub status: u16,
    /// The kept reply's item id, on a 2xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The kept reply's size.
    #[serde(default)]
    pub bytes: u64,
    /// When it was sent and answered, µs after the chain's request arrived.
    pub start_us: u64,
    pub end_us: u64,
    /// The answer's first [`MAX_CHAIN_ERROR`] bytes, when not 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An agent's answer to a chain: the first instance's step, then one per
/// instance of [`THEN_HEADER`] that ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainReply {
    pub steps: Vec<ChainStep>,
}

/// `ids` as [`THEN_HEADER`]'s value.
pub fn format_then(ids: &[&str]) -> String {
    ids.join(",")
}

/// Parses [`THEN_HEADER`]'s value: 1 to [`MAX_THEN`] instance ids.
pub fn parse_then(v: &[u8]) -> Result<Vec<String>, RemoteError> {
    let text = std::str::from_utf8(v).map_err(|_| RemoteError::NotText)?;
    let mut out = Vec::new();
    for (index, id) in text.split(',').enumerate() {
        if index >= MAX_THEN {
            return Err(RemoteError::TooLong);
        }
        if id.is_empty()
            || id.len() > MAX_INSTANCE_ID
            || !id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            return Err(RemoteError::Then {
                index,
                text: id.chars().take(80).collect(),
            });
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// `parts` as [`PARTS_HEADER`]'s value.
pub fn format(parts: &[Part]) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match p {
            Part::Body(n) => s.push_str(&format!("b{n}")),
            Part::Item { len, at, id } => s.push_str(&format!("i{len}@{at}/{id}")),
        }
    }
    s
}

/// Parses [`PARTS_HEADER`]'s value.
pub fn parse(v: &[u8]) -> Result<Vec<Part>, RemoteError> {
    let text = std::str::from_utf8(v).map_err(|_| RemoteError::NotText)?;
    let mut out = Vec::new();
    for (index, t) in text.split(',').enumerate() {
        if index >= MAX_PARTS {
            return Err(RemoteError::TooMany);
        }
        let bad = |why| RemoteError::Part {
            index,
            text: t.chars().take(80).collect(),
            why,
        };
        let t = t.trim();
        let part = if let Some(n) = t.strip_prefix('b') {
            Part::Body(number(n).ok_or_else(|| bad("b needs a byte count"))?)
        } else if let Some(rest) = t.strip_prefix('i') {
            let (len, rest) = rest
                .split_once('@')
                .ok_or_else(|| bad("give i<len>@<host:port>/<id>"))?;
            let len = number(len).ok_or_else(|| bad("i needs a byte count"))?;
            let (at, id) = rest
                .rsplit_once('/')
                .ok_or_else(|| bad("give i<len>@<host:port>/<id>"))?;
            if !authority(at) {
                return Err(bad("not a host:port"));
            }
            let id = parse_id(id).map_err(|_| bad("the id is not 32 lowercase hex digits"))?;
            Part::Item {
                len,
                at: at.to_string(),
                id,
            }
        } else {
            return Err(bad("a part starts with b or i"));
        };
        out.push(part);
    }
    Ok(out)
}

/// A decimal byte count (no sign, at most 20 digits, fits a u64).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `host:port` with a port of 1 to 65535, the host a name, an IPv4
/// address or a bracketed IPv6 address.
fn authority(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_AUTHORITY {
        return false;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
}

/// An item id as [`ItemId`]'s `Display` writes it.
pub fn parse_id(s: &str) -> Result<ItemId, RemoteError> {
    if s.len() != 32 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(RemoteError::Id(s.chars().take(40).collect()));
    }
    u128::from_str_radix(s, 16)
        .map(ItemId)
        .map_err(|_| RemoteError::Id(s.to_string()))
}

/// The items a split reply became, as its answer's body: one
/// `<id> <len>` line each, in order.
pub fn format_items(items: &[(ItemId, u64)]) -> String {
    items
        .iter()
        .map(|(id, len)| format!("{id} {len}\n"))
        .collect()
}

/// Parses [`format_items`]' output; at most `max` items.
pub fn parse_items(v: &[u8], max: usize) -> Result<Vec<(ItemId, u64)>, RemoteError> {
    let text = std::str::from_utf8(v).map_err(|_| RemoteError::NotText)?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if index >= max {
            return Err(RemoteError::TooManyItems(max));
        }
        let bad = |why| RemoteError::Item {
            index,
            text: line.chars().take(80).collect(),
            why,
        };
        let (id, len) = line.split_once(' ').ok_or_else(|| bad("give <id> <len>"))?;
        let id = parse_id(id).map_err(|_| bad("the id is not 32 lowercase hex digits"))?;
        let len = number(len).ok_or_else(|| bad("not a byte count"))?;
        out.push((id, len));
    }
    Ok(out)
}

/// [`INLINE_BELOW_HEADER`]'s byte count: decimal digits, at most
/// [`MAX_INLINE_BELOW`].
pub fn parse_inline_below(v: &[u8]) -> Result<u64, RemoteError> {
    let bad = || RemoteError::InlineBelow(String::from_utf8_lossy(&v[..v.len().min(40)]).into());
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n: u64 = std::str::from_utf8(v)
        .map_err(|_| bad())?
        .parse()
        .map_err(|_| bad())?;
    if n > MAX_INLINE_BELOW {
        return Err(bad());
    }
    Ok(n)
}

/// Checks an invocation id named in [`KEEP_HEADER`] or a free request.
pub fn check_invocation(s: &str) -> Result<(), RemoteError> {
    if s.is_empty()
        || s.len() > MAX_INVOCATION
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(RemoteError::Invocation(s.chars().take(80).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inline_below_is_a_bounded_byte_count() {
        assert_eq!(parse_inline_below(b"0").unwrap(), 0);
        assert_eq!(parse_inline_below(b"512").unwrap(), 512);
        assert_eq!(parse_inline_below(b"65536").unwrap(), MAX_INLINE_BELOW);
        for bad in [
            &b""[..],
            b"65537",
            b"-1",
            b"+5",
            b" 5",
            b"5k",
            b"99999999999999999999",
            b"\xff",
        ] {
            let e = parse_inline_below(bad).unwrap_err().to_string();
            assert!(e.starts_with(INLINE_BELOW_HEADER), "{e}");
        }
    }

    #[test]
    fn then_lists_instance_ids_and_refuses_the_rest() {
        assert_eq!(parse_then(b"i-1,i_2.x").unwrap(), ["i-1", "i_2.x"]);
        assert_eq!(format_then(&["a", "b"]), "a,b");
        for (bad, want) in [
            (&b""[..], "instance 0 (\"\")"),
            (b"a,,b", "instance 1 (\"\")"),
            (b"a,b/../c", "instance 1 (\"b/../c\")"),
            (b"a b", "instance 0"),
            (b"\xff", "not UTF-8"),
        ] {
            let e = parse_then(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let long = vec!["x"; MAX_THEN + 1].join(",");
        assert_eq!(parse_then(long.as_bytes()), Err(RemoteError::TooLong));
        assert!(parse_then(vec!["x"; MAX_THEN].join(",").as_bytes()).is_ok());
        let id = "a".repeat(MAX_INSTANCE_ID + 1);
        assert!(parse_then(id.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn then_round_trips(ids in proptest::collection::vec("[A-Za-z0-9._-]{1,64}", 1..=MAX_THEN)) {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            prop_assert_eq!(parse_then(format_then(&refs).as_bytes()).unwrap(), ids);
        }
    }

    fn id(n: u128) -> ItemId {
        ItemId(n)
    }

    #[test]
    fn parts_round_trip() {
        let parts = vec![
            Part::Body(1),
            Part::Item {
                len: 4 << 20,
                at: "10.0.0.2:7070".into(),
                id: id(0xabc),
            },
            Part::Body(0),
            Part::Item {
                len: 0,
                at: "[::1]:80".into(),
                id: id(u128::MAX),
            },
            Part::Item {
                len: 9,
                at: "worker-3.example:65535".into(),
                id: id(1),
            },
        ];
        let text = format(&parts);
        assert_eq!(parse(text.as_bytes()).unwrap(), parts, "{text}");
    }

    #[test]
    fn nasty_parts_say_which_part_and_why() {
        let good = "00000000000000000000000000000abc";
        for (text, index, why) in [
            ("", 0, "a part starts with b or i"),
            ("b", 0, "b needs a byte count"),
            ("b-1", 0, "b needs a byte count"),
            ("b+1", 0, "b needs a byte count"),
            ("b99999999999999999999", 0, "b needs a byte count"),
            ("b123456789012345678901", 0, "b needs a byte count"),
            ("b1,x2", 1, "a part starts with b or i"),
            ("b1,,b2", 1, "a part starts with b or i"),
            ("i5", 0, "give i<len>@<host:port>/<id>"),
            ("i5@h:1", 0, "give i<len>@<host:port>/<id>"),
            (&format!("i@h:1/{good}"), 0, "i needs a byte count"),
            (&format!("i5@h/{good}"), 0, "not a host:port"),
            (&format!("i5@h:0/{good}"), 0, "not a host:port"),
            (&format!("i5@h:65536/{good}"), 0, "not a host:port"),
            (&format!("i5@:80/{good}"), 0, "not a host:port"),
            (&format!("i5@a/b:80/{good}"), 0, "not a host:port"),
            (&format!("i5@user@h:80/{good}"), 0, "not a host:port"),
            (&format!("i5@[zz]:80/{good}"), 0, "not a host:port"),
            ("i5@h:80/ABC", 0, "the id is not 32 lowercase hex digits"),
            (
                "i5@h:80/0000000000000000000000000000000G",
                0,
                "the id is not 32 lowercase hex digits",
            ),
        ] {
            match parse(text.as_bytes()) {
                Err(RemoteError::Part {
                    index: i, why: w, ..
                }) => {
                    assert_eq!((i, w), (index, why), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(parse(b"\xff"), Err(RemoteError::NotText));
        let many = vec!["b1"; MAX_PARTS + 1].join(",");
        assert_eq!(parse(many.as_bytes()), Err(RemoteError::TooMany));
        let enough = vec!["b1"; MAX_PARTS].join(",");
        assert_eq!(parse(enough.as_bytes()).unwrap().len(), MAX_PARTS);
        let msg = parse(b"b1,zz").unwrap_err().to_string();
        assert!(msg.contains("part 1") && msg.contains("zz"), "{msg}");
    }

    #[test]
    fn item_lists_round_trip_and_nasty_ones_say_which_line() {
        let items = vec![(id(1), 0), (id(u128::MAX), u64::MAX), (id(0xabc), 17)];
        let text = format_items(&items);
        assert_eq!(parse_items(text.as_bytes(), 3).unwrap(), items);
        assert_eq!(parse_items(b"", 3).unwrap(), vec![]);
        assert_eq!(
            parse_items(text.as_bytes(), 2),
            Err(RemoteError::TooManyItems(2))
        );
        let good = id(5).to_string();
        for (text, index, why) in [
            (good.clone(), 0, "give <id> <len>"),
            (
                format!("{good} 1\nxyz 2"),
                1,
                "the id is not 32 lowercase hex digits",
            ),
            (format!("{good} -1"), 0, "not a byte count"),
            (format!("{good} 1 2"), 0, "not a byte count"),
        ] {
            match parse_items(text.as_bytes(), 10) {
                Err(RemoteError::Item {
                    index: i, why: w, ..
                }) => {
                    assert_eq!((i, w), (index, why), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn invocation_ids_are_checked() {
        check_invocation("inv-01J.x_y").unwrap();
        for bad in ["", "a/b", "a b", "a\nb", &"x".repeat(MAX_INVOCATION + 1)] {
            assert!(check_invocation(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_parts_round_trip(parts in proptest::collection::vec(
            prop_oneof![
                any::<u64>().prop_map(Part::Body),
                (any::<u64>(), "[a-z0-9.-]{1,20}", 1u16.., any::<u128>()).prop_map(
                    |(len, h, port, n)| Part::Item { len, at: format!("{h}:{port}"), id: ItemId(n) }),
            ], 1..20)) {
            prop_assert_eq!(parse(format(&parts).as_bytes()).unwrap(), parts);
        }

        #[test]
        fn parse_never_panics(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&v);
        }
    }
}
