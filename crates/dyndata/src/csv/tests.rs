//! The CSV parser's cases, as data.

use std::fmt::Write as _;

use expect_test::{expect, Expect};

use super::*;

fn check(text: &str, opts: CsvOptions, expect: Expect) {
    let mut labels = LabelMap::default();
    let actual = match parse("t.csv", text, &opts, &mut labels) {
        Err(e) => format!("error: {e}\n"),
        Ok(p) => {
            let mut s = format!(
                "columns={:?} features={:?} data_rows={} skipped={} blank={}\n",
                p.columns, p.feature_columns, p.data_rows, p.skipped, p.blank_lines
            );
            for r in &p.rows {
                writeln!(s, "t={} y={} x={:?}", r.timestamp, r.label, r.features).unwrap();
            }
            for b in &p.bad_rows {
                writeln!(s, "bad {}:{}: {}", b.line, b.col, b.message).unwrap();
            }
            if labels.numeric == Some(false) {
                writeln!(s, "labels={:?}", labels.names).unwrap();
            }
            s
        }
    };
    expect.assert_eq(&actual);
}

fn skip() -> CsvOptions {
    CsvOptions {
        on_bad_row: OnBadRow::Skip,
        ..CsvOptions::default()
    }
}

#[test]
fn header_detection_and_defaults() {
    check(
        "a,b,class\n1,2,0\n3.5,-4,1\n",
        CsvOptions::default(),
        expect![[r#"
            columns=["a", "b", "class"] features=["a", "b"] data_rows=2 skipped=0 blank=0
            t=0 y=0 x=[1.0, 2.0]
            t=1 y=1 x=[3.5, -4.0]
        "#]],
    );
    // No header, string labels: the label column is not used for detection.
    check(
        "1,2,up\n3,4,down\n5,6,up\n",
        CsvOptions::default(),
        expect![[r#"
            columns=["c0", "c1", "c2"] features=["c0", "c1"] data_rows=3 skipped=0 blank=0
            t=0 y=0 x=[1.0, 2.0]
            t=1 y=1 x=[3.0, 4.0]
            t=2 y=0 x=[5.0, 6.0]
            labels=["up", "down"]
        "#]],
    );
}

#[test]
fn chosen_columns_and_quotes() {
    check(
        "time,\"x, y\",label,z\n 10 , \"1.5\" ,7,2\n\n12,2,8,\"3\"\n",
        CsvOptions {
            label_column: Some(ColumnRef::Name("label".into())),
            timestamp_column: Some(ColumnRef::Index(0)),
            ..CsvOptions::default()
        },
        expect![[r#"
            columns=["time", "x, y", "label", "z"] features=["x, y", "z"] data_rows=2 skipped=0 blank=1
            t=10 y=7 x=[1.5, 2.0]
            t=12 y=8 x=[2.0, 3.0]
        "#]],
    );
}

#[test]
fn bad_rows_fail_with_position() {
    let text = "a,b,y\n1,2,0\n1,x,0\n";
    check(
        text,
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:3:3: column 'b': "x" is not a number (declare the column categorical if it holds categories)
        "#]],
    );
    check(
        "a,b,y\n1,2\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:2:4: expected 3 columns, found 2
        "#]],
    );
    check(
        "a,b,y\n1,2,3,4\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:2:7: expected 3 columns, found 4
        "#]],
    );
    check(
        "a,b,y\n1,NaN,0\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:2:3: column 'b': value "NaN" is not finite (NaN and infinity are rejected)
        "#]],
    );
    check(
        "a,b,y\n1,2,0\n1,1e39,0\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:3:3: column 'b': value "1e39" is not finite (NaN and infinity are rejected)
        "#]],
    );
    check(
        "a,b,y\n1,2,0\n1,2,cat\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:3:5: label column 'y': "cat" is not an integer, but earlier labels were
        "#]],
    );
    check(
        "a,b,y\n1,\"2,0\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv:2:3: unterminated quoted field
        "#]],
    );
    check(
        "t,a,y\n1.5,2,0\n",
        CsvOptions {
            timestamp_column: Some(ColumnRef::Name("t".into())),
            ..CsvOptions::default()
        },
        expect![[r#"
            error: t.csv:2:1: timestamp column 't': "1.5" is not an integer
        "#]],
    );
}

#[test]
fn quoting_line_ends_and_ragged_rows() {
    // A BOM, CRLF, quoted names with commas and escaped quotes, string
    // labels with a comma, an empty trailing line.
    check(
        "\u{feff}\"x, 1\",\"say \"\"x\"\"\",y\r\n1,2,\"up, mostly\"\r\n3,4,down\r\n\r\n",
        CsvOptions::default(),
        expect![[r#"
            columns=["x, 1", "say \"x\"", "y"] features=["x, 1", "say \"x\""] data_rows=2 skipped=0 blank=1
            t=0 y=0 x=[1.0, 2.0]
            t=1 y=1 x=[3.0, 4.0]
            labels=["up, mostly", "down"]
        "#]],
    );
    // Ragged rows and broken quotes are skipped with their position.
    check(
        "a,b,y\r\n1,2\r\n1,2,0,9\r\n\"1\"x,2,0\r\n5,\"6,1\r\n7,8,1\r\n",
        skip(),
        expect![[r#"
            columns=["a", "b", "y"] features=["a", "b"] data_rows=5 skipped=4 blank=0
            t=4 y=1 x=[7.0, 8.0]
            bad 2:4: expected 3 columns, found 2
            bad 3:7: expected 3 columns, found 4
            bad 4:4: unexpected text after a quoted field
            bad 5:3: unterminated quoted field
        "#]],
    );
}

#[test]
fn bad_rows_skipped_and_counted() {
    check(
        "a,b,y\n1,2,0\n1,x,0\n\n3,4\n5,6,1\n7,inf,1\n",
        skip(),
        expect![[r#"
            columns=["a", "b", "y"] features=["a", "b"] data_rows=5 skipped=3 blank=1
            t=0 y=0 x=[1.0, 2.0]
            t=3 y=1 x=[5.0, 6.0]
            bad 3:3: column 'b': "x" is not a number (declare the column categorical if it holds categories)
            bad 5:4: expected 3 columns, found 2
            bad 7:3: column 'b': value "inf" is not finite (NaN and infinity are rejected)
        "#]],
    );
}

#[test]
fn column_errors() {
    check(
        "a,b,y\n1,2,0\n",
        CsvOptions {
            label_column: Some(ColumnRef::Name("class".into())),
            ..CsvOptions::default()
        },
        expect![[r#"
            error: t.csv:1:1: label column 'class' is not in the header (columns: a, b, y)
        "#]],
    );
    check(
        "1,2,0\n",
        CsvOptions {
            label_column: Some(ColumnRef::Index(5)),
            ..CsvOptions::default()
        },
        expect![[r#"
            error: t.csv:1:1: label column 5 does not exist: the file has 3 columns (indexes 0..2 or -3..-1)
        "#]],
    );
    check(
        "1,2,0\n",
        CsvOptions {
            header: Header::Absent,
            timestamp_column: Some(ColumnRef::Name("t".into())),
            ..CsvOptions::default()
        },
        expect![[r#"
            error: t.csv:1:1: timestamp column 't' is named, but the file has no header; give a 0-based index instead
        "#]],
    );
    check(
        "\n\n",
        CsvOptions::default(),
        expect![[r#"
            error: t.csv: no rows: the file is empty
        "#]],
    );
}

#[test]
fn a_stream_fed_in_pieces_parses_like_the_whole_text() {
    let text = "x,y,class\n1,2,up\n\n3,\"4\",down\r\n5,6,up\n7,8\n";
    let whole = parse("t.csv", text, &skip(), &mut LabelMap::default()).unwrap();
    let mut labels = LabelMap::default();
    let mut p = CsvStream::new("t.csv", skip(), usize::MAX);
    // Pieces of whole lines, numbered in the whole text.
    p.feed("x,y,class\n1,2,up\n\n", 1, &mut labels).unwrap();
    assert_eq!(p.rows(), 1);
    p.feed("3,\"4\",down\r\n5,6,up\n", 4, &mut labels).unwrap();
    p.feed("7,8\n", 6, &mut labels).unwrap();
    assert_eq!(p.finish().unwrap(), whole);
    assert_eq!(whole.bad_rows[0].line, 6);
    assert_eq!(whole.blank_lines, 1);
    // Too many fields: refused before a field is looked at.
    let mut p = CsvStream::new("body", CsvOptions::default(), 3);
    p.feed("1,2,0\n", 1, &mut labels).unwrap();
    let e = p.feed("1,2,3,4,5\n", 2, &mut labels).unwrap_err();
    assert_eq!(e.to_string(), "body:2:1: 5 fields; at most 3 are accepted");
    let e = CsvStream::new("body", CsvOptions::default(), 3)
        .feed(&"1,".repeat(10), 7, &mut labels)
        .unwrap_err();
    assert_eq!(e.to_string(), "body:7:1: 11 fields; at most 3 are accepted");
}

proptest::proptest! {
    #[test]
    fn any_runs_of_whole_lines_parse_like_the_whole_text(
        text in "[01a,\"\n ]{0,60}", cuts in proptest::collection::vec(0usize..60, 0..5),
        skip_bad: bool,
    ) {
        let opts = if skip_bad { skip() } else { CsvOptions::default() };
        let whole = parse("t", &text, &opts, &mut LabelMap::default());
        // Runs end after a line break.
        let ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
        let mut cuts: Vec<usize> = cuts.iter().filter_map(|c| ends.get(c % ends.len().max(1)).copied()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut p = CsvStream::new("t", opts, usize::MAX);
        let mut labels = LabelMap::default();
        let (mut at, mut line) = (0, 1);
        let mut fed = Ok(());
        for c in cuts.into_iter().chain([text.len()]) {
            if fed.is_ok() && c >= at {
                fed = p.feed(&text[at..c], line, &mut labels);
                line += text[at..c].matches('\n').count();
                at = c;
            }
        }
        let streamed = fed.and_then(|()| p.finish());
        match (streamed, whole) {
            (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a.rows, b.rows),
            (Err(a), Err(b)) => proptest::prop_assert_eq!(a, b),
            (a, b) => proptest::prop_assert!(false, "streamed {:?}, whole {:?}", a, b),
        }
    }
}

#[test]
fn label_map_is_first_appearance_and_persistent() {
    let mut m = LabelMap::default();
    assert_eq!(m.id("b"), Some(0));
    assert_eq!(m.id("a"), Some(1));
    assert_eq!(m.id("b"), Some(0));
    assert_eq!(
        m.id("7"),
        Some(2),
        "numbers are names once labels are strings"
    );
    assert_eq!(m.name(1), "a");
    let mut n = LabelMap::default();
    assert_eq!(n.id("1.0"), Some(1));
    assert_eq!(n.id("x"), None);
    assert_eq!(n.name(4), "4");
}
