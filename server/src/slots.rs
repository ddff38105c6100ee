//! Per-source-address slots for connections waiting for a request head.
//!
//! A connection that has not (yet, or again) sent a complete request head
//! costs the server a socket and one of its connection places while telling
//! it nothing: a slowloris client opens hundreds and trickles bytes. Once
//! half of the server's connection places are taken, each source address
//! (IPv6: each /64) may hold at most [`SOURCE_PENDING`] such connections;
//! beyond that a new one is closed at once, and one that has just been
//! answered is answered with `Connection: close` instead of being kept
//! alive. So one address can take at most half of the places, and clients at
//! other addresses still get in; while the server is far from full, a busy
//! address (a NAT, a load generator) is not held back.
//!
//! A slot is held from the accept until the request head is complete, and
//! again from each answer (other than an upgrade) until the next head.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use super::passwords::source_key;

/// Connections one source address may have waiting for a request head once
/// half of the connection places are taken.
pub const SOURCE_PENDING: u32 = 32;

/// The count of connections waiting for a head, per source address.
#[derive(Debug)]
pub struct Pending {
    counts: Mutex<HashMap<IpAddr, u32>>,
    per_source: u32,
    /// The server's connection places, and how many there are.
    places: Arc<Semaphore>,
    total: usize,
}

/// One connection's place while it waits for a head; given back on drop.
#[derive(Debug)]
pub struct PendingSlot {
    owner: Arc<Pending>,
    source: IpAddr,
}

impl Pending {
    /// At most `per_source` slots per source address once fewer than half
    /// of the `total` connection `places` are free. The map holds only
    /// addresses with a slot taken, so it is bounded by the connections
    /// open.
    pub fn new(per_source: u32, places: Arc<Semaphore>, total: usize) -> Arc<Pending> {
        Arc::new(Pending {
            counts: Mutex::new(HashMap::new()),
            per_source,
            places,
            total,
        })
    }

    /// A slot for `peer`, or `None` when its address holds its share.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Option<PendingSlot> {
        let source = source_key(peer);
        let crowded = self.places.available_permits() < self.total / 2;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(source).or_insert(0);
        if crowded && *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            owner: Arc::clone(self),
            source,
        })
    }

    /// Slots held by `peer`'s address.
    #[cfg(test)]
    fn held(&self, peer: IpAddr) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&source_key(peer)).copied().unwrap_or(0)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The slot of one connection, shared by its request handlers: released
/// when a head arrives, taken again when the answer goes out.
#[derive(Debug)]
pub struct ConnSlot {
    pending: Arc<Pending>,
    peer: IpAddr,
    slot: Mutex<Option<PendingSlot>>,
}

impl ConnSlot {
    /// A connection from `peer` holding `slot` (taken at the accept).
    pub fn new(pending: Arc<Pending>, peer: IpAddr, slot: PendingSlot) -> ConnSlot {
        ConnSlot {
            pending,
            peer,
            slot: Mutex::new(Some(slot)),
        }
    }

    /// A request head arrived: the slot goes back.
    pub fn head_received(&self) {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(slot);
    }

    /// An answer goes out and the connection will wait for another head:
    /// whether a slot could be taken for that (otherwise the connection is
    /// to be closed after the answer).
    pub fn wait_again(&self) -> bool {
        match self.pending.take(self.peer) {
            Some(s) => {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn pending_slots_are_capped_per_source_once_half_the_places_are_taken() {
        let places = Arc::new(Semaphore::new(4));
        let pending = Pending::new(2, Arc::clone(&places), 4);
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let roomy: Vec<_> = (0..3).map(|_| pending.take(a).unwrap()).collect();
        let _taken = places.try_acquire_many(3).unwrap();
        assert!(pending.take(a).is_none(), "crowded: the cap applies");
        drop(roomy);
        assert_eq!(pending.held(a), 0);
    }

    #[test]
    fn quota_idle_sockets_from_one_address_leave_places_for_others() {
        // The MQTT accept holds a place in an `open` table for each
        // connection's whole life: an address opening idle sockets takes
        // half of the places at most (the rest are refused once crowded),
        // and a client from another address still connects.
        let total = 16;
        let places = Arc::new(Semaphore::new(total));
        let open = Pending::new(4, Arc::clone(&places), total);
        let attacker = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1));
        let mut held = Vec::new();
        for _ in 0..total {
            let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                break;
            };
            match open.take(attacker) {
                Some(slot) => held.push((place, slot)),
                None => break,
            }
        }
        assert_eq!(held.len(), total / 2, "stopped at half of the places");
        let user = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert!(open.take(user).is_some(), "another address connects");
        assert_eq!(places.available_permits(), total / 2);
    }

    #[test]
    fn pending_slots_are_capped_per_source_and_given_back() {
        let places = Arc::new(Semaphore::new(0));
        let pending = Pending::new(2, places, 2);
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let s1 = pending.take(a).unwrap();
        let s2 = pending.take(a).unwrap();
        assert!(pending.take(a).is_none());
        let other = pending.take(b);
        assert!(other.is_some(), "another address is not affected");
        drop(s1);
        assert_eq!(pending.held(a), 1);
        let conn = ConnSlot::new(Arc::clone(&pending), a, pending.take(a).unwrap());
        conn.head_received();
        assert_eq!(pending.held(a), 1);
        assert!(conn.wait_again());
        assert!(!ConnSlot::new(Arc::clone(&pending), a, s2).wait_again());
        drop(conn);
        assert_eq!(pending.held(a), 0);
        assert!(pending.counts.lock().unwrap().get(&a).is_none());
    }
}
