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
//!
//! The code follows those seams: `recovery` opens a store (lock, index
//! schema, torn-write repair), `ingest` appends, `read` reads records
//! back, `replay` pages through them in time order, `compact` holds
//! deletion, retention and compaction, `tiering` moves records between
//! tiers, and `stats` counts.

mod compact;
mod ingest;
mod read;
mod recovery;
mod replay;
mod stats;
mod tiering;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use rusqlite::{params, Connection, Transaction};

use crate::csv::{CsvError, LabelMap};
use crate::segment::SegmentError;
use crate::tier::{ColdError, ColdTier};

pub use compact::{CompactReport, RetentionPolicy};
pub use ingest::CsvReport;
pub use replay::{Replay, Window, WindowBatch};
pub use stats::StoreStats;
pub use tiering::{TierPolicy, TierReport};

/// Default size at which a hot segment is closed and a new one started.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 << 20;

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
    /// The cold tier; default: a [`DirTier`](crate::tier::DirTier) in `DIR/cold`.
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
}
