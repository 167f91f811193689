//! CSV files of a report, written with the `csv` crate (quoting as RFC 4180
//! needs it: a field with a comma, quote or newline is quoted, quotes doubled).

/// One CSV file being built in memory: a header, then rows of the same width.
pub struct CsvTable {
    w: csv::Writer<Vec<u8>>,
}

impl CsvTable {
    pub fn new(header: &[&str]) -> CsvTable {
        let mut t = CsvTable {
            w: csv::Writer::from_writer(Vec::new()),
        };
        t.row(header);
        t
    }

    /// Appends a row. Panics if its width differs from the header's: that
    /// is a bug in the caller, not bad data.
    pub fn row<I, F>(&mut self, fields: I)
    where
        I: IntoIterator<Item = F>,
        F: AsRef<[u8]>,
    {
        self.w
            .write_record(fields)
            .expect("a CSV row as wide as its header, written to memory");
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.w
            .into_inner()
            .expect("flushing a CSV writer into memory cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let mut t = CsvTable::new(&["id", "error"]);
        t.row(["a", "plain"]);
        t.row(["b", "has, comma and \"quotes\"\nand a newline"]);
        t.row(["c", ""]);
        assert_eq!(
            String::from_utf8(t.into_bytes()).unwrap(),
            "id,error\na,plain\nb,\"has, comma and \"\"quotes\"\"\nand a newline\"\nc,\n"
        );
    }

    #[test]
    #[should_panic(expected = "as wide as its header")]
    fn a_ragged_row_is_a_bug() {
        let mut t = CsvTable::new(&["a", "b"]);
        t.row(["only one"]);
    }
}
