//! Who may send what (PROTOCOL.md section 3): the one rule on direction.
//!
//! The message and batch decoders read both directions alike, since a client
//! decodes what a server sends with the same code. What the server accepts
//! from a client is narrower: ABORT_NOTIFICATION (type 28) only ever travels
//! from the server to the client, so a client that sends one has sent an
//! invalid message ([`ViolationKind::UnexpectedMessage`], closed
//! `INVALID_INBOUND_MESSAGE`).
//!
//! [`Direction::decode_message`] and [`Direction::decode_body`] are the
//! decoders with the rule applied; the session layer and the `check` targets
//! both use them, so the byte-level verdict is the server's.
//!
//! ```
//! use bytes::Bytes;
//! use sessionwire::{Direction, Limits, ViolationKind};
//!
//! let abort = Bytes::from_static(&[0x1c]);
//! let v = Direction::ClientToServer
//!     .decode_message(&abort, &Limits::default())
//!     .unwrap_err();
//! assert_eq!(v.kind(), ViolationKind::UnexpectedMessage(28));
//! assert_eq!(v.close_reason().name(), "INVALID_INBOUND_MESSAGE");
//! // The same bytes are what a client receives when the server aborts it.
//! assert!(Direction::ServerToClient
//!     .decode_message(&abort, &Limits::default())
//!     .is_ok());
//! ```

use bytes::Bytes;

use crate::limits::Limits;
use crate::message::{Message, MessageType};
use crate::polling::{self, Batch, LENGTH_PREFIX};
use crate::violation::{Violation, ViolationKind};

/// The direction a message travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by a client, read by the server: what the server validates.
    ClientToServer,
    /// Sent by the server, read by a client.
    ServerToClient,
}

impl Direction {
    /// Whether a message of type `ty` may travel in this direction.
    ///
    /// Only ABORT_NOTIFICATION is one-way on the wire; every other type may
    /// travel either way as far as the codec is concerned.
    pub const fn allows(self, ty: MessageType) -> bool {
        !matches!((self, ty), (Direction::ClientToServer, MessageType::Abort))
    }

    /// The violation for `message`, found at byte `offset` (its type byte),
    /// if it may not travel in this direction.
    pub fn check(self, message: &Message, offset: usize) -> Result<(), Violation> {
        let ty = message.message_type();
        if self.allows(ty) {
            Ok(())
        } else {
            Err(Violation::new(
                ViolationKind::UnexpectedMessage(ty.value()),
                offset,
            ))
        }
    }

    /// Applies the rule to the result of [`Message::decode`]: a message that
    /// may not travel this way becomes a violation at its type byte.
    pub fn check_message(self, decoded: Result<Message, Violation>) -> Result<Message, Violation> {
        let message = decoded?;
        self.check(&message, 0)?;
        Ok(message)
    }

    /// Applies the rule to a decoded HTTP polling batch: the messages stop
    /// before the first one that may not travel this way, which becomes the
    /// batch's violation at its type byte (any later fault came after it in
    /// the stream and is dropped).
    pub fn check_batch(self, mut batch: Batch) -> Batch {
        let Some(bad) = batch
            .messages
            .iter()
            .position(|m| !self.allows(m.message_type()))
        else {
            return batch;
        };
        // Decoding is canonical: every accepted frame took exactly its
        // length prefix and its encoded length.
        let offset = batch.messages[..bad].iter().fold(LENGTH_PREFIX, |at, m| {
            at.saturating_add(m.encoded_len())
                .saturating_add(LENGTH_PREFIX)
        });
        batch.violation = self.check(&batch.messages[bad], offset).err();
        batch.messages.truncate(bad);
        batch
    }

    /// Decodes one WebSocket message travelling in this direction
    /// ([`Message::decode`], then [`check_message`](Self::check_message)).
    pub fn decode_message(self, input: &Bytes, limits: &Limits) -> Result<Message, Violation> {
        self.check_message(Message::decode(input, limits))
    }

    /// Decodes an HTTP polling body travelling in this direction
    /// ([`polling::decode_body`], then [`check_batch`](Self::check_batch)).
    pub fn decode_body(self, text: &[u8], limits: &Limits) -> Batch {
        self.check_batch(polling::decode_body(text, limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseReason;
    use crate::polling::BodyDecoder;

    fn inbound(wire: &[u8]) -> Result<Message, Violation> {
        Direction::ClientToServer.decode_message(&Bytes::copy_from_slice(wire), &Limits::default())
    }

    /// The inbound batch, decoded whole and fed byte by byte.
    fn inbound_body(text: &[u8]) -> Batch {
        let limits = Limits::default();
        let whole = Direction::ClientToServer.decode_body(text, &limits);
        let mut dec = BodyDecoder::new(limits);
        let mut batch = Batch::default();
        let fed = text
            .chunks(1)
            .try_for_each(|c| dec.feed(c, &mut batch.messages));
        batch.violation = fed.and_then(|()| dec.finish()).err();
        assert_eq!(Direction::ClientToServer.check_batch(batch), whole);
        whole
    }

    #[test]
    fn section_3_client_sent_abort_is_an_invalid_inbound_message() {
        let v = inbound(&[0x1c]).unwrap_err();
        assert_eq!(v, Violation::new(ViolationKind::UnexpectedMessage(28), 0));
        assert_eq!(v.close_reason(), CloseReason::InvalidInboundMessage);
        // Every prefix of it is the empty message; nothing else is refused.
        assert_eq!(
            inbound(&[]).unwrap_err().kind(),
            ViolationKind::EmptyMessage
        );
        assert_eq!(inbound(&[0x1d]), Ok(Message::Close));
        // A malformed abort is malformed first.
        assert_eq!(
            inbound(&[0x1c, 0]).unwrap_err().kind(),
            ViolationKind::TrailingBytes
        );
    }

    #[test]
    fn section_3_abort_travels_from_server_to_client_only() {
        for ty in MessageType::ALL {
            assert!(Direction::ServerToClient.allows(ty), "{ty:?}");
            assert_eq!(
                Direction::ClientToServer.allows(ty),
                ty != MessageType::Abort,
                "{ty:?}"
            );
        }
        let abort = Bytes::from_static(&[0x1c]);
        assert_eq!(
            Direction::ServerToClient.decode_message(&abort, &Limits::default()),
            Ok(Message::Abort)
        );
    }

    #[test]
    fn section_6_client_sent_abort_in_a_batch_closes_at_its_type_byte() {
        // USER_PING (7 bytes), then ABORT framed at 7: type byte at 11.
        let b = inbound_body(b"AAAAAgA4AQAAAAAc");
        assert_eq!(b.messages.len(), 1);
        assert_eq!(
            b.violation,
            Some(Violation::new(ViolationKind::UnexpectedMessage(28), 11))
        );
        // Alone, it is at 4; a fault after it does not matter.
        let b = inbound_body(b"AAAAABwAAAAAPw==");
        assert_eq!(
            (b.messages.len(), b.violation),
            (
                0,
                Some(Violation::new(ViolationKind::UnexpectedMessage(28), 4))
            )
        );
        // A fault before it is the first.
        let b = inbound_body(b"AAAAAD8AAAAAHA==");
        assert_eq!(
            b.violation,
            Some(Violation::new(ViolationKind::UnknownType(0x3f), 4))
        );
        // A poll response may carry it.
        let poll = Direction::ServerToClient.decode_body(b"AAAAAgA4AQAAAAAc", &Limits::default());
        assert_eq!((poll.messages.len(), poll.violation), (2, None));
    }
}
