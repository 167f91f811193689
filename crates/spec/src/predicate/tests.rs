use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Evaluates `cond` with `$input` = `input` and `$s` = `s` (other steps missing).
fn eval(cond: &str, input: Value, s: Value) -> bool {
    let e = parse(cond).unwrap_or_else(|e| panic!("{cond}: {e} at {}", e.offset));
    e.eval(&|r| match r {
        Root::Input => Some(input.clone()),
        Root::Step(n) if n == "s" => Some(s.clone()),
        Root::Step(_) => None,
    })
}

/// `(offset, message)` of the error `cond` gives.
fn error(cond: &str) -> (usize, String) {
    match parse(cond) {
        Ok(e) => panic!("{cond} parsed as {e:?}"),
        Err(e) => (e.offset, e.message),
    }
}

#[test]
fn evaluates_table() {
    let input = json!({"video": {"duration": 75, "name": "cat.mp4", "tags": ["a", "b"]},
                       "kind": "a", "flag": true, "n": 1.0, "big": 1e300, "odd key": 3});
    let s = json!({"count": 2, "flagged": false, "items": [10, 20]});
    let cases: &[(&str, bool)] = &[
        ("$input.video.duration > 60", true),
        ("$input.video.duration > 60 and $s.count in [1, 2, 3]", true),
        ("$input.video.duration <= 60 or $s.count == 2", true),
        ("not ($s.flagged == true)", true),
        ("$s.flagged", false),
        ("$input.flag", true),
        ("not $input.flag", false),
        ("$input.kind in [\"a\", \"b\"]", true),
        ("$input.kind not in ['a', 'b']", false),
        ("$input.kind == 'a'", true),
        ("$input.n == 1", true),
        ("$input.big > 1e299", true),
        ("$s.items[1] == 20", true),
        ("$s.items[2] == 20", false),
        ("$input[\"odd key\"] == 3", true),
        ("\"b\" in $input.video.tags", true),
        ("\"cat\" in $input.video.name", true),
        ("\"kind\" in $input", true),
        ("$input.video.name < \"dog\"", true),
        // Missing values make every comparison false, != included.
        ("$input.nope == 1", false),
        ("$input.nope != 1", false),
        ("not ($input.nope == 1)", true),
        ("$other.x == 1", false),
        ("$input.video.duration.x == 1", false),
        // Mismatched runtime types: false, never an error.
        ("$input.kind > 3", false),
        ("$input.video < 3", false),
        ("$input.kind != 3", true),
        ("$input.video == {}", false),
        ("true", true),
        ("false or (true and not false)", true),
        ("$s.items == [10, 20.0]", true),
        ("$input.video.tags == [\"a\"]", false),
        ("$input.nope in [null]", false),
        ("$input.kind in $s", false),
    ];
    for (cond, want) in cases {
        if cond.contains("== {}") {
            assert!(parse(cond).is_err(), "objects are not literals");
            continue;
        }
        assert_eq!(eval(cond, input.clone(), s.clone()), *want, "{cond}");
    }
}

#[test]
fn errors_say_what_and_where() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty condition"),
        ("   ", 0, "empty condition"),
        ("$input.x ==", 11, "expected a path"),
        ("$input.x = 1", 9, "use =="),
        ("$input.x == 1 && $input.y", 14, "use and"),
        (
            "\"a\" < 3",
            4,
            "comparing a string with a number is always false",
        ),
        ("$input.x < true", 11, "not a boolean"),
        (
            "\"a\" == 3",
            4,
            "comparing a string with a number is always false",
        ),
        ("1 == 1", 0, "both sides are constants"),
        ("$input.x in 3", 12, "right side of 'in'"),
        ("3 in \"abc\"", 0, "left side must be a string"),
        ("\"unterminated", 0, "unterminated string"),
        ("$input.s == 'x", 12, "unterminated string"),
        ("(($input.x)", 11, "expected ')'"),
        ("$input.x)", 8, "unmatched ')'"),
        ("$", 0, "must be followed by 'input'"),
        ("$input.", 7, "field name"),
        ("$input[", 6, "expected an index"),
        ("$input[0", 6, "unclosed '['"),
        ("$input[99999999999999999999999]", 7, "too large"),
        ("$input.x == 1e999", 12, "out of range"),
        ("$input.x == 1.2.3", 12, "malformed number"),
        ("$input.x == -", 12, "expected a number"),
        ("size > 3", 0, "unknown word 'size'"),
        ("42", 0, "a number is not a condition"),
        ("$input.x in [1, $input.y]", 16, "literals, not paths"),
        ("$input.x in [1 2]", 15, "expected ',' or ']'"),
        ("$input.x == 'bad \\q'", 17, "unknown escape"),
        ("$input.x == '\\u12'", 13, "\\u needs 4 hex digits"),
        ("$input.x == '\\ud800'", 13, "\\u needs 4 hex digits"),
        ("$input.x == 1 $input.y", 14, "expected and, or or the end"),
        ("é == 1", 0, "unexpected character"),
        ("$input.x == 1 and", 17, "expected a path"),
        ("not", 3, "expected a path"),
    ];
    for (cond, offset, msg) in cases {
        let (o, m) = error(cond);
        assert!(m.contains(msg), "{cond}: {m}");
        assert_eq!(o, *offset, "{cond}: {m}");
    }
}

#[test]
fn unicode_strings_and_offsets_count_characters() {
    assert!(eval(
        "$input.name == \"café ☕\"",
        json!({"name": "café ☕"}),
        json!(null)
    ));
    assert!(eval(
        "$input.name == '\\u00e9'",
        json!({"name": "é"}),
        json!(null)
    ));
    // Offsets are in characters, so they map onto YAML columns.
    assert_eq!(error("$input.a == 'é' and $input.x ==").0, 31);
    assert!(
        parse("$input.x\u{3000}==\u{3000}1").is_ok(),
        "unicode whitespace"
    );
}

#[test]
fn limits_are_enforced_before_recursing() {
    let ok = format!("{}$input.x{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    let deep = format!(
        "{}$input.x{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(error(&deep).1.contains("nested more than 32"));
    let nots = format!("{}true", "not ".repeat(10_000));
    assert!(error(&nots).1.contains("more than the limit") || error(&nots).1.contains("nested"));
    let lists = format!("$input.x in {}1{}", "[".repeat(33), "]".repeat(33));
    assert!(error(&lists).1.contains("nested more than 32"));
    let long = format!("$input.x == \"{}\"", "a".repeat(MAX_LEN));
    assert!(error(&long).1.contains("more than the limit of 4096"));
    // A long flat chain is fine: and/or do not nest.
    let flat = vec!["$input.x == 1"; 200].join(" or ");
    assert!(parse(&flat).is_ok());
}

/// Found by the `predicate` fuzz target: keys printed with JSON escapes
/// (`\f`, `\u0014`) did not parse back.
#[test]
fn printed_control_characters_parse_back() {
    let e = parse("$input[\"k \\f\\b\\r\\/\\u0014\\n\"] == 1").unwrap();
    let printed = e.to_string();
    assert_eq!(parse(&printed).unwrap().to_string(), printed);
    assert!(e.eval(&|_| Some(json!({"k \u{c}\u{8}\r/\u{14}\n": 1}))));
}

#[test]
fn huge_numbers() {
    assert!(eval(
        "$input.x > 9223372036854775807",
        json!({"x": 1e19}),
        json!(null)
    ));
    assert!(eval(
        "$input.x == 18446744073709551615",
        json!({"x": u64::MAX}),
        json!(null)
    ));
    assert!(eval(
        "$input.x < -1e308",
        json!({"x": -f64::MAX}),
        json!(null)
    ));
}

#[test]
fn paths_are_listed_with_offsets() {
    let e = parse("$a.x == 1 or not ($b[0] in [1] and $input)").unwrap();
    let ps: Vec<(String, usize)> = e
        .paths()
        .iter()
        .map(|p| (p.to_string(), p.offset))
        .collect();
    assert_eq!(
        ps,
        [
            ("$a.x".into(), 0),
            ("$b[0]".into(), 18),
            ("$input".into(), 35)
        ]
    );
}

fn arb_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("$input.a > 1".to_string()),
        Just("$s.b == \"x\"".to_string()),
        Just("$input[\"k y\"][0] in [1, 'two', null]".to_string()),
        Just("$s.flag".to_string()),
        Just("true".to_string()),
        Just("$input.a not in [2]".to_string()),
    ];
    leaf.prop_recursive(5, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or {b}")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

proptest! {
    /// The canonical text parses back to an expression with the same text
    /// and the same value.
    #[test]
    fn display_round_trips(src in arb_expr(), a in -3i64..3, flag: bool) {
        let e = parse(&src).unwrap();
        let text = e.to_string();
        let again = parse(&text).unwrap();
        prop_assert_eq!(again.to_string(), text);
        let input = json!({"a": a, "k y": [a]});
        let s = json!({"b": "x", "flag": flag});
        let lookup = |r: &Root| match r {
            Root::Input => Some(input.clone()),
            Root::Step(_) => Some(s.clone()),
        };
        prop_assert_eq!(e.eval(&lookup), again.eval(&lookup));
    }

    /// Arbitrary text never panics, and errors point inside the text.
    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,64}") {
        if let Err(e) = parse(&src) {
            prop_assert!(e.offset <= src.chars().count());
        }
    }

    #[test]
    fn operator_soup_never_panics(src in "[$a-z.\\[\\]0-9\"'()<>=! ,-]{0,48}") {
        if let Ok(e) = parse(&src) {
            let _ = e.eval(&|_| Some(json!({"a": [1, {"b": 2}]})));
        }
    }
}
