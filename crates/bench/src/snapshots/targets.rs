//! The benchmark's targets, checked against the medians: what a verdict
//! is, and the least time a link allows for the bytes a restore moved.

use serde::Serialize;
use stratus_report::fmt_us;

use super::dedup::SnapDedup;
use super::model::{find, median, mib, ratio, Round, Row};
use crate::shaper::LinkSpec;

/// How a target came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        })
    }
}

/// `value ≤ limit` (at most) or `value ≥ limit` (at least).
pub fn verdict(value: Option<f64>, limit: f64, at_most: bool) -> Verdict {
    match value {
        None => Verdict::NotMeasured,
        Some(v) if v.is_nan() => Verdict::NotMeasured,
        Some(v) if (at_most && v <= limit) || (!at_most && v >= limit) => Verdict::Met,
        Some(_) => Verdict::Missed,
    }
}

/// One checked target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub text: String,
    pub value: Option<f64>,
    pub verdict: Verdict,
}

/// Bandwidth of a link name like `1gbit,1ms`, bytes per second.
pub(super) fn link_bandwidth(link: &str) -> Option<u64> {
    LinkSpec::parse(link).ok().and_then(|l| l.bandwidth)
}

/// The least time `bytes` can take over `link`: one round trip (the
/// request out, the first byte back) plus the bytes at the link's
/// bandwidth. `None` for an unlimited or unparsable link.
pub fn link_floor_us(link: &str, bytes: u64) -> Option<u64> {
    let l = LinkSpec::parse(link).ok()?;
    let bw = l.bandwidth?;
    let rtt = 2 * l.latency.as_micros() as u64;
    Some(rtt + (bytes as u128 * 1_000_000 / u128::from(bw.max(1))) as u64)
}

/// The targets, from the medians.
/// (a) lazy and working-set total ≤ 1.25× warm-local, per link and
/// function, concurrency 1; (b) working-set and lazy ≥ 5× faster than
/// eager for 256 MiB guests on 1 Gbit/s links; (c) dedup reported.
///
/// A working-set verdict under (a) also states the link's floor: what
/// the median unloaded working-set round moved over the link
/// (`rounds`), at the link's bandwidth plus one round trip, against
/// warm-local. The recorded working set is what the guest touched up to
/// its first answer, so a restore that moves it cannot answer sooner;
/// where the floor alone exceeds 1.25× warm-local, the target is out of
/// reach on that link whatever the prefetch order.
pub fn targets(rows: &[Row], rounds: &[Round], dedup: Option<&SnapDedup>) -> Vec<Target> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, String, u32)> = Vec::new();
    for r in rows.iter().filter(|r| r.concurrency == 1) {
        let k = (r.link.clone(), r.function.clone(), r.guest_mib);
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    let total = |link: &str, f: &str, p: &str| find(rows, link, f, p, 1).map(|r| r.total_us);
    for (link, f, _) in &seen {
        let warm = total(link, f, "warm-local");
        for p in ["working-set", "lazy"] {
            let v = ratio(total(link, f, p), warm);
            let floor = match (p, warm) {
                ("working-set", Some(w)) => link_floor_note(rounds, link, f, w),
                _ => String::new(),
            };
            out.push(Target {
                text: format!(
                    "(a) {p} total ≤ 1.25× warm-local total, {f} on {link}, unloaded: {}{floor}",
                    v.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "-".into())
                ),
                value: v,
                verdict: verdict(v, 1.25, true),
            });
        }
    }
    let gbit = 1_000_000_000 / 8;
    let small: Vec<&(String, String, u32)> = seen
        .iter()
        .filter(|(l, _, g)| *g == 256 && link_bandwidth(l) == Some(gbit))
        .collect();
    if small.is_empty() {
        out.push(Target {
            text: "(b) ≥ 5× faster than eager for a 256 MiB guest over a 1 Gbit/s link: no such scenario in this run".into(),
            value: None,
            verdict: Verdict::NotMeasured,
        });
    }
    for (link, f, _) in small {
        let eager = total(link, f, "eager");
        for p in ["working-set", "lazy"] {
            let v = ratio(eager, total(link, f, p));
            out.push(Target {
                text: format!(
                    "(b) {p} ≥ 5× faster than eager, {f} (256 MiB guest) on {link}, unloaded: {}",
                    v.map(|x| format!("{x:.1}×")).unwrap_or_else(|| "-".into())
                ),
                value: v,
                verdict: verdict(v, 5.0, false),
            });
        }
    }
    let (v, text) = match dedup {
        Some(d) if d.snapshots >= 3 => (
            Some(d.dedup_ratio),
            format!(
                "(c) dedup across {} functions' snapshots reported: {:.1}% of non-zero page references deduplicated, {} pages ({} MiB) shared between functions, {:.1}% of logical bytes not stored",
                d.snapshots,
                d.dedup_ratio * 100.0,
                d.shared_chunks,
                mib(d.shared_bytes),
                d.bytes_saved_ratio * 100.0
            ),
        ),
        _ => (
            None,
            format!(
                "(c) dedup across ≥ 3 functions' snapshots: only {} snapshot(s) in this run",
                dedup.map(|d| d.snapshots).unwrap_or(0)
            ),
        ),
    };
    out.push(Target {
        text,
        value: v,
        verdict: if v.is_some() {
            Verdict::Met
        } else {
            Verdict::NotMeasured
        },
    });
    out
}

/// " (link floor: …)" for `function`'s unloaded working-set rounds on
/// `link` against a warm-local total of `warm_us` (see [`targets`]);
/// empty without such rounds, a bandwidth or a warm-local time.
fn link_floor_note(rounds: &[Round], link: &str, function: &str, warm_us: u64) -> String {
    let moved: Vec<u64> = rounds
        .iter()
        .filter(|r| {
            r.link == link
                && r.function == function
                && r.policy == "working-set"
                && r.concurrency == 1
        })
        .map(|r| r.link_bytes)
        .collect();
    if moved.is_empty() || warm_us == 0 {
        return String::new();
    }
    let bytes = median(&moved);
    let Some(floor) = link_floor_us(link, bytes) else {
        return String::new();
    };
    let x = floor as f64 / warm_us as f64;
    format!(
        " (link floor: its {} MiB over the link take ≥ {} = {x:.2}× warm-local{})",
        mib(bytes),
        fmt_us(floor),
        if x > 1.25 {
            ", out of reach on this link"
        } else {
            ""
        }
    )
}
