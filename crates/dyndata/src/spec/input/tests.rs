//! The table fields of `data`: each case is a `data` block and the parsed
//! table options or the errors.

use expect_test::{expect, Expect};

use crate::spec::parse;

fn check(data_fields: &str, expect: Expect) {
    let text = format!(
        "pipeline: {{name: t}}\ndata:\n  dataset: x.csv\n  window: {{samples: 10}}\n{data_fields}\
         model: {{id: logreg}}\ntrigger: {{every_samples: 10}}\nselection: {{strategy: all}}\n"
    );
    let actual = match parse("p.yaml", &text) {
        Ok(p) => format!("{:?}\n", p.data.table),
        Err(e) => format!("{e}\n"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn every_table_field() {
    check(
        r#"  delimiter: tab
  missing: {constant: 0.5}
  infer_categorical: true
  max_values: 8
  columns:
    color: one_hot
    2: {encoding: hash, buckets: 16, missing: zero}
    "3": {encoding: one_hot, values: [S, M, L]}
    temp: {missing: mean}
    id: numeric
"#,
        expect![[r#"
            TableOptions { delimiter: 9, missing: Constant(0.5), infer_categorical: true, max_values: 8, columns: [ColumnSpec { column: Name("color"), encoding: Some(OneHot { values: None, max_values: 8 }), missing: None }, ColumnSpec { column: Index(2), encoding: Some(Hash { buckets: 16 }), missing: Some(Zero) }, ColumnSpec { column: Name("3"), encoding: Some(OneHot { values: Some(["S", "M", "L"]), max_values: 8 }), missing: None }, ColumnSpec { column: Name("temp"), encoding: None, missing: Some(Mean) }, ColumnSpec { column: Name("id"), encoding: None, missing: None }] }
        "#]],
    );
    check(
        "  delimiter: \";\"\n  missing: skip\n",
        expect![[r#"
            TableOptions { delimiter: 59, missing: Skip, infer_categorical: false, max_values: 32, columns: [] }
        "#]],
    );
}

#[test]
fn bad_table_fields_name_the_field() {
    check(
        r#"  delimiter: ";;"
  missing: average
  max_values: 0
  columns:
    a: {encoding: hash, values: [x], max_values: 3}
    b: {encoding: one_hot, values: [x, x]}
    c: {encoding: onehot}
    d: {}
    e: {missing: {constant: nan}}
    f: [1]
"#,
        expect![[r#"
            p.yaml:5:14: data.delimiter: expected one ASCII character other than a quote or a line break (e.g. ",", ";", "|" or tab), found string ";;"
            p.yaml:6:12: data.missing: unknown value 'average'; use one of fail, skip, zero, mean
            p.yaml:7:15: data.max_values: 0 is out of range; use a value in 1..=65536
            p.yaml:9:33: data.columns.a.values: values applies to one_hot columns only; set encoding accordingly or remove it
            p.yaml:9:50: data.columns.a.max_values: max_values applies to one_hot columns only; set encoding accordingly or remove it
            p.yaml:10:40: data.columns.b.values[1]: "x" is listed twice
            p.yaml:11:19: data.columns.c.encoding: unknown value 'onehot' (did you mean 'one_hot'?); use one of one_hot, hash, numeric
            p.yaml:12:8: data.columns.d: declares nothing; give encoding or missing
            p.yaml:13:29: data.columns.e.missing.constant: expected a number, found number nan
            p.yaml:14:8: data.columns.f: expected one of one_hot, hash, numeric, found a list
        "#]],
    );
}
