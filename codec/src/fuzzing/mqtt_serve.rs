//! What a server (or a test client) does with what the MQTT fuzz targets
//! decode, checked on every input:
//!
//! - an accepted packet is read back field by field: every property of
//!   every block (iterated, and looked up with [`Properties::get`] for every
//!   identifier), every subscription and topic filter, the CONNECT payload;
//!   rebuilt through the public builders from what was read, it is equal to
//!   the decoded packet, byte for byte;
//! - the answer a server sends to it (CONNACK, PUBACK, PUBREC, PUBCOMP,
//!   SUBACK, UNSUBACK, PINGRESP, AUTH, and the PUBLISH it forwards to a
//!   subscriber) encodes, and decodes as server-sent to the same packet;
//! - a refused packet is named and described, and the CONNACK or DISCONNECT
//!   that carries its reason code to the client is itself a packet the
//!   codec accepts from a server.

use arbitrary::Unstructured;
use bytes::Bytes;

use crate::close::CloseReason;
use crate::mqtt::{
    self, Ack, Auth, ConnAck, Connect, Disconnect, EncodeError, Packet, Properties, Property,
    PropertyId, Publish, QoS, Sender, Str, StrError, SubAck, SubscriptionOptions, Subscriptions,
    TopicFilters, UnsubAck, Version, Will, MAX_REMAINING_LENGTH,
};
use crate::violation::{Violation, ViolationKind};

/// Reads back everything `p` holds and rebuilds it from what was read: the
/// rebuilt packet is equal to `p`. Also checks the decoder kept every
/// property within its range.
pub(super) fn read_back(p: &Packet) {
    match p {
        Packet::Connect(c) => {
            properties(&c.properties);
            let will = c.will();
            if let Some(w) = &will {
                properties(&w.properties);
                assert!(!w.topic.is_empty(), "a will has a topic");
            }
            let mut again =
                Connect::new(c.version, c.client_id(), will, c.user_name(), c.password())
                    .expect("decoded fields fit");
            again.clean_start = c.clean_start;
            again.keep_alive = c.keep_alive;
            again.properties = c.properties.clone();
            assert_eq!(&again, c, "a CONNECT rebuilt from its fields");
            assert!(format!("{c:?}").contains("client_id"), "{c:?}");
        }
        Packet::Publish(m) => {
            properties(&m.properties);
            let topic = m.topic_view();
            assert_eq!(m.topic(), topic.as_str());
            assert_eq!(&*topic, format!("{topic}"), "Deref and Display agree");
            let again = Publish::new(&topic, m.payload())
                .with_qos(m.qos, m.packet_id)
                .with_retain(m.retain)
                .with_dup(m.dup)
                .with_properties(m.properties.clone());
            assert_eq!(&again, m, "a PUBLISH rebuilt from its fields");
            assert_eq!(hash(&again), hash(m), "equal messages hash alike");
            assert!(format!("{m:?}").contains("payload"), "{m:?}");
        }
        Packet::Subscribe(s) => {
            properties(&s.properties);
            let subs: Vec<_> = s.subscriptions.iter().collect();
            assert!(!subs.is_empty(), "a SUBSCRIBE has a filter");
            let again = Subscriptions::new(&subs).expect("at least one");
            assert_eq!(again, s.subscriptions, "every subscription read back");
        }
        Packet::Unsubscribe(u) => {
            properties(&u.properties);
            let filters: Vec<Str> = u.filters.iter().collect();
            assert!(filters.iter().all(|f| !f.is_empty()), "{filters:?}");
            let again = TopicFilters::new(&filters).expect("at least one");
            assert_eq!(again, u.filters, "every topic filter read back");
        }
        Packet::ConnAck(c) => properties(&c.properties),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            properties(&a.properties)
        }
        Packet::SubAck(s) => properties(&s.properties),
        Packet::UnsubAck(u) => properties(&u.properties),
        Packet::Disconnect(d) => properties(&d.properties),
        Packet::Auth(a) => {
            properties(&a.properties);
            let method = a.properties.get(PropertyId::AuthenticationMethod);
            assert!(
                a.properties.is_empty() || method.is_some(),
                "AUTH properties without a method"
            );
        }
        Packet::PingReq | Packet::PingResp => {}
    }
}

fn hash(m: &Publish) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(m)
}

/// Reads a checked property block back: iterating it yields every property
/// (they re-encode to the block's exact bytes), [`Properties::get`] finds the
/// first of each identifier and nothing else, and every value is in range.
fn properties(block: &Properties) {
    let all: Vec<Property> = block.iter().collect();
    let mut b = Properties::builder();
    for p in &all {
        b = b.push(p.clone()).expect("a decoded property encodes");
    }
    assert_eq!(b.build().as_bytes(), block.as_bytes(), "{all:?}");
    assert_eq!(block.into_iter().count(), all.len());
    for byte in 0..=0x2a {
        let Some(id) = PropertyId::from_u8(byte) else {
            continue;
        };
        let first = all.iter().find(|p| p.id() == id).cloned();
        assert_eq!(block.get(id), first, "get({id:?})");
    }
    for p in &all {
        let in_range = match *p {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQos(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => v <= 1,
            Property::ReceiveMaximum(v) | Property::TopicAlias(v) => v > 0,
            Property::MaximumPacketSize(v) => v > 0,
            Property::SubscriptionIdentifier(v) => {
                v > 0 && usize::try_from(v).is_ok_and(|v| v <= MAX_REMAINING_LENGTH)
            }
            Property::ResponseTopic(ref t) => !t.is_empty() && !t.contains(['+', '#']),
            _ => true,
        };
        assert!(in_range, "{p:?} out of range");
    }
}

/// The packet a server answers `p` (sent by a client on a connection of
/// `version`) with, if any: CONNACK, an acknowledgement, SUBACK, UNSUBACK,
/// PINGRESP, or the next AUTH step.
fn answer(p: &Packet, version: Version, max: usize) -> Option<Packet> {
    let v5 = version == Version::V5;
    Some(match p {
        Packet::Connect(c) => {
            let mut b = Properties::builder();
            if c.version == Version::V5 {
                if c.client_id().is_empty() {
                    let id = Str::try_from(String::from("auto-1")).expect("a short name");
                    b = push(b, Property::AssignedClientIdentifier(id));
                }
                if let Some(e) = c.properties.get(PropertyId::SessionExpiryInterval) {
                    b = push(b, e);
                }
                let max = u32::try_from(max).unwrap_or(u32::MAX);
                for p in [
                    Property::ReceiveMaximum(32),
                    Property::TopicAliasMaximum(8),
                    Property::MaximumQos(1),
                    Property::RetainAvailable(1),
                    Property::MaximumPacketSize(max),
                    Property::WildcardSubscriptionAvailable(1),
                    Property::SubscriptionIdentifierAvailable(1),
                    Property::SharedSubscriptionAvailable(1),
                    Property::ServerKeepAlive(c.keep_alive),
                ] {
                    b = push(b, p);
                }
                if let Some(m) = c.properties.get(PropertyId::AuthenticationMethod) {
                    b = push(b, m);
                }
            }
            Packet::ConnAck(ConnAck {
                session_present: !c.clean_start,
                code: 0,
                properties: b.build(),
            })
        }
        Packet::Publish(m) => match m.qos {
            QoS::AtMostOnce => return None,
            QoS::AtLeastOnce => Packet::PubAck(Ack::new(m.packet_id)),
            QoS::ExactlyOnce => Packet::PubRec(Ack::new(m.packet_id)),
        },
        Packet::PubRel(a) => Packet::PubComp(Ack::new(a.packet_id)),
        Packet::PubRec(a) => Packet::PubRel(Ack::new(a.packet_id)),
        Packet::Subscribe(s) => {
            let codes: Vec<u8> = s.subscriptions.iter().map(|(_, o)| o.qos as u8).collect();
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Properties::new(),
                codes: Bytes::from(codes),
            })
        }
        Packet::Unsubscribe(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::new(),
            codes: if v5 {
                u.filters.iter().map(|_| 0x11).collect()
            } else {
                Bytes::new()
            },
        }),
        Packet::PingReq => Packet::PingResp,
        Packet::Auth(a) => {
            let method = a.properties.get(PropertyId::AuthenticationMethod)?;
            let mut b = push(Properties::builder(), method);
            b = push(
                b,
                Property::AuthenticationData(Bytes::from_static(b"challenge")),
            );
            Packet::Auth(Auth {
                code: 0x18,
                properties: b.build(),
            })
        }
        _ => return None,
    })
}

/// The PUBLISH a server forwards to a subscriber for `m`: the same
/// message, at the subscription's QoS, with a subscription identifier (5.0).
fn forward(m: &Publish, version: Version) -> Packet {
    let mut out = Publish::new(&m.topic_view(), m.payload()).with_retain(m.retain);
    if m.qos != QoS::AtMostOnce {
        out = out.with_qos(m.qos, 1);
    }
    if version == Version::V5 {
        let mut b = Properties::builder();
        for p in &m.properties {
            b = push(b, p);
        }
        out = out.with_properties(push(b, Property::SubscriptionIdentifier(7)).build());
    }
    Packet::Publish(out)
}

fn push(b: mqtt::PropertiesBuilder, p: Property) -> mqtt::PropertiesBuilder {
    b.push(p).expect("a short property")
}

/// Encodes what a server sends, through both encoders, and decodes it as a
/// client would: the same packet.
fn sent_by_server(p: &Packet, version: Version) {
    let bytes = p
        .to_bytes(version)
        .unwrap_or_else(|e| panic!("{p:?} does not encode: {e}"));
    let mut vec = Vec::new();
    p.encode_to_vec(version, &mut vec).expect("encodes");
    assert_eq!(bytes, vec, "encode and encode_to_vec agree");
    let back = Packet::decode(&bytes, version, Sender::Server)
        .unwrap_or_else(|v| panic!("{p:?} sent as {bytes:?} is refused: {v}"));
    assert_eq!(&back, p, "a server's packet decodes to itself");
}

/// A server's answers to a packet a client sent on a connection of
/// `version` (a CONNECT's own version for a CONNECT).
pub(super) fn serve(p: &Packet, version: Version, max: usize) {
    let version = match p {
        Packet::Connect(c) => c.version,
        _ => version,
    };
    if let Some(a) = answer(p, version, max) {
        sent_by_server(&a, version);
    }
    if let Packet::Publish(m) = p {
        // An empty topic stands for an alias of this connection only.
        if !m.topic().is_empty() {
            sent_by_server(&forward(m, version), version);
        }
    }
}

/// Names and describes a violation as `check` reports it: an MQTT fault
/// has a stable `mqtt-` name, and its description ends the violation's text.
pub(super) fn describe(v: &Violation) {
    if let ViolationKind::Mqtt(f) = v.kind() {
        assert!(f.name().starts_with("mqtt-"), "{f:?}: {}", f.name());
        let text = f.to_string();
        assert!(v.to_string().ends_with(&text), "{v}: {text}");
    }
}

/// Checks what a server sends the
/// client for it on a connection of `version`: for a refused CONNECT, the
/// CONNACK with its code (3.1.1: its return code, only for a refusal); for
/// a 5.0 connection, else, a DISCONNECT with its reason code.
pub(super) fn refuse(v: &Violation, version: Version) {
    let refused = v.close_reason() == CloseReason::Aborted;
    let v311 = mqtt::v311_connack_code(v);
    assert_eq!(v311.is_some(), refused, "{v}: 3.1.1 return code {v311:?}");
    let code = v
        .kind()
        .reason_code()
        .expect("an MQTT fault has a reason code");
    let (packet, version) = match (v311, version) {
        (Some(code), Version::V311) => (connack(code), Version::V311),
        (Some(_), Version::V5) => (connack(code), Version::V5),
        (None, Version::V311) => return,
        (None, Version::V5) => (
            Packet::Disconnect(Disconnect {
                code,
                properties: Properties::new(),
            }),
            Version::V5,
        ),
    };
    sent_by_server(&packet, version);
}

fn connack(code: u8) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::new(),
    })
}

/// What a sender's builders refuse, from `u`: a binary field or a string
/// over 65,535 bytes, a subscription identifier over 268,435,455, a string
/// with U+0000 or not UTF-8, a SUBSCRIBE or UNSUBSCRIBE with no filter, AUTH
/// in 3.1.1. Each is refused with its own error.
pub(super) fn refused_by_builders(u: &mut Unstructured<'_>) {
    let over = 65_536 + usize::from(u.int_in_range(0..=3u8).unwrap_or(0));
    let at = usize::from(u.int_in_range(0..=7u8).unwrap_or(0));
    let err: Result<(), EncodeError> = match u.int_in_range(0..=7u8).unwrap_or(0) {
        0 => Properties::builder()
            .push(Property::CorrelationData(Bytes::from(vec![b'x'; over])))
            .map(drop),
        1 => {
            let id = u.int_in_range(268_435_456..=u32::MAX).unwrap_or(u32::MAX);
            Properties::builder()
                .push(Property::SubscriptionIdentifier(id))
                .map(drop)
        }
        2 => Subscriptions::new(&Vec::<(Str, SubscriptionOptions)>::new()).map(drop),
        3 => TopicFilters::new(&Vec::<Str>::new()).map(drop),
        4 => {
            let auth = Packet::Auth(Auth::default());
            let mut vec = Vec::new();
            let refused = auth.encode_to_vec(Version::V311, &mut vec).err();
            assert_eq!(
                refused,
                auth.to_bytes(Version::V311).err(),
                "encoders agree"
            );
            assert!(vec.is_empty(), "nothing written for a refused packet");
            auth.encoded_len(Version::V311).map(drop)
        }
        5 => {
            let topic = Str::from_static("will");
            let will = Will {
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::new(),
                topic,
                payload: Bytes::from(vec![0; over]),
            };
            Connect::new(Version::V5, Str::default(), Some(will), None, None).map(drop)
        }
        6 => Connect::new(
            Version::V311,
            Str::from_static("c"),
            None,
            Some(Str::from_static("u")),
            Some(Bytes::from(vec![0; over])),
        )
        .map(drop),
        _ => {
            let mut text = "name-of-a-thing".to_owned();
            let str_err = match at % 3 {
                0 => {
                    text.insert(at, '\0');
                    Str::try_from(text.as_str()).err()
                }
                1 => Str::from_utf8(Bytes::from(vec![0xed, 0xa0, 0x80])).err(),
                _ => Str::try_from("é".repeat(over / 2)).err(),
            };
            let want = [
                StrError::NullCharacter,
                StrError::NotUtf8,
                StrError::TooLong,
            ][at % 3];
            assert_eq!(str_err, Some(want));
            assert!(!want.to_string().is_empty());
            return;
        }
    };
    let e = err.expect_err("a builder refuses what it cannot encode");
    assert!(!e.to_string().is_empty(), "{e:?}");
}
