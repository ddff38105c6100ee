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
    service, Message, ServiceError, ServiceRequest, ServiceResponse, Text, TopicMessage,
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
