//! One client's session: what outlives its connections (in-flight
//! identifiers, the outbound queue, the will, the expiry) and the rules
//! that turn a decoded PUBLISH into a [`Message`] and a [`Message`] into a
//! PUBLISH for this client.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::clock::Tick;
use super::event::{Delivery, Message};
use super::inflight::Inflight;
use super::queue::{Queue, Queued};
use super::table::Keyed;
use crate::mqtt::wire::{put_var_int, var_int_len};
use crate::mqtt::{
    Properties, Property, PropertyId, Publish, QoS, Str, Version, Will, MAX_REMAINING_LENGTH,
};

/// A will, kept from the CONNECT until the connection ends.
#[derive(Clone, Debug)]
pub(super) struct PendingWill {
    pub(super) message: Message,
    /// 5.0 will delay interval.
    pub(super) delay: Duration,
}

impl PendingWill {
    /// The will of a CONNECT received at `now`.
    pub(super) fn of(will: Will, now: Instant) -> PendingWill {
        let delay = match will.properties.get(PropertyId::WillDelayInterval) {
            Some(Property::WillDelayInterval(s)) => Duration::from_secs(u64::from(s)),
            _ => Duration::ZERO,
        };
        let (properties, expires_at) = forwarded(&will.properties, now);
        PendingWill {
            message: Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                properties,
                expires_at,
            },
            delay,
        }
    }
}

/// The properties of a PUBLISH (or will) that go on to subscribers, and
/// when the message expires.
pub(super) fn forwarded(properties: &Properties, now: Instant) -> (Properties, Option<Instant>) {
    if properties.is_empty() {
        return (Properties::new(), None);
    }
    let mut expires_at = None;
    let mut builder = Some(Properties::builder());
    for p in properties.iter() {
        match p {
            Property::MessageExpiryInterval(s) => {
                expires_at = now.checked_add(Duration::from_secs(u64::from(s)));
            }
            Property::PayloadFormatIndicator(_)
            | Property::ContentType(_)
            | Property::ResponseTopic(_)
            | Property::CorrelationData(_)
            | Property::UserProperty(..) => {
                // Decoded properties always encode again.
                builder = builder.and_then(|b| b.push(p).ok());
            }
            _ => {}
        }
    }
    (
        builder.map_or_else(Properties::new, |b| b.build()),
        expires_at,
    )
}

/// One client's session. What most sessions never use (a will, messages
/// in flight or queued) is in [`Rare`], allocated only while it holds
/// something: an idle session is this and its client identifier.
#[derive(Debug)]
pub(super) struct Session {
    /// Its client identifier: the one copy the registry keeps (its table
    /// finds the session by it).
    pub(super) client_id: Box<str>,
    /// The slot of its connection in the registry; `None` while offline.
    pub(super) conn: Option<u32>,
    /// Since when it is offline; it ends `expiry` later.
    pub(super) offline_since: Option<Tick>,
    /// The deadline filed in the registry's timer heap.
    pub(super) filed: Option<Tick>,
    /// How long it outlives a connection, as granted, in seconds.
    pub(super) expiry: u32,
    /// The client's maximum packet size (5.0), for what we send.
    pub(super) max_packet: Option<NonZeroU32>,
    /// The in-flight window: our cap and the client's receive maximum.
    pub(super) window: u16,
    /// The packet identifier given last to a message sent.
    pub(super) last_id: u16,
    /// Topic aliases the server may set on what it sends its connection
    /// (5.0): the lower of the client's Topic Alias Maximum and ours.
    pub(super) alias_max: u16,
    /// The version of its last connection.
    pub(super) version: Version,
    /// Whether the CONNECT asked for no expiry (a DISCONNECT may not set
    /// one then).
    pub(super) expiry_was_zero: bool,
    /// The rest, while there is any.
    rare: Option<Box<Rare>>,
}

/// The state of a session that most sessions never hold.
#[derive(Debug, Default)]
pub(super) struct Rare {
    /// The will of its connection, while connected.
    pub(super) will: Option<PendingWill>,
    /// A will whose delay runs, and when it is due.
    pub(super) will_due: Option<(Tick, Message)>,
    pub(super) inflight: Inflight,
    pub(super) queue: Queue,
    /// Acknowledgements completed while it held something (the client's
    /// progress, for [`Backlog::acked`](super::Backlog)).
    pub(super) acked: u64,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.will.is_none()
            && self.will_due.is_none()
            && self.inflight.is_empty()
            && self.queue.is_empty()
    }
}

impl Keyed for Session {
    type Key = str;
    fn key(&self) -> &str {
        &self.client_id
    }
}

impl Session {
    /// A new, empty session.
    pub(super) fn new(client_id: &str, version: Version) -> Session {
        Session {
            client_id: client_id.into(),
            conn: None,
            offline_since: None,
            filed: None,
            expiry: 0,
            max_packet: None,
            window: 1,
            last_id: 0,
            alias_max: 0,
            version,
            expiry_was_zero: true,
            rare: None,
        }
    }

    /// Its rare state, made if need be.
    pub(super) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Its rare state, if any.
    pub(super) fn rare_ref(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    /// Its rare state, if any, to change.
    pub(super) fn rare_mut(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// Lets go of the rare state once it holds nothing.
    pub(super) fn trim(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// Messages the server has in flight to the client.
    pub(super) fn outbound_len(&self) -> usize {
        self.rare_ref().map_or(0, |r| r.inflight.outbound_len())
    }

    /// Whether the client's QoS 2 identifier `id` waits for its PUBREL.
    pub(super) fn inbound_contains(&self, id: u16) -> bool {
        self.rare_ref()
            .is_some_and(|r| r.inflight.inbound_contains(id))
    }

    /// Whether no message waits in its queue.
    pub(super) fn queue_is_empty(&self) -> bool {
        self.rare_ref().is_none_or(|r| r.queue.is_empty())
    }

    /// Whether a QoS 1 or 2 message for it goes out at once: connected,
    /// nothing queued before it, room in flight.
    pub(super) fn sends_at_once(&self) -> bool {
        self.conn.is_some()
            && self.queue_is_empty()
            && self.outbound_len() < usize::from(self.window)
    }

    /// When it ends, while offline.
    pub(super) fn ends_at(&self) -> Option<Tick> {
        self.offline_since
            .map(|t| t.after(Duration::from_secs(u64::from(self.expiry))))
    }

    /// The next time something is due: the end of its offline life, or its
    /// delayed will.
    pub(super) fn deadline(&self) -> Option<Tick> {
        let will = self
            .rare_ref()
            .and_then(|r| r.will_due.as_ref())
            .map(|due| due.0);
        match (self.ends_at(), will) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The PUBLISH that carries `item` to this client as its delivery says,
    /// as `id` (0 at QoS 0), at `now`: 5.0 gets the forwarded properties,
    /// the message expiry interval left (rounded up) and the subscription
    /// identifiers. Written in one go from the message's views; `None` when
    /// it is over the client's maximum packet size (MQTT-3.1.2-25) or over
    /// what a packet can hold.
    ///
    /// With `alias` (5.0) it carries that topic alias: with its topic when
    /// `Alias::Set`, in place of it when `Alias::Use`.
    pub(super) fn encode_publish(
        &self,
        item: &Queued,
        id: u16,
        dup: bool,
        now: Instant,
        alias: Option<Alias>,
    ) -> Option<Bytes> {
        let (message, delivery) = (&item.message, &item.delivery);
        let alias = alias.filter(|_| self.version == Version::V5);
        let properties = match self.version {
            Version::V311 => None,
            Version::V5 => Some(match properties(message, delivery, now, alias) {
                Some(p) => p,
                // A property that cannot be written (a subscription
                // identifier out of range): the message's own, and no
                // alias, which would then be missing.
                None if alias.is_none() => message.properties.clone(),
                None => return None,
            }),
        };
        let topic = match alias {
            Some(Alias::Use(_)) => "",
            _ => message.topic.as_str(),
        };
        let qos = delivery.qos;
        let body = 2usize
            .checked_add(topic.len())?
            .checked_add(if qos == QoS::AtMostOnce { 0 } else { 2 })?
            .checked_add(properties.as_ref().map_or(0, Properties::wire_len))?
            .checked_add(message.payload.len())?;
        if body > MAX_REMAINING_LENGTH {
            return None;
        }
        let total = 1 + var_int_len(body) + body;
        if self
            .max_packet
            .is_some_and(|max| u32::try_from(total).map_or(true, |n| n > max.get()))
        {
            return None;
        }
        let mut buf = BytesMut::with_capacity(total);
        let dup = dup && qos != QoS::AtMostOnce;
        buf.put_u8(0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(delivery.retain));
        put_var_int(&mut buf, body);
        // `Str` bounds its length to 65,535.
        buf.put_u16(topic.len() as u16);
        buf.put_slice(topic.as_bytes());
        if qos != QoS::AtMostOnce {
            buf.put_u16(id);
        }
        if let Some(p) = &properties {
            p.put(&mut buf);
        }
        buf.put_slice(&message.payload);
        Some(buf.freeze())
    }
}

/// A topic alias on a PUBLISH the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alias {
    /// The first PUBLISH of its topic: topic and alias, which the client
    /// files.
    Set(u16),
    /// A later one: the alias alone, the topic empty.
    Use(u16),
}

/// The 5.0 properties of a PUBLISH of `message` sent at `now` as `delivery`
/// says, with `alias`; `None` if one cannot be written.
fn properties(
    message: &Message,
    delivery: &Delivery,
    now: Instant,
    alias: Option<Alias>,
) -> Option<Properties> {
    let left = message.expires_at.map(|t| {
        let d = t.saturating_duration_since(now);
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        u32::try_from(secs).unwrap_or(u32::MAX)
    });
    if left.is_none() && delivery.subscription_ids.is_empty() && alias.is_none() {
        return Some(message.properties.clone());
    }
    let mut builder = Some(Properties::builder());
    for p in message.properties.iter() {
        builder = builder.and_then(|b| b.push(p).ok());
    }
    if let Some(secs) = left {
        builder = builder.and_then(|b| b.push(Property::MessageExpiryInterval(secs)).ok());
    }
    for &id in &delivery.subscription_ids {
        builder = builder.and_then(|b| b.push(Property::SubscriptionIdentifier(id)).ok());
    }
    if let Some(Alias::Set(a) | Alias::Use(a)) = alias {
        builder = builder.and_then(|b| b.push(Property::TopicAlias(a)).ok());
    }
    builder.map(|b| b.build())
}

/// The message of a decoded PUBLISH whose topic is `topic` (an alias
/// resolved), received at `now`.
pub(super) fn message_of(publish: &Publish, topic: Str, now: Instant) -> Message {
    let (properties, expires_at) = forwarded(&publish.properties, now);
    Message {
        topic,
        payload: publish.payload_view(),
        qos: publish.qos,
        retain: publish.retain,
        properties,
        expires_at,
    }
}

/// The lower of two QoS.
pub(super) fn min_qos(a: QoS, b: QoS) -> QoS {
    a.min(b)
}
