//! Appending records: live batches and CSV files. Records go to the active
//! hot segment and are fsynced before the index commits them; on any error
//! the uncommitted tail is cut off again.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{
    io_err, meta_set, seg_name, sync_dir, upsert_segment, Active, Store, StoreError, Tier,
};
use crate::csv::{self, CsvOptions, LabelMap};
use crate::segment::{self, HEADER_LEN};
use crate::Sample;

/// What [`Store::ingest_csv`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvReport {
    pub file: String,
    pub ingested: usize,
    /// Data rows in the file (good and bad).
    pub data_rows: usize,
    pub skipped: usize,
    pub bad_rows: Vec<csv::BadRow>,
    pub blank_lines: usize,
    pub feature_columns: Vec<String>,
    /// Keys given to the new samples: `first_key..first_key + ingested`.
    pub first_key: u64,
    /// The store's class names, `id=name`, when labels are strings.
    pub label_names: Vec<String>,
}

impl fmt::Display for CsvReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ingested {} samples from {} ({} features; keys {}..{}); {} data rows, \
             {} skipped, {} blank lines",
            self.ingested,
            self.file,
            self.feature_columns.len(),
            self.first_key,
            self.first_key + self.ingested as u64,
            self.data_rows,
            self.skipped,
            self.blank_lines
        )?;
        if !self.label_names.is_empty() {
            write!(f, "\nlabels: {}", self.label_names.join(", "))?;
        }
        for b in &self.bad_rows {
            write!(
                f,
                "\nskipped {}:{}:{}: {}",
                self.file, b.line, b.col, b.message
            )?;
        }
        if self.skipped > self.bad_rows.len() {
            write!(
                f,
                "\n... and {} more skipped rows",
                self.skipped - self.bad_rows.len()
            )?;
        }
        Ok(())
    }
}

/// A segment touched by an append that is not committed yet.
pub(super) struct Touched {
    pub(super) id: i64,
    old_len: u64,
    pub(super) new_len: u64,
    created: bool,
}

pub(super) struct Appended {
    /// `(segment, offset)` per record, in input order.
    pub(super) locs: Vec<(i64, u64)>,
    pub(super) touched: Vec<Touched>,
}

pub(super) fn encode(s: &Sample, out: &mut Vec<u8>) -> Result<usize, StoreError> {
    segment::encode(s, out).map_err(|e| StoreError::Invalid(format!("sample {}: {e}", s.key)))
}

/// Records encoded back to back, and each record's byte range.
type Encoded = (Vec<u8>, Vec<(usize, usize)>);

/// Encodes records back to back.
pub(super) fn encode_all<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    capacity: usize,
) -> Result<Encoded, StoreError> {
    let mut buf = Vec::with_capacity(capacity);
    let mut bounds = Vec::new();
    for s in samples {
        let start = buf.len();
        encode(s, &mut buf)?;
        bounds.push((start, buf.len()));
    }
    Ok((buf, bounds))
}

impl Store {
    /// Appends samples durably (live ingest, e.g. from an HTTP handler).
    /// All or nothing: on error nothing is added. Keys must be new; every
    /// sample needs the store's feature count and finite features.
    pub fn ingest_batch(&mut self, samples: &[Sample]) -> Result<usize, StoreError> {
        let labels = self.labels.clone();
        self.ingest_inner(samples, labels)
    }

    fn ingest_inner(&mut self, samples: &[Sample], labels: LabelMap) -> Result<usize, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let dim = self.dim.unwrap_or(samples[0].features.len());
        let mut seen = HashSet::with_capacity(samples.len());
        {
            let mut exists = self
                .db
                .prepare_cached("SELECT 1 FROM samples WHERE key = ?1")?;
            for s in samples {
                if s.features.len() != dim {
                    return Err(StoreError::Dim {
                        key: s.key,
                        got: s.features.len(),
                        want: dim,
                    });
                }
                if let Some(i) = s.features.iter().position(|f| !f.is_finite()) {
                    return Err(StoreError::NotFinite {
                        key: s.key,
                        index: i,
                    });
                }
                if !seen.insert(s.key) || exists.exists([s.key as i64])? {
                    return Err(StoreError::DuplicateKey(s.key));
                }
            }
        }
        let (buf, bounds) = encode_all(samples.iter(), samples.len() * segment::record_len(dim))?;
        let appended = self.append_hot(&buf, &bounds)?;
        let res = (|| {
            let tx = self.db.transaction()?;
            for t in &appended.touched {
                upsert_segment(&tx, t.id, Tier::Hot, t.new_len)?;
            }
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO samples (key, segment, offset, len, ts, label, tier)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                )?;
                for ((s, &(seg, off)), &(a, b)) in samples.iter().zip(&appended.locs).zip(&bounds) {
                    ins.execute(params![
                        s.key as i64,
                        seg,
                        off as i64,
                        (b - a) as i64,
                        s.timestamp,
                        s.label
                    ])?;
                }
            }
            if let Some(numeric) = labels.numeric {
                meta_set(&tx, "label_mode", if numeric { "numeric" } else { "names" })?;
            }
            for (id, name) in labels
                .names
                .iter()
                .enumerate()
                .skip(self.labels.names.len())
            {
                tx.execute(
                    "INSERT INTO labels (id, name) VALUES (?1, ?2)",
                    params![id as i64, name],
                )?;
            }
            meta_set(&tx, "dim", &dim.to_string())?;
            meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
            tx.commit()
        })();
        if let Err(e) = res {
            self.undo_append(&appended);
            return Err(e.into());
        }
        self.dim = Some(dim);
        self.labels = labels;
        Ok(samples.len())
    }

    /// The hot segment new records go to, creating one when needed.
    fn active(&mut self, need: u64) -> Result<(&mut Active, bool), StoreError> {
        if self.active.is_none() {
            let last: Option<(i64, i64)> = self
                .db
                .query_row(
                    "SELECT id, len FROM segments WHERE tier = 0 ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, len)) = last {
                let path = self.hot_dir.join(seg_name(id));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open segment", &path))?;
                self.active = Some(Active {
                    id,
                    file,
                    len: len as u64,
                });
            }
        }
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.len > HEADER_LEN as u64 && a.len + need > self.max_segment_bytes);
        let mut created = false;
        if full {
            let id = self.next_segment;
            self.next_segment += 1;
            let path = self.hot_dir.join(seg_name(id));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create segment", &path))?;
            file.write_all_at(&segment::header(), 0)
                .map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            sync_dir(&self.hot_dir).map_err(io_err("fsync", &self.hot_dir))?;
            self.active = Some(Active {
                id,
                file,
                len: HEADER_LEN as u64,
            });
            created = true;
        }
        Ok((self.active.as_mut().expect("set above"), created))
    }

    /// Appends encoded records (`bounds` into `buf`) to hot segments and
    /// fsyncs them. Nothing is committed: the caller commits the index, or
    /// calls [`Store::undo_append`].
    pub(super) fn append_hot(
        &mut self,
        buf: &[u8],
        bounds: &[(usize, usize)],
    ) -> Result<Appended, StoreError> {
        let mut out = Appended {
            locs: Vec::with_capacity(bounds.len()),
            touched: Vec::new(),
        };
        let mut i = 0;
        let res = (|| {
            while i < bounds.len() {
                let first_len = (bounds[i].1 - bounds[i].0) as u64;
                let max = self.max_segment_bytes;
                let hot_dir = self.hot_dir.clone();
                let (active, created) = self.active(first_len)?;
                if created || out.touched.last().is_none_or(|t| t.id != active.id) {
                    out.touched.push(Touched {
                        id: active.id,
                        old_len: active.len,
                        new_len: active.len,
                        created,
                    });
                }
                // Records that fit in this segment (at least one).
                let start = bounds[i].0;
                let mut j = i;
                let mut end_off = active.len;
                while j < bounds.len() {
                    let l = (bounds[j].1 - bounds[j].0) as u64;
                    if j > i && end_off + l > max {
                        break;
                    }
                    out.locs.push((active.id, end_off));
                    end_off += l;
                    j += 1;
                }
                let end = bounds[j - 1].1;
                let path = hot_dir.join(seg_name(active.id));
                active
                    .file
                    .write_all_at(&buf[start..end], active.len)
                    .map_err(io_err("write", &path))?;
                active.len = end_off;
                out.touched.last_mut().expect("pushed above").new_len = end_off;
                i = j;
            }
            for t in &out.touched {
                let path = self.hot_dir.join(seg_name(t.id));
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open segment", &path))?;
                f.sync_data().map_err(io_err("fsync", &path))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(out),
            Err(e) => {
                self.undo_append(&out);
                Err(e)
            }
        }
    }

    /// Best-effort removal of uncommitted appends (what open would do).
    pub(super) fn undo_append(&mut self, a: &Appended) {
        self.active = None;
        for t in &a.touched {
            let path = self.hot_dir.join(seg_name(t.id));
            if t.created {
                let _ = fs::remove_file(&path);
            } else if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(t.old_len);
            }
        }
    }

    /// Reads and ingests a CSV file (see [`crate::csv`]). All or nothing.
    pub fn ingest_csv(&mut self, path: &Path, opts: &CsvOptions) -> Result<CsvReport, StoreError> {
        self.ingest_csv_with(path, opts, Ok)
    }

    /// [`Store::ingest_csv`], passing the parsed samples through `transform`
    /// (e.g. a synthetic drift) before they are stored. Keys are given after
    /// the transform: `next_key()`, `next_key() + 1`, ... in its output order.
    pub fn ingest_csv_with(
        &mut self,
        path: &Path,
        opts: &CsvOptions,
        transform: impl FnOnce(Vec<Sample>) -> Result<Vec<Sample>, String>,
    ) -> Result<CsvReport, StoreError> {
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        self.ingest_csv_text_with(&path.display().to_string(), &text, opts, transform)
    }

    /// [`Store::ingest_csv_with`] on CSV text already in memory (live
    /// ingest: an HTTP body). `file` names the text in errors. Same
    /// validation, all or nothing.
    pub fn ingest_csv_text_with(
        &mut self,
        file: &str,
        text: &str,
        opts: &CsvOptions,
        transform: impl FnOnce(Vec<Sample>) -> Result<Vec<Sample>, String>,
    ) -> Result<CsvReport, StoreError> {
        let mut labels = self.labels.clone();
        let parsed = csv::parse(file, text, opts, &mut labels)?;
        self.ingest_parsed(file, parsed, labels, transform)
    }

    /// Stores rows parsed elsewhere (e.g. by a [`csv::CsvStream`] fed from
    /// an HTTP body), with the label map the parser filled (it started from
    /// [`Store::labels`]). Keys and transform as in
    /// [`Store::ingest_csv_with`]; all or nothing.
    pub fn ingest_parsed(
        &mut self,
        file: &str,
        parsed: csv::Parsed,
        labels: LabelMap,
        transform: impl FnOnce(Vec<Sample>) -> Result<Vec<Sample>, String>,
    ) -> Result<CsvReport, StoreError> {
        let file = file.to_string();
        let first_key = self.next_key()?;
        let samples: Vec<Sample> = parsed
            .rows
            .into_iter()
            .map(|r| Sample {
                key: 0,
                timestamp: r.timestamp,
                label: r.label,
                features: r.features,
            })
            .collect();
        let mut samples = transform(samples).map_err(StoreError::Invalid)?;
        for (i, s) in samples.iter_mut().enumerate() {
            s.key = first_key + i as u64;
        }
        let ingested = self.ingest_inner(&samples, labels)?;
        let label_names = if self.labels.numeric == Some(false) {
            self.labels
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{i}={n}"))
                .collect()
        } else {
            Vec::new()
        };
        Ok(CsvReport {
            file,
            ingested,
            data_rows: parsed.data_rows,
            skipped: parsed.skipped,
            bad_rows: parsed.bad_rows,
            blank_lines: parsed.blank_lines,
            feature_columns: parsed.feature_columns,
            first_key,
            label_names,
        })
    }
}
