//! The server-wide byte budget over the message data a broker holds:
//! queued and in-flight messages in every session, and whatever else the
//! server charges to it (its retained messages). Each session's queue has
//! bounds of its own; this one bounds their sum, so that many sessions
//! (offline ones included) cannot take the server past it.
//!
//! A [`Charge`] is what one held thing costs; it gives its bytes back when
//! dropped, so that what the budget counts is what is still held, however
//! the thing ends (sent and acknowledged, expired, its session ended).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A byte budget shared by the registry and the server (a cheap handle:
/// clones count against the same total).
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    used: AtomicUsize,
    limit: usize,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
#[must_use = "a charge is given back as soon as it is dropped"]
pub struct Charge {
    inner: Arc<Inner>,
    bytes: usize,
}

impl Budget {
    /// A budget of `limit` bytes, nothing used.
    ///
    /// ```
    /// use sessionwire::mqtt::session::Budget;
    ///
    /// let budget = Budget::new(100);
    /// let held = budget.try_charge(60).expect("fits");
    /// assert!(budget.try_charge(60).is_none()); // 120 > 100
    /// drop(held);
    /// assert_eq!(budget.used(), 0);
    /// ```
    pub fn new(limit: usize) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                used: AtomicUsize::new(0),
                limit,
            }),
        }
    }

    /// Bytes charged and not given back.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Whether nothing more can be charged.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.inner.limit
    }

    /// Takes `bytes` if they fit under the bound.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let mut charge = self.empty_charge();
        charge.try_resize(bytes).then_some(charge)
    }
}

impl Budget {
    /// A charge of nothing, to grow later with [`Charge::try_resize`] (one
    /// charge for a whole store whose size moves).
    pub fn empty_charge(&self) -> Charge {
        Charge {
            inner: Arc::clone(&self.inner),
            bytes: 0,
        }
    }
}

impl Charge {
    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes it hold `bytes`: less always succeeds; more only if the
    /// difference fits under the bound. Whether it holds `bytes` now.
    pub fn try_resize(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            self.inner
                .used
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            self.bytes = bytes;
            return true;
        }
        let more = bytes - self.bytes;
        let limit = self.inner.limit;
        let grown = self
            .inner
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(more).filter(|&n| n <= limit)
            });
        if grown.is_ok() {
            self.bytes = bytes;
        }
        grown.is_ok()
    }

    /// Makes it hold `bytes` whatever the bound (to count what is already
    /// allocated; the budget may then be over its bound until some is
    /// given back).
    pub fn resize(&mut self, bytes: usize) {
        if bytes <= self.bytes {
            self.inner
                .used
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        } else {
            self.inner
                .used
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_past_the_bound_is_refused_and_drops_give_bytes_back() {
        let b = Budget::new(10);
        let a = b.try_charge(4).unwrap();
        let c = b.try_charge(6).unwrap();
        assert!(b.is_spent());
        assert!(b.try_charge(1).is_none());
        assert!(b.try_charge(usize::MAX).is_none());
        drop(a);
        assert_eq!(b.used(), 6);
        let clone = b.clone();
        let d = clone.try_charge(4).unwrap();
        assert_eq!((b.used(), d.bytes()), (10, 4));
        drop((c, d));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_store_charge_grows_within_the_bound_and_shrinks_freely() {
        let b = Budget::new(10);
        let mut store = b.empty_charge();
        assert!(store.try_resize(8));
        assert!(!store.try_resize(11));
        assert_eq!((store.bytes(), b.used()), (8, 8));
        assert!(store.try_resize(3));
        assert_eq!(b.used(), 3);
        store.resize(12);
        assert!(b.is_spent());
        drop(store);
        assert_eq!(b.used(), 0);
    }
}
