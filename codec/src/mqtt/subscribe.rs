//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
//!
//! The topic filters of a decoded SUBSCRIBE or UNSUBSCRIBE are checked when
//! the packet is decoded and kept as one view of it; [`Subscriptions`] and
//! [`TopicFilters`] read them lazily.

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::property::{Properties, Scope};
use super::types::{EncodeError, PacketType, QoS, Sender, Version};
use super::wire::{fault, Reader, Str};
use crate::violation::Violation;

/// The options of one subscription. In 3.1.1 only the QoS exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// The highest QoS the client accepts.
    pub qos: QoS,
    /// 5.0: do not send the client its own publications.
    pub no_local: bool,
    /// 5.0: keep the retain flag as published.
    pub retain_as_published: bool,
    /// 5.0: 0 send retained messages, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// Options with this QoS and everything else off.
    pub const fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    fn to_byte(self) -> u8 {
        (self.qos as u8)
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling & 3) << 4)
    }

    fn from_byte(b: u8) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce),
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling: (b >> 4) & 3,
        }
    }
}

/// Reads one option byte and checks it (for a filter at `filter_at`).
fn read_options(
    r: &mut Reader<'_>,
    version: Version,
    shared: bool,
) -> Result<SubscriptionOptions, Violation> {
    let at = r.pos();
    let b = r.u8("subscription options")?;
    let reserved = match version {
        Version::V311 => 0xfc,
        Version::V5 => 0xc0,
    };
    if b & reserved != 0 || b & 3 == 3 {
        return Err(fault(MqttFault::SubscriptionOptions(b), at));
    }
    let o = SubscriptionOptions::from_byte(b);
    if o.retain_handling == 3 {
        return Err(fault(MqttFault::RetainHandling3, at));
    }
    if o.no_local && shared {
        return Err(fault(MqttFault::NoLocalOnShared, at));
    }
    Ok(o)
}

/// The entries of a checked list, each read by `read`. The list was checked
/// when it was decoded or built, so reading cannot fail; if it did, the
/// iteration would simply end.
fn entries<'a, T>(
    raw: &'a Bytes,
    mut read: impl FnMut(&mut Reader<'_>) -> Option<T> + 'a,
) -> impl Iterator<Item = T> + 'a {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let mut r = Reader::new(raw, pos, raw.len());
        if r.is_empty() {
            return None;
        }
        let entry = read(&mut r)?;
        pos = r.pos();
        Some(entry)
    })
}

/// The checked topic filters and options of a SUBSCRIBE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subscriptions(Bytes);

impl Subscriptions {
    /// Subscriptions to send, in order; fails if there is none.
    pub fn new<'a>(
        subscriptions: impl IntoIterator<Item = &'a (Str, SubscriptionOptions)>,
    ) -> Result<Subscriptions, EncodeError> {
        let mut buf = Vec::new();
        for (filter, options) in subscriptions {
            filter.put(&mut buf);
            buf.put_u8(options.to_byte());
        }
        if buf.is_empty() {
            return Err(EncodeError::Empty);
        }
        Ok(Subscriptions(Bytes::from(buf)))
    }

    /// The filters and their options, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (Str, SubscriptionOptions)> + '_ {
        entries(&self.0, |r| {
            let filter = r.string("topic filter").ok()?;
            let options = SubscriptionOptions::from_byte(r.u8("subscription options").ok()?);
            Some((filter, options))
        })
    }

    /// The raw bytes (filters with their options).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A request to subscribe to one or more topic filters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// SUBSCRIBE properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The subscriptions (at least one).
    pub subscriptions: Subscriptions,
}

/// Reads a non-zero packet identifier.
fn packet_id(r: &mut Reader<'_>) -> Result<u16, Violation> {
    let at = r.pos();
    let id = r.u16("packet identifier")?;
    if id == 0 {
        return Err(fault(MqttFault::PacketIdZero, at));
    }
    Ok(id)
}

/// Reads a 5.0 property block, or nothing in 3.1.1.
fn properties(
    r: &mut Reader<'_>,
    version: Version,
    scope: Scope,
    packet: PacketType,
    from: Sender,
) -> Result<Properties, Violation> {
    match version {
        Version::V311 => Ok(Properties::new()),
        Version::V5 => Ok(Properties::read(r, scope, packet, from)?.0),
    }
}

/// Bytes of a packet identifier and, in 5.0, a property block: the head
/// every packet of this file starts with.
fn head_len(version: Version, properties: &Properties) -> usize {
    2 + match version {
        Version::V311 => 0,
        Version::V5 => properties.wire_len(),
    }
}

/// Writes the head (see [`head_len`]) and then `rest`.
fn put_packet<B: BufMut>(
    buf: &mut B,
    version: Version,
    packet_id: u16,
    properties: &Properties,
    rest: &[u8],
) {
    buf.put_u16(packet_id);
    if version == Version::V5 {
        properties.put(buf);
    }
    buf.put_slice(rest);
}

/// Reads the head and a non-empty list of entries (each checked by `entry`)
/// of a SUBSCRIBE or UNSUBSCRIBE; the list is returned as one view.
fn read_list(
    r: &mut Reader<'_>,
    version: Version,
    scope: Scope,
    packet: PacketType,
    empty: MqttFault,
    mut entry: impl FnMut(&mut Reader<'_>) -> Result<(), Violation>,
) -> Result<(u16, Properties, Bytes), Violation> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, version, scope, packet, Sender::Client)?;
    if r.is_empty() {
        return Err(fault(empty, r.pos()));
    }
    let mut list = r.clone();
    while !list.is_empty() {
        entry(&mut list)?;
    }
    Ok((packet_id, properties, r.rest()))
}

impl Subscribe {
    pub(crate) fn read(r: &mut Reader<'_>, version: Version) -> Result<Subscribe, Violation> {
        let (packet_id, properties, list) = read_list(
            r,
            version,
            Scope::SUBSCRIBE,
            PacketType::Subscribe,
            MqttFault::NoSubscriptions,
            |list| {
                let shared = list.topic_filter(version == Version::V5)?;
                read_options(list, version, shared).map(drop)
            },
        )?;
        Ok(Subscribe {
            packet_id,
            properties,
            subscriptions: Subscriptions(list),
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        head_len(version, &self.properties) + self.subscriptions.0.len()
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        put_packet(
            buf,
            version,
            self.packet_id,
            &self.properties,
            &self.subscriptions.0,
        );
    }
}

/// The server's answer to a SUBSCRIBE: one reason code per subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// SUBACK properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// One code per subscription, in order (granted QoS 0 to 2, or a failure).
    pub codes: Bytes,
}

/// MQTT 5.0 SUBACK reason codes (also what the session registry lets a
/// broker answer).
pub(crate) const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// MQTT 3.1.1 SUBACK return codes.
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
/// MQTT 5.0 UNSUBACK reason codes (also what the session registry lets a
/// broker answer).
pub(crate) const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

/// Reads the rest as reason codes, each in `allowed`.
fn codes(r: &mut Reader<'_>, allowed: &[u8], packet: PacketType) -> Result<Bytes, Violation> {
    let start = r.pos();
    let at = r.buf_pos();
    let codes = r.rest_slice();
    if let Some(i) = codes.iter().position(|c| !allowed.contains(c)) {
        return Err(fault(
            MqttFault::ReasonCode {
                packet,
                code: codes[i],
            },
            start + i,
        ));
    }
    Ok(r.view(at, codes.len()))
}

impl SubAck {
    pub(crate) fn read(r: &mut Reader<'_>, version: Version) -> Result<SubAck, Violation> {
        let packet_id = packet_id(r)?;
        let properties = properties(
            r,
            version,
            Scope::SUBACK,
            PacketType::SubAck,
            Sender::Server,
        )?;
        let allowed = match version {
            Version::V311 => SUBACK_V311,
            Version::V5 => SUBACK_V5,
        };
        let codes = codes(r, allowed, PacketType::SubAck)?;
        Ok(SubAck {
            packet_id,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        head_len(version, &self.properties) + self.codes.len()
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        put_packet(buf, version, self.packet_id, &self.properties, &self.codes);
    }
}

/// The checked topic filters of an UNSUBSCRIBE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TopicFilters(Bytes);

impl TopicFilters {
    /// Filters to send, in order; fails if there is none.
    pub fn new<'a>(
        filters: impl IntoIterator<Item = &'a Str>,
    ) -> Result<TopicFilters, EncodeError> {
        let mut buf = Vec::new();
        for filter in filters {
            filter.put(&mut buf);
        }
        if buf.is_empty() {
            return Err(EncodeError::Empty);
        }
        Ok(TopicFilters(Bytes::from(buf)))
    }

    /// The filters, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = Str> + '_ {
        entries(&self.0, |r| r.string("topic filter").ok())
    }

    /// The raw bytes of the filters.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A request to remove one or more subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unsubscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// UNSUBSCRIBE properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The topic filters (at least one).
    pub filters: TopicFilters,
}

impl Unsubscribe {
    pub(crate) fn read(r: &mut Reader<'_>, version: Version) -> Result<Unsubscribe, Violation> {
        let (packet_id, properties, list) = read_list(
            r,
            version,
            Scope::UNSUBSCRIBE,
            PacketType::Unsubscribe,
            MqttFault::NoUnsubscriptions,
            |list| list.topic_filter(version == Version::V5).map(drop),
        )?;
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters: TopicFilters(list),
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        head_len(version, &self.properties) + self.filters.0.len()
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        put_packet(
            buf,
            version,
            self.packet_id,
            &self.properties,
            &self.filters.0,
        );
    }
}

/// The server's answer to an UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// UNSUBACK properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// One reason code per filter (5.0; empty in 3.1.1).
    pub codes: Bytes,
}

impl UnsubAck {
    pub(crate) fn read(r: &mut Reader<'_>, version: Version) -> Result<UnsubAck, Violation> {
        let packet_id = packet_id(r)?;
        if version == Version::V311 {
            r.finish()?;
            return Ok(UnsubAck {
                packet_id,
                properties: Properties::new(),
                codes: Bytes::new(),
            });
        }
        let properties = properties(
            r,
            version,
            Scope::UNSUBACK,
            PacketType::UnsubAck,
            Sender::Server,
        )?;
        let codes = codes(r, UNSUBACK_V5, PacketType::UnsubAck)?;
        Ok(UnsubAck {
            packet_id,
            properties,
            codes,
        })
    }

    /// In 3.1.1 the codes (and properties) are left out.
    pub(crate) fn body_len(&self, version: Version) -> usize {
        match version {
            Version::V311 => 2,
            Version::V5 => head_len(version, &self.properties) + self.codes.len(),
        }
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        let codes = match version {
            Version::V311 => &[][..],
            Version::V5 => &self.codes[..],
        };
        put_packet(buf, version, self.packet_id, &self.properties, codes);
    }
}
