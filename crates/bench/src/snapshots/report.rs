//! Writing the report: results.json (every sample, round and counter),
//! summary.md and summary.json (medians and targets), and the plots: a
//! restore breakdown per link and function, a CDF of totals per link.

use anyhow::Result;
use stratus_microvm::snapshot::RestorePolicy;
use stratus_report::{plot_cdf, plot_stacked_bars, ReportDir};

use super::model::{rows, FnDef, Row, Sample};
use super::scenarios::Bench;
use super::summary::{slug, summary, Results};
use super::targets::targets;
use crate::shaper::LinkSpec;

/// Writes the report into `report` and prints summary.md.
pub(super) fn write(
    report: &ReportDir,
    b: &Bench<'_>,
    links: &[(String, LinkSpec)],
    r: &Results,
) -> Result<()> {
    let snaps = &b.node.snaps;
    report.write_json(
        "results.json",
        &serde_json::json!({
            "accel": format!("{:?}", r.accel),
            "functions": b.fns,
            "first_starts": r.firsts,
            "baselines": r.baselines,
            "samples": r.samples,
            "rounds": r.rounds,
            "cache_policies": r.cache_rows,
            "dedup_store": r.store_dedup,
            "dedup_snapshots": r.snap_dedup,
            "failures": r.failures,
            "uploads": snaps.uploads(),
            "moved_total": snaps.moved(),
            "snapshot_cache": format!("{:?}", snaps.cache().stats()),
        }),
    )?;
    let rows = rows(&r.samples);
    let targets = targets(&rows, &r.rounds, Some(&r.snap_dedup));
    let md = summary(b.a, &b.fns, r, &rows, &targets);
    report.write("summary.md", md.as_bytes())?;
    report.write_json(
        "summary.json",
        &serde_json::json!({"rows": rows, "targets": targets}),
    )?;
    for (lname, _) in links {
        for f in &b.fns {
            plot_breakdown(report, &rows, lname, f)?;
        }
        plot_totals(report, &r.samples, lname)?;
    }
    print!("{md}");
    eprintln!("report: {}", report.path.display());
    Ok(())
}

/// breakdown_FUNCTION_LINK.svg: fetch, restore and first response per
/// policy, unloaded; nothing without such rows.
fn plot_breakdown(report: &ReportDir, rows: &[Row], lname: &str, f: &FnDef) -> Result<()> {
    let groups: Vec<(String, Vec<f64>)> = rows
        .iter()
        .filter(|r| r.link == *lname && r.function == f.name && r.concurrency == 1)
        .map(|r| {
            (
                r.policy.clone(),
                [r.fetch_us, r.restore_us, r.first_response_us]
                    .iter()
                    .map(|&u| u as f64 / 1e3)
                    .collect(),
            )
        })
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let file = format!("breakdown_{}_{}.svg", f.name, slug(lname));
    plot_stacked_bars(
        &report.path.join(&file),
        &format!(
            "{} ({} MiB guest): restore breakdown (median), {lname}, unloaded",
            f.name, f.guest_mib
        ),
        &["fetch", "restore", "first response"],
        &groups,
    )?;
    Ok(())
}

/// cdf_LINK.svg: every total on the link, one series per policy;
/// nothing without samples.
fn plot_totals(report: &ReportDir, samples: &[Sample], lname: &str) -> Result<()> {
    let series: Vec<(String, Vec<u64>)> = RestorePolicy::ALL
        .iter()
        .map(|p| {
            (
                p.to_string(),
                samples
                    .iter()
                    .filter(|s| s.link == *lname && s.policy == p.as_str())
                    .map(|s| s.total_us)
                    .collect(),
            )
        })
        .filter(|(_, v): &(String, Vec<u64>)| !v.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    plot_cdf(
        &report.path.join(format!("cdf_{}.svg", slug(lname))),
        &format!("restore → first response, all functions and concurrencies, {lname}"),
        &series,
    )?;
    Ok(())
}
