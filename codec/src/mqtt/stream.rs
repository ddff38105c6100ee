//! Framing a byte stream into packets: the fixed header, the size limit, and
//! the ways to walk a stream ([`packets`] and [`packet_refs`] over one
//! buffer, [`Decoder`] over chunks).

use bytes::{Bytes, BytesMut};

use super::borrowed::PacketRef;
use super::framing::{framing, Framing, Order};
use super::packet::Packet;
use super::types::{Sender, Version};
use super::wire;
use crate::limits::Limits;
use crate::violation::Violation;

/// Walks a buffer holding a byte stream packet by packet; see [`packets`].
#[derive(Debug)]
pub struct Packets<'a> {
    input: &'a Bytes,
    walk: Walk,
}

/// Walks a byte stream packet by packet without taking views; see
/// [`packet_refs`].
#[derive(Debug)]
pub struct PacketRefs<'a> {
    input: &'a [u8],
    walk: Walk,
}

/// Where a walk over a stream held in one buffer stands.
#[derive(Debug)]
struct Walk {
    pos: usize,
    version: Option<Version>,
    from: Sender,
    order: Order,
    max: usize,
    done: bool,
}

impl Walk {
    fn new(version: Option<Version>, from: Sender, limits: &Limits) -> Walk {
        Walk {
            pos: 0,
            version,
            from,
            order: if version.is_none() {
                Order::FirstConnect
            } else {
                Order::Free
            },
            max: limits.max_message_size(),
            done: false,
        }
    }

    /// The next packet of `input`, decoded by `decode` (given where the
    /// packet starts, its fixed header size, its total size, the version
    /// and the sender); `connect` gives a CONNECT's version.
    #[inline]
    fn next<T>(
        &mut self,
        input: &[u8],
        decode: impl FnOnce(usize, usize, usize, Version, Sender) -> Result<T, Violation>,
        connect: impl FnOnce(&T) -> Option<Version>,
    ) -> Option<Result<T, Violation>> {
        if self.done || self.pos == input.len() {
            return None;
        }
        let rest = &input[self.pos..];
        let step = match framing(rest, self.version, self.from, self.order, self.max) {
            Ok(Framing::Complete(header, total)) => {
                let version = self.version.unwrap_or(Version::V311);
                decode(self.pos, header, total, version, self.from).map(|p| (p, total))
            }
            Ok(Framing::Incomplete(_)) => Err(wire::truncated("packet", rest.len())),
            Err(v) => Err(v),
        };
        match step {
            Ok((packet, total)) => {
                self.pos += total;
                if self.order == Order::FirstConnect {
                    if let Some(version) = connect(&packet) {
                        self.version = Some(version);
                        self.order = Order::AfterConnect;
                    }
                }
                Some(Ok(packet))
            }
            Err(v) => {
                self.done = true;
                Some(Err(v.shifted(self.pos)))
            }
        }
    }
}

/// The packets of `input`, a byte stream sent by `from`, each a view of
/// `input`. With `version` `None` the stream is a client's and must start
/// with its CONNECT, which sets the version; with a version, packets are
/// taken as they come.
///
/// Iteration ends after the first violation; a stream that ends inside a
/// packet ends with a truncated violation. Offsets count from `input`'s start.
pub fn packets<'a>(
    input: &'a Bytes,
    version: Option<Version>,
    from: Sender,
    limits: &Limits,
) -> Packets<'a> {
    Packets {
        input,
        walk: Walk::new(version, from, limits),
    }
}

/// [`packets`] without views: each packet is a [`PacketRef`] borrowing
/// `input`, with the same checks, violations and offsets.
pub fn packet_refs<'a>(
    input: &'a [u8],
    version: Option<Version>,
    from: Sender,
    limits: &Limits,
) -> PacketRefs<'a> {
    PacketRefs {
        input,
        walk: Walk::new(version, from, limits),
    }
}

impl Packets<'_> {
    /// The version in force: the one given, or the CONNECT's once decoded.
    pub fn version(&self) -> Option<Version> {
        self.walk.version
    }

    /// The offset of the next packet.
    pub fn offset(&self) -> usize {
        self.walk.pos
    }
}

impl Iterator for Packets<'_> {
    type Item = Result<Packet, Violation>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let input = self.input;
        self.walk.next(
            input,
            |start, header, total, version, from| {
                Packet::decode_body(input, start, header, total, version, from)
            },
            |p| match p {
                Packet::Connect(c) => Some(c.version),
                _ => None,
            },
        )
    }
}

impl<'a> PacketRefs<'a> {
    /// The version in force: the one given, or the CONNECT's once decoded.
    pub fn version(&self) -> Option<Version> {
        self.walk.version
    }

    /// The offset of the next packet.
    pub fn offset(&self) -> usize {
        self.walk.pos
    }
}

impl<'a> Iterator for PacketRefs<'a> {
    type Item = Result<PacketRef<'a>, Violation>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let input = self.input;
        self.walk.next(
            input,
            |start, header, total, version, from| {
                PacketRef::decode_body(input, start, header, total, version, from)
            },
            |p| match p {
                PacketRef::Connect { version, .. } => Some(*version),
                _ => None,
            },
        )
    }
}

/// A streaming decoder: feed it bytes in chunks of any size and it answers
/// "need more", a packet, or a violation.
///
/// It keeps at most one packet, and checks the packet's declared size
/// against [`Limits::max_message_size`] (the whole packet, fixed header
/// included) before it keeps a byte of the body. After a violation it
/// answers with that violation forever. Offsets count from the start of the
/// stream.
///
/// When a chunk holds whole packets, room for the chunk (bounded by the size
/// limit) is reserved once and each packet is split off that buffer, so a
/// decoded packet may keep the buffer alive until it is dropped.
#[derive(Debug)]
pub struct Decoder {
    version: Option<Version>,
    from: Sender,
    order: Order,
    max: usize,
    buf: BytesMut,
    offset: usize,
    /// Boxed: a fault is rare and final, and a registry keeps a decoder
    /// per connection (64 bytes rather than 96).
    failed: Option<Box<Violation>>,
}

impl Decoder {
    /// A server's decoder of what a client sends: the first packet must be a
    /// CONNECT, whose protocol level sets the version; a second CONNECT is
    /// a violation.
    pub fn server(limits: &Limits) -> Decoder {
        Decoder {
            version: None,
            from: Sender::Client,
            order: Order::FirstConnect,
            max: limits.max_message_size(),
            buf: BytesMut::new(),
            offset: 0,
            failed: None,
        }
    }

    /// A decoder of packets sent by `from` on a connection of a known
    /// version (a test client decoding a server: `Sender::Server`).
    pub fn new(version: Version, from: Sender, limits: &Limits) -> Decoder {
        Decoder {
            version: Some(version),
            order: Order::Free,
            ..Decoder::server(limits)
        }
        .from(from)
    }

    fn from(mut self, from: Sender) -> Decoder {
        self.from = from;
        self
    }

    /// The version in force, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Bytes of the stream consumed into whole packets so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes kept of a packet not yet whole.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The violation that stopped the decoder, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.failed.as_deref().copied()
    }

    /// Decodes the next packet from a buffer the caller owns (as a
    /// `tokio_util` codec does): `Ok(None)` if it does not hold a whole
    /// packet yet, in which case room for the rest of the packet (bounded by
    /// the size limit) is reserved. A decoded packet is split off `buf` and
    /// is a view of it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, Violation> {
        if let Some(v) = self.violation() {
            return Err(v);
        }
        let framed = framing(buf, self.version, self.from, self.order, self.max);
        let (header, total) = match framed {
            Ok(Framing::Complete(header, total)) => (header, total),
            Ok(Framing::Incomplete(total)) => {
                if let Some(total) = total {
                    buf.reserve(total - buf.len());
                }
                return Ok(None);
            }
            Err(v) => return Err(self.fail(v)),
        };
        let packet = buf.split_to(total).freeze();
        self.decode_framed(&packet, header, total)
    }

    /// Decodes `packet`, one whole packet framed by [`framing`] (`header`
    /// and `total` bytes), and moves past it.
    #[inline]
    fn decode_framed(
        &mut self,
        packet: &Bytes,
        header: usize,
        total: usize,
    ) -> Result<Option<Packet>, Violation> {
        let decoded = Packet::decode_body(
            packet,
            0,
            header,
            total,
            self.version.unwrap_or(Version::V311),
            self.from,
        );
        match decoded {
            Ok(p) => {
                if let (Packet::Connect(c), Order::FirstConnect) = (&p, self.order) {
                    self.version = Some(c.version);
                    self.order = Order::AfterConnect;
                }
                self.offset += total;
                Ok(Some(p))
            }
            Err(v) => Err(self.fail(v)),
        }
    }

    /// Takes from the front of `input` only the bytes the current packet
    /// still needs, and returns the packet once it is whole. `Ok(None)`
    /// means `input` was used up; call again while `input` is not empty.
    pub fn feed(&mut self, input: &mut &[u8]) -> Result<Option<Packet>, Violation> {
        if self.buf.is_empty() && self.failed.is_none() {
            // A packet starts at `input`: its fixed header is read there, so
            // the size is checked before a byte is kept, and a packet that
            // `input` holds whole is copied in one go and framed only once.
            match framing(input, self.version, self.from, self.order, self.max) {
                Ok(Framing::Complete(header, total)) => {
                    // Room for the packets that follow in `input` too (at
                    // most the size limit), so that the buffer is not
                    // grown again for each of them: it only ever holds
                    // one packet.
                    self.buf.reserve(input.len().min(self.max));
                    self.buf.extend_from_slice(&input[..total]);
                    *input = &input[total..];
                    let packet = self.take_packet(total, input);
                    return self.decode_framed(&packet, header, total);
                }
                Ok(Framing::Incomplete(Some(total))) => {
                    // All of `input` belongs to this packet, whose size
                    // was checked.
                    self.buf.reserve(total);
                    self.buf.extend_from_slice(input);
                    *input = &[];
                    return Ok(None);
                }
                // `input` holds at most part of a fixed header: read below,
                // one byte at a time.
                Ok(Framing::Incomplete(None)) => {}
                Err(v) => return Err(self.fail(v)),
            }
        }
        loop {
            if let Some(v) = self.violation() {
                return Err(v);
            }
            let framed = framing(&self.buf, self.version, self.from, self.order, self.max);
            let need = match framed {
                Ok(Framing::Complete(header, total)) => {
                    let packet = self.take_packet(total, input);
                    return self.decode_framed(&packet, header, total);
                }
                Ok(Framing::Incomplete(Some(total))) => total - self.buf.len(),
                // The fixed header is read one byte at a time, so that
                // nothing past it is kept before the size is checked.
                Ok(Framing::Incomplete(None)) => 1,
                Err(v) => return Err(self.fail(v)),
            };
            if input.is_empty() {
                return Ok(None);
            }
            let take = need.min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            *input = &input[take..];
        }
    }

    /// Splits the whole packet of `total` bytes off the buffer. Once the
    /// buffer is empty and `input` used up, the buffer lets go of its
    /// allocation (an empty `BytesMut` split from one still holds it): a
    /// connection between packets keeps nothing, and the packet's bytes
    /// live as long as the packet.
    fn take_packet(&mut self, total: usize, input: &[u8]) -> Bytes {
        let packet = self.buf.split_to(total).freeze();
        if self.buf.is_empty() && input.is_empty() {
            self.buf = BytesMut::new();
        }
        packet
    }

    fn fail(&mut self, v: Violation) -> Violation {
        let v = v.shifted(self.offset);
        self.failed = Some(Box::new(v));
        v
    }
}
