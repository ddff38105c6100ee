//! Byte-building helpers and the "every way" runner shared by the MQTT test
//! binaries: every input is decoded whole, fed to the streaming decoder in
//! one chunk, byte by byte, and through a caller-owned buffer, and the
//! results must agree.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use sessionwire::mqtt::{packets, Decoder, Packet, Sender, Version};
use sessionwire::{Field, Limits, Violation, ViolationKind};

/// A variable byte integer.
pub fn vbi(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A packet: first byte, remaining length, body.
pub fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    [&[first][..], &vbi(body.len()), body].concat()
}

/// A length-prefixed string or binary field.
pub fn s(x: impl AsRef<[u8]>) -> Vec<u8> {
    let x = x.as_ref();
    [&(x.len() as u16).to_be_bytes()[..], x].concat()
}

/// A property block: its length, then the properties.
pub fn props(p: &[u8]) -> Vec<u8> {
    [&vbi(p.len())[..], p].concat()
}

/// A minimal MQTT 3.1.1 CONNECT (clean session, client id "c").
pub fn connect_v311() -> Vec<u8> {
    pkt(0x10, &[s("MQTT"), vec![4, 0x02, 0, 60], s("c")].concat())
}

/// A minimal MQTT 5.0 CONNECT (clean start, no properties, client id "c").
pub fn connect_v5() -> Vec<u8> {
    pkt(0x10, &[s("MQTT"), vec![5, 0x02, 0, 60, 0], s("c")].concat())
}

/// How a stream is decoded.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A server's decoder: CONNECT first.
    Server,
    /// A known version and sender.
    Known(Version, Sender),
}

fn decoder(mode: Mode, limits: &Limits) -> Decoder {
    match mode {
        Mode::Server => Decoder::server(limits),
        Mode::Known(v, from) => Decoder::new(v, from, limits),
    }
}

/// What a stream decodes to: the packets, then the violation, if any. A
/// stream that ends inside a packet ends with a truncated violation at its
/// end, as [`packets`] reports it.
pub type Outcome = (Vec<Packet>, Option<Violation>);

/// Feeds `chunks` to a streaming decoder.
pub fn feed_chunks<'a>(
    mode: Mode,
    limits: &Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome {
    let mut d = decoder(mode, limits);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut input = chunk;
        loop {
            match d.feed(&mut input) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(v) => return (out, Some(v)),
            }
            // Never more than one packet is kept.
            assert!(d.buffered() <= limits.max_message_size());
        }
    }
    let tail = (d.buffered() > 0).then(|| {
        Violation::new(
            ViolationKind::Truncated(Field::Named("packet")),
            d.offset() + d.buffered(),
        )
    });
    (out, tail)
}

/// Decodes `stream` with a caller-owned buffer filled in one go.
fn owned_buffer(mode: Mode, limits: &Limits, stream: &[u8]) -> Outcome {
    let mut d = decoder(mode, limits);
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => break,
            Err(v) => return (out, Some(v)),
        }
    }
    let tail = (!buf.is_empty()).then(|| {
        Violation::new(
            ViolationKind::Truncated(Field::Named("packet")),
            d.offset() + buf.len(),
        )
    });
    (out, tail)
}

/// Decodes `stream` every way and checks the results agree.
pub fn decode_with(mode: Mode, limits: &Limits, stream: &[u8]) -> Outcome {
    let whole = Bytes::copy_from_slice(stream);
    let version = match mode {
        Mode::Server => None,
        Mode::Known(v, _) => Some(v),
    };
    let from = match mode {
        Mode::Server => Sender::Client,
        Mode::Known(_, from) => from,
    };
    let mut one_shot = (Vec::new(), None);
    for step in packets(&whole, version, from, limits) {
        match step {
            Ok(p) => one_shot.0.push(p),
            Err(v) => one_shot.1 = Some(v),
        }
    }
    let one_chunk = feed_chunks(mode, limits, [stream]);
    assert_eq!(one_chunk, one_shot, "one chunk vs whole");
    let bytewise = feed_chunks(mode, limits, stream.chunks(1));
    assert_eq!(bytewise, one_shot, "byte by byte vs whole");
    let owned = owned_buffer(mode, limits, stream);
    assert_eq!(owned, one_shot, "caller-owned buffer vs whole");
    one_shot
}

/// [`decode_with`] under the default limits.
pub fn decode(mode: Mode, stream: &[u8]) -> Outcome {
    decode_with(mode, &Limits::default(), stream)
}

/// The one packet `stream` holds, sent by `from` in `version`; also checks it
/// re-encodes to the same bytes.
pub fn one(version: Version, from: Sender, stream: &[u8]) -> Packet {
    let (mut packets, violation) = decode(Mode::Known(version, from), stream);
    assert_eq!(violation, None, "{stream:02x?}");
    assert_eq!(packets.len(), 1);
    let p = packets.remove(0);
    let again = p.to_bytes(version).expect("encodes");
    assert_eq!(&again[..], stream, "re-encoding {p:?}");
    assert_eq!(p.encoded_len(version), Ok(stream.len()));
    p
}

/// The violation `stream` (sent by `from` in `version`) ends with.
pub fn fault(version: Version, from: Sender, stream: &[u8]) -> Violation {
    let (_, violation) = decode(Mode::Known(version, from), stream);
    violation.unwrap_or_else(|| panic!("{stream:02x?} must be rejected"))
}
