//! Slot tables ([`SlotTable`]): entries in the slots of a slab, found by
//! their key through a hash table of 4-byte slot numbers; the subscription
//! tree keeps its clients in one, and the broker its connections by number
//! ([`ConnTable`]). An open
//! connection costs its slot (its number and its state, unboxed) and five
//! bytes of table or two; no allocation of its own.
//!
//! The slab grows by an eighth at a time rather than doubling, so that its
//! spare slots (each the size of a whole connection) stay under an eighth
//! of the connections the broker had at most: doubling would leave up to as
//! many spare slots as connections, which is why the connections were
//! boxed before. That is room allocated; little of it is resident either
//! way, since the spare slots at a large slab's end are never written.
//! Growing by a fraction keeps the copies bounded (each slot is moved about
//! eight times, on average, while the slab grows to twice the size). A
//! freed slot is given to the next connection; the room is not given back
//! while the broker runs, as the registry's is not.

use std::mem::size_of;

use hashbrown::HashTable;
use sessionwire::mqtt::session::ConnId;
use slab::Slab;

use super::heap::{block, table_heap};

/// Slots added at least when the slab is full.
const GROW_MIN: usize = 64;

/// Makes room for one more entry in a full slab: an eighth more slots (at
/// least [`GROW_MIN`]) rather than twice as many; see the [module
/// documentation](self).
fn make_room<T>(slab: &mut Slab<T>) {
    if slab.len() == slab.capacity() {
        let more = (slab.len() / 8).max(GROW_MIN);
        slab.reserve_exact(more);
    }
}

/// What a [`SlotTable`] finds its entries by.
pub(super) trait Keyed {
    /// The key, borrowed.
    type Key: Eq + ?Sized;
    /// This entry's key.
    fn key(&self) -> &Self::Key;
    /// The hash of a key.
    fn hash(key: &Self::Key) -> u64;
}

/// Entries with a unique key each, named by slot number: a slab that
/// grows by an eighth, and a hash table of 4-byte slot numbers hashed by
/// the entry's key, which is stored once, in the entry. A freed number is
/// given to the next entry. The broker's connections ([`ConnTable`]) and
/// the subscription tree's clients both live in one.
#[derive(Debug)]
pub(super) struct SlotTable<T> {
    slab: Slab<T>,
    index: HashTable<u32>,
}

impl<T> Default for SlotTable<T> {
    fn default() -> Self {
        SlotTable {
            slab: Slab::new(),
            index: HashTable::new(),
        }
    }
}

impl<T: Keyed> SlotTable<T> {
    /// The slot of the entry with `key`.
    pub(super) fn find(&self, key: &T::Key) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(T::hash(key), |&at| {
                slab.get(at as usize).is_some_and(|e| e.key() == key)
            })
            .copied()
    }

    /// The entry in slot `at`.
    pub(super) fn get(&self, at: u32) -> Option<&T> {
        self.slab.get(at as usize)
    }

    /// The entry in slot `at`.
    pub(super) fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        self.slab.get_mut(at as usize)
    }

    /// Files `entry`, whose key no entry has (the caller checks with
    /// [`find`](Self::find)); `Err(entry)`, nothing filed, once `u32::MAX`
    /// slots are taken.
    pub(super) fn insert(&mut self, entry: T) -> Result<u32, T> {
        let Ok(at) = u32::try_from(self.slab.vacant_key()) else {
            return Err(entry);
        };
        let hash = T::hash(entry.key());
        make_room(&mut self.slab);
        self.slab.insert(entry);
        let slab = &self.slab;
        self.index.insert_unique(hash, at, |&i| {
            slab.get(i as usize).map_or(0, |e| T::hash(e.key()))
        });
        Ok(at)
    }

    /// Takes out the entry in slot `at`; the slot may be given again.
    pub(super) fn remove(&mut self, at: u32) -> Option<T> {
        let hash = T::hash(self.get(at)?.key());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == at) {
            entry.remove();
        }
        self.slab.try_remove(at as usize)
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// The heap the table holds: its slots and its index (as
    /// [`block`](super::heap::block) counts a `malloc`).
    pub(super) fn heap(&self) -> usize {
        let slots = block(self.slab.capacity().saturating_mul(size_of::<T>()));
        slots.saturating_add(block(self.index.allocation_size()))
    }

    /// What one more entry could add to [`heap`](Self::heap): the slots
    /// [`make_room`] adds to a full slab, and the index's doubling.
    pub(super) fn growth(&self) -> usize {
        let mut grows = 0;
        if self.slab.len() == self.slab.capacity() {
            let more = (self.slab.len() / 8).max(GROW_MIN);
            grows = more.saturating_mul(size_of::<T>()).saturating_add(16);
        }
        if self.index.len() == self.index.capacity() {
            let now = block(self.index.allocation_size());
            let grown = self.index.capacity().saturating_mul(2).max(3);
            grows = grows.saturating_add(table_heap::<u32>(grown).saturating_sub(now));
        }
        grows
    }

    /// Every entry with its slot, in slot order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slab
            .iter()
            .filter_map(|(at, e)| Some((u32::try_from(at).ok()?, e)))
    }

    /// Slots allocated, taken or not.
    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        self.slab.capacity()
    }

    /// Slot numbers in the hash table (one per entry, if all is well).
    #[cfg(test)]
    pub(super) fn indexed(&self) -> usize {
        self.index.len()
    }

    /// Takes out every entry, in no particular order; the room stays.
    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.index.clear();
        self.slab.drain()
    }
}

/// A connection and its number, as [`ConnTable`] files it.
#[derive(Debug)]
struct Numbered<T> {
    id: ConnId,
    value: T,
}

impl<T> Keyed for Numbered<T> {
    type Key = ConnId;

    fn key(&self) -> &ConnId {
        &self.id
    }

    /// Connection numbers are the server's own (counted up from 1), not a
    /// client's choice: a multiplicative hash spreads them over the table's
    /// control bytes with no key to keep.
    fn hash(id: &ConnId) -> u64 {
        id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Entries named by a [`ConnId`], each unique, in a [`SlotTable`]. See the
/// [module documentation](self).
#[derive(Debug)]
pub(super) struct ConnTable<T> {
    table: SlotTable<Numbered<T>>,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        ConnTable {
            table: SlotTable::default(),
        }
    }
}

impl<T> ConnTable<T> {
    /// Files `value` under `id`, replacing (and returning) what `id` had;
    /// `Err(value)`, nothing filed, once `u32::MAX` slots are taken.
    pub(super) fn insert(&mut self, id: ConnId, value: T) -> Result<Option<T>, T> {
        if let Some(held) = self.get_mut(id) {
            return Ok(Some(std::mem::replace(held, value)));
        }
        match self.table.insert(Numbered { id, value }) {
            Ok(_) => Ok(None),
            Err(n) => Err(n.value),
        }
    }

    /// Takes out the entry of `id`.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<T> {
        let at = self.table.find(&id)?;
        self.table.remove(at).map(|n| n.value)
    }

    /// The entry of `id`.
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let at = self.table.find(&id)?;
        self.table.get_mut(at).map(|n| &mut n.value)
    }

    /// Whether `id` has an entry.
    pub(super) fn contains(&self, id: ConnId) -> bool {
        self.table.find(&id).is_some()
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Takes out every entry, in no particular order; the room stays.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (ConnId, T)> + '_ {
        self.table.drain().map(|n| (n.id, n.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Step {
        Open(u64, u16),
        Close(u64),
        Touch(u64, u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Few numbers, so that numbers are opened again and slots reused;
        // a run of opens now and then, so that the slab grows.
        prop_oneof![
            4 => (0u64..300, any::<u16>()).prop_map(|(c, v)| Step::Open(c, v)),
            3 => (0u64..300).prop_map(Step::Close),
            1 => (0u64..300, any::<u16>()).prop_map(|(c, v)| Step::Touch(c, v)),
        ]
    }

    proptest! {
        /// Opening, closing and changing connections in any order: the
        /// table finds what a plain map finds, and its spare slots stay
        /// within an eighth of the most it held (or [`GROW_MIN`]).
        #[test]
        fn conn_table_agrees_with_a_map_and_keeps_little_spare_room(
            steps in prop::collection::vec(step(), 0..600),
        ) {
            let mut table = ConnTable::default();
            let mut model: HashMap<u64, u16> = HashMap::new();
            let mut most = 0;
            for s in &steps {
                match *s {
                    Step::Open(c, v) => {
                        let old = table.insert(ConnId(c), v).ok().flatten();
                        prop_assert_eq!(old, model.insert(c, v));
                    }
                    Step::Close(c) => {
                        prop_assert_eq!(table.remove(ConnId(c)), model.remove(&c));
                    }
                    Step::Touch(c, v) => {
                        if let Some(held) = table.get_mut(ConnId(c)) {
                            *held = v;
                        }
                        if let Some(held) = model.get_mut(&c) {
                            *held = v;
                        }
                    }
                }
                most = most.max(model.len());
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.table.indexed(), model.len());
                for c in 0..300 {
                    prop_assert_eq!(table.contains(ConnId(c)), model.contains_key(&c));
                }
                let room = table.table.room();
                let bound = most + (most / 8).max(GROW_MIN);
                prop_assert!(room <= bound, "{} slots for at most {}", room, most);
            }
            let mut drained: Vec<(u64, u16)> = table.drain().map(|(c, v)| (c.0, v)).collect();
            drained.sort_unstable();
            let mut want: Vec<(u64, u16)> = model.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(drained, want);
            prop_assert_eq!(table.len(), 0);
            prop_assert!(!table.contains(ConnId(0)));
        }
    }
}
