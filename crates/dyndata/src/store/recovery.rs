//! Opening a store: the `LOCK` file, the index schema, and recovery from an
//! interrupted write (torn hot tails are truncated, unreferenced segment
//! files and cold objects removed).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use rusqlite::{Connection, OptionalExtension};
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use super::{io_err, parse_seg_name, seg_name, sync_dir, Store, StoreError, StoreOptions, Tier};
use crate::csv::LabelMap;
use crate::segment::{self, HEADER_LEN};
use crate::tier::{ColdTier, DirTier};

const SCHEMA_VERSION: i64 = 1;

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
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(e) if e == Errno::WOULDBLOCK => {}
            Err(e) => return Err(io_err("lock", &path)(e.into())),
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
}
