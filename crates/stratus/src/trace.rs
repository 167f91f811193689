//! `stratus invoke --trace`: one invocation's runs as a table.

use stratus_dag::InvocationRecord;
use stratus_report::{fmt_us, table};

/// One invocation's runs with their timing spans.
pub fn trace_table(rec: &InvocationRecord) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &rec.runs {
        let mut name = if r.run > 0 || rec.runs.iter().filter(|o| o.step == r.step).count() > 1 {
            format!("{}[{}]", r.step, r.run)
        } else {
            r.step.clone()
        };
        // Every try of a retried run: the earlier ones first.
        for a in &r.retries {
            let (s, f) = (
                a.started_us.unwrap_or(a.queued_us),
                a.finished_us.unwrap_or(0),
            );
            rows.push(vec![
                format!("{name} try {}", a.attempt),
                r.function.clone(),
                "retried".to_string(),
                fmt_us(a.queued_us),
                fmt_us(
                    s.saturating_sub(a.queued_us)
                        .saturating_sub(a.cold_start_us),
                ),
                fmt_us(a.cold_start_us),
                fmt_us(f.saturating_sub(s)),
                a.instance.clone().unwrap_or_default(),
            ]);
        }
        if !r.retries.is_empty() {
            name = format!("{name} try {}", r.attempt);
        }
        rows.push(vec![
            name,
            r.function.clone(),
            format!("{:?}", r.status).to_lowercase(),
            fmt_us(r.queued_us),
            fmt_us(r.queue_us()),
            fmt_us(r.cold_start_us),
            fmt_us(r.exec_us()),
            r.instance.clone().unwrap_or_default(),
        ]);
    }
    let b = rec.breakdown;
    let mut out =
        format!("invocation {} of {} ({:?})\n", rec.id, rec.target, rec.kind).to_lowercase();
    out.push_str(&table(
        &[
            "STEP",
            "FUNCTION",
            "STATUS",
            "QUEUED AT",
            "QUEUE",
            "COLD START",
            "EXEC",
            "INSTANCE",
        ],
        &rows,
    ));
    out.push_str(&format!(
        "critical path: total {} = queue {} + cold start {} + exec {} + overhead {}\n",
        fmt_us(b.total_us),
        fmt_us(b.queue_us),
        fmt_us(b.cold_start_us),
        fmt_us(b.exec_us),
        fmt_us(b.overhead_us)
    ));
    // Why each try that failed did (retried, or final).
    for r in &rec.runs {
        for a in &r.retries {
            if let Some(e) = &a.error {
                out.push_str(&format!("{} try {}: {e}\n", r.step, a.attempt));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use stratus_dag::{Attempt, Breakdown, InvocationKind, RunRecord, RunStatus};

    use super::*;

    #[test]
    fn every_try_of_a_retried_run_is_a_row_with_its_error() {
        let run = RunRecord {
            step: "fetch".into(),
            run: 0,
            function: "flaky".into(),
            status: RunStatus::Succeeded,
            queued_us: 5_000,
            started_us: Some(5_100),
            finished_us: Some(6_000),
            cold_start_us: 0,
            instance: Some("flaky-2".into()),
            input_bytes: 2,
            output_bytes: 10,
            error: None,
            attempt: 2,
            retries: vec![Attempt {
                attempt: 1,
                queued_us: 0,
                started_us: Some(100),
                finished_us: Some(1_000),
                cold_start_us: 0,
                instance: Some("flaky-1".into()),
                error: Some("function 'flaky' answered HTTP 500: no".into()),
            }],
        };
        let rec = InvocationRecord {
            id: "i".into(),
            target: "wf".into(),
            kind: InvocationKind::Workflow,
            ok: true,
            error: None,
            received_unix_us: 0,
            finished_us: 6_000,
            input_bytes: 2,
            output_bytes: 10,
            breakdown: Breakdown::default(),
            runs: vec![run],
            interrupted: None,
        };
        let t = trace_table(&rec);
        assert!(
            t.contains("fetch try 1") && t.contains("retried") && t.contains("flaky-1"),
            "{t}"
        );
        assert!(
            t.contains("fetch try 2") && t.contains("succeeded") && t.contains("flaky-2"),
            "{t}"
        );
        assert!(
            t.contains("fetch try 1: function 'flaky' answered HTTP 500: no"),
            "{t}"
        );
    }
}
