//! Failure handling in workflows: a step's `retry:` and `catch:`, and the
//! workflow's `timeoutSeconds`, read from YAML and checked against the steps.
//!
//! ```yaml
//! spec:
//!   timeoutSeconds: 30                  # the whole run; 504 past it
//!   steps:
//!     - name: fetch
//!       function: fetch
//!       retry: {attempts: 3, backoff: 100ms, maxBackoff: 2s}
//!       catch: fallback                 # runs with the error JSON if fetch fails for good
//!     - name: fallback
//!       function: cached                # no inputs: its input is the error
//!     - name: render
//!       function: render
//!       inputs: [fetch]                 # gets fetch's output, or fallback's
//! ```
//!
//! Rules checked here:
//! - `attempts` is 1..=[`MAX_ATTEMPTS`]; `backoff` and `maxBackoff` are
//!   durations (`250ms`, `2s`, `1m`) of at most [`MAX_BACKOFF_MS`], and
//!   `backoff <= maxBackoff`.
//! - A catch step exists, is not the step itself, is the catch step of one
//!   step only, declares no `inputs`, `map` or `when` (its input is the
//!   error), is not `spec.output`, and no step reads it (its output goes to
//!   the consumers of the step it catches). A catch step that reads the step
//!   it catches would make its own input depend on its output: reported as a
//!   cycle. Catch steps may themselves have `retry` and `catch` (a chain of
//!   fallbacks), but the chain may not loop.

use std::collections::HashMap;

use crate::convert::{list_names, Ctx, MapView};
use crate::model::{Pos, RetryPolicy};
use stratus_yaml::{parse_int, Kind, Node};

/// Most tries of one run.
pub const MAX_ATTEMPTS: i64 = 100;
/// Longest `backoff`/`maxBackoff` (one hour).
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Longest `spec.timeoutSeconds` (one day).
pub const MAX_TIMEOUT_SECONDS: i64 = 86_400;
/// `backoff` when absent.
pub const DEFAULT_BACKOFF_MS: u64 = 100;
/// `maxBackoff` when absent (raised to `backoff` if that is larger).
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 10_000;

/// Parses a step's `retry:` mapping.
pub(crate) fn retry(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<RetryPolicy> {
    let mut m = MapView::new(ctx, node, path)?;
    let attempts = match m.require(ctx, "attempts") {
        Some(n) => ctx
            .int(n, &format!("{path}.attempts"), i64::MIN, i64::MAX)
            .and_then(|v| {
                if v < 1 {
                    ctx.error(
                        n.pos,
                        format!(
                            "{path}.attempts must be at least 1 (the total number of tries), found {v}"
                        ),
                    );
                    None
                } else if v > MAX_ATTEMPTS {
                    ctx.error(
                        n.pos,
                        format!("{path}.attempts {v} is too many; use at most {MAX_ATTEMPTS}"),
                    );
                    None
                } else {
                    Some(v as u32)
                }
            }),
        None => None,
    };
    let backoff = m
        .get("backoff")
        .map(|n| (duration(ctx, n, &format!("{path}.backoff")), n.pos));
    let max_backoff = m
        .get("maxBackoff")
        .map(|n| (duration(ctx, n, &format!("{path}.maxBackoff")), n.pos));
    m.finish(ctx, &[], &[]);
    let backoff_ms = match backoff {
        Some((b, _)) => b?,
        None => DEFAULT_BACKOFF_MS,
    };
    let max_backoff_ms = match max_backoff {
        Some((mb, pos)) => {
            let mb = mb?;
            if mb < backoff_ms {
                ctx.error(
                    pos,
                    format!(
                        "{path}: maxBackoff ({mb}ms) is shorter than backoff ({backoff_ms}ms); \
                         make maxBackoff at least backoff"
                    ),
                );
                return None;
            }
            mb
        }
        None => DEFAULT_MAX_BACKOFF_MS.max(backoff_ms),
    };
    Some(RetryPolicy {
        attempts: attempts?,
        backoff_ms,
        max_backoff_ms,
    })
}

/// A duration such as `250ms`, `2s` or `1m`, in milliseconds, at most
/// [`MAX_BACKOFF_MS`].
pub(crate) fn duration(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<u64> {
    let text = match &*node.kind {
        Kind::Scalar { value, .. } if !node.is_null() => value.trim(),
        _ => {
            ctx.type_error(node, path, "a duration such as 250ms or 2s");
            return None;
        }
    };
    match parse_duration_ms(text) {
        Ok(ms) if ms > MAX_BACKOFF_MS => {
            ctx.error(
                node.pos,
                format!("{path}: {text} is too long; use at most 1h (3600s)"),
            );
            None
        }
        Ok(ms) => Some(ms),
        Err(why) => {
            ctx.error(node.pos, format!("{path}: {why}"));
            None
        }
    }
}

/// `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" if !num.is_empty() => {
            return Err(format!(
                "{text:?} has no unit; write e.g. {num}ms or {num}s"
            ))
        }
        _ => {
            return Err(format!(
                "{text:?} is not a duration; write a whole number with a unit: ms, s, m or h (e.g. 250ms, 2s)"
            ))
        }
    };
    let n = parse_int(num)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("{text:?} is not a duration; write e.g. 250ms or 2s"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long; use at most 1h"))
}

/// `spec.timeoutSeconds`.
pub(crate) fn timeout_seconds(ctx: &mut Ctx<'_>, node: &Node) -> Option<u64> {
    ctx.int(node, "spec.timeoutSeconds", 1, MAX_TIMEOUT_SECONDS)
        .map(|v| v as u64)
}

/// What [`check_catches`] needs of one step.
pub(crate) struct CatchInfo<'a> {
    pub name: &'a str,
    pub pos: Pos,
    /// `catch:` as written, with its position.
    pub catch: Option<&'a (String, Pos)>,
    /// It declares `inputs` or `map`.
    pub reads: bool,
    /// It has a condition (`when:` or a switch case).
    pub conditional: bool,
}

/// Checks every `catch:` (see the module documentation). `index` maps a
/// name to its first definition; `edges` are producer → consumer, including
/// conditions' reads. Returns the catch steps' indices (they are not sinks).
pub(crate) fn check_catches(
    ctx: &mut Ctx<'_>,
    steps: &[CatchInfo<'_>],
    index: &HashMap<&str, usize>,
    edges: &[Vec<usize>],
    output: Option<&str>,
) -> Vec<usize> {
    let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
    // handler -> the step it catches
    let mut caught_by: HashMap<usize, usize> = HashMap::new();
    let mut link: Vec<Option<usize>> = vec![None; steps.len()];
    for (a, s) in steps.iter().enumerate() {
        let Some((h_name, pos)) = s.catch else {
            continue;
        };
        if index.get(s.name) != Some(&a) {
            continue; // a duplicate; already reported
        }
        ctx.step = Some(s.name.to_string());
        let Some(&h) = index.get(h_name.as_str()) else {
            let hint = match ctx.suggest(h_name, names.iter().copied()) {
                Some(x) => format!("did you mean '{x}'?"),
                None => format!("steps: {}", list_names(&names)),
            };
            ctx.error(
                *pos,
                format!("catch names unknown step '{h_name}' ({hint})"),
            );
            continue;
        };
        if h == a {
            ctx.error(
                *pos,
                format!("step '{h_name}' cannot be its own catch step; name another step"),
            );
            continue;
        }
        if let Some(&other) = caught_by.get(&h) {
            ctx.error(
                *pos,
                format!(
                    "step '{h_name}' is already the catch step of '{}'; a catch step handles one \
                     step (add another step calling the same function)",
                    names[other]
                ),
            );
            continue;
        }
        caught_by.insert(h, a);
        link[a] = Some(h);
        let hs = &steps[h];
        if hs.reads {
            if reaches(edges, a, h) {
                ctx.error(
                    *pos,
                    format!(
                        "catch: '{h_name}' would create a cycle: '{h_name}' reads the output of \
                         '{}', and its own output would replace that output; use a catch step \
                         without inputs",
                        s.name
                    ),
                );
            } else {
                ctx.error(
                    *pos,
                    format!(
                        "catch step '{h_name}' has inputs or map (line {}); a catch step's input \
                         is the error of the step it catches: remove them",
                        hs.pos.line
                    ),
                );
            }
        }
        if hs.conditional {
            ctx.error(
                *pos,
                format!(
                    "catch step '{h_name}' has a condition (line {}); a catch step runs exactly \
                     when the step it catches fails: remove when",
                    hs.pos.line
                ),
            );
        }
        if output == Some(h_name.as_str()) {
            ctx.error(
                *pos,
                format!(
                    "catch step '{h_name}' cannot be spec.output: its output stands in for \
                     '{}''s; make '{}' (or a step after it) the output",
                    s.name, s.name
                ),
            );
        }
        if let Some(&c) = edges[h].first() {
            ctx.error(
                *pos,
                format!(
                    "step '{}' reads catch step '{h_name}'; a catch step's output goes to the \
                     readers of the step it catches: read '{}' instead",
                    names[c], s.name
                ),
            );
        }
    }
    // Catch chains must not loop: a -> h -> ... -> a.
    let mut reported = vec![false; steps.len()];
    for start in 0..steps.len() {
        let mut path = vec![start];
        let mut cur = start;
        while let Some(next) = link[cur] {
            if next == start {
                if path.iter().all(|&i| !reported[i]) {
                    for &i in &path {
                        reported[i] = true;
                    }
                    let mut shown: Vec<&str> = path.iter().map(|&i| names[i]).collect();
                    shown.push(names[start]);
                    let s = &steps[start];
                    ctx.step = Some(s.name.to_string());
                    let pos = s.catch.map(|(_, p)| *p).unwrap_or(s.pos);
                    ctx.error(
                        pos,
                        format!(
                            "catch cycle: {} (each step is the catch step of the previous one); \
                             end the chain with a step that has no catch",
                            shown.join(" -> ")
                        ),
                    );
                }
                break;
            }
            if path.contains(&next) || path.len() > steps.len() {
                break; // a loop not through start: reported from its own start
            }
            path.push(next);
            cur = next;
        }
    }
    ctx.step = None;
    let mut handlers: Vec<usize> = caught_by.into_keys().collect();
    handlers.sort_unstable();
    handlers
}

/// Whether `to` is reachable from `from` along `edges`.
fn reaches(edges: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; edges.len()];
    let mut stack = vec![from];
    while let Some(u) = stack.pop() {
        if u == to {
            return true;
        }
        if std::mem::replace(&mut seen[u], true) {
            continue;
        }
        stack.extend(edges[u].iter().copied());
    }
    false
}

#[cfg(test)]
mod tests;
