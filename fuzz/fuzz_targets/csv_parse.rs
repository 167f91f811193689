//! `cargo +nightly fuzz run csv_parse` (from the repository root).
//! The CSV parser (file ingest and live ingest over HTTP) must never panic;
//! rows it accepts have finite features of one width, and errors name a
//! line inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_dyndata::csv::{self, CsvError, CsvOptions, Header, LabelMap, OnBadRow};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = CsvOptions {
        label_column: None,
        timestamp_column: None,
        header: match flags % 3 {
            0 => Header::Auto,
            1 => Header::Present,
            _ => Header::Absent,
        },
        on_bad_row: if flags & 4 == 0 {
            OnBadRow::Fail
        } else {
            OnBadRow::Skip
        },
    };
    let mut labels = LabelMap::default();
    match csv::parse("fuzz.csv", text, &opts, &mut labels) {
        Ok(p) => {
            for r in &p.rows {
                assert_eq!(r.features.len(), p.rows[0].features.len());
                assert!(r.features.iter().all(|f| f.is_finite()));
            }
            assert!(p.rows.len() + p.skipped <= p.data_rows);
        }
        Err(CsvError::Row { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
        }
        Err(CsvError::File { .. }) => {}
    }
});
