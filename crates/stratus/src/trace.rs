//! `stratus invoke --trace`: one invocation's runs as a table.

use stratus_dag::InvocationRecord;
use stratus_report::{fmt_us, table};

/// One invocation's runs with their timing spans.
pub fn trace_table(rec: &InvocationRecord) -> String {
    let rows: Vec<Vec<String>> = rec
        .runs
        .iter()
        .map(|r| {
            vec![
                if r.run > 0 || rec.runs.iter().filter(|o| o.step == r.step).count() > 1 {
                    format!("{}[{}]", r.step, r.run)
                } else {
                    r.step.clone()
                },
                r.function.clone(),
                format!("{:?}", r.status).to_lowercase(),
                fmt_us(r.queued_us),
                fmt_us(r.queue_us()),
                fmt_us(r.cold_start_us),
                fmt_us(r.exec_us()),
                r.instance.clone().unwrap_or_default(),
            ]
        })
        .collect();
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
    out
}
