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
