//! Reordering HTTP polling sends by their sequence number `s` (section 6).
//!
//! Sends travel on several TCP connections and can arrive out of order. A
//! send ahead of the next expected number is held, at most
//! [`Limits::reorder_window`] numbers ahead and at most
//! [`Limits::reorder_wait`] long; held sends are released in order once the
//! gap fills. A duplicate, a malformed number, a number beyond the window, or
//! a gap that outlives the wait is a violation that closes `LOST_MESSAGES`.
//!
//! Memory is bounded whatever the client sends: at most `reorder_window + 1`
//! items are held (the window plus one in-order item not yet popped), each as large as the caller allows one send to be.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Limits, Violation, ViolationKind};

/// Parses a sequence number header: a decimal number with no sign, no
/// spaces and no leading zero (`0` itself excepted).
pub fn parse_sequence(text: &str) -> Result<u64, Violation> {
    let malformed = Violation::new(ViolationKind::SequenceMalformed, 0);
    let bytes = text.as_bytes();
    if bytes.is_empty()
        || bytes.len() > 20
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return Err(malformed);
    }
    text.parse().map_err(|_| malformed)
}

#[derive(Clone, Debug)]
struct Held<T> {
    item: T,
    since: Instant,
    weight: usize,
}

/// Holds out-of-order items until their turn.
#[derive(Clone, Debug)]
pub struct ReorderBuffer<T> {
    next: u64,
    window: u32,
    wait: Duration,
    held: BTreeMap<u64, Held<T>>,
    /// The sum of the weights of the held items.
    bytes: usize,
}

impl<T> ReorderBuffer<T> {
    /// An empty buffer expecting sequence number 0.
    pub fn new(limits: &Limits) -> Self {
        ReorderBuffer {
            next: 0,
            window: limits.reorder_window(),
            wait: limits.reorder_wait(),
            held: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// How many items are held (out of order, or in order and not yet popped).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The sum of the weights (bytes) of the items held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next sequence number expected: the one [`pop_ready`](Self::pop_ready)
    /// returns next.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Accepts item number `sequence`, arrived at `now`. Take what has become
    /// deliverable with [`pop_ready`](Self::pop_ready).
    #[cfg(test)]
    pub fn insert(&mut self, now: Instant, sequence: u64, item: T) -> Result<(), Violation> {
        self.insert_weighed(now, sequence, item, 0)
    }

    /// [`insert`](Self::insert) for an item that weighs `weight` bytes,
    /// counted in [`bytes`](Self::bytes) until it is popped or cleared.
    pub fn insert_weighed(
        &mut self,
        now: Instant,
        sequence: u64,
        item: T,
        weight: usize,
    ) -> Result<(), Violation> {
        if sequence < self.next || self.held.contains_key(&sequence) {
            return Err(Violation::new(
                ViolationKind::SequenceDuplicate(sequence),
                0,
            ));
        }
        let ahead = sequence - self.next;
        if ahead > u64::from(self.window) {
            return Err(Violation::new(
                ViolationKind::SequenceBeyondWindow {
                    sequence,
                    expected: self.next,
                },
                0,
            ));
        }
        // The in-order item goes through the same map, so that several inserts
        // before a pop can never lose one.
        // At most window + 1 items of a bounded size: saturation is never
        // reached, and would only overstate what is held.
        self.bytes = self.bytes.saturating_add(weight);
        self.held.insert(
            sequence,
            Held {
                item,
                since: now,
                weight,
            },
        );
        Ok(())
    }

    fn advance(&mut self) -> Result<(), Violation> {
        self.next = self.next.checked_add(1).ok_or(Violation::new(
            ViolationKind::SequenceBeyondWindow {
                sequence: u64::MAX,
                expected: u64::MAX,
            },
            0,
        ))?;
        Ok(())
    }

    /// The next item in sequence order, if it has arrived.
    pub fn pop_ready(&mut self) -> Option<T> {
        let entry = self.held.first_entry()?;
        if *entry.key() != self.next {
            return None;
        }
        let held = entry.remove();
        self.bytes = self.bytes.saturating_sub(held.weight);
        self.advance().ok()?;
        Some(held.item)
    }

    /// When the oldest held item's wait runs out; `None` when nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|h| h.since)
            .min()
            .and_then(|since| since.checked_add(self.wait))
    }

    /// Fails when a held item has waited [`Limits::reorder_wait`] or longer
    /// for its gap to fill at `now`.
    pub fn check_timeout(&self, now: Instant) -> Result<(), Violation> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                let first = self.held.keys().next().copied().unwrap_or(self.next);
                // Only an item ahead of `next` can wait: the caller pops an
                // in-order one before time moves on.
                Err(Violation::new(
                    ViolationKind::SequenceGap {
                        sequence: first,
                        expected: self.next,
                    },
                    0,
                ))
            }
            _ => Ok(()),
        }
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn buffer(window: u32, wait_ms: u64) -> ReorderBuffer<u64> {
        let l = Limits::builder()
            .reorder_window(window)
            .reorder_wait(Duration::from_millis(wait_ms))
            .build()
            .unwrap();
        ReorderBuffer::new(&l)
    }

    fn drain(r: &mut ReorderBuffer<u64>, out: &mut Vec<u64>) {
        while let Some(x) = r.pop_ready() {
            out.push(x);
        }
    }

    #[test]
    fn section_6_in_order_sends_are_delivered_at_once() {
        let t = Instant::now();
        let mut r = buffer(0, 10);
        let mut out = vec![];
        for s in 0..5 {
            r.insert(t, s, s).unwrap();
            drain(&mut r, &mut out);
        }
        assert_eq!(out, [0, 1, 2, 3, 4]);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn section_6_duplicate_send_closes_lost_messages() {
        let t = Instant::now();
        let mut r = buffer(4, 10);
        r.insert(t, 0, 0).unwrap();
        r.pop_ready();
        let v = r.insert(t, 0, 0).unwrap_err();
        assert_eq!(v.kind(), ViolationKind::SequenceDuplicate(0));
        assert_eq!(v.close_reason(), crate::CloseReason::LostMessages);
        r.insert(t, 2, 2).unwrap();
        assert_eq!(
            r.insert(t, 2, 2).unwrap_err().kind(),
            ViolationKind::SequenceDuplicate(2)
        );
    }

    #[test]
    fn section_6_send_beyond_the_window_closes_lost_messages() {
        let t = Instant::now();
        let mut r = buffer(4, 10);
        r.insert(t, 4, 4).unwrap();
        assert_eq!(
            r.insert(t, 5, 5).unwrap_err().kind(),
            ViolationKind::SequenceBeyondWindow {
                sequence: 5,
                expected: 0
            }
        );
        assert!(r.insert(t, u64::MAX, 0).is_err());
    }

    #[test]
    fn section_6_gap_that_outlives_the_wait_closes_lost_messages() {
        let t = Instant::now();
        let mut r = buffer(4, 100);
        r.insert(t, 2, 2).unwrap();
        assert_eq!(r.poll_timeout(), Some(t + Duration::from_millis(100)));
        assert!(r.check_timeout(t + Duration::from_millis(99)).is_ok());
        let v = r.check_timeout(t + Duration::from_millis(100)).unwrap_err();
        assert_eq!(
            v.kind(),
            ViolationKind::SequenceGap {
                sequence: 2,
                expected: 0
            }
        );
    }

    #[test]
    fn section_6_malformed_sequence_number_closes_lost_messages() {
        for bad in [
            "",
            "x",
            "-1",
            "+1",
            " 1",
            "1 ",
            "01",
            "1.0",
            "18446744073709551616",
        ] {
            let v = parse_sequence(bad).unwrap_err();
            assert_eq!(v.kind(), ViolationKind::SequenceMalformed, "{bad:?}");
            assert_eq!(v.close_reason(), crate::CloseReason::LostMessages);
        }
        assert_eq!(parse_sequence("0"), Ok(0));
        assert_eq!(parse_sequence("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn held_bytes_are_counted_on_insert_and_released_on_pop_and_clear() {
        let t = Instant::now();
        let mut r = buffer(4, 10);
        r.insert_weighed(t, 2, 2, 300).unwrap();
        r.insert_weighed(t, 1, 1, 20).unwrap();
        assert_eq!((r.bytes(), r.next()), (320, 0));
        r.insert_weighed(t, 0, 0, 1).unwrap();
        assert_eq!(r.pop_ready(), Some(0));
        assert_eq!((r.bytes(), r.next()), (320, 1));
        assert_eq!(r.pop_ready(), Some(1));
        assert_eq!(r.bytes(), 300);
        // A refused insert counts nothing.
        assert!(r.insert_weighed(t, 2, 2, 7).is_err());
        assert_eq!(r.bytes(), 300);
        r.clear();
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn section_6_held_items_never_exceed_the_window() {
        let t = Instant::now();
        let mut r = buffer(3, 10);
        for s in 1..=3 {
            r.insert(t, s, s).unwrap();
        }
        assert_eq!(r.held(), 3);
        assert!(r.insert(t, 4, 4).is_err());
        assert_eq!(r.held(), 3);
    }

    proptest! {
        /// Any permutation of N in-window sends, all arriving within the wait,
        /// is delivered complete and in order.
        #[test]
        fn section_6_any_permutation_within_window_and_wait_is_delivered_in_order(
            (n, order) in (1usize..=17).prop_flat_map(|n| (Just(n), Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle())),
            gaps in proptest::collection::vec(0u64..20, 17),
        ) {
            let window = (n - 1) as u32;
            let wait_ms = 1000u64;
            let mut r = buffer(window, wait_ms);
            let start = Instant::now();
            let mut at = 0u64;
            let mut out = vec![];
            for (i, s) in order.iter().enumerate() {
                at += gaps[i];
                let now = start + Duration::from_millis(at);
                prop_assert!(r.check_timeout(now).is_ok());
                r.insert(now, *s, *s).unwrap();
                drain(&mut r, &mut out);
            }
            prop_assert_eq!(out, (0..n as u64).collect::<Vec<_>>());
            prop_assert_eq!(r.held(), 0);
            prop_assert_eq!(r.poll_timeout(), None);
        }

        /// A duplicate anywhere in the stream is rejected; a gap that is never
        /// filled closes once the wait runs out.
        #[test]
        fn section_6_any_duplicate_or_unfilled_gap_closes_lost_messages(
            (n, order) in (2usize..=12).prop_flat_map(|n| (Just(n), Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle())),
            pick in any::<prop::sample::Index>(),
            dup in any::<bool>(),
        ) {
            let mut r = buffer(n as u32, 500);
            let start = Instant::now();
            let victim = order[pick.index(n)];
            let mut out = vec![];
            let mut failed = None;
            for s in &order {
                if !dup && *s == victim {
                    continue; // never sent: a gap
                }
                if let Err(v) = r.insert(start, *s, *s) {
                    failed = Some(v);
                    break;
                }
                drain(&mut r, &mut out);
            }
            prop_assert!(failed.is_none());
            if dup {
                let v = r.insert(start, victim, victim).unwrap_err();
                prop_assert_eq!(v.close_reason(), crate::CloseReason::LostMessages);
            } else if victim == n as u64 - 1 {
                // The last one missing is no gap: nothing is held.
                prop_assert_eq!(r.held(), 0);
            } else {
                let deadline = r.poll_timeout().unwrap();
                prop_assert!(r.check_timeout(deadline - Duration::from_millis(1)).is_ok());
                let v = r.check_timeout(deadline).unwrap_err();
                prop_assert_eq!(v.close_reason(), crate::CloseReason::LostMessages);
            }
        }
    }
}

/// The examples this module showed in its documentation, kept as tests.
#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn section_6_s_is_a_decimal_without_leading_zeros() {
        assert_eq!(parse_sequence("17"), Ok(17));
        assert!(parse_sequence("017").is_err());
        assert!(parse_sequence("-1").is_err());
    }

    #[test]
    fn section_6_sends_are_released_in_order_and_duplicates_refused() {
        use crate::Limits;
        use std::time::Instant;
        let now = Instant::now();
        let mut r = ReorderBuffer::new(&Limits::default());
        r.insert(now, 1, "second").unwrap();
        assert_eq!(r.pop_ready(), None);
        r.insert(now, 0, "first").unwrap();
        assert_eq!(r.pop_ready(), Some("first"));
        assert_eq!(r.pop_ready(), Some("second"));
        assert!(r.insert(now, 1, "again").is_err());
    }
}
