//! The functions a simulation replays, from the Azure Functions 2019 trace
//! (pure: the files are read by [`crate::io`]).

use stratus_scaling::Micros;
use stratus_synth::trace::{
    join, parse_durations, parse_invocations, parse_memory, DurationPercentiles, Selection,
    TraceError, DEFAULT_MEMORY_MB,
};

/// One function of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// `HashFunction`, shortened to its first 12 characters in reports.
    pub name: String,
    /// Allocated memory: the app's average (`AverageAllocatedMb`), or
    /// [`DEFAULT_MEMORY_MB`] when the app has no row.
    pub memory_mb: u64,
    /// Execution times (cold starts excluded), sampled per request.
    pub duration: DurationPercentiles,
    /// Invocations in each minute of the trace.
    pub per_minute: Vec<u32>,
}

/// The trace's three files as text, with the names errors cite.
#[derive(Debug, Clone, Copy)]
pub struct TraceText<'a> {
    pub invocations: (&'a str, &'a str),
    pub durations: (&'a str, &'a str),
    pub memory: (&'a str, &'a str),
}

/// Parses and joins the trace: every function with an invocations row
/// (functions without durations are dropped by the join).
pub fn from_trace(t: TraceText<'_>) -> Result<Vec<Function>, TraceError> {
    let inv = parse_invocations(t.invocations.0, t.invocations.1)?;
    let dur = parse_durations(t.durations.0, t.durations.1)?;
    let mem = parse_memory(t.memory.0, t.memory.1)?;
    let selection = Selection {
        require_invocations: true,
        ..Selection::default()
    };
    let profiles = join(dur, &mem, inv, &selection)?;
    Ok(profiles
        .into_iter()
        .map(|p| Function {
            name: p.function.chars().take(12).collect(),
            memory_mb: p
                .memory_mb
                .map_or(DEFAULT_MEMORY_MB, |m| (m.average.round() as u64).max(1)),
            duration: p.duration,
            per_minute: p.per_minute.unwrap_or_default(),
        })
        .collect())
}

/// One request of an explicit schedule: when it arrives, which function
/// it calls, and how long it executes. The same schedule drives the
/// simulator ([`crate::Sim::with_schedule`]) and a real cluster (`stratus
/// bench cluster --netns --sim-check`), so the two see identical load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// Since the schedule's start.
    pub at_us: Micros,
    /// Index into the functions.
    pub function: u32,
    pub exec_us: Micros,
}

/// How a trace window becomes a schedule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ScheduleConfig {
    /// The trace's minutes `[start_minute, start_minute + minutes)`.
    pub start_minute: u32,
    pub minutes: u32,
    /// How long one trace minute lasts in the schedule (60 s: real time;
    /// less compresses arrivals, not execution times).
    pub minute_us: Micros,
    /// Execution times drawn above this are cut to it.
    pub max_exec_us: Micros,
    pub seed: u64,
}

/// Each function's invocations in each minute of the window, at times
/// drawn uniformly within the (compressed) minute, with execution times
/// drawn from its duration percentiles (at least 1 ms); sorted by time.
pub fn schedule(functions: &[Function], c: &ScheduleConfig) -> Vec<Request> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
    let mut out = Vec::new();
    for m in 0..c.minutes {
        let base = m as Micros * c.minute_us;
        for (k, f) in functions.iter().enumerate() {
            let n = f
                .per_minute
                .get((c.start_minute + m) as usize)
                .copied()
                .unwrap_or(0);
            for _ in 0..n {
                let at_us = base + rng.random_range(0..c.minute_us.max(1));
                let ms = f.duration.quantile(rng.random()).max(1.0);
                let exec_us = ((ms * 1e3) as Micros).min(c.max_exec_us);
                out.push(Request {
                    at_us,
                    function: k as u32,
                    exec_us,
                });
            }
        }
    }
    out.sort_by_key(|r| (r.at_us, r.function));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str =
        "HashFunction,HashApp,HashOwner,minute_1,minute_2\nf1,a1,o1,3,0\nf2,a2,o1,1,2\n";
    const DUR: &str = "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n\
f1,a1,o1,10,100,50,200,50,55,80,100,120,190,200\n\
f2,a2,o1,10,10,5,20,5,5,8,10,12,19,20\n";
    const MEM: &str = "HashApp,HashOwner,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n\
a1,o1,5,300,100,100,200,300,400,500,600,700\n";

    fn load(inv: &str, dur: &str, mem: &str) -> Result<Vec<Function>, TraceError> {
        from_trace(TraceText {
            invocations: ("inv.csv", inv),
            durations: ("dur.csv", dur),
            memory: ("mem.csv", mem),
        })
    }

    #[test]
    fn joins_the_three_files() {
        let fs = load(INV, DUR, MEM).unwrap();
        assert_eq!(fs.len(), 2);
        assert_eq!((fs[0].name.as_str(), fs[0].memory_mb), ("f1", 300));
        assert_eq!(fs[0].per_minute, [3, 0]);
        assert_eq!(fs[1].memory_mb, DEFAULT_MEMORY_MB, "a2 has no memory row");
        assert_eq!(fs[1].duration.p50, 10.0);
    }

    #[test]
    fn bad_files_say_file_line_and_column() {
        let err = |inv: &str, dur: &str, mem: &str| load(inv, dur, mem).unwrap_err().to_string();
        // A missing column: the header line, and which column.
        let e = err(&INV.replace("HashApp,", "App,"), DUR, MEM);
        assert!(e.starts_with("inv.csv:1: missing column 'HashApp'"), "{e}");
        let e = err(INV, &DUR.replace("percentile_Average_99,", ""), MEM);
        assert!(
            e.starts_with("dur.csv:1: missing column 'percentile_Average_99'"),
            "{e}"
        );
        let e = err(INV, DUR, &MEM.replace("AverageAllocatedMb,", "Avg,"));
        assert!(
            e.starts_with("mem.csv:1: missing column 'AverageAllocatedMb'"),
            "{e}"
        );
        // A row missing a field: its line.
        let e = err(&INV.replace("f2,a2,o1,1,2", "f2,a2,o1,1"), DUR, MEM);
        assert!(e.starts_with("inv.csv:3: expected 5 fields"), "{e}");
        // A bad cell: line and column.
        let e = err(&INV.replace("f2,a2,o1,1,2", "f2,a2,o1,x,2"), DUR, MEM);
        assert!(e.starts_with("inv.csv:3:10: column 'minute_1'"), "{e}");
        let e = err(INV, &DUR.replace(",10,10,5,", ",10,-10,5,"), MEM);
        assert!(e.starts_with("dur.csv:3:13: column 'Average'"), "{e}");
        // Nothing at all.
        assert!(err("", DUR, MEM).contains("inv.csv: the file is empty"));
    }
}

/// Every percentile `ms` (tests).
#[cfg(test)]
pub(crate) fn constant(ms: f64) -> DurationPercentiles {
    DurationPercentiles {
        average: ms,
        p0: ms,
        p1: ms,
        p25: ms,
        p50: ms,
        p75: ms,
        p99: ms,
        p100: ms,
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn schedules_each_minute_within_its_compressed_span() {
        let dur = constant(9_000.0);
        let f = Function {
            name: "f".into(),
            memory_mb: 64,
            duration: dur,
            per_minute: vec![5, 0, 2, 7],
        };
        let c = ScheduleConfig {
            start_minute: 1,
            minutes: 3,
            minute_us: 10_000_000,
            max_exec_us: 2_000_000,
            seed: 3,
        };
        let s = schedule(std::slice::from_ref(&f), &c);
        // Minutes 1..4 of the trace: 0, 2 and 7 invocations.
        assert_eq!(s.len(), 9);
        assert!(s.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert_eq!(s.iter().filter(|r| r.at_us < 10_000_000).count(), 0);
        assert_eq!(s.iter().filter(|r| r.at_us < 20_000_000).count(), 2);
        assert!(s.iter().all(|r| r.at_us < 30_000_000));
        // 9 s executions are cut to the 2 s bound.
        assert!(s.iter().all(|r| r.exec_us == 2_000_000), "{s:?}");
        assert_eq!(s, schedule(&[f], &c), "the same seed, the same schedule");
    }
}
