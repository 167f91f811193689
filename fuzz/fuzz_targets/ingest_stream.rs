//! `cargo +nightly fuzz run ingest_stream` (from the repository root).
//! Live ingest parses an HTTP body as it arrives: `lines::Lines` splits the
//! pieces into runs of whole lines (line length limited), and
//! `csv::CsvStream` / `jsonl::parse_into` parse each run. Whatever the cuts,
//! nothing panics, a line over the limit is refused, and the rows are those
//! of parsing the whole text at once, also with another delimiter, inferred
//! categorical columns and means filled in at the end (high bits of the
//! second byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_dyndata::csv::{
    self, CsvOptions, CsvStream, Header, LabelMap, Missing, OnBadRow, TableOptions,
};
use stratus_dyndata::jsonl;
use stratus_dyndata::lines::{Lines, LinesError};

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, cut_seed], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_line = 1 + (flags as usize >> 3) * 4;
    let batch = (cut_seed as usize & 0x0f) * 3;
    // Pieces of pseudo-random lengths.
    let mut pieces = Vec::new();
    let (mut at, mut x) = (0, cut_seed as usize | 1);
    while at < body.len() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = 1 + (x >> 8) % 13;
        pieces.push(&body[at..(at + n).min(body.len())]);
        at += n;
    }
    let mut lines = Lines::new(max_line);
    let mut runs = Vec::new();
    let mut fed = |r: Result<Option<(usize, String)>, LinesError>| match r {
        Ok(Some(run)) => {
            runs.push(run);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let mut split = Ok(());
    for p in &pieces {
        split = lines.push(p).and_then(|()| fed(lines.take(batch)));
        if split.is_err() {
            break;
        }
    }
    if split.is_ok() {
        split = fed(lines.finish());
    }
    let longest = body
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    match split {
        Err(LinesError::TooLong { line, max }) => {
            assert_eq!(max, max_line);
            assert!(longest > max_line);
            let n = body
                .split(|&b| b == b'\n')
                .position(|l| l.len() > max_line)
                .unwrap();
            assert_eq!(line, n + 1, "the first long line");
            return;
        }
        Err(LinesError::NotUtf8 { .. }) => {
            assert!(std::str::from_utf8(body).is_err());
            return;
        }
        Ok(()) => assert!(longest <= max_line),
    }
    let text: String = runs.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text.as_bytes(), body);
    let mut next = 1;
    for (first, t) in &runs {
        assert_eq!(*first, next);
        next += t.matches('\n').count();
    }

    if flags & 1 == 0 {
        let opts = CsvOptions {
            header: if flags & 2 == 0 {
                Header::Auto
            } else {
                Header::Absent
            },
            on_bad_row: if flags & 4 == 0 {
                OnBadRow::Fail
            } else {
                OnBadRow::Skip
            },
            table: TableOptions {
                delimiter: [b',', b';', b'\t', b' '][(cut_seed as usize >> 4) & 3],
                infer_categorical: cut_seed & 0x40 != 0,
                missing: if cut_seed & 0x80 != 0 {
                    Missing::Mean
                } else {
                    Missing::Fail
                },
                max_values: 3,
                columns: Vec::new(),
            },
            ..CsvOptions::default()
        };
        let mut labels = LabelMap::default();
        let mut stream = CsvStream::new("fuzz", opts.clone(), usize::MAX);
        let streamed = runs
            .iter()
            .try_for_each(|(first, t)| stream.feed(t, *first, &mut labels))
            .and_then(|()| stream.finish());
        // A byte-order mark or a lone CR starts a record mid-line in the
        // whole text; between runs it cannot, so compare only without them.
        if !text.contains('\u{feff}') && !text.contains('\r') {
            let whole = csv::parse("fuzz", &text, &opts, &mut LabelMap::default());
            match (streamed, whole) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.rows, b.rows);
                    assert_eq!(a.feature_columns, b.feature_columns);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("streamed {a:?}, whole {b:?}"),
            }
        }
    } else {
        let mut out = Vec::new();
        let streamed = runs
            .iter()
            .try_for_each(|(first, t)| jsonl::parse_into("fuzz", t, *first, None, 0, 64, &mut out));
        if streamed.is_ok() {
            let whole = jsonl::parse("fuzz", &text, None, 0).unwrap();
            assert_eq!(out, whole);
            assert!(out.iter().all(|s| s.features.len() <= 64));
        }
    }
});
