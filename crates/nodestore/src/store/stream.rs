//! Items written as their bytes arrive: a reply too large to hold in
//! memory whole goes to the store chunk by chunk, its room reserved for
//! its declared size first ([`Store::begin`]), or for the most it may be
//! when its length is not known ([`Store::begin_bounded`], the rest given
//! back at the end), and counts only once it is all there
//! ([`Store::finish`]).

use std::io::Write;
use std::path::PathBuf;

use super::{Item, Store, StoreError, ITEM_MODE};
use crate::ledger::{ItemId, Tier};

/// An item being written ([`Store::begin`]): finish or abandon it.
pub struct Writing {
    id: ItemId,
    path: PathBuf,
    tier: Tier,
    size: u64,
    /// `size` is the item's length (else only its bound).
    exact: bool,
    written: u64,
    out: Box<dyn Write + Send>,
}

impl Writing {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Store {
    /// Reserves room for an item of `size` bytes of invocation `inv` and
    /// opens its file; the bytes follow ([`Store::write`]).
    pub fn begin(&self, inv: &str, size: u64) -> Result<Writing, StoreError> {
        self.begin_with(inv, size, true)
    }

    /// [`Store::begin`] for an item of unknown length, at most `max`
    /// bytes: that much room is reserved (and decides the tier), and what
    /// the item did not take is given back when it is finished.
    pub fn begin_bounded(&self, inv: &str, max: u64) -> Result<Writing, StoreError> {
        self.begin_with(inv, max, false)
    }

    fn begin_with(&self, inv: &str, size: u64, exact: bool) -> Result<Writing, StoreError> {
        let (id, tier, path) = self.reserve(inv, size)?;
        match self.backend.create_new(&path, ITEM_MODE) {
            Ok(out) => Ok(Writing {
                id,
                path,
                tier,
                size,
                exact,
                written: 0,
                out,
            }),
            Err(e) => {
                self.forget(id, &path);
                Err(StoreError::Io {
                    what: "cannot write",
                    path: path.display().to_string(),
                    source: e,
                })
            }
        }
    }

    /// Writes the next bytes of `w`; more than its declared size is an
    /// error (and `w` should be abandoned).
    pub fn write(&self, w: &mut Writing, b: &[u8]) -> Result<(), StoreError> {
        if w.written.saturating_add(b.len() as u64) > w.size {
            return Err(StoreError::Stream {
                size: w.size,
                why: format!("more bytes came ({} and more)", w.written + b.len() as u64),
            });
        }
        w.out.write_all(b).map_err(|e| StoreError::Io {
            what: "cannot write",
            path: w.path.display().to_string(),
            source: e,
        })?;
        w.written += b.len() as u64;
        Ok(())
    }

    /// The item `w` made, once all its declared bytes are written (any
    /// number up to its bound, for [`Store::begin_bounded`]) and its
    /// invocation has not ended meanwhile; else it is deleted.
    pub fn finish(&self, mut w: Writing) -> Result<Item, StoreError> {
        let flushed = w.out.flush();
        let why = if w.exact && w.written != w.size {
            Some(format!("only {} bytes came", w.written))
        } else if let Err(e) = flushed {
            Some(format!("cannot write {}: {e}", w.path.display()))
        } else if !self.ledger.lock().shrink(w.id, w.written) {
            Some("its invocation ended while it was written".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            let size = w.size;
            self.abandon(w);
            return Err(StoreError::Stream { size, why });
        }
        self.counts.lock().written += 1;
        Ok(Item {
            id: w.id,
            path: w.path,
            size: w.written,
            tier: w.tier,
        })
    }

    /// Gives `w` up: its room and its file.
    pub fn abandon(&self, w: Writing) {
        drop(w.out);
        self.forget(w.id, &w.path);
    }

    /// Deletes one item (one made only to be split, say).
    pub fn remove(&self, item: &Item) {
        self.forget(item.id, &item.path);
    }
}
