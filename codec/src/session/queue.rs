//! The outbound queue of one session: messages waiting for the transport
//! (a writable WebSocket or an open HTTP poll), bounded by message count and
//! by bytes ([`Limits::max_queue_messages`], [`Limits::max_queue_bytes`]).

use std::collections::VecDeque;

use crate::Limits;

/// A push would have taken the queue over one of its limits. The queue has
/// been discarded; the session closes `MESSAGE_QUEUE_LIMIT_REACHED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimitReached {
    /// Messages the queue would have held.
    pub messages: usize,
    /// Bytes the queue would have held.
    pub bytes: usize,
}

/// A FIFO of outbound items with their encoded sizes.
#[derive(Clone, Debug)]
pub struct OutboundQueue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl<T> OutboundQueue<T> {
    /// An empty queue with the limits of `limits`.
    pub fn new(limits: &Limits) -> Self {
        OutboundQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_messages: limits.max_queue_messages(),
            max_bytes: limits.max_queue_bytes(),
        }
    }

    /// Appends `item` of `size` encoded bytes. The queue may hold exactly its
    /// limits; a push that would exceed either discards the whole queue and
    /// fails.
    pub fn push(&mut self, item: T, size: usize) -> Result<(), QueueLimitReached> {
        let messages = self.items.len().saturating_add(1);
        let bytes = self.bytes.saturating_add(size);
        if messages > self.max_messages || bytes > self.max_bytes {
            self.clear();
            return Err(QueueLimitReached { messages, bytes });
        }
        self.items.push_back((item, size));
        self.bytes = bytes;
        Ok(())
    }

    /// Takes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        let (item, size) = self.items.pop_front()?;
        self.bytes = self.bytes.saturating_sub(size);
        Some(item)
    }

    /// Discards every item.
    pub fn clear(&mut self) {
        self.items = VecDeque::new();
        self.bytes = 0;
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Encoded bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(messages: usize, bytes: usize) -> OutboundQueue<u32> {
        let l = Limits::builder()
            .max_queue_messages(messages)
            .max_queue_bytes(bytes)
            .build()
            .unwrap();
        OutboundQueue::new(&l)
    }

    #[test]
    fn section_1_queue_count_limit_discards_the_queue() {
        let mut q = queue(3, 1000);
        for i in 0..3 {
            q.push(i, 10).unwrap();
        }
        assert_eq!((q.len(), q.bytes()), (3, 30));
        assert_eq!(
            q.push(3, 10),
            Err(QueueLimitReached {
                messages: 4,
                bytes: 40
            })
        );
        assert_eq!((q.len(), q.bytes()), (0, 0));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn section_1_queue_byte_limit_discards_the_queue() {
        let mut q = queue(100, 25);
        q.push(1, 10).unwrap();
        q.push(2, 15).unwrap();
        assert!(q.push(3, 1).is_err());
        assert!(q.is_empty());
        let mut q = queue(100, 25);
        assert!(q.push(1, usize::MAX).is_err());
    }

    #[test]
    fn queue_is_fifo_and_accounts_bytes() {
        let mut q = queue(10, 100);
        q.push(1, 5).unwrap();
        q.push(2, 7).unwrap();
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.bytes(), 7);
        q.push(3, 90).unwrap();
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.bytes(), 0);
    }
}

/// The examples this module showed in its documentation, kept as tests.
#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn outbound_queue_refuses_past_its_message_limit_and_is_discarded() {
        use crate::Limits;
        let limits = Limits::builder().max_queue_messages(2).build().unwrap();
        let mut q = OutboundQueue::new(&limits);
        q.push("a", 1).unwrap();
        q.push("b", 1).unwrap();
        assert!(q.push("c", 1).is_err());
        assert!(q.is_empty(), "the queue is discarded");
    }
}
