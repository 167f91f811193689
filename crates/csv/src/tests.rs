use super::*;

/// Every record as `line: field@col field@col ...` (`"q"` marks a quoted
/// field), then errors and the blank line count.
fn dump(text: &str, opts: Options) -> String {
    dump_with(text, opts, b',')
}

fn dump_with(text: &str, opts: Options, delimiter: u8) -> String {
    let mut r = Reader::with_delimiter(text, opts, delimiter);
    let mut out = Vec::new();
    loop {
        match r.read() {
            Ok(false) => break,
            Ok(true) => {
                let fields: Vec<String> = (0..r.len())
                    .map(|i| {
                        let q = if r.is_quoted(i) { "q" } else { "" };
                        format!("{:?}{q}@{}", r.field(i), r.col(i))
                    })
                    .collect();
                out.push(format!(
                    "{}: {} (end {})",
                    r.line(),
                    fields.join(" "),
                    r.end_col()
                ));
            }
            Err(e) => out.push(format!("error {e}")),
        }
    }
    out.push(format!("blank {}", r.blank_lines()));
    out.join("\n")
}

const STRICT: Options = Options {
    trim: false,
    multiline: false,
};
const TRIM: Options = Options {
    trim: true,
    multiline: false,
};
const RFC: Options = Options {
    trim: false,
    multiline: true,
};

#[test]
fn plain_fields_and_columns() {
    assert_eq!(
        dump("a,,b\né,ü,3\n", STRICT),
        "1: \"a\"@1 \"\"@3 \"b\"@4 (end 5)\n2: \"é\"@1 \"ü\"@3 \"3\"@5 (end 6)\nblank 0"
    );
}

#[test]
fn quotes_commas_escapes() {
    assert_eq!(
        dump("\"x,y\",\"say \"\"hi\"\"\",z,\n", STRICT),
        "1: \"x,y\"q@1 \"say \\\"hi\\\"\"q@7 \"z\"@20 \"\"@22 (end 22)\nblank 0"
    );
    // Columns after a quoted field with escapes count its raw characters.
    assert_eq!(
        dump("\"\"\"\",é,\"\"\n", STRICT),
        "1: \"\\\"\"q@1 \"é\"@6 \"\"q@8 (end 10)\nblank 0"
    );
}

#[test]
fn bom_crlf_blank_and_trailing_lines() {
    assert_eq!(
        dump("\u{feff}a,b\r\n\r\n  \r\n1,2\r\n\n", STRICT),
        "1: \"a\"@1 \"b\"@3 (end 4)\n4: \"1\"@1 \"2\"@3 (end 4)\nblank 3"
    );
    // No newline at the end; leading blank lines.
    assert_eq!(
        dump("\n\na,b", STRICT),
        "3: \"a\"@1 \"b\"@3 (end 4)\nblank 2"
    );
    assert_eq!(dump("", STRICT), "blank 0");
    assert_eq!(dump("\n \n", STRICT), "blank 2");
}

#[test]
fn ragged_rows_are_read_as_they_are() {
    assert_eq!(
        dump("a,b,c\n1\n1,2,3,4\n", STRICT),
        "1: \"a\"@1 \"b\"@3 \"c\"@5 (end 6)\n2: \"1\"@1 (end 2)\n3: \"1\"@1 \"2\"@3 \"3\"@5 \"4\"@7 (end 8)\nblank 0"
    );
}

#[test]
fn multiline_quotes() {
    let text = "a,\"two\nlines\",b\nc,d\n";
    assert_eq!(
        dump(text, RFC),
        "1: \"a\"@1 \"two\\nlines\"q@3 \"b\"@8 (end 9)\n3: \"c\"@1 \"d\"@3 (end 4)\nblank 0"
    );
    // Without multiline the field is unterminated on its line, and reading
    // goes on at the next line.
    assert_eq!(
        dump(text, STRICT),
        "error 1:3: unterminated quoted field\n2: \"lines\\\"\"@1 \"b\"@8 (end 9)\n3: \"c\"@1 \"d\"@3 (end 4)\nblank 0"
    );
}

#[test]
fn broken_quotes() {
    assert_eq!(
        dump("a,\"open", STRICT),
        "error 1:3: unterminated quoted field\nblank 0"
    );
    assert_eq!(
        dump("x\na,\"open\nb,c\n", STRICT),
        "1: \"x\"@1 (end 2)\nerror 2:3: unterminated quoted field\n3: \"b\"@1 \"c\"@3 (end 4)\nblank 0"
    );
    assert_eq!(
        dump("a,\"open\nb,c\n", RFC),
        "error 1:3: unterminated quoted field\nblank 0"
    );
    assert_eq!(
        dump("\"a\"b,c\nd\n", STRICT),
        "error 1:4: unexpected text after a closing quote\n2: \"d\"@1 (end 2)\nblank 0"
    );
    // Text after a closing quote, then a quote that would close on the
    // next line: one line at a time, the next line is a record of its own.
    assert_eq!(
        dump("\"a\"b,\"c\nd,\"e\"\nf\n", STRICT),
        "error 1:4: unexpected text after a closing quote\n2: \"d\"@1 \"e\"q@3 (end 6)\n3: \"f\"@1 (end 2)\nblank 0"
    );
    assert_eq!(
        dump("x,\"a\nb\"c\n", RFC),
        "error 2:3: unexpected text after a closing quote\nblank 0"
    );
}

#[test]
fn trim_allows_space_around_quotes() {
    assert_eq!(
        dump(" 10 , \"1.5\" ,\"a\" \t, \"x\"\"y\"\n", TRIM),
        "1: \"10\"@2 \"1.5\"q@7 \"a\"q@14 \"x\\\"y\"q@21 (end 27)\nblank 0"
    );
    assert_eq!(
        dump(" \"1.5\" x,2\n \"open,2\n", TRIM),
        "error 1:7: unexpected text after a closing quote\nerror 2:2: unterminated quoted field\nblank 0"
    );
    // Without trim, a quote after a space is text.
    assert_eq!(
        dump(" \"1.5\" ,2\n", STRICT),
        "1: \" \\\"1.5\\\" \"@1 \"2\"@9 (end 10)\nblank 0"
    );
}

proptest::proptest! {
    /// Any text reads to the end without a panic, in every mode, and every
    /// position is inside the text.
    #[test]
    fn any_text_reads_to_the_end(
        text in "[a,;\"\r\n \té\u{feff}]{0,40}",
        trim: bool,
        multiline: bool,
        delimiter in proptest::sample::select(vec![b',', b';', b'\t', b' ']),
    ) {
        let lines = text.split('\n').count();
        let mut r = Reader::with_delimiter(&text, Options { trim, multiline }, delimiter);
        let mut records = 0;
        loop {
            match r.read() {
                Ok(false) => break,
                Ok(true) => {
                    records += 1;
                    proptest::prop_assert!(r.line() >= 1 && r.line() <= lines);
                    for i in 0..r.len() {
                        proptest::prop_assert!(r.col(i) >= 1);
                        let _ = (r.field(i), r.is_quoted(i));
                    }
                    proptest::prop_assert!(r.end_col() >= 1);
                }
                Err(QuoteError::Unterminated { line, col } | QuoteError::TextAfterQuote { line, col }) => {
                    proptest::prop_assert!(line >= 1 && line <= lines && col >= 1);
                }
            }
            proptest::prop_assert!(records <= text.len());
        }
        proptest::prop_assert!(r.blank_lines() <= lines);
    }
}

#[test]
fn second_bom_and_lone_cr() {
    // The csv crate skips a byte-order mark as well; positions stay right.
    assert_eq!(
        dump("\u{feff}\u{feff}a,b", STRICT),
        "1: \"a\"@1 \"b\"@3 (end 4)\nblank 0"
    );
    // Records split at a lone `\r` share a line; blank lines count lines.
    assert_eq!(dump("\t\r\t", STRICT), "blank 1");
}

#[test]
fn other_delimiters() {
    assert_eq!(
        dump_with("a;\"b;c\" ;1,5\n", TRIM, b';'),
        "1: \"a\"@1 \"b;c\"q@3 \"1,5\"@10 (end 13)\nblank 0"
    );
    // With tabs between fields and trim on, a tab is never eaten as space:
    // an empty field stays a field and its column is its own.
    assert_eq!(
        dump_with("1\t\t\"x\"\t 2\n", TRIM, b'\t'),
        "1: \"1\"@1 \"\"@3 \"x\"q@4 \"2\"@9 (end 10)\nblank 0"
    );
    assert_eq!(
        dump_with("\"x\"\ty\n", STRICT, b'\t'),
        "1: \"x\"q@1 \"y\"@5 (end 6)\nblank 0"
    );
    // An invalid delimiter falls back to a comma.
    assert!(!valid_delimiter(b'"') && !valid_delimiter(b'\n') && !valid_delimiter(0xff));
    assert_eq!(
        dump_with("a,b", STRICT, b'"'),
        "1: \"a\"@1 \"b\"@3 (end 4)\nblank 0"
    );
}
