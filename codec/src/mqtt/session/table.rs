//! Where the registry keeps its connections and sessions: each in a slab
//! (a vector of slots, a freed slot reused first) named by its slot
//! number, found by its key through a hash table of slot numbers. An entry
//! costs its slot and four bytes of table, and its key is stored once, in
//! the entry itself.

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

/// One slot: an entry, or a free slot and the next free one.
#[derive(Debug)]
enum Slot<T> {
    Full(T),
    Free(Option<u32>),
}

/// Entries named by a slot number; a freed number is given again.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Option<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: None,
            len: 0,
        }
    }

    /// Files `value`, in a freed slot if there is one; `None` once the
    /// slot numbers are all taken (more than `u32::MAX` entries).
    fn insert(&mut self, value: T) -> Option<u32> {
        let at = match self.free {
            Some(at) => {
                let slot = self.slots.get_mut(at as usize)?;
                let Slot::Free(next) = *slot else {
                    return None;
                };
                self.free = next;
                *slot = Slot::Full(value);
                at
            }
            None => {
                let at = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot::Full(value));
                at
            }
        };
        self.len += 1;
        Some(at)
    }

    fn get(&self, at: u32) -> Option<&T> {
        match self.slots.get(at as usize)? {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => None,
        }
    }

    fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        match self.slots.get_mut(at as usize)? {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => None,
        }
    }

    fn remove(&mut self, at: u32) -> Option<T> {
        let slot = self.slots.get_mut(at as usize)?;
        if matches!(slot, Slot::Free(_)) {
            return None;
        }
        let Slot::Full(v) = std::mem::replace(slot, Slot::Free(self.free)) else {
            return None;
        };
        self.free = Some(at);
        self.len -= 1;
        Some(v)
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => None,
        })
    }
}

/// What a [`Table`] finds its entries by.
pub(super) trait Keyed {
    /// The key type, borrowed.
    type Key: Hash + Eq + ?Sized;
    /// This entry's key.
    fn key(&self) -> &Self::Key;
}

/// Entries with a unique key each, named by slot number: a slab and a
/// hash table of slot numbers hashed by the entry's key (SipHash with a
/// random key, so that chosen keys do not collide on purpose).
#[derive(Debug)]
pub(super) struct Table<T: Keyed> {
    slab: Slab<T>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl<T: Keyed> Table<T> {
    /// An empty table.
    pub(super) fn new() -> Self {
        Table {
            slab: Slab::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// The slot of the entry with `key`.
    pub(super) fn find(&self, key: &T::Key) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let slab = &self.slab;
        self.index
            .find(hash, |&at| slab.get(at).is_some_and(|e| e.key() == key))
            .copied()
    }

    /// Files `entry`, whose key no entry has (the caller checks with
    /// [`find`](Self::find)); `None` when the slot numbers are all taken.
    pub(super) fn insert(&mut self, entry: T) -> Option<u32> {
        let hash = self.hasher.hash_one(entry.key());
        let at = self.slab.insert(entry)?;
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.index.insert_unique(hash, at, |&i| {
            slab.get(i).map_or(0, |e| hasher.hash_one(e.key()))
        });
        Some(at)
    }

    /// Takes the entry out of slot `at`.
    pub(super) fn remove(&mut self, at: u32) -> Option<T> {
        let hash = self.hasher.hash_one(self.slab.get(at)?.key());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == at) {
            entry.remove();
        }
        self.slab.remove(at)
    }

    /// The entry in slot `at`.
    pub(super) fn get(&self, at: u32) -> Option<&T> {
        self.slab.get(at)
    }

    /// The entry in slot `at`. Its key must not be changed.
    pub(super) fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        self.slab.get_mut(at)
    }

    /// The entry with `key`.
    pub(super) fn by_key(&self, key: &T::Key) -> Option<&T> {
        self.find(key).and_then(|at| self.slab.get(at))
    }

    /// The entry with `key`. Its key must not be changed.
    pub(super) fn by_key_mut(&mut self, key: &T::Key) -> Option<&mut T> {
        let at = self.find(key)?;
        self.slab.get_mut(at)
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.slab.len
    }

    /// Every entry.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slab.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct E(String, u8);

    impl Keyed for E {
        type Key = str;
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn table_finds_by_key_and_reuses_freed_slots() {
        let mut t = Table::new();
        let a = t.insert(E("a".into(), 1)).unwrap();
        let b = t.insert(E("b".into(), 2)).unwrap();
        assert_eq!(
            (t.find("a"), t.find("b"), t.find("c")),
            (Some(a), Some(b), None)
        );
        assert_eq!(t.remove(a), Some(E("a".into(), 1)));
        assert_eq!((t.find("a"), t.get(a), t.len()), (None, None, 1));
        assert_eq!(t.remove(a), None);
        // The freed slot is given again, and found by its new key.
        let c = t.insert(E("c".into(), 3)).unwrap();
        assert_eq!(c, a);
        assert_eq!(t.by_key("c").map(|e| e.1), Some(3));
        assert_eq!(t.by_key("b").map(|e| e.1), Some(2));
        // Many entries, many removed: every key still found.
        for i in 0..500u32 {
            t.insert(E(i.to_string(), 0)).unwrap();
        }
        for i in (0..500u32).step_by(2) {
            let at = t.find(i.to_string().as_str()).unwrap();
            t.remove(at).unwrap();
        }
        for i in 0..500u32 {
            assert_eq!(t.find(i.to_string().as_str()).is_some(), i % 2 == 1, "{i}");
        }
        assert_eq!(t.len(), 252);
        assert_eq!(t.iter().count(), 252);
    }
}
