//! One invocation's view of the store: which of its items are files
//! already, so an item is written at most once however many consumers read
//! it, and all its items are freed when the invocation ends (the session is
//! dropped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::store::{Item, Store, StoreError};

/// An item's bytes are known by their address and length. The session
/// holds a clone of each, so the memory (or mapping) stays alive and its
/// address cannot be reused by another item while the entry exists.
type Key = (usize, usize);

fn key(b: &Bytes) -> Key {
    (b.as_ptr() as usize, b.len())
}

pub struct Session {
    store: Arc<Store>,
    inv: String,
    known: Mutex<HashMap<Key, (Bytes, PathBuf)>>,
}

impl Session {
    pub fn new(store: Arc<Store>, inv: &str) -> Session {
        Session {
            store,
            inv: inv.to_string(),
            known: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn invocation(&self) -> &str {
        &self.inv
    }

    /// The file holding `b`, if it is one of this invocation's items.
    pub fn path_of(&self, b: &Bytes) -> Option<PathBuf> {
        self.known.lock().get(&key(b)).map(|(_, p)| p.clone())
    }

    /// The file holding `b`: the item's own, or a new one written now
    /// (an item that came from the client or from an HTTP-mode function).
    pub fn stage(&self, b: &Bytes) -> Result<PathBuf, StoreError> {
        if let Some(p) = self.path_of(b) {
            self.store.touch(&self.inv);
            return Ok(p);
        }
        let item = self.store.put(&self.inv, std::slice::from_ref(b))?;
        self.known
            .lock()
            .insert(key(b), (b.clone(), item.path.clone()));
        Ok(item.path)
    }

    /// Adopts a reply's output file (see [`Store::adopt`]) and returns its
    /// bytes, mapped.
    pub fn adopt(&self, dir: &Path, name: &[u8]) -> Result<(Item, Bytes), StoreError> {
        let item = self.store.adopt(&self.inv, dir, name)?;
        // Should mapping fail, the item is still freed with the invocation.
        let b = self.store.map(&item)?;
        self.known
            .lock()
            .insert(key(&b), (b.clone(), item.path.clone()));
        Ok((item, b))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.known.get_mut().clear();
        self.store.end(&self.inv);
    }
}
