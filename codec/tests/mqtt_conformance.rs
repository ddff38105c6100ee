//! One test per checked rule of MQTT 3.1.1 and 5.0 (docs/mqtt.md lists them):
//! each named after its conformance statement (`mqtt_3_3_1_4_...`) or, for a
//! rule the specification states without a number, after its section
//! (`mqtt_sec_...`). Every input runs whole, in one chunk, byte by byte and
//! through a caller-owned buffer (see `mqtt_common`).

mod mqtt_common;

use mqtt_common::*;
use sessionwire::mqtt::{self, MqttFault, Packet, PropertyId, Sender, Version};
use sessionwire::{CloseReason, Field, Limits, Violation, ViolationKind};

use MqttFault as F;
use Sender::{Client, Server};
use Version::{V311, V5};

/// Checks a violation's kind, offset, reason code and close reason.
#[track_caller]
fn check(v: Violation, kind: ViolationKind, offset: usize, code: u8, close: CloseReason) {
    assert_eq!((v.kind(), v.offset()), (kind, offset), "{v}");
    assert_eq!(v.kind().reason_code(), Some(code), "{v}");
    assert_eq!(v.close_reason(), close, "{v}");
}

/// A malformed packet (0x81).
#[track_caller]
fn malformed(v: Violation, kind: ViolationKind, offset: usize) {
    check(v, kind, offset, 0x81, CloseReason::InvalidInboundMessage);
}

/// A protocol error (0x82).
#[track_caller]
fn protocol_error(v: Violation, f: MqttFault, offset: usize) {
    check(
        v,
        ViolationKind::Mqtt(f),
        offset,
        0x82,
        CloseReason::InvalidInboundMessage,
    );
}

fn m(f: MqttFault) -> ViolationKind {
    ViolationKind::Mqtt(f)
}

fn named(n: &'static str) -> Field {
    Field::Named(n)
}

/// A client PUBLISH at QoS 1 (packet id 1) to `topic` in 3.1.1.
fn publish_v311(topic: &[u8]) -> Vec<u8> {
    pkt(0x32, &[s(topic), vec![0, 1], b"x".to_vec()].concat())
}

/// A client PUBLISH at QoS 0 in 5.0 with these properties.
fn publish_v5(topic: &[u8], p: &[u8], payload: &[u8]) -> Vec<u8> {
    pkt(0x30, &[s(topic), props(p), payload.to_vec()].concat())
}

/// A SUBSCRIBE (packet id 1) with these filter+options entries.
fn subscribe(version: Version, entries: &[u8]) -> Vec<u8> {
    let p = if version == V5 { vec![0] } else { vec![] };
    pkt(0x82, &[vec![0, 1], p, entries.to_vec()].concat())
}

// ---- 1.5 Data representation ----

#[test]
fn mqtt_1_5_4_1_ill_formed_utf8_and_surrogates() {
    // A UTF-16 surrogate (U+D800) encoded in three bytes, then a lone
    // continuation byte, then an overlong '/'.
    for (bad, at) in [
        (&[b'a', 0xed, 0xa0, 0x80][..], 1),
        (&[0x80][..], 0),
        (&[b'a', b'b', 0xc0, 0xaf][..], 2),
    ] {
        for v in [V311, V5] {
            let stream = match v {
                V311 => publish_v311(bad),
                V5 => publish_v5(bad, &[], b""),
            };
            malformed(
                fault(v, Client, &stream),
                ViolationKind::InvalidUtf8(named("topic name")),
                4 + at,
            );
        }
    }
}

#[test]
fn mqtt_1_5_4_2_null_character() {
    malformed(
        fault(V311, Client, &publish_v311(b"a\0b")),
        m(F::NullCharacter(named("topic name"))),
        5,
    );
    let connect = pkt(
        0x10,
        &[s("MQTT"), vec![5, 0x02, 0, 60, 0], s("c\0")].concat(),
    );
    malformed(
        fault(V5, Client, &connect),
        m(F::NullCharacter(named("client identifier"))),
        16,
    );
}

#[test]
fn mqtt_1_5_4_3_bom_is_kept() {
    let topic = "\u{feff}a".as_bytes();
    let Packet::Publish(p) = one(V311, Client, &publish_v311(topic)) else {
        panic!()
    };
    assert_eq!(p.topic().as_bytes(), topic);
}

#[test]
fn mqtt_1_5_4_controls_and_noncharacters_are_accepted() {
    // "SHOULD NOT" for senders: accepted, see docs/mqtt.md.
    for t in ["a\u{1}b", "\u{7f}", "\u{9f}", "\u{fffe}", "\u{10ffff}"] {
        let Packet::Publish(p) = one(V311, Client, &publish_v311(t.as_bytes())) else {
            panic!()
        };
        assert_eq!(p.topic(), t);
    }
}

#[test]
fn mqtt_1_5_5_1_variable_byte_integer_shortest_form() {
    // Remaining length 2 written in two bytes.
    malformed(
        fault(V311, Client, &[0xc0, 0x82, 0x00]),
        m(F::VarIntNotMinimal(named("remaining length"))),
        2,
    );
    // A property length 0 in two bytes.
    malformed(
        fault(V5, Client, &pkt(0x30, &[s("t"), vec![0x80, 0x00]].concat())),
        m(F::VarIntNotMinimal(named("property length"))),
        6,
    );
    // A subscription identifier 1 in two bytes.
    let entries = [s("a"), vec![0]].concat();
    let stream = pkt(0x82, &[vec![0, 1, 3, 0x0b, 0x81, 0x00], entries].concat());
    malformed(
        fault(V5, Client, &stream),
        m(F::VarIntNotMinimal(named("property"))),
        7,
    );
}

#[test]
fn mqtt_1_5_5_1_variable_byte_integer_at_most_four_bytes() {
    malformed(
        fault(V311, Client, &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        m(F::VarIntTooLong(named("remaining length"))),
        1,
    );
}

#[test]
fn mqtt_1_5_7_1_user_property_strings() {
    let p = [vec![0x26], s("k"), s("v\0")].concat();
    malformed(
        fault(V5, Client, &publish_v5(b"t", &p, b"")),
        m(F::NullCharacter(named("user property value"))),
        13,
    );
    let p = [vec![0x26], s([0xff]), s("v")].concat();
    malformed(
        fault(V5, Client, &publish_v5(b"t", &p, b"")),
        ViolationKind::InvalidUtf8(named("user property name")),
        9,
    );
}

// ---- 2 Packet format ----

#[test]
fn mqtt_sec_2_1_2_reserved_packet_types() {
    malformed(
        fault(V311, Client, &[0x00, 0x00]),
        m(F::ReservedPacketType(0)),
        0,
    );
    malformed(
        fault(V5, Server, &[0x00, 0x00]),
        m(F::ReservedPacketType(0)),
        0,
    );
    // AUTH does not exist in 3.1.1.
    malformed(
        fault(V311, Client, &[0xf0, 0x00]),
        m(F::ReservedPacketType(15)),
        0,
    );
    assert!(matches!(one(V5, Client, &[0xf0, 0x00]), Packet::Auth(_)));
}

#[test]
fn mqtt_sec_2_1_2_packet_direction() {
    use mqtt::PacketType as T;
    for (first, ty) in [
        (0x20, T::ConnAck),
        (0x90, T::SubAck),
        (0xb0, T::UnsubAck),
        (0xd0, T::PingResp),
    ] {
        protocol_error(
            fault(V5, Client, &[first, 0x00]),
            F::UnexpectedPacket(ty),
            0,
        );
    }
    for (first, ty) in [
        (0x10, T::Connect),
        (0x82, T::Subscribe),
        (0xa2, T::Unsubscribe),
        (0xc0, T::PingReq),
    ] {
        protocol_error(
            fault(V311, Server, &[first, 0x00]),
            F::UnexpectedPacket(ty),
            0,
        );
    }
}

#[test]
fn mqtt_2_1_3_1_reserved_flags() {
    // Every type but PUBLISH has fixed flags; any other value is malformed.
    for (ty, fixed, from) in [
        (1u8, 0u8, Client),
        (2, 0, Server),
        (4, 0, Client),
        (5, 0, Client),
        (6, 2, Client),
        (7, 0, Client),
        (8, 2, Client),
        (9, 0, Server),
        (10, 2, Client),
        (11, 0, Server),
        (12, 0, Client),
        (13, 0, Server),
        (14, 0, Client),
        (15, 0, Client),
    ] {
        for flags in (0..16u8).filter(|&f| f != fixed) {
            let first = (ty << 4) | flags;
            malformed(fault(V5, from, &[first, 0]), m(F::ReservedFlags(first)), 0);
        }
    }
}

#[test]
fn mqtt_2_2_2_2_v311_invalid_flags_close_the_connection() {
    // 3.1.1 numbers the same rule MQTT-2.2.2-1 and -2.
    malformed(
        fault(V311, Client, &[0xc1, 0]),
        m(F::ReservedFlags(0xc1)),
        0,
    );
}

#[test]
fn mqtt_2_2_1_3_packet_identifier_zero() {
    for (v, stream, at) in [
        // After the topic "t".
        (V311, pkt(0x32, &[s("t"), vec![0, 0]].concat()), 5),
        (V5, pkt(0x34, &[s("t"), vec![0, 0, 0]].concat()), 5),
        // First in the variable header.
        (V311, pkt(0x82, &[vec![0, 0], s("a"), vec![0]].concat()), 2),
        (V5, pkt(0xa2, &[vec![0, 0, 0], s("a")].concat()), 2),
        (V311, pkt(0x40, &[0, 0]), 2),
        (V5, pkt(0x62, &[0, 0]), 2),
    ] {
        protocol_error(fault(v, Client, &stream), F::PacketIdZero, at);
    }
}

#[test]
fn mqtt_2_3_1_1_v311_packet_identifier_zero() {
    protocol_error(
        fault(V311, Client, &pkt(0xa2, &[vec![0, 0], s("a")].concat())),
        F::PacketIdZero,
        2,
    );
}

#[test]
fn mqtt_2_2_1_2_qos_0_publish_has_no_packet_identifier() {
    // The two bytes after the topic are payload at QoS 0.
    let Packet::Publish(p) = one(V311, Client, &pkt(0x30, &[s("t"), vec![0, 0]].concat())) else {
        panic!()
    };
    assert_eq!((p.packet_id, p.payload()), (0, &[0u8, 0][..]));
}

#[test]
fn mqtt_sec_2_1_4_packet_too_large() {
    let limits = Limits::builder().max_message_size(64).build().unwrap();
    // 1 + 1 + 62 bytes: exactly the limit.
    let ok = pkt(0x30, &[s("t"), vec![b'x'; 59]].concat());
    assert_eq!(ok.len(), 64);
    let (p, v) = decode_with(Mode::Known(V311, Client), &limits, &ok);
    assert_eq!((p.len(), v), (1, None));
    // One byte more is refused on its fixed header alone, before any of the
    // body arrives.
    let v = decode_with(Mode::Known(V311, Client), &limits, &[0x30, 63])
        .1
        .unwrap();
    check(
        v,
        ViolationKind::MessageTooLarge {
            size: 65,
            limit: 64,
        },
        0,
        0x95,
        CloseReason::MessageTooLarge,
    );
    // A huge declared length is refused just the same.
    let v = decode_with(Mode::Server, &limits, &[0x10, 0xff, 0xff, 0xff, 0x7f])
        .1
        .unwrap();
    assert_eq!(v.close_reason(), CloseReason::MessageTooLarge);
}

#[test]
fn mqtt_sec_2_1_4_trailing_bytes() {
    for (v, from, stream, at) in [
        (V311, Client, pkt(0xc0, &[0]), 2),
        (V311, Client, pkt(0x40, &[0, 1, 0]), 4),
        (V311, Client, pkt(0xe0, &[0]), 2),
        (V311, Server, pkt(0xb0, &[0, 1, 0]), 4),
        (V5, Server, pkt(0x20, &[0, 0, 0, 9]), 5),
        (V311, Client, [&connect_v311()[..2], &[0]].concat(), 0),
    ] {
        if at == 0 {
            continue;
        }
        malformed(fault(v, from, &stream), ViolationKind::TrailingBytes, at);
    }
    let mut connect = connect_v311();
    connect[1] += 1;
    connect.push(0xaa);
    malformed(
        fault(V311, Client, &connect),
        ViolationKind::TrailingBytes,
        15,
    );
}

#[test]
fn mqtt_sec_2_2_2_1_property_length_overrun() {
    // A property length of 5 with 1 byte left.
    malformed(
        fault(V5, Client, &pkt(0x30, &[s("t"), vec![5, 1]].concat())),
        ViolationKind::Truncated(named("properties")),
        5,
    );
    // A string property running past its block.
    let stream = pkt(
        0x30,
        &[s("t"), vec![3, 0x03, 0, 9], b"payload".to_vec()].concat(),
    );
    malformed(
        fault(V5, Client, &stream),
        ViolationKind::Truncated(named("property")),
        9,
    );
}

#[test]
fn mqtt_sec_2_2_2_2_unknown_property() {
    malformed(
        fault(V5, Client, &publish_v5(b"t", &[0x05, 1], b"")),
        m(F::UnknownProperty(0x05)),
        6,
    );
}

#[test]
fn mqtt_sec_2_2_2_2_property_not_allowed_in_packet() {
    // A topic alias on a CONNECT, a session expiry on a PUBLISH.
    let connect = pkt(
        0x10,
        &[
            s("MQTT"),
            vec![5, 0x02, 0, 60],
            props(&[0x23, 0, 1]),
            s("c"),
        ]
        .concat(),
    );
    malformed(
        fault(V5, Client, &connect),
        m(F::PropertyNotAllowed {
            id: 0x23,
            packet: mqtt::PacketType::Connect,
        }),
        13,
    );
    malformed(
        fault(V5, Client, &publish_v5(b"t", &[0x11, 0, 0, 0, 1], b"")),
        m(F::PropertyNotAllowed {
            id: 0x11,
            packet: mqtt::PacketType::Publish,
        }),
        6,
    );
}

#[test]
fn mqtt_sec_2_2_2_2_duplicate_property() {
    let connect = pkt(
        0x10,
        &[
            s("MQTT"),
            vec![5, 0x02, 0, 60],
            props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
            s("c"),
        ]
        .concat(),
    );
    protocol_error(fault(V5, Client, &connect), F::DuplicateProperty(0x11), 18);
    // User properties may repeat; so may subscription identifiers in a
    // server's PUBLISH.
    let p = [vec![0x26], s("k"), s("v"), vec![0x26], s("k"), s("v")].concat();
    assert!(matches!(
        one(V5, Client, &publish_v5(b"t", &p, b"")),
        Packet::Publish(_)
    ));
    let p = [0x0b, 1, 0x0b, 2];
    let Packet::Publish(publish) = one(V5, Server, &publish_v5(b"t", &p, b"")) else {
        panic!()
    };
    let ids: Vec<_> = publish
        .properties
        .iter()
        .filter(|p| p.id() == PropertyId::SubscriptionIdentifier)
        .collect();
    assert_eq!(ids.len(), 2);
    let stream = pkt(
        0x82,
        &[vec![0, 1], props(&[0x0b, 1, 0x0b, 2]), s("a"), vec![0]].concat(),
    );
    protocol_error(fault(V5, Client, &stream), F::DuplicateProperty(0x0b), 7);
}

// ---- 3.1 CONNECT ----

#[test]
fn mqtt_3_1_0_1_first_packet_is_connect() {
    let (p, v) = decode(Mode::Server, &[0xc0, 0x00]);
    assert!(p.is_empty());
    protocol_error(
        v.unwrap(),
        F::UnexpectedPacket(mqtt::PacketType::PingReq),
        0,
    );
}

#[test]
fn mqtt_3_1_0_2_second_connect() {
    let stream = [connect_v5(), connect_v5()].concat();
    let (p, v) = decode(Mode::Server, &stream);
    assert_eq!(p.len(), 1);
    protocol_error(
        v.unwrap(),
        F::UnexpectedPacket(mqtt::PacketType::Connect),
        16,
    );
}

#[test]
fn mqtt_3_1_2_1_protocol_name() {
    let stream = pkt(0x10, &[s("MQTX"), vec![4, 0x02, 0, 60], s("c")].concat());
    malformed(
        decode(Mode::Server, &stream).1.unwrap(),
        m(F::ProtocolName),
        2,
    );
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level() {
    for (name, level) in [("MQTT", 3u8), ("MQTT", 6), ("MQIsdp", 3), ("MQTT", 0)] {
        let stream = pkt(0x10, &[s(name), vec![level, 0x02, 0, 60], s("c")].concat());
        let v = decode(Mode::Server, &stream).1.unwrap();
        // A refusal, not a malformed packet: CONNACK 0x84 (5.0) or 0x01 (3.1.1).
        check(
            v,
            m(F::UnsupportedProtocolLevel(level)),
            4 + name.len(),
            0x84,
            CloseReason::Aborted,
        );
        assert_eq!(mqtt::v311_connack_code(&v), Some(0x01));
    }
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag() {
    let stream = pkt(0x10, &[s("MQTT"), vec![4, 0x03, 0, 60], s("c")].concat());
    malformed(fault(V311, Client, &stream), m(F::ConnectReservedFlag), 9);
}

/// A CONNECT with these flags and payload after the client id.
fn connect_flags(v: Version, flags: u8, rest: &[u8]) -> Vec<u8> {
    let p = if v == V5 { vec![0] } else { vec![] };
    pkt(
        0x10,
        &[
            s("MQTT"),
            vec![v.level(), flags, 0, 60],
            p,
            s("c"),
            rest.to_vec(),
        ]
        .concat(),
    )
}

#[test]
fn mqtt_3_1_2_11_will_qos_without_will_flag() {
    for v in [V311, V5] {
        for qos in [1u8, 2, 3] {
            let stream = connect_flags(v, 0x02 | (qos << 3), &[]);
            malformed(fault(v, Client, &stream), m(F::WillQosWithoutWill), 9);
        }
    }
}

#[test]
fn mqtt_3_1_2_13_v311_will_qos_without_will_flag() {
    let stream = connect_flags(V311, 0x0a, &[]);
    malformed(fault(V311, Client, &stream), m(F::WillQosWithoutWill), 9);
}

#[test]
fn mqtt_3_1_2_12_will_qos_3() {
    let will = [s("w"), s("x")].concat();
    let stream = connect_flags(V311, 0x1e, &will);
    malformed(fault(V311, Client, &stream), m(F::WillQos3), 9);
    let stream = connect_flags(V5, 0x1e, &[vec![0], will].concat());
    malformed(fault(V5, Client, &stream), m(F::WillQos3), 9);
}

#[test]
fn mqtt_3_1_2_13_will_retain_without_will_flag() {
    for v in [V311, V5] {
        let stream = connect_flags(v, 0x22, &[]);
        malformed(fault(v, Client, &stream), m(F::WillRetainWithoutWill), 9);
    }
}

#[test]
fn mqtt_3_1_2_9_will_topic_and_payload_present() {
    let stream = connect_flags(V311, 0x06, &s("w"));
    malformed(
        fault(V311, Client, &stream),
        ViolationKind::Truncated(named("will payload")),
        18,
    );
    let Packet::Connect(c) = one(
        V311,
        Client,
        &connect_flags(V311, 0x2e, &[s("w"), s("x")].concat()),
    ) else {
        panic!()
    };
    let w = c.will().unwrap();
    assert_eq!(
        (w.topic.as_str(), &w.payload[..], w.qos as u8, w.retain),
        ("w", &b"x"[..], 1, true)
    );
}

#[test]
fn mqtt_3_1_2_18_v311_no_user_name_without_its_flag() {
    let stream = connect_flags(V311, 0x02, &s("u"));
    malformed(
        fault(V311, Client, &stream),
        ViolationKind::TrailingBytes,
        15,
    );
}

#[test]
fn mqtt_3_1_2_19_user_name_and_password_present_with_their_flags() {
    let stream = connect_flags(V311, 0x82, &[]);
    malformed(
        fault(V311, Client, &stream),
        ViolationKind::Truncated(named("user name")),
        15,
    );
    let stream = connect_flags(V5, 0xc2, &s("u"));
    malformed(
        fault(V5, Client, &stream),
        ViolationKind::Truncated(named("password")),
        19,
    );
}

#[test]
fn mqtt_3_1_2_22_v311_password_without_user_name() {
    let stream = connect_flags(V311, 0x42, &s("p"));
    malformed(
        fault(V311, Client, &stream),
        m(F::PasswordWithoutUserName),
        9,
    );
    // 5.0 allows a password alone.
    let Packet::Connect(c) = one(V5, Client, &connect_flags(V5, 0x42, &s("p"))) else {
        panic!()
    };
    assert_eq!(
        (c.user_name(), c.password().as_deref()),
        (None, Some(&b"p"[..]))
    );
}

#[test]
fn mqtt_3_1_3_4_client_id_is_utf8() {
    let stream = pkt(0x10, &[s("MQTT"), vec![4, 0x02, 0, 60], s([0xc3])].concat());
    malformed(
        fault(V311, Client, &stream),
        ViolationKind::InvalidUtf8(named("client identifier")),
        14,
    );
}

#[test]
fn mqtt_3_1_3_8_v311_empty_client_id_without_clean_session() {
    let stream = pkt(0x10, &[s("MQTT"), vec![4, 0x00, 0, 60], s("")].concat());
    let v = fault(V311, Client, &stream);
    check(v, m(F::ClientIdRejected), 12, 0x85, CloseReason::Aborted);
    assert_eq!(mqtt::v311_connack_code(&v), Some(0x02));
    // With clean session, or in 5.0 (MQTT-3.1.3-6), an empty id is the
    // server's to assign.
    one(
        V311,
        Client,
        &pkt(0x10, &[s("MQTT"), vec![4, 0x02, 0, 60], s("")].concat()),
    );
    one(
        V5,
        Client,
        &pkt(0x10, &[s("MQTT"), vec![5, 0x00, 0, 60, 0], s("")].concat()),
    );
}

#[test]
fn mqtt_3_1_3_10_v311_will_topic_is_a_topic_name() {
    let stream = connect_flags(V311, 0x06, &[s("w/#"), s("x")].concat());
    malformed(
        fault(V311, Client, &stream),
        m(F::WildcardInTopicName(named("will topic"))),
        19,
    );
    let stream = connect_flags(V311, 0x06, &[s(""), s("x")].concat());
    malformed(
        fault(V311, Client, &stream),
        m(F::EmptyTopic(named("will topic"))),
        15,
    );
}

#[test]
fn mqtt_3_1_3_11_v311_user_name_is_utf8() {
    let stream = connect_flags(V311, 0x82, &s([b'u', 0]));
    malformed(
        fault(V311, Client, &stream),
        m(F::NullCharacter(named("user name"))),
        18,
    );
}

#[test]
fn mqtt_sec_3_1_2_11_connect_property_ranges() {
    let connect = |p: &[u8]| {
        pkt(
            0x10,
            &[s("MQTT"), vec![5, 0x02, 0, 60], props(p), s("c")].concat(),
        )
    };
    for (p, id) in [
        (&[0x21, 0, 0][..], 0x21),
        (&[0x27, 0, 0, 0, 0], 0x27),
        (&[0x17, 2], 0x17),
        (&[0x19, 2], 0x19),
    ] {
        protocol_error(fault(V5, Client, &connect(p)), F::PropertyValue(id), 13);
    }
    let auth_data = [vec![0x16], s("d")].concat();
    protocol_error(
        fault(V5, Client, &connect(&auth_data)),
        F::AuthDataWithoutMethod,
        13,
    );
}

#[test]
fn mqtt_sec_3_1_3_2_will_properties() {
    // Payload format 1 with a payload that is not UTF-8.
    let will = [props(&[0x01, 1]), s("w"), s([0xff])].concat();
    let stream = connect_flags(V5, 0x06, &will);
    check(
        fault(V5, Client, &stream),
        m(F::PayloadNotUtf8),
        24,
        0x99,
        CloseReason::InvalidInboundMessage,
    );
    // A will may not carry a topic alias.
    let will = [props(&[0x23, 0, 1]), s("w"), s("x")].concat();
    let stream = connect_flags(V5, 0x06, &will);
    malformed(
        fault(V5, Client, &stream),
        m(F::PropertyNotAllowed {
            id: 0x23,
            packet: mqtt::PacketType::Connect,
        }),
        17,
    );
}

// ---- 3.2 CONNACK ----

#[test]
fn mqtt_3_2_2_1_connack_reserved_flags() {
    for v in [V311, V5] {
        malformed(
            fault(v, Server, &pkt(0x20, &[0x02, 0, 0])),
            m(F::ConnAckFlags(2)),
            2,
        );
    }
}

#[test]
fn mqtt_3_2_2_6_session_present_with_refusal() {
    protocol_error(
        fault(V311, Server, &pkt(0x20, &[1, 5])),
        F::SessionPresentWithError,
        2,
    );
    protocol_error(
        fault(V5, Server, &pkt(0x20, &[1, 0x87, 0])),
        F::SessionPresentWithError,
        2,
    );
}

#[test]
fn mqtt_3_2_2_8_connack_reason_codes() {
    let pt = mqtt::PacketType::ConnAck;
    protocol_error(
        fault(V311, Server, &pkt(0x20, &[0, 6])),
        F::ReasonCode {
            packet: pt,
            code: 6,
        },
        3,
    );
    protocol_error(
        fault(V5, Server, &pkt(0x20, &[0, 0x01, 0])),
        F::ReasonCode {
            packet: pt,
            code: 1,
        },
        3,
    );
    for code in [0x00, 0x84, 0x85, 0x9f] {
        one(V5, Server, &pkt(0x20, &[0, code, 0]));
    }
}

#[test]
fn mqtt_sec_3_2_2_3_connack_property_ranges() {
    for p in [[0x24u8, 2], [0x25, 2], [0x28, 2], [0x29, 2], [0x2a, 2]] {
        protocol_error(
            fault(V5, Server, &pkt(0x20, &[&[0, 0][..], &props(&p)].concat())),
            F::PropertyValue(p[0]),
            5,
        );
    }
}

// ---- 3.3 PUBLISH ----

#[test]
fn mqtt_3_3_1_2_dup_with_qos_0() {
    for v in [V311, V5] {
        malformed(
            fault(v, Client, &pkt(0x38, &[0, 1, b't'])),
            m(F::DupWithQos0),
            0,
        );
    }
}

#[test]
fn mqtt_3_3_1_4_qos_3() {
    for first in [0x36, 0x37, 0x3e, 0x3f] {
        malformed(
            fault(V311, Client, &pkt(first, &[0, 1, b't', 0, 1])),
            m(F::Qos3),
            0,
        );
    }
}

#[test]
fn mqtt_3_3_2_1_topic_name_is_utf8() {
    malformed(
        fault(V311, Client, &publish_v311(&[b't', 0xf8])),
        ViolationKind::InvalidUtf8(named("topic name")),
        5,
    );
}

#[test]
fn mqtt_3_3_2_2_no_wildcards_in_topic_name() {
    for (t, at) in [("a/+", 6), ("#", 4), ("a+b", 5)] {
        for v in [V311, V5] {
            let stream = if v == V5 {
                publish_v5(t.as_bytes(), &[], b"")
            } else {
                publish_v311(t.as_bytes())
            };
            malformed(
                fault(v, Client, &stream),
                m(F::WildcardInTopicName(named("topic name"))),
                at,
            );
        }
    }
}

#[test]
fn mqtt_3_3_2_8_topic_alias_zero() {
    let v = fault(V5, Client, &publish_v5(b"t", &[0x23, 0, 0], b""));
    check(
        v,
        m(F::TopicAliasZero),
        6,
        0x94,
        CloseReason::InvalidInboundMessage,
    );
}

#[test]
fn mqtt_sec_3_3_2_1_empty_topic_without_alias() {
    protocol_error(
        fault(V5, Client, &publish_v5(b"", &[], b"x")),
        F::EmptyTopicWithoutAlias,
        2,
    );
    let Packet::Publish(p) = one(V5, Client, &publish_v5(b"", &[0x23, 0, 7], b"x")) else {
        panic!()
    };
    assert_eq!(
        p.properties.get(PropertyId::TopicAlias),
        Some(mqtt::Property::TopicAlias(7))
    );
}

#[test]
fn mqtt_4_7_3_1_topic_names_and_filters_are_not_empty() {
    malformed(
        fault(V311, Client, &publish_v311(b"")),
        m(F::EmptyTopic(named("topic name"))),
        2,
    );
    malformed(
        fault(V311, Client, &subscribe(V311, &[s(""), vec![0]].concat())),
        m(F::EmptyTopic(named("topic filter"))),
        4,
    );
}

#[test]
fn mqtt_4_7_3_2_no_null_in_topics() {
    malformed(
        fault(V5, Client, &subscribe(V5, &[s("a\0"), vec![0]].concat())),
        m(F::NullCharacter(named("topic filter"))),
        8,
    );
}

#[test]
fn mqtt_3_3_2_14_response_topic_has_no_wildcards() {
    let p = [vec![0x08], s("r/#")].concat();
    malformed(
        fault(V5, Client, &publish_v5(b"t", &p, b"")),
        m(F::WildcardInTopicName(named("response topic"))),
        11,
    );
}

#[test]
fn mqtt_3_3_4_6_no_subscription_identifier_from_a_client() {
    protocol_error(
        fault(V5, Client, &publish_v5(b"t", &[0x0b, 1], b"")),
        F::SubscriptionIdFromClient,
        6,
    );
}

#[test]
fn mqtt_sec_3_3_2_3_2_payload_format_indicator() {
    protocol_error(
        fault(V5, Client, &publish_v5(b"t", &[0x01, 2], b"")),
        F::PropertyValue(1),
        6,
    );
    let v = fault(
        V5,
        Client,
        &publish_v5(b"t", &[0x01, 1], &[b'o', b'k', 0xff]),
    );
    check(
        v,
        m(F::PayloadNotUtf8),
        10,
        0x99,
        CloseReason::InvalidInboundMessage,
    );
    one(V5, Client, &publish_v5(b"t", &[0x01, 0], &[0xff]));
    one(V5, Client, &publish_v5(b"t", &[0x01, 1], "é".as_bytes()));
}

// ---- 3.4 to 3.7 acknowledgements ----

#[test]
fn mqtt_sec_3_4_2_1_puback_and_pubrec_reason_codes() {
    for first in [0x40, 0x50] {
        let pt = mqtt::PacketType::from_u8(first >> 4).unwrap();
        protocol_error(
            fault(V5, Client, &pkt(first, &[0, 1, 0x92])),
            F::ReasonCode {
                packet: pt,
                code: 0x92,
            },
            4,
        );
        one(V5, Client, &pkt(first, &[0, 1, 0x10]));
    }
}

#[test]
fn mqtt_sec_3_6_2_1_pubrel_and_pubcomp_reason_codes() {
    for first in [0x62, 0x70] {
        let pt = mqtt::PacketType::from_u8(first >> 4).unwrap();
        protocol_error(
            fault(V5, Server, &pkt(first, &[0, 1, 0x10])),
            F::ReasonCode {
                packet: pt,
                code: 0x10,
            },
            4,
        );
        one(V5, Server, &pkt(first, &[0, 1, 0x92]));
    }
}

#[test]
fn mqtt_3_6_1_1_pubrel_flags() {
    malformed(
        fault(V311, Client, &pkt(0x60, &[0, 1])),
        m(F::ReservedFlags(0x60)),
        0,
    );
}

// ---- 3.8 to 3.11 subscriptions ----

#[test]
fn mqtt_3_8_1_1_subscribe_flags() {
    malformed(
        fault(V311, Client, &pkt(0x80, &[0, 1, 0, 1, b'a', 0])),
        m(F::ReservedFlags(0x80)),
        0,
    );
}

#[test]
fn mqtt_3_8_3_1_topic_filter_is_utf8() {
    malformed(
        fault(
            V311,
            Client,
            &subscribe(V311, &[s([0xc0, 0x80]), vec![0]].concat()),
        ),
        ViolationKind::InvalidUtf8(named("topic filter")),
        6,
    );
}

#[test]
fn mqtt_3_8_3_2_subscribe_has_a_filter() {
    protocol_error(
        fault(V5, Client, &subscribe(V5, &[])),
        F::NoSubscriptions,
        5,
    );
    protocol_error(
        fault(V311, Client, &subscribe(V311, &[])),
        F::NoSubscriptions,
        4,
    );
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription() {
    protocol_error(
        fault(
            V5,
            Client,
            &subscribe(V5, &[s("$share/g/a"), vec![0x04]].concat()),
        ),
        F::NoLocalOnShared,
        17,
    );
    one(
        V5,
        Client,
        &subscribe(V5, &[s("$share/g/a"), vec![0x01]].concat()),
    );
    one(V5, Client, &subscribe(V5, &[s("a"), vec![0x04]].concat()));
}

#[test]
fn mqtt_3_8_3_5_subscription_options_reserved_bits() {
    for b in [0x40u8, 0x80, 0x03] {
        malformed(
            fault(V5, Client, &subscribe(V5, &[s("a"), vec![b]].concat())),
            m(F::SubscriptionOptions(b)),
            8,
        );
    }
    // 3.1.1 reserves every bit above the QoS (MQTT-3.8.3-4 there).
    for b in [0x04u8, 0x03] {
        malformed(
            fault(V311, Client, &subscribe(V311, &[s("a"), vec![b]].concat())),
            m(F::SubscriptionOptions(b)),
            7,
        );
    }
}

#[test]
fn mqtt_sec_3_8_3_1_retain_handling_3() {
    protocol_error(
        fault(V5, Client, &subscribe(V5, &[s("a"), vec![0x30]].concat())),
        F::RetainHandling3,
        8,
    );
}

#[test]
fn mqtt_sec_3_8_2_1_2_subscription_identifier_zero() {
    let stream = pkt(
        0x82,
        &[vec![0, 1], props(&[0x0b, 0]), s("a"), vec![0]].concat(),
    );
    protocol_error(fault(V5, Client, &stream), F::PropertyValue(0x0b), 5);
}

#[test]
fn mqtt_4_7_1_2_v311_multi_level_wildcard_placement() {
    for (f, at) in [("a/#/b", 2), ("a#", 1), ("#/", 0)] {
        malformed(
            fault(V311, Client, &subscribe(V311, &[s(f), vec![0]].concat())),
            m(F::WildcardPlacement),
            6 + at,
        );
    }
}

#[test]
fn mqtt_4_7_1_3_v311_single_level_wildcard_placement() {
    for (f, at) in [("a+", 1), ("+a", 0), ("a/b+/c", 3)] {
        malformed(
            fault(V5, Client, &subscribe(V5, &[s(f), vec![0]].concat())),
            m(F::WildcardPlacement),
            7 + at,
        );
    }
    let Packet::Subscribe(sub) = one(
        V5,
        Client,
        &subscribe(V5, &[s("+/x/#"), vec![1], s("#"), vec![2]].concat()),
    ) else {
        panic!()
    };
    let got: Vec<_> = sub
        .subscriptions
        .iter()
        .map(|(f, o)| (f.to_string(), o.qos as u8))
        .collect();
    assert_eq!(got, [("+/x/#".to_string(), 1), ("#".to_string(), 2)]);
}

#[test]
fn mqtt_4_8_2_1_shared_subscription_shape() {
    for f in ["$share//a", "$share/g", "$share/g/"] {
        malformed(
            fault(V5, Client, &subscribe(V5, &[s(f), vec![0]].concat())),
            m(F::SharedSubscription),
            7,
        );
    }
    // In 3.1.1 `$share` is an ordinary topic level.
    one(
        V311,
        Client,
        &subscribe(V311, &[s("$share/g"), vec![0]].concat()),
    );
}

#[test]
fn mqtt_4_8_2_2_share_name_without_wildcards() {
    for f in ["$share/g+/a", "$share/#/a"] {
        malformed(
            fault(V5, Client, &subscribe(V5, &[s(f), vec![0]].concat())),
            m(F::SharedSubscription),
            7,
        );
    }
}

#[test]
fn mqtt_3_9_3_2_suback_return_codes() {
    let pt = mqtt::PacketType::SubAck;
    protocol_error(
        fault(V311, Server, &pkt(0x90, &[0, 1, 0, 0x87])),
        F::ReasonCode {
            packet: pt,
            code: 0x87,
        },
        5,
    );
    protocol_error(
        fault(V5, Server, &pkt(0x90, &[0, 1, 0, 3])),
        F::ReasonCode {
            packet: pt,
            code: 3,
        },
        5,
    );
    one(V5, Server, &pkt(0x90, &[0, 1, 0, 0, 1, 2, 0x87, 0xa2]));
}

#[test]
fn mqtt_3_10_1_1_unsubscribe_flags() {
    malformed(
        fault(V311, Client, &pkt(0xa0, &[0, 1, 0, 1, b'a'])),
        m(F::ReservedFlags(0xa0)),
        0,
    );
}

#[test]
fn mqtt_3_10_3_1_unsubscribe_filter_is_utf8() {
    malformed(
        fault(V311, Client, &pkt(0xa2, &[vec![0, 1], s([0xff])].concat())),
        ViolationKind::InvalidUtf8(named("topic filter")),
        6,
    );
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_has_a_filter() {
    protocol_error(
        fault(V311, Client, &pkt(0xa2, &[0, 1])),
        F::NoUnsubscriptions,
        4,
    );
    protocol_error(
        fault(V5, Client, &pkt(0xa2, &[0, 1, 0])),
        F::NoUnsubscriptions,
        5,
    );
}

#[test]
fn mqtt_sec_3_11_3_unsuback_reason_codes() {
    let pt = mqtt::PacketType::UnsubAck;
    protocol_error(
        fault(V5, Server, &pkt(0xb0, &[0, 1, 0, 0x01])),
        F::ReasonCode {
            packet: pt,
            code: 1,
        },
        5,
    );
    one(V5, Server, &pkt(0xb0, &[0, 1, 0, 0x00, 0x11]));
}

// ---- 3.14 DISCONNECT, 3.15 AUTH ----

#[test]
fn mqtt_3_14_1_1_disconnect_flags() {
    malformed(
        fault(V311, Client, &[0xe1, 0]),
        m(F::ReservedFlags(0xe1)),
        0,
    );
}

#[test]
fn mqtt_3_14_2_1_disconnect_reason_codes() {
    let pt = mqtt::PacketType::Disconnect;
    // Session taken over is the server's to send; disconnect with will the client's.
    protocol_error(
        fault(V5, Client, &pkt(0xe0, &[0x8e])),
        F::ReasonCode {
            packet: pt,
            code: 0x8e,
        },
        2,
    );
    protocol_error(
        fault(V5, Server, &pkt(0xe0, &[0x04])),
        F::ReasonCode {
            packet: pt,
            code: 0x04,
        },
        2,
    );
    one(V5, Server, &pkt(0xe0, &[0x8e]));
    one(V5, Client, &pkt(0xe0, &[0x04]));
}

#[test]
fn mqtt_3_14_2_2_no_session_expiry_in_a_server_disconnect() {
    malformed(
        fault(
            V5,
            Server,
            &pkt(0xe0, &[&[0x00][..], &props(&[0x11, 0, 0, 0, 1])].concat()),
        ),
        m(F::PropertyNotAllowed {
            id: 0x11,
            packet: mqtt::PacketType::Disconnect,
        }),
        4,
    );
    one(
        V5,
        Client,
        &pkt(0xe0, &[&[0x00][..], &props(&[0x11, 0, 0, 0, 1])].concat()),
    );
}

#[test]
fn mqtt_3_15_2_1_auth_reason_codes() {
    let pt = mqtt::PacketType::Auth;
    protocol_error(
        fault(V5, Client, &pkt(0xf0, &[0x01])),
        F::ReasonCode {
            packet: pt,
            code: 1,
        },
        2,
    );
}

#[test]
fn mqtt_sec_3_15_2_2_auth_method_required() {
    protocol_error(
        fault(V5, Client, &pkt(0xf0, &[0x18, 0])),
        F::MissingAuthMethod,
        3,
    );
    let ok = pkt(
        0xf0,
        &[
            &[0x18][..],
            &props(&[vec![0x15], s("SCRAM"), vec![0x16], s("d")].concat()),
        ]
        .concat(),
    );
    one(V5, Client, &ok);
}

// ---- the mapping ----

#[test]
fn mqtt_3_1_4_3_takeover_has_its_close_reason() {
    // The takeover itself is the registry's decision; its reason code 0x8E
    // (in a DISCONNECT the server sends) decodes, and its close reason is
    // SESSION_TAKEN_OVER in PROTOCOL.md section 8.
    let Packet::Disconnect(d) = one(V5, Server, &pkt(0xe0, &[0x8e])) else {
        panic!()
    };
    assert_eq!(d.code, 0x8e);
    assert_eq!(CloseReason::SessionTakenOver.name(), "SESSION_TAKEN_OVER");
}
