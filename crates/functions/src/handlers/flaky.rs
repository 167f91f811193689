//! `flaky`: fails the first `FLAKY_FAIL` calls of each idempotency key, then
//! succeeds. For testing retries: a platform that retries a run sends the
//! same `x-stratus-idempotency-key` on every try, so the n-th try of a run
//! is the n-th call with its key.
//!
//! - `FLAKY_FAIL` (default 1): failing calls per key.
//! - `FLAKY_MODE`: how a call fails: `status` (default: answer
//!   `FLAKY_STATUS`, default 500, with a plain-text reason), `crash` (exit
//!   with status 3 without answering) or `hang` (never answer).
//! - `FLAKY_STATE_DIR`: keep the counts in files there (one per key), so
//!   they survive a crash (the directory must be writable by the user
//!   instances run as); by default they are kept in memory.
//!
//! A call without the header counts under the key `-`. Success answers
//! `{"key":"...","calls":n,"input_bytes":b}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The header the platform sets (agreed with the gateway's retry module).
pub const KEY_HEADER: &str = "x-stratus-idempotency-key";

/// How a failing call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakyMode {
    Status,
    Crash,
    Hang,
}

impl FlakyMode {
    pub fn parse(s: &str) -> Option<FlakyMode> {
        match s.trim() {
            "status" => Some(FlakyMode::Status),
            "crash" => Some(FlakyMode::Crash),
            "hang" => Some(FlakyMode::Hang),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakyConfig {
    pub fail: u64,
    pub status: u16,
    pub mode: FlakyMode,
    pub state_dir: Option<PathBuf>,
}

impl Default for FlakyConfig {
    fn default() -> Self {
        FlakyConfig {
            fail: 1,
            status: 500,
            mode: FlakyMode::Status,
            state_dir: None,
        }
    }
}

/// Calls counted per key.
#[derive(Debug, Default)]
pub struct Counts {
    mem: Mutex<HashMap<String, u64>>,
}

/// What to do with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fail this call (the `calls`-th with its key).
    Fail { calls: u64 },
    /// Answer with this body.
    Pass(Vec<u8>),
}

impl Counts {
    /// Counts a call with `key` and decides its fate.
    pub fn call(&self, cfg: &FlakyConfig, key: &str, input_bytes: usize) -> Verdict {
        let calls = match &cfg.state_dir {
            Some(dir) => bump_file(dir, key),
            None => {
                let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
                let n = m.entry(key.to_string()).or_insert(0);
                *n += 1;
                *n
            }
        };
        if calls <= cfg.fail {
            Verdict::Fail { calls }
        } else {
            let body = serde_json::json!({"key": key, "calls": calls, "input_bytes": input_bytes});
            Verdict::Pass(body.to_string().into_bytes())
        }
    }
}

/// Increments the count in `dir/<key>`; an unreadable file counts as 0.
fn bump_file(dir: &Path, key: &str) -> u64 {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("flaky-{name}"));
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::write(&path, n.to_string());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_the_first_calls_of_each_key() {
        let c = Counts::default();
        let cfg = FlakyConfig {
            fail: 2,
            ..FlakyConfig::default()
        };
        assert_eq!(c.call(&cfg, "a.0", 0), Verdict::Fail { calls: 1 });
        assert_eq!(c.call(&cfg, "b.0", 0), Verdict::Fail { calls: 1 });
        assert_eq!(c.call(&cfg, "a.0", 0), Verdict::Fail { calls: 2 });
        match c.call(&cfg, "a.0", 3) {
            Verdict::Pass(b) => {
                assert_eq!(b, br#"{"calls":3,"input_bytes":3,"key":"a.0"}"#.to_vec())
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn counts_in_files_survive_a_new_process() {
        let dir = std::env::temp_dir().join(format!("flaky-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = FlakyConfig {
            fail: 1,
            state_dir: Some(dir.clone()),
            ..FlakyConfig::default()
        };
        assert_eq!(
            Counts::default().call(&cfg, "x/../y", 0),
            Verdict::Fail { calls: 1 }
        );
        // A fresh Counts (a new instance) sees the earlier call.
        assert!(matches!(
            Counts::default().call(&cfg, "x/../y", 0),
            Verdict::Pass(_)
        ));
        assert!(dir.join("flaky-x_.._y").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
