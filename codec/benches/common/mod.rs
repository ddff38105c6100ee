//! The message mix both benchmarks decode, and the baselines they are measured
//! against.
//!
//! A baseline only splits messages, without validating them: it is the floor
//! any decoder pays to hand out views of its input, so "validated throughput /
//! baseline throughput" is the share of speed that validation keeps.

// Each bench binary includes this module and uses only part of it.
#![allow(dead_code)]

use bytes::Bytes;
use sessionwire::message::{
    service, FetchFields, FetchReply, Message, MessageType, ServiceError, ServiceRequest,
    ServiceResponse, Text, TopicMessage,
};
use sessionwire::polling::LENGTH_PREFIX;

/// Small service messages: pings, short responses and an error, with
/// conversation ids of one to three varint bytes.
pub fn service_messages() -> Vec<Message> {
    let mut out = Vec::new();
    for conversation in [1, 300, 70_000] {
        out.push(Message::ServiceRequest(ServiceRequest {
            service: service::USER_PING,
            conversation,
            payload: Bytes::new(),
        }));
        out.push(Message::ServiceRequest(ServiceRequest {
            service: service::SYSTEM_PING,
            conversation,
            payload: Bytes::new(),
        }));
        for len in [0, 8, 32] {
            out.push(Message::ServiceResponse(ServiceResponse {
                conversation,
                payload: Bytes::from(vec![0xa5; len]),
            }));
        }
        out.push(Message::ServiceError(ServiceError {
            conversation,
            message: Text::from_static("unknown service"),
            code: service::UNKNOWN_SERVICE_ERROR,
        }));
    }
    out
}

/// Topic values and deltas of 16 B to 1 KiB.
pub fn topic_messages() -> Vec<Message> {
    let mut out = Vec::new();
    for (topic, len) in [(1u32, 16usize), (2, 64), (3, 256), (4, 1024)] {
        let data = Bytes::from(vec![0x5a; len]);
        out.push(Message::TopicValue(TopicMessage {
            topic,
            compressed: false,
            data: data.clone(),
        }));
        out.push(Message::TopicDelta(TopicMessage {
            topic,
            compressed: false,
            data: data.slice(..len / 4),
        }));
    }
    out
}

/// Service messages and topic messages, interleaved.
pub fn mixed_messages() -> Vec<Message> {
    let service = service_messages();
    let topic = topic_messages();
    let mut out = Vec::new();
    for i in 0..service.len().max(topic.len()) {
        out.extend(service.get(i).cloned());
        out.extend(topic.get(i).cloned());
    }
    out
}

/// Each message as one WebSocket message, in a buffer that is already shared
/// (cloned once), so that no view taken while benchmarking promotes it.
pub fn websocket_wires(messages: &[Message]) -> Vec<Bytes> {
    messages
        .iter()
        .map(|m| {
            let wire = m.to_bytes();
            drop(wire.clone());
            wire
        })
        .collect()
}

/// `n` messages cycled from `messages`.
pub fn cycle(messages: &[Message], n: usize) -> Vec<Message> {
    messages.iter().cycle().take(n).cloned().collect()
}

/// The baseline WebSocket "decode": the type byte and the rest as a view.
#[inline]
pub fn split_websocket(wire: &Bytes) -> Option<(u8, Bytes)> {
    let &type_byte = wire.first()?;
    Some((type_byte, wire.slice(1..)))
}

/// The baseline batch split: each frame's type byte and body as a view, with
/// the bounds checks any splitter needs and no message parsing. Stops at the
/// first frame that does not fit.
#[inline]
pub fn split_batch(batch: &Bytes, mut each: impl FnMut(u8, Bytes)) {
    let mut pos = 0;
    while let Some(prefix) = batch
        .get(pos..)
        .and_then(|rest| rest.first_chunk::<LENGTH_PREFIX>())
    {
        let start = pos + LENGTH_PREFIX;
        let Some(end) = usize::try_from(u32::from_be_bytes(*prefix))
            .ok()
            .and_then(|body| start.checked_add(body)?.checked_add(1))
            .filter(|&end| end <= batch.len())
        else {
            return;
        };
        each(batch[start], batch.slice(start + 1..end));
        pos = end;
    }
}

/// Fetch replies with zero to two header fields and bodies of 0 to 64 bytes.
pub fn fetch_messages() -> Vec<Message> {
    let mut out = Vec::new();
    for (conversation, fields, len) in [
        (1, &[][..], 0usize),
        (300, &["topic/a"][..], 16),
        (70_000, &["topic/b", "json"][..], 64),
    ] {
        out.push(Message::FetchReply(FetchReply {
            conversation,
            fields: FetchFields::new(fields.iter().copied()).expect("no delimiters"),
            body: Bytes::from(vec![0x5a; len]),
        }));
    }
    out
}

/// One kind of WebSocket message, benchmarked on its own.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// SERVICE_REQUEST (0): the pings.
    ServiceRequest,
    /// SERVICE_RESPONSE (6).
    ServiceResponse,
    /// SERVICE_ERROR (7).
    ServiceError,
    /// TOPIC_VALUE (4).
    TopicValue,
    /// TOPIC_DELTA (5).
    TopicDelta,
    /// ABORT_NOTIFICATION (28).
    Abort,
    /// CLOSE_REQUEST (29).
    Close,
    /// FETCH_REPLY (34).
    FetchReply,
    /// [`service_messages`].
    Service,
    /// [`mixed_messages`].
    Mix,
}

/// The messages of one kind, taken from the mixes above.
pub fn messages_of(kind: Kind) -> Vec<Message> {
    let pick = |ty: MessageType, from: Vec<Message>| {
        from.into_iter()
            .filter(|m| m.message_type() == ty)
            .collect::<Vec<_>>()
    };
    match kind {
        Kind::ServiceRequest => pick(MessageType::ServiceRequest, service_messages()),
        Kind::ServiceResponse => pick(MessageType::ServiceResponse, service_messages()),
        Kind::ServiceError => pick(MessageType::ServiceError, service_messages()),
        Kind::TopicValue => pick(MessageType::TopicValue, topic_messages()),
        Kind::TopicDelta => pick(MessageType::TopicDelta, topic_messages()),
        Kind::Abort => vec![Message::Abort],
        Kind::Close => vec![Message::Close],
        Kind::FetchReply => fetch_messages(),
        Kind::Service => service_messages(),
        Kind::Mix => mixed_messages(),
    }
}

/// The baseline incremental split: base64 text arriving in chunks is decoded
/// quantum by quantum into one growing buffer, and every complete frame is
/// split off it as an owned `Bytes` (type byte and body). This is what any
/// decoder that must hand out owned messages from a stream pays. Stops at the
/// first fault.
#[derive(Debug, Default)]
pub struct SplitStream {
    pending: Vec<u8>,
    decoded: bytes::BytesMut,
}

impl SplitStream {
    /// Feeds one chunk of text; complete frames go to `each`.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(u8, Bytes)) -> Option<()> {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;

        let mut text = chunk;
        if !self.pending.is_empty() {
            let take = (4 - self.pending.len()).min(text.len());
            self.pending.extend_from_slice(&text[..take]);
            text = &text[take..];
            if self.pending.len() < 4 {
                return Some(());
            }
            let mut quantum = [0u8; 3];
            let n = STANDARD.decode_slice(&self.pending, &mut quantum).ok()?;
            self.decoded.extend_from_slice(&quantum[..n]);
            self.pending.clear();
        }
        let whole = text.len() / 4 * 4;
        let start = self.decoded.len();
        self.decoded.resize(start + whole / 4 * 3, 0);
        let n = STANDARD
            .decode_slice(&text[..whole], &mut self.decoded[start..])
            .ok()?;
        self.decoded.truncate(start + n);
        self.pending.extend_from_slice(&text[whole..]);
        while let Some(prefix) = self.decoded.first_chunk::<LENGTH_PREFIX>() {
            let size = usize::try_from(u32::from_be_bytes(*prefix))
                .ok()?
                .checked_add(LENGTH_PREFIX + 1)?;
            if self.decoded.len() < size {
                break;
            }
            let mut frame = self.decoded.split_to(size).freeze();
            let body = frame.split_off(LENGTH_PREFIX + 1);
            each(frame[LENGTH_PREFIX], body);
        }
        Some(())
    }
}
