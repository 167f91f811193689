//! Text functions: `split`, `wc-map`, `wc-merge`, `wc-reduce`.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use serde_json::Value;

use super::json_str::write_json_str;
use super::{json_input, path_str, text_input, type_name, BadInput};
use crate::SplitMode;

/// `split`: text (raw, or a JSON string) → JSON array of strings.
pub fn split(body: &[u8], mode: SplitMode) -> Result<Vec<u8>, BadInput> {
    let text = text_input(body)?;
    let parts = split_text(&text, mode);
    let mut out = Vec::with_capacity(text.len() + text.len() / 16 + 3 * parts.len() + 2);
    out.push(b'[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, p);
    }
    out.push(b']');
    Ok(out)
}

/// Cuts `text` at line boundaries (just after a `\n`) into parts; the parts
/// concatenate back to `text`, none is empty, and an empty text has no parts.
///
/// `Parts(n)` aims at `n` parts of similar size, `ChunkBytes(c)` at parts of
/// about `c` bytes; each cut goes to the line boundary nearest the ideal
/// position, so a part is never cut inside a line (a single line longer than
/// the target stays whole, and fewer parts come out).
pub fn split_text(text: &str, mode: SplitMode) -> Vec<&str> {
    let len = text.len();
    let mut parts = Vec::new();
    let mut start = 0;
    match mode {
        SplitMode::Parts(n) => {
            let n = n.max(1);
            for k in 1..n {
                let target = (len as u128 * k as u128 / n as u128) as usize;
                cut_at(text, &mut start, target, &mut parts);
            }
        }
        SplitMode::ChunkBytes(c) => {
            let c = c.max(1);
            while start + c < len {
                let before = start;
                let target = start + c;
                cut_at(text, &mut start, target, &mut parts);
                if start == before {
                    break; // no line boundary left
                }
            }
        }
    }
    if start < len {
        parts.push(&text[start..]);
    }
    parts
}

/// Ends the part that begins at `start` at the line boundary nearest `target`, if any.
fn cut_at<'a>(text: &'a str, start: &mut usize, target: usize, parts: &mut Vec<&'a str>) {
    let len = text.len();
    if target <= *start || target >= len {
        return;
    }
    if let Some(cut) = cut_near(text.as_bytes(), *start, target) {
        if cut < len {
            parts.push(&text[*start..cut]);
            *start = cut;
        }
    }
}

/// The line boundary (index just after a `\n`) in `(start, len]` nearest to `target`.
fn cut_near(bytes: &[u8], start: usize, target: usize) -> Option<usize> {
    let before = bytes[start..target]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| start + i + 1);
    let after = bytes[target..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| target + i + 1);
    let before = before.filter(|&c| c > start);
    match (before, after) {
        (Some(b), Some(a)) => Some(if target - b <= a - target { b } else { a }),
        (b, a) => b.or(a),
    }
}

/// Adds the words of `text` to `counts`: maximal runs of alphanumeric
/// characters (Unicode-aware, [`char::is_alphanumeric`]), lowercased.
///
/// Stretches between ASCII separators are taken a byte at a time; one that
/// holds a non-ASCII character is split by characters.
pub fn count_words<S: BuildHasher>(text: &str, counts: &mut HashMap<String, u64, S>) {
    let b = text.as_bytes();
    let word_byte = |c: u8| c >= 0x80 || c.is_ascii_alphanumeric();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && !word_byte(b[i]) {
            i += 1;
        }
        let start = i;
        let (mut ascii, mut upper) = (true, false);
        while i < b.len() && word_byte(b[i]) {
            ascii &= b[i] < 0x80;
            upper |= b[i].is_ascii_uppercase();
            i += 1;
        }
        // Both ends are at an ASCII byte or an end of `text`: char boundaries.
        let stretch = &text[start..i];
        if stretch.is_empty() {
            continue;
        }
        if ascii {
            add_word(counts, stretch, upper);
            continue;
        }
        for word in stretch
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let lower = !word.is_ascii() || word.bytes().any(|b| b.is_ascii_uppercase());
            add_word(counts, word, lower);
        }
    }
}

/// Counts `word` once, lowercased first when `lower`.
fn add_word<S: BuildHasher>(counts: &mut HashMap<String, u64, S>, word: &str, lower: bool) {
    if lower {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    } else if let Some(c) = counts.get_mut(word) {
        *c += 1;
    } else {
        counts.insert(word.to_owned(), 1);
    }
}

/// A word count's map: `foldhash`'s per-process seeded hasher, several
/// times faster than the standard one on short words.
type Counts = HashMap<String, u64, foldhash::fast::RandomState>;

/// `wc-map`: a JSON string, a JSON array of strings (e.g. a batch of `split`
/// parts), or raw UTF-8 text → JSON object word → count (keys sorted).
pub fn wc_map(body: &[u8]) -> Result<Vec<u8>, BadInput> {
    let mut counts = Counts::default();
    let trimmed = body.trim_ascii_start();
    let array = if trimmed.first() == Some(&b'[') {
        serde_json::from_slice::<Vec<String>>(body).ok()
    } else {
        None
    };
    match array {
        Some(texts) => texts.iter().for_each(|t| count_words(t, &mut counts)),
        None => count_words(&text_input(body)?, &mut counts),
    }
    Ok(counts_to_json(&counts))
}

fn counts_to_json(counts: &Counts) -> Vec<u8> {
    let sorted: BTreeMap<&str, u64> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    serde_json::to_vec(&sorted).expect("map serializes")
}

/// Sums word-count objects found in `v`: an object word → count, or an array
/// (nested to any depth) of them.
pub fn merge_counts<S: BuildHasher>(
    v: &Value,
    counts: &mut HashMap<String, u64, S>,
) -> Result<(), BadInput> {
    fn walk<S: BuildHasher>(
        v: &Value,
        counts: &mut HashMap<String, u64, S>,
        path: &mut Vec<usize>,
    ) -> Result<(), BadInput> {
        match v {
            Value::Object(m) => {
                for (word, n) in m {
                    let n = n.as_u64().ok_or_else(|| {
                        BadInput(format!(
                            "{}: count of {word:?} is {n}, expected a non-negative integer",
                            path_str(path)
                        ))
                    })?;
                    match counts.get_mut(word.as_str()) {
                        Some(c) => *c += n,
                        None => {
                            counts.insert(word.clone(), n);
                        }
                    }
                }
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i);
                    walk(item, counts, path)?;
                    path.pop();
                }
                Ok(())
            }
            other => Err(BadInput(format!(
                "{}: expected a word-count object (or an array of them), found {}",
                path_str(path),
                type_name(other)
            ))),
        }
    }
    walk(v, counts, &mut Vec::new())
}

fn parse_counts(body: &[u8]) -> Result<Counts, BadInput> {
    let v = json_input(
        body,
        "word-count object or array of them",
        Value::Array(vec![]),
    )?;
    let mut counts = Counts::default();
    merge_counts(&v, &mut counts)?;
    Ok(counts)
}

/// `wc-merge`: word-count objects → one word-count object (for tree reductions).
pub fn wc_merge(body: &[u8]) -> Result<Vec<u8>, BadInput> {
    Ok(counts_to_json(&parse_counts(body)?))
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    total_words: u64,
    unique_words: usize,
    top: Vec<(&'a str, u64)>,
}

/// `wc-reduce`: word-count objects → `{"total_words":N,"unique_words":U,"top":[[word,count],...]}`,
/// `top` holding the `top_n` most frequent words, by count (descending) then word.
pub fn wc_reduce(body: &[u8], top_n: usize) -> Result<Vec<u8>, BadInput> {
    let counts = parse_counts(body)?;
    let mut top: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    if top.len() > top_n && top_n > 0 {
        top.select_nth_unstable_by(top_n - 1, order);
    }
    top.truncate(top_n);
    top.sort_unstable_by(order);
    let summary = Summary {
        total_words: counts.values().sum(),
        unique_words: counts.len(),
        top,
    };
    Ok(serde_json::to_vec(&summary).expect("summary serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn lines(n: usize) -> String {
        (0..n).map(|i| format!("line number {i}\n")).collect()
    }

    #[test]
    fn split_into_parts_at_line_boundaries() {
        let text = lines(100);
        for n in [1, 2, 3, 4, 7, 100, 500] {
            let parts = split_text(&text, SplitMode::Parts(n));
            assert_eq!(parts.concat(), text, "n={n}");
            if n <= 10 {
                assert_eq!(parts.len(), n, "n={n}");
            } else {
                // Cuts go to the nearest line boundary, so with about one line
                // per part a few parts get two lines.
                assert!((90..=100).contains(&parts.len()), "n={n}: {}", parts.len());
            }
            for p in &parts {
                assert!(p.ends_with('\n') && !p.is_empty());
            }
        }
        // Balanced: 100 similar lines into 4 parts of 25 lines.
        let parts = split_text(&text, SplitMode::Parts(4));
        let sizes: Vec<usize> = parts.iter().map(|p| p.lines().count()).collect();
        assert!(sizes.iter().all(|&s| (24..=26).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn split_edge_cases() {
        assert!(split_text("", SplitMode::Parts(4)).is_empty());
        assert_eq!(
            split_text("one line, no newline", SplitMode::Parts(4)),
            vec!["one line, no newline"]
        );
        assert_eq!(split_text("a\nb", SplitMode::Parts(2)), vec!["a\n", "b"]);
        // A long first line stays whole.
        let text = format!("{}\nshort\n", "x".repeat(100));
        let parts = split_text(&text, SplitMode::Parts(4));
        assert_eq!(parts.concat(), text);
        assert!(parts[0].len() > 100);
        // Multi-byte text is cut only at newlines.
        let text = "héllo wörld\nçà et là\n日本語のテキスト\n".repeat(10);
        for n in 1..12 {
            assert_eq!(split_text(&text, SplitMode::Parts(n)).concat(), text);
        }
    }

    #[test]
    fn split_by_chunk_bytes() {
        let text = lines(100); // 1390 bytes, 13-14 bytes a line
        let parts = split_text(&text, SplitMode::ChunkBytes(140));
        assert_eq!(parts.concat(), text);
        assert!((9..=11).contains(&parts.len()), "{}", parts.len());
        for p in &parts[..parts.len() - 1] {
            assert!((120..=160).contains(&p.len()), "{}", p.len());
        }
        assert_eq!(
            split_text(&text, SplitMode::ChunkBytes(1 << 20)),
            vec![text.as_str()]
        );
        assert_eq!(split_text(&text, SplitMode::ChunkBytes(1)).len(), 100);
        assert_eq!(
            split_text("no newline at all", SplitMode::ChunkBytes(3)).len(),
            1
        );
    }

    #[test]
    fn split_handler_output() {
        let out = split(b"a\nb\nc\nd\n", SplitMode::Parts(2)).unwrap();
        assert_eq!(out, br#"["a\nb\n","c\nd\n"]"#);
        assert_eq!(split(b"", SplitMode::Parts(4)).unwrap(), b"[]");
        // JSON string input is decoded first.
        let out = split(br#""x\ny\n""#, SplitMode::Parts(2)).unwrap();
        assert_eq!(parse(&out), json!(["x\n", "y\n"]));
        assert!(split(b"\xff", SplitMode::Parts(2)).is_err());
    }

    #[test]
    fn wc_map_counts_lowercased_alphanumeric_words() {
        let out = wc_map(b"The cat; the DOG -- the_end. 42 42x").unwrap();
        assert_eq!(
            parse(&out),
            json!({"the": 3, "cat": 1, "dog": 1, "end": 1, "42": 1, "42x": 1})
        );
        // Output keys are sorted, so output is deterministic.
        assert_eq!(wc_map(b"b a").unwrap(), br#"{"a":1,"b":1}"#);
        // JSON string input (as split's elements are passed).
        let out = wc_map(br#""\u00c9t\u00e9, \u00e9t\u00e9!\nStra\u00dfe""#).unwrap();
        assert_eq!(parse(&out), json!({"été": 2, "straße": 1}));
        // JSON array of strings (a batch of elements).
        let out = wc_map(br#"["a b", "B c"]"#).unwrap();
        assert_eq!(parse(&out), json!({"a": 1, "b": 2, "c": 1}));
        assert_eq!(wc_map(b"").unwrap(), b"{}");
        assert_eq!(wc_map(b"  ...  ").unwrap(), b"{}");
        // Raw text that starts with '[' but is not a string array is text.
        assert_eq!(
            parse(&wc_map(b"[1] note").unwrap()),
            json!({"1": 1, "note": 1})
        );
        assert!(wc_map(b"\xc3\x28").is_err());
    }

    #[test]
    fn wc_merge_sums_nested_arrays() {
        let out = wc_merge(br#"[{"a":1,"b":2},[{"a":3}],{}]"#).unwrap();
        assert_eq!(out, br#"{"a":4,"b":2}"#);
        assert_eq!(wc_merge(br#"{"z":1}"#).unwrap(), br#"{"z":1}"#);
        assert_eq!(wc_merge(b"").unwrap(), b"{}");
    }

    #[test]
    fn wc_reduce_summarizes() {
        let out = wc_reduce(br#"[{"a":1,"b":5},{"a":2,"c":1,"d":3}]"#, 10).unwrap();
        assert_eq!(
            out,
            br#"{"total_words":12,"unique_words":4,"top":[["b",5],["a",3],["d",3],["c",1]]}"#
        );
        // Single object; top is cut to top_n with ties broken by word.
        let out = wc_reduce(br#"{"x":1,"y":1,"z":1,"w":2}"#, 2).unwrap();
        assert_eq!(
            parse(&out),
            json!({"total_words": 5, "unique_words": 4, "top": [["w", 2], ["x", 1]]})
        );
        let out = wc_reduce(b"", 10).unwrap();
        assert_eq!(out, br#"{"total_words":0,"unique_words":0,"top":[]}"#);
    }

    #[test]
    fn wc_reduce_top_n_matches_full_sort() {
        let mut m = serde_json::Map::new();
        for i in 0..500u64 {
            m.insert(format!("w{i:03}"), json!((i * 7919) % 37));
        }
        let body = serde_json::to_vec(&Value::Object(m.clone())).unwrap();
        let out = parse(&wc_reduce(&body, 10).unwrap());
        let mut all: Vec<(String, u64)> = m
            .into_iter()
            .map(|(k, v)| (k, v.as_u64().unwrap()))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(10);
        assert_eq!(out["top"], json!(all));
    }

    #[test]
    fn wc_reduce_rejects_bad_input() {
        for (body, needle) in [
            (&b"not json"[..], "not valid JSON"),
            (br#"[{"a":1},"text"]"#, "$[1]: expected a word-count object"),
            (br#"[{"a":-1}]"#, "count of \"a\""),
            (br#"{"a":1.5}"#, "non-negative integer"),
            (b"42", "found a number"),
        ] {
            let err = wc_reduce(body, 10).unwrap_err();
            assert!(err.0.contains(needle), "{err}");
        }
    }

    #[test]
    fn map_reduce_round_trip() {
        let text = "the quick brown fox\njumps over the lazy dog\nthe end\n";
        let parts = parse(&split(text.as_bytes(), SplitMode::Parts(3)).unwrap());
        let mapped: Vec<String> = parts
            .as_array()
            .unwrap()
            .iter()
            .map(|p| String::from_utf8(wc_map(p.to_string().as_bytes()).unwrap()).unwrap())
            .collect();
        let joined = format!("[{}]", mapped.join(","));
        let out = parse(&wc_reduce(joined.as_bytes(), 1).unwrap());
        assert_eq!(
            out,
            json!({"total_words": 11, "unique_words": 9, "top": [["the", 3]]})
        );
    }

    /// The word count as it was before its byte-at-a-time path: every
    /// maximal run of alphanumeric characters, lowercased.
    fn words_by_chars(text: &str) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn words_by_bytes_are_words_by_chars() {
        for text in [
            "",
            "The THE the, tHe!",
            "naïve café CAFÉ x9 9x",
            "Straße\u{2028}ΣΑΣ σας日本語 テキスト",
            "a\u{0301}b \u{1d7d8}7",
            "--//\n\t",
            "end",
        ] {
            let mut ours = HashMap::new();
            count_words(text, &mut ours);
            assert_eq!(ours, words_by_chars(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_counts_as_by_chars(s in "(\\PC|[ \n.,'A-Z]){0,120}") {
            let mut ours = HashMap::new();
            count_words(&s, &mut ours);
            proptest::prop_assert_eq!(ours, words_by_chars(&s));
        }
    }
}
