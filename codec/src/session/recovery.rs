//! Recovery after a reconnection (section 6): a bounded buffer of the
//! messages the server sent, and the decision between 105, 106 and 118.
//!
//! Each side numbers the messages it sends from 1 (the client counts
//! CLOSE_REQUEST too; ABORT is not counted). On reconnection the client says
//! `cs`, the oldest of its own messages it can still resend, and `ss`, the last
//! server message it received (0: none).

use std::collections::VecDeque;

use crate::{Violation, ViolationKind};

/// What the server answers a reconnection with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// 105: resume. The client resends from `next_client`; the server resends
    /// its messages numbered `resend_from` and later.
    Resume {
        /// The next client message number the server expects.
        next_client: u32,
        /// The first server message number to resend.
        resend_from: u32,
    },
    /// 106: resume with message loss (only when the server allows loss).
    ResumeWithLoss,
    /// 118 and `LOST_MESSAGES`: the gap cannot be covered, or the client's
    /// numbers are impossible.
    Fail(Violation),
}

/// The last messages sent, numbered, kept to resend after a reconnection.
#[derive(Clone, Debug)]
pub struct RecoveryBuffer<T> {
    items: VecDeque<(T, usize)>,
    capacity: usize,
    /// The sum of the weights of the kept messages.
    bytes: usize,
    sent: u32,
}

/// The largest message number: the handshake carries numbers as `i32`.
pub const MAX_MESSAGE_NUMBER: u32 = i32::MAX as u32;

impl<T> RecoveryBuffer<T> {
    /// An empty buffer keeping at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        RecoveryBuffer {
            items: VecDeque::new(),
            capacity,
            bytes: 0,
            sent: 0,
        }
    }

    /// Numbers and keeps a message just sent; returns its number. Fails once
    /// the count would pass [`MAX_MESSAGE_NUMBER`] (the session then closes
    /// `INTERNAL_ERROR`).
    #[cfg(test)]
    pub fn record(&mut self, item: T) -> Option<u32> {
        self.record_weighed(item, 0)
    }

    /// [`record`](Self::record) for a message that weighs `weight` bytes,
    /// counted in [`bytes`](Self::bytes) while it is kept.
    pub fn record_weighed(&mut self, item: T, weight: usize) -> Option<u32> {
        let n = self
            .sent
            .checked_add(1)
            .filter(|n| *n <= MAX_MESSAGE_NUMBER)?;
        self.sent = n;
        if self.capacity > 0 {
            if self.items.len() >= self.capacity {
                if let Some((_, w)) = self.items.pop_front() {
                    self.bytes = self.bytes.saturating_sub(w);
                }
            }
            // At most `capacity` messages of a bounded size: saturation is
            // never reached, and would only overstate what is kept.
            self.bytes = self.bytes.saturating_add(weight);
            self.items.push_back((item, weight));
        }
        Some(n)
    }

    /// The number of the last message sent (0: none).
    pub fn last_sent(&self) -> u32 {
        self.sent
    }

    /// The number of the oldest message kept (`last_sent + 1` when none is).
    pub fn oldest_kept(&self) -> u32 {
        // items.len() <= sent, so this cannot underflow.
        let kept = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        self.sent.saturating_sub(kept).saturating_add(1)
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Forgets every kept message (after a 106 the client starts afresh).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// The sum of the weights (bytes) of the kept messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The kept messages numbered `first` and later, oldest first.
    pub fn resend_from(&self, first: u32) -> impl Iterator<Item = &T> {
        let skip = first.saturating_sub(self.oldest_kept()) as usize;
        self.items.iter().skip(skip).map(|(item, _)| item)
    }

    /// Decides a reconnection. `server_last` is the client's `ss`,
    /// `client_oldest` its `cs`, `received` the number of client messages the
    /// server received, `allow_loss` whether the server answers 106 rather
    /// than 118 when a gap cannot be covered.
    pub fn decide(
        &self,
        server_last: u32,
        client_oldest: u32,
        received: u32,
        allow_loss: bool,
    ) -> RecoveryDecision {
        if server_last > self.sent {
            // The client claims messages never sent: nothing can fix that.
            return RecoveryDecision::Fail(Violation::new(
                ViolationKind::SequenceBeyondWindow {
                    sequence: u64::from(server_last),
                    expected: u64::from(self.sent),
                },
                0,
            ));
        }
        let Some(next_client) = received.checked_add(1).filter(|n| *n <= MAX_MESSAGE_NUMBER) else {
            return RecoveryDecision::Fail(Violation::new(ViolationKind::SequenceMalformed, 0));
        };
        let loss = if client_oldest > next_client {
            // The client can no longer resend messages the server never got.
            Some(Violation::new(
                ViolationKind::SequenceGap {
                    sequence: u64::from(client_oldest),
                    expected: u64::from(next_client),
                },
                0,
            ))
        } else if server_last < self.sent && server_last + 1 < self.oldest_kept() {
            // The server no longer holds messages the client never got.
            Some(Violation::new(
                ViolationKind::SequenceGap {
                    sequence: u64::from(self.oldest_kept()),
                    expected: u64::from(server_last) + 1,
                },
                0,
            ))
        } else {
            None
        };
        match loss {
            None => RecoveryDecision::Resume {
                next_client,
                resend_from: server_last + 1,
            },
            Some(_) if allow_loss => RecoveryDecision::ResumeWithLoss,
            Some(v) => RecoveryDecision::Fail(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseReason;

    fn sent(n: u32, capacity: usize) -> RecoveryBuffer<u32> {
        let mut b = RecoveryBuffer::new(capacity);
        for i in 1..=n {
            assert_eq!(b.record(i), Some(i));
        }
        b
    }

    #[test]
    fn section_6_reconnect_resends_only_what_the_client_has_not_seen() {
        let b = sent(10, 4);
        assert_eq!(b.oldest_kept(), 7);
        assert_eq!(
            b.decide(8, 5, 4, false),
            RecoveryDecision::Resume {
                next_client: 5,
                resend_from: 9
            }
        );
        assert_eq!(b.resend_from(9).copied().collect::<Vec<_>>(), [9, 10]);
        assert_eq!(b.resend_from(11).count(), 0);
        // Everything seen: nothing to resend, still 105.
        assert_eq!(
            b.decide(10, 1, 0, false),
            RecoveryDecision::Resume {
                next_client: 1,
                resend_from: 11
            }
        );
        // Just covered: the client saw 6, the buffer starts at 7.
        assert!(matches!(
            b.decide(6, 1, 0, false),
            RecoveryDecision::Resume { .. }
        ));
    }

    #[test]
    fn section_6_server_gap_answers_118_lost_messages_or_106() {
        let b = sent(10, 4);
        match b.decide(5, 1, 0, false) {
            RecoveryDecision::Fail(v) => assert_eq!(v.close_reason(), CloseReason::LostMessages),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.decide(5, 1, 0, true), RecoveryDecision::ResumeWithLoss);
        let none = sent(3, 0);
        assert!(matches!(
            none.decide(2, 1, 0, false),
            RecoveryDecision::Fail(_)
        ));
        assert!(matches!(
            none.decide(3, 1, 0, false),
            RecoveryDecision::Resume { .. }
        ));
    }

    #[test]
    fn section_6_client_gap_answers_118_lost_messages() {
        let b = sent(2, 4);
        // The server received 3 client messages; the client can resend from 5.
        match b.decide(2, 5, 3, false) {
            RecoveryDecision::Fail(v) => assert_eq!(
                v.kind(),
                ViolationKind::SequenceGap {
                    sequence: 5,
                    expected: 4
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.decide(2, 4, 3, false),
            RecoveryDecision::Resume { next_client: 4, .. }
        ));
    }

    #[test]
    fn section_7_impossible_server_number_fails() {
        let b = sent(2, 4);
        assert!(matches!(
            b.decide(3, 1, 0, true),
            RecoveryDecision::Fail(v) if v.close_reason() == CloseReason::LostMessages
        ));
    }

    #[test]
    fn kept_bytes_follow_what_is_kept() {
        let mut b = RecoveryBuffer::new(2);
        b.record_weighed('a', 10).unwrap();
        b.record_weighed('b', 20).unwrap();
        assert_eq!(b.bytes(), 30);
        // The oldest is dropped to make room: its weight goes with it.
        b.record_weighed('c', 40).unwrap();
        assert_eq!(b.bytes(), 60);
        b.clear();
        assert_eq!(b.bytes(), 0);
        // Without a capacity nothing is kept, so nothing is counted.
        let mut none = RecoveryBuffer::new(0);
        none.record_weighed('a', 10).unwrap();
        assert_eq!(none.bytes(), 0);
    }

    #[test]
    fn recovery_buffer_keeps_at_most_its_capacity() {
        let b = sent(1000, 256);
        assert_eq!(b.len(), 256);
        assert_eq!(b.oldest_kept(), 745);
        let mut full = RecoveryBuffer::new(1);
        full.sent = MAX_MESSAGE_NUMBER;
        assert_eq!(full.record(0), None);
    }
}

/// The examples this module showed in its documentation, kept as tests.
#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn section_6_recovery_resumes_after_what_the_client_saw() {
        let mut b = RecoveryBuffer::new(2);
        for m in ["a", "b", "c"] {
            b.record(m).unwrap();
        }
        // The client saw message 1; the server kept 2 and 3.
        assert_eq!(
            b.decide(1, 1, 0, false),
            RecoveryDecision::Resume {
                next_client: 1,
                resend_from: 2
            }
        );
        assert_eq!(b.resend_from(2).collect::<Vec<_>>(), [&"b", &"c"]);
    }
}
