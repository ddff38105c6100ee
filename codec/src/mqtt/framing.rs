//! The fixed header of a packet: its first byte, its remaining length, and
//! its size against the limit, before any of its body is needed.

use super::fault::MqttFault;
use super::types::{PacketType, Sender, Version};
use super::wire::{fault, read_var_int, VarInt};
use crate::violation::{Field, Violation, ViolationKind};

/// Checks the first byte of a packet: a type that exists in `version`, that
/// `from` sends, with the flags it requires. `version` is `None` before the
/// CONNECT. Offsets are 0: the first byte.
#[inline]
pub(crate) fn check_first_byte(
    byte: u8,
    version: Option<Version>,
    from: Sender,
) -> Result<PacketType, Violation> {
    let n = byte >> 4;
    // PUBLISH first: it is most of what flows.
    if n == 3 {
        if byte & 0x06 == 0x06 {
            return Err(fault(MqttFault::Qos3, 0));
        }
        if byte & 0x0e == 0x08 {
            return Err(fault(MqttFault::DupWithQos0, 0));
        }
        return Ok(PacketType::Publish);
    }
    let ty = match PacketType::from_u8(n) {
        Some(PacketType::Auth) if version == Some(Version::V311) => None,
        t => t,
    };
    let Some(ty) = ty else {
        return Err(fault(MqttFault::ReservedPacketType(n), 0));
    };
    if !ty.sent_by(from) {
        return Err(fault(MqttFault::UnexpectedPacket(ty), 0));
    }
    if byte & 0x0f != ty.fixed_flags() {
        return Err(fault(MqttFault::ReservedFlags(byte), 0));
    }
    Ok(ty)
}

/// Where a packet stands in the CONNECT order a server enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// No order is checked (a known version, or a client's decoder).
    Free,
    /// Nothing was received yet: the packet must be a CONNECT (MQTT-3.1.0-1).
    FirstConnect,
    /// The CONNECT was received: another one is a protocol error (MQTT-3.1.0-2).
    AfterConnect,
}

/// How much of a packet the start of a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Not the whole packet: its total size once the fixed header is known.
    Incomplete(Option<usize>),
    /// A whole packet: fixed header size and total size.
    Complete(usize, usize),
}

/// Reads the fixed header at the start of `input`: checks the first byte as
/// soon as it is there, then the remaining length (at most four bytes, in
/// its shortest form) and the total size against `max` before any of the
/// body is needed. Offsets count from `input`'s start.
#[inline(always)]
pub(crate) fn framing(
    input: &[u8],
    version: Option<Version>,
    from: Sender,
    order: Order,
    max: usize,
) -> Result<Framing, Violation> {
    let Some(&first) = input.first() else {
        return Ok(Framing::Incomplete(None));
    };
    let ty = check_first_byte(first, version, from)?;
    let out_of_order = match order {
        Order::Free => false,
        Order::FirstConnect => ty != PacketType::Connect,
        Order::AfterConnect => ty == PacketType::Connect,
    };
    if out_of_order {
        return Err(fault(MqttFault::UnexpectedPacket(ty), 0));
    }
    const FIELD: Field = Field::Named("remaining length");
    let (remaining, n) = match read_var_int(&input[1..]) {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(Framing::Incomplete(None)),
        VarInt::TooLong => return Err(fault(MqttFault::VarIntTooLong(FIELD), 1)),
        VarInt::NotMinimal(n) => return Err(fault(MqttFault::VarIntNotMinimal(FIELD), n)),
    };
    // At most 1 + 4 + 268,435,455: no overflow.
    let total = 1 + n + remaining;
    if total > max {
        return Err(Violation::new(
            ViolationKind::MessageTooLarge {
                size: total as u64,
                limit: max,
            },
            0,
        ));
    }
    if input.len() < total {
        return Ok(Framing::Incomplete(Some(total)));
    }
    Ok(Framing::Complete(1 + n, total))
}

/// Frames `input` as exactly one whole packet, for the one-packet decodes
/// ([`Packet::decode`](super::Packet::decode),
/// [`PacketRef::decode`](super::PacketRef::decode)): the size of its fixed
/// header. Input shorter than the packet is truncated; longer, it has
/// trailing bytes.
#[inline]
pub(crate) fn frame_whole(
    input: &[u8],
    version: Version,
    from: Sender,
) -> Result<usize, Violation> {
    match framing(input, Some(version), from, Order::Free, usize::MAX)? {
        Framing::Complete(_, total) if total < input.len() => {
            Err(Violation::new(ViolationKind::TrailingBytes, total))
        }
        Framing::Complete(header, _) => Ok(header),
        Framing::Incomplete(_) => Err(super::wire::truncated("packet", input.len())),
    }
}
