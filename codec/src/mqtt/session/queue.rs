//! The bounded queue of messages a session holds for its client while its
//! in-flight window is full or it is offline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::budget::Charge;
use super::event::{Delivery, Message};

/// A message as the sessions hold it: one copy of its topic and payload
/// shared by every queue and flight it sits in, charged once to the
/// server-wide budget and given back when the last holder lets go.
#[derive(Debug)]
pub(super) struct Shared {
    message: Message,
    _charge: Option<Charge>,
}

impl Shared {
    /// `message` (already a copy of its own), holding `charge`.
    pub(super) fn new(message: Message, charge: Option<Charge>) -> Shared {
        Shared {
            message,
            _charge: charge,
        }
    }

    /// What a copy of `message` costs, as allocated: the shared value,
    /// its reference counts, topic, payload and properties, and the
    /// allocator's header of each of the four allocations.
    pub(super) fn cost(message: &Message) -> usize {
        std::mem::size_of::<Shared>()
            .saturating_add(16 + 4 * ALLOCATION_HEADER)
            .saturating_add(message.topic.len())
            .saturating_add(message.payload.len())
            .saturating_add(message.properties.as_bytes().len())
    }
}

impl std::ops::Deref for Shared {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

/// What an allocator keeps beside each allocation, roughly.
const ALLOCATION_HEADER: usize = 16;

/// One message waiting (or in flight) for one session, holding its own
/// charge (the entry; the message's is [`Shared`]'s).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) message: Arc<Shared>,
    pub(super) delivery: Delivery,
    /// Held for its entry's cost; given back when the entry goes.
    pub(super) _charge: Option<Charge>,
}

impl Clone for Queued {
    /// A passing copy (a resend being written): not charged.
    fn clone(&self) -> Queued {
        Queued {
            message: Arc::clone(&self.message),
            delivery: self.delivery.clone(),
            _charge: None,
        }
    }
}

impl Queued {
    /// What an entry delivered as `delivery` costs: the entry (in a queue
    /// or an in-flight map, with their own room around it) and its
    /// subscription identifiers.
    pub(super) fn cost(delivery: &Delivery) -> usize {
        std::mem::size_of::<Queued>()
            .saturating_mul(2)
            .saturating_add(delivery.subscription_ids.capacity().saturating_mul(4))
            .saturating_add(if delivery.subscription_ids.capacity() > 0 {
                ALLOCATION_HEADER
            } else {
                0
            })
    }

    /// What it counts against the byte bound: topic, payload, properties.
    fn size(&self) -> usize {
        self.message
            .topic
            .len()
            .saturating_add(self.message.payload.len())
            .saturating_add(self.message.properties.as_bytes().len())
    }
}

/// The queue is full: the message was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Full;

/// A FIFO bounded in messages and bytes.
#[derive(Debug, Default)]
pub(super) struct Queue {
    items: VecDeque<Queued>,
    bytes: usize,
}

impl Queue {
    /// Appends `item` unless that would pass `max_messages` or `max_bytes`.
    pub(super) fn push(
        &mut self,
        item: Queued,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Full> {
        let bytes = self.bytes.checked_add(item.size()).ok_or(Full)?;
        if self.items.len() >= max_messages || bytes > max_bytes {
            return Err(Full);
        }
        self.bytes = bytes;
        self.items.push_back(item);
        Ok(())
    }

    /// The oldest message not expired at `now`; expired ones are dropped.
    pub(super) fn pop(&mut self, now: Instant) -> Option<Queued> {
        while let Some(item) = self.items.pop_front() {
            self.bytes = self.bytes.saturating_sub(item.size());
            if item.message.expires_at.is_none_or(|t| t > now) {
                return Some(item);
            }
        }
        None
    }

    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes waiting, as the byte bound counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{Properties, QoS, Str};
    use bytes::Bytes;
    use std::time::Duration;

    fn item(payload: &'static [u8], expires_at: Option<Instant>) -> Queued {
        Queued {
            _charge: None,
            message: Arc::new(Shared::new(
                Message {
                    topic: Str::from_static("t"),
                    payload: Bytes::from_static(payload),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::new(),
                    expires_at,
                },
                None,
            )),
            delivery: Delivery {
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
            },
        }
    }

    #[test]
    fn queue_is_bounded_in_messages_and_bytes() {
        let mut q = Queue::default();
        assert_eq!(q.push(item(b"abc", None), 2, 8), Ok(()));
        // 1 + 3 bytes each: a second fits 8, a third passes 2 messages.
        assert_eq!(q.push(item(b"abc", None), 2, 8), Ok(()));
        assert_eq!(q.push(item(b"", None), 2, 100), Err(Full));
        let mut q = Queue::default();
        assert_eq!(q.push(item(b"abcdefgh", None), 10, 8), Err(Full));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn mqtt_3_3_2_5_expired_messages_are_dropped_not_sent() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.push(item(b"old", Some(t0 + Duration::from_secs(1))), 10, 100)
            .unwrap();
        q.push(item(b"new", None), 10, 100).unwrap();
        let got = q.pop(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(&got.message.payload[..], b"new");
        assert_eq!((q.len(), q.bytes), (0, 0));
    }
}
