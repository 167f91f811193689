//! `spin`: a synthetic workload (CPU, sleep, memory, output size, crash).
//!
//! Request body (every field optional; an empty body is `{}`):
//! `{"ms": 10, "mode": "busy"|"cpu"|"sleep", "memory_mb": 0, "output_bytes": null, "crash": false}`.
//! Missing `ms`/`mode` come from `SPIN_MS` (default 0) and `SPIN_MODE` (default busy).
//! With `crash: true` the process exits with status 3 after `ms` of work,
//! without responding (so `{"crash":true}` crashes at once).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::BadInput;
use crate::Config;

/// Upper bounds that keep a typo from taking the machine down.
pub const MAX_MS: f64 = 3_600_000.0;
pub const MAX_MEMORY_MB: u64 = 64 * 1024;
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// Exit status of a process that crashes on purpose.
pub const CRASH_EXIT_CODE: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpinMode {
    /// Burn CPU in a loop for `ms` of wall-clock time: with more spinners
    /// than cores, each gets a share of a core and still ends on time.
    Busy,
    /// Burn CPU until the thread has used `ms` of CPU time: a fixed amount
    /// of work, which takes longer when spinners share the cores.
    Cpu,
    /// Sleep on a timer (no CPU).
    Sleep,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    ms: Option<serde_json::Number>,
    mode: Option<SpinMode>,
    #[serde(default)]
    memory_mb: u64,
    output_bytes: Option<u64>,
    #[serde(default)]
    crash: bool,
}

/// A validated `spin` request.
#[derive(Debug, Clone, PartialEq)]
pub struct SpinRequest {
    /// The `ms` value as given (echoed in the response), or the default.
    pub ms: serde_json::Number,
    pub duration: Duration,
    pub mode: SpinMode,
    pub memory_mb: u64,
    pub output_bytes: Option<u64>,
    pub crash: bool,
}

impl SpinRequest {
    /// Whether there is any work to do before responding.
    pub fn is_trivial(&self) -> bool {
        self.duration.is_zero() && self.memory_mb == 0
    }
}

/// Parses and validates a `spin` request body.
pub fn parse(body: &[u8], config: &Config) -> Result<SpinRequest, BadInput> {
    let raw: RawRequest = if body.trim_ascii().is_empty() {
        RawRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| BadInput(format!("invalid spin request: {e}")))?
    };
    let ms = match raw.ms {
        Some(n) => n,
        None if config.spin_ms.fract() == 0.0 && config.spin_ms <= MAX_MS => {
            serde_json::Number::from(config.spin_ms as u64)
        }
        None => serde_json::Number::from_f64(config.spin_ms).expect("SPIN_MS is finite"),
    };
    let ms_f = ms.as_f64().unwrap_or(f64::NAN);
    if !(0.0..=MAX_MS).contains(&ms_f) {
        return Err(BadInput(format!(
            "ms must be between 0 and {MAX_MS}, got {ms}"
        )));
    }
    if raw.memory_mb > MAX_MEMORY_MB {
        return Err(BadInput(format!(
            "memory_mb must be at most {MAX_MEMORY_MB}, got {}",
            raw.memory_mb
        )));
    }
    if raw.output_bytes.is_some_and(|n| n > MAX_OUTPUT_BYTES) {
        return Err(BadInput(format!(
            "output_bytes must be at most {MAX_OUTPUT_BYTES}"
        )));
    }
    Ok(SpinRequest {
        duration: Duration::from_secs_f64(ms_f / 1000.0),
        ms,
        mode: raw.mode.unwrap_or(config.spin_mode),
        memory_mb: raw.memory_mb,
        output_bytes: raw.output_bytes,
        crash: raw.crash,
    })
}

/// This thread's CPU time so far.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Burns CPU (a real loop, not a sleep) until `done()`, asked every 256
/// rounds. Returns a value derived from the work so it cannot be optimized
/// away.
fn spin_until(mut done: impl FnMut() -> bool) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !done() {
        for _ in 0..256 {
            x = black_box(
                x.wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
    x
}

/// Burns CPU for `d` of wall-clock time.
pub fn busy_spin(d: Duration) -> u64 {
    let start = Instant::now();
    spin_until(|| start.elapsed() >= d)
}

/// Burns CPU until this thread has used `d` more of CPU time.
pub fn cpu_spin(d: Duration) -> u64 {
    let end = thread_cpu_time() + d;
    spin_until(|| thread_cpu_time() >= end)
}

/// The CPU work of `mode` for `d`, if it has any.
pub fn burn(mode: SpinMode, d: Duration) {
    match mode {
        SpinMode::Busy => {
            black_box(busy_spin(d));
        }
        SpinMode::Cpu => {
            black_box(cpu_spin(d));
        }
        SpinMode::Sleep => {}
    }
}

/// Allocates `mb` MiB and writes one byte per 4 KiB page so it is really resident.
pub fn touch_memory(mb: u64) -> Vec<u8> {
    let len = usize::try_from(mb)
        .unwrap_or(usize::MAX)
        .saturating_mul(1 << 20);
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        v[i] = 1;
    }
    black_box(&mut v);
    v
}

/// Does the synchronous work of a request: touches memory and, in busy mode,
/// burns CPU; the memory stays allocated until the returned value is dropped
/// (in sleep mode, keep it across the sleep).
pub fn work(req: &SpinRequest) -> Vec<u8> {
    let mem = touch_memory(req.memory_mb);
    burn(req.mode, req.duration);
    mem
}

#[derive(Serialize)]
struct Response<'a> {
    pid: u32,
    inflight_at_start: u64,
    max_inflight: u64,
    ms: &'a serde_json::Number,
    mode: SpinMode,
    elapsed_ms: f64,
}

/// The response body: `output_bytes` bytes of `x` if set, else the JSON report.
/// Returns the body and whether it is JSON.
pub fn response(
    req: &SpinRequest,
    pid: u32,
    inflight_at_start: u64,
    max_inflight: u64,
    elapsed: Duration,
) -> (Vec<u8>, bool) {
    if let Some(n) = req.output_bytes {
        return (vec![b'x'; n as usize], false);
    }
    let r = Response {
        pid,
        inflight_at_start,
        max_inflight,
        ms: &req.ms,
        mode: req.mode,
        elapsed_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
    };
    (serde_json::to_vec(&r).expect("response serializes"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_and_fields() {
        let c = Config::default();
        let r = parse(b"", &c).unwrap();
        assert_eq!(r.duration, Duration::ZERO);
        assert_eq!(r.mode, SpinMode::Busy);
        assert!(r.is_trivial() && !r.crash && r.output_bytes.is_none());
        let r = parse(
            br#"{"ms": 2.5, "mode": "sleep", "memory_mb": 3, "output_bytes": 7, "crash": true}"#,
            &c,
        )
        .unwrap();
        assert_eq!(r.duration, Duration::from_micros(2500));
        assert_eq!(r.mode, SpinMode::Sleep);
        assert_eq!((r.memory_mb, r.output_bytes, r.crash), (3, Some(7), true));
        // Defaults from the environment.
        let c = Config {
            spin_ms: 4.0,
            spin_mode: SpinMode::Sleep,
            ..Config::default()
        };
        let r = parse(b"{}", &c).unwrap();
        assert_eq!(
            (r.duration, r.mode),
            (Duration::from_millis(4), SpinMode::Sleep)
        );
    }

    #[test]
    fn parse_rejects_bad_requests() {
        let c = Config::default();
        for (body, needle) in [
            (&b"{"[..], "invalid spin request"),
            (br#"{"ms": -1}"#, "ms must be"),
            (br#"{"ms": "10"}"#, "invalid spin request"),
            (br#"{"mode": "fast"}"#, "unknown variant"),
            (br#"{"msec": 10}"#, "unknown field"),
            (br#"{"memory_mb": 1000000}"#, "memory_mb must be"),
            (
                br#"{"output_bytes": 9999999999999}"#,
                "output_bytes must be",
            ),
        ] {
            let err = parse(body, &c).unwrap_err();
            assert!(err.0.contains(needle), "{body:?}: {err}");
        }
    }

    #[test]
    fn busy_spin_takes_the_time() {
        let start = Instant::now();
        busy_spin(Duration::from_millis(20));
        let e = start.elapsed();
        assert!(e >= Duration::from_millis(20), "{e:?}");
        assert!(busy_spin(Duration::ZERO) != 0);
    }

    #[test]
    fn touch_memory_allocates() {
        let v = touch_memory(2);
        assert_eq!(v.len(), 2 << 20);
        assert_eq!(v.iter().filter(|&&b| b == 1).count(), 512);
        assert!(touch_memory(0).is_empty());
    }

    #[test]
    fn response_formats() {
        let c = Config::default();
        let r = parse(br#"{"ms": 10}"#, &c).unwrap();
        let (body, json) = response(&r, 42, 1, 3, Duration::from_micros(10_250));
        assert!(json);
        assert_eq!(
            body,
            br#"{"pid":42,"inflight_at_start":1,"max_inflight":3,"ms":10,"mode":"busy","elapsed_ms":10.25}"#
        );
        let r = parse(br#"{"output_bytes": 5}"#, &c).unwrap();
        assert_eq!(
            response(&r, 1, 1, 1, Duration::ZERO),
            (b"xxxxx".to_vec(), false)
        );
    }
}
