//! The dataset store: segment files plus a SQLite index, in one directory.
//!
//! ```text
//! DIR/
//!   LOCK                 flock(2)ed by the one process that has the store open
//!   index.sqlite (+wal)  the manifest: samples, segments, labels, meta
//!   hot/seg-00000001.seg hot segments (append-only, see `segment`)
//!   cold/seg-00000002.seg cold segments (immutable objects, via `ColdTier`)
//! ```
//!
//! **The index is the single source of truth.** A record is part of the
//! store only when the index references it, so every change writes bytes
//! first and commits the index last:
//!
//! - ingest: append records to the active hot segment, fsync it, then commit
//!   the sample rows and the segment's new length in one transaction;
//! - demote/promote/compact: write the new segment (file or object) in full,
//!   fsync, commit the moved rows, then remove what is no longer referenced.
//!
//! On open, hot segments are truncated to their committed length (a torn
//! write from a killed ingest), and segment files or cold objects the index
//! does not know (an interrupted rewrite) are removed.
//!
//! Deletion (`delete`, `retention`) marks rows deleted: they are unreadable
//! at once. `compact` then rewrites every segment holding unreferenced bytes
//! and removes the old one, so the bytes are gone from every file (SQLite
//! runs with `secure_delete` and its WAL is truncated after compaction).
//!
//! Tiers: a sample's record lives in a hot segment or a cold one.
//!
//! ```text
//!   ingest ──► hot ──demote──► cold
//!               ▲               │
//!               └───promote─────┘   (every cold read is counted: reads + bytes)
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::csv::{self, CsvError, CsvOptions, LabelMap};
use crate::segment::{self, SegmentError, HEADER_LEN};
use crate::tier::{ColdError, ColdTier, DirTier};
use crate::{Batch, Sample};

/// Default size at which a hot segment is closed and a new one started.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Reads of records closer than this are merged into one read.
const READ_GAP: u64 = 64 << 10;
/// Largest single merged read.
const MAX_READ: u64 = 16 << 20;
const SCHEMA_VERSION: i64 = 1;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("index database")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store {} is open in another process (its LOCK file is held); close that first", dir.display())]
    Locked { dir: PathBuf },
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("cold tier")]
    Cold(#[from] ColdError),
    #[error("segment {segment} at offset {offset}")]
    Segment {
        segment: i64,
        offset: u64,
        #[source]
        source: SegmentError,
    },
    #[error("store is inconsistent: {0}")]
    Corrupt(String),
    #[error("key {0} is not in the store (or was deleted)")]
    NotFound(u64),
    #[error(
        "key {0} is already in the store; keys are unique (a deleted key is freed by compaction)"
    )]
    DuplicateKey(u64),
    #[error("sample {key} has {got} features; this store holds samples of {want}")]
    Dim { key: u64, got: usize, want: usize },
    #[error("sample {key}: feature {index} is not finite (NaN and infinity are rejected)")]
    NotFinite { key: u64, index: usize },
    #[error("{0}")]
    Invalid(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory, so that created, renamed and removed entries persist.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where a sample's record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Hot,
    Cold,
}

impl Tier {
    fn code(self) -> i64 {
        match self {
            Tier::Hot => 0,
            Tier::Cold => 1,
        }
    }

    fn from_code(c: i64) -> Tier {
        if c == 0 {
            Tier::Hot
        } else {
            Tier::Cold
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Hot => "hot",
            Tier::Cold => "cold",
        })
    }
}

/// How to open a store.
pub struct StoreOptions {
    /// A hot segment is closed once it reaches this size.
    pub max_segment_bytes: u64,
    /// The cold tier; default: a [`DirTier`] in `DIR/cold`.
    pub cold: Option<Box<dyn ColdTier>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            cold: None,
        }
    }
}

/// How replay cuts the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Consecutive windows of this many samples (the last may be shorter).
    Samples(usize),
    /// Windows `[t0 + kT, t0 + (k+1)T)` where `t0` is the first timestamp;
    /// windows without samples are not yielded.
    Time(i64),
}

/// One replay window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowBatch {
    /// 0-based count of windows yielded before this one.
    pub index: usize,
    /// Time range `[start, end)`: the window's bounds for [`Window::Time`],
    /// first timestamp to last + 1 for [`Window::Samples`].
    pub start: i64,
    pub end: i64,
    /// In timestamp order (ties by key).
    pub batch: Batch,
}

/// A live sample's index entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: u64,
    pub timestamp: i64,
    pub label: i64,
    /// The latest importance score (see [`Store::set_scores`]).
    pub score: Option<f32>,
    pub tier: Tier,
}

/// Which samples retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Delete samples older than the newest timestamp minus this.
    pub max_age: Option<i64>,
    /// Then keep at most this many samples (the newest; ties by key).
    pub max_samples: Option<u64>,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    pub segments_rewritten: usize,
    pub segments_removed: usize,
    pub records_dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl fmt::Display for CompactReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compacted: {} segments rewritten, {} removed, {} deleted records dropped, \
             {} -> {} bytes",
            self.segments_rewritten,
            self.segments_removed,
            self.records_dropped,
            self.bytes_before,
            self.bytes_after
        )
    }
}

/// What [`Store::retier`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierReport {
    pub demoted: usize,
    pub promoted: usize,
    pub hot: usize,
    pub cold: usize,
    pub compact: CompactReport,
}

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

/// Sizes and counts, for `stratus data ls` and cost reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreStats {
    pub dir: PathBuf,
    pub cold_location: String,
    /// Live samples.
    pub samples: u64,
    /// Deleted, not yet compacted.
    pub deleted: u64,
    pub hot_samples: u64,
    pub cold_samples: u64,
    pub hot_segments: u64,
    pub cold_segments: u64,
    /// Committed segment bytes (headers and unreclaimed records included).
    pub hot_bytes: u64,
    pub cold_bytes: u64,
    /// Bytes of live records.
    pub hot_live_bytes: u64,
    pub cold_live_bytes: u64,
    pub dim: Option<usize>,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    /// `(class name, live samples)`, by class id.
    pub classes: Vec<(String, u64)>,
    /// Reads from the cold tier by this handle, and their bytes.
    pub cold_reads: u64,
    pub cold_read_bytes: u64,
}

impl fmt::Display for StoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store       {}", self.dir.display())?;
        writeln!(
            f,
            "samples     {} live ({} hot, {} cold), {} deleted awaiting compaction",
            self.samples, self.hot_samples, self.cold_samples, self.deleted
        )?;
        match self.dim {
            Some(d) => writeln!(f, "features    {d}")?,
            None => writeln!(f, "features    - (empty store)")?,
        }
        match (self.min_timestamp, self.max_timestamp) {
            (Some(a), Some(b)) => writeln!(f, "time        {a}..={b}")?,
            _ => writeln!(f, "time        -")?,
        }
        writeln!(
            f,
            "hot tier    {} segments, {} bytes ({} live)",
            self.hot_segments, self.hot_bytes, self.hot_live_bytes
        )?;
        writeln!(
            f,
            "cold tier   {} segments, {} bytes ({} live) in {}",
            self.cold_segments, self.cold_bytes, self.cold_live_bytes, self.cold_location
        )?;
        let classes: Vec<String> = self
            .classes
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect();
        write!(f, "classes     {}", classes.join(", "))
    }
}

/// Where one record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    key: u64,
    segment: i64,
    tier: Tier,
    offset: u64,
    len: u64,
}

struct Active {
    id: i64,
    file: File,
    len: u64,
}

/// A segment touched by an append that is not committed yet.
struct Touched {
    id: i64,
    old_len: u64,
    new_len: u64,
    created: bool,
}

/// A cold object being built by `demote`.
#[derive(Default)]
struct ColdObject {
    records: Vec<u8>,
    /// `(key, offset)` of each record.
    moved: Vec<(u64, u64)>,
}

fn encode(s: &Sample, out: &mut Vec<u8>) -> Result<usize, StoreError> {
    segment::encode(s, out).map_err(|e| StoreError::Invalid(format!("sample {}: {e}", s.key)))
}

struct Appended {
    /// `(segment, offset)` per record, in input order.
    locs: Vec<(i64, u64)>,
    touched: Vec<Touched>,
}

/// An open dataset store. One process at a time (see the `LOCK` file).
pub struct Store {
    dir: PathBuf,
    hot_dir: PathBuf,
    db: Connection,
    cold: Box<dyn ColdTier>,
    max_segment_bytes: u64,
    dim: Option<usize>,
    labels: LabelMap,
    active: Option<Active>,
    next_segment: i64,
    cold_reads: AtomicU64,
    cold_read_bytes: AtomicU64,
    _lock: File,
}

fn seg_name(id: i64) -> String {
    format!("seg-{id:08}.seg")
}

fn parse_seg_name(name: &str) -> Option<i64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    // A lock can be held for a moment by a process that is not the store's
    // owner: a child forked by another thread keeps a copy of the descriptor
    // until it execs (and closes it). So wait briefly before giving up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: flock takes a file descriptor we own (open for f's
        // lifetime) and no pointers.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_err("lock", &path)(e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(f)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    tier INTEGER NOT NULL,
    len INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    key INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    label INTEGER NOT NULL,
    score REAL,
    tier INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts, key);
CREATE INDEX IF NOT EXISTS samples_segment ON samples (segment);
CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
";

fn meta_get(db: &Connection, k: &str) -> Result<Option<String>, rusqlite::Error> {
    db.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
        .optional()
}

fn meta_set(tx: &Transaction<'_>, k: &str, v: &str) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        [k, v],
    )?;
    Ok(())
}

fn upsert_segment(
    tx: &Transaction<'_>,
    id: i64,
    tier: Tier,
    len: u64,
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO segments (id, tier, len) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET len = excluded.len, tier = excluded.tier",
        params![id, tier.code(), len as i64],
    )?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with the default cold
    /// tier in `dir/cold`. Recovers from an interrupted write (see the module
    /// documentation).
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock = lock(&dir)?;
        let hot_dir = dir.join("hot");
        fs::create_dir_all(&hot_dir).map_err(io_err("create directory", &hot_dir))?;
        let cold: Box<dyn ColdTier> = match opts.cold {
            Some(c) => c,
            None => Box::new(DirTier::new(dir.join("cold"))?),
        };
        let db = Connection::open(dir.join("index.sqlite"))?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "secure_delete", "ON")?;
        db.execute_batch(SCHEMA)?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        } else if version != SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "index schema version {version}; this build reads version {SCHEMA_VERSION}"
            )));
        }
        let dim = meta_get(&db, "dim")?
            .map(|v| v.parse::<usize>())
            .transpose()
            .map_err(|_| StoreError::Corrupt("meta 'dim' is not a number".into()))?;
        let mut labels = LabelMap {
            numeric: meta_get(&db, "label_mode")?.map(|m| m == "numeric"),
            names: Vec::new(),
        };
        {
            let mut stmt = db.prepare("SELECT id, name FROM labels ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            for (i, row) in rows.enumerate() {
                let (id, name) = row?;
                if id != i as i64 {
                    return Err(StoreError::Corrupt(format!(
                        "label ids are not dense: id {id} at position {i}"
                    )));
                }
                labels.names.push(name);
            }
        }
        let max_seg: i64 = db.query_row("SELECT COALESCE(MAX(id), 0) FROM segments", [], |r| {
            r.get(0)
        })?;
        let next_meta: i64 = meta_get(&db, "next_segment")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut store = Store {
            dir,
            hot_dir,
            db,
            cold,
            max_segment_bytes: opts.max_segment_bytes.max(HEADER_LEN as u64 + 1),
            dim,
            labels,
            active: None,
            next_segment: next_meta.max(max_seg + 1),
            cold_reads: AtomicU64::new(0),
            cold_read_bytes: AtomicU64::new(0),
            _lock: lock,
        };
        store.recover()?;
        Ok(store)
    }

    /// Truncates torn tails and removes unreferenced segments.
    fn recover(&mut self) -> Result<(), StoreError> {
        let segs: Vec<(i64, Tier, u64)> = {
            let mut stmt = self.db.prepare("SELECT id, tier, len FROM segments")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Tier::from_code(r.get(1)?),
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let hot: HashMap<i64, u64> = segs
            .iter()
            .filter(|s| s.1 == Tier::Hot)
            .map(|s| (s.0, s.2))
            .collect();
        let cold: HashMap<String, u64> = segs
            .iter()
            .filter(|s| s.1 == Tier::Cold)
            .map(|s| (seg_name(s.0), s.2))
            .collect();

        let mut removed = false;
        for entry in fs::read_dir(&self.hot_dir).map_err(io_err("list", &self.hot_dir))? {
            let entry = entry.map_err(io_err("list", &self.hot_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = parse_seg_name(&name).is_some_and(|id| hot.contains_key(&id));
            if !known && (name.starts_with("seg-") || name.starts_with(".seg-")) {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err("remove unreferenced segment", &p))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.hot_dir).map_err(io_err("fsync", &self.hot_dir))?;
        }
        for (&id, &len) in &hot {
            let path = self.hot_dir.join(seg_name(id));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open segment", &path))?;
            let size = f.metadata().map_err(io_err("stat", &path))?.len();
            if size < len {
                return Err(StoreError::Corrupt(format!(
                    "{} holds {size} bytes but the index committed {len}",
                    path.display()
                )));
            }
            let mut head = [0u8; HEADER_LEN];
            f.read_exact_at(&mut head, 0)
                .map_err(io_err("read segment header", &path))?;
            segment::check_header(&head).map_err(|source| StoreError::Segment {
                segment: id,
                offset: 0,
                source,
            })?;
            if size > len {
                // A torn or uncommitted append: not part of the store.
                f.set_len(len).map_err(io_err("truncate", &path))?;
                f.sync_all().map_err(io_err("fsync", &path))?;
            }
        }
        for (name, size) in self.cold.list()? {
            match cold.get(&name) {
                Some(&len) if len != size => {
                    return Err(StoreError::Corrupt(format!(
                        "cold object {name} holds {size} bytes, the index says {len}"
                    )))
                }
                Some(_) => {}
                None if parse_seg_name(&name).is_some() => self.cold.delete(&name)?,
                None => {}
            }
        }
        let listed: HashSet<String> = self.cold.list()?.into_iter().map(|x| x.0).collect();
        if let Some(missing) = cold.keys().find(|n| !listed.contains(*n)) {
            return Err(StoreError::Corrupt(format!(
                "cold object {missing} is missing from {}",
                self.cold.describe()
            )));
        }
        Ok(())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Features a sample, once the first sample is in.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Class ids and names.
    pub fn labels(&self) -> &LabelMap {
        &self.labels
    }

    /// One more than the largest key ever stored (deleted keys included
    /// until compaction): where CSV ingest numbers new samples.
    pub fn next_key(&self) -> Result<u64, StoreError> {
        let k: Option<i64> = self
            .db
            .query_row("SELECT MAX(key) FROM samples", [], |r| r.get(0))?;
        Ok(k.map_or(0, |k| k as u64 + 1))
    }

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
    fn append_hot(
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
    fn undo_append(&mut self, a: &Appended) {
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
        let file = file.to_string();
        let mut labels = self.labels.clone();
        let parsed = csv::parse(&file, text, opts, &mut labels)?;
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

    fn loc_of(&self, key: u64) -> Result<Loc, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT segment, offset, len, tier FROM samples WHERE key = ?1 AND deleted = 0",
        )?;
        stmt.query_row([key as i64], |r| {
            Ok(Loc {
                key,
                segment: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                len: r.get::<_, i64>(2)? as u64,
                tier: Tier::from_code(r.get(3)?),
            })
        })
        .optional()?
        .ok_or(StoreError::NotFound(key))
    }

    /// Reads samples by key, in the order given. A missing or deleted key is
    /// an error. Each record's CRC is checked.
    pub fn read(&self, keys: &[u64]) -> Result<Batch, StoreError> {
        let locs = self.live_locs(keys)?;
        self.read_locs(&locs)
    }

    fn read_bytes(
        &self,
        seg: i64,
        tier: Tier,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(seg));
                let f = File::open(&path).map_err(io_err("open segment", &path))?;
                let mut buf = vec![0; len as usize];
                f.read_exact_at(&mut buf, offset)
                    .map_err(io_err("read segment", &path))?;
                Ok(buf)
            }
            Tier::Cold => {
                let buf = self.cold.get_range(&seg_name(seg), offset, len)?;
                self.cold_reads.fetch_add(1, Ordering::Relaxed);
                self.cold_read_bytes.fetch_add(len, Ordering::Relaxed);
                Ok(buf)
            }
        }
    }

    /// Reads records, merging nearby ones of a segment into one read.
    fn read_locs(&self, locs: &[Loc]) -> Result<Batch, StoreError> {
        let n = locs.len();
        let dim = self.dim.unwrap_or(0);
        let mut out = Batch {
            dim,
            keys: vec![0; n],
            timestamps: vec![0; n],
            labels: vec![0; n],
            features: vec![0.0; n * dim],
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| (locs[i].segment, locs[i].offset));
        let mut i = 0;
        while i < n {
            let first = locs[order[i]];
            let start = first.offset;
            let mut end = start + first.len;
            let mut j = i + 1;
            while j < n {
                let l = locs[order[j]];
                if l.segment != first.segment
                    || l.offset > end + READ_GAP
                    || l.offset + l.len - start > MAX_READ
                {
                    break;
                }
                end = end.max(l.offset + l.len);
                j += 1;
            }
            let buf = self.read_bytes(first.segment, first.tier, start, end - start)?;
            for &slot in &order[i..j] {
                let l = locs[slot];
                let at = (l.offset - start) as usize;
                let bad = |source| StoreError::Segment {
                    segment: l.segment,
                    offset: l.offset,
                    source,
                };
                let r = segment::decode(&buf[at..at + l.len as usize]).map_err(bad)?;
                if r.key != l.key || r.total_len as u64 != l.len || r.dim() != dim {
                    return Err(StoreError::Corrupt(format!(
                        "segment {} offset {} holds key {} ({} features), the index expects key {}",
                        l.segment,
                        l.offset,
                        r.key,
                        r.dim(),
                        l.key
                    )));
                }
                out.keys[slot] = r.key;
                out.timestamps[slot] = r.timestamp;
                out.labels[slot] = r.label;
                r.features_to(&mut out.features[slot * dim..(slot + 1) * dim]);
            }
            i = j;
        }
        Ok(out)
    }

    /// Live samples in timestamp order (ties by key), cut into windows.
    /// Pages through the index, so memory is one window.
    pub fn replay(&self, window: Window) -> Result<Replay<'_>, StoreError> {
        match window {
            Window::Samples(0) => Err(StoreError::Invalid("replay window of 0 samples".into())),
            Window::Time(t) if t <= 0 => Err(StoreError::Invalid(format!(
                "replay time window must be positive, got {t}"
            ))),
            _ => Ok(Replay {
                store: self,
                window,
                cursor: None,
                t0: None,
                index: 0,
                done: false,
            }),
        }
    }

    /// Every live sample's index entry, in timestamp order (ties by key).
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT key, ts, label, score, tier FROM samples WHERE deleted = 0 ORDER BY ts, key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Entry {
                key: r.get::<_, i64>(0)? as u64,
                timestamp: r.get(1)?,
                label: r.get(2)?,
                score: r.get::<_, Option<f64>>(3)?.map(|s| s as f32),
                tier: Tier::from_code(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records each sample's latest importance score. All or nothing; an
    /// unknown key is an error.
    pub fn set_scores(&mut self, scores: &[(u64, f32)]) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        {
            let mut up =
                tx.prepare_cached("UPDATE samples SET score = ?2 WHERE key = ?1 AND deleted = 0")?;
            for &(k, s) in scores {
                if !s.is_finite() {
                    return Err(StoreError::Invalid(format!(
                        "score of key {k} is not finite"
                    )));
                }
                if up.execute(params![k as i64, s as f64])? == 0 {
                    return Err(StoreError::NotFound(k));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes samples: unreadable at once, bytes reclaimed by
    /// [`Store::compact`]. Returns how many were live; unknown keys are
    /// ignored.
    pub fn delete(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let tx = self.db.transaction()?;
        let mut n = 0;
        {
            let mut up =
                tx.prepare_cached("UPDATE samples SET deleted = 1 WHERE key = ?1 AND deleted = 0")?;
            for &k in keys {
                n += up.execute([k as i64])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Deletes what `policy` does not keep (see [`RetentionPolicy`]); returns
    /// how many. Run [`Store::compact`] to reclaim the bytes.
    pub fn retention(&mut self, policy: &RetentionPolicy) -> Result<usize, StoreError> {
        let tx = self.db.transaction()?;
        let mut n = 0;
        if let Some(age) = policy.max_age {
            let newest: Option<i64> =
                tx.query_row("SELECT MAX(ts) FROM samples WHERE deleted = 0", [], |r| {
                    r.get(0)
                })?;
            if let Some(newest) = newest {
                n += tx.execute(
                    "UPDATE samples SET deleted = 1 WHERE deleted = 0 AND ts < ?1",
                    [newest.saturating_sub(age)],
                )?;
            }
        }
        if let Some(max) = policy.max_samples {
            let live: i64 =
                tx.query_row("SELECT COUNT(*) FROM samples WHERE deleted = 0", [], |r| {
                    r.get(0)
                })?;
            let excess = live - max.min(i64::MAX as u64) as i64;
            if excess > 0 {
                n += tx.execute(
                    "UPDATE samples SET deleted = 1 WHERE key IN (
                         SELECT key FROM samples WHERE deleted = 0 ORDER BY ts, key LIMIT ?1)",
                    [excess],
                )?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn total_bytes(&self) -> Result<u64, StoreError> {
        let b: i64 = self
            .db
            .query_row("SELECT COALESCE(SUM(len), 0) FROM segments", [], |r| {
                r.get(0)
            })?;
        Ok(b as u64)
    }

    /// Writes a whole new segment (hot file or cold object) holding `records`
    /// (encoded, back to back); returns its id. Not referenced until the
    /// caller commits it.
    fn write_segment(&mut self, tier: Tier, records: &[u8]) -> Result<(i64, u64), StoreError> {
        let id = self.next_segment;
        self.next_segment += 1;
        let mut data = Vec::with_capacity(HEADER_LEN + records.len());
        data.extend_from_slice(&segment::header());
        data.extend_from_slice(records);
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(id));
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create segment", &path))?;
                let res = f
                    .write_all_at(&data, 0)
                    .and_then(|()| f.sync_all())
                    .and_then(|()| sync_dir(&self.hot_dir));
                if let Err(e) = res {
                    let _ = fs::remove_file(&path);
                    return Err(io_err("write segment", &path)(e));
                }
            }
            Tier::Cold => self.cold.put(&seg_name(id), &data)?,
        }
        Ok((id, data.len() as u64))
    }

    fn remove_segment(&self, id: i64, tier: Tier) -> Result<(), StoreError> {
        match tier {
            Tier::Hot => {
                let path = self.hot_dir.join(seg_name(id));
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove segment", &path)(e)),
                }
                sync_dir(&self.hot_dir).map_err(io_err("fsync", &self.hot_dir))
            }
            Tier::Cold => Ok(self.cold.delete(&seg_name(id))?),
        }
    }

    /// Rewrites every segment that holds deleted or moved records, so their
    /// bytes are gone from every file, and drops deleted rows from the index.
    pub fn compact(&mut self) -> Result<CompactReport, StoreError> {
        let mut report = CompactReport {
            bytes_before: self.total_bytes()?,
            ..CompactReport::default()
        };
        let segs: Vec<(i64, Tier, u64, u64, u64)> = {
            let mut stmt = self.db.prepare(
                "SELECT s.id, s.tier, s.len,
                        COALESCE(SUM(CASE WHEN d.deleted = 0 THEN d.len END), 0),
                        COUNT(d.key)
                 FROM segments s LEFT JOIN samples d ON d.segment = s.id
                 GROUP BY s.id ORDER BY s.id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Tier::from_code(r.get(1)?),
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, i64>(4)? as u64,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, tier, len, live, _rows) in segs {
            if live + HEADER_LEN as u64 == len {
                continue;
            }
            if self.active.as_ref().is_some_and(|a| a.id == id) {
                self.active = None;
            }
            let rows: Vec<(u64, u64, u64)> = {
                let mut stmt = self.db.prepare(
                    "SELECT key, offset, len FROM samples
                     WHERE segment = ?1 AND deleted = 0 ORDER BY offset",
                )?;
                let rows = stmt.query_map([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let dropped: usize = self.db.query_row(
                "SELECT COUNT(*) FROM samples WHERE segment = ?1 AND deleted = 1",
                [id],
                |r| r.get(0),
            )?;
            if rows.is_empty() {
                let tx = self.db.transaction()?;
                tx.execute("DELETE FROM samples WHERE segment = ?1", [id])?;
                tx.execute("DELETE FROM segments WHERE id = ?1", [id])?;
                tx.commit()?;
                self.remove_segment(id, tier)?;
                report.segments_removed += 1;
                report.records_dropped += dropped;
                continue;
            }
            let old = self.read_bytes(id, tier, 0, len)?;
            let mut records = Vec::with_capacity(live as usize);
            let mut moved = Vec::with_capacity(rows.len());
            for &(key, off, l) in &rows {
                let rec = old.get(off as usize..(off + l) as usize).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "key {key} at {off}+{l} is past the end of segment {id}"
                    ))
                })?;
                let r = segment::decode(rec).map_err(|source| StoreError::Segment {
                    segment: id,
                    offset: off,
                    source,
                })?;
                if r.key != key {
                    return Err(StoreError::Corrupt(format!(
                        "segment {id} offset {off} holds key {}, the index expects {key}",
                        r.key
                    )));
                }
                moved.push((key, (HEADER_LEN + records.len()) as u64));
                records.extend_from_slice(rec);
            }
            let (new_id, new_len) = self.write_segment(tier, &records)?;
            let res = (|| {
                let tx = self.db.transaction()?;
                upsert_segment(&tx, new_id, tier, new_len)?;
                {
                    let mut up = tx.prepare_cached(
                        "UPDATE samples SET segment = ?2, offset = ?3 WHERE key = ?1",
                    )?;
                    for &(key, off) in &moved {
                        up.execute(params![key as i64, new_id, off as i64])?;
                    }
                }
                tx.execute("DELETE FROM samples WHERE segment = ?1", [id])?;
                tx.execute("DELETE FROM segments WHERE id = ?1", [id])?;
                meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
                tx.commit()
            })();
            if let Err(e) = res {
                let _ = self.remove_segment(new_id, tier);
                return Err(e.into());
            }
            self.remove_segment(id, tier)?;
            report.segments_rewritten += 1;
            report.records_dropped += dropped;
        }
        // Old index pages live on in the WAL until it is checkpointed.
        self.db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        report.bytes_after = self.total_bytes()?;
        Ok(report)
    }

    /// Index lookups: one query per key for a few keys, one scan of the
    /// index when the keys are a good part of it.
    fn live_locs(&self, keys: &[u64]) -> Result<Vec<Loc>, StoreError> {
        if keys.len() < 1024 {
            return keys.iter().map(|&k| self.loc_of(k)).collect();
        }
        let rows: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))?;
        if (keys.len() as i64) * 16 < rows {
            return keys.iter().map(|&k| self.loc_of(k)).collect();
        }
        let mut all = HashMap::with_capacity(rows as usize);
        let mut stmt = self.db.prepare_cached(
            "SELECT key, segment, offset, len, tier FROM samples WHERE deleted = 0",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let key = r.get::<_, i64>(0)? as u64;
            all.insert(
                key,
                Loc {
                    key,
                    segment: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    len: r.get::<_, i64>(3)? as u64,
                    tier: Tier::from_code(r.get(4)?),
                },
            );
        }
        keys.iter()
            .map(|k| all.get(k).copied().ok_or(StoreError::NotFound(*k)))
            .collect()
    }

    /// The live samples among `keys` that sit in `tier`, once each, by key.
    fn live_locs_in(&self, keys: &[u64], tier: Tier) -> Result<Vec<Loc>, StoreError> {
        let mut locs: Vec<Loc> = self
            .live_locs(keys)?
            .into_iter()
            .filter(|l| l.tier == tier)
            .collect();
        locs.sort_by_key(|l| l.key);
        locs.dedup_by_key(|l| l.key);
        Ok(locs)
    }

    /// Moves samples to the cold tier (samples already cold are left).
    /// Returns how many moved. The hot bytes are reclaimed by
    /// [`Store::compact`].
    pub fn demote(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let locs = self.live_locs_in(keys, Tier::Hot)?;
        if locs.is_empty() {
            return Ok(0);
        }
        let batch = self.read_locs(&locs)?;
        // Cut into objects of at most max_segment_bytes.
        let mut objects = vec![ColdObject::default()];
        for s in batch.to_samples() {
            let cur = objects.last_mut().expect("non-empty");
            let rec_len = segment::record_len(s.features.len()) as u64;
            if !cur.moved.is_empty()
                && (HEADER_LEN + cur.records.len()) as u64 + rec_len > self.max_segment_bytes
            {
                objects.push(ColdObject::default());
            }
            let cur = objects.last_mut().expect("non-empty");
            cur.moved
                .push((s.key, (HEADER_LEN + cur.records.len()) as u64));
            encode(&s, &mut cur.records)?;
        }
        let mut written = Vec::new();
        for o in &objects {
            match self.write_segment(Tier::Cold, &o.records) {
                Ok(x) => written.push(x),
                Err(e) => {
                    for &(id, _) in &written {
                        let _ = self.remove_segment(id, Tier::Cold);
                    }
                    return Err(e);
                }
            }
        }
        let res = (|| {
            let tx = self.db.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "UPDATE samples SET segment = ?2, offset = ?3, tier = 1 WHERE key = ?1",
                )?;
                for (o, &(id, len)) in objects.iter().zip(&written) {
                    upsert_segment(&tx, id, Tier::Cold, len)?;
                    for &(key, off) in &o.moved {
                        up.execute(params![key as i64, id, off as i64])?;
                    }
                }
            }
            meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
            tx.commit()
        })();
        if let Err(e) = res {
            for &(id, _) in &written {
                let _ = self.remove_segment(id, Tier::Cold);
            }
            return Err(e.into());
        }
        Ok(locs.len())
    }

    /// Moves samples back to the hot tier (reading them from the cold tier
    /// counts as cold reads). Returns how many moved.
    pub fn promote(&mut self, keys: &[u64]) -> Result<usize, StoreError> {
        let locs = self.live_locs_in(keys, Tier::Cold)?;
        if locs.is_empty() {
            return Ok(0);
        }
        let batch = self.read_locs(&locs)?;
        let (buf, bounds) = encode_all(batch.to_samples().iter(), 0)?;
        let appended = self.append_hot(&buf, &bounds)?;
        let res = (|| {
            let tx = self.db.transaction()?;
            for t in &appended.touched {
                upsert_segment(&tx, t.id, Tier::Hot, t.new_len)?;
            }
            {
                let mut up = tx.prepare_cached(
                    "UPDATE samples SET segment = ?2, offset = ?3, tier = 0 WHERE key = ?1",
                )?;
                for (l, &(seg, off)) in locs.iter().zip(&appended.locs) {
                    up.execute(params![l.key as i64, seg, off as i64])?;
                }
            }
            meta_set(&tx, "next_segment", &self.next_segment.to_string())?;
            tx.commit()
        })();
        if let Err(e) = res {
            self.undo_append(&appended);
            return Err(e.into());
        }
        Ok(locs.len())
    }

    /// Keeps the `hot_fraction` most important live samples hot and the rest
    /// cold, then compacts. Importance is the latest score, higher first;
    /// unscored samples (new since the last scoring) count as most important,
    /// and ties go to the newer sample.
    pub fn retier(&mut self, hot_fraction: f64) -> Result<TierReport, StoreError> {
        if !(0.0..=1.0).contains(&hot_fraction) {
            return Err(StoreError::Invalid(format!(
                "hot fraction must be in [0, 1], got {hot_fraction}"
            )));
        }
        let mut entries = self.entries()?;
        entries.sort_by(|a, b| {
            let sa = a.score.unwrap_or(f32::INFINITY);
            let sb = b.score.unwrap_or(f32::INFINITY);
            sb.total_cmp(&sa)
                .then(b.timestamp.cmp(&a.timestamp))
                .then(b.key.cmp(&a.key))
        });
        let n_hot = ((entries.len() as f64) * hot_fraction).round() as usize;
        let promote: Vec<u64> = entries[..n_hot]
            .iter()
            .filter(|e| e.tier == Tier::Cold)
            .map(|e| e.key)
            .collect();
        let demote: Vec<u64> = entries[n_hot..]
            .iter()
            .filter(|e| e.tier == Tier::Hot)
            .map(|e| e.key)
            .collect();
        let demoted = self.demote(&demote)?;
        let promoted = self.promote(&promote)?;
        let compact = self.compact()?;
        Ok(TierReport {
            demoted,
            promoted,
            hot: n_hot,
            cold: entries.len() - n_hot,
            compact,
        })
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats {
            dir: self.dir.clone(),
            cold_location: self.cold.describe(),
            dim: self.dim,
            cold_reads: self.cold_reads.load(Ordering::Relaxed),
            cold_read_bytes: self.cold_read_bytes.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        {
            let mut stmt = self.db.prepare(
                "SELECT tier, deleted, COUNT(*), COALESCE(SUM(len), 0) FROM samples GROUP BY tier, deleted",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let tier = Tier::from_code(r.get(0)?);
                let deleted: i64 = r.get(1)?;
                let count = r.get::<_, i64>(2)? as u64;
                let bytes = r.get::<_, i64>(3)? as u64;
                match (deleted != 0, tier) {
                    (true, _) => s.deleted += count,
                    (false, Tier::Hot) => {
                        s.hot_samples += count;
                        s.hot_live_bytes += bytes;
                    }
                    (false, Tier::Cold) => {
                        s.cold_samples += count;
                        s.cold_live_bytes += bytes;
                    }
                }
            }
        }
        s.samples = s.hot_samples + s.cold_samples;
        {
            let mut stmt = self.db.prepare(
                "SELECT tier, COUNT(*), COALESCE(SUM(len), 0) FROM segments GROUP BY tier",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let count = r.get::<_, i64>(1)? as u64;
                let bytes = r.get::<_, i64>(2)? as u64;
                match Tier::from_code(r.get(0)?) {
                    Tier::Hot => (s.hot_segments, s.hot_bytes) = (count, bytes),
                    Tier::Cold => (s.cold_segments, s.cold_bytes) = (count, bytes),
                }
            }
        }
        (s.min_timestamp, s.max_timestamp) = self.db.query_row(
            "SELECT MIN(ts), MAX(ts) FROM samples WHERE deleted = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stmt = self.db.prepare(
            "SELECT label, COUNT(*) FROM samples WHERE deleted = 0 GROUP BY label ORDER BY label",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (label, count) = row?;
            s.classes.push((self.labels.name(label), count as u64));
        }
        Ok(s)
    }
}

/// Iterator over replay windows (see [`Store::replay`]).
pub struct Replay<'s> {
    store: &'s Store,
    window: Window,
    /// `(ts, key)` of the last sample yielded.
    cursor: Option<(i64, i64)>,
    t0: Option<i64>,
    index: usize,
    done: bool,
}

impl Replay<'_> {
    fn query(&self, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<(Loc, i64)>, StoreError> {
        let mut stmt = self.store.db.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok((
                Loc {
                    key: r.get::<_, i64>(0)? as u64,
                    segment: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    len: r.get::<_, i64>(3)? as u64,
                    tier: Tier::from_code(r.get(4)?),
                },
                r.get::<_, i64>(5)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn next_window(&mut self) -> Result<Option<WindowBatch>, StoreError> {
        const COLS: &str = "SELECT key, segment, offset, len, tier, ts FROM samples";
        let (c_ts, c_key) = self.cursor.unwrap_or((i64::MIN, i64::MIN));
        let after = "deleted = 0 AND (ts > ?1 OR (ts = ?1 AND key > ?2))";
        let (rows, start, end) = match self.window {
            Window::Samples(n) => {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                let sql = format!("{COLS} WHERE {after} ORDER BY ts, key LIMIT ?3");
                let rows = if self.cursor.is_none() {
                    // Include a first sample at i64::MIN.
                    self.query(
                        &format!("{COLS} WHERE deleted = 0 ORDER BY ts, key LIMIT ?1"),
                        &[&n],
                    )?
                } else {
                    self.query(&sql, &[&c_ts, &c_key, &n])?
                };
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(None);
                };
                let (s, e) = (first.1, last.1.saturating_add(1));
                (rows, s, e)
            }
            Window::Time(t) => {
                let next = if self.cursor.is_none() {
                    self.query(
                        &format!("{COLS} WHERE deleted = 0 ORDER BY ts, key LIMIT 1"),
                        &[],
                    )?
                } else {
                    self.query(
                        &format!("{COLS} WHERE {after} ORDER BY ts, key LIMIT 1"),
                        &[&c_ts, &c_key],
                    )?
                };
                let Some(&(_, ts)) = next.first() else {
                    return Ok(None);
                };
                let t0 = *self.t0.get_or_insert(ts);
                let k = (ts as i128 - t0 as i128).div_euclid(t as i128);
                let start = (t0 as i128 + k * t as i128) as i64;
                let end = start.saturating_add(t);
                let rows = self.query(
                    &format!("{COLS} WHERE deleted = 0 AND ts >= ?1 AND ts < ?2 ORDER BY ts, key"),
                    &[&start, &end],
                )?;
                (rows, start, end)
            }
        };
        let last = rows.last().expect("non-empty");
        self.cursor = Some((last.1, last.0.key as i64));
        let locs: Vec<Loc> = rows.into_iter().map(|r| r.0).collect();
        let batch = self.store.read_locs(&locs)?;
        let index = self.index;
        self.index += 1;
        Ok(Some(WindowBatch {
            index,
            start,
            end,
            batch,
        }))
    }
}

impl Iterator for Replay<'_> {
    type Item = Result<WindowBatch, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_window() {
            Ok(Some(w)) => Some(Ok(w)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Records encoded back to back, and each record's byte range.
type Encoded = (Vec<u8>, Vec<(usize, usize)>);

/// Encodes records back to back.
fn encode_all<'a>(
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
