//! Byte-building helpers and the "every way" runner shared by the MQTT test
//! binaries: every input is decoded whole, fed to the streaming decoder in
//! one chunk, byte by byte, and through a caller-owned buffer, and the
//! results must agree.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use sessionwire::mqtt::{packet_refs, packets, Decoder, Packet, PacketRef, Sender, Version};
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
    let mut borrowed = (0, None);
    for step in packet_refs(stream, version, from, limits) {
        match step {
            Ok(p) => {
                let Some(q) = one_shot.0.get(borrowed.0) else {
                    panic!("borrowed decode gave more packets: {p:?}");
                };
                assert_same(&p, q);
                borrowed.0 += 1;
            }
            Err(v) => borrowed.1 = Some(v),
        }
    }
    assert_eq!(
        borrowed,
        (one_shot.0.len(), one_shot.1),
        "borrowed vs whole"
    );
    one_shot
}

/// Checks that a borrowed packet says what the owned one says.
#[track_caller]
pub fn assert_same(borrowed: &PacketRef<'_>, owned: &Packet) {
    assert_eq!(borrowed.packet_type(), owned.packet_type());
    assert!(borrowed == owned, "{borrowed:?} is not {owned:?}");
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

use sessionwire::mqtt::{
    Ack, Auth, ConnAck, Connect, Disconnect, Properties, Property, Publish, QoS, Str, SubAck,
    Subscribe, SubscriptionOptions, Subscriptions, TopicFilters, UnsubAck, Unsubscribe, Will,
};

/// A property block in 5.0; none in 3.1.1.
fn block(v: Version, list: Vec<Property>) -> Properties {
    if v == Version::V311 {
        return Properties::new();
    }
    list.into_iter()
        .fold(Properties::builder(), |b, p| b.push(p).expect("fits"))
        .build()
}

fn st(s: &'static str) -> Str {
    Str::from_static(s)
}

fn user() -> Property {
    Property::UserProperty(st("name"), st("value"))
}

/// One packet of every type this version has, with its sender, with every
/// 5.0 property somewhere, and every field that can be non-empty non-empty.
pub fn every_packet(v: Version) -> Vec<(Sender, Packet)> {
    use Property as P;
    use Sender::{Client, Server};
    let v5 = v == Version::V5;
    let code = |c: u8| if v5 { c } else { 0 };
    let auth = || {
        vec![
            P::AuthenticationMethod(st("SCRAM-SHA-1")),
            P::AuthenticationData(Bytes::from_static(b"nonce")),
        ]
    };
    let mut out = vec![
        (
            Client,
            Packet::Connect({
                let will = Will {
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: block(
                        v,
                        vec![
                            P::WillDelayInterval(5),
                            P::PayloadFormatIndicator(1),
                            P::MessageExpiryInterval(60),
                            P::ContentType(st("text/plain")),
                            P::ResponseTopic(st("reply/1")),
                            P::CorrelationData(Bytes::from_static(b"corr")),
                            user(),
                        ],
                    ),
                    topic: st("will/topic"),
                    payload: Bytes::from_static(b"bye"),
                };
                let password = Some(Bytes::from_static(b"s3cret"));
                let mut c =
                    Connect::new(v, st("client-1"), Some(will), Some(st("alice")), password)
                        .expect("fits");
                c.keep_alive = 60;
                c.properties = block(
                    v,
                    [
                        vec![
                            P::SessionExpiryInterval(30),
                            P::ReceiveMaximum(10),
                            P::MaximumPacketSize(1 << 20),
                            P::TopicAliasMaximum(5),
                            P::RequestResponseInformation(1),
                            P::RequestProblemInformation(0),
                            user(),
                        ],
                        auth(),
                    ]
                    .concat(),
                );
                c
            }),
        ),
        (
            Server,
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: block(
                    v,
                    [
                        vec![
                            P::SessionExpiryInterval(30),
                            P::ReceiveMaximum(20),
                            P::MaximumQos(1),
                            P::RetainAvailable(1),
                            P::MaximumPacketSize(65_536),
                            P::AssignedClientIdentifier(st("auto-7")),
                            P::TopicAliasMaximum(3),
                            P::ReasonString(st("welcome")),
                            user(),
                            P::WildcardSubscriptionAvailable(1),
                            P::SubscriptionIdentifierAvailable(1),
                            P::SharedSubscriptionAvailable(0),
                            P::ServerKeepAlive(30),
                            P::ResponseInformation(st("responses/")),
                            P::ServerReference(st("other:1883")),
                        ],
                        auth(),
                    ]
                    .concat(),
                ),
            }),
        ),
        (
            Client,
            Packet::Publish(
                Publish::new(&st("sensors/room-1/temperature"), b"{\"celsius\":21.5}")
                    .with_qos(QoS::AtLeastOnce, 7)
                    .with_retain(true)
                    .with_properties(block(
                        v,
                        vec![
                            P::PayloadFormatIndicator(1),
                            P::MessageExpiryInterval(120),
                            P::TopicAlias(2),
                            P::ResponseTopic(st("reply/7")),
                            P::CorrelationData(Bytes::from_static(&[1, 2, 3])),
                            user(),
                            P::ContentType(st("application/json")),
                        ],
                    )),
            ),
        ),
        (
            Server,
            Packet::Publish(
                Publish::new(&st("a/b"), &[0, 0xff, 0x80])
                    .with_qos(QoS::ExactlyOnce, 65_535)
                    .with_dup(true)
                    .with_properties(block(
                        v,
                        vec![
                            P::SubscriptionIdentifier(1),
                            P::SubscriptionIdentifier(300_000),
                        ],
                    )),
            ),
        ),
        (Server, Packet::Publish(Publish::new(&st("t"), b""))),
        (Client, Packet::PubAck(Ack::new(7))),
        (
            Server,
            Packet::PubAck(Ack {
                packet_id: 8,
                code: code(0x10),
                properties: Properties::new(),
            }),
        ),
        (
            Client,
            Packet::PubRec(Ack {
                packet_id: 9,
                code: code(0x80),
                properties: block(v, vec![P::ReasonString(st("no")), user()]),
            }),
        ),
        (Server, Packet::PubRel(Ack::new(9))),
        (
            Client,
            Packet::PubComp(Ack {
                packet_id: 9,
                code: code(0x92),
                properties: Properties::new(),
            }),
        ),
        (
            Client,
            Packet::Subscribe(Subscribe {
                packet_id: 10,
                properties: block(v, vec![P::SubscriptionIdentifier(42), user()]),
                subscriptions: Subscriptions::new(&[
                    (st("a/+/c"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
                    (
                        st("$share/group/x/#"),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: false,
                            retain_as_published: v5,
                            retain_handling: code(2),
                        },
                    ),
                    (
                        st("#"),
                        SubscriptionOptions {
                            no_local: v5,
                            ..SubscriptionOptions::qos(QoS::AtMostOnce)
                        },
                    ),
                ])
                .expect("one at least"),
            }),
        ),
        (
            Server,
            Packet::SubAck(SubAck {
                packet_id: 10,
                properties: block(v, vec![P::ReasonString(st("partly")), user()]),
                codes: Bytes::from_static(if v5 {
                    &[0x01, 0x02, 0x87]
                } else {
                    &[0x01, 0x02, 0x80]
                }),
            }),
        ),
        (
            Client,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 11,
                properties: block(v, vec![user()]),
                filters: TopicFilters::new(&[st("a/+/c"), st("#")]).expect("one at least"),
            }),
        ),
        (
            Server,
            Packet::UnsubAck(UnsubAck {
                packet_id: 11,
                properties: block(v, vec![P::ReasonString(st("done"))]),
                codes: if v5 {
                    Bytes::from_static(&[0x00, 0x11])
                } else {
                    Bytes::new()
                },
            }),
        ),
        (Client, Packet::PingReq),
        (Server, Packet::PingResp),
        (
            Client,
            Packet::Disconnect(Disconnect {
                code: code(0x04),
                properties: block(
                    v,
                    vec![
                        P::SessionExpiryInterval(0),
                        P::ReasonString(st("bye")),
                        user(),
                    ],
                ),
            }),
        ),
    ];
    if v5 {
        out.push((
            Server,
            Packet::Disconnect(Disconnect {
                code: 0x8e,
                properties: block(v, vec![P::ServerReference(st("b:1883"))]),
            }),
        ));
        out.push((
            Client,
            Packet::Auth(Auth {
                code: 0x18,
                properties: block(v, auth()),
            }),
        ));
        out.push((
            Server,
            Packet::Auth(Auth {
                code: 0x00,
                properties: block(v, [auth(), vec![P::ReasonString(st("ok"))]].concat()),
            }),
        ));
    }
    out
}
