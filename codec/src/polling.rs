//! HTTP polling bodies (docs/protocol.md section 6).
//!
//! A send body (client to server) and a poll response (server to client) are
//! the standard padded base64 of a *batch*: messages framed as
//! `[big-endian u32 body length, not counting the type byte][type byte][body]`.
//!
//! Two decoders give the same result for the same text:
//! - [`decode_body`] decodes a whole POST body into one buffer; every message is
//!   a view of it.
//! - [`BodyDecoder`] takes the text in chunks of any size, and checks each
//!   declared length against [`Limits::max_message_size`] before it buffers a
//!   byte of that message.
//!
//! Decoding stops at the first violation; the messages before it are returned.
//! Faults are reported in stream order: a fault in the frames decoded so far,
//! then a batch over [`Limits::max_batch_size`], then bad base64 (whose offset
//! counts base64 characters; every other offset counts decoded bytes).
//!
//! ```
//! use sessionwire::{polling, Limits, Message};
//!
//! // A USER_PING as the real client sends it over HTTP (`m=2`, `s=0`).
//! let batch = polling::decode_body(b"AAAAAgA4AQ==", &Limits::default());
//! assert_eq!(batch.violation, None);
//! assert_eq!(batch.messages.len(), 1);
//! assert_eq!(polling::encode_body(&batch.messages).unwrap(), "AAAAAgA4AQ==");
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeError, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseReason;
use crate::limits::Limits;
use crate::message::Message;
use crate::violation::{Field, Violation, ViolationKind};

/// Bytes of the length prefix in front of each message of a batch.
pub const LENGTH_PREFIX: usize = 4;

/// The outcome of decoding a POST body: the messages decoded before the first
/// violation, and that violation if there was one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The messages accepted, in order.
    pub messages: Vec<Message>,
    /// The first fault, if any; nothing after it was decoded.
    pub violation: Option<Violation>,
}

impl Batch {
    /// The close reason, if the body was not accepted whole.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.violation.map(|v| v.close_reason())
    }
}

/// Decodes a whole POST body (base64 text) into messages that are views of one
/// decoded buffer.
///
/// At most enough text to exceed [`Limits::max_batch_size`] is decoded, so the
/// buffer never holds more than about that many bytes, whatever the text's size.
pub fn decode_body(text: &[u8], limits: &Limits) -> Batch {
    let cap = text_to_exceed(limits.max_batch_size()).min(text.len());
    let mut stage = Base64Stage::default();
    let mut decoded = Vec::with_capacity(cap / 4 * 3);
    let mut base64_fault = stage.feed(&text[..cap], &mut decoded).err();
    if base64_fault.is_none() {
        base64_fault = if cap < text.len() {
            // Only text after a padded final quantum can fault here; otherwise
            // the decoded bytes already exceed the batch limit.
            stage.feed(&text[cap..cap + 1], &mut decoded).err()
        } else {
            stage.finish().err()
        };
    }

    let whole = Bytes::from(decoded);
    let limit = limits.max_batch_size();
    let within = whole.slice(..whole.len().min(limit));
    let mut batch = Batch {
        messages: Vec::with_capacity(count_frames(&within, RESERVE_MAX)),
        violation: None,
    };
    let mut frames = Frames::new(&within, limits);
    for step in &mut frames {
        match step {
            Ok(m) => batch.messages.push(m),
            Err(v) => {
                batch.violation = Some(v);
                break;
            }
        }
    }
    let frame_fault = match batch.violation {
        Some(_) if !frames.ran_out => return batch,
        other => other,
    };
    // The frames ended cleanly or ran out of bytes: what comes next in the
    // stream decides.
    batch.violation = if whole.len() > limit {
        Some(Violation::new(
            ViolationKind::BatchTooLarge { limit },
            limit,
        ))
    } else {
        base64_fault.or(frame_fault)
    };
    batch
}

/// The most messages [`decode_body`] reserves room for before decoding
/// (80 KiB of [`Message`]s): a batch of more grows the vector as it goes, so a
/// body of many tiny frames cannot make the first allocation large.
const RESERVE_MAX: usize = 1024;

/// How many frames the length prefixes of `batch` delimit, counting at most
/// `max`: a bounded estimate of the messages to reserve room for, found
/// without validating anything (a frame cut short is not counted).
fn count_frames(batch: &[u8], max: usize) -> usize {
    let mut count = 0;
    let mut rest = batch;
    while count < max {
        let Some(prefix) = rest.first_chunk::<LENGTH_PREFIX>() else {
            break;
        };
        let Some(size) = usize::try_from(u32::from_be_bytes(*prefix))
            .ok()
            .and_then(|body| body.checked_add(LENGTH_PREFIX + 1))
        else {
            break;
        };
        let Some(next) = rest.get(size..) else {
            break;
        };
        rest = next;
        count += 1;
    }
    count
}

/// How many base64 characters decode to more than `limit` bytes.
fn text_to_exceed(limit: usize) -> usize {
    (limit / 3).saturating_add(1).saturating_mul(4)
}

/// Decodes the messages of an already-decoded (binary) batch, one at a time,
/// as views of `batch`. Allocates nothing per message.
///
/// The iterator ends after the first violation.
pub fn frames<'b>(batch: &'b Bytes, limits: &'b Limits) -> Frames<'b> {
    Frames::new(batch, limits)
}

/// The iterator of [`frames`].
#[derive(Debug)]
pub struct Frames<'b> {
    whole: &'b Bytes,
    limits: &'b Limits,
    pos: usize,
    done: bool,
    /// Whether the last violation was the input ending inside a frame.
    ran_out: bool,
}

impl<'b> Frames<'b> {
    fn new(whole: &'b Bytes, limits: &'b Limits) -> Self {
        Frames {
            whole,
            limits,
            pos: 0,
            done: false,
            ran_out: false,
        }
    }

    fn fail(&mut self, kind: ViolationKind, offset: usize) -> Option<Result<Message, Violation>> {
        self.done = true;
        self.ran_out = matches!(kind, ViolationKind::Truncated(_));
        Some(Err(Violation::new(kind, offset)))
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Message, Violation>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.whole.get(self.pos..).unwrap_or_default();
        if self.done || rest.is_empty() {
            return None;
        }
        let Some(prefix) = rest.first_chunk::<LENGTH_PREFIX>() else {
            return self.fail(ViolationKind::Truncated(Field::LengthPrefix), self.pos);
        };
        let body_len = u32::from_be_bytes(*prefix);
        let size = match message_size(body_len, self.limits) {
            Ok(size) => size,
            Err(kind) => return self.fail(kind, self.pos),
        };
        let start = self.pos + LENGTH_PREFIX;
        let end = LENGTH_PREFIX.saturating_add(size);
        let Some(msg) = rest.get(LENGTH_PREFIX..end) else {
            // Reported where the cut field starts: the type byte, or the body.
            let (field, at) = if rest.len() == LENGTH_PREFIX {
                (Field::TypeByte, start)
            } else {
                (Field::Body, start + 1)
            };
            return self.fail(ViolationKind::Truncated(field), at);
        };
        self.pos = start + size;
        let decoded = Message::decode_within(self.whole, msg, self.limits);
        if decoded.is_err() {
            self.done = true;
        }
        Some(decoded)
    }
}

/// The size of a framed message (type byte plus body), checked against the
/// limit before anything is buffered; a 0xFFFFFFFF length never allocates.
fn message_size(body_len: u32, limits: &Limits) -> Result<usize, ViolationKind> {
    let size = u64::from(body_len) + 1;
    match usize::try_from(size) {
        Ok(s) if s <= limits.max_message_size() => Ok(s),
        _ => Err(ViolationKind::MessageTooLarge {
            size,
            limit: limits.max_message_size(),
        }),
    }
}

/// Decodes a POST body given in chunks of any size.
///
/// ```
/// use sessionwire::{polling::BodyDecoder, Limits};
///
/// let mut dec = BodyDecoder::new(Limits::default());
/// let mut out = Vec::new();
/// for chunk in [&b"AAAA"[..], b"AgA4", b"AQ=="] {
///     dec.feed(chunk, &mut out).unwrap();
/// }
/// dec.finish().unwrap();
/// assert_eq!(out.len(), 1);
/// ```
#[derive(Debug)]
pub struct BodyDecoder {
    limits: Limits,
    base64: Base64Stage,
    state: FrameState,
    /// Decoded bytes consumed so far.
    decoded: usize,
    /// Offset of the current frame's length prefix.
    frame_start: usize,
    failed: Option<Violation>,
}

#[derive(Debug)]
enum FrameState {
    Head { buf: [u8; LENGTH_PREFIX], n: usize },
    Data { buf: BytesMut, size: usize },
}

/// Base64 characters decoded per step, so a step's buffer stays small
/// whatever the caller's chunk size.
const STEP: usize = 4096;

impl BodyDecoder {
    /// A decoder for one POST body.
    pub fn new(limits: Limits) -> Self {
        BodyDecoder {
            limits,
            base64: Base64Stage::default(),
            state: FrameState::Head {
                buf: [0; LENGTH_PREFIX],
                n: 0,
            },
            decoded: 0,
            frame_start: 0,
            failed: None,
        }
    }

    /// Feeds the next chunk of text; every message completed by it is pushed to
    /// `out`. After a violation every call returns that violation again.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Message>) -> Result<(), Violation> {
        if let Some(v) = self.failed {
            return Err(v);
        }
        let r = chunk
            .chunks(STEP)
            .try_for_each(|step| self.feed_step(step, out));
        if let Err(v) = r {
            self.failed = Some(v);
        }
        r
    }

    fn feed_step(&mut self, step: &[u8], out: &mut Vec<Message>) -> Result<(), Violation> {
        // Each step decodes into its own buffer (at most 3 bytes of a pending
        // quantum plus 3 per 4 characters), which the messages that lie wholly
        // inside it share as views; only a message cut by a step or chunk
        // boundary is copied into a buffer of its own.
        let mut decoded = Vec::with_capacity((step.len() / 4 + 1) * 3);
        let base64 = self.base64.feed(step, &mut decoded);
        // Frames decoded before a base64 fault come first in the stream.
        let frames = self.push(&Bytes::from(decoded), out);
        frames.and(base64)
    }

    /// Ends the body: a partial base64 quantum or a message cut short is a
    /// violation. As in [`feed`](Self::feed), after a violation every call
    /// returns that violation again.
    pub fn finish(&mut self) -> Result<(), Violation> {
        if let Some(v) = self.failed {
            return Err(v);
        }
        let r = self.end();
        if let Err(v) = r {
            // Like a violation in `feed`: the decoder stays failed.
            self.failed = Some(v);
        }
        r
    }

    /// Whether the body may end here.
    fn end(&self) -> Result<(), Violation> {
        self.base64.finish()?;
        match &self.state {
            FrameState::Head { n: 0, .. } => Ok(()),
            FrameState::Head { .. } => Err(Violation::new(
                ViolationKind::Truncated(Field::LengthPrefix),
                self.frame_start,
            )),
            FrameState::Data { buf, .. } => {
                let start = self.frame_start + LENGTH_PREFIX;
                let (field, at) = if buf.is_empty() {
                    (Field::TypeByte, start)
                } else {
                    (Field::Body, start + 1)
                };
                Err(Violation::new(ViolationKind::Truncated(field), at))
            }
        }
    }

    /// Takes the next bytes of the current frame's length prefix; once it is
    /// whole, checks the declared size and starts buffering the frame.
    fn head(&mut self, bytes: &mut &[u8]) -> Result<(), Violation> {
        let FrameState::Head { buf, n } = &mut self.state else {
            return Ok(());
        };
        let take = (LENGTH_PREFIX - *n).min(bytes.len());
        buf[*n..*n + take].copy_from_slice(&bytes[..take]);
        *n += take;
        self.decoded += take;
        *bytes = &bytes[take..];
        if *n == LENGTH_PREFIX {
            let size = message_size(u32::from_be_bytes(*buf), &self.limits)
                .map_err(|kind| Violation::new(kind, self.frame_start))?;
            // Reserve only what has arrived, as it arrives: a large
            // declared length costs nothing until its bytes come.
            self.state = FrameState::Data {
                buf: BytesMut::with_capacity(size.min(STEP)),
                size,
            };
        }
        Ok(())
    }

    /// Runs decoded bytes through the frame state machine, up to the batch limit.
    fn push(&mut self, decoded: &Bytes, out: &mut Vec<Message>) -> Result<(), Violation> {
        let limit = self.limits.max_batch_size();
        let room = limit.saturating_sub(self.decoded);
        let over = decoded.len() > room;
        let usable = decoded.len().min(room);
        let mut bytes = &decoded[..usable];
        while !bytes.is_empty() {
            match &mut self.state {
                FrameState::Head { n: 0, .. } => {
                    // A frame starts here. If it also ends in this step, its
                    // message is a view of the step's buffer: the same checks,
                    // in the same order, as the buffered path below.
                    if let Some((prefix, rest)) = bytes.split_first_chunk::<LENGTH_PREFIX>() {
                        let size = message_size(u32::from_be_bytes(*prefix), &self.limits)
                            .map_err(|kind| Violation::new(kind, self.frame_start))?;
                        if size <= rest.len() {
                            let at = usable - rest.len();
                            let msg = decoded.slice(at..at + size);
                            let start = self.frame_start + LENGTH_PREFIX;
                            self.decoded += LENGTH_PREFIX + size;
                            bytes = &rest[size..];
                            let m = Message::decode_within(&msg, &msg, &self.limits)
                                .map_err(|v| v.shifted(start))?;
                            out.push(m);
                            self.frame_start = start + size;
                            continue;
                        }
                    }
                    self.head(&mut bytes)?;
                }
                FrameState::Head { .. } => self.head(&mut bytes)?,
                FrameState::Data { buf, size } => {
                    let take = (*size - buf.len()).min(bytes.len());
                    buf.put_slice(&bytes[..take]);
                    self.decoded += take;
                    bytes = &bytes[take..];
                    if buf.len() == *size {
                        let msg = buf.split().freeze();
                        let start = self.frame_start + LENGTH_PREFIX;
                        let m = Message::decode_within(&msg, &msg, &self.limits)
                            .map_err(|v| v.shifted(start))?;
                        out.push(m);
                        self.frame_start = start + msg.len();
                        self.state = FrameState::Head {
                            buf: [0; LENGTH_PREFIX],
                            n: 0,
                        };
                    }
                }
            }
        }
        if over {
            return Err(Violation::new(
                ViolationKind::BatchTooLarge { limit },
                limit,
            ));
        }
        Ok(())
    }
}

/// Streaming base64: decodes whole 4-character quanta as they complete. A
/// padded quantum ends the text; anything after it is a violation.
#[derive(Debug, Default)]
struct Base64Stage {
    pending: [u8; 4],
    npending: usize,
    /// Characters taken so far, pending ones included.
    taken: usize,
    padded: bool,
}

impl Base64Stage {
    fn fault(offset: usize) -> Violation {
        Violation::new(ViolationKind::InvalidBase64, offset)
    }

    /// Decodes every quantum `text` completes into `out`. On a fault, `out`
    /// holds the bytes of every quantum before the faulty one.
    fn feed(&mut self, mut text: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        if self.padded && !text.is_empty() {
            return Err(Self::fault(self.taken));
        }
        if self.npending > 0 {
            let take = (4 - self.npending).min(text.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&text[..take]);
            self.npending += take;
            self.taken += take;
            text = &text[take..];
            if self.npending < 4 {
                return Ok(());
            }
            self.npending = 0;
            let quantum = self.pending;
            self.quanta(&quantum, self.taken - 4, out)?;
            if self.padded && !text.is_empty() {
                return Err(Self::fault(self.taken));
            }
        }
        let whole = text.len() / 4 * 4;
        let base = self.taken;
        self.taken += whole;
        self.quanta(&text[..whole], base, out)?;
        let rest = &text[whole..];
        if self.padded && !rest.is_empty() {
            return Err(Self::fault(self.taken));
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
        self.taken += rest.len();
        Ok(())
    }

    /// Decodes whole quanta starting at text offset `base`.
    fn quanta(&mut self, text: &[u8], base: usize, out: &mut Vec<u8>) -> Result<(), Violation> {
        // The common case first: a run that decodes whole holds padding, if
        // any, only in its last quantum (the engine rejects it anywhere else),
        // so no separate scan for `=` is needed.
        let before = out.len();
        if STANDARD.decode_vec(text, out).is_ok() {
            if text.last() == Some(&b'=') {
                self.padded = true;
            }
            return Ok(());
        }
        out.truncate(before);
        // A fault: find the exact offset the slow way.
        if let Some(p) = text.iter().position(|&b| b == b'=') {
            let q = p / 4 * 4;
            self.run(&text[..q], base, out)?;
            self.run(&text[q..q + 4], base + q, out)?;
            self.padded = true;
            if text.len() > q + 4 {
                return Err(Self::fault(base + q + 4));
            }
            return Ok(());
        }
        self.run(text, base, out)
    }

    /// Decodes one run of whole quanta; on a fault keeps the quanta before it.
    fn run(&self, text: &[u8], base: usize, out: &mut Vec<u8>) -> Result<(), Violation> {
        let before = out.len();
        let Err(e) = STANDARD.decode_vec(text, out) else {
            return Ok(());
        };
        let at = match e {
            DecodeError::InvalidByte(i, _) | DecodeError::InvalidLastSymbol(i, _) => i,
            DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => {
                text.len().saturating_sub(4)
            }
        };
        out.truncate(before);
        let good = at / 4 * 4;
        // The quanta before the faulty one decoded once already, so they decode again.
        let _ = STANDARD.decode_vec(&text[..good], out);
        Err(Self::fault(base + at))
    }

    /// A partial quantum at the end of the text is a violation at its start.
    fn finish(&self) -> Result<(), Violation> {
        if self.npending > 0 {
            return Err(Self::fault(self.taken - self.npending));
        }
        Ok(())
    }
}

/// A message whose body does not fit the 32-bit length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyTooLong {
    /// The body's length.
    pub len: usize,
}

impl fmt::Display for BodyTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message body of {} bytes does not fit a u32 length",
            self.len
        )
    }
}

impl std::error::Error for BodyTooLong {}

/// Writes the binary batch of `messages`.
pub fn encode_batch<B: BufMut>(messages: &[Message], buf: &mut B) -> Result<(), BodyTooLong> {
    for m in messages {
        let len = m.body_len();
        let prefix = u32::try_from(len).map_err(|_| BodyTooLong { len })?;
        buf.put_u32(prefix);
        m.encode(buf);
    }
    Ok(())
}

/// The base64 text of the batch of `messages`: a send body or a poll response.
pub fn encode_body(messages: &[Message]) -> Result<String, BodyTooLong> {
    let len = messages
        .iter()
        .map(|m| LENGTH_PREFIX + m.encoded_len())
        .sum();
    let mut batch = Vec::with_capacity(len);
    encode_batch(messages, &mut batch)?;
    Ok(STANDARD.encode(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{service, ServiceRequest};
    use proptest::prelude::*;

    fn incremental(text: &[u8], limits: &Limits, chunk: usize) -> Batch {
        let mut dec = BodyDecoder::new(limits.clone());
        let mut batch = Batch::default();
        let fed = text
            .chunks(chunk.max(1))
            .try_for_each(|c| dec.feed(c, &mut batch.messages));
        batch.violation = fed.and_then(|()| dec.finish()).err();
        batch
    }

    /// The one-shot result, checked against the incremental decoder fed whole,
    /// in halves and byte by byte.
    fn decode_all_ways(text: &[u8], limits: &Limits) -> Batch {
        let one = decode_body(text, limits);
        for chunk in [1, 2, 3, 5, text.len() / 2 + 1, text.len().max(1)] {
            assert_eq!(incremental(text, limits, chunk), one, "chunk {chunk}");
        }
        one
    }

    fn text(batch: &[u8]) -> Vec<u8> {
        STANDARD.encode(batch).into_bytes()
    }

    fn ping(conversation: u64) -> Message {
        Message::ServiceRequest(ServiceRequest {
            service: service::USER_PING,
            conversation,
            payload: Bytes::new(),
        })
    }

    #[test]
    fn section_6_user_ping_send_body_as_observed() {
        let b = decode_all_ways(b"AAAAAgA4AQ==", &Limits::default());
        assert_eq!(b.messages, [ping(1)]);
        assert_eq!(b.violation, None);
        assert_eq!(encode_body(&b.messages).unwrap(), "AAAAAgA4AQ==");
    }

    #[test]
    fn section_6_reservation_counts_whole_frames_up_to_its_bound() {
        let two = [0, 0, 0, 2, 0, 0x38, 0x01, 0, 0, 0, 0, 0x1d];
        assert_eq!(count_frames(&two, RESERVE_MAX), 2);
        assert_eq!(count_frames(&two, 1), 1);
        // A frame cut short, or a length that runs past the end, is not counted.
        assert_eq!(count_frames(&two[..11], RESERVE_MAX), 1);
        assert_eq!(
            count_frames(&[0xff, 0xff, 0xff, 0xff, 0x04], RESERVE_MAX),
            0
        );
        assert_eq!(count_frames(&[0, 0, 0], RESERVE_MAX), 0);
    }

    #[test]
    fn section_6_many_tiny_frames_after_a_fault_reserve_no_more_than_the_bound() {
        // An invalid first message, then far more well-framed messages than
        // the reservation bound: nothing is accepted and the up-front
        // reservation stays bounded.
        let mut batch = vec![0, 0, 0, 0, 0x3f];
        for _ in 0..RESERVE_MAX * 4 {
            batch.extend([0, 0, 0, 0, 0x1d]);
        }
        let b = decode_all_ways(&text(&batch), &Limits::default());
        assert!(b.messages.is_empty());
        assert!(b.messages.capacity() <= RESERVE_MAX);
        assert_eq!(
            b.violation,
            Some(Violation::new(ViolationKind::UnknownType(0x3f), 4))
        );
    }

    #[test]
    fn section_6_incremental_messages_inside_one_step_are_views_of_one_buffer() {
        let topic = |topic, data: &'static [u8]| {
            Message::TopicValue(crate::message::TopicMessage {
                topic,
                compressed: false,
                data: Bytes::from_static(data),
            })
        };
        let sent = [topic(1, b"abc"), topic(2, b"defg")];
        let text = encode_body(&sent).unwrap();
        // Byte by byte and in every other chunking it decodes the same.
        assert_eq!(
            decode_all_ways(text.as_bytes(), &Limits::default()).messages,
            sent
        );
        let mut dec = BodyDecoder::new(Limits::default());
        let mut out = Vec::new();
        dec.feed(text.as_bytes(), &mut out).unwrap();
        dec.finish().unwrap();
        assert_eq!(out, sent);
        let [Message::TopicValue(a), Message::TopicValue(b)] = &out[..] else {
            panic!("two topic values expected");
        };
        // The second payload starts one frame header (prefix, type byte,
        // topic id) after the first one ends: both lie in one buffer.
        let gap = b.data.as_ptr() as usize - a.data.as_ptr() as usize;
        assert_eq!(gap, a.data.len() + LENGTH_PREFIX + 1 + 4);
    }

    #[test]
    fn section_6_empty_body_has_no_messages() {
        assert_eq!(decode_all_ways(b"", &Limits::default()), Batch::default());
    }

    #[test]
    fn section_6_declared_length_over_the_maximum_is_too_large_without_buffering() {
        let limits = Limits::builder().max_message_size(16).build().unwrap();
        let mut batch = vec![0, 0, 0, 2, 0, 0x38, 0x01];
        batch.extend([0xff, 0xff, 0xff, 0xff, 0x04]);
        let b = decode_all_ways(&text(&batch), &limits);
        assert_eq!(b.messages, [ping(1)]);
        assert_eq!(
            b.violation,
            Some(Violation::new(
                ViolationKind::MessageTooLarge {
                    size: 0x1_0000_0000,
                    limit: 16
                },
                7
            ))
        );
        assert_eq!(b.close_reason(), Some(CloseReason::MessageTooLarge));
        // Exactly at the limit is fine: 15-byte body plus the type byte.
        let mut at_limit = vec![0, 0, 0, 15, 4, 0, 0, 0, 1];
        at_limit.extend([0; 11]);
        assert_eq!(decode_all_ways(&text(&at_limit), &limits).violation, None);
    }

    #[test]
    fn section_6_truncated_frames() {
        let l = Limits::default();
        let cases: [(&[u8], ViolationKind, usize); 3] = [
            (&[0, 0, 0], ViolationKind::Truncated(Field::LengthPrefix), 0),
            (&[0, 0, 0, 2], ViolationKind::Truncated(Field::TypeByte), 4),
            (
                &[0, 0, 0, 2, 0, 0x38],
                ViolationKind::Truncated(Field::Body),
                5,
            ),
        ];
        for (batch, kind, offset) in cases {
            let b = decode_all_ways(&text(batch), &l);
            assert_eq!(b.violation, Some(Violation::new(kind, offset)), "{batch:?}");
        }
    }

    #[test]
    fn section_6_invalid_message_in_batch_keeps_earlier_messages() {
        let batch = [0, 0, 0, 2, 0, 0x38, 0x01, 0, 0, 0, 0, 0x3f];
        let b = decode_all_ways(&text(&batch), &Limits::default());
        assert_eq!(b.messages, [ping(1)]);
        assert_eq!(
            b.violation,
            Some(Violation::new(ViolationKind::UnknownType(0x3f), 11))
        );
    }

    #[test]
    fn section_6_a_body_ended_early_stays_invalid() {
        // A partial quantum, then a frame cut short: finish reports each, and
        // the decoder stays failed, so text fed after it decodes nothing.
        for (text, v) in [
            (
                &b"AAAAAgA4AQ"[..],
                Violation::new(ViolationKind::InvalidBase64, 8),
            ),
            (
                b"AAAAAgA4",
                Violation::new(ViolationKind::Truncated(Field::Body), 5),
            ),
        ] {
            let mut dec = BodyDecoder::new(Limits::default());
            let mut out = Vec::new();
            for byte in text.chunks(1) {
                dec.feed(byte, &mut out).unwrap();
            }
            assert_eq!(dec.finish(), Err(v));
            assert_eq!(dec.feed(b"AAAAAB0=", &mut out), Err(v));
            assert_eq!(dec.finish(), Err(v));
            assert!(out.is_empty(), "{out:?}");
        }
    }

    #[test]
    fn section_6_bad_base64_is_invalid_at_its_text_offset() {
        let l = Limits::default();
        let cases: [(&[u8], usize); 6] = [
            (b"AAAA*gA4AQ==", 4),
            (b"AAAAAgA4AQ", 8),
            (b"AAAAAgA4AQ==AAAA", 12),
            (b"AAAAAgA4AR==", 9),
            (b"AAAAAgA4A===", 9),
            (b"AAAAAgA4AQ==\n", 12),
        ];
        for (t, offset) in cases {
            let b = decode_all_ways(t, &l);
            assert_eq!(
                b.violation,
                Some(Violation::new(ViolationKind::InvalidBase64, offset)),
                "{}",
                String::from_utf8_lossy(t)
            );
        }
        // The message before the bad character is kept.
        let b = decode_all_ways(b"AAAAAgA4AQAA*AAA", &l);
        assert_eq!(b.messages, [ping(1)]);
    }

    #[test]
    fn section_6_batch_over_the_maximum_is_too_large() {
        let limits = Limits::builder().max_batch_size(8).build().unwrap();
        let batch = [0, 0, 0, 2, 0, 0x38, 0x01, 0, 0, 0, 0, 0x1d];
        let b = decode_all_ways(&text(&batch), &limits);
        assert_eq!(b.messages, [ping(1)]);
        assert_eq!(
            b.violation,
            Some(Violation::new(ViolationKind::BatchTooLarge { limit: 8 }, 8))
        );
        // A huge text decodes no more than the limit needs: all-zero bytes are
        // an empty-bodied SERVICE_REQUEST, missing its service id.
        let huge = vec![b'A'; 1 << 20];
        let b = decode_all_ways(&huge, &limits);
        assert_eq!(
            b.violation,
            Some(Violation::new(
                ViolationKind::Truncated(Field::ServiceId),
                5
            ))
        );
        assert!(b.messages.is_empty());
    }

    #[test]
    fn section_6_batch_of_exactly_the_maximum_is_accepted() {
        // The USER_PING batch is 7 decoded bytes: at a limit of 7 it fits, at
        // 6 it goes on past the limit at byte 6.
        let exact = Limits::builder().max_batch_size(7).build().unwrap();
        let b = decode_all_ways(b"AAAAAgA4AQ==", &exact);
        assert_eq!((b.messages, b.violation), (vec![ping(1)], None));
        let under = Limits::builder().max_batch_size(6).build().unwrap();
        assert_eq!(
            decode_all_ways(b"AAAAAgA4AQ==", &under).violation,
            Some(Violation::new(ViolationKind::BatchTooLarge { limit: 6 }, 6))
        );
        // Two pings, 14 bytes, fed so that one chunk ends exactly at the limit.
        let two = Limits::builder().max_batch_size(14).build().unwrap();
        let b = decode_all_ways(
            &text(&[0, 0, 0, 2, 0, 0x38, 1, 0, 0, 0, 2, 0, 0x38, 2]),
            &two,
        );
        assert_eq!((b.messages, b.violation), (vec![ping(1), ping(2)], None));
    }

    #[test]
    fn section_6_text_after_a_padded_quantum_at_the_decode_cap_is_invalid() {
        // At a limit of 7 the one-shot decoder reads 12 characters, the padded
        // quantum ending the ping, and looks one character past them.
        let limits = Limits::builder().max_batch_size(7).build().unwrap();
        for t in [
            &b"AAAAAgA4AQ==A"[..],
            b"AAAAAgA4AQ==AAAA",
            b"AAAAAgA4AQ==\n",
        ] {
            let b = decode_all_ways(t, &limits);
            assert_eq!(b.messages, [ping(1)]);
            assert_eq!(
                b.violation,
                Some(Violation::new(ViolationKind::InvalidBase64, 12)),
                "{}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn section_6_a_chunk_after_a_padded_chunk_is_invalid() {
        // Whole quanta after the padded one, in chunks of 4: the quantum after
        // the padding must not decode.
        let t = b"AAAAAgA4AQ==AAAAAAAA";
        for chunk in [4, 8, 12] {
            let b = incremental(t, &Limits::default(), chunk);
            assert_eq!(b.messages, [ping(1)], "chunk {chunk}");
            assert_eq!(
                b.violation,
                Some(Violation::new(ViolationKind::InvalidBase64, 12)),
                "chunk {chunk}"
            );
        }
        // An empty chunk after the padding is no text at all.
        let mut dec = BodyDecoder::new(Limits::default());
        let mut out = Vec::new();
        dec.feed(b"AAAAAgA4AQ==", &mut out).unwrap();
        dec.feed(b"", &mut out).unwrap();
        dec.finish().unwrap();
        assert_eq!(out, [ping(1)]);
    }

    #[test]
    fn body_too_long_names_the_length() {
        assert_eq!(
            BodyTooLong { len: 1 << 32 }.to_string(),
            "message body of 4294967296 bytes does not fit a u32 length"
        );
    }

    #[test]
    fn frames_of_a_decoded_batch_are_views_of_it() {
        let raw = Bytes::from(vec![0, 0, 0, 5, 4, 0, 0, 0, 1, b'x']);
        let l = Limits::default();
        let msgs: Vec<_> = frames(&raw, &l).collect();
        let [Ok(Message::TopicValue(t))] = &msgs[..] else {
            panic!("one topic value expected: {msgs:?}");
        };
        assert_eq!(t.data.as_ptr(), raw[9..].as_ptr());
    }

    proptest! {
        #[test]
        fn section_6_batches_round_trip(seed in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut u = arbitrary::Unstructured::new(&seed);
            let msgs: Vec<Message> = u.arbitrary().unwrap_or_default();
            let body = encode_body(&msgs).unwrap();
            let b = decode_body(body.as_bytes(), &Limits::default());
            prop_assert_eq!(b.violation, None);
            prop_assert_eq!(b.messages, msgs);
        }

        #[test]
        fn section_6_any_chunking_decodes_like_one_shot(
            raw in proptest::collection::vec(any::<u8>(), 0..96),
            noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            chunk in 1usize..20,
            max_batch in 5usize..64,
            max_msg in 1usize..32,
        ) {
            let mut t = STANDARD.encode(&raw).into_bytes();
            for (at, b) in noise {
                if !t.is_empty() {
                    let i = at % t.len();
                    t[i] = b;
                }
            }
            let limits = Limits::builder().max_batch_size(max_batch).max_message_size(max_msg).build().unwrap();
            let one = decode_body(&t, &limits);
            prop_assert_eq!(incremental(&t, &limits, chunk), one.clone());
            if let Some(v) = one.violation {
                let bound = if v.kind() == ViolationKind::InvalidBase64 { t.len() } else { raw.len() };
                prop_assert!(v.offset() <= bound);
            }
        }
    }
}
