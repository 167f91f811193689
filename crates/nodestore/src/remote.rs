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
//! - With [`KEEP_HEADER`] and [`THEN_HEADER`] (steps on instances of the
//!   same agent, [`ThenStep`]): a part of the workflow run on the worker.
//!   The first instance's 2xx reply is kept; each step runs once all its
//!   sources (the first reply, or earlier steps') are kept, on their bytes
//!   from memory (one passed on as it is, several framed as a JSON array),
//!   and its reply is kept in turn. Steps whose sources failed do not run.
//!   The agent answers 200 with [`CHAIN_HEADER`] and a JSON body,
//!   [`ChainReply`]: one [`ChainStep`] for the first instance, then one per
//!   step (status 0: not run).

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
/// Request: the steps (on instances of the same agent) the kept reply
/// goes on to, sources first ([`format_then`]).
pub const THEN_HEADER: &str = "stratus-then";
/// Reply: the body is a [`ChainReply`] of this many steps.
pub const CHAIN_HEADER: &str = "stratus-chain";
/// Request (with [`KEEP_HEADER`] and [`SPLIT_HEADER`]): instances of this
/// agent that run a map over the split reply's elements as they are kept,
/// one element per call; each entry is one call at a time, so an instance
/// named k times takes k calls at once ([`format_map_then`]).
pub const MAP_THEN_HEADER: &str = "stratus-map-then";
/// Reply: the elements were kept and mapped; the body is a [`MapReply`]
/// of this many elements.
pub const MAPPED_HEADER: &str = "stratus-mapped";
/// The most instances [`MAP_THEN_HEADER`] names.
pub const MAX_MAP_SLOTS: usize = 16;
/// The most steps a part runs after its first instance.
pub const MAX_THEN: usize = 32;
/// The most sources one step of a part takes.
pub const MAX_THEN_SOURCES: usize = 64;
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
    #[error("{THEN_HEADER}: step {index} ({text:?}): {why}")]
    Then {
        index: usize,
        text: String,
        why: &'static str,
    },
    #[error("{THEN_HEADER}: more than {MAX_THEN} steps")]
    TooLong,
    #[error("{INLINE_BELOW_HEADER}: {0:?}: give a byte count of 0 to {MAX_INLINE_BELOW}")]
    InlineBelow(String),
    #[error("{MAP_THEN_HEADER}: instance {index} ({text:?}): give 1 to {MAX_MAP_SLOTS} instance ids (each 1 to 64 of A-Z a-z 0-9 . _ -), comma-separated")]
    MapThen { index: usize, text: String },
}

/// One step a part runs after its first instance: on instance `id` (of
/// this agent, or of the agent at `at`, `host:port`), with the outputs of
/// `sources` (0: the first instance's, `k`: the part's `k`-th step's,
/// always an earlier one) as its body: one as it is, or several framed as
/// a JSON array when `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThenStep {
    pub at: Option<String>,
    pub id: String,
    pub sources: Vec<usize>,
    pub json: bool,
}

impl ThenStep {
    /// Step `k`'s usual case: the step before's output, as it is.
    pub fn after(id: &str, k: usize) -> ThenStep {
        ThenStep {
            at: None,
            id: id.to_string(),
            sources: vec![k - 1],
            json: false,
        }
    }
}

/// One instance's run in a part (the first instance's, or a step's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainStep {
    /// The instance's answer (or the agent's, when it did not answer); 0:
    /// not run (a source failed).
    pub status: u16,
    /// The kept reply's item id, on a 2xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The agent keeping it (`host:port`), when not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The kept reply's size.
    #[serde(default)]
    pub bytes: u64,
    /// When it was sent and answered, µs after the part's request arrived.
    pub start_us: u64,
    pub end_us: u64,
    /// The answer's first [`MAX_CHAIN_ERROR`] bytes, when not 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An agent's answer to a part: the first instance's step, then one per
/// step of [`THEN_HEADER`], in its order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainReply {
    pub steps: Vec<ChainStep>,
}

/// An agent's answer to a split reply mapped as it arrived
/// ([`MAP_THEN_HEADER`]): the elements kept ([`format_items`]' lines), and
/// per element its map run (status 0: not run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapReply {
    pub items: String,
    pub runs: Vec<MapRun>,
}

/// One element's map run: on which of [`MAP_THEN_HEADER`]'s instances
/// (none: not run), and how it went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    #[serde(flatten)]
    pub step: ChainStep,
}

/// `ids` as [`MAP_THEN_HEADER`]'s value.
pub fn format_map_then(ids: &[String]) -> String {
    ids.join(",")
}

/// Parses [`MAP_THEN_HEADER`]'s value: 1 to [`MAX_MAP_SLOTS`] instance
/// ids, comma-separated (one may come several times: several calls at
/// once).
pub fn parse_map_then(v: &[u8]) -> Result<Vec<String>, RemoteError> {
    let text = std::str::from_utf8(v).map_err(|_| RemoteError::NotText)?;
    let mut out: Vec<String> = Vec::new();
    for (index, id) in text.split(',').enumerate() {
        if index >= MAX_MAP_SLOTS || !instance_id(id) {
            return Err(RemoteError::MapThen {
                index,
                text: id.chars().take(80).collect(),
            });
        }
        out.push(id.to_string());
    }
    Ok(out)
}

fn instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_ID
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// `steps` as [`THEN_HEADER`]'s value: `id` for step `k` on step `k − 1`'s
/// output alone, else `id@s+s+…`, with `:json` when framed; `host:port/`
/// first for an instance of another agent.
pub fn format_then(steps: &[ThenStep]) -> String {
    let mut out = String::new();
    for (i, st) in steps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(at) = &st.at {
            out.push_str(at);
            out.push('/');
        }
        out.push_str(&st.id);
        if st.json || st.sources[..] != [i] {
            let srcs: Vec<String> = st.sources.iter().map(usize::to_string).collect();
            out.push('@');
            out.push_str(&srcs.join("+"));
            if st.json {
                out.push_str(":json");
            }
        }
    }
    out
}

/// Parses [`THEN_HEADER`]'s value: 1 to [`MAX_THEN`] steps, each on an
/// instance id (of another agent after its `host:port/`), its sources
/// earlier steps (at most [`MAX_THEN_SOURCES`]; several only framed as
/// JSON).
pub fn parse_then(v: &[u8]) -> Result<Vec<ThenStep>, RemoteError> {
    let text = std::str::from_utf8(v).map_err(|_| RemoteError::NotText)?;
    let mut out = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        if index >= MAX_THEN {
            return Err(RemoteError::TooLong);
        }
        let bad = |why| RemoteError::Then {
            index,
            text: entry.chars().take(80).collect(),
            why,
        };
        let (at, target) = match entry.split_once('/') {
            Some((at, target)) if authority(at) => (Some(at.to_string()), target),
            Some(_) => return Err(bad("before / give the host:port of an agent")),
            None => (None, entry),
        };
        let (id, rest) = match target.split_once('@') {
            Some((id, rest)) => (id, Some(rest)),
            None => (target, None),
        };
        if !instance_id(id) {
            return Err(bad("give an instance id of 1 to 64 of A-Z a-z 0-9 . _ -"));
        }
        let Some(rest) = rest else {
            out.push(ThenStep {
                at,
                ..ThenStep::after(id, index + 1)
            });
            continue;
        };
        let (list, json) = match rest.strip_suffix(":json") {
            Some(list) => (list, true),
            None => (rest, false),
        };
        let mut sources = Vec::new();
        for src in list.split('+') {
            if sources.len() >= MAX_THEN_SOURCES {
                return Err(bad("more than 64 sources"));
            }
            let n: usize = match src.parse() {
                Ok(n) if !src.is_empty() && src.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => {
                    return Err(bad(
                        "a source is the number of an earlier step (0: the first)",
                    ))
                }
            };
            if n > index {
                return Err(bad(
                    "a source is the number of an earlier step (0: the first)",
                ));
            }
            sources.push(n);
        }
        if !json && sources.len() != 1 {
            return Err(bad("several sources are framed: end with :json"));
        }
        out.push(ThenStep {
            at,
            id: id.to_string(),
            sources,
            json,
        });
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
    fn map_then_lists_instances_and_refuses_the_rest() {
        let ids = parse_map_then(b"i-1,i_2.x,3,i-1").unwrap();
        assert_eq!(ids, ["i-1", "i_2.x", "3", "i-1"]);
        assert_eq!(format_map_then(&ids), "i-1,i_2.x,3,i-1");
        let sixteen = vec!["x"; MAX_MAP_SLOTS]
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x}{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse_map_then(sixteen.as_bytes()).unwrap().len(),
            MAX_MAP_SLOTS
        );
        let long = format!("{sixteen},y");
        let too_long = "a".repeat(MAX_INSTANCE_ID + 1);
        for (bad, want) in [
            (&b""[..], "instance 0 (\"\")"),
            (b"a,,b", "instance 1 (\"\")"),
            (b"a b", "instance 0"),
            (b"a,h:1/b", "instance 1"),
            (b"\xff", "not UTF-8"),
            (long.as_bytes(), "instance 16"),
            (too_long.as_bytes(), "instance 0"),
        ] {
            let e = parse_map_then(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
            if want != "not UTF-8" {
                assert!(e.starts_with(MAP_THEN_HEADER), "{e}");
            }
        }
    }

    #[test]
    fn then_lists_steps_and_refuses_the_rest() {
        let after = |id: &str, k| ThenStep::after(id, k);
        assert_eq!(
            parse_then(b"i-1,i_2.x").unwrap(),
            [after("i-1", 1), after("i_2.x", 2)]
        );
        let diamond = [
            after("l", 1),
            ThenStep {
                at: Some("10.77.0.2:8081".into()),
                id: "r".into(),
                sources: vec![0],
                json: false,
            },
            ThenStep {
                at: None,
                id: "j".into(),
                sources: vec![1, 2],
                json: true,
            },
            ThenStep {
                at: Some("h4:8081".into()),
                ..after("t", 4)
            },
        ];
        let text = "l,10.77.0.2:8081/r@0,j@1+2:json,h4:8081/t";
        assert_eq!(format_then(&diamond), text);
        assert_eq!(parse_then(text.as_bytes()).unwrap(), diamond);
        assert_eq!(parse_then(b"a@0:json").unwrap()[0].sources, [0]);
        for (bad, want) in [
            (&b""[..], "step 0 (\"\"): give an instance id"),
            (b"a,,b", "step 1 (\"\")"),
            (b"a,b/../c", "step 1 (\"b/../c\")"),
            (b"a b", "step 0"),
            (b"\xff", "not UTF-8"),
            (
                b"a@1",
                "step 0 (\"a@1\"): a source is the number of an earlier step",
            ),
            (b"a,b@2", "an earlier step"),
            (b"a,b@", "an earlier step"),
            (b"a,b@+0", "an earlier step"),
            (b"a,b@-1", "an earlier step"),
            (b"a,b@0+1", "several sources are framed: end with :json"),
            (b"a,b@0:xml", "an earlier step"),
            (b"a,@0", "give an instance id"),
            (b"a,b@99999999999999999999999", "an earlier step"),
            (b"a,/b", "before / give the host:port of an agent"),
            (b"a,h 1:80/b", "before / give the host:port"),
            (b"a,h:1/b/c", "give an instance id"),
        ] {
            let e = parse_then(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let long = vec!["x"; MAX_THEN + 1].join(",");
        assert_eq!(parse_then(long.as_bytes()), Err(RemoteError::TooLong));
        assert!(parse_then(vec!["x"; MAX_THEN].join(",").as_bytes()).is_ok());
        let id = "a".repeat(MAX_INSTANCE_ID + 1);
        assert!(parse_then(id.as_bytes()).is_err());
        let many = format!("a,b@{}:json", vec!["1"; MAX_THEN_SOURCES + 1].join("+"));
        assert!(parse_then(many.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("more than 64 sources"));
    }

    fn then_steps() -> impl Strategy<Value = Vec<ThenStep>> {
        proptest::collection::vec(
            (
                proptest::option::of("[a-z0-9.-]{1,20}:[1-9][0-9]{0,3}"),
                "[A-Za-z0-9._-]{1,64}",
                proptest::collection::vec(any::<usize>(), 1..4),
                any::<bool>(),
            ),
            1..=MAX_THEN,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(k, (at, id, srcs, json))| {
                    let mut sources: Vec<usize> = srcs.iter().map(|s| s % (k + 1)).collect();
                    if !json {
                        sources.truncate(1);
                    }
                    ThenStep {
                        at,
                        id,
                        sources,
                        json,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn then_round_trips(steps in then_steps()) {
            prop_assert_eq!(parse_then(format_then(&steps).as_bytes()).unwrap(), steps);
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
