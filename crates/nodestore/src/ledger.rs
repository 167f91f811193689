//! The store's accounting, pure: which tier an item goes to under the byte
//! budgets, which items each invocation holds, and which invocations' time
//! to live has passed. No files, no clocks: time is an argument
//! (microseconds on any monotonic scale the caller keeps).

use std::collections::HashMap;

/// Where an item's file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The tmpfs directory (RAM), under the memory budget.
    Memory,
    /// The local-disk directory, under the disk budget.
    Disk,
}

/// An item's name: 128 random bits, written as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(pub u128);

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Byte budgets of the two tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub memory: u64,
    pub disk: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("an item of {size} bytes does not fit the node data store: memory tier {mem_used}/{mem_budget} bytes used, disk tier {disk_used}/{disk_budget} bytes used")]
    Full {
        size: u64,
        mem_used: u64,
        mem_budget: u64,
        disk_used: u64,
        disk_budget: u64,
    },
    #[error("item {0} is already held")]
    Duplicate(ItemId),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tier: Tier,
    size: u64,
}

#[derive(Debug, Default)]
struct Inv {
    items: Vec<ItemId>,
    expires_us: u64,
}

/// One freed item: what the IO layer must delete. Its bytes stay counted
/// against its tier until [`Ledger::deleted`] says the file is gone, so
/// the budgets never admit more than the tiers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub id: ItemId,
    pub tier: Tier,
    pub size: u64,
}

/// Items per invocation, bytes per tier, and times to live.
#[derive(Debug)]
pub struct Ledger {
    budget: Budget,
    ttl_us: u64,
    mem_used: u64,
    disk_used: u64,
    items: HashMap<ItemId, (String, Entry)>,
    invs: HashMap<String, Inv>,
}

impl Ledger {
    pub fn new(budget: Budget, ttl_us: u64) -> Ledger {
        Ledger {
            budget,
            ttl_us,
            mem_used: 0,
            disk_used: 0,
            items: HashMap::new(),
            invs: HashMap::new(),
        }
    }

    /// Where an item of `size` bytes would go: memory while it fits the
    /// memory budget, else disk (an item larger than the whole memory tier
    /// goes straight there), else nowhere.
    pub fn place(&self, size: u64) -> Result<Tier, LedgerError> {
        if self.mem_used.saturating_add(size) <= self.budget.memory {
            Ok(Tier::Memory)
        } else if self.disk_used.saturating_add(size) <= self.budget.disk {
            Ok(Tier::Disk)
        } else {
            Err(self.full(size))
        }
    }

    fn full(&self, size: u64) -> LedgerError {
        LedgerError::Full {
            size,
            mem_used: self.mem_used,
            mem_budget: self.budget.memory,
            disk_used: self.disk_used,
            disk_budget: self.budget.disk,
        }
    }

    /// Accounts `id` (of `size` bytes in `tier`) to invocation `inv` and
    /// pushes the invocation's expiry to `now_us` + the time to live.
    /// Refuses what would exceed the tier's budget.
    pub fn admit(
        &mut self,
        inv: &str,
        id: ItemId,
        tier: Tier,
        size: u64,
        now_us: u64,
    ) -> Result<(), LedgerError> {
        if self.items.contains_key(&id) {
            return Err(LedgerError::Duplicate(id));
        }
        let (used, budget) = match tier {
            Tier::Memory => (&mut self.mem_used, self.budget.memory),
            Tier::Disk => (&mut self.disk_used, self.budget.disk),
        };
        if used.saturating_add(size) > budget {
            return Err(self.full(size));
        }
        *used += size;
        self.items
            .insert(id, (inv.to_string(), Entry { tier, size }));
        let e = self.invs.entry(inv.to_string()).or_default();
        e.items.push(id);
        e.expires_us = now_us.saturating_add(self.ttl_us);
        Ok(())
    }

    /// Where item `id` lives and its size, if it is held.
    pub fn lookup(&self, id: ItemId) -> Option<(Tier, u64)> {
        self.items.get(&id).map(|(_, e)| (e.tier, e.size))
    }

    /// The invocation is still alive: its items live another time to live.
    pub fn touch(&mut self, inv: &str, now_us: u64) {
        if let Some(e) = self.invs.get_mut(inv) {
            e.expires_us = now_us.saturating_add(self.ttl_us);
        }
    }

    /// The invocation holding item `id` is still alive (its item was read).
    pub fn touch_item(&mut self, id: ItemId, now_us: u64) {
        if let Some((inv, _)) = self.items.get(&id) {
            if let Some(e) = self.invs.get_mut(inv.as_str()) {
                e.expires_us = now_us.saturating_add(self.ttl_us);
            }
        }
    }

    /// Item `id` turned out `size` bytes long, no more than it was
    /// admitted with (one written before its length was known): the rest
    /// of its room is given back. False if it is not held or would grow.
    pub fn shrink(&mut self, id: ItemId, size: u64) -> bool {
        let Some((_, e)) = self.items.get_mut(&id) else {
            return false;
        };
        if size > e.size {
            return false;
        }
        let used = match e.tier {
            Tier::Memory => &mut self.mem_used,
            Tier::Disk => &mut self.disk_used,
        };
        *used -= e.size - size;
        e.size = size;
        true
    }

    /// Forgets one item (e.g. its file could not be written after all);
    /// its bytes count until [`Ledger::deleted`].
    pub fn forget(&mut self, id: ItemId) -> Option<Freed> {
        let (inv, e) = self.items.remove(&id)?;
        if let Some(i) = self.invs.get_mut(&inv) {
            i.items.retain(|x| *x != id);
            if i.items.is_empty() {
                self.invs.remove(&inv);
            }
        }
        Some(Freed {
            id,
            tier: e.tier,
            size: e.size,
        })
    }

    /// The files of `freed` (from [`Ledger::forget`], [`Ledger::end`] or
    /// [`Ledger::expire`]) are deleted: their bytes no longer count.
    pub fn deleted(&mut self, freed: &[Freed]) {
        for f in freed {
            match f.tier {
                Tier::Memory => self.mem_used -= f.size,
                Tier::Disk => self.disk_used -= f.size,
            }
        }
    }

    /// The invocation ended: all its items, to delete (their bytes count
    /// until [`Ledger::deleted`]).
    pub fn end(&mut self, inv: &str) -> Vec<Freed> {
        let Some(i) = self.invs.remove(inv) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(i.items.len());
        for id in i.items {
            if let Some((_, e)) = self.items.remove(&id) {
                out.push(Freed {
                    id,
                    tier: e.tier,
                    size: e.size,
                });
            }
        }
        out
    }

    /// Invocations whose time to live has passed at `now_us` (lost: nobody
    /// ended them), with their items, to delete.
    pub fn expire(&mut self, now_us: u64) -> Vec<(String, Vec<Freed>)> {
        let mut lost: Vec<String> = self
            .invs
            .iter()
            .filter(|(_, i)| i.expires_us <= now_us)
            .map(|(k, _)| k.clone())
            .collect();
        lost.sort();
        lost.into_iter()
            .map(|k| {
                let f = self.end(&k);
                (k, f)
            })
            .collect()
    }

    /// Bytes held in (memory, disk).
    pub fn used(&self) -> (u64, u64) {
        (self.mem_used, self.disk_used)
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Items held, all invocations together.
    pub fn items(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(mem: u64, disk: u64) -> Ledger {
        Ledger::new(Budget { memory: mem, disk }, 1_000)
    }

    #[test]
    fn a_shrunk_item_gives_its_room_back_and_never_grows() {
        let mut l = ledger(100, 1000);
        l.admit("i", ItemId(1), Tier::Memory, 80, 0).unwrap();
        assert!(l.shrink(ItemId(1), 30));
        assert_eq!(
            (l.used(), l.lookup(ItemId(1))),
            ((30, 0), Some((Tier::Memory, 30)))
        );
        assert!(!l.shrink(ItemId(1), 31), "never more than admitted");
        assert!(!l.shrink(ItemId(2), 1), "not held");
        assert_eq!(l.place(70), Ok(Tier::Memory));
        let freed = l.forget(ItemId(1)).unwrap();
        assert_eq!(freed.size, 30);
        l.deleted(&[freed]);
        assert_eq!(l.used(), (0, 0));
    }

    #[test]
    fn fills_memory_then_spills_then_refuses() {
        let mut l = ledger(100, 150);
        assert_eq!(l.place(60), Ok(Tier::Memory));
        l.admit("a", ItemId(1), Tier::Memory, 60, 0).unwrap();
        assert_eq!(l.place(60), Ok(Tier::Disk));
        l.admit("a", ItemId(2), Tier::Disk, 60, 0).unwrap();
        assert_eq!(
            l.place(40),
            Ok(Tier::Memory),
            "what still fits stays in memory"
        );
        let e = l.place(91).unwrap_err();
        assert!(e.to_string().contains("91 bytes"), "{e}");
        assert_eq!(l.used(), (60, 60));
    }

    #[test]
    fn larger_than_memory_goes_straight_to_disk() {
        let l = ledger(100, 1_000);
        assert_eq!(l.place(101), Ok(Tier::Disk));
        assert_eq!(l.place(100), Ok(Tier::Memory));
        assert!(l.place(1_001).is_err());
    }

    #[test]
    fn admit_checks_the_budget_and_duplicates() {
        let mut l = ledger(10, 10);
        assert!(l.admit("a", ItemId(1), Tier::Memory, 11, 0).is_err());
        l.admit("a", ItemId(1), Tier::Memory, 10, 0).unwrap();
        assert_eq!(
            l.admit("b", ItemId(1), Tier::Disk, 1, 0),
            Err(LedgerError::Duplicate(ItemId(1)))
        );
        assert_eq!(l.used(), (10, 0));
    }

    #[test]
    fn end_frees_only_that_invocation() {
        let mut l = ledger(100, 100);
        l.admit("a", ItemId(1), Tier::Memory, 10, 0).unwrap();
        l.admit("b", ItemId(2), Tier::Memory, 20, 0).unwrap();
        l.admit("a", ItemId(3), Tier::Disk, 30, 0).unwrap();
        let f = l.end("a");
        assert_eq!(f.len(), 2);
        assert_eq!(l.used(), (30, 30), "counted until the files are deleted");
        assert!(l.place(71).is_err(), "no room yet");
        l.deleted(&f);
        assert_eq!(l.used(), (20, 0));
        assert_eq!(l.place(71), Ok(Tier::Memory));
        assert!(l.end("a").is_empty(), "ending twice frees nothing");
        assert_eq!(l.items(), 1);
    }

    #[test]
    fn lost_invocations_expire_after_their_ttl_and_touch_extends() {
        let mut l = ledger(100, 100);
        l.admit("old", ItemId(1), Tier::Memory, 1, 0).unwrap();
        l.admit("live", ItemId(2), Tier::Memory, 1, 0).unwrap();
        assert!(l.expire(999).is_empty());
        l.touch("live", 500);
        let gone = l.expire(1_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "old");
        assert_eq!(gone[0].1[0].id, ItemId(1));
        l.deleted(&gone[0].1);
        assert_eq!(l.used(), (1, 0));
        let live = l.expire(1_500);
        assert_eq!(live[0].0, "live");
        l.deleted(&live[0].1);
        assert_eq!(l.used(), (0, 0));
    }

    #[test]
    fn forget_undoes_one_admit() {
        let mut l = ledger(100, 100);
        l.admit("a", ItemId(1), Tier::Disk, 7, 0).unwrap();
        let f = l.forget(ItemId(1)).unwrap();
        assert_eq!(f.size, 7);
        assert_eq!(l.used(), (0, 7));
        l.deleted(&[f]);
        assert_eq!(l.used(), (0, 0));
        assert!(l.forget(ItemId(1)).is_none());
        assert!(l.expire(u64::MAX).is_empty());
    }

    #[test]
    fn item_ids_print_as_32_hex_digits() {
        assert_eq!(ItemId(0xab).to_string().len(), 32);
        assert_eq!(ItemId(u128::MAX).to_string(), "f".repeat(32));
    }
}
