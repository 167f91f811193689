//! The functions a simulation replays, from the Azure Functions 2019 trace
//! (pure: the files are read by [`crate::io`]).

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
