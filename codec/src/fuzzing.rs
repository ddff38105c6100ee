//! The bodies of the fuzz targets, as ordinary functions.
//!
//! Each `fuzz/fuzz_targets/<target>.rs` is a shim over one function here, so
//! the same code runs under cargo-fuzz (nightly, sanitizers) and in the stable
//! corpus replay test (`check/tests/fuzz_replay.rs`). Every function asserts
//! properties of the decoders and panics when one fails; it returns the
//! [`Outcome`], which the replay test compares with the recorded verdict.
//!
//! Properties every target checks:
//! - an accepted input re-encodes to exactly the bytes it came from (the
//!   codec's canonical form), and decoded views point into the input;
//! - a violation closes with `INVALID_INBOUND_MESSAGE` or `MESSAGE_TOO_LARGE`,
//!   and its offset lies inside the input (at its end only when the input ran
//!   out);
//! - decoders that must agree do agree: a message alone and framed in a batch,
//!   a body in one piece and in chunks, under default and under tighter limits.
//!
//! ```
//! use sessionwire::fuzzing;
//!
//! // USER_PING, conversation 1: accepted, one message.
//! let out = fuzzing::message(&[0x00, 0x38, 0x01]);
//! assert_eq!((out.verdict.messages, out.violation), (1, None));
//! // The observed HTTP send body of the same message.
//! assert_eq!(fuzzing::http_body(b"AAAAAgA4AQ==").verdict.messages, 1);
//! ```

use std::slice;

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use crate::close::CloseReason;
use crate::direction::Direction;
use crate::limits::Limits;
use crate::message::{FetchFields, Message, Text};
use crate::polling::{self, Batch, BodyDecoder, LENGTH_PREFIX};
use crate::verdict::{split_incremental, Outcome, Verdict};
use crate::violation::{Violation, ViolationKind, ZlibFault};

pub mod mqtt;
pub use mqtt::{mqtt_roundtrip, mqtt_stream, mqtt_v311, mqtt_v5};

/// The limits every target decodes with (and the corpus verdicts assume): the
/// defaults.
pub fn limits() -> Limits {
    Limits::default()
}

/// Tighter limits for a second, differential decode: small enough that fuzz
/// inputs reach `MESSAGE_TOO_LARGE` and the batch limit.
fn tight_limits(selector: u8) -> Limits {
    let s = usize::from(selector);
    Limits::builder()
        .max_message_size(1 + (s & 0x0f) * 4)
        .max_batch_size(5 + (s >> 4) * 16)
        .build()
        .expect("at least 1 and 5")
}

/// Target `message`: one WebSocket message, `data` as received.
///
/// Beyond the common properties: the same bytes framed as a one-message
/// binary batch decode identically (offsets moved by the length prefix), and a
/// maximum one byte below the input's size rejects it as too large at offset 0.
pub fn message(data: &[u8]) -> Outcome {
    let limits = limits();
    let wire = Bytes::copy_from_slice(data);
    let decoded = Message::decode(&wire, &limits);
    match &decoded {
        Ok(m) => check_message(m, &wire),
        Err(v) => check_violation(v, data.len()),
    }

    if let Some(body_len) = data.len().checked_sub(1) {
        if data.len() <= limits.max_message_size() {
            let prefix = u32::try_from(body_len).expect("within the message limit");
            let mut framed = Vec::with_capacity(LENGTH_PREFIX + data.len());
            framed.extend_from_slice(&prefix.to_be_bytes());
            framed.extend_from_slice(data);
            let framed = Bytes::from(framed);
            let in_batch: Vec<_> = polling::frames(&framed, &limits).collect();
            let alone = decoded.clone().map_err(|v| v.shifted(LENGTH_PREFIX));
            assert_eq!(
                in_batch,
                [alone],
                "framed in a batch, the message decodes alike"
            );
        }
        if body_len > 0 {
            let below = Limits::builder()
                .max_message_size(body_len)
                .build()
                .expect("at least 1");
            let size = u64::try_from(data.len()).expect("usize fits u64");
            assert_eq!(
                Message::decode(&wire, &below),
                Err(Violation::new(
                    ViolationKind::MessageTooLarge {
                        size,
                        limit: body_len
                    },
                    0
                )),
                "a message over the maximum is rejected before parsing"
            );
        }
    }

    // The verdict is the server's: it reads what a client sent.
    Outcome::of_message(&Direction::ClientToServer.check_message(decoded))
}

/// Target `http_body`: one HTTP polling POST body (base64 text).
///
/// Beyond the common properties: the chunked decoder fed the whole body
/// agrees with the one-shot decoder; when the text is valid base64 the frames
/// of its decoded batch agree too; and tighter limits can only stop decoding
/// earlier, never change a message.
pub fn http_body(data: &[u8]) -> Outcome {
    let limits = limits();
    let one = polling::decode_body(data, &limits);
    check_batch(data, &one);
    assert_eq!(
        chunked(data, &[], &limits),
        one,
        "fed whole, chunked agrees"
    );

    if let Ok(raw) = STANDARD.decode(data) {
        if raw.len() <= limits.max_batch_size() {
            let raw = Bytes::from(raw);
            let mut frames = Batch::default();
            for step in polling::frames(&raw, &limits) {
                match step {
                    Ok(m) => frames.messages.push(m),
                    Err(v) => frames.violation = Some(v),
                }
            }
            assert_eq!(frames, one, "the frames of the decoded batch agree");
        }
    }

    let selector = data.first().copied().unwrap_or(0);
    let tight = polling::decode_body(data, &tight_limits(selector));
    check_batch(data, &tight);
    check_tighter(&tight, &one);

    Outcome::of_batch(&Direction::ClientToServer.check_batch(one))
}

/// Target `incremental`: a POST body fed to [`BodyDecoder`] in chunks whose
/// sizes come from the input (layout: [`split_incremental`]). The result must
/// equal the one-shot [`polling::decode_body`] of the same text, under the
/// default limits and under tighter ones chosen by the input.
pub fn incremental(data: &[u8]) -> Outcome {
    let (header, sizes, text) = split_incremental(data);
    let sizes: Vec<usize> = sizes.iter().map(|&s| chunk_size(s)).collect();
    let limits = limits();
    let one = polling::decode_body(text, &limits);
    check_batch(text, &one);
    assert_eq!(chunked(text, &sizes, &limits), one, "chunked {sizes:?}");

    let selector = header >> 4;
    if selector != 0 {
        let tight = tight_limits(selector.wrapping_mul(0x11));
        let tight_one = polling::decode_body(text, &tight);
        check_batch(text, &tight_one);
        check_tighter(&tight_one, &one);
        assert_eq!(
            chunked(text, &sizes, &tight),
            tight_one,
            "chunked {sizes:?} under {tight:?}"
        );
    }
    Outcome::of_batch(&Direction::ClientToServer.check_batch(one))
}

/// The chunk size one size byte of an `incremental` input stands for.
fn chunk_size(byte: u8) -> usize {
    if byte < 0x80 {
        usize::from(byte)
    } else {
        usize::from(byte & 0x7f) * 64
    }
}

/// Target `roundtrip`: a message built by [`Arbitrary`] from `data` must
/// encode, decode to an equal message, and re-encode to the same bytes, alone
/// and in a batch. Building never fails, so the outcome is always one
/// accepted message.
pub fn roundtrip(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let m = Message::arbitrary(&mut u).expect("Message::arbitrary never fails");
    let wire = m.to_bytes();
    assert_eq!(
        wire.len(),
        m.encoded_len(),
        "encoded_len is the encoded length"
    );

    // The message is valid by construction, so only the size limit could refuse
    // it: allow exactly its size.
    let exact = Limits::builder()
        .max_message_size(wire.len())
        .max_batch_size(usize::MAX)
        .build()
        .expect("a message has at least its type byte");
    let back = Message::decode(&wire, &exact).expect("a built message decodes");
    assert_eq!(back, m, "decodes to the message it was built as");
    check_message(&back, &wire);

    let body = polling::encode_body(slice::from_ref(&m)).expect("fits a u32 length");
    let batch = polling::decode_body(body.as_bytes(), &exact);
    assert_eq!(
        batch,
        Batch {
            messages: vec![m],
            violation: None
        },
        "a one-message batch round-trips"
    );
    check_batch(body.as_bytes(), &batch);

    Outcome {
        verdict: Verdict::accept(1),
        violation: None,
    }
}

/// A structure-aware mutation for targets whose input is base64 text, for
/// `fuzz_mutator!`: most of the time the text is decoded, the decoded batch is
/// mutated by `mutate` (libFuzzer's own mutator), and the result is encoded
/// again, so mutations reach the frames behind the base64 instead of mostly
/// breaking the base64. Otherwise, or when the text is not base64, `mutate`
/// works on the text itself. The first `keep` bytes (a header) are left to the
/// plain mutation.
///
/// `data` holds the input in `data[..size]` and has room for `max_size` bytes;
/// returns the new size. `mutate` has the same contract.
pub fn mutate_base64(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    keep: usize,
    mut mutate: impl FnMut(&mut [u8], usize, usize) -> usize,
) -> usize {
    let max_size = max_size.min(data.len());
    let size = size.min(max_size);
    if seed % 4 == 0 || keep >= size {
        return mutate(data, size, max_size);
    }
    let Ok(mut raw) = STANDARD.decode(&data[keep..size]) else {
        return mutate(data, size, max_size);
    };
    let room = (max_size - keep) / 4 * 3;
    if raw.len() > room {
        return mutate(data, size, max_size);
    }
    let len = raw.len();
    raw.resize(room, 0);
    let len = mutate(&mut raw, len, room).min(room);
    let text = STANDARD.encode(&raw[..len]);
    // 4 * ceil(len / 3) <= 4 * (room / 3) <= max_size - keep.
    data[keep..keep + text.len()].copy_from_slice(text.as_bytes());
    keep + text.len()
}

/// Decodes `text` with [`BodyDecoder`], in chunks of `sizes` (see
/// [`split_incremental`]); all of it at once when `sizes` is empty.
fn chunked(text: &[u8], sizes: &[usize], limits: &Limits) -> Batch {
    let mut dec = BodyDecoder::new(limits.clone());
    let mut batch = Batch::default();
    let mut fed = Ok(());
    let mut rest = text;
    if sizes.iter().all(|&s| s == 0) {
        for _ in sizes {
            fed = fed.and_then(|()| dec.feed(&[], &mut batch.messages));
        }
        fed = fed.and_then(|()| dec.feed(rest, &mut batch.messages));
    } else {
        // Terminates: every turn through `sizes` takes at least one byte.
        for &s in sizes.iter().cycle() {
            if rest.is_empty() || fed.is_err() {
                break;
            }
            let (chunk, after) = rest.split_at(s.min(rest.len()));
            fed = dec.feed(chunk, &mut batch.messages);
            rest = after;
        }
    }
    batch.violation = fed.and_then(|()| dec.finish()).err();
    if let Some(v) = batch.violation {
        // After a violation every call returns it again, and decodes nothing.
        let before = batch.messages.len();
        assert_eq!(
            dec.feed(b"AAAAAB0=", &mut batch.messages),
            Err(v),
            "feed after {v}"
        );
        assert_eq!(dec.finish(), Err(v), "finish after {v}");
        assert_eq!(batch.messages.len(), before, "nothing decoded after {v}");
    }
    batch
}

/// Properties of an accepted message decoded from `wire`.
fn check_message(m: &Message, wire: &Bytes) {
    assert_eq!(
        m.to_bytes(),
        *wire,
        "an accepted message re-encodes to its input"
    );
    assert_eq!(
        m.encoded_len(),
        wire.len(),
        "encoded_len of an accepted message"
    );
    let range = wire.as_ptr_range();
    for view in views(m) {
        if !view.is_empty() {
            let inside = range.start <= view.as_ptr() && view.as_ptr_range().end <= range.end;
            assert!(inside, "decoded views share the input buffer");
        }
    }
    // The accessors agree with the wire bytes they read.
    match m {
        Message::ServiceError(e) => {
            let text = std::str::from_utf8(e.message.as_bytes()).expect("checked UTF-8");
            assert_eq!(e.message.as_str(), text, "Text::as_str is its bytes");
            assert_eq!(
                Text::from_utf8(e.message.as_bytes().clone()),
                Ok(e.message.clone())
            );
        }
        Message::FetchReply(f) => {
            let fields: Vec<&str> = f.fields.iter().collect();
            assert_eq!(fields.len(), f.fields.len(), "FetchFields::len counts iter");
            assert_eq!(fields.is_empty(), f.fields.is_empty());
            let rebuilt =
                FetchFields::new(fields.iter().copied()).expect("fields hold no delimiter");
            assert_eq!(rebuilt, f.fields, "the fields rebuild their wire bytes");
        }
        _ => {}
    }
}

/// The byte views a decoded message holds.
fn views(m: &Message) -> Vec<&Bytes> {
    match m {
        Message::ServiceRequest(r) => vec![&r.payload],
        Message::ServiceResponse(r) => vec![&r.payload],
        Message::ServiceError(e) => vec![e.message.as_bytes()],
        Message::TopicValue(t) | Message::TopicDelta(t) => vec![&t.data],
        Message::Abort | Message::Close => vec![],
        Message::FetchReply(f) => vec![f.fields.as_bytes(), &f.body],
    }
}

/// Properties of a violation found in an input of `len` bytes: one of the two
/// close reasons of a bad message, and an offset inside the input (at its end
/// only when the input ran out: a field cut short, an empty message, or an
/// empty compressed body, which is a truncated zlib stream).
fn check_violation(v: &Violation, len: usize) {
    assert!(
        matches!(
            v.close_reason(),
            CloseReason::InvalidInboundMessage | CloseReason::MessageTooLarge
        ),
        "{v}: unexpected close reason"
    );
    match v.kind() {
        ViolationKind::Truncated(_)
        | ViolationKind::EmptyMessage
        | ViolationKind::InvalidZlib(ZlibFault::Truncated) => {
            assert!(v.offset() <= len, "{v}: offset past the end of {len} bytes");
        }
        _ => assert!(v.offset() < len, "{v}: offset outside {len} bytes"),
    }
}

/// Properties of a batch decoded from the base64 `text`.
fn check_batch(text: &[u8], batch: &Batch) {
    assert_eq!(
        batch.close_reason(),
        batch.violation.map(|v| v.close_reason())
    );
    let mut raw = Vec::new();
    polling::encode_batch(&batch.messages, &mut raw).expect("decoded bodies fit a u32");
    match batch.violation {
        None => {
            let again = polling::encode_body(&batch.messages).expect("decoded bodies fit a u32");
            assert_eq!(
                again.as_bytes(),
                text,
                "an accepted body re-encodes to its text"
            );
        }
        Some(v) if v.kind() == ViolationKind::InvalidBase64 => {
            check_violation(&v, text.len());
            // The messages before the fault come from whole quanta before it.
            let before = raw.len().div_ceil(3) * 4;
            assert!(
                before <= v.offset(),
                "{v}: after {before} characters of messages"
            );
        }
        Some(v) => {
            check_violation(&v, text.len() / 4 * 3);
            assert!(
                raw.len() <= v.offset(),
                "{v}: after {} bytes of messages",
                raw.len()
            );
        }
    }
    // The messages are the bytes the text's first whole quanta decode to.
    let quanta = raw.len() / 3;
    let head = STANDARD
        .decode(&text[..quanta * 4])
        .expect("the quanta before the verdict are base64");
    assert_eq!(head, raw[..quanta * 3], "the messages are the text's batch");
}

/// Decoding under tighter limits stops at the same place or earlier, with the
/// same messages up to there.
fn check_tighter(tight: &Batch, loose: &Batch) {
    let n = tight.messages.len();
    assert!(
        n <= loose.messages.len(),
        "tighter limits accepted more messages"
    );
    assert_eq!(
        tight.messages[..],
        loose.messages[..n],
        "tighter limits changed a message"
    );
    if tight.violation.is_none() {
        assert_eq!(
            tight, loose,
            "accepted under tighter limits, so under looser ones"
        );
    }
}

/// Target `session`: drives the session layer with an `arbitrary` event
/// sequence (see [`crate::session::fuzz::session`] for the events and the
/// invariants: a session closes at most once, nothing is sent after the close,
/// memory held stays within the limits, time never goes backwards inside).
///
/// The verdict records what the input did: `accept` when no session closed,
/// else the first close reason, with the index of the event that led to it as
/// the offset. Virtual time starts at `origin`: the caller's clock, read
/// once (the codec never reads it).
pub fn session(data: &[u8], origin: std::time::Instant) -> Outcome {
    first_close(crate::session::fuzz::session(data, origin))
}

/// The verdict of a driver target: `accept` when nothing closed, else the
/// first close reason with the index of the step behind it as the offset.
fn first_close(first: Option<(CloseReason, usize)>) -> Outcome {
    let verdict = match first {
        None => Verdict::accept(0),
        Some((reason, step)) => Verdict {
            reason: Some(reason),
            offset: Some(step),
            messages: 0,
        },
    };
    Outcome {
        verdict,
        violation: None,
    }
}

/// Target `mqtt_session`: drives the MQTT session registry with an
/// `arbitrary` sequence of client bytes and packets, drops, time,
/// deliveries and server closes (see
/// [`crate::mqtt::session::fuzz::mqtt_session`] for the invariants: no
/// connection closed twice or written after its close, the connected count
/// and the offline-session cap kept, no timer loop).
///
/// The verdict is `accept` when no connection closed, else the first close
/// reason with the index of the step that led to it as the offset. Virtual
/// time starts at `origin`, the caller's clock read once.
pub fn mqtt_session(data: &[u8], origin: std::time::Instant) -> Outcome {
    first_close(crate::mqtt::session::fuzz::mqtt_session(data, origin))
}

/// Target `sp`: the strict reader of the `sp` connection field
/// (`session::properties`, private), `data` as the URL-decoded field text.
///
/// Properties: no panic; an accepted object written back with its encoder
/// reads back to the same properties; a refusal's offset lies inside the text (at its end
/// only when the text ran out); the same text sent as `sp` in a connection
/// request is accepted or refused alike, the refusal closing ABORTED.
///
/// Returns the number of properties, or the offset of the refusal.
pub fn sp(data: &[u8]) -> Result<usize, usize> {
    use crate::session::handshake::ConnectionRequest;
    use crate::session::properties;

    let Ok(text) = std::str::from_utf8(data) else {
        return Err(0);
    };
    let parsed = properties::parse(text);
    let mut query = String::from("ty=WB&v=29&ca=8&r=0&sp=");
    for b in text.bytes() {
        query.push_str(&format!("%{b:02X}"));
    }
    let request = ConnectionRequest::from_query(&query);
    match parsed {
        Ok(p) => {
            assert_eq!(
                properties::parse(&properties::encode(&p)).as_ref(),
                Ok(&p),
                "encode then parse changed the properties"
            );
            if let Ok(r) = &request {
                assert_eq!(r.properties, p, "the request read sp differently");
            }
            Ok(p.len())
        }
        Err(e) => {
            assert!(e.offset <= text.len(), "offset past the end");
            match request {
                Err(v) => assert!(
                    matches!(
                        v.kind(),
                        ViolationKind::MalformedSessionProperties
                            | ViolationKind::MessageTooLarge { .. }
                    ),
                    "sp refused as {v}"
                ),
                Ok(_) => panic!("the request accepted an sp the reader refuses"),
            }
            Err(e.offset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::violation::Field;

    #[test]
    fn section_3_message_target_accepts_user_ping_and_rejects_unknown_type() {
        assert_eq!(message(&[0x00, 0x38, 0x01]).verdict.messages, 1);
        let out = message(&[0x3f, 1, 2]);
        assert_eq!(out.verdict.messages, 0);
        assert_eq!(
            out.violation,
            Some(Violation::new(ViolationKind::UnknownType(0x3f), 0))
        );
        assert_eq!(
            message(&[]).violation,
            Some(Violation::new(ViolationKind::EmptyMessage, 0))
        );
    }

    #[test]
    fn section_6_http_body_target_on_observed_and_broken_bodies() {
        assert_eq!(http_body(b"AAAAAgA4AQ==").verdict.messages, 1);
        assert_eq!(
            http_body(b"AAAAAgA4AQ").violation,
            Some(Violation::new(ViolationKind::InvalidBase64, 8))
        );
        assert_eq!(
            http_body(b"AAAA").violation,
            Some(Violation::new(
                ViolationKind::Truncated(Field::LengthPrefix),
                0
            ))
        );
    }

    #[test]
    fn section_6_incremental_layout_and_chunk_sizes() {
        assert_eq!(split_incremental(&[]), (0, &[][..], &[][..]));
        assert_eq!(split_incremental(&[0x02, 3]), (0x02, &[3][..], &[][..]));
        assert_eq!(
            split_incremental(b"\x21\x05AAAA"),
            (0x21, &b"\x05"[..], &b"AAAA"[..])
        );
        assert_eq!(
            (chunk_size(0x7f), chunk_size(0x81), chunk_size(0xff)),
            (127, 64, 8128)
        );
        let out = incremental(b"\x12\x01\x00AAAAAgA4AQ==");
        assert_eq!((out.verdict.messages, out.violation), (1, None));
        // Every size zero: empty feeds, then the text whole.
        let out = incremental(b"\x03\x00\x00\x00AAAAAgA4AQ==");
        assert_eq!((out.verdict.messages, out.violation), (1, None));
    }

    #[test]
    fn incremental_under_tight_limits_reaches_the_batch_limit() {
        let body = polling::encode_body(&vec![Message::Close; 8]).unwrap();
        let mut input = vec![0x11, 0x03];
        input.extend_from_slice(body.as_bytes());
        assert_eq!(incremental(&input).verdict.messages, 8);
        let tight = polling::decode_body(body.as_bytes(), &tight_limits(0x11));
        assert_eq!(tight.close_reason(), Some(CloseReason::MessageTooLarge));
    }

    #[test]
    fn roundtrip_target_accepts_any_input() {
        for data in [&[][..], &[7; 40], b"\x07\x01\x02hello\x03world"] {
            let out = roundtrip(data);
            assert_eq!((out.verdict, out.violation), (Verdict::accept(1), None));
        }
    }

    #[test]
    fn mutate_base64_mutates_the_decoded_batch_and_re_encodes() {
        let mut data = vec![0u8; 64];
        data[..12].copy_from_slice(b"AAAAAgA4AQ==");
        // A mutation that appends a CLOSE_REQUEST frame to the decoded batch.
        let n = mutate_base64(&mut data, 12, 64, 1, 0, |buf, size, max| {
            let frame = [0, 0, 0, 0, 0x1d];
            assert!(size + frame.len() <= max);
            buf[size..size + frame.len()].copy_from_slice(&frame);
            size + frame.len()
        });
        let out = http_body(&data[..n]);
        assert_eq!((out.verdict.messages, out.violation), (2, None));
        // Seed 0 mutates the text itself.
        let n = mutate_base64(&mut data, n, 64, 0, 0, |buf, size, _| {
            buf[0] = b'*';
            size
        });
        assert_eq!(
            http_body(&data[..n]).violation,
            Some(Violation::new(ViolationKind::InvalidBase64, 0))
        );
    }

    #[test]
    fn mutate_base64_keeps_the_header_and_stays_within_max_size() {
        let mut data = vec![0u8; 20];
        data[..9].copy_from_slice(b"\x01\x05AAAAAAA");
        // Not base64 after the header: plain mutation.
        let n = mutate_base64(&mut data, 9, 20, 1, 2, |_, size, _| size - 1);
        assert_eq!(n, 8);
        data[..6].copy_from_slice(b"\x01\x05AAAA");
        let n = mutate_base64(&mut data, 6, 20, 1, 2, |_, _, max| max);
        assert!(n <= 20);
        assert_eq!(&data[..2], b"\x01\x05");
        assert!(STANDARD.decode(&data[2..n]).is_ok());
    }
}
