//! The registry driven as a server drives it, by a test client that builds
//! its packets with the packet codec and reads the server's with a
//! client-side decoder. Every stream a test sends goes in whole and, in a
//! second run, byte by byte ([`both_ways`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::mqtt::{
    Ack, Connect, Decoder, Disconnect, Packet, Properties, Property, PropertyId, Publish, QoS,
    Sender, Str, Subscribe, SubscriptionOptions, Subscriptions, TopicFilters, Unsubscribe, Version,
    Will,
};
use crate::session::ids::SeededRandom;
use crate::{CloseReason, Limits};
use std::collections::HashMap;

/// What a test saw, all connections together.
#[derive(Debug, Default)]
struct Seen {
    /// Packets the server wrote, by connection, in order.
    sent: Vec<(ConnId, Packet)>,
    events: Vec<Event>,
    closes: Vec<(ConnId, Close)>,
}

/// A server stand-in: accepts every CONNECT (or refuses it as `refuse`
/// says), drains everything after each call.
struct Harness {
    registry: Registry<SeededRandom>,
    now: Instant,
    refuse: Option<Refuse>,
    versions: std::collections::HashMap<ConnId, Version>,
    seen: Seen,
    byte_by_byte: bool,
}

impl Harness {
    fn new(config: MqttConfig) -> Harness {
        let t0 = Instant::now();
        Harness {
            registry: Registry::new(config, SeededRandom::new(7)),
            now: t0,
            refuse: None,
            versions: Default::default(),
            seen: Seen::default(),
            byte_by_byte: false,
        }
    }

    fn open(&mut self, conn: u64) {
        self.registry.open(self.now, ConnId(conn));
        self.drain();
    }

    /// The client on `conn` sends `bytes` (whole, or byte by byte).
    fn recv(&mut self, conn: u64, bytes: &[u8]) {
        if self.byte_by_byte {
            for b in bytes {
                self.registry
                    .handle_bytes(self.now, ConnId(conn), std::slice::from_ref(b));
                self.drain();
            }
        } else {
            self.registry.handle_bytes(self.now, ConnId(conn), bytes);
            self.drain();
        }
    }

    fn send(&mut self, conn: u64, version: Version, packet: Packet) {
        let bytes = packet.to_bytes(version).unwrap();
        self.recv(conn, &bytes);
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while let Some(t) = self.registry.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.registry.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn drain(&mut self) {
        loop {
            let mut any = false;
            while let Some(e) = self.registry.poll_event() {
                any = true;
                match e {
                    Event::Connect(incoming) => {
                        self.versions
                            .insert(incoming.conn(), incoming.connect().version);
                        match self.refuse {
                            Some(why) => self.registry.refuse(self.now, incoming, why),
                            None => self.registry.accept(self.now, incoming),
                        }
                    }
                    other => self.seen.events.push(other),
                }
            }
            while let Some((conn, bytes)) = self.registry.poll_transmit() {
                any = true;
                let version = self.versions.get(&conn).copied().unwrap_or(Version::V311);
                let mut d = Decoder::new(version, Sender::Server, &Limits::default());
                let mut input = &bytes[..];
                let p = d.feed(&mut input).unwrap().unwrap();
                assert!(input.is_empty(), "one packet per transmit");
                self.seen.sent.push((conn, p));
            }
            while let Some(c) = self.registry.poll_close() {
                any = true;
                self.seen.closes.push(c);
            }
            if !any {
                return;
            }
        }
    }

    /// Packets sent to `conn`, taken.
    fn sent_to(&mut self, conn: u64) -> Vec<Packet> {
        let (mine, rest) = std::mem::take(&mut self.seen.sent)
            .into_iter()
            .partition(|(c, _)| *c == ConnId(conn));
        self.seen.sent = rest;
        mine.into_iter().map(|(_, p)| p).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.seen.events)
    }

    fn closes(&mut self) -> Vec<(ConnId, Close)> {
        std::mem::take(&mut self.seen.closes)
    }

    /// Opens `conn` and connects `client_id` with clean start, checking the
    /// CONNACK.
    fn connect(&mut self, conn: u64, connect: Connect) -> Packet {
        self.open(conn);
        let version = connect.version;
        self.send(conn, version, Packet::Connect(connect));
        let mut sent = self.sent_to(conn).into_iter();
        let connack = sent.next().expect("no CONNACK");
        // What follows the CONNACK stays for the test to read.
        let rest = sent.map(|p| (ConnId(conn), p));
        self.seen.sent.splice(0..0, rest);
        connack
    }
}

fn connect(version: Version, client_id: &'static str) -> Connect {
    Connect::new(version, Str::from_static(client_id), None, None, None).unwrap()
}

fn publish(topic: &'static str, payload: &[u8], qos: QoS, id: u16) -> Publish {
    Publish::new(&Str::from_static(topic), payload).with_qos(qos, id)
}

fn deliver(h: &mut Harness, client: &str, qos: QoS, payload: &'static [u8]) {
    deliver_to_topic(h, client, "t/1", qos, payload);
}

/// Delivers `payload` on `topic` to `client` at `qos`.
fn deliver_to_topic(h: &mut Harness, client: &str, topic: &str, qos: QoS, payload: &'static [u8]) {
    let message = Message {
        topic: Str::try_from(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: Properties::new(),
        expires_at: None,
    };
    let delivery = Delivery {
        qos,
        retain: false,
        subscription_ids: Vec::new(),
    };
    h.registry.deliver(h.now, client, &message, delivery);
    h.drain();
}

fn connack_code(p: &Packet) -> (bool, u8) {
    match p {
        Packet::ConnAck(c) => (c.session_present, c.code),
        other => panic!("not a CONNACK: {other:?}"),
    }
}

/// Runs `test` with the client's bytes whole, then byte by byte.
fn both_ways(test: impl Fn(&mut Harness)) {
    for byte_by_byte in [false, true] {
        let mut h = Harness::new(MqttConfig::default());
        h.byte_by_byte = byte_by_byte;
        test(&mut h);
    }
}

#[test]
fn mqtt_3_2_2_connack_accepts_both_versions() {
    both_ways(|h| {
        for (conn, version) in [(1, Version::V311), (2, Version::V5)] {
            let ack = h.connect(conn, connect(version, if conn == 1 { "a" } else { "b" }));
            assert_eq!(connack_code(&ack), (false, 0));
            let ev = h.events();
            assert!(
                matches!(&ev[..], [Event::Connected { client_id, version: v, session_present: false, .. }] if *v == version && !client_id.is_empty()),
                "{ev:?}"
            );
        }
        assert_eq!(h.registry.connected(), 2);
        assert_eq!(h.registry.sessions().count(), 2);
    });
}

#[test]
fn mqtt_3_2_2_v5_connack_announces_the_limits() {
    let mut h = Harness::new(MqttConfig {
        server_keep_alive: Some(30),
        maximum_qos: QoS::AtLeastOnce,
        max_session_expiry: 100,
        ..MqttConfig::default()
    });
    let mut c = connect(Version::V5, "");
    c.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(1000))
        .unwrap()
        .build();
    let Packet::ConnAck(ack) = h.connect(1, c) else {
        panic!()
    };
    let get = |id| ack.properties.get(id);
    let Some(Property::AssignedClientIdentifier(id)) = get(PropertyId::AssignedClientIdentifier)
    else {
        panic!("{ack:?}")
    };
    assert!(id.starts_with("auto-"));
    assert_eq!(
        get(PropertyId::SessionExpiryInterval),
        Some(Property::SessionExpiryInterval(100))
    );
    assert_eq!(
        get(PropertyId::ReceiveMaximum),
        Some(Property::ReceiveMaximum(64))
    );
    assert_eq!(get(PropertyId::MaximumQos), Some(Property::MaximumQos(1)));
    assert_eq!(
        get(PropertyId::ServerKeepAlive),
        Some(Property::ServerKeepAlive(30))
    );
    assert_eq!(
        get(PropertyId::TopicAliasMaximum),
        Some(Property::TopicAliasMaximum(16))
    );
    assert_eq!(
        get(PropertyId::MaximumPacketSize),
        Some(Property::MaximumPacketSize(32 * 1024))
    );
    // The server keep alive rules: nothing for 45 s closes the client.
    h.advance(44_999);
    assert!(h.closes().is_empty());
    h.advance(1);
    let closes = h.closes();
    assert_eq!(closes[0].1.reason, CloseReason::ClientUnresponsive);
}

#[test]
fn mqtt_3_1_3_refusals_by_the_server_both_versions() {
    let cases = [
        (Refuse::BadCredentials, 0x04, 0x86, CloseReason::Aborted),
        (Refuse::NotAuthorized, 0x05, 0x87, CloseReason::Aborted),
        (Refuse::Busy, 0x03, 0x89, CloseReason::ConnectionLost),
    ];
    for (why, v311, v5, reason) in cases {
        let mut h = Harness::new(MqttConfig::default());
        h.refuse = Some(why);
        assert_eq!(
            connack_code(&h.connect(1, connect(Version::V311, "a"))),
            (false, v311)
        );
        assert_eq!(
            connack_code(&h.connect(2, connect(Version::V5, "a"))),
            (false, v5)
        );
        let closes = h.closes();
        assert_eq!(closes.len(), 2);
        assert_eq!(closes[0].1.reason, reason);
        assert_eq!(closes[1].1.code, Some(v5));
        assert_eq!(h.registry.connected(), 0);
    }
}

#[test]
fn mqtt_3_1_3_client_limit_refuses_busy() {
    let mut h = Harness::new(MqttConfig {
        limits: Limits::builder().max_clients(1).build().unwrap(),
        ..MqttConfig::default()
    });
    assert_eq!(connack_code(&h.connect(1, connect(Version::V5, "a"))).1, 0);
    assert_eq!(
        connack_code(&h.connect(2, connect(Version::V5, "b"))).1,
        0x89
    );
    // A takeover of a connected client does not need a free slot.
    assert_eq!(connack_code(&h.connect(3, connect(Version::V5, "a"))).1, 0);
}

#[test]
fn mqtt_3_1_2_2_unsupported_level_answered_0x01() {
    both_ways(|h| {
        h.open(1);
        // MQTT 3.1 (MQIsdp, level 3).
        let mut bytes = vec![0x10, 0x0f, 0, 6];
        bytes.extend_from_slice(b"MQIsdp");
        bytes.extend_from_slice(&[3, 2, 0, 60, 0, 1, b'c']);
        h.recv(1, &bytes);
        assert_eq!(connack_code(&h.sent_to(1)[0]), (false, 0x01));
        let closes = h.closes();
        assert_eq!(
            (closes[0].1.reason, closes[0].1.code),
            (CloseReason::Aborted, Some(0x84))
        );
    });
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    both_ways(|h| {
        h.open(1);
        h.recv(1, &[0xc0, 0x00]); // PINGREQ
        assert!(h.sent_to(1).is_empty());
        let closes = h.closes();
        assert_eq!(closes[0].1.reason, CloseReason::InvalidInboundMessage);
        assert_eq!(closes[0].1.client_id, None);
    });
}

#[test]
fn mqtt_3_1_0_2_second_connect() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "a"));
        h.events();
        h.send(1, Version::V5, Packet::Connect(connect(Version::V5, "a")));
        let sent = h.sent_to(1);
        assert!(
            matches!(&sent[..], [Packet::Disconnect(d)] if d.code == 0x82),
            "{sent:?}"
        );
        let closes = h.closes();
        assert_eq!(
            (closes[0].1.reason, closes[0].1.client_id.as_deref()),
            (CloseReason::InvalidInboundMessage, Some("a"))
        );
        // An unclean end: the session (clean start, expiry 0) ends.
        assert!(matches!(&h.events()[..], [Event::SessionEnded { .. }]));
    });
}

#[test]
fn mqtt_3_1_4_3_takeover() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "same"));
        h.connect(2, connect(Version::V311, "same"));
        let old = h.sent_to(1);
        assert!(
            matches!(&old[..], [Packet::Disconnect(d)] if d.code == 0x8E),
            "{old:?}"
        );
        let closes = h.closes();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].0, ConnId(1));
        assert_eq!(closes[0].1.reason, CloseReason::SessionTakenOver);
        assert_eq!(closes[0].1.code, Some(0x8E));
        assert_eq!(h.registry.connected(), 1);
        assert!(h.registry.is_connected("same"));
        assert!(!h.registry.is_connected("other"));
        let info: Vec<SessionInfo> = h.registry.sessions().collect();
        assert_eq!(
            info,
            [SessionInfo {
                client_id: "same".into(),
                version: Version::V311,
                conn: Some(ConnId(2))
            }]
        );
    });
}

#[test]
fn registry_queues_let_go_of_a_bursts_room_only_once_empty() {
    let mut h = Harness::new(MqttConfig::default());
    let bytes = Packet::Connect(connect(Version::V5, ""))
        .to_bytes(Version::V5)
        .unwrap();
    // A ramp: 300 CONNECTs in before any is answered.
    for conn in 0..300 {
        h.registry.open(h.now, ConnId(conn));
        h.registry.handle_bytes(h.now, ConnId(conn), &bytes);
    }
    let room = h.registry.queue_room();
    assert!(room >= 300, "{room}");
    // Not empty yet: the room stays.
    h.registry.shrink_queues();
    assert_eq!(h.registry.queue_room(), room);
    h.drain();
    assert_eq!(h.registry.connected(), 300);
    h.registry.shrink_queues();
    assert_eq!(h.registry.queue_room(), 0);
    // And the queues take what comes next.
    let ack = h.connect(300, connect(Version::V311, "next"));
    assert_eq!(connack_code(&ack), (false, 0));
}

#[test]
fn mqtt_3_1_2_24_keep_alive() {
    both_ways(|h| {
        let mut c = connect(Version::V311, "k");
        c.keep_alive = 10;
        h.connect(1, c);
        // A PINGREQ at 14 s keeps it alive until 29 s.
        h.advance(14_000);
        h.recv(1, &[0xc0, 0x00]);
        assert_eq!(h.sent_to(1), [Packet::PingResp]);
        h.advance(14_999);
        assert!(h.closes().is_empty());
        h.advance(1);
        let closes = h.closes();
        assert_eq!(
            (closes[0].1.reason, closes[0].1.code),
            (CloseReason::ClientUnresponsive, Some(0x8D))
        );
        // 3.1.1 has no DISCONNECT from the server.
        assert!(h.sent_to(1).is_empty());
    });
}

#[test]
fn mqtt_connect_timeout_closes_a_silent_connection() {
    let mut h = Harness::new(MqttConfig::default());
    h.open(1);
    h.recv(1, &[0x10]); // part of a fixed header
    h.advance(9_999);
    assert!(h.closes().is_empty());
    h.advance(1);
    let closes = h.closes();
    assert_eq!(
        (closes[0].1.reason, closes[0].1.code),
        (CloseReason::ClientUnresponsive, None)
    );
    assert_eq!(h.registry.connections(), 0);
}

#[test]
fn mqtt_4_3_publish_qos_0_1_2_from_the_client() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "p"));
        h.events();
        h.send(
            1,
            Version::V5,
            Packet::Publish(publish("a/0", b"x", QoS::AtMostOnce, 0)),
        );
        h.send(
            1,
            Version::V5,
            Packet::Publish(publish("a/1", b"y", QoS::AtLeastOnce, 5)),
        );
        h.send(
            1,
            Version::V5,
            Packet::Publish(publish("a/2", b"z", QoS::ExactlyOnce, 6)),
        );
        h.send(1, Version::V5, Packet::PubRel(Ack::new(6)));
        assert_eq!(
            h.sent_to(1),
            [
                Packet::PubAck(Ack::new(5)),
                Packet::PubRec(Ack::new(6)),
                Packet::PubComp(Ack::new(6)),
            ]
        );
        let topics: Vec<(String, QoS)> = h
            .events()
            .into_iter()
            .map(|e| match e {
                Event::Publish { from, message } => {
                    assert_eq!(from, "p");
                    (message.topic.as_str().to_owned(), message.qos)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            topics,
            [
                ("a/0".into(), QoS::AtMostOnce),
                ("a/1".into(), QoS::AtLeastOnce),
                ("a/2".into(), QoS::ExactlyOnce)
            ]
        );
    });
}

#[test]
fn mqtt_4_3_3_qos2_resend_with_dup_is_not_delivered_twice() {
    both_ways(|h| {
        h.connect(1, connect(Version::V311, "p"));
        h.events();
        let p = publish("a", b"z", QoS::ExactlyOnce, 6);
        h.send(1, Version::V311, Packet::Publish(p.clone()));
        h.send(1, Version::V311, Packet::Publish(p.with_dup(true)));
        assert_eq!(
            h.sent_to(1),
            [Packet::PubRec(Ack::new(6)), Packet::PubRec(Ack::new(6))]
        );
        assert_eq!(h.events().len(), 1);
    });
}

#[test]
fn mqtt_2_2_1_packet_id_reused_while_in_flight() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "p"));
        let p = publish("a", b"z", QoS::ExactlyOnce, 6);
        h.send(1, Version::V5, Packet::Publish(p.clone()));
        h.send(1, Version::V5, Packet::Publish(p));
        let sent = h.sent_to(1);
        assert!(matches!(&sent[..], [_, Packet::Disconnect(d)] if d.code == 0x82));
        assert_eq!(h.closes()[0].1.reason, CloseReason::LostMessages);
    });
}

#[test]
fn mqtt_4_9_0_2_receive_maximum() {
    both_ways(|h| {
        h.registry = Registry::new(
            MqttConfig {
                receive_maximum: 2,
                ..MqttConfig::default()
            },
            SeededRandom::new(1),
        );
        h.connect(1, connect(Version::V5, "p"));
        for id in 1..=3 {
            h.send(
                1,
                Version::V5,
                Packet::Publish(publish("a", b"z", QoS::ExactlyOnce, id)),
            );
        }
        let sent = h.sent_to(1);
        assert!(
            matches!(&sent[..], [_, _, Packet::Disconnect(d)] if d.code == 0x93),
            "{sent:?}"
        );
        let closes = h.closes();
        assert_eq!(
            (closes[0].1.reason, closes[0].1.code),
            (CloseReason::LostMessages, Some(0x93))
        );
    });
}

#[test]
fn mqtt_4_3_2_ack_for_an_id_never_sent() {
    both_ways(|h| {
        h.connect(1, connect(Version::V311, "p"));
        h.send(1, Version::V311, Packet::PubAck(Ack::new(9)));
        let closes = h.closes();
        assert_eq!(closes[0].1.reason, CloseReason::LostMessages);
        assert_eq!(closes[0].1.code, Some(0x82));
    });
}

#[test]
fn mqtt_3_3_2_8_topic_alias_set_used_and_checked() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "p"));
        h.events();
        let alias = |a| {
            Properties::builder()
                .push(Property::TopicAlias(a))
                .unwrap()
                .build()
        };
        let set = publish("long/topic", b"1", QoS::AtMostOnce, 0).with_properties(alias(3));
        let used = publish("", b"2", QoS::AtMostOnce, 0).with_properties(alias(3));
        h.send(1, Version::V5, Packet::Publish(set));
        h.send(1, Version::V5, Packet::Publish(used));
        let topics: Vec<String> = h
            .events()
            .into_iter()
            .map(|e| match e {
                Event::Publish { message, .. } => message.topic.as_str().to_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(topics, ["long/topic", "long/topic"]);
        // Above the maximum (16): 0x94.
        let bad = publish("x", b"3", QoS::AtMostOnce, 0).with_properties(alias(17));
        h.send(1, Version::V5, Packet::Publish(bad));
        assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == 0x94));
        assert_eq!(h.closes()[0].1.reason, CloseReason::InvalidInboundMessage);
    });
}

#[test]
fn mqtt_3_3_4_unknown_topic_alias_is_a_protocol_error() {
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, connect(Version::V5, "p"));
    let p = publish("", b"2", QoS::AtMostOnce, 0).with_properties(
        Properties::builder()
            .push(Property::TopicAlias(4))
            .unwrap()
            .build(),
    );
    h.send(1, Version::V5, Packet::Publish(p));
    assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == 0x82));
}

/// A fresh registry whose maximum QoS is 1.
fn qos_1_at_most(h: &mut Harness) {
    h.registry = Registry::new(
        MqttConfig {
            maximum_qos: QoS::AtLeastOnce,
            ..MqttConfig::default()
        },
        SeededRandom::new(1),
    );
}

#[test]
fn mqtt_3_8_4_subscribe_and_unsubscribe_are_answered_and_reported() {
    both_ways(|h| {
        qos_1_at_most(h);
        h.connect(1, connect(Version::V5, "s"));
        h.events();
        let subs = [
            (
                Str::from_static("a/#"),
                SubscriptionOptions::qos(QoS::ExactlyOnce),
            ),
            (
                Str::from_static("b/+"),
                SubscriptionOptions::qos(QoS::AtMostOnce),
            ),
        ];
        let sub = Subscribe {
            packet_id: 3,
            properties: Properties::builder()
                .push(Property::SubscriptionIdentifier(42))
                .unwrap()
                .build(),
            subscriptions: Subscriptions::new(&subs).unwrap(),
        };
        h.send(1, Version::V5, Packet::Subscribe(sub));
        let unsub = Unsubscribe {
            packet_id: 4,
            properties: Properties::new(),
            filters: TopicFilters::new(&[Str::from_static("a/#")]).unwrap(),
        };
        h.send(1, Version::V5, Packet::Unsubscribe(unsub));
        // The broker answers, not the registry.
        assert_eq!(h.sent_to(1), []);
        let ev = h.events();
        let [Event::Subscribe {
            client_id,
            packet_id: 3,
            subscriptions,
        }, Event::Unsubscribe {
            packet_id: 4,
            filters,
            ..
        }] = &ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(client_id, "s");
        assert_eq!(subscriptions[0].filter, "a/#");
        // Lowered to the maximum QoS.
        assert_eq!(subscriptions[0].options.qos, QoS::AtLeastOnce);
        assert_eq!(subscriptions[1].id, Some(42));
        assert_eq!(filters, &["a/#".to_owned()]);
        assert_eq!(h.registry.unsuback("s", 4, &[0x11]), Ok(()));
        assert_eq!(h.registry.suback("s", 3, &[1, 0x97]), Ok(()));
        h.drain();
        let sent = h.sent_to(1);
        let [Packet::UnsubAck(unsuback), Packet::SubAck(suback)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!((suback.packet_id, &suback.codes[..]), (3, &[1u8, 0x97][..]));
        assert_eq!(
            (unsuback.packet_id, &unsuback.codes[..]),
            (4, &[0x11u8][..])
        );
        // Answered once.
        assert_eq!(
            h.registry.suback("s", 3, &[1, 0]),
            Err(AnswerError::NotAwaited)
        );
    });
}

/// Sends a SUBSCRIBE of `filters` (QoS 2 each) with `packet_id`.
fn subscribe(h: &mut Harness, version: Version, packet_id: u16, filters: &[&'static str]) {
    let subs: Vec<_> = filters
        .iter()
        .map(|f| {
            (
                Str::from_static(f),
                SubscriptionOptions::qos(QoS::ExactlyOnce),
            )
        })
        .collect();
    let sub = Subscribe {
        packet_id,
        properties: Properties::new(),
        subscriptions: Subscriptions::new(&subs).unwrap(),
    };
    h.send(1, version, Packet::Subscribe(sub));
}

#[test]
fn mqtt_3_9_3_suback_codes_are_checked_against_version_and_maximum_qos() {
    both_ways(|h| {
        qos_1_at_most(h);
        h.connect(1, connect(Version::V311, "s"));
        subscribe(h, Version::V311, 7, &["a", "b"]);
        let r = &mut h.registry;
        assert_eq!(
            r.suback("s", 7, &[2, 0]),
            Err(AnswerError::AboveMaximumQos(2))
        );
        assert_eq!(r.suback("s", 7, &[0x03, 0]), Err(AnswerError::BadCode(3)));
        assert_eq!(
            r.suback("s", 7, &[0x11, 0]),
            Err(AnswerError::BadCode(0x11))
        );
        assert_eq!(
            r.suback("s", 7, &[1]),
            Err(AnswerError::WrongCount {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(r.unsuback("s", 7, &[0, 0]), Err(AnswerError::NotAwaited));
        assert_eq!(r.suback("t", 7, &[1, 0]), Err(AnswerError::NotAwaited));
        assert_eq!(h.sent_to(1), []);
        // A 3.1.1 client hears 0x80 for any refusal.
        assert_eq!(h.registry.suback("s", 7, &[1, 0x97]), Ok(()));
        h.drain();
        let sent = h.sent_to(1);
        let [Packet::SubAck(suback)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(&suback.codes[..], &[1u8, 0x80][..]);
        assert_eq!(
            h.registry.unsuback("s", 8, &[0x12]),
            Err(AnswerError::BadCode(0x12))
        );
    });
}

#[test]
fn mqtt_2_2_1_3_packet_id_in_use_until_the_subscribe_is_answered() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "s"));
        subscribe(h, Version::V5, 9, &["a"]);
        h.events();
        // A QoS 1 PUBLISH with the awaiting id: in use.
        let p = publish("t", b"x", QoS::AtLeastOnce, 9);
        h.send(1, Version::V5, Packet::Publish(p));
        assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == 0x82));
        let closes = h.closes();
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert_eq!(closes[0].1.reason, CloseReason::LostMessages);
        // Its connection is gone: nothing to answer.
        assert_eq!(
            h.registry.suback("s", 9, &[0]),
            Err(AnswerError::NotAwaited)
        );
    });
}

#[test]
fn mqtt_2_2_1_3_packet_id_free_again_once_answered() {
    both_ways(|h| {
        h.connect(1, connect(Version::V5, "s"));
        subscribe(h, Version::V5, 9, &["a"]);
        assert_eq!(h.registry.suback("s", 9, &[2]), Ok(()));
        let unsub = Unsubscribe {
            packet_id: 9,
            properties: Properties::new(),
            filters: TopicFilters::new(&[Str::from_static("a")]).unwrap(),
        };
        h.send(1, Version::V5, Packet::Unsubscribe(unsub.clone()));
        // Not answered yet: the same id again is a reuse.
        h.send(1, Version::V5, Packet::Unsubscribe(unsub));
        let sent = h.sent_to(1);
        assert!(
            matches!(&sent[..], [Packet::SubAck(_), Packet::Disconnect(d)] if d.code == 0x82),
            "{sent:?}"
        );
    });
}

#[test]
fn mqtt_4_3_publish_qos_0_1_2_to_the_client() {
    both_ways(|h| {
        h.connect(1, connect(Version::V311, "r"));
        deliver(h, "r", QoS::AtMostOnce, b"0");
        deliver(h, "r", QoS::AtLeastOnce, b"1");
        deliver(h, "r", QoS::ExactlyOnce, b"2");
        let sent = h.sent_to(1);
        let ids: Vec<(QoS, u16)> = sent
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.qos, p.packet_id),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            [
                (QoS::AtMostOnce, 0),
                (QoS::AtLeastOnce, 1),
                (QoS::ExactlyOnce, 2)
            ]
        );
        h.send(1, Version::V311, Packet::PubAck(Ack::new(1)));
        h.send(1, Version::V311, Packet::PubRec(Ack::new(2)));
        assert_eq!(h.sent_to(1), [Packet::PubRel(Ack::new(2))]);
        h.send(1, Version::V311, Packet::PubComp(Ack::new(2)));
        // All acknowledged: a second PUBACK for 1 is for an id not in flight.
        assert!(h.closes().is_empty());
        h.send(1, Version::V311, Packet::PubAck(Ack::new(1)));
        assert_eq!(h.closes()[0].1.reason, CloseReason::LostMessages);
    });
}

#[test]
fn mqtt_3_3_4_9_in_flight_bounded_by_the_client_receive_maximum() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V5, "r");
    c.properties = Properties::builder()
        .push(Property::ReceiveMaximum(2))
        .unwrap()
        .build();
    h.connect(1, c);
    for _ in 0..5 {
        deliver(&mut h, "r", QoS::AtLeastOnce, b"m");
    }
    assert_eq!(h.sent_to(1).len(), 2);
    h.send(1, Version::V5, Packet::PubAck(Ack::new(1)));
    let sent = h.sent_to(1);
    assert!(matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == 3));
}

#[test]
fn mqtt_3_1_2_25_message_over_the_client_maximum_packet_size_is_dropped() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V5, "r");
    c.properties = Properties::builder()
        .push(Property::MaximumPacketSize(20))
        .unwrap()
        .build();
    h.connect(1, c);
    deliver(&mut h, "r", QoS::AtLeastOnce, b"0123456789abcdef");
    deliver(&mut h, "r", QoS::AtLeastOnce, b"ok");
    let sent = h.sent_to(1);
    assert!(
        matches!(&sent[..], [Packet::Publish(p)] if p.payload() == b"ok"),
        "{sent:?}"
    );
}

#[test]
fn a_full_queue_drops_the_new_message_and_keeps_what_it_holds() {
    let mut h = Harness::new(MqttConfig {
        max_queued_messages: 2,
        ..MqttConfig::default()
    });
    let mut c = connect(Version::V5, "r");
    c.properties = Properties::builder()
        .push(Property::ReceiveMaximum(1))
        .unwrap()
        .build();
    h.connect(1, c);
    let mut outcomes = Vec::new();
    for n in 0..4u8 {
        let message = Message {
            topic: Str::from_static("t"),
            payload: Bytes::copy_from_slice(&[b'0' + n]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
            expires_at: None,
        };
        let options = Delivery {
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
        };
        outcomes.push(h.registry.deliver(h.now, "r", &message, options));
    }
    h.drain();
    // One in flight, two queued, the fourth dropped: no close, no loss of
    // what was taken.
    assert_eq!(
        outcomes,
        [
            Delivered::Sent,
            Delivered::Queued,
            Delivered::Queued,
            Delivered::Dropped(Dropped::QueueFull)
        ]
    );
    let backlog = h.registry.backlog("r").unwrap();
    assert_eq!(
        (backlog.queued, backlog.in_flight, backlog.acked),
        (2, 1, 0)
    );
    assert!(h.closes().is_empty());
    let mut got = Vec::new();
    for _ in 0..3 {
        let sent = h.sent_to(1);
        let Some(Packet::Publish(p)) = sent.first() else {
            panic!("{sent:?}")
        };
        got.push(p.payload().to_vec());
        let id = p.packet_id;
        h.send(1, Version::V5, Packet::PubAck(Ack::new(id)));
    }
    assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(h.registry.backlog("r").map(|b| b.queued), Some(0));
}

#[test]
fn a_slow_reader_closed_0x97_keeps_its_queue_for_the_next_connection() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V5, "r");
    c.clean_start = false;
    c.properties = Properties::builder()
        .push(Property::ReceiveMaximum(1))
        .unwrap()
        .push(Property::SessionExpiryInterval(60))
        .unwrap()
        .build();
    h.connect(1, c.clone());
    for _ in 0..3 {
        deliver(&mut h, "r", QoS::AtLeastOnce, b"m");
    }
    h.sent_to(1);
    h.registry.outbound_full(h.now, ConnId(1));
    h.drain();
    assert_eq!(
        h.closes()[0].1.reason,
        CloseReason::MessageQueueLimitReached
    );
    // The one in flight comes again with DUP, then the two queued.
    let ack = h.connect(2, c);
    assert_eq!(connack_code(&ack), (true, 0));
    let sent = h.sent_to(2);
    assert!(
        matches!(&sent[..], [Packet::Publish(p)] if p.dup),
        "{sent:?}"
    );
    assert_eq!(h.registry.backlog("r").map(|b| b.queued), Some(2));
}

#[test]
fn mqtt_4_4_0_1_persistent_session_redelivers_with_dup() {
    both_ways(|h| {
        let mut c = connect(Version::V311, "p");
        c.clean_start = false;
        h.connect(1, c.clone());
        deliver(h, "p", QoS::AtLeastOnce, b"1");
        h.sent_to(1);
        h.registry.connection_lost(h.now, ConnId(1));
        h.drain();
        assert_eq!(h.closes()[0].1.reason, CloseReason::ConnectionLost);
        // Offline: QoS 1 is queued, QoS 0 dropped.
        deliver(h, "p", QoS::AtMostOnce, b"0");
        deliver(h, "p", QoS::AtLeastOnce, b"2");
        let ack = h.connect(2, c);
        assert_eq!(connack_code(&ack), (true, 0));
        let sent = h.sent_to(2);
        let got: Vec<(bool, u16, Vec<u8>)> = sent
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.dup, p.packet_id, p.payload().to_vec()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [(true, 1, b"1".to_vec()), (false, 2, b"2".to_vec())]);
    });
}

#[test]
fn mqtt_3_1_2_4_clean_start_ends_the_old_session() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V311, "p");
    c.clean_start = false;
    h.connect(1, c);
    h.send(1, Version::V311, Packet::Disconnect(Disconnect::default()));
    h.events();
    assert_eq!(h.closes()[0].1.reason, CloseReason::ClosedByClient);
    let ack = h.connect(2, connect(Version::V311, "p"));
    assert_eq!(connack_code(&ack), (false, 0));
    let ev = h.events();
    assert!(
        matches!(
            &ev[..],
            [Event::SessionEnded { .. }, Event::Connected { .. }]
        ),
        "{ev:?}"
    );
}

fn with_will(version: Version, delay: Option<u32>) -> Connect {
    let properties = match delay {
        Some(d) => Properties::builder()
            .push(Property::WillDelayInterval(d))
            .unwrap()
            .build(),
        None => Properties::new(),
    };
    let will = Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
        topic: Str::from_static("will/w"),
        payload: Bytes::from_static(b"gone"),
    };
    Connect::new(version, Str::from_static("w"), Some(will), None, None).unwrap()
}

fn wills(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Will { from, message } if from == "w" && message.topic.as_str() == "will/w"))
        .count()
}

#[test]
fn mqtt_3_1_2_8_will_published_on_an_unclean_end() {
    for version in [Version::V311, Version::V5] {
        let mut h = Harness::new(MqttConfig::default());
        h.connect(1, with_will(version, None));
        h.registry.connection_lost(h.now, ConnId(1));
        h.drain();
        assert_eq!(wills(&h.events()), 1);
    }
}

#[test]
fn mqtt_3_14_4_3_disconnect_0_discards_the_will_and_0x04_publishes_it() {
    for (code, n) in [(0x00, 0), (0x04, 1)] {
        let mut h = Harness::new(MqttConfig::default());
        h.connect(1, with_will(Version::V5, None));
        let d = Disconnect {
            code,
            properties: Properties::new(),
        };
        h.send(1, Version::V5, Packet::Disconnect(d));
        assert_eq!(wills(&h.events()), n, "code {code:#x}");
        let closes = h.closes();
        assert_eq!(
            (closes[0].1.reason, closes[0].1.code),
            (CloseReason::ClosedByClient, Some(code))
        );
    }
}

#[test]
fn mqtt_3_1_3_9_will_delay_and_a_reconnection_cancels_it() {
    let mut c = with_will(Version::V5, Some(5));
    c.clean_start = false;
    c.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(60))
        .unwrap()
        .build();
    // Nobody comes back: published after 5 s.
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, c.clone());
    h.registry.connection_lost(h.now, ConnId(1));
    h.drain();
    h.advance(4_999);
    assert_eq!(wills(&h.events()), 0);
    h.advance(1);
    assert_eq!(wills(&h.events()), 1);
    // Back within the delay: never published.
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, c.clone());
    h.registry.connection_lost(h.now, ConnId(1));
    h.drain();
    h.advance(2_000);
    let ack = h.connect(2, c);
    assert_eq!(connack_code(&ack), (true, 0));
    h.advance(10_000);
    assert_eq!(wills(&h.events()), 0);
}

/// A will whose delay outlasts the session goes out when the session ends:
/// at once with no session expiry, after 2 s with 2 s of it (a 5 s delay
/// both times). Mosquitto 2.0.11 waits for the delay either way.
#[test]
fn mqtt_3_1_2_8_will_published_when_the_session_ends_before_its_delay() {
    for expiry in [0u32, 2] {
        let mut c = with_will(Version::V5, Some(5));
        c.properties = Properties::builder()
            .push(Property::SessionExpiryInterval(expiry))
            .unwrap()
            .build();
        let mut h = Harness::new(MqttConfig::default());
        h.connect(1, c);
        h.events();
        h.registry.connection_lost(h.now, ConnId(1));
        h.drain();
        if expiry > 0 {
            h.advance(u64::from(expiry) * 1_000 - 1);
            assert_eq!(wills(&h.events()), 0, "expiry {expiry}: too early");
            h.advance(1);
        }
        assert_eq!(wills(&h.events()), 1, "expiry {expiry}");
        h.advance(10_000);
        assert_eq!(wills(&h.events()), 0, "expiry {expiry}: published twice");
    }
}

#[test]
fn mqtt_3_1_2_11_session_expiry_ends_the_offline_session() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V5, "e");
    c.clean_start = false;
    c.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(3))
        .unwrap()
        .build();
    h.connect(1, c);
    h.events();
    assert!(h.registry.is_connected("e"));
    h.registry.connection_lost(h.now, ConnId(1));
    h.drain();
    // Kept offline: a session, but no connection.
    assert!(!h.registry.is_connected("e"));
    h.advance(2_999);
    assert!(h.events().is_empty());
    h.advance(1);
    assert!(matches!(&h.events()[..], [Event::SessionEnded { client_id }] if client_id == "e"));
    assert_eq!(h.registry.sessions().count(), 0);
}

#[test]
fn mqtt_offline_sessions_are_capped() {
    let mut h = Harness::new(MqttConfig {
        max_sessions: 1,
        ..MqttConfig::default()
    });
    for (conn, id) in [(1, "a"), (2, "b")] {
        let mut c = connect(Version::V311, id);
        c.clean_start = false;
        h.connect(conn, c);
        h.registry.connection_lost(h.now, ConnId(conn));
        h.drain();
        h.advance(1);
    }
    let ev = h.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::SessionEnded { client_id } if client_id == "a")),
        "{ev:?}"
    );
    let left: Vec<String> = h.registry.sessions().map(|s| s.client_id).collect();
    assert_eq!(left, ["b"]);
}

#[test]
fn section_8_administrative_action_0x98_and_shutdown_0x8b() {
    for (why, code, reason) in [
        (
            ServerClose::Controller,
            0x98,
            CloseReason::ClosedByController,
        ),
        (ServerClose::Shutdown, 0x8B, CloseReason::Aborted),
    ] {
        let mut h = Harness::new(MqttConfig::default());
        h.connect(1, connect(Version::V5, "c"));
        h.registry.close(h.now, "c", why);
        h.drain();
        assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == code));
        let closes = h.closes();
        assert_eq!((closes[0].1.reason, closes[0].1.code), (reason, Some(code)));
    }
}

#[test]
fn mqtt_3_3_2_3_4_message_expiry_is_sent_decremented_and_expired_ones_dropped() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V5, "x");
    c.clean_start = false;
    c.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(60))
        .unwrap()
        .build();
    h.connect(1, c.clone());
    h.registry.connection_lost(h.now, ConnId(1));
    h.drain();
    let message = |secs: u64, payload: &'static [u8]| Message {
        topic: Str::from_static("t"),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
        expires_at: Some(h.now + Duration::from_secs(secs)),
    };
    let (short, long) = (message(2, b"short"), message(10, b"long"));
    for m in [short, long] {
        let d = Delivery {
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7],
        };
        h.registry.deliver(h.now, "x", &m, d);
    }
    h.advance(3_000);
    h.connect(2, c);
    let sent = h.sent_to(2);
    let [Packet::Publish(p)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(p.payload(), b"long");
    assert_eq!(
        p.properties.get(PropertyId::MessageExpiryInterval),
        Some(Property::MessageExpiryInterval(7))
    );
    assert_eq!(
        p.properties.get(PropertyId::SubscriptionIdentifier),
        Some(Property::SubscriptionIdentifier(7))
    );
}

#[test]
fn section_8_packet_too_large_0x95_closes_message_too_large() {
    both_ways(|h| {
        h.registry = Registry::new(
            MqttConfig {
                limits: Limits::builder().max_message_size(64).build().unwrap(),
                ..MqttConfig::default()
            },
            SeededRandom::new(1),
        );
        h.connect(1, connect(Version::V5, "big"));
        h.send(
            1,
            Version::V5,
            Packet::Publish(publish("t", &[0u8; 100], QoS::AtMostOnce, 0)),
        );
        assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == 0x95));
        assert_eq!(h.closes()[0].1.reason, CloseReason::MessageTooLarge);
    });
}

#[test]
fn mqtt_packets_behind_the_connect_wait_for_the_decision() {
    let mut h = Harness::new(MqttConfig::default());
    h.open(1);
    let mut bytes = Packet::Connect(connect(Version::V311, "q"))
        .to_bytes(Version::V311)
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&[0xc0, 0x00]); // PINGREQ right behind it
                                            // Not drained in between: the registry holds the PINGREQ.
    h.registry.handle_bytes(h.now, ConnId(1), &bytes);
    h.drain();
    let sent = h.sent_to(1);
    assert!(
        matches!(&sent[..], [Packet::ConnAck(_), Packet::PingResp]),
        "{sent:?}"
    );
}

/// What the registry did for one client stream fed in chunks of these
/// sizes, as comparable text: transmits, events, closes (each in order; how
/// they interleave depends on when the bytes came).
fn transcript(config: &MqttConfig, stream: &[u8], chunks: &[usize]) -> [Vec<String>; 3] {
    let t0 = Instant::now();
    let mut r = Registry::new(config.clone(), SeededRandom::new(3));
    let conn = ConnId(1);
    r.open(t0, conn);
    let mut out: [Vec<String>; 3] = Default::default();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        r.handle_bytes(t0, conn, chunk);
        loop {
            let mut any = false;
            while let Some(e) = r.poll_event() {
                any = true;
                match e {
                    Event::Connect(incoming) => r.accept(t0, incoming),
                    other => out[1].push(format!("{other:?}")),
                }
            }
            while let Some((c, bytes)) = r.poll_transmit() {
                any = true;
                out[0].push(format!("{c:?} {bytes:?}"));
            }
            while let Some(c) = r.poll_close() {
                any = true;
                out[2].push(format!("{c:?}"));
            }
            if !any {
                break;
            }
        }
    }
    out
}

/// A whole 5.0 session: CONNECT with a will, SUBSCRIBE, PUBLISH at every
/// QoS (one with a topic alias), PUBREL, PINGREQ, UNSUBSCRIBE, DISCONNECT.
fn session_stream() -> Vec<u8> {
    let mut c = with_will(Version::V5, Some(1));
    c.keep_alive = 30;
    let subs = [(
        Str::from_static("a/#"),
        SubscriptionOptions::qos(QoS::ExactlyOnce),
    )];
    let alias = Properties::builder()
        .push(Property::TopicAlias(2))
        .unwrap()
        .build();
    let packets = [
        Packet::Connect(c),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::new(),
            subscriptions: Subscriptions::new(&subs).unwrap(),
        }),
        Packet::Publish(publish("a/0", b"zero", QoS::AtMostOnce, 0).with_properties(alias.clone())),
        Packet::Publish(publish("", b"one", QoS::AtLeastOnce, 2).with_properties(alias)),
        Packet::Publish(publish("a/2", b"two", QoS::ExactlyOnce, 3)),
        Packet::PubRel(Ack::new(3)),
        Packet::PingReq,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            properties: Properties::new(),
            filters: TopicFilters::new(&[Str::from_static("a/#")]).unwrap(),
        }),
        Packet::Disconnect(Disconnect::default()),
    ];
    let mut out = Vec::new();
    for p in packets {
        p.encode_to_vec(Version::V5, &mut out).unwrap();
    }
    out
}

mod chunking {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mqtt_any_chunking_gives_the_same_transmits_events_and_closes(
            chunks in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let config = MqttConfig::default();
            let stream = session_stream();
            let whole = transcript(&config, &stream, &[stream.len()]);
            prop_assert!(whole[2].iter().any(|l| l.contains("ClosedByClient")), "{whole:?}");
            prop_assert_eq!(transcript(&config, &stream, &chunks), whole);
        }

        #[test]
        fn mqtt_hostile_bytes_after_connect_never_panic_and_chunk_alike(
            // Within what is held behind a CONNECT not yet accepted (the
            // whole stream comes in one call, before the server accepts).
            tail in proptest::collection::vec(any::<u8>(), 0..=128),
            chunks in proptest::collection::vec(1usize..17, 1..8),
        ) {
            let config = MqttConfig {
                limits: Limits::builder().max_message_size(128).build().unwrap(),
                ..MqttConfig::default()
            };
            let mut stream = Packet::Connect(connect(Version::V5, "h"))
                .to_bytes(Version::V5)
                .unwrap()
                .to_vec();
            stream.extend_from_slice(&tail);
            let whole = transcript(&config, &stream, &[stream.len()]);
            prop_assert_eq!(transcript(&config, &stream, &chunks), whole);
        }
    }
}

#[test]
fn mqtt_bytes_held_behind_a_connect_are_bounded() {
    let mut h = Harness::new(MqttConfig {
        limits: Limits::builder().max_message_size(64).build().unwrap(),
        ..MqttConfig::default()
    });
    h.open(1);
    let mut bytes = Packet::Connect(connect(Version::V5, "q"))
        .to_bytes(Version::V5)
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&[0xc0, 0x00].repeat(33)); // 66 bytes of PINGREQ
    h.registry.handle_bytes(h.now, ConnId(1), &bytes);
    h.drain();
    let closes = h.closes();
    assert_eq!(
        (closes[0].1.reason, closes[0].1.code),
        (CloseReason::MessageQueueLimitReached, Some(0x97))
    );
    assert!(h.sent_to(1).is_empty());
}

#[test]
fn mqtt_4_7_3_1_a_message_without_a_topic_is_not_sent() {
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, connect(Version::V311, "r"));
    let message = Message {
        topic: Str::from_static(""),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::new(),
        expires_at: None,
    };
    let delivery = Delivery {
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: Vec::new(),
    };
    h.registry.deliver(h.now, "r", &message, delivery);
    h.drain();
    assert!(h.sent_to(1).is_empty());
    deliver(&mut h, "r", QoS::AtMostOnce, b"y");
    assert_eq!(h.sent_to(1).len(), 1);
}

#[test]
fn section_8_a_slow_reader_closes_message_queue_limit_reached() {
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, connect(Version::V5, "slow"));
    h.events();
    h.registry.outbound_full(h.now, ConnId(1));
    h.drain();
    assert!(matches!(&h.sent_to(1)[..], [Packet::Disconnect(d)] if d.code == 0x97));
    let closes = h.closes();
    assert_eq!(
        (closes[0].1.reason, closes[0].1.code),
        (CloseReason::MessageQueueLimitReached, Some(0x97))
    );
    assert_eq!(h.registry.connected(), 0);
    // Once closed, the call does nothing.
    h.registry.outbound_full(h.now, ConnId(1));
    h.drain();
    assert!(h.closes().is_empty());
}

/// A 5.0 CONNECT of `client_id` with clean start `clean` and a Topic Alias
/// Maximum of `max` (none when 0).
fn connect_with_alias_maximum(client_id: &'static str, clean: bool, max: u16) -> Connect {
    let mut c = connect(Version::V5, client_id);
    c.clean_start = clean;
    if max > 0 {
        c.properties = Properties::builder()
            .push(Property::TopicAliasMaximum(max))
            .unwrap()
            .push(Property::SessionExpiryInterval(60))
            .unwrap()
            .build();
    }
    c
}

/// Delivers `topic` to `client` at `qos`.
fn deliver_topic(h: &mut Harness, client: &str, topic: &str, qos: QoS) {
    deliver_to_topic(h, client, topic, qos, b"m");
}

/// What a client that resolves topic aliases reads from `packets`: each
/// PUBLISH's topic (an alias resolved through `aliases`, the client's
/// table, which an alias with a topic sets) and the alias it carried.
fn resolve(packets: Vec<Packet>, aliases: &mut HashMap<u16, String>) -> Vec<(String, Option<u16>)> {
    let mut out = Vec::new();
    for p in packets {
        let Packet::Publish(p) = p else {
            continue;
        };
        let alias = match p.properties.get(PropertyId::TopicAlias) {
            Some(Property::TopicAlias(a)) => Some(a),
            _ => None,
        };
        let topic = match alias {
            Some(a) if p.topic().is_empty() => aliases.get(&a).expect("alias set before").clone(),
            Some(a) => {
                aliases.insert(a, p.topic().to_owned());
                p.topic().to_owned()
            }
            None => {
                assert!(!p.topic().is_empty(), "an empty topic needs an alias");
                p.topic().to_owned()
            }
        };
        out.push((topic, alias));
    }
    out
}

#[test]
fn mqtt_3_1_2_26_server_topic_aliases_within_the_client_maximum_resolve_to_the_topics() {
    for byte_by_byte in [false, true] {
        let mut h = Harness::new(MqttConfig::default());
        h.byte_by_byte = byte_by_byte;
        h.connect(1, connect_with_alias_maximum("a", false, 2));
        let topics = ["x/1", "x/2", "x/3", "x/1", "x/2", "x/3", "x/1"];
        for (i, topic) in topics.iter().enumerate() {
            let qos = if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            deliver_topic(&mut h, "a", topic, qos);
            if qos == QoS::AtLeastOnce {
                let sent = h.sent_to(1);
                let Some(Packet::Publish(p)) = sent.last() else {
                    panic!("{sent:?}")
                };
                let id = p.packet_id;
                h.seen.sent.extend(sent.into_iter().map(|p| (ConnId(1), p)));
                h.send(1, Version::V5, Packet::PubAck(Ack::new(id)));
            }
        }
        let mut table = HashMap::new();
        let got = resolve(h.sent_to(1), &mut table);
        let resolved: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(resolved, topics);
        // The first two topics get aliases 1 and 2, set once, then used
        // alone; the third has none left and goes whole.
        let aliases: Vec<Option<u16>> = got.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            aliases,
            [Some(1), Some(2), None, Some(1), Some(2), None, Some(1)]
        );
        // Aliases belong to a connection: the session resumed on a new one
        // starts again from 1, its redelivered message with its topic whole.
        deliver_topic(&mut h, "a", "x/2", QoS::AtLeastOnce);
        h.sent_to(1);
        h.registry.connection_lost(h.now, ConnId(1));
        h.drain();
        h.closes();
        h.connect(2, connect_with_alias_maximum("a", false, 2));
        let resent = h.sent_to(2);
        assert!(
            matches!(&resent[..], [Packet::Publish(p)] if p.dup && p.topic() == "x/2" && p.properties.get(PropertyId::TopicAlias).is_none()),
            "{resent:?}"
        );
        deliver_topic(&mut h, "a", "x/3", QoS::AtMostOnce);
        let mut table = HashMap::new();
        assert_eq!(
            resolve(h.sent_to(2), &mut table),
            [("x/3".to_owned(), Some(1))]
        );
    }
}

#[test]
fn mqtt_3_1_2_27_no_server_topic_aliases_unless_both_sides_allow_them() {
    // The client announces none.
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, connect_with_alias_maximum("a", true, 0));
    // The server's cap is 0.
    let mut off = Harness::new(MqttConfig {
        outbound_topic_aliases: 0,
        ..MqttConfig::default()
    });
    off.connect(1, connect_with_alias_maximum("a", true, 10));
    // 3.1.1 has no aliases.
    let mut old = Harness::new(MqttConfig::default());
    old.connect(1, connect(Version::V311, "a"));
    for h in [&mut h, &mut off, &mut old] {
        for _ in 0..2 {
            deliver_topic(h, "a", "x/1", QoS::AtMostOnce);
        }
        let mut table = HashMap::new();
        assert_eq!(
            resolve(h.sent_to(1), &mut table),
            [("x/1".to_owned(), None), ("x/1".to_owned(), None)]
        );
    }
}

#[test]
fn server_topic_aliases_bounded_by_the_server_cap_and_topic_bytes() {
    let mut h = Harness::new(MqttConfig {
        outbound_topic_aliases: 1,
        ..MqttConfig::default()
    });
    h.connect(1, connect_with_alias_maximum("a", true, 100));
    let long = "l".repeat(5000);
    for topic in [long.as_str(), "x/1", "x/2", "x/1"] {
        deliver_topic(&mut h, "a", topic, QoS::AtMostOnce);
    }
    let mut table = HashMap::new();
    let aliases: Vec<Option<u16>> = resolve(h.sent_to(1), &mut table)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    // The long topic passes the 4 KiB the aliases keep; the server's cap
    // (1) holds below the client's (100).
    assert_eq!(aliases, [None, Some(1), None, Some(1)]);
}

/// A 5.0 CONNECT for `client_id` announcing a Maximum Packet Size of `max`.
fn connect_with_max_packet(client_id: &'static str, max: u32) -> Connect {
    let mut c = connect(Version::V5, client_id);
    c.properties = Properties::builder()
        .push(Property::MaximumPacketSize(max))
        .unwrap()
        .build();
    c
}

#[test]
fn mqtt_3_1_2_6_a_clean_session_ends_with_its_connection_even_on_takeover() {
    for version in [Version::V311, Version::V5] {
        let mut h = Harness::new(MqttConfig::default());
        // Clean session 1 (5.0: clean start, expiry 0).
        h.connect(1, connect(version, "x"));
        h.events();
        // The same id takes the connection over asking to resume.
        let mut resume = connect(version, "x");
        resume.clean_start = false;
        let ack = h.connect(2, resume);
        // MQTT-3.2.2-3: no session was there to resume.
        assert_eq!(connack_code(&ack), (false, 0), "{version:?}");
        let ev = h.events();
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::SessionEnded { client_id } if client_id == "x")),
            "the old session ends, so the broker drops its subscriptions: {ev:?}"
        );
        assert!(matches!(
            ev.last(),
            Some(Event::Connected {
                session_present: false,
                ..
            })
        ));
    }
}

#[test]
fn mqtt_3_2_2_3_a_persistent_session_taken_over_is_resumed() {
    let mut h = Harness::new(MqttConfig::default());
    let mut c = connect(Version::V311, "p");
    c.clean_start = false;
    h.connect(1, c.clone());
    let ack = h.connect(2, c);
    assert_eq!(connack_code(&ack), (true, 0));
}

#[test]
fn mqtt_3_1_2_24_connack_over_the_client_maximum_is_not_sent() {
    both_ways(|h| {
        // Even a CONNACK without properties (5 bytes) is too large for 2:
        // the connection closes without a packet.
        h.open(1);
        h.send(
            1,
            Version::V5,
            Packet::Connect(connect_with_max_packet("a", 2)),
        );
        assert_eq!(h.sent_to(1), []);
        let closes = h.closes();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].1.code, Some(0x95));
        assert!(!h
            .events()
            .iter()
            .any(|e| matches!(e, Event::Connected { .. })));
    });
}

#[test]
fn mqtt_3_1_2_24_connack_drops_its_properties_to_fit() {
    let mut h = Harness::new(MqttConfig::default());
    // Our CONNACK carries properties (receive maximum, maximum packet
    // size, topic alias maximum): 5 bytes is room for none of them.
    let ack = h.connect(1, connect_with_max_packet("a", 5));
    match ack {
        Packet::ConnAck(c) => {
            assert_eq!((c.session_present, c.code), (false, 0));
            assert!(c.properties.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // With room enough, they stay.
    let ack = h.connect(2, connect_with_max_packet("b", 1000));
    assert!(matches!(ack, Packet::ConnAck(c) if !c.properties.is_empty()));
}

#[test]
fn mqtt_3_1_2_24_takeover_sends_nothing_to_a_client_too_small_for_any_packet() {
    // A 5.0 client whose maximum is below every packet we send (2 bytes:
    // a CONNACK is at least 5, the takeover DISCONNECT 3) is closed
    // without a packet; taking its client id over sends it nothing.
    let mut h = Harness::new(MqttConfig::default());
    h.open(1);
    h.send(
        1,
        Version::V5,
        Packet::Connect(connect_with_max_packet("a", 2)),
    );
    let ack = h.connect(2, connect(Version::V5, "a"));
    assert_eq!(connack_code(&ack), (false, 0));
    assert_eq!(h.sent_to(1), []);
    // One with room for the 3-byte DISCONNECT gets it.
    h.connect(3, connect_with_max_packet("b", 5));
    h.connect(4, connect(Version::V5, "b"));
    assert!(matches!(&h.sent_to(3)[..], [Packet::Disconnect(d)] if d.code == 0x8E));
}

/// A persistent 3.1.1 session for `id` on `conn`, then offline.
fn offline_session(h: &mut Harness, conn: u64, id: &'static str) {
    let mut c = connect(Version::V311, id);
    c.clean_start = false;
    h.connect(conn, c);
    h.registry.connection_lost(h.now, ConnId(conn));
    h.drain();
    h.advance(1);
}

#[test]
fn offline_cap_ends_a_session_holding_nothing_before_one_holding_messages() {
    let mut h = Harness::new(MqttConfig {
        max_sessions: 2,
        ..MqttConfig::default()
    });
    // "real" went offline first and holds acknowledged messages.
    offline_session(&mut h, 1, "real");
    deliver(&mut h, "real", QoS::AtLeastOnce, b"kept");
    // Throwaway sessions come after it, more than the cap.
    for (conn, id) in [(2, "t1"), (3, "t2"), (4, "t3")] {
        offline_session(&mut h, conn, id);
    }
    let mut left: Vec<String> = h.registry.sessions().map(|s| s.client_id).collect();
    left.sort();
    assert_eq!(left, ["real", "t3"]);
    assert_eq!(h.registry.backlog("real").map(|b| b.queued), Some(1));
    // t3 now holds a message: a new session holding nothing is the one
    // that goes.
    deliver(&mut h, "t3", QoS::AtLeastOnce, b"x");
    offline_session(&mut h, 5, "t4");
    let mut left: Vec<String> = h.registry.sessions().map(|s| s.client_id).collect();
    left.sort();
    assert_eq!(left, ["real", "t3"], "t4 held nothing: it went first");
    // One going offline with a message in flight holds something too:
    // when all do, the one offline the longest goes.
    let mut c = connect(Version::V311, "t5");
    c.clean_start = false;
    h.connect(6, c);
    deliver(&mut h, "t5", QoS::AtLeastOnce, b"in flight");
    h.registry.connection_lost(h.now, ConnId(6));
    h.drain();
    let mut left: Vec<String> = h.registry.sessions().map(|s| s.client_id).collect();
    left.sort();
    assert_eq!(left, ["t3", "t5"]);
}

#[test]
fn mqtt_3_3_4_publish_refused_by_the_gate_is_answered_0x97_in_5_0_and_not_routed() {
    struct RefuseRetained;
    impl PublishGate for RefuseRetained {
        fn admit(&mut self, _: Instant, _: &str, m: &Message) -> Result<(), u8> {
            if m.retain {
                Err(0x97)
            } else {
                Ok(())
            }
        }
    }
    let mut h = Harness::new(MqttConfig::default());
    h.connect(1, connect(Version::V5, "p"));
    h.events();
    for (retain, id) in [(true, 1), (false, 2)] {
        let mut p = publish("r/1", b"x", QoS::AtLeastOnce, id);
        p.retain = retain;
        let bytes = Packet::Publish(p).to_bytes(Version::V5).unwrap();
        h.registry
            .handle_bytes_with(h.now, ConnId(1), &bytes, &mut RefuseRetained);
        h.drain();
    }
    let sent = h.sent_to(1);
    let codes: Vec<(u16, u8)> = sent
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => (a.packet_id, a.code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, [(1, 0x97), (2, 0x00)]);
    let routed: Vec<bool> = h
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Publish { message, .. } => Some(message.retain),
            _ => None,
        })
        .collect();
    assert_eq!(routed, [false]);
    assert_eq!(h.registry.refused_publishes(), 1);
}

#[test]
fn a_spent_budget_refuses_publishes_5_0_0x97_and_closes_3_1_1_without_ack() {
    let mut h = Harness::new(MqttConfig {
        max_held_bytes: 1000,
        ..MqttConfig::default()
    });
    let hog = h.registry.budget().try_charge(1000).unwrap();
    h.connect(1, connect(Version::V5, "five"));
    h.connect(2, connect(Version::V311, "three"));
    h.events();
    h.send(
        1,
        Version::V5,
        Packet::Publish(publish("t", b"x", QoS::AtLeastOnce, 9)),
    );
    h.send(
        1,
        Version::V5,
        Packet::Publish(publish("t", b"x", QoS::ExactlyOnce, 10)),
    );
    assert!(matches!(
        &h.sent_to(1)[..],
        [Packet::PubAck(a), Packet::PubRec(r)] if a.code == 0x97 && r.code == 0x97
    ));
    h.send(
        2,
        Version::V311,
        Packet::Publish(publish("t", b"x", QoS::AtLeastOnce, 9)),
    );
    // No PUBACK: the 3.1.1 client keeps the message for its next
    // connection.
    assert_eq!(h.sent_to(2), []);
    let closes = h.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!((closes[0].0, closes[0].1.code), (ConnId(2), Some(0x97)));
    assert!(!h
        .events()
        .iter()
        .any(|e| matches!(e, Event::Publish { .. })));
    // Given back, the next one is taken.
    drop(hog);
    h.send(
        1,
        Version::V5,
        Packet::Publish(publish("t", b"x", QoS::AtLeastOnce, 11)),
    );
    assert!(matches!(&h.sent_to(1)[..], [Packet::PubAck(a)] if a.code == 0));
}

#[test]
fn one_copy_of_a_message_is_charged_however_many_sessions_hold_it() {
    let mut h = Harness::new(MqttConfig::default());
    for (conn, id) in [(1, "a"), (2, "b"), (3, "c")] {
        offline_session(&mut h, conn, id);
    }
    let message = Message {
        topic: Str::from_static("t"),
        payload: Bytes::from(vec![7u8; 10_000]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
        expires_at: None,
    };
    let options = Delivery {
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: Vec::new(),
    };
    for id in ["a", "b", "c"] {
        let got = h.registry.deliver(h.now, id, &message, options.clone());
        assert_eq!(got, Delivered::Queued);
    }
    let used = h.registry.budget().used();
    // One payload's worth, not three.
    assert!((10_000..20_000).contains(&used), "{used}");
    // An offline session ending gives its entries back; the copy stays
    // while others hold it.
    h.registry.close(h.now, "a", ServerClose::Controller);
    h.registry.close(h.now, "b", ServerClose::Controller);
    assert!(h.registry.budget().used() >= 10_000);
    h.registry.close(h.now, "c", ServerClose::Controller);
    // The last routed message is kept for the next delivery of the same:
    // a different one lets it go.
    let other = Message {
        payload: Bytes::from_static(b"y"),
        ..message
    };
    offline_session(&mut h, 4, "d");
    h.registry.deliver(h.now, "d", &other, options);
    assert!(h.registry.budget().used() < 10_000);
}

#[test]
fn limit_session_expiry_caps_one_clients_session_and_tells_a_5_0_client() {
    let mut h = Harness::new(MqttConfig::default());
    h.open(1);
    let mut c = connect(Version::V5, "anon");
    c.clean_start = false;
    c.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(86_400))
        .unwrap()
        .build();
    let bytes = Packet::Connect(c).to_bytes(Version::V5).unwrap();
    h.registry.handle_bytes(h.now, ConnId(1), &bytes);
    let mut incoming = match h.registry.poll_event() {
        Some(Event::Connect(i)) => i,
        other => panic!("{other:?}"),
    };
    incoming.limit_session_expiry(300);
    h.versions.insert(ConnId(1), Version::V5);
    h.registry.accept(h.now, incoming);
    h.drain();
    let sent = h.sent_to(1);
    let Some(Packet::ConnAck(ack)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        ack.properties.get(PropertyId::SessionExpiryInterval),
        Some(Property::SessionExpiryInterval(300))
    );
}

#[test]
fn with_the_budget_three_quarters_held_only_messages_that_would_wait_are_dropped() {
    let mut h = Harness::new(MqttConfig {
        max_held_bytes: 100_000,
        ..MqttConfig::default()
    });
    offline_session(&mut h, 1, "away");
    h.connect(2, connect(Version::V5, "here"));
    h.events();
    let _hog = h.registry.budget().try_charge(76_000).unwrap();
    let message = Message {
        topic: Str::from_static("t"),
        payload: Bytes::from_static(b"m"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
        expires_at: None,
    };
    let options = Delivery {
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: Vec::new(),
    };
    // Offline: it would wait in the queue.
    let away = h.registry.deliver(h.now, "away", &message, options.clone());
    assert_eq!(away, Delivered::Dropped(Dropped::Budget));
    // Connected and keeping up: it goes out at once.
    let here = h.registry.deliver(h.now, "here", &message, options);
    assert_eq!(here, Delivered::Sent);
    // And a PUBLISH is still taken: the budget is not spent.
    h.drain();
    h.sent_to(2);
    h.send(
        2,
        Version::V5,
        Packet::Publish(publish("t", b"x", QoS::AtLeastOnce, 3)),
    );
    assert!(matches!(&h.sent_to(2)[..], [Packet::PubAck(a)] if a.code == 0));
}
