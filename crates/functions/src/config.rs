//! Per-process configuration, read once from environment variables at start-up.

use crate::handlers::bench::BenchConfig;
use crate::handlers::flaky::{FlakyConfig, FlakyMode};
use crate::handlers::memhog::{MemhogConfig, MAX_MIB};
use crate::handlers::spin::{SpinMode, MAX_MEMORY_MB, MAX_MS, MAX_OUTPUT_BYTES};
use crate::Error;

/// How `split` cuts its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// About this many parts of similar size (fewer if the text has fewer lines).
    Parts(usize),
    /// Parts of about this many bytes each.
    ChunkBytes(usize),
}

/// Settings of all functions (each function reads only its own).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `split`: `SPLIT_CHUNK_BYTES` if set, else `SPLIT_PARTS` (default 4).
    pub split: SplitMode,
    /// `wc-reduce`: `TOP_N`, number of most frequent words reported (default 10).
    pub top_n: usize,
    /// `csv-parse`: `CSV_BATCH_ROWS`, rows per output batch (default 50).
    pub csv_batch_rows: usize,
    /// `aggregate`: `GROUP_BY`, the field rows are grouped by (default: none, one group `all`).
    pub group_by: Option<String>,
    /// `report`: `REPORT_FIELDS`, comma-separated columns (default: every numeric field).
    pub report_fields: Option<Vec<String>>,
    /// `spin`: `SPIN_MS`, duration used when the request does not say (default 0).
    pub spin_ms: f64,
    /// `spin`: `SPIN_MODE`, `busy` (default) or `sleep`, used when the request does not say.
    pub spin_mode: SpinMode,
    /// `bench`: `BENCH_MS`, `BENCH_MEMORY_MB`, `BENCH_OUTPUT_BYTES`, `BENCH_MODE`.
    pub bench: BenchConfig,
    /// `memhog`: `MEMHOG_MIB` (default 16), `MEMHOG_SEED` (default 1), `MEMHOG_TOUCH_PCT` (default 100).
    pub memhog: MemhogConfig,
    /// `flaky`: `FLAKY_FAIL`, `FLAKY_STATUS`, `FLAKY_MODE`, `FLAKY_STATE_DIR`.
    pub flaky: FlakyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            split: SplitMode::Parts(4),
            top_n: 10,
            csv_batch_rows: 50,
            group_by: None,
            report_fields: None,
            spin_ms: 0.0,
            spin_mode: SpinMode::Busy,
            bench: BenchConfig::default(),
            memhog: MemhogConfig::default(),
            flaky: FlakyConfig::default(),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (a variable's value, if set).
    /// Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        if let Some(v) = get("SPLIT_CHUNK_BYTES") {
            c.split = SplitMode::ChunkBytes(positive("SPLIT_CHUNK_BYTES", &v)?);
        } else if let Some(v) = get("SPLIT_PARTS") {
            c.split = SplitMode::Parts(positive("SPLIT_PARTS", &v)?);
        }
        if let Some(v) = get("TOP_N") {
            c.top_n = positive("TOP_N", &v)?;
        }
        if let Some(v) = get("CSV_BATCH_ROWS") {
            c.csv_batch_rows = positive("CSV_BATCH_ROWS", &v)?;
        }
        c.group_by = get("GROUP_BY").map(|v| v.trim().to_string());
        c.report_fields = get("REPORT_FIELDS").map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        });
        if let Some(v) = get("SPIN_MS") {
            c.spin_ms = match v.trim().parse::<f64>() {
                Ok(ms) if ms.is_finite() && ms >= 0.0 => ms,
                _ => {
                    return Err(bad(
                        "SPIN_MS",
                        &v,
                        "not a non-negative number of milliseconds",
                    ))
                }
            };
        }
        if let Some(v) = get("SPIN_MODE") {
            c.spin_mode = mode("SPIN_MODE", &v)?;
        }
        if let Some(v) = get("BENCH_MS") {
            c.bench.ms = millis("BENCH_MS", &v)?;
        }
        if let Some(v) = get("BENCH_MEMORY_MB") {
            c.bench.memory_mb = at_most("BENCH_MEMORY_MB", &v, MAX_MEMORY_MB)?;
        }
        if let Some(v) = get("BENCH_OUTPUT_BYTES") {
            c.bench.output_bytes = at_most("BENCH_OUTPUT_BYTES", &v, MAX_OUTPUT_BYTES)?;
        }
        if let Some(v) = get("BENCH_MODE") {
            c.bench.mode = mode("BENCH_MODE", &v)?;
        }
        if let Some(v) = get("MEMHOG_MIB") {
            c.memhog.mib = at_most("MEMHOG_MIB", &v, MAX_MIB)?;
        }
        if let Some(v) = get("MEMHOG_SEED") {
            c.memhog.seed = at_most("MEMHOG_SEED", &v, u64::MAX)?;
        }
        if let Some(v) = get("FLAKY_FAIL") {
            c.flaky.fail = at_most("FLAKY_FAIL", &v, u64::MAX)?;
        }
        if let Some(v) = get("FLAKY_STATUS") {
            match v.trim().parse::<u16>() {
                Ok(s) if (100..=999).contains(&s) => c.flaky.status = s,
                _ => return Err(bad("FLAKY_STATUS", &v, "not an HTTP status (100-999)")),
            }
        }
        if let Some(v) = get("FLAKY_MODE") {
            c.flaky.mode = FlakyMode::parse(&v)
                .ok_or_else(|| bad("FLAKY_MODE", &v, "use status, crash or hang"))?;
        }
        c.flaky.state_dir = get("FLAKY_STATE_DIR").map(|v| v.trim().into());
        if let Some(v) = get("MEMHOG_TOUCH_PCT") {
            c.memhog.touch_pct = at_most("MEMHOG_TOUCH_PCT", &v, 100)? as u8;
        }
        Ok(c)
    }
}

fn positive(var: &'static str, value: &str) -> Result<usize, Error> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(var, value, "expected a positive integer")),
    }
}

/// A duration in milliseconds: a finite number in `[0, MAX_MS]`.
fn millis(var: &'static str, value: &str) -> Result<f64, Error> {
    match value.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=MAX_MS).contains(&ms) => Ok(ms),
        _ => Err(bad(
            var,
            value,
            &format!("not a number of milliseconds between 0 and {MAX_MS}"),
        )),
    }
}

/// A non-negative integer no larger than `max`.
fn at_most(var: &'static str, value: &str, max: u64) -> Result<u64, Error> {
    match value.trim().parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(
            var,
            value,
            &format!("expected an integer between 0 and {max}"),
        )),
    }
}

fn mode(var: &'static str, value: &str) -> Result<SpinMode, Error> {
    match value.trim() {
        "busy" => Ok(SpinMode::Busy),
        "cpu" => Ok(SpinMode::Cpu),
        "sleep" => Ok(SpinMode::Sleep),
        _ => Err(bad(var, value, "expected busy, cpu or sleep")),
    }
}

fn bad(var: &'static str, value: &str, reason: &str) -> Error {
    Error::BadEnv {
        var,
        value: value.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        assert_eq!(from(&[]).unwrap(), Config::default());
        assert_eq!(from(&[("SPLIT_PARTS", "")]).unwrap(), Config::default());
    }

    #[test]
    fn reads_every_variable() {
        let c = from(&[
            ("SPLIT_PARTS", "8"),
            ("TOP_N", "3"),
            ("CSV_BATCH_ROWS", "20"),
            ("GROUP_BY", " direction "),
            ("REPORT_FIELDS", "nswprice, vicprice,,"),
            ("SPIN_MS", "2.5"),
            ("SPIN_MODE", "sleep"),
            ("BENCH_MS", " 1.5 "),
            ("BENCH_MEMORY_MB", "3"),
            ("BENCH_OUTPUT_BYTES", "100"),
            ("BENCH_MODE", "cpu"),
            ("MEMHOG_MIB", "64"),
            ("MEMHOG_SEED", "18446744073709551615"),
            ("MEMHOG_TOUCH_PCT", " 10 "),
        ])
        .unwrap();
        assert_eq!(c.split, SplitMode::Parts(8));
        assert_eq!(c.top_n, 3);
        assert_eq!(c.csv_batch_rows, 20);
        assert_eq!(c.group_by.as_deref(), Some("direction"));
        assert_eq!(
            c.report_fields,
            Some(vec!["nswprice".to_string(), "vicprice".to_string()])
        );
        assert_eq!(c.spin_ms, 2.5);
        assert_eq!(c.spin_mode, SpinMode::Sleep);
        assert_eq!(
            c.bench,
            BenchConfig {
                ms: 1.5,
                memory_mb: 3,
                output_bytes: 100,
                mode: SpinMode::Cpu,
            }
        );
        assert_eq!(
            c.memhog,
            MemhogConfig {
                mib: 64,
                seed: u64::MAX,
                touch_pct: 10,
            }
        );
        // SPLIT_CHUNK_BYTES wins over SPLIT_PARTS.
        let c = from(&[("SPLIT_PARTS", "8"), ("SPLIT_CHUNK_BYTES", "1024")]).unwrap();
        assert_eq!(c.split, SplitMode::ChunkBytes(1024));
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("SPLIT_PARTS", "0"),
            ("SPLIT_PARTS", "four"),
            ("SPLIT_CHUNK_BYTES", "-1"),
            ("TOP_N", "x"),
            ("CSV_BATCH_ROWS", "0"),
            ("SPIN_MS", "-3"),
            ("SPIN_MS", "NaN"),
            ("SPIN_MODE", "fast"),
            ("BENCH_MS", "-1"),
            ("BENCH_MS", "inf"),
            ("BENCH_MS", "ten"),
            ("BENCH_MS", "3600001"),
            ("BENCH_MEMORY_MB", "-1"),
            ("BENCH_MEMORY_MB", "1.5"),
            ("BENCH_MEMORY_MB", "65537"),
            ("BENCH_OUTPUT_BYTES", "1k"),
            ("BENCH_OUTPUT_BYTES", "1073741825"),
            ("BENCH_MODE", "Busy"),
            ("MEMHOG_MIB", "65537"),
            ("MEMHOG_MIB", "-1"),
            ("MEMHOG_SEED", "18446744073709551616"),
            ("MEMHOG_SEED", "seed"),
            ("MEMHOG_TOUCH_PCT", "101"),
            ("MEMHOG_TOUCH_PCT", "50%"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
