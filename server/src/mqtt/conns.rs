//! The broker's connections by number: each in a slot of a slab, found by
//! its [`ConnId`] through a hash table of 4-byte slot numbers. An open
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

use hashbrown::HashTable;
use sessionwire::mqtt::session::ConnId;
use slab::Slab;

/// Slots added at least when the slab is full.
const GROW_MIN: usize = 64;

/// Entries named by a [`ConnId`], each unique. See the [module
/// documentation](self).
#[derive(Debug)]
pub(super) struct ConnTable<T> {
    slab: Slab<(ConnId, T)>,
    index: HashTable<u32>,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        ConnTable {
            slab: Slab::new(),
            index: HashTable::new(),
        }
    }
}

/// Makes room for one more entry in a full slab: an eighth more slots (at
/// least [`GROW_MIN`]) rather than twice as many; see the [module
/// documentation](self). The tree's client slots grow the same way.
pub(super) fn make_room<T>(slab: &mut Slab<T>) {
    if slab.len() == slab.capacity() {
        let more = (slab.len() / 8).max(GROW_MIN);
        slab.reserve_exact(more);
    }
}

/// Connection numbers are the server's own (counted up from 1), not a
/// client's choice: a multiplicative hash spreads them over the table's
/// control bytes with no key to keep.
fn hash(id: ConnId) -> u64 {
    id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl<T> ConnTable<T> {
    fn find(&self, id: ConnId) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(hash(id), |&at| {
                slab.get(at as usize).is_some_and(|(key, _)| *key == id)
            })
            .copied()
    }

    /// Files `value` under `id`, replacing (and returning) what `id` had;
    /// `Err(value)`, nothing filed, once `u32::MAX` slots are taken.
    pub(super) fn insert(&mut self, id: ConnId, value: T) -> Result<Option<T>, T> {
        if let Some(at) = self.find(id) {
            if let Some(entry) = self.slab.get_mut(at as usize) {
                return Ok(Some(std::mem::replace(&mut entry.1, value)));
            }
        }
        let Ok(at) = u32::try_from(self.slab.vacant_key()) else {
            return Err(value);
        };
        make_room(&mut self.slab);
        self.slab.insert((id, value));
        let slab = &self.slab;
        self.index.insert_unique(hash(id), at, |&i| {
            slab.get(i as usize).map_or(0, |(key, _)| hash(*key))
        });
        Ok(None)
    }

    /// Takes out the entry of `id`.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<T> {
        let at = self.find(id)?;
        if let Ok(entry) = self.index.find_entry(hash(id), |&i| i == at) {
            entry.remove();
        }
        self.slab.try_remove(at as usize).map(|(_, value)| value)
    }

    /// The entry of `id`.
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let at = self.find(id)?;
        self.slab.get_mut(at as usize).map(|(_, value)| value)
    }

    /// Whether `id` has an entry.
    pub(super) fn contains(&self, id: ConnId) -> bool {
        self.find(id).is_some()
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Takes out every entry, in no particular order; the room stays.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (ConnId, T)> + '_ {
        self.index.clear();
        self.slab.drain()
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
                prop_assert_eq!(table.index.len(), model.len());
                for c in 0..300 {
                    prop_assert_eq!(table.contains(ConnId(c)), model.contains_key(&c));
                }
                let room = table.slab.capacity();
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
