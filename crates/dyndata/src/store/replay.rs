//! Time-ordered replay: live samples in timestamp order (ties by key), cut
//! into windows of a sample count or a time span, paging through the index.

use super::{Loc, Store, StoreError, Tier};
use crate::Batch;

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

impl Store {
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
