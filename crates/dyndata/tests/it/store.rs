use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stratus_dyndata::csv::{ColumnRef, CsvOptions, OnBadRow};
use stratus_dyndata::tier::{ColdError, ColdTier, DirTier};
use stratus_dyndata::{
    RetentionPolicy, Sample, Store, StoreError, StoreOptions, Tier, TierPolicy, Window,
};

use crate::{drift_data, files_under, gen_sample};

fn small_segments() -> StoreOptions {
    StoreOptions {
        max_segment_bytes: 16 << 10,
        cold: None,
    }
}

#[test]
fn ingest_elec2_and_replay_in_windows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let report = store
        .ingest_csv(&drift_data("elec2.csv"), &CsvOptions::default())
        .unwrap();
    assert_eq!(
        (report.ingested, report.skipped, report.data_rows),
        (45_312, 0, 45_312)
    );
    assert_eq!(
        report.feature_columns,
        [
            "period",
            "nswprice",
            "nswdemand",
            "vicprice",
            "vicdemand",
            "transfer"
        ]
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.samples, stats.dim), (45_312, Some(6)));
    assert_eq!(
        (stats.min_timestamp, stats.max_timestamp),
        (Some(0), Some(45_311))
    );
    let classes: u64 = stats.classes.iter().map(|c| c.1).sum();
    assert_eq!(classes, 45_312);

    let windows: Vec<_> = store
        .replay(Window::Samples(1000))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(windows.len(), 46);
    assert_eq!(windows[45].batch.len(), 312);
    let mut expect_ts = 0;
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w.index, i);
        for &t in &w.batch.timestamps {
            assert_eq!(t, expect_ts);
            expect_ts += 1;
        }
    }
    // First row of the file: 0.0,0.056443,0.439155,0.003467,0.422915,0.414912,1
    let first = windows[0].batch.sample(0);
    assert_eq!(first.label, 1);
    assert!((first.features[1] - 0.056443).abs() < 1e-6);
    assert_eq!(store.read(&[first.key]).unwrap().sample(0), first);

    // One week of half-hours per window.
    let weeks: Vec<_> = store
        .replay(Window::Time(48 * 7))
        .unwrap()
        .map(|w| w.unwrap())
        .collect();
    assert_eq!(weeks.len(), 45_312usize.div_ceil(336));
    assert!(weeks[..weeks.len() - 1]
        .iter()
        .all(|w| w.batch.len() == 336));
    assert_eq!((weeks[1].start, weeks[1].end), (336, 672));
}

#[test]
fn time_windows_skip_gaps_and_ties_keep_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let ts = [5i64, 5, 6, 31, 30, 9, 12];
    let samples: Vec<Sample> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| Sample {
            key: 10 - i as u64,
            timestamp: t,
            label: 0,
            features: vec![i as f32],
        })
        .collect();
    store.ingest_batch(&samples).unwrap();
    let w: Vec<(i64, i64, Vec<u64>)> = store
        .replay(Window::Time(10))
        .unwrap()
        .map(|w| {
            let w = w.unwrap();
            (w.start, w.end, w.batch.keys.clone())
        })
        .collect();
    // t0 = 5: [5,15) holds 5,5,6,9,12 (ties at 5 by key), [15,25) is empty
    // and skipped, [25,35) holds 30,31.
    assert_eq!(w, vec![(5, 15, vec![9, 10, 8, 5, 4]), (25, 35, vec![6, 7])]);
    let s: Vec<Vec<u64>> = store
        .replay(Window::Samples(3))
        .unwrap()
        .map(|w| w.unwrap().batch.keys)
        .collect();
    assert_eq!(s, vec![vec![9, 10, 8], vec![5, 4, 6], vec![7]]);
    assert!(store.replay(Window::Samples(0)).is_err());
}

#[test]
fn live_ingest_is_validated_and_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_segments()).unwrap();
    let batch: Vec<Sample> = (0..400).map(|k| gen_sample(k, 4)).collect();
    assert_eq!(store.ingest_batch(&batch).unwrap(), 400);
    let before = store.stats().unwrap();
    assert!(
        before.hot_segments > 1,
        "a batch spans segments: {before:?}"
    );

    let mut dup: Vec<Sample> = (400..410).map(|k| gen_sample(k, 4)).collect();
    dup.push(gen_sample(50, 4));
    assert!(matches!(
        store.ingest_batch(&dup),
        Err(StoreError::DuplicateKey(50))
    ));
    let mut within = vec![gen_sample(500, 4), gen_sample(500, 4)];
    assert!(matches!(
        store.ingest_batch(&within),
        Err(StoreError::DuplicateKey(500))
    ));
    within[1] = gen_sample(501, 3);
    assert!(matches!(
        store.ingest_batch(&within),
        Err(StoreError::Dim {
            key: 501,
            got: 3,
            want: 4
        })
    ));
    let mut nan = gen_sample(300, 4);
    nan.features[2] = f32::NAN;
    assert!(matches!(
        store.ingest_batch(&[nan]),
        Err(StoreError::NotFinite { key: 300, index: 2 })
    ));
    assert_eq!(store.stats().unwrap(), before, "nothing was added");
    assert!(matches!(store.read(&[400]), Err(StoreError::NotFound(400))));

    // Reopen: everything reads back.
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let keys: Vec<u64> = (0..400).rev().collect();
    let b = store.read(&keys).unwrap();
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(b.sample(i), gen_sample(k, 4));
    }
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path()).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
}

/// The little-endian bytes of a sample's first two features: unique per key.
fn pattern(key: u64) -> Vec<u8> {
    let s = gen_sample(key, 8);
    s.features[..2]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect()
}

fn bytes_in_store(dir: &std::path::Path, needle: &[u8]) -> bool {
    files_under(dir).iter().any(|f| {
        let data = fs::read(f).unwrap();
        data.windows(needle.len()).any(|w| w == needle)
    })
}

#[test]
fn retention_deletes_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_segments()).unwrap();
    let batch: Vec<Sample> = (0..3000).map(|k| gen_sample(k, 8)).collect();
    store.ingest_batch(&batch).unwrap();
    // Timestamps are key / 3, newest 999: max_age 500 keeps ts >= 499.
    let n = store
        .retention(&RetentionPolicy {
            max_age: Some(500),
            max_samples: None,
        })
        .unwrap();
    assert_eq!(n, 499 * 3);
    assert!(matches!(store.read(&[0]), Err(StoreError::NotFound(0))));
    assert!(matches!(
        store.read(&[1496]),
        Err(StoreError::NotFound(1496))
    ));
    assert!(store.read(&[1497]).is_ok());
    // Then the newest 1000 (ties by key).
    let n = store
        .retention(&RetentionPolicy {
            max_age: None,
            max_samples: Some(1000),
        })
        .unwrap();
    assert_eq!(n, 1503 - 1000);
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 1000);
    assert_eq!(entries[0].key, 2000);

    let hot_size = |d: &std::path::Path| -> u64 {
        files_under(&d.join("hot"))
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum()
    };
    let before = hot_size(dir.path());
    assert!(
        bytes_in_store(dir.path(), &pattern(5)),
        "deleted bytes still there before compaction"
    );
    let report = store.compact().unwrap();
    let after = hot_size(dir.path());
    assert!(
        report.segments_removed > 0 && report.bytes_after < report.bytes_before,
        "{report:?}"
    );
    assert_eq!(report.records_dropped, 2000);
    assert!(after * 2 < before, "{after} vs {before}");
    assert_eq!(after, store.stats().unwrap().hot_bytes);
    for k in [0, 5, 1496, 1999] {
        assert!(
            !bytes_in_store(dir.path(), &pattern(k)),
            "bytes of deleted key {k} remain"
        );
    }
    assert!(
        bytes_in_store(dir.path(), &pattern(2500)),
        "live bytes are found"
    );
    let b = store.read(&(2000..3000).collect::<Vec<_>>()).unwrap();
    assert_eq!(b.sample(999), gen_sample(2999, 8));
    // Reopen after compaction: consistent, and a deleted key can be reused.
    drop(store);
    let mut store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert_eq!(store.stats().unwrap().samples, 1000);
    store.ingest_batch(&[gen_sample(7, 8)]).unwrap();
    assert_eq!(store.next_key().unwrap(), 3000);
}

#[test]
fn tiers_move_records_and_count_cold_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_segments()).unwrap();
    let batch: Vec<Sample> = (0..1000).map(|k| gen_sample(k, 8)).collect();
    store.ingest_batch(&batch).unwrap();
    let cold_keys: Vec<u64> = (0..1000).filter(|k| k % 4 != 0).collect();
    assert_eq!(store.demote(&cold_keys).unwrap(), 750);
    assert_eq!(store.demote(&cold_keys).unwrap(), 0, "already cold");
    let s = store.stats().unwrap();
    assert_eq!((s.hot_samples, s.cold_samples), (250, 750));
    assert_eq!((s.cold_reads, s.cold_read_bytes), (0, 0));
    store.compact().unwrap();
    let s = store.stats().unwrap();
    assert!(
        s.hot_bytes < 300 * 72,
        "hot bytes reclaimed: {}",
        s.hot_bytes
    );

    // Reads: hot reads are free, cold reads are counted with their bytes.
    store.read(&[0, 4, 8]).unwrap();
    assert_eq!(store.stats().unwrap().cold_reads, 0);
    let b = store.read(&[1, 2, 3]).unwrap();
    assert_eq!(b.sample(2), gen_sample(3, 8));
    let s = store.stats().unwrap();
    assert!(s.cold_reads >= 1 && s.cold_read_bytes >= 3 * 68, "{s:?}");
    assert!(fs::read_dir(dir.path().join("cold")).unwrap().count() >= 1);

    // Replay sees both tiers, in time order.
    let keys: Vec<u64> = store
        .replay(Window::Samples(100))
        .unwrap()
        .flat_map(|w| w.unwrap().batch.keys)
        .collect();
    assert_eq!(keys, (0..1000).collect::<Vec<_>>());

    assert_eq!(store.promote(&[1, 2, 3, 4]).unwrap(), 3);
    let e = store.entries().unwrap();
    assert_eq!(e[1].tier, Tier::Hot);
    assert_eq!(e[5].tier, Tier::Cold);

    // Importance tiering: keep the 10% highest scores hot.
    let scores: Vec<(u64, f32)> = (0..1000).map(|k| (k, (k % 10) as f32)).collect();
    store.set_scores(&scores).unwrap();
    let r = store.retier(0.1, TierPolicy::Importance).unwrap();
    assert_eq!((r.hot, r.cold), (100, 900));
    for e in store.entries().unwrap() {
        assert_eq!(e.tier == Tier::Hot, e.key % 10 == 9, "key {}", e.key);
        assert_eq!(e.score, Some((e.key % 10) as f32));
    }
    let s = store.stats().unwrap();
    assert_eq!(
        s.hot_live_bytes + 16 * s.hot_segments,
        s.hot_bytes,
        "no garbage after retier"
    );
    assert_eq!(s.cold_live_bytes + 16 * s.cold_segments, s.cold_bytes);
    assert!(matches!(
        store.set_scores(&[(5000, 1.0)]),
        Err(StoreError::NotFound(5000))
    ));

    // Everything still reads back after reopening.
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let b = store.read(&(0..1000).collect::<Vec<_>>()).unwrap();
    assert_eq!(b.to_samples(), batch);
}

/// The two placement policies keep different samples hot from the same
/// scores: importance keeps the highest scores, recency the newest, and
/// importance without scores falls back to recency.
#[test]
fn importance_and_recency_tiering_place_different_samples_hot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_segments()).unwrap();
    let batch: Vec<Sample> = (0..600).map(|k| gen_sample(k, 4)).collect();
    store.ingest_batch(&batch).unwrap();
    let hot = |store: &Store| -> Vec<u64> {
        let mut h: Vec<u64> = store
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.tier == Tier::Hot)
            .map(|e| e.key)
            .collect();
        h.sort();
        h
    };
    // Unscored: both policies keep the newest 60.
    store.retier(0.1, TierPolicy::Importance).unwrap();
    let newest: Vec<u64> = (540..600).collect();
    assert_eq!(hot(&store), newest);
    // Old samples score high: importance promotes them, recency does not.
    let scores: Vec<(u64, f32)> = (0..600).map(|k| (k, 1.0 / (1.0 + k as f32))).collect();
    store.set_scores(&scores).unwrap();
    let r = store.retier(0.1, TierPolicy::Importance).unwrap();
    assert_eq!((r.hot, r.promoted, r.demoted), (60, 60, 60));
    assert_eq!(hot(&store), (0..60).collect::<Vec<u64>>());
    let r = store.retier(0.1, TierPolicy::Recency).unwrap();
    assert_eq!((r.hot, r.promoted, r.demoted), (60, 60, 60));
    assert_eq!(hot(&store), newest);
    // A new sample, never scored, is hot under importance too.
    store.ingest_batch(&[gen_sample(600, 4)]).unwrap();
    store.retier(0.1, TierPolicy::Importance).unwrap();
    let h = hot(&store);
    assert_eq!(h.len(), 60);
    assert!(
        h.contains(&600) && h.contains(&0) && !h.contains(&59),
        "{h:?}"
    );
    // Every sample still reads back, whichever tier it is in.
    let all: Vec<u64> = (0..601).collect();
    assert_eq!(store.read(&all).unwrap().len(), 601);
}

/// A cold tier whose puts fail while `fail` is set.
struct Flaky {
    inner: DirTier,
    fail: Arc<AtomicBool>,
}

impl ColdTier for Flaky {
    fn put(&self, name: &str, data: &[u8]) -> Result<(), ColdError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ColdError::Other("injected put failure".into()));
        }
        self.inner.put(name, data)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, ColdError> {
        self.inner.get_range(name, offset, len)
    }
    fn delete(&self, name: &str) -> Result<(), ColdError> {
        self.inner.delete(name)
    }
    fn list(&self) -> Result<Vec<(String, u64)>, ColdError> {
        self.inner.list()
    }
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
}

#[test]
fn failed_demote_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let cold = Flaky {
        inner: DirTier::new(dir.path().join("objects")).unwrap(),
        fail: fail.clone(),
    };
    let mut store = Store::open_with(
        dir.path().join("store"),
        StoreOptions {
            max_segment_bytes: 4 << 10,
            cold: Some(Box::new(cold)),
        },
    )
    .unwrap();
    let batch: Vec<Sample> = (0..200).map(|k| gen_sample(k, 8)).collect();
    store.ingest_batch(&batch).unwrap();
    let before = store.stats().unwrap();
    assert!(matches!(store.demote(&[1, 2, 3]), Err(StoreError::Cold(_))));
    assert_eq!(store.stats().unwrap(), before);
    fail.store(false, Ordering::SeqCst);
    assert_eq!(store.demote(&[1, 2, 3]).unwrap(), 3);
    assert_eq!(store.read(&[2]).unwrap().sample(0), gen_sample(2, 8));
    assert!(store.stats().unwrap().cold_location.starts_with("flaky"));
}

#[test]
fn csv_bad_rows_fail_or_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    fs::write(
        &csv,
        "a,b,label\n1,2,up\n3,oops,down\n4,5\n6,inf,up\n7,8,down\n",
    )
    .unwrap();
    let mut store = Store::open(dir.path().join("s")).unwrap();
    let err = store.ingest_csv(&csv, &CsvOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:3: column 'b': \"oops\" is not a number (declare the column \
             categorical if it holds categories)",
            csv.display()
        )
    );
    assert_eq!(store.stats().unwrap().samples, 0, "nothing ingested");
    assert_eq!(
        store.labels().names.len(),
        0,
        "labels of a failed ingest are not kept"
    );

    let skip = CsvOptions {
        on_bad_row: OnBadRow::Skip,
        label_column: Some(ColumnRef::Name("label".into())),
        ..CsvOptions::default()
    };
    let report = store.ingest_csv(&csv, &skip).unwrap();
    assert_eq!(
        (report.ingested, report.skipped, report.data_rows),
        (2, 3, 5)
    );
    let text = report.to_string();
    assert!(text.contains("3 skipped"), "{text}");
    assert!(text.contains(":4:4: expected 3 columns, found 2"), "{text}");
    // Row numbers stay aligned with the file: rows 0 and 4.
    let e = store.entries().unwrap();
    assert_eq!(
        e.iter().map(|e| (e.timestamp, e.label)).collect::<Vec<_>>(),
        [(0, 0), (4, 1)]
    );

    // String labels persist: a new file continues the mapping.
    let more = dir.path().join("more.csv");
    fs::write(&more, "a,b,label\n9,9,sideways\n9,9,up\n").unwrap();
    drop(store);
    let mut store = Store::open(dir.path().join("s")).unwrap();
    let report = store.ingest_csv(&more, &CsvOptions::default()).unwrap();
    assert_eq!(report.label_names, ["0=up", "1=down", "2=sideways"]);
    assert_eq!(report.first_key, 2);
    let e = store.entries().unwrap();
    assert_eq!(e.iter().map(|e| e.label).collect::<Vec<_>>(), [0, 2, 0, 1]);
    let stats = store.stats().unwrap().to_string();
    assert!(stats.contains("up: 2, down: 1, sideways: 1"), "{stats}");
}

/// A file whose every row is bad, even with bad rows skipped, is an error
/// that quotes the first reasons, and nothing of it is stored.
#[test]
fn csv_all_bad_rows_is_an_error_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    fs::write(
        &csv,
        "a,b,label
1,x,up
3
",
    )
    .unwrap();
    let mut store = Store::open(dir.path().join("s")).unwrap();
    let skip = CsvOptions {
        on_bad_row: OnBadRow::Skip,
        ..CsvOptions::default()
    };
    let err = store.ingest_csv(&csv, &skip).unwrap_err().to_string();
    assert!(
        err.contains("every one of its 2 data rows is bad")
            && err.contains("line 2:3: column 'b': \"x\" is not a number")
            && err.contains("line 3:2: expected 3 columns, found 1"),
        "{err}"
    );
    assert_eq!(store.stats().unwrap().samples, 0, "nothing ingested");
    assert!(store.labels().names.is_empty(), "no labels kept");
}

#[test]
fn digits_and_weather_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut digits = Store::open(dir.path().join("d")).unwrap();
    let r = digits
        .ingest_csv(&drift_data("digits8x8.csv"), &CsvOptions::default())
        .unwrap();
    assert_eq!((r.ingested, r.feature_columns.len()), (1797, 64));
    assert_eq!(r.feature_columns[0], "c0", "no header detected");
    assert_eq!(digits.stats().unwrap().classes.len(), 10);

    let mut weather = Store::open(dir.path().join("w")).unwrap();
    let r = weather
        .ingest_csv(&drift_data("weather.csv"), &CsvOptions::default())
        .unwrap();
    assert_eq!((r.ingested, r.feature_columns.len()), (18_159, 8));
}

/// A half-written record and a segment file the index never committed (as a
/// kill mid-write leaves them) are removed on open.
#[test]
fn torn_tail_and_orphans_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let batch: Vec<Sample> = (0..10).map(|k| gen_sample(k, 8)).collect();
    store.ingest_batch(&batch).unwrap();
    let committed = store.stats().unwrap().hot_bytes;
    drop(store);
    let hot = files_under(&dir.path().join("hot"));
    assert_eq!(hot.len(), 1);
    let mut torn = Vec::new();
    stratus_dyndata::segment::encode(&gen_sample(10, 8), &mut torn).unwrap();
    let mut data = fs::read(&hot[0]).unwrap();
    data.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&hot[0], &data).unwrap();
    fs::write(dir.path().join("hot/seg-00000099.seg"), b"STRDSEG\0junk").unwrap();
    fs::write(dir.path().join("cold/seg-00000098.seg"), b"junk").unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(fs::metadata(&hot[0]).unwrap().len(), committed);
    assert_eq!(files_under(&dir.path().join("hot")).len(), 1);
    assert!(files_under(&dir.path().join("cold")).is_empty());
    assert_eq!(
        store
            .read(&(0..10).collect::<Vec<_>>())
            .unwrap()
            .to_samples(),
        batch
    );
    // Appends continue after the committed end.
    store.ingest_batch(&[gen_sample(10, 8)]).unwrap();
    assert_eq!(store.read(&[10]).unwrap().sample(0), gen_sample(10, 8));
}

/// A record whose bytes were changed on disk fails its CRC on read.
#[test]
fn corrupted_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .ingest_batch(&(0..3).map(|k| gen_sample(k, 8)).collect::<Vec<_>>())
        .unwrap();
    drop(store);
    let hot = files_under(&dir.path().join("hot"));
    let mut data = fs::read(&hot[0]).unwrap();
    let at = data.len() - 5;
    data[at] ^= 0x10;
    fs::write(&hot[0], &data).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.read(&[0, 1]).is_ok());
    let err = store.read(&[2]).unwrap_err();
    assert!(matches!(err, StoreError::Segment { .. }), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("checksum mismatch"), "{chain}");
}
