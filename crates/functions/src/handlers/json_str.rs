//! JSON strings written and read eight bytes at a time: the text
//! functions move tens of MiB of text as JSON strings (`split`'s parts,
//! `wc-map`'s input), and `serde_json` looks at every byte. Both give
//! exactly what `serde_json` gives (the tests compare them on any
//! string); reading falls back to it for anything but the plain escapes.

/// Eight `0x01` bytes, and their high bits.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether some byte of `w` (eight bytes of a string) needs escaping in
/// JSON: below 0x20, a quote or a backslash. Exact for the word as a
/// whole (a borrow only travels above a byte that matched).
fn special(w: u64) -> bool {
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    control || zero(w ^ (ONES * u64::from(b'"'))) || zero(w ^ (ONES * u64::from(b'\\')))
}

/// The index of the first byte of `b` at or after `i` that needs
/// escaping, or `b.len()`.
fn next_special(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8) {
        if special(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
            break;
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .map_or(b.len(), |p| i + p)
}

/// Appends `s` as a JSON string, byte for byte what `serde_json` writes:
/// `"` and `\` escaped, `\b \f \n \r \t` short, other control characters
/// as `\u00xx`, everything else as it is.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut i = 0;
    loop {
        let j = next_special(b, i);
        out.extend_from_slice(&b[i..j]);
        let Some(&c) = b.get(j) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]),
        }
        i = j + 1;
    }
    out.push(b'"');
}

/// `body` as a JSON string literal (whitespace around it allowed) when it
/// is one whose escapes are all short ones (`\" \\ \/ \b \f \n \r \t`);
/// `None` for anything else, which `serde_json` then reads (or refuses).
pub fn read_json_str(body: &[u8]) -> Option<String> {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let start = body.iter().position(|c| !ws(c))?;
    let end = body.iter().rposition(|c| !ws(c))? + 1;
    let b = body.get(start + 1..end - 1)?;
    if body[start] != b'"' || body[end - 1] != b'"' || end - start < 2 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    loop {
        let j = next_special(b, i);
        out.extend_from_slice(&b[i..j]);
        let Some(&c) = b.get(j) else { break };
        // A quote before the end, or a control character: not one string.
        if c != b'\\' {
            return None;
        }
        let unescaped = match b.get(j + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'b' => 0x08,
            b'f' => 0x0c,
            _ => return None,
        };
        out.push(unescaped);
        i = j + 2;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reading `s` written as JSON gives here: `s`, unless a control
    /// character of it was written as `\u00xx` (left to `serde_json`).
    fn plain(s: &str) -> Option<String> {
        let long = |c: char| c < ' ' && !"\n\r\t\u{8}\u{c}".contains(c);
        (!s.chars().any(long)).then(|| s.to_string())
    }

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        let all: String = (0u32..0x100).filter_map(char::from_u32).collect();
        for s in [
            "",
            "plain",
            "exactly8",
            "\"\\\u{0}\u{1f}\u{7f}",
            "the quick brown fox jumps over the lazy dog\n",
            all.as_str(),
        ] {
            let mut ours = Vec::new();
            write_json_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
            assert_eq!(read_json_str(&ours), plain(s), "{s:?}");
        }
    }

    #[test]
    fn only_plain_string_literals_are_read_here() {
        let read = |b: &[u8]| read_json_str(b);
        assert_eq!(read(b" \"a\\/b\\\"\" \n").as_deref(), Some("a/b\""));
        assert_eq!(read(b"\"\"").as_deref(), Some(""));
        for nasty in [
            &b""[..],
            b"\"",
            b" \" ",
            b"\"a\"b\"",
            b"\"a\" x",
            b"x \"a\"",
            b"\"\\u0041\"",
            b"\"\\x\"",
            b"\"a\\\"",
            b"\"\n\"",
            b"\"\xff\"",
            b"\"a\"\"b\"",
        ] {
            assert_eq!(read(nasty), None, "{:?}", String::from_utf8_lossy(nasty));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in "(\\PC|[\u{0}-\u{1f}\"\\\\/]){0,80}") {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &s);
            proptest::prop_assert_eq!(&ours, &serde_json::to_vec(&s).unwrap());
            proptest::prop_assert_eq!(read_json_str(&ours), plain(&s));
        }

        /// Whatever the bytes, a string read here is the one `serde_json` reads.
        #[test]
        fn any_bytes_read_as_serde_json_reads_them(b in proptest::collection::vec(
            proptest::sample::select(b" \"\\/nrtbfu0aZ\n\x01\xc3\xa9\xff".to_vec()), 0..40)
        ) {
            let mut body = b"\"".to_vec();
            body.extend_from_slice(&b);
            body.push(b'"');
            if let Some(s) = read_json_str(&body) {
                proptest::prop_assert_eq!(Some(s), serde_json::from_slice::<String>(&body).ok());
            }
        }
    }
}
