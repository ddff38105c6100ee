//! The MQTT close paths no well-behaved client takes, end to end against
//! `sessionwire serve`: a raw socket ([`RawClient`], the codec's packets, or
//! bytes as they are) breaks one rule and must see the close the scenario
//! of `corpus/scenario/mqtt_*.scn` gives: the 5.0 DISCONNECT (or CONNACK)
//! reason code, the close, and the event-log line with its close reason and
//! reason code. The paths real clients can take (takeover, keep alive,
//! oversize, malformed) are in `mqtt_clients.rs`.
//!
//! `SESSIONWIRE_MQTT_BROKER=mosquitto` runs them against mosquitto, which
//! sends no DISCONNECT on some of these paths and lets others pass (a stray
//! acknowledgement, a reused QoS 2 id, no receive maximum, its own CONNECT
//! timeout): those tests check what mosquitto does instead.

use std::time::{Duration, Instant};

use sessionwire::mqtt::{
    Ack, Connect, Packet, PropertiesBuilder, Property, PropertyId, Publish, QoS, Str, Version,
};
use sessionwire_tests::mqtt::{
    broker, payload, tag, Broker, BrokerKind, RawClient, Read, VERSIONS, WAIT,
};

fn topic(t: &str) -> Str {
    Str::try_from(t).expect("a topic")
}

/// A client connected with `id`, CONNACK 0 checked.
fn connected(b: &Broker, version: Version, id: &str) -> RawClient {
    let (c, code) = RawClient::connect(b.addr(), version, id, 0);
    assert_eq!(code, 0, "{version:?} {id}");
    c
}

/// Mosquitto 2.0.11 is lenient where PROTOCOL.md section 8 is strict
/// (a stray acknowledgement, a reused QoS 2 id): there the connection
/// stays open. True when the broker is mosquitto and it did.
fn mosquitto_tolerates(b: &Broker, c: &mut RawClient) -> bool {
    if b.kind() != BrokerKind::Mosquitto {
        return false;
    }
    // Nothing, or a reused id taken as a resend and answered again.
    match c.read(Duration::from_secs(1)) {
        Read::Timeout | Read::Packet(Packet::PubRec(_)) => true,
        other => panic!("mosquitto answered {other:?}"),
    }
}

/// Reads until the close; checks the 5.0 DISCONNECT code (3.1.1: none) on
/// our server and the event-log line.
fn expect_close(
    b: &Broker,
    c: &mut RawClient,
    id: Option<&str>,
    reason: &str,
    code: u8,
    disconnect: bool,
) {
    let seen = c.read_until_closed(WAIT);
    if b.kind() == BrokerKind::Sessionwire {
        let want = (disconnect && c.version == Version::V5).then_some(code);
        assert_eq!(seen, want, "{:?}: {reason}", c.version);
    }
    b.expect_close_event(WAIT, id, reason, Some(code));
}

/// MQTT-3.1.0-1: the first packet must be a CONNECT; anything else closes
/// the connection (no DISCONNECT: no version is known yet).
#[test]
fn mqtt_3_1_0_1_first_packet_not_connect() {
    let b = broker();
    let mut c = RawClient::open(b.addr(), Version::V5);
    c.send(&Packet::PingReq);
    assert_eq!(c.read_until_closed(WAIT), None);
    b.expect_close_event(WAIT, None, "INVALID_INBOUND_MESSAGE", Some(0x82));
}

/// MQTT-3.1.0-2: a second CONNECT is a protocol error (5.0: 0x82).
#[test]
fn mqtt_3_1_0_2_second_connect() {
    let b = broker();
    for version in VERSIONS {
        let id = format!("twice-{}", tag(version));
        let mut c = connected(&b, version, &id);
        let again = Connect::new(version, topic(&id), None, None, None).expect("a CONNECT");
        c.send(&Packet::Connect(again));
        expect_close(&b, &mut c, Some(&id), "INVALID_INBOUND_MESSAGE", 0x82, true);
    }
}

/// MQTT-3.1.2-2: a protocol level the server does not speak is refused with
/// CONNACK 0x01 in the 3.1.1 form (which any client can read), then closed.
#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level() {
    let b = broker();
    let mut c = RawClient::open(b.addr(), Version::V311);
    // CONNECT, protocol name MQTT, level 7, clean session, keep alive 0, id "x".
    c.send_raw(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x07, 0x02, 0x00, 0x00, 0x00, 0x01, b'x',
    ]);
    match c.read(WAIT) {
        Read::Packet(Packet::ConnAck(ack)) => assert_eq!(ack.code, 0x01),
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    assert_eq!(c.read_until_closed(WAIT), None);
    b.expect_close_event(WAIT, None, "ABORTED", Some(0x84));
}

/// MQTT-3.1.3-8: a 3.1.1 CONNECT with an empty client id and clean session
/// 0 is refused with CONNACK 0x02 (identifier rejected), then closed.
#[test]
fn mqtt_3_1_3_8_empty_client_id_without_clean_session() {
    let b = broker();
    let mut connect = Connect::new(Version::V311, topic(""), None, None, None).expect("a CONNECT");
    connect.clean_start = false;
    let (mut c, ack) = RawClient::connect_with(b.addr(), connect);
    assert_eq!(ack.code, 0x02);
    assert_eq!(c.read_until_closed(WAIT), None);
    b.expect_close_event(WAIT, None, "ABORTED", Some(0x85));
}

/// PROTOCOL.md section 8: an acknowledgement for a packet identifier never
/// sent is a bad sequence number: LOST_MESSAGES (5.0 DISCONNECT 0x82).
#[test]
fn mqtt_4_3_2_puback_for_an_id_not_in_flight() {
    let b = broker();
    for version in VERSIONS {
        let id = format!("stray-ack-{}", tag(version));
        let mut c = connected(&b, version, &id);
        c.send(&Packet::PubAck(Ack::new(7)));
        if mosquitto_tolerates(&b, &mut c) {
            continue;
        }
        expect_close(&b, &mut c, Some(&id), "LOST_MESSAGES", 0x82, true);
    }
}

/// MQTT-4.3.3 / 2.2.1-3: a QoS 2 packet identifier reused (without DUP)
/// while its PUBREL is awaited: LOST_MESSAGES (5.0 DISCONNECT 0x82).
#[test]
fn mqtt_4_3_3_packet_id_reused_in_flight() {
    let b = broker();
    for version in VERSIONS {
        let id = format!("reuse-{}", tag(version));
        let mut c = connected(&b, version, &id);
        let publish = Publish::new(&topic("reuse"), b"once").with_qos(QoS::ExactlyOnce, 1);
        c.send(&Packet::Publish(publish.clone()));
        match c.read(WAIT) {
            Read::Packet(Packet::PubRec(ack)) => assert_eq!(ack.packet_id, 1),
            other => panic!("{version:?}: expected PUBREC 1, got {other:?}"),
        }
        c.send(&Packet::Publish(publish));
        if mosquitto_tolerates(&b, &mut c) {
            continue;
        }
        expect_close(&b, &mut c, Some(&id), "LOST_MESSAGES", 0x82, true);
    }
}

/// MQTT-3.3.4-9 (5.0): more QoS 2 PUBLISHes awaiting PUBREL than the
/// CONNACK's Receive Maximum: DISCONNECT 0x93, LOST_MESSAGES.
#[test]
fn mqtt_3_3_4_9_receive_maximum_exceeded() {
    let b = broker();
    let id = "greedy";
    let connect = Connect::new(Version::V5, topic(id), None, None, None).expect("a CONNECT");
    let (mut c, ack) = RawClient::connect_with(b.addr(), connect);
    assert_eq!(ack.code, 0);
    let most = match ack.properties.get(PropertyId::ReceiveMaximum) {
        Some(Property::ReceiveMaximum(m)) => m,
        _ => u16::MAX,
    };
    if b.kind() == BrokerKind::Mosquitto {
        // Mosquitto sets no receive maximum: 65,535 in flight are allowed.
        assert_eq!(most, u16::MAX);
        return;
    }
    assert!(
        most < 1000,
        "a receive maximum this test can exceed: {most}"
    );
    for packet_id in 1..=most + 1 {
        let p = Publish::new(&topic("greedy"), b"q2").with_qos(QoS::ExactlyOnce, packet_id);
        c.send(&Packet::Publish(p));
    }
    expect_close(&b, &mut c, Some(id), "LOST_MESSAGES", 0x93, true);
}

/// MQTT-3.3.2-9 (5.0): a topic alias above the CONNACK's Topic Alias
/// Maximum: DISCONNECT 0x94, INVALID_INBOUND_MESSAGE.
#[test]
fn mqtt_3_3_2_9_topic_alias_above_the_maximum() {
    let b = broker();
    let id = "aliaser";
    let connect = Connect::new(Version::V5, topic(id), None, None, None).expect("a CONNECT");
    let (mut c, ack) = RawClient::connect_with(b.addr(), connect);
    assert_eq!(ack.code, 0);
    let most = match ack.properties.get(PropertyId::TopicAliasMaximum) {
        Some(Property::TopicAliasMaximum(m)) => m,
        _ => 0,
    };
    let alias = PropertiesBuilder::default()
        .push(Property::TopicAlias(most + 1))
        .expect("a topic alias")
        .build();
    c.send(&Packet::Publish(
        Publish::new(&topic("aliased"), b"x").with_properties(alias),
    ));
    expect_close(&b, &mut c, Some(id), "INVALID_INBOUND_MESSAGE", 0x94, true);
}

/// A subscriber that stops reading while messages keep coming. At QoS 0
/// its connection takes nothing more, what passes 256 KiB unwritten is
/// dropped, and once its socket has taken nothing for 10 s it is closed
/// MESSAGE_QUEUE_LIMIT_REACHED (5.0 DISCONNECT 0x97 if there is room behind
/// what it left unread). At QoS 1 its in-flight window bounds what waits
/// for its socket and its full queue drops new messages: it is not closed,
/// its session keeps what it holds. The publisher is served throughout.
#[test]
fn mqtt_message_queue_limit_reached() {
    let b = broker();
    for version in VERSIONS {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let what = format!("{}-q{}", tag(version), qos as u8);
            let id = format!("sleeper-{what}");
            let filter = format!("flood/{what}");
            let mut sleeper = connected(&b, version, &id);
            sleeper.subscribe(&filter, qos);
            let mut flood = connected(&b, version, &format!("flood-{what}"));
            let limit = match qos {
                QoS::AtMostOnce => Duration::from_secs(30),
                _ => Duration::from_secs(3),
            };
            let closed = flood_until_closed(&b, &mut flood, &filter, qos, &id, limit);
            if b.kind() == BrokerKind::Sessionwire {
                if qos == QoS::AtMostOnce {
                    assert!(
                        closed,
                        "{what}: the sleeper was never closed: {:#?}",
                        b.mqtt_events()
                    );
                    // Its connection takes nothing more, so a DISCONNECT may
                    // not find room behind what it left unread.
                    let seen = sleeper.read_until_closed(WAIT);
                    assert!(seen.is_none() || seen == Some(0x97), "{what}: {seen:?}");
                    b.expect_close_event(
                        WAIT,
                        Some(&id),
                        "MESSAGE_QUEUE_LIMIT_REACHED",
                        Some(0x97),
                    );
                } else {
                    assert!(!closed, "{what}: a QoS 1 sleeper was closed");
                }
            }
            // The publisher is still served.
            flood.send(&Packet::PingReq);
            until_pingresp(&mut flood);
        }
    }
}

/// Publishes messages to `filter` in rounds of 50 (1 KiB at QoS 1, where
/// the queue's count is reached first; 30 KiB at QoS 0, to get past the
/// socket buffers to the connection's bound in bytes), each round
/// answered (its PUBACKs at QoS 1, a PINGRESP at QoS 0) as a client
/// keeping to a window waits, 20 rounds a second at most, until `id` is
/// logged closed for a full queue (true) or `limit` passed (false).
fn flood_until_closed(
    b: &Broker,
    flood: &mut RawClient,
    filter: &str,
    qos: QoS,
    id: &str,
    limit: Duration,
) -> bool {
    let body = payload(if qos == QoS::AtMostOnce {
        30 * 1024
    } else {
        1024
    });
    let start = Instant::now();
    let mut round = 0u16;
    while start.elapsed() < limit {
        let began = Instant::now();
        for k in 1..=50 {
            let p = Publish::new(&topic(filter), &body);
            let p = match qos {
                QoS::AtMostOnce => p,
                _ => p.with_qos(qos, (round % 1000) * 50 + k),
            };
            flood.send(&Packet::Publish(p));
        }
        round = round.wrapping_add(1);
        if qos == QoS::AtMostOnce {
            flood.send(&Packet::PingReq);
            until_pingresp(flood);
        } else {
            let mut acked = 0;
            while acked < 50 {
                match flood.read(WAIT) {
                    Read::Packet(Packet::PubAck(_)) => acked += 1,
                    Read::Packet(_) => {}
                    other => panic!("the publisher got {other:?}"),
                }
            }
        }
        let closed = b
            .mqtt_events()
            .iter()
            .any(|e| e["client_id"] == id && e["reason"] == "MESSAGE_QUEUE_LIMIT_REACHED");
        if closed {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).saturating_sub(began.elapsed()));
    }
    false
}

/// Reads until a PINGRESP (other packets are skipped).
fn until_pingresp(c: &mut RawClient) {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.read(deadline.saturating_duration_since(Instant::now())) {
            Read::Packet(Packet::PingResp) => return,
            Read::Packet(_) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

/// A connection that sends no CONNECT is closed after the CONNECT timeout
/// (10 s by default; mosquitto waits longer), CLIENT_UNRESPONSIVE with no
/// packet (no version is known), and the event log says so: a `refused`
/// line (as for any connection ended before its CONNECT was taken) with no
/// client id and no reason code.
#[test]
fn mqtt_connect_timeout() {
    let b = broker();
    let mut c = RawClient::open(b.addr(), Version::V5);
    let start = Instant::now();
    if b.kind() == BrokerKind::Sessionwire {
        assert_eq!(c.read_until_closed(Duration::from_secs(20)), None);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(9) && took <= Duration::from_secs(15),
            "closed after {took:?}"
        );
        let event = b
            .expect_close_event(WAIT, None, "CLIENT_UNRESPONSIVE", None)
            .expect("our server logs it");
        assert_eq!(event["event"], "refused");
        assert_eq!(event["transport"], "mqtt");
        assert!(event.get("client_id").is_none_or(|id| id.is_null()));
        assert!(event.get("reason_code").is_none_or(|c| c.is_null()));
    }
}
