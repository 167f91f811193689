//! Real-world tables: delimiters, categorical columns, missing cells, the
//! header rule and all-bad files, as data.

use std::fmt::Write as _;

use expect_test::{expect, Expect};

use crate::csv::{parse, ColumnRef, CsvOptions, CsvStream, Header, LabelMap, OnBadRow};

use super::*;

fn show(text: &str, opts: &CsvOptions) -> String {
    let mut labels = LabelMap::default();
    match parse("t.csv", text, opts, &mut labels) {
        Err(e) => format!("error: {e}\n"),
        Ok(p) => {
            let mut s = format!(
                "features={:?} data_rows={} skipped={}\n",
                p.feature_columns, p.data_rows, p.skipped
            );
            for r in &p.rows {
                writeln!(s, "t={} y={} x={:?}", r.timestamp, r.label, r.features).unwrap();
            }
            for b in &p.bad_rows {
                writeln!(s, "bad {}:{}: {}", b.line, b.col, b.message).unwrap();
            }
            s
        }
    }
}

fn check(text: &str, opts: CsvOptions, expect: Expect) {
    expect.assert_eq(&show(text, &opts));
}

fn with(table: TableOptions) -> CsvOptions {
    CsvOptions {
        table,
        ..CsvOptions::default()
    }
}

fn col(name: &str, encoding: Option<Encoding>, missing: Option<Missing>) -> ColumnSpec {
    ColumnSpec {
        column: ColumnRef::parse(name),
        encoding,
        missing,
    }
}

#[test]
fn a_header_of_numbers_is_never_data() {
    // As pandas writes a frame with unnamed columns: the labels would turn
    // into strings with a fake class "class".
    let pandas = "0,1,2,class\n0.5,1.5,2.5,0\n1.5,0.5,2.5,1\n";
    check(
        pandas,
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:1:1: cannot tell whether line 1 is a header: the first line reads 0,1,2 like the column names pandas writes for unnamed columns, so it may be a header of numbers; say so with header: true or header: false
        "#]],
    );
    check(
        pandas,
        CsvOptions {
            header: Header::Present,
            ..CsvOptions::default()
        },
        expect![[r#"
            features=["0", "1", "2"] data_rows=2 skipped=0
            t=0 y=0 x=[0.5, 1.5, 2.5]
            t=1 y=1 x=[1.5, 0.5, 2.5]
        "#]],
    );
    // With the index column pandas writes by default (an empty name).
    check(
        ",0,1,class\n0,0.5,1.5,0\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:1:1: cannot tell whether line 1 is a header: the first line reads ,0,1 like the column names pandas writes for unnamed columns, so it may be a header of numbers; say so with header: true or header: false
        "#]],
    );
    // Numbers that do not count columns are data; text is a header.
    assert_eq!(header_verdict(&["3", "1.5"], false), Verdict::Data);
    assert_eq!(header_verdict(&["1", "2"], false), Verdict::Data);
    assert_eq!(header_verdict(&["a", "2"], false), Verdict::Header);
    assert_eq!(header_verdict(&["0"], false), Verdict::Data);
    assert!(matches!(
        header_verdict(&["red", "2"], true),
        Verdict::Unsure(_)
    ));
    assert_eq!(header_verdict(&["color", "x"], true), Verdict::Header);
}

#[test]
fn delimiters() {
    check(
        "a;b;y\n1,5;2;0\n",
        with(TableOptions {
            delimiter: b';',
            ..TableOptions::default()
        }),
        expect![[r#"
            error: t.csv:2:1: column 'a': "1,5" is not a number (declare the column categorical if it holds categories)
        "#]],
    );
    check(
        "a\tb\ty\n1.5\t 2\tup\n",
        with(TableOptions {
            delimiter: b'\t',
            ..TableOptions::default()
        }),
        expect![[r#"
            features=["a", "b"] data_rows=1 skipped=0
            t=0 y=0 x=[1.5, 2.0]
        "#]],
    );
}

#[test]
fn a_file_without_features_names_the_delimiter() {
    check(
        "a;b;y\n1;2;0\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:1:1: 1 column(s) and none is a feature (read with the delimiter ','; if the file uses another, say so with delimiter)
        "#]],
    );
}

#[test]
fn inferred_one_hot_in_order_of_first_appearance() {
    let text = "color,x,y\nred,1,0\nblue,2,1\nred,3,0\n";
    check(
        text,
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:2:1: column 'color': "red" is not a number (declare the column categorical if it holds categories)
        "#]],
    );
    let infer = TableOptions {
        infer_categorical: true,
        ..TableOptions::default()
    };
    check(
        text,
        with(infer.clone()),
        expect![[r#"
            features=["color=red", "color=blue", "x"] data_rows=3 skipped=0
            t=0 y=0 x=[1.0, 0.0, 1.0]
            t=1 y=1 x=[0.0, 1.0, 2.0]
            t=2 y=0 x=[1.0, 0.0, 3.0]
        "#]],
    );
    // One distinct value too many: fatal even when bad rows are skipped,
    // naming file, line and column.
    check(
        text,
        CsvOptions {
            on_bad_row: OnBadRow::Skip,
            ..with(TableOptions {
                max_values: 1,
                ..infer
            })
        },
        expect![[r#"
            error: t.csv:3:1: column 'color': "blue" is distinct value 2 of a categorical column limited to 1 (max_values); raise the limit, declare the values, or use encoding hash
        "#]],
    );
}

#[test]
fn declared_values_and_hashing() {
    let text = "size,city,y\nS,paris,0\nXL,rome,1\nL,rome,1\n";
    let table = TableOptions {
        columns: vec![
            col(
                "size",
                Some(Encoding::OneHot {
                    values: Some(vec!["S".into(), "M".into(), "L".into()]),
                    max_values: 32,
                }),
                None,
            ),
            col("city", Some(Encoding::Hash { buckets: 3 }), None),
        ],
        ..TableOptions::default()
    };
    check(
        text,
        CsvOptions {
            on_bad_row: OnBadRow::Skip,
            ..with(table.clone())
        },
        expect![[r#"
            features=["size=S", "size=M", "size=L", "city#0", "city#1", "city#2"] data_rows=3 skipped=1
            t=0 y=0 x=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            t=2 y=1 x=[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
            bad 3:1: column 'size': "XL" is not one of the declared values (S, M, L)
        "#]],
    );
    assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    // A declared column named in a file without a header.
    check(
        "S,1,0\n",
        CsvOptions {
            header: Header::Absent,
            ..with(table)
        },
        expect![[r#"
            error: t.csv:1:1: declared column 'size' is named, but the file has no header; give a 0-based index instead
        "#]],
    );
}

#[test]
fn missing_cells() {
    let text = "a,c,y\n1,red,0\n,NA,1\n3,blue,0\n";
    let table = |missing| TableOptions {
        missing,
        columns: vec![col(
            "c",
            Some(Encoding::OneHot {
                values: None,
                max_values: 4,
            }),
            None,
        )],
        ..TableOptions::default()
    };
    check(
        text,
        with(table(Missing::Fail)),
        expect![[r#"
            error: t.csv:3:1: column 'a' is empty; declare what a missing value becomes (missing: zero, mean, skip or a constant)
        "#]],
    );
    // Skip: counted with its reason, even under on_bad_row: fail.
    check(
        text,
        with(table(Missing::Skip)),
        expect![[r#"
            features=["a", "c=red", "c=blue"] data_rows=3 skipped=1
            t=0 y=0 x=[1.0, 1.0, 0.0]
            t=2 y=0 x=[3.0, 0.0, 1.0]
            bad 3:1: column 'a' is empty (missing: skip)
        "#]],
    );
    check(
        text,
        with(table(Missing::Mean)),
        expect![[r#"
            features=["a", "c=red", "c=blue"] data_rows=3 skipped=0
            t=0 y=0 x=[1.0, 1.0, 0.0]
            t=1 y=1 x=[2.0, 0.0, 0.0]
            t=2 y=0 x=[3.0, 0.0, 1.0]
        "#]],
    );
    check(
        text,
        with(table(Missing::Constant(-7.5))),
        expect![[r#"
            features=["a", "c=red", "c=blue"] data_rows=3 skipped=0
            t=0 y=0 x=[1.0, 1.0, 0.0]
            t=1 y=1 x=[-7.5, 0.0, 0.0]
            t=2 y=0 x=[3.0, 0.0, 1.0]
        "#]],
    );
    // A per-column policy overrides the file's.
    let mut t = table(Missing::Fail);
    t.columns.push(col("a", None, Some(Missing::Zero)));
    t.columns[0].missing = Some(Missing::Zero);
    check(
        text,
        with(t),
        expect![[r#"
            features=["a", "c=red", "c=blue"] data_rows=3 skipped=0
            t=0 y=0 x=[1.0, 1.0, 0.0]
            t=1 y=1 x=[0.0, 0.0, 0.0]
            t=2 y=0 x=[3.0, 0.0, 1.0]
        "#]],
    );
    // No value to take the mean of.
    check(
        "a,b,y\n?,1,0\n,2,1\n",
        with(TableOptions {
            missing: Missing::Mean,
            ..TableOptions::default()
        }),
        expect![[r#"
            error: t.csv: column 'a': every value is missing, so it has no mean to fill them with; use missing: zero or a constant
        "#]],
    );
}

#[test]
fn an_all_bad_file_says_so_with_reasons() {
    check(
        "a,b,y\n1,x,0\n2,3\n4,,1\n5,y,0\n",
        CsvOptions {
            on_bad_row: OnBadRow::Skip,
            ..CsvOptions::default()
        },
        expect![[r#"
            error: t.csv: every one of its 4 data rows is bad (all skipped); the first: line 2:3: column 'b': "x" is not a number (declare the column categorical if it holds categories); line 3:4: expected 3 columns, found 2; line 4:3: column 'b' is empty; declare what a missing value becomes (missing: zero, mean, skip or a constant)
        "#]],
    );
}

#[test]
fn declared_columns_must_be_features() {
    check(
        "a,y\n1,0\n",
        with(TableOptions {
            columns: vec![col("y", Some(Encoding::Hash { buckets: 2 }), None)],
            ..TableOptions::default()
        }),
        expect![[r#"
            error: t.csv:1:1: declared column 'y' is the label or timestamp column; encodings and missing values apply to features
        "#]],
    );
    check(
        "a,y\n1,0\n",
        with(TableOptions {
            columns: vec![col("a", None, Some(Missing::Zero)), col("0", None, None)],
            ..TableOptions::default()
        }),
        expect![[r#"
            error: t.csv:1:1: column 0 is declared twice
        "#]],
    );
}

#[test]
fn a_stream_in_pieces_encodes_like_the_whole_text() {
    let text = "color,x,y\nred,1,0\nblue,,1\nred,3,0\ngreen,5,1\n";
    let opts = with(TableOptions {
        infer_categorical: true,
        missing: Missing::Mean,
        ..TableOptions::default()
    });
    let whole = show(text, &opts);
    let mut labels = LabelMap::default();
    let mut s = CsvStream::new("t.csv", opts, usize::MAX);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, chunk) in lines.chunks(2).enumerate() {
        s.feed(&chunk.concat(), i * 2 + 1, &mut labels).unwrap();
    }
    let p = s.finish().unwrap();
    assert_eq!(
        p.feature_columns,
        ["color=red", "color=blue", "color=green", "x"]
    );
    assert_eq!(p.rows[1].features, [0.0, 1.0, 0.0, 3.0]);
    assert!(whole.contains("t=1 y=1 x=[0.0, 1.0, 0.0, 3.0]"), "{whole}");
}
