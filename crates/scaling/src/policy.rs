//! Keep-alive and pre-warming policies: how long an idle function keeps an
//! instance, and whether one is loaded again before the next request.
//!
//! A driver tells the policy each idle time it observes (from the moment a
//! function's last request finished to the next request's arrival) with
//! [`KeepAlive::observe`], and asks it for the [`Windows`] to apply each time
//! the function goes idle:
//!
//! ```text
//! last request done ──► pre-warm window ──► keep-alive window ──► unloaded
//!   (idle from here)    (no instance kept)   (one instance loaded)
//! pre-warm = 0: the instance stays loaded for the keep-alive window
//! ```
//!
//! Policies:
//! - [`Knative`]: the activator's idle window (the gateway's default is
//!   60 s, `idle_timeout`), no pre-warming. The gateway runs this one.
//! - [`Fixed`]: a fixed keep-alive after each execution (AWS Lambda keeps
//!   instances ~10 minutes, Azure Functions 20), no pre-warming.
//! - [`Hybrid`]: the hybrid histogram policy of M. Shahrad et al.,
//!   "Serverless in the Wild" (USENIX ATC 2020), implemented from the
//!   paper's description: a per-function histogram of idle times in 1-minute
//!   bins over a bounded range (4 hours); when the histogram is
//!   representative (the coefficient of variation of its bin counts above a
//!   threshold, 2), the pre-warm window is its head (5th percentile, less a
//!   10% margin) and the keep-alive window reaches its tail (99th
//!   percentile, plus 10%); otherwise (too few idle times, too many beyond
//!   the range, or a flat histogram) it falls back to keeping the instance
//!   for the whole range. The paper forecasts the next idle time with ARIMA
//!   for functions whose idle times are mostly beyond the range; that
//!   branch is not implemented here (such functions get the fallback).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::pool::Micros;

const SECOND: Micros = 1_000_000;
const MINUTE: Micros = 60 * SECOND;

/// What to do from the moment a function goes idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// How long to run no idle instance before loading one again (0: keep
    /// the instance that just finished).
    pub prewarm: Micros,
    /// How long to keep the (re)loaded instance without requests.
    pub keep_alive: Micros,
}

/// A keep-alive and pre-warming policy for one function.
pub trait KeepAlive: fmt::Debug + Send {
    /// One idle time: the function's last request finished `idle` µs before
    /// the next one arrived.
    fn observe(&mut self, idle: Micros);
    /// The windows to apply now that the function goes idle.
    fn windows(&self) -> Windows;
}

/// Knative's behaviour: an instance idle for the window is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knative {
    pub idle: Micros,
}

impl KeepAlive for Knative {
    fn observe(&mut self, _idle: Micros) {}
    fn windows(&self) -> Windows {
        Windows {
            prewarm: 0,
            keep_alive: self.idle,
        }
    }
}

/// A fixed keep-alive after each execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub keep_alive: Micros,
}

impl KeepAlive for Fixed {
    fn observe(&mut self, _idle: Micros) {}
    fn windows(&self) -> Windows {
        Windows {
            prewarm: 0,
            keep_alive: self.keep_alive,
        }
    }
}

/// The hybrid histogram policy's parameters (defaults: the paper's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridConfig {
    /// Width of one histogram bin (1 minute).
    pub bin: Micros,
    /// The histogram's range (4 hours); longer idle times are out of bounds.
    pub range: Micros,
    /// Percentile of idle times at which pre-warming ends (5).
    pub head_percentile: f64,
    /// Percentile of idle times the keep-alive window covers (99).
    pub tail_percentile: f64,
    /// Safety margin: the head is cut and the tail stretched by it (0.1).
    pub margin: f64,
    /// The histogram is representative when the coefficient of variation
    /// of its bin counts is above this (2).
    pub cv_threshold: f64,
    /// Fewer idle times than this: not representative yet (5).
    pub min_samples: u64,
    /// More than this share of idle times out of bounds: not representative (0.5).
    pub max_out_of_bounds: f64,
}

impl Default for HybridConfig {
    fn default() -> Self {
        HybridConfig {
            bin: MINUTE,
            range: 240 * MINUTE,
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.1,
            cv_threshold: 2.0,
            min_samples: 5,
            max_out_of_bounds: 0.5,
        }
    }
}

/// The hybrid histogram policy's state for one function.
#[derive(Debug, Clone)]
pub struct Hybrid {
    config: HybridConfig,
    bins: Vec<u64>,
    in_range: u64,
    out_of_bounds: u64,
}

impl Hybrid {
    pub fn new(config: HybridConfig) -> Hybrid {
        let n = config.range.div_ceil(config.bin.max(1)).max(1) as usize;
        Hybrid {
            config,
            bins: vec![0; n],
            in_range: 0,
            out_of_bounds: 0,
        }
    }

    /// The fallback: no pre-warming, kept for the whole range.
    fn conservative(&self) -> Windows {
        Windows {
            prewarm: 0,
            keep_alive: self.config.range,
        }
    }

    /// Whether the bin counts vary enough to show a pattern.
    fn representative(&self) -> bool {
        let total = self.in_range + self.out_of_bounds;
        if total < self.config.min_samples || self.in_range == 0 {
            return false;
        }
        if self.out_of_bounds as f64 > self.config.max_out_of_bounds * total as f64 {
            return false;
        }
        let n = self.bins.len() as f64;
        let mean = self.in_range as f64 / n;
        let var = self
            .bins
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean > self.config.cv_threshold
    }

    /// The index of the bin holding the `p`-th percentile of in-range idle times.
    fn percentile_bin(&self, p: f64) -> usize {
        let want = ((p / 100.0) * self.in_range as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen >= want {
                return i;
            }
        }
        self.bins.len() - 1
    }
}

impl KeepAlive for Hybrid {
    fn observe(&mut self, idle: Micros) {
        if idle >= self.config.range {
            self.out_of_bounds += 1;
        } else {
            self.bins[(idle / self.config.bin.max(1)) as usize] += 1;
            self.in_range += 1;
        }
    }

    fn windows(&self) -> Windows {
        if !self.representative() {
            return self.conservative();
        }
        let bin = self.config.bin as f64;
        // The head bin's lower edge, the tail bin's upper edge.
        let head = self.percentile_bin(self.config.head_percentile) as f64 * bin;
        let tail = (self.percentile_bin(self.config.tail_percentile) + 1) as f64 * bin;
        let prewarm = (head * (1.0 - self.config.margin)).max(0.0) as Micros;
        let end = (tail * (1.0 + self.config.margin)) as Micros;
        Windows {
            prewarm,
            keep_alive: end.saturating_sub(prewarm).max(self.config.bin),
        }
    }
}

/// A policy by name, as the CLI gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicySpec {
    /// `knative` (60 s) or `knative:DURATION`.
    Knative { idle: Micros },
    /// `fixed:DURATION` (`fixed` alone: 10 minutes).
    Fixed { keep_alive: Micros },
    /// `hybrid` (1-minute bins over 4 hours), or `hybrid:BIN`: bins of
    /// BIN over 240 of them (for traces replayed faster than real time).
    Hybrid(HybridConfig),
}

/// A policy name that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown keep-alive policy {given:?}: {why}; expected knative[:DURATION], fixed:DURATION or hybrid[:BIN] (DURATION and BIN as 500ms, 30s, 10m, 1h)")]
pub struct PolicyError {
    pub given: String,
    pub why: String,
}

impl PolicySpec {
    /// The policy's state for one function.
    pub fn build(&self) -> Box<dyn KeepAlive> {
        match *self {
            PolicySpec::Knative { idle } => Box::new(Knative { idle }),
            PolicySpec::Fixed { keep_alive } => Box::new(Fixed { keep_alive }),
            PolicySpec::Hybrid(c) => Box::new(Hybrid::new(c)),
        }
    }

    /// The idle window a pool starts with, before any idle time is seen.
    pub fn initial(&self) -> Windows {
        self.build().windows()
    }
}

impl FromStr for PolicySpec {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| PolicyError {
            given: s.into(),
            why: why.into(),
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let dur = |default: Micros| -> Result<Micros, PolicyError> {
            match arg {
                None => Ok(default),
                Some(a) => parse_duration(a)
                    .and_then(|d| Micros::try_from(d.as_micros()).ok())
                    .ok_or_else(|| err(&format!("{a:?} is not a duration"))),
            }
        };
        match name {
            "knative" => Ok(PolicySpec::Knative {
                idle: dur(60 * SECOND)?,
            }),
            "fixed" => Ok(PolicySpec::Fixed {
                keep_alive: dur(10 * MINUTE)?,
            }),
            "hybrid" => {
                let d = HybridConfig::default();
                let bin = dur(d.bin)?;
                if bin == 0 {
                    return Err(err("the bin must be longer than 0"));
                }
                let bins = d.range / d.bin;
                Ok(PolicySpec::Hybrid(HybridConfig {
                    bin,
                    range: bin.saturating_mul(bins),
                    ..d
                }))
            }
            _ => Err(err("no such policy")),
        }
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Knative { idle } => write!(f, "knative:{}", fmt_duration(*idle)),
            PolicySpec::Fixed { keep_alive } => write!(f, "fixed:{}", fmt_duration(*keep_alive)),
            PolicySpec::Hybrid(c) if c.bin == MINUTE => f.write_str("hybrid"),
            PolicySpec::Hybrid(c) => write!(f, "hybrid:{}", fmt_duration(c.bin)),
        }
    }
}

/// `500ms`, `30s`, `10m`, `1h` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

fn fmt_duration(us: Micros) -> String {
    let ms = us / 1000;
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_policies() {
        for (given, shown) in [
            ("knative", "knative:1m"),
            ("knative:30s", "knative:30s"),
            ("fixed:10m", "fixed:10m"),
            ("fixed", "fixed:10m"),
            ("fixed:1500ms", "fixed:1500ms"),
            ("hybrid", "hybrid"),
            ("hybrid:1m", "hybrid"),
            ("hybrid:15s", "hybrid:15s"),
        ] {
            let p: PolicySpec = given.parse().unwrap();
            assert_eq!(p.to_string(), shown);
            assert_eq!(p.to_string().parse::<PolicySpec>().unwrap(), p);
        }
        for bad in [
            "lru",
            "fixed:10",
            "fixed:m",
            "fixed:-1m",
            "hybrid:0s",
            "hybrid:1",
            "knative:1d",
            "",
        ] {
            let e = bad.parse::<PolicySpec>().unwrap_err().to_string();
            assert!(e.contains("expected knative"), "{bad}: {e}");
        }
    }

    #[test]
    fn hybrid_bins_scale_with_their_range() {
        let PolicySpec::Hybrid(c) = "hybrid:15s".parse().unwrap() else {
            panic!("not hybrid");
        };
        assert_eq!((c.bin, c.range), (15 * SECOND, 240 * 15 * SECOND));
        assert_eq!(c.head_percentile, HybridConfig::default().head_percentile);
    }

    #[test]
    fn fixed_and_knative_never_prewarm() {
        let mut f = PolicySpec::Fixed {
            keep_alive: 10 * MINUTE,
        }
        .build();
        f.observe(3 * MINUTE);
        assert_eq!(
            f.windows(),
            Windows {
                prewarm: 0,
                keep_alive: 10 * MINUTE
            }
        );
        assert_eq!(
            "knative"
                .parse::<PolicySpec>()
                .unwrap()
                .initial()
                .keep_alive,
            MINUTE
        );
    }

    #[test]
    fn hybrid_prewarms_a_periodic_function() {
        // Idle for 30 minutes, again and again: pre-warm just before, keep briefly.
        let mut h = Hybrid::new(HybridConfig::default());
        assert_eq!(
            h.windows().keep_alive,
            240 * MINUTE,
            "no data: the whole range"
        );
        for _ in 0..20 {
            h.observe(30 * MINUTE + 10 * SECOND);
        }
        let w = h.windows();
        assert_eq!(w.prewarm, 27 * MINUTE, "head bin 30 m less 10%");
        assert_eq!(
            w.prewarm + w.keep_alive,
            34 * MINUTE + 6 * SECOND,
            "tail 31 m plus 10%"
        );
    }

    #[test]
    fn hybrid_falls_back_when_flat_sparse_or_out_of_bounds() {
        let c = HybridConfig::default();
        // Spread evenly over the range: a flat histogram.
        let mut flat = Hybrid::new(c);
        for i in 0..240 {
            flat.observe(i * MINUTE);
        }
        assert_eq!(flat.windows().prewarm, 0);
        assert_eq!(flat.windows().keep_alive, c.range);
        // Too few.
        let mut few = Hybrid::new(c);
        for _ in 0..4 {
            few.observe(30 * MINUTE);
        }
        assert_eq!(few.windows().keep_alive, c.range);
        // Mostly beyond the range (the paper's ARIMA case).
        let mut oob = Hybrid::new(c);
        for _ in 0..10 {
            oob.observe(5 * 60 * MINUTE);
        }
        for _ in 0..5 {
            oob.observe(30 * MINUTE);
        }
        assert_eq!(oob.windows().keep_alive, c.range);
    }

    #[test]
    fn hybrid_with_head_in_the_first_bin_keeps_the_instance() {
        let mut h = Hybrid::new(HybridConfig::default());
        for _ in 0..200 {
            h.observe(20 * SECOND);
        }
        h.observe(5 * MINUTE);
        let w = h.windows();
        assert_eq!(w.prewarm, 0);
        assert_eq!(
            w.keep_alive,
            66 * SECOND,
            "99th percentile in bin 0: 1 m + 10%"
        );
    }
}
