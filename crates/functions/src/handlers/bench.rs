//! `bench`: one node of a synthesised benchmark DAG.
//!
//! Unlike `spin`, everything is fixed per Service by the environment, so the
//! same function can stand for any node: `BENCH_MS` (float, default 0),
//! `BENCH_MEMORY_MB` (default 0), `BENCH_OUTPUT_BYTES` (default 0) and
//! `BENCH_MODE` (`busy`, the default: wall-clock spinning; `cpu`: a fixed
//! amount of CPU time; or `sleep`). Each request reads the
//! whole body (the outputs of the upstream steps; only its length is used),
//! burns CPU for `BENCH_MS` (or sleeps, in `sleep` mode), touches
//! `BENCH_MEMORY_MB` MiB, and answers exactly `BENCH_OUTPUT_BYTES` bytes of
//! `x` as `application/octet-stream`.

use std::time::Duration;

use bytes::Bytes;

use super::spin::{burn, touch_memory, SpinMode};

/// Response header carrying the request body's length (what the node received).
pub const INPUT_BYTES_HEADER: &str = "x-bench-input-bytes";

/// The byte every `bench` response body is made of.
pub const OUTPUT_BYTE: u8 = b'x';

/// Settings of `bench`, read once from the environment (see [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchConfig {
    /// `BENCH_MS`: work per request in milliseconds (finite, `0..=MAX_MS`).
    pub ms: f64,
    /// `BENCH_MEMORY_MB`: MiB allocated and touched per request.
    pub memory_mb: u64,
    /// `BENCH_OUTPUT_BYTES`: size of every response body.
    pub output_bytes: u64,
    /// `BENCH_MODE`: burn CPU (`busy`) or sleep on a timer (`sleep`).
    pub mode: SpinMode,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            ms: 0.0,
            memory_mb: 0,
            output_bytes: 0,
            mode: SpinMode::Busy,
        }
    }
}

impl BenchConfig {
    /// `BENCH_MS` as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.ms.max(0.0) / 1000.0)
    }

    /// Whether a request needs no work besides answering.
    pub fn is_trivial(&self) -> bool {
        self.duration().is_zero() && self.memory_mb == 0
    }

    /// Whether a request has synchronous work for the blocking pool (CPU or memory).
    pub fn needs_blocking_work(&self) -> bool {
        self.memory_mb > 0 || (self.mode != SpinMode::Sleep && !self.duration().is_zero())
    }

    /// The response body: exactly `output_bytes` bytes. Built once and shared
    /// by every response (cloning [`Bytes`] does not copy).
    pub fn output(&self) -> Bytes {
        let n = usize::try_from(self.output_bytes).expect("BENCH_OUTPUT_BYTES fits in memory");
        Bytes::from(vec![OUTPUT_BYTE; n])
    }
}

/// The synchronous work of one request: touches `memory_mb` MiB and, in busy
/// mode, burns CPU for `ms`. The memory stays allocated until the returned
/// value is dropped (in sleep mode, keep it across the sleep).
pub fn work(config: &BenchConfig) -> Vec<u8> {
    let mem = touch_memory(config.memory_mb);
    burn(config.mode, config.duration());
    mem
}

#[cfg(test)]
mod tests {
    use super::super::spin::thread_cpu_time;
    use super::*;
    use std::time::Instant;

    #[test]
    fn defaults_do_nothing() {
        let c = BenchConfig::default();
        assert!(c.is_trivial() && !c.needs_blocking_work());
        assert_eq!(c.duration(), Duration::ZERO);
        assert!(c.output().is_empty());
        assert!(work(&c).is_empty());
    }

    #[test]
    fn output_has_the_exact_size() {
        let c = BenchConfig {
            output_bytes: 4097,
            ..BenchConfig::default()
        };
        let out = c.output();
        assert_eq!(out.len(), 4097);
        assert!(out.iter().all(|&b| b == OUTPUT_BYTE));
        // Output alone is no work.
        assert!(c.is_trivial());
    }

    #[test]
    fn which_work_is_blocking() {
        let busy = BenchConfig {
            ms: 0.5,
            ..BenchConfig::default()
        };
        assert_eq!(busy.duration(), Duration::from_micros(500));
        assert!(!busy.is_trivial() && busy.needs_blocking_work());
        let sleep = BenchConfig {
            mode: SpinMode::Sleep,
            ..busy
        };
        assert!(!sleep.is_trivial() && !sleep.needs_blocking_work());
        let sleep_mem = BenchConfig {
            memory_mb: 1,
            ..sleep
        };
        assert!(sleep_mem.needs_blocking_work());
    }

    #[test]
    fn work_burns_cpu_and_touches_memory() {
        let c = BenchConfig {
            ms: 15.0,
            memory_mb: 2,
            ..BenchConfig::default()
        };
        let start = Instant::now();
        let mem = work(&c);
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert_eq!(mem.len(), 2 << 20);
        assert_eq!(mem.iter().filter(|&&b| b == 1).count(), 512);
        // Sleep mode leaves the waiting to the caller.
        let c = BenchConfig {
            ms: 10_000.0,
            mode: SpinMode::Sleep,
            ..BenchConfig::default()
        };
        let start = Instant::now();
        assert!(work(&c).is_empty());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cpu_mode_is_a_fixed_amount_of_cpu_time_however_many_share_the_cores() {
        let c = BenchConfig {
            ms: 40.0,
            mode: SpinMode::Cpu,
            ..BenchConfig::default()
        };
        assert!(c.needs_blocking_work());
        // More spinners than this machine has cores: each still uses its
        // 40 ms of CPU (a wall-clock spin would use less when they share).
        let n = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let used: Vec<Duration> = (0..n)
            .map(|_| {
                std::thread::spawn(move || {
                    let before = thread_cpu_time();
                    work(&c);
                    thread_cpu_time() - before
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for u in used {
            assert!(u >= Duration::from_millis(40), "{u:?}");
        }
    }
}
