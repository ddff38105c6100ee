//! MQTT 5.0 properties: the identifiers, their value types, where each may
//! stand, and [`Properties`], a checked property block kept as a view of the
//! packet and read lazily.

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::types::{EncodeError, PacketType, Sender};
use super::wire::{self, fault, put_binary, put_var_int, Reader, Str};
use crate::violation::Violation;

/// The packets (and the will) a property block belongs to, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope(u16);

impl Scope {
    pub(crate) const CONNECT: Scope = Scope(1);
    pub(crate) const CONNACK: Scope = Scope(1 << 1);
    pub(crate) const PUBLISH: Scope = Scope(1 << 2);
    pub(crate) const WILL: Scope = Scope(1 << 3);
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    pub(crate) const ACK: Scope = Scope(1 << 4);
    pub(crate) const SUBSCRIBE: Scope = Scope(1 << 5);
    pub(crate) const SUBACK: Scope = Scope(1 << 6);
    pub(crate) const UNSUBSCRIBE: Scope = Scope(1 << 7);
    pub(crate) const UNSUBACK: Scope = Scope(1 << 8);
    pub(crate) const DISCONNECT: Scope = Scope(1 << 9);
    pub(crate) const AUTH: Scope = Scope(1 << 10);
    const ALL: Scope = Scope((1 << 11) - 1);

    const fn or(self, other: Scope) -> Scope {
        Scope(self.0 | other.0)
    }

    const fn has(self, other: Scope) -> bool {
        self.0 & other.0 != 0
    }
}

/// How a property's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueType {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Binary,
    Pair,
}

macro_rules! property_ids {
    ($( $(#[$doc:meta])* $name:ident = $id:literal, $ty:ident, [$($scope:ident)|+]; )*) => {
        /// An MQTT 5.0 property identifier.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum PropertyId {
            $( $(#[$doc])* $name = $id, )*
        }

        impl PropertyId {
            /// The identifier with this byte, if MQTT 5.0 defines one.
            pub const fn from_u8(id: u8) -> Option<PropertyId> {
                match id {
                    $( $id => Some(PropertyId::$name), )*
                    _ => None,
                }
            }

            const fn value_type(self) -> ValueType {
                match self {
                    $( PropertyId::$name => ValueType::$ty, )*
                }
            }

            const fn scope(self) -> Scope {
                match self {
                    $( PropertyId::$name => Scope(0)$(.or(Scope::$scope))+, )*
                }
            }
        }
    };
}

property_ids! {
    /// 0 (bytes) or 1 (UTF-8): what the payload is.
    PayloadFormatIndicator = 0x01, Byte, [PUBLISH | WILL];
    /// Seconds the message lives.
    MessageExpiryInterval = 0x02, U32, [PUBLISH | WILL];
    /// A MIME type for the payload.
    ContentType = 0x03, Str, [PUBLISH | WILL];
    /// The topic a response goes to.
    ResponseTopic = 0x08, Str, [PUBLISH | WILL];
    /// Data that ties a response to its request.
    CorrelationData = 0x09, Binary, [PUBLISH | WILL];
    /// The identifier of a subscription (1 to 268,435,455).
    SubscriptionIdentifier = 0x0B, VarInt, [PUBLISH | SUBSCRIBE];
    /// Seconds the session outlives the connection.
    SessionExpiryInterval = 0x11, U32, [CONNECT | CONNACK | DISCONNECT];
    /// The client identifier the server chose.
    AssignedClientIdentifier = 0x12, Str, [CONNACK];
    /// The keep alive the server imposes.
    ServerKeepAlive = 0x13, U16, [CONNACK];
    /// The name of the extended authentication method.
    AuthenticationMethod = 0x15, Str, [CONNECT | CONNACK | AUTH];
    /// Data of the extended authentication exchange.
    AuthenticationData = 0x16, Binary, [CONNECT | CONNACK | AUTH];
    /// 0 or 1: whether reason strings and user properties may be sent on failures.
    RequestProblemInformation = 0x17, Byte, [CONNECT];
    /// Seconds the server waits before publishing the will.
    WillDelayInterval = 0x18, U32, [WILL];
    /// 0 or 1: whether the client asks for response information.
    RequestResponseInformation = 0x19, Byte, [CONNECT];
    /// The basis of a response topic.
    ResponseInformation = 0x1A, Str, [CONNACK];
    /// Another server the client may use.
    ServerReference = 0x1C, Str, [CONNACK | DISCONNECT];
    /// A human-readable reason.
    ReasonString = 0x1F, Str, [CONNACK | ACK | SUBACK | UNSUBACK | DISCONNECT | AUTH];
    /// How many QoS 1 and 2 publications the sender accepts at once (at least 1).
    ReceiveMaximum = 0x21, U16, [CONNECT | CONNACK];
    /// The highest topic alias the sender accepts.
    TopicAliasMaximum = 0x22, U16, [CONNECT | CONNACK];
    /// A number standing for the topic (at least 1).
    TopicAlias = 0x23, U16, [PUBLISH];
    /// 0 or 1: the highest QoS the server supports.
    MaximumQos = 0x24, Byte, [CONNACK];
    /// 0 or 1: whether the server keeps retained messages.
    RetainAvailable = 0x25, Byte, [CONNACK];
    /// A name and value pair; may repeat.
    UserProperty = 0x26, Pair, [CONNECT | CONNACK | PUBLISH | WILL | ACK | SUBSCRIBE | SUBACK | UNSUBSCRIBE | UNSUBACK | DISCONNECT | AUTH];
    /// The largest packet the sender accepts (at least 1).
    MaximumPacketSize = 0x27, U32, [CONNECT | CONNACK];
    /// 0 or 1: whether the server supports wildcard subscriptions.
    WildcardSubscriptionAvailable = 0x28, Byte, [CONNACK];
    /// 0 or 1: whether the server supports subscription identifiers.
    SubscriptionIdentifierAvailable = 0x29, Byte, [CONNACK];
    /// 0 or 1: whether the server supports shared subscriptions.
    SharedSubscriptionAvailable = 0x2A, Byte, [CONNACK];
}

const _: () = assert!(Scope::ALL.0 == 0x7ff);

/// One property and its value; strings and binary data are views.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Property {
    /// See [`PropertyId::PayloadFormatIndicator`].
    PayloadFormatIndicator(u8),
    /// See [`PropertyId::MessageExpiryInterval`].
    MessageExpiryInterval(u32),
    /// See [`PropertyId::ContentType`].
    ContentType(Str),
    /// See [`PropertyId::ResponseTopic`].
    ResponseTopic(Str),
    /// See [`PropertyId::CorrelationData`].
    CorrelationData(Bytes),
    /// See [`PropertyId::SubscriptionIdentifier`].
    SubscriptionIdentifier(u32),
    /// See [`PropertyId::SessionExpiryInterval`].
    SessionExpiryInterval(u32),
    /// See [`PropertyId::AssignedClientIdentifier`].
    AssignedClientIdentifier(Str),
    /// See [`PropertyId::ServerKeepAlive`].
    ServerKeepAlive(u16),
    /// See [`PropertyId::AuthenticationMethod`].
    AuthenticationMethod(Str),
    /// See [`PropertyId::AuthenticationData`].
    AuthenticationData(Bytes),
    /// See [`PropertyId::RequestProblemInformation`].
    RequestProblemInformation(u8),
    /// See [`PropertyId::WillDelayInterval`].
    WillDelayInterval(u32),
    /// See [`PropertyId::RequestResponseInformation`].
    RequestResponseInformation(u8),
    /// See [`PropertyId::ResponseInformation`].
    ResponseInformation(Str),
    /// See [`PropertyId::ServerReference`].
    ServerReference(Str),
    /// See [`PropertyId::ReasonString`].
    ReasonString(Str),
    /// See [`PropertyId::ReceiveMaximum`].
    ReceiveMaximum(u16),
    /// See [`PropertyId::TopicAliasMaximum`].
    TopicAliasMaximum(u16),
    /// See [`PropertyId::TopicAlias`].
    TopicAlias(u16),
    /// See [`PropertyId::MaximumQos`].
    MaximumQos(u8),
    /// See [`PropertyId::RetainAvailable`].
    RetainAvailable(u8),
    /// See [`PropertyId::UserProperty`]: name, then value.
    UserProperty(Str, Str),
    /// See [`PropertyId::MaximumPacketSize`].
    MaximumPacketSize(u32),
    /// See [`PropertyId::WildcardSubscriptionAvailable`].
    WildcardSubscriptionAvailable(u8),
    /// See [`PropertyId::SubscriptionIdentifierAvailable`].
    SubscriptionIdentifierAvailable(u8),
    /// See [`PropertyId::SharedSubscriptionAvailable`].
    SharedSubscriptionAvailable(u8),
}

/// A property's value, by how it is written.
#[derive(Clone, Debug)]
enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(Str),
    Binary(Bytes),
    Pair(Str, Str),
}

impl Property {
    /// This property's identifier.
    pub fn id(&self) -> PropertyId {
        self.clone().into_parts().0
    }

    /// The identifier and the value.
    fn into_parts(self) -> (PropertyId, Value) {
        use PropertyId as I;
        use Value as V;
        match self {
            Property::PayloadFormatIndicator(v) => (I::PayloadFormatIndicator, V::Byte(v)),
            Property::MessageExpiryInterval(v) => (I::MessageExpiryInterval, V::U32(v)),
            Property::ContentType(v) => (I::ContentType, V::Str(v)),
            Property::ResponseTopic(v) => (I::ResponseTopic, V::Str(v)),
            Property::CorrelationData(v) => (I::CorrelationData, V::Binary(v)),
            Property::SubscriptionIdentifier(v) => (I::SubscriptionIdentifier, V::VarInt(v)),
            Property::SessionExpiryInterval(v) => (I::SessionExpiryInterval, V::U32(v)),
            Property::AssignedClientIdentifier(v) => (I::AssignedClientIdentifier, V::Str(v)),
            Property::ServerKeepAlive(v) => (I::ServerKeepAlive, V::U16(v)),
            Property::AuthenticationMethod(v) => (I::AuthenticationMethod, V::Str(v)),
            Property::AuthenticationData(v) => (I::AuthenticationData, V::Binary(v)),
            Property::RequestProblemInformation(v) => (I::RequestProblemInformation, V::Byte(v)),
            Property::WillDelayInterval(v) => (I::WillDelayInterval, V::U32(v)),
            Property::RequestResponseInformation(v) => (I::RequestResponseInformation, V::Byte(v)),
            Property::ResponseInformation(v) => (I::ResponseInformation, V::Str(v)),
            Property::ServerReference(v) => (I::ServerReference, V::Str(v)),
            Property::ReasonString(v) => (I::ReasonString, V::Str(v)),
            Property::ReceiveMaximum(v) => (I::ReceiveMaximum, V::U16(v)),
            Property::TopicAliasMaximum(v) => (I::TopicAliasMaximum, V::U16(v)),
            Property::TopicAlias(v) => (I::TopicAlias, V::U16(v)),
            Property::MaximumQos(v) => (I::MaximumQos, V::Byte(v)),
            Property::RetainAvailable(v) => (I::RetainAvailable, V::Byte(v)),
            Property::UserProperty(k, v) => (I::UserProperty, V::Pair(k, v)),
            Property::MaximumPacketSize(v) => (I::MaximumPacketSize, V::U32(v)),
            Property::WildcardSubscriptionAvailable(v) => {
                (I::WildcardSubscriptionAvailable, V::Byte(v))
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                (I::SubscriptionIdentifierAvailable, V::Byte(v))
            }
            Property::SharedSubscriptionAvailable(v) => {
                (I::SharedSubscriptionAvailable, V::Byte(v))
            }
        }
    }

    /// The property with this identifier and value; `value` has the type
    /// `id.value_type()` names.
    fn from_parts(id: PropertyId, value: Value) -> Option<Property> {
        use PropertyId as I;
        use Value as V;
        Some(match (id, value) {
            (I::PayloadFormatIndicator, V::Byte(v)) => Property::PayloadFormatIndicator(v),
            (I::MessageExpiryInterval, V::U32(v)) => Property::MessageExpiryInterval(v),
            (I::ContentType, V::Str(v)) => Property::ContentType(v),
            (I::ResponseTopic, V::Str(v)) => Property::ResponseTopic(v),
            (I::CorrelationData, V::Binary(v)) => Property::CorrelationData(v),
            (I::SubscriptionIdentifier, V::VarInt(v)) => Property::SubscriptionIdentifier(v),
            (I::SessionExpiryInterval, V::U32(v)) => Property::SessionExpiryInterval(v),
            (I::AssignedClientIdentifier, V::Str(v)) => Property::AssignedClientIdentifier(v),
            (I::ServerKeepAlive, V::U16(v)) => Property::ServerKeepAlive(v),
            (I::AuthenticationMethod, V::Str(v)) => Property::AuthenticationMethod(v),
            (I::AuthenticationData, V::Binary(v)) => Property::AuthenticationData(v),
            (I::RequestProblemInformation, V::Byte(v)) => Property::RequestProblemInformation(v),
            (I::WillDelayInterval, V::U32(v)) => Property::WillDelayInterval(v),
            (I::RequestResponseInformation, V::Byte(v)) => Property::RequestResponseInformation(v),
            (I::ResponseInformation, V::Str(v)) => Property::ResponseInformation(v),
            (I::ServerReference, V::Str(v)) => Property::ServerReference(v),
            (I::ReasonString, V::Str(v)) => Property::ReasonString(v),
            (I::ReceiveMaximum, V::U16(v)) => Property::ReceiveMaximum(v),
            (I::TopicAliasMaximum, V::U16(v)) => Property::TopicAliasMaximum(v),
            (I::TopicAlias, V::U16(v)) => Property::TopicAlias(v),
            (I::MaximumQos, V::Byte(v)) => Property::MaximumQos(v),
            (I::RetainAvailable, V::Byte(v)) => Property::RetainAvailable(v),
            (I::UserProperty, V::Pair(k, v)) => Property::UserProperty(k, v),
            (I::MaximumPacketSize, V::U32(v)) => Property::MaximumPacketSize(v),
            (I::WildcardSubscriptionAvailable, V::Byte(v)) => {
                Property::WildcardSubscriptionAvailable(v)
            }
            (I::SubscriptionIdentifierAvailable, V::Byte(v)) => {
                Property::SubscriptionIdentifierAvailable(v)
            }
            (I::SharedSubscriptionAvailable, V::Byte(v)) => {
                Property::SharedSubscriptionAvailable(v)
            }
            _ => return None,
        })
    }

    /// Reads one property without range checks.
    fn read(r: &mut Reader<'_>) -> Result<Property, Violation> {
        let at = r.pos();
        let (id, value) = Property::read_parts(r)?;
        // The value was read by the type the identifier names.
        Property::from_parts(id, value).ok_or(fault(MqttFault::UnknownProperty(id as u8), at))
    }

    /// Reads one identifier and its value without range checks.
    fn read_parts(r: &mut Reader<'_>) -> Result<(PropertyId, Value), Violation> {
        let at = r.pos();
        let byte = r.u8("property identifier")?;
        // Identifiers are variable byte integers, but every defined one fits
        // in one byte without a continuation bit.
        let id = PropertyId::from_u8(byte).ok_or(fault(MqttFault::UnknownProperty(byte), at))?;
        const F: &str = "property";
        let value = match id.value_type() {
            ValueType::Byte => Value::Byte(r.u8(F)?),
            ValueType::U16 => Value::U16(r.u16(F)?),
            ValueType::U32 => Value::U32(r.u32(F)?),
            ValueType::VarInt => Value::VarInt(r.var_int(F)?),
            ValueType::Str if id == PropertyId::ResponseTopic => {
                Value::Str(r.topic_name("response topic", false)?)
            }
            ValueType::Str => Value::Str(r.string(F)?),
            ValueType::Binary => Value::Binary(r.binary(F)?),
            ValueType::Pair => {
                let name = r.string("user property name")?;
                Value::Pair(name, r.string("user property value")?)
            }
        };
        Ok((id, value))
    }

    /// Reads one identifier and checks its value's encoding as
    /// [`read_parts`](Self::read_parts) does, without taking views: the
    /// identifier and, for a numeric value, the number (0 for strings and
    /// binary data), still without range checks.
    #[inline]
    fn check_parts(r: &mut Reader<'_>) -> Result<(PropertyId, u32), Violation> {
        let at = r.pos();
        let byte = r.u8("property identifier")?;
        let id = PropertyId::from_u8(byte).ok_or(fault(MqttFault::UnknownProperty(byte), at))?;
        const F: &str = "property";
        let value = match id.value_type() {
            ValueType::Byte => u32::from(r.u8(F)?),
            ValueType::U16 => u32::from(r.u16(F)?),
            ValueType::U32 => r.u32(F)?,
            ValueType::VarInt => r.var_int(F)?,
            ValueType::Str if id == PropertyId::ResponseTopic => {
                r.topic_name_span("response topic", false).map(|_| 0)?
            }
            ValueType::Str => r.skip_string(F).map(|()| 0)?,
            ValueType::Binary => r.skip_binary(F).map(|()| 0)?,
            ValueType::Pair => {
                r.skip_string("user property name")?;
                r.skip_string("user property value").map(|()| 0)?
            }
        };
        Ok((id, value))
    }

    /// Bytes on the wire, identifier included.
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(1 + match self.clone().into_parts().1 {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::VarInt(v) if v as usize > wire::MAX_REMAINING_LENGTH => {
                return Err(EncodeError::ValueOutOfRange)
            }
            Value::VarInt(v) => wire::var_int_len(v as usize),
            Value::Str(s) => s.wire_len(),
            Value::Binary(b) => wire::binary_len(&b)?,
            Value::Pair(k, v) => k.wire_len() + v.wire_len(),
        })
    }

    fn put<B: BufMut>(&self, buf: &mut B) {
        let (id, value) = self.clone().into_parts();
        buf.put_u8(id as u8);
        match value {
            Value::Byte(v) => buf.put_u8(v),
            Value::U16(v) => buf.put_u16(v),
            Value::U32(v) => buf.put_u32(v),
            Value::VarInt(v) => put_var_int(buf, v as usize),
            Value::Str(s) => s.put(buf),
            Value::Binary(b) => put_binary(buf, &b),
            Value::Pair(k, v) => {
                k.put(buf);
                v.put(buf);
            }
        }
    }
}

/// What a property block said that the packet around it must know.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    /// The topic alias, if one was given.
    pub(crate) topic_alias: Option<u16>,
    /// Whether the payload format indicator said UTF-8.
    pub(crate) payload_is_utf8: bool,
    /// Whether an authentication method was given.
    pub(crate) auth_method: bool,
}

/// A checked MQTT 5.0 property block, kept as a view of its packet (without
/// the length in front of it). Iterate it for the [`Property`] values; build
/// one to send with [`Properties::builder`]. MQTT 3.1.1 packets have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Properties(Bytes);

impl Properties {
    /// No properties.
    pub const fn new() -> Properties {
        Properties(Bytes::new())
    }

    /// A builder for a block to send.
    pub fn builder() -> PropertiesBuilder {
        PropertiesBuilder::default()
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes of the block (without its length).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The properties, in wire order.
    pub fn iter(&self) -> PropertyIter<'_> {
        PropertyIter {
            raw: &self.0,
            pos: 0,
        }
    }

    /// The first property with this identifier.
    pub fn get(&self, id: PropertyId) -> Option<Property> {
        self.iter().find(|p| p.id() == id)
    }

    /// Bytes on the wire: the length, then the block.
    pub(crate) fn wire_len(&self) -> usize {
        wire::var_int_len(self.0.len()) + self.0.len()
    }

    pub(crate) fn put<B: BufMut>(&self, buf: &mut B) {
        put_var_int(buf, self.0.len());
        buf.put_slice(&self.0);
    }

    /// Reads and checks a property block for `packet` (in `scope`), sent by
    /// `from`.
    #[inline]
    pub(crate) fn read(
        r: &mut Reader<'_>,
        scope: Scope,
        packet: PacketType,
        from: Sender,
    ) -> Result<(Properties, Summary), Violation> {
        let (block, summary) = Properties::check(r, scope, packet, from)?;
        Ok((Properties::view_of(r, block), summary))
    }

    /// The checked block `block`, a slice `r` returned, as a view.
    #[inline]
    pub(crate) fn view_of(r: &Reader<'_>, block: &[u8]) -> Properties {
        if block.is_empty() {
            return Properties::new();
        }
        Properties(r.view_slice(block))
    }

    /// Checks a property block as [`read`](Self::read) does without taking
    /// a view: the block (without its length), borrowed, and what it said.
    #[inline]
    pub(crate) fn check<'a>(
        r: &mut Reader<'a>,
        scope: Scope,
        packet: PacketType,
        from: Sender,
    ) -> Result<(&'a [u8], Summary), Violation> {
        // Most blocks are empty: a one-byte length of 0, nothing to check.
        if r.peek() == Some(0) {
            r.u8("property length")?;
            return Ok((&[], Summary::default()));
        }
        Properties::check_block(r, scope, packet, from)
    }

    /// [`check`](Self::check) for a block that is not known to be empty.
    fn check_block<'a>(
        r: &mut Reader<'a>,
        scope: Scope,
        packet: PacketType,
        from: Sender,
    ) -> Result<(&'a [u8], Summary), Violation> {
        let len_at = r.pos();
        let len = r.var_int("property length")? as usize;
        if len > r.remaining() {
            return Err(wire::truncated("properties", len_at));
        }
        let start = r.pos();
        let mut summary = Summary::default();
        // Offsets inside the block count from its start, then are shifted.
        let (mut inner, block) = r.sub(len);
        let mut seen: u64 = 0;
        let mut auth_data_at = None;
        while !inner.is_empty() {
            let at = inner.pos();
            let (id, value) = Property::check_parts(&mut inner).map_err(|v| v.shifted(start))?;
            let bad = |f: MqttFault| Err(fault(f, start + at));
            if !id.scope().has(scope) {
                return bad(MqttFault::PropertyNotAllowed {
                    id: id as u8,
                    packet,
                });
            }
            let bit = 1u64 << (id as u8);
            let repeatable = id == PropertyId::UserProperty
                || (id == PropertyId::SubscriptionIdentifier && scope == Scope::PUBLISH);
            if seen & bit != 0 && !repeatable {
                return bad(MqttFault::DuplicateProperty(id as u8));
            }
            seen |= bit;
            match id {
                // Every one-byte property is a flag: 0 or 1.
                _ if id.value_type() == ValueType::Byte && value > 1 => {
                    return bad(MqttFault::PropertyValue(id as u8))
                }
                PropertyId::PayloadFormatIndicator => summary.payload_is_utf8 = value == 1,
                PropertyId::ReceiveMaximum | PropertyId::MaximumPacketSize if value == 0 => {
                    return bad(MqttFault::PropertyValue(id as u8));
                }
                PropertyId::SubscriptionIdentifier => {
                    if scope == Scope::PUBLISH && from == Sender::Client {
                        return bad(MqttFault::SubscriptionIdFromClient);
                    }
                    if value == 0 {
                        return bad(MqttFault::PropertyValue(id as u8));
                    }
                }
                PropertyId::TopicAlias if value == 0 => return bad(MqttFault::TopicAliasZero),
                // A two-byte value: it fits.
                PropertyId::TopicAlias => summary.topic_alias = Some(value as u16),
                PropertyId::SessionExpiryInterval
                    if scope == Scope::DISCONNECT && from == Sender::Server =>
                {
                    return bad(MqttFault::PropertyNotAllowed {
                        id: id as u8,
                        packet,
                    });
                }
                PropertyId::AuthenticationMethod => summary.auth_method = true,
                PropertyId::AuthenticationData => auth_data_at = Some(start + at),
                _ => {}
            }
        }
        if let (Some(at), false) = (auth_data_at, summary.auth_method) {
            return Err(fault(MqttFault::AuthDataWithoutMethod, at));
        }
        Ok((block, summary))
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = Property;
    type IntoIter = PropertyIter<'a>;
    fn into_iter(self) -> PropertyIter<'a> {
        self.iter()
    }
}

/// The properties of a [`Properties`] block, read lazily from the checked
/// bytes.
#[derive(Clone, Debug)]
pub struct PropertyIter<'a> {
    raw: &'a Bytes,
    pos: usize,
}

impl Iterator for PropertyIter<'_> {
    type Item = Property;

    fn next(&mut self) -> Option<Property> {
        let mut r = Reader::new(self.raw, self.pos, self.raw.len());
        if r.is_empty() {
            return None;
        }
        // The block was checked when it was decoded or built, so reading
        // cannot fail; if it did, iteration would simply end.
        let p = Property::read(&mut r).ok()?;
        self.pos = r.pos();
        Some(p)
    }
}

/// Builds a [`Properties`] block to send, in the order given.
#[derive(Clone, Debug, Default)]
pub struct PropertiesBuilder {
    buf: Vec<u8>,
}

impl PropertiesBuilder {
    /// Appends a property; fails for binary data over 65,535 bytes or a
    /// subscription identifier over 268,435,455.
    pub fn push(mut self, p: Property) -> Result<Self, EncodeError> {
        let n = p.wire_len()?;
        self.buf.reserve(n);
        p.put(&mut self.buf);
        Ok(self)
    }

    /// The block.
    pub fn build(self) -> Properties {
        Properties(Bytes::from(self.buf))
    }
}

/// Checks a payload announced as UTF-8 (payload format indicator 1).
pub(crate) fn check_payload_utf8(payload: &[u8], offset: usize) -> Result<(), Violation> {
    match std::str::from_utf8(payload) {
        Ok(_) => Ok(()),
        Err(e) => Err(fault(MqttFault::PayloadNotUtf8, offset + e.valid_up_to())),
    }
}

/// A checked MQTT 5.0 property block, borrowed (without the length in front
/// of it); empty in 3.1.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PropertiesRef<'a>(pub(crate) &'a [u8]);

impl<'a> PropertiesRef<'a> {
    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes of the block.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}
