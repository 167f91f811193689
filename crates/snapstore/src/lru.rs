//! A byte-bounded LRU index (pure): entries with sizes, least recently used
//! evicted first when the total passes the limit.

use std::collections::{BTreeMap, HashMap};

use crate::digest::Digest;

#[derive(Debug)]
pub(crate) struct Lru<V> {
    map: HashMap<Digest, (V, u64, u64)>,
    order: BTreeMap<u64, Digest>,
    bytes: u64,
    limit: u64,
    tick: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new(limit: u64) -> Lru<V> {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            limit,
            tick: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.map.contains_key(d)
    }

    /// The value, marked most recently used.
    pub fn get(&mut self, d: &Digest) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.map.get_mut(d)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, *d);
        Some(v.clone())
    }

    /// Inserts (or refreshes) an entry and returns what was evicted to make
    /// room. An entry larger than the whole limit is not kept (returned as
    /// evicted itself).
    pub fn insert(&mut self, d: Digest, v: V, size: u64) -> Vec<(Digest, V)> {
        if let Some(old) = self.remove(&d) {
            drop(old);
        }
        if size > self.limit {
            return vec![(d, v)];
        }
        self.tick += 1;
        self.order.insert(self.tick, d);
        self.map.insert(d, (v, size, self.tick));
        self.bytes += size;
        let mut evicted = Vec::new();
        while self.bytes > self.limit {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((v, s, _)) = self.map.remove(&victim) {
                self.bytes -= s;
                evicted.push((victim, v));
            }
        }
        evicted
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }

    pub fn remove(&mut self, d: &Digest) -> Option<V> {
        let (v, s, t) = self.map.remove(d)?;
        self.order.remove(&t);
        self.bytes -= s;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest::of(&[i])
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut l = Lru::new(10);
        assert!(l.insert(d(1), 1, 4).is_empty());
        assert!(l.insert(d(2), 2, 4).is_empty());
        assert_eq!(l.get(&d(1)), Some(1)); // 2 is now the oldest
        let ev = l.insert(d(3), 3, 4);
        assert_eq!(ev, vec![(d(2), 2)]);
        assert_eq!(l.bytes(), 8);
        assert_eq!(l.len(), 2);
        // Too big to ever fit: not kept, nothing else evicted.
        assert_eq!(l.insert(d(4), 4, 11), vec![(d(4), 4)]);
        assert_eq!(l.bytes(), 8);
        // Re-inserting replaces, not double counts.
        assert!(l.insert(d(3), 3, 4).is_empty());
        assert_eq!(l.bytes(), 8);
        assert_eq!(l.remove(&d(1)), Some(1));
        assert_eq!(l.bytes(), 4);
        assert!(!l.contains(&d(1)) && l.contains(&d(3)));
    }
}
