use stratus_rcss_vm::vmsnap::MovedStats;
use stratus_snapstore::Digest;

use super::cache::skewed_sequence;
use super::dedup::{snapshot_dedup, SnapDedup};
use super::model::{functions, median, ratio, rows, Round, Sample};
use super::summary::{breakdown_table, refinements};
use super::targets::{link_bandwidth, link_floor_us, targets, verdict, Verdict};

fn sample(link: &str, f: &str, policy: &str, k: usize, total: u64) -> Sample {
    Sample {
        link: link.into(),
        function: f.into(),
        guest_mib: if f == "echo" { 256 } else { 1024 },
        policy: policy.into(),
        concurrency: k,
        run: 0,
        instance: "i".into(),
        fetch_us: total / 4,
        restore_us: total / 4,
        first_response_us: total - total / 2,
        prefetch_wait_us: 0,
        total_us: total,
        cache_hit: false,
        fetched_chunks: 0,
        prefetched_chunks: 1,
        on_demand_chunks: 2,
        zero_chunks: 0,
        bytes_moved: total * 10,
        working_set_generation: u32::from(policy == "working-set"),
        recorded_chunks: 0,
    }
}

#[test]
fn refinements_name_the_generation_each_restore_published() {
    let mut a = sample("l", "echo", "working-set", 1, 100);
    a.recorded_chunks = 900;
    a.instance = "ws-7".into();
    let mut b = sample("l", "echo", "lazy", 1, 100);
    b.recorded_chunks = 5;
    let c = sample("l", "echo", "working-set", 1, 100);
    let lines = refinements(&[a, b, c]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("echo: generation 2 (900 chunks) by ws-7"),
        "{lines:?}"
    );
}

#[test]
fn median_is_the_middle_sample() {
    assert_eq!(median(&[]), 0);
    assert_eq!(median(&[7]), 7);
    assert_eq!(median(&[9, 1, 5]), 5);
    // Nearest rank: the lower middle of an even count.
    assert_eq!(median(&[4, 1, 3, 2]), 2);
}

#[test]
fn rows_group_in_first_seen_order_with_medians() {
    let s = vec![
        sample("L", "echo", "lazy", 1, 300),
        sample("L", "echo", "eager", 1, 1000),
        sample("L", "echo", "lazy", 1, 100),
        sample("L", "echo", "lazy", 1, 200),
        sample("L", "echo", "lazy", 2, 900),
    ];
    let r = rows(&s);
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0].policy.as_str(), r[0].concurrency, r[0].n),
        ("lazy", 1, 3)
    );
    assert_eq!(r[0].total_us, 200);
    assert_eq!(r[0].bytes_moved, 2000);
    assert_eq!((r[1].policy.as_str(), r[1].total_us), ("eager", 1000));
    assert_eq!((r[2].concurrency, r[2].total_us), (2, 900));
}

#[test]
fn ratios_and_verdicts() {
    assert_eq!(ratio(Some(5), Some(2)), Some(2.5));
    assert_eq!(ratio(Some(5), Some(0)), None);
    assert_eq!(ratio(None, Some(2)), None);
    assert_eq!(verdict(Some(1.25), 1.25, true), Verdict::Met);
    assert_eq!(verdict(Some(1.26), 1.25, true), Verdict::Missed);
    assert_eq!(verdict(Some(5.0), 5.0, false), Verdict::Met);
    assert_eq!(verdict(Some(4.9), 5.0, false), Verdict::Missed);
    assert_eq!(verdict(None, 5.0, false), Verdict::NotMeasured);
    assert_eq!(verdict(Some(f64::NAN), 5.0, false), Verdict::NotMeasured);
}

#[test]
fn targets_are_computed_from_the_rows() {
    let link = "1gbit,1ms";
    let s = vec![
        sample(link, "echo", "eager", 1, 10_000),
        sample(link, "echo", "lazy", 1, 2_400),
        sample(link, "echo", "working-set", 1, 1_000),
        sample(link, "echo", "warm-local", 1, 1_000),
        sample(link, "big", "eager", 1, 10_000),
        sample(link, "big", "lazy", 1, 9_000),
        sample(link, "big", "working-set", 1, 1_200),
        sample(link, "big", "warm-local", 1, 1_000),
        // Concurrency 2 does not count.
        sample(link, "echo", "lazy", 2, 99_000),
    ];
    let r = rows(&s);
    let d = SnapDedup {
        snapshots: 3,
        dedup_ratio: 0.4,
        bytes_saved_ratio: 0.8,
        ..Default::default()
    };
    // What big's working-set round moved: 12.5 MB on 1 Gbit/s, 1 ms
    // each way: 100 ms + 2 ms, against a 1 ms warm-local.
    let round = |f: &str, policy: &str, link_bytes: u64| Round {
        link: link.into(),
        function: f.into(),
        policy: policy.into(),
        concurrency: 1,
        run: 0,
        link_bytes,
        link_requests: 1,
        moved: MovedStats::default(),
    };
    let rounds = vec![
        round("big", "working-set", 12_500_000),
        round("big", "lazy", 99_000_000),
    ];
    assert_eq!(link_floor_us(link, 12_500_000), Some(102_000));
    assert_eq!(link_floor_us("unlimited,1ms", 1), None);
    let t = targets(&r, &rounds, Some(&d));
    assert!(!t[0].text.contains("link floor"), "{}", t[0].text);
    assert!(
        t[2].text.contains("link floor: its 11.9 MiB over the link take ≥ 102.0 ms = 102.00× warm-local, out of reach"),
        "{}",
        t[2].text
    );
    assert!(!t[3].text.contains("link floor"), "{}", t[3].text);
    let v: Vec<(Verdict, Option<f64>)> = t.iter().map(|t| (t.verdict, t.value)).collect();
    assert_eq!(
        v,
        vec![
            (Verdict::Met, Some(1.0)),                   // echo ws / warm
            (Verdict::Missed, Some(2.4)),                // echo lazy / warm
            (Verdict::Met, Some(1.2)),                   // big ws / warm
            (Verdict::Missed, Some(9.0)),                // big lazy / warm
            (Verdict::Met, Some(10.0)),                  // echo eager / ws
            (Verdict::Missed, Some(10_000.0 / 2_400.0)), // echo eager / lazy
            (Verdict::Met, Some(0.4)),                   // dedup reported
        ]
    );
    assert!(t[0].text.contains("echo") && t[0].text.contains(link));
    // No 1 Gbit link, no warm-local, too few snapshots: not measured.
    let r = rows(&[sample("100mbit,10ms", "echo", "lazy", 1, 5)]);
    let one = SnapDedup { snapshots: 1, ..d };
    let t = targets(&r, &[], Some(&one));
    assert!(t.iter().all(|t| t.verdict == Verdict::NotMeasured), "{t:?}");
}

#[test]
fn snapshot_dedup_counts_shared_pages_once() {
    let (a, b, c) = (
        Digest::of(b"kernel page"),
        Digest::of(b"echo page"),
        Digest::of(b"memhog page"),
    );
    let d = snapshot_dedup(&[
        vec![
            (Some(a), 4096),
            (None, 4096),
            (Some(b), 4096),
            (Some(b), 4096),
        ],
        vec![(Some(a), 4096), (Some(c), 4096), (None, 8192)],
    ]);
    assert_eq!(d.snapshots, 2);
    assert_eq!(d.logical_bytes, 8 * 4096);
    assert_eq!(d.zero_bytes, 3 * 4096);
    assert_eq!((d.chunk_refs, d.unique_chunks), (5, 3));
    assert_eq!(d.unique_bytes, 3 * 4096);
    // Only `a` is in both; `b` twice in one function is not "shared".
    assert_eq!((d.shared_chunks, d.shared_bytes), (1, 4096));
    assert!((d.dedup_ratio - 0.4).abs() < 1e-9);
    assert!((d.bytes_saved_ratio - 5.0 / 8.0).abs() < 1e-9);
    assert_eq!(snapshot_dedup(&[]), SnapDedup::default());
}

#[test]
fn link_bandwidth_parses_names() {
    assert_eq!(link_bandwidth("1gbit,1ms"), Some(125_000_000));
    assert_eq!(link_bandwidth("unlimited,1ms"), None);
    assert_eq!(link_bandwidth("nonsense"), None);
}

#[test]
fn skewed_sequence_favours_the_first() {
    assert_eq!(skewed_sequence(3, 9), vec![0, 0, 1, 2, 0, 0, 1, 2, 0]);
    assert_eq!(skewed_sequence(2, 5), vec![0, 0, 1, 0, 0]);
    assert_eq!(skewed_sequence(1, 3), vec![0, 0, 0]);
    assert!(skewed_sequence(0, 3).is_empty());
}

#[test]
fn breakdown_table_lists_every_row() {
    let r = rows(&[
        sample("L", "echo", "lazy", 1, 2_000),
        sample("L", "echo", "eager", 4, 20_000),
    ]);
    let t = breakdown_table(&r);
    assert_eq!(t.lines().count(), 4, "{t}");
    assert!(t.contains("echo (256 MiB)") && t.contains("20.0 ms"), "{t}");
}

#[test]
fn functions_differ_in_footprint() {
    let f = functions();
    assert!(f.len() >= 3);
    let mut g: Vec<u32> = f.iter().map(|f| f.guest_mib).collect();
    g.dedup();
    assert_eq!(g.len(), f.len(), "distinct guest sizes");
    assert_eq!(f[0].guest_mib, 256);
}
