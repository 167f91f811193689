//! `cargo +nightly fuzz run csv_parse` (from the repository root).
//! The CSV parser (file ingest and live ingest over HTTP) must never panic;
//! rows it accepts have finite features of one width (the width of the
//! feature names), and errors name a line inside the text. The second byte
//! picks the table options: delimiter, inferred or declared categorical
//! columns, and what a missing cell becomes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_dyndata::csv::{
    self, ColumnRef, ColumnSpec, CsvError, CsvOptions, Encoding, Header, LabelMap, Missing,
    OnBadRow, TableOptions,
};

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, t], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let missing = [
        Missing::Fail,
        Missing::Skip,
        Missing::Zero,
        Missing::Mean,
        Missing::Constant(1.5),
    ][(t as usize >> 3) % 5];
    let mut columns = Vec::new();
    if t & 0x40 != 0 {
        columns.push(ColumnSpec {
            column: ColumnRef::Index(0),
            encoding: Some(Encoding::Hash { buckets: 3 }),
            missing: None,
        });
    }
    if flags & 8 != 0 {
        columns.push(ColumnSpec {
            column: ColumnRef::Index(1),
            encoding: Some(Encoding::OneHot {
                values: (flags & 16 != 0).then(|| vec!["a".into(), "b".into()]),
                max_values: 2,
            }),
            missing: Some(Missing::Zero),
        });
    }
    let table = TableOptions {
        delimiter: [b',', b';', b'\t', b'|'][t as usize & 3],
        infer_categorical: t & 4 != 0,
        missing,
        max_values: 1 + (t as usize >> 7) * 3,
        columns,
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
        table,
    };
    let mut labels = LabelMap::default();
    match csv::parse("fuzz.csv", text, &opts, &mut labels) {
        Ok(p) => {
            for r in &p.rows {
                assert_eq!(r.features.len(), p.feature_columns.len());
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
