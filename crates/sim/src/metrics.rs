//! What a simulation counts, and the report it ends with.

use std::time::Duration;

use serde::Serialize;
use stratus_scaling::Micros;

use crate::config::SimConfig;

const MINUTE: Micros = 60_000_000;

/// One minute of the replayed window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MinuteRow {
    pub arrivals: u64,
    /// Requests granted an instance in this minute, and how many of them
    /// waited for a cold start.
    pub granted: u64,
    pub cold: u64,
    /// Sandboxes created (placed and started).
    pub creations: u64,
    /// Most creations within one second of this minute.
    pub peak_creations_per_s: u64,
    /// Memory held by ready instances without a request, integrated (MiB·µs).
    #[serde(skip)]
    pub idle_mib_us: u128,
}

/// Running counters (the engine's).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub arrivals: u64,
    pub served: u64,
    pub dropped: u64,
    pub cold: u64,
    pub placed: u64,
    pub unplaced: u64,
    pub stops: u64,
    pub prewarms: u64,
    pub events: u64,
    pub plan_calls: u64,
    pub plan_cpu: Duration,
    pub scaling_calls: u64,
    pub scaling_cpu: Duration,
    pub idle_mib_us: u128,
    pub minutes: Vec<MinuteRow>,
    /// Per function, in the simulation's order.
    pub per_function: Vec<FunctionCounts>,
    /// Creations in each second of the window.
    per_second: Vec<u32>,
}

/// One function's sandboxes created and requests that waited for a start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FunctionCounts {
    pub creations: u64,
    pub cold: u64,
}

impl Metrics {
    pub fn new(minutes: u32, functions: usize) -> Metrics {
        Metrics {
            minutes: vec![MinuteRow::default(); minutes as usize],
            per_function: vec![FunctionCounts::default(); functions],
            per_second: vec![0; minutes as usize * 60],
            ..Metrics::default()
        }
    }

    pub fn creation(&mut self, now: Micros, start_minute: u32) {
        let Some(s) = (now / 1_000_000).checked_sub(start_minute as Micros * 60) else {
            return;
        };
        if let Some(c) = self.per_second.get_mut(s as usize) {
            *c += 1;
            let row = &mut self.minutes[s as usize / 60];
            row.creations += 1;
            row.peak_creations_per_s = row.peak_creations_per_s.max(*c as u64);
        }
    }

    pub fn finish(self, cfg: &SimConfig, alive_at_end: u64) -> Report {
        let secs = cfg.minutes as f64 * 60.0;
        let rate = |n: u64, d: Duration| {
            let s = d.as_secs_f64();
            (s > 0.0).then(|| n as f64 / s)
        };
        Report {
            arrivals: self.arrivals,
            served: self.served,
            dropped: self.dropped,
            in_flight_at_end: self.arrivals - self.served - self.dropped,
            cold_starts: self.cold,
            cold_start_fraction: self.cold as f64 / self.served.max(1) as f64,
            sandbox_creations: self.placed,
            creations_per_s_mean: self.placed as f64 / secs,
            creations_per_s_peak: self.per_second.iter().copied().max().unwrap_or(0) as u64,
            unplaced: self.unplaced,
            stops: self.stops,
            prewarms: self.prewarms,
            alive_at_end,
            idle_memory_gib_s: self.idle_mib_us as f64 / 1024.0 / 1e6,
            events: self.events,
            timing: Timing {
                plan_calls: self.plan_calls,
                plan_cpu_s: self.plan_cpu.as_secs_f64(),
                placements_per_cpu_s: rate(self.placed, self.plan_cpu),
                scaling_calls: self.scaling_calls,
                scaling_cpu_s: self.scaling_cpu.as_secs_f64(),
                scaling_decisions_per_cpu_s: rate(self.scaling_calls, self.scaling_cpu),
            },
            minutes: self.minutes,
            per_function: self.per_function,
        }
    }
}

/// The scheduler cores' CPU time (varies run to run; the rest of the
/// report does not).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// `plan` calls, and the CPU time in them (demand building included).
    pub plan_calls: u64,
    pub plan_cpu_s: f64,
    /// Sandboxes placed per CPU second of `plan`.
    pub placements_per_cpu_s: Option<f64>,
    /// `PoolState` and keep-alive policy calls, and their CPU time.
    pub scaling_calls: u64,
    pub scaling_cpu_s: f64,
    pub scaling_decisions_per_cpu_s: Option<f64>,
}

/// What a simulation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub arrivals: u64,
    /// Requests that ran to completion.
    pub served: u64,
    /// Requests refused (queue bound, waited too long, no room anywhere).
    pub dropped: u64,
    /// Always 0: the run continues past the window until nothing is in flight.
    pub in_flight_at_end: u64,
    /// Served requests that waited for a sandbox to start.
    pub cold_starts: u64,
    pub cold_start_fraction: f64,
    pub sandbox_creations: u64,
    pub creations_per_s_mean: f64,
    pub creations_per_s_peak: u64,
    /// Sandboxes wanted that no node had room for.
    pub unplaced: u64,
    pub stops: u64,
    pub prewarms: u64,
    pub alive_at_end: u64,
    /// Memory held by ready instances serving nothing, over the run.
    pub idle_memory_gib_s: f64,
    pub events: u64,
    pub timing: Timing,
    #[serde(skip)]
    pub minutes: Vec<MinuteRow>,
    /// Per function, in the order the simulation was given them.
    #[serde(skip)]
    pub per_function: Vec<FunctionCounts>,
}

impl MinuteRow {
    /// Idle memory over this minute, GiB·s.
    pub fn idle_gib_s(&self) -> f64 {
        self.idle_mib_us as f64 / 1024.0 / 1e6
    }

    /// Cold starts per granted request in this minute.
    pub fn cold_fraction(&self) -> f64 {
        self.cold as f64 / self.granted.max(1) as f64
    }

    /// Mean creations per second over this minute.
    pub fn creations_per_s(&self) -> f64 {
        self.creations as f64 * 1e6 / MINUTE as f64
    }
}
