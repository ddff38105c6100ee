//! End to end: the broker of `sessionwire serve` over raw MQTT sockets, TCP
//! (`--mqtt-listen`) and WebSocket (`/mqtt`, subprotocol `mqtt`), both
//! versions. Packets are built and read with the codec
//! (`sessionwire::mqtt`); the server is the real binary on ephemeral
//! loopback ports. Each test checks what the clients received and, where
//! the server decides a close, its event-log line.
//!
//! Every await is bounded; each server is killed when its guard drops.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::{Method, StatusCode};
use serde_json::Value;
use sessionwire::mqtt::{
    Ack, ConnAck, Connect, Decoder, Packet, Properties, Property, Publish, QoS, Sender, Str,
    Subscribe, SubscriptionOptions, Subscriptions, Version,
};
use sessionwire::Limits;
use sessionwire_tests::server::{add_user, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// The bound on every single step of a test.
const STEP: Duration = Duration::from_secs(10);

/// How long to wait to be sure nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn s(text: &str) -> Str {
    Str::try_from(text).expect("an MQTT string")
}

enum Link {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// A raw MQTT client: packets encoded and decoded by the codec.
struct Client {
    link: Link,
    version: Version,
    decoder: Decoder,
    pending: Vec<u8>,
}

impl Client {
    fn over(link: Link, version: Version) -> Client {
        let limits = Limits::builder().max_message_size(1 << 20).build().unwrap();
        Client {
            link,
            version,
            decoder: Decoder::new(version, Sender::Server, &limits),
            pending: Vec::new(),
        }
    }

    async fn tcp(server: &Server, version: Version) -> Client {
        let addr = server.mqtt.expect("MQTT listens over TCP");
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client::over(Link::Tcp(stream), version)
    }

    async fn ws(addr: SocketAddr, version: Version) -> Client {
        let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        let stream = TcpStream::connect(addr).await.unwrap();
        let (ws, response) = within(
            "ws upgrade",
            tokio_tungstenite::client_async(request, stream),
        )
        .await
        .expect("the /mqtt upgrade");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "mqtt",
            "MQTT-6.0.0-4"
        );
        Client::over(Link::Ws(Box::new(ws)), version)
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Tcp(t) => t.write_all(bytes).await.unwrap(),
            Link::Ws(ws) => ws
                .send(WsMessage::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .unwrap(),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).unwrap();
        self.send_raw(&buf).await;
    }

    /// The next packet from the server; `None` when the connection ends.
    async fn recv(&mut self) -> Option<Packet> {
        within("a packet from the server", self.next()).await
    }

    async fn next(&mut self) -> Option<Packet> {
        loop {
            if !self.pending.is_empty() {
                let mut input = &self.pending[..];
                let packet = self.decoder.feed(&mut input).expect("a valid packet");
                let used = self.pending.len() - input.len();
                self.pending.drain(..used);
                if let Some(p) = packet {
                    return Some(p);
                }
            }
            match &mut self.link {
                Link::Tcp(t) => {
                    let mut buf = [0u8; 4096];
                    match t.read(&mut buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    }
                }
                Link::Ws(ws) => match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => self.pending.extend_from_slice(&b),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Nothing arrives for a moment.
    async fn quiet(&mut self) {
        if let Ok(p) = tokio::time::timeout(QUIET, self.next()).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Sends CONNECT and returns the CONNACK.
    async fn connect_with(&mut self, connect: Connect) -> ConnAck {
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(a)) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(&mut self, client_id: &str) -> ConnAck {
        let connect = Connect::new(self.version, s(client_id), None, None, None).unwrap();
        let ack = self.connect_with(connect).await;
        assert_eq!(ack.code, 0, "{ack:?}");
        ack
    }

    async fn subscribe(&mut self, packet_id: u16, filter: &str, options: SubscriptionOptions) {
        self.subscribe_with(packet_id, filter, options, Properties::new())
            .await;
    }

    async fn subscribe_with(
        &mut self,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        properties: Properties,
    ) {
        let codes = self
            .subscribe_answer(packet_id, filter, options, properties)
            .await;
        assert_eq!(codes, [options.qos as u8], "granted");
    }

    /// Sends a SUBSCRIBE of one filter; the SUBACK's codes.
    async fn subscribe_answer(
        &mut self,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        properties: Properties,
    ) -> Vec<u8> {
        let subscriptions = Subscriptions::new(&[(s(filter), options)]).unwrap();
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            properties,
            subscriptions,
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => {
                assert_eq!(a.packet_id, packet_id);
                a.codes.to_vec()
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Sends an UNSUBSCRIBE of `filters`; the UNSUBACK's codes (none in
    /// 3.1.1).
    async fn unsubscribe(&mut self, packet_id: u16, filters: &[&str]) -> Vec<u8> {
        let filters: Vec<Str> = filters.iter().map(|f| s(f)).collect();
        self.send(Packet::Unsubscribe(sessionwire::mqtt::Unsubscribe {
            packet_id,
            properties: Properties::new(),
            filters: sessionwire::mqtt::TopicFilters::new(&filters).unwrap(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::UnsubAck(a)) => {
                assert_eq!(a.packet_id, packet_id);
                a.codes.to_vec()
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        let p = Publish::new(&s(topic), payload)
            .with_qos(qos, if qos == QoS::AtMostOnce { 0 } else { id })
            .with_retain(retain);
        self.send(Packet::Publish(p)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv().await {
                    Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(Packet::PubRel(Ack::new(id))).await;
                match self.recv().await {
                    Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// The next PUBLISH, acknowledged as its QoS asks.
    async fn received(&mut self) -> Publish {
        let p = match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(Ack::new(p.packet_id))).await,
            QoS::ExactlyOnce => {
                self.send(Packet::PubRec(Ack::new(p.packet_id))).await;
                match self.recv().await {
                    Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, p.packet_id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(Packet::PubComp(Ack::new(p.packet_id))).await;
            }
        }
        p
    }
}

const BOTH: [Version; 2] = [Version::V311, Version::V5];

fn sub(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

fn start() -> Server {
    Server::start(&["--ping-period", "0"])
}

#[tokio::test]
async fn mqtt_3_3_4_publish_at_each_qos_delivered_at_the_lower_of_publish_and_subscription() {
    let server = start();
    for version in BOTH {
        let mut subscriber = Client::tcp(&server, version).await;
        subscriber.connect("subscriber").await;
        subscriber.subscribe(1, "a/+", sub(QoS::ExactlyOnce)).await;
        let mut capped = Client::tcp(&server, version).await;
        capped.connect("capped").await;
        capped.subscribe(1, "a/b", sub(QoS::AtLeastOnce)).await;
        let mut publisher = Client::tcp(&server, version).await;
        publisher.connect("publisher").await;
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let payload = format!("m{i}");
            let id = u16::try_from(i).unwrap() + 10;
            publisher
                .publish("a/b", payload.as_bytes(), qos, false, id)
                .await;
            let got = subscriber.received().await;
            assert_eq!((got.topic(), got.payload()), ("a/b", payload.as_bytes()));
            assert_eq!(got.qos, qos, "{version:?}");
            assert!(!got.retain);
            let got = capped.received().await;
            assert_eq!(got.qos, qos.min(QoS::AtLeastOnce), "{version:?}");
        }
        // Overlapping subscriptions: one copy (MQTT-3.3.4-2).
        subscriber.subscribe(2, "a/#", sub(QoS::AtMostOnce)).await;
        publisher
            .publish("a/b", b"once", QoS::AtLeastOnce, false, 20)
            .await;
        assert_eq!(subscriber.received().await.payload(), b"once");
        assert_eq!(capped.received().await.payload(), b"once");
        subscriber.quiet().await;
        publisher.send(Packet::Disconnect(Default::default())).await;
        subscriber
            .send(Packet::Disconnect(Default::default()))
            .await;
        capped.send(Packet::Disconnect(Default::default())).await;
    }
}

/// Two filters of one client match (`t/#` at QoS 2, `t/+` at QoS 1): a QoS 2
/// message comes once, at QoS 2, the higher of the two, whatever the order
/// of the subscriptions (3.1.1: MQTT-3.3.5-1; 5.0: MQTT-3.3.4-2). The shape
/// of the Paho interoperability suite's overlapping-subscriptions test,
/// which mosquitto 2.0.11 answers over 3.1.1 with one copy at QoS 1.
#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_at_the_highest_qos() {
    let server = start();
    for version in BOTH {
        for (n, (first, second)) in [("t/#", "t/+"), ("t/+", "t/#")].into_iter().enumerate() {
            let mut c = Client::tcp(&server, version).await;
            c.connect(&format!("overlap-{n}")).await;
            let qos_of = |f: &str| {
                if f == "t/#" {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                }
            };
            c.subscribe(1, first, sub(qos_of(first))).await;
            c.subscribe(2, second, sub(qos_of(second))).await;
            let mut publisher = Client::tcp(&server, version).await;
            publisher.connect("overlap-publisher").await;
            publisher
                .publish("t/c", b"both", QoS::ExactlyOnce, false, 3)
                .await;
            let got = c.received().await;
            assert_eq!(got.payload(), b"both");
            assert_eq!(
                got.qos,
                QoS::ExactlyOnce,
                "{version:?} {first} then {second}"
            );
            c.quiet().await;
            c.send(Packet::Disconnect(Default::default())).await;
            publisher.send(Packet::Disconnect(Default::default())).await;
        }
    }
}

#[tokio::test]
async fn mqtt_3_3_1_retained_message_sent_on_subscribe_and_deleted_by_an_empty_payload() {
    let server = start();
    for version in BOTH {
        let mut publisher = Client::tcp(&server, version).await;
        publisher.connect("retainer").await;
        publisher
            .publish("r/one", b"kept", QoS::AtLeastOnce, true, 1)
            .await;
        publisher
            .publish("r/two", b"gone", QoS::AtMostOnce, true, 0)
            .await;
        // At QoS 1, so that its PUBACK says it was handled before the
        // subscriber arrives on another connection.
        publisher
            .publish("r/two", b"", QoS::AtLeastOnce, true, 2)
            .await;
        let mut late = Client::tcp(&server, version).await;
        late.connect("late").await;
        late.subscribe(1, "r/#", sub(QoS::AtLeastOnce)).await;
        let got = late.received().await;
        // MQTT-3.3.1-8: a retained message sent on subscribe has retain 1.
        assert_eq!(
            (got.topic(), got.payload(), got.retain),
            ("r/one", &b"kept"[..], true)
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        late.quiet().await;
        // A live message matching the subscription: retain 0 (3.1.1
        // MQTT-3.3.1-9; 5.0 without retain-as-published).
        publisher
            .publish("r/one", b"live", QoS::AtMostOnce, true, 0)
            .await;
        let got = late.received().await;
        assert_eq!((got.payload(), got.retain), (&b"live"[..], false));
        // Clean up for the next version.
        publisher
            .publish("r/one", b"", QoS::AtMostOnce, true, 0)
            .await;
        assert_eq!(late.received().await.payload(), b"");
    }
}

#[tokio::test]
async fn mqtt_4_7_2_1_dollar_topics_are_not_matched_by_a_leading_wildcard() {
    let server = start();
    let mut all = Client::tcp(&server, Version::V5).await;
    all.connect("all").await;
    all.subscribe(1, "#", sub(QoS::AtMostOnce)).await;
    let mut sys = Client::tcp(&server, Version::V311).await;
    sys.connect("sys").await;
    sys.subscribe(1, "$SYS/#", sub(QoS::AtMostOnce)).await;
    let mut publisher = Client::tcp(&server, Version::V311).await;
    publisher.connect("p").await;
    publisher
        .publish("$SYS/x", b"dollar", QoS::AtMostOnce, false, 0)
        .await;
    publisher
        .publish("plain", b"plain", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(sys.received().await.payload(), b"dollar");
    assert_eq!(all.received().await.payload(), b"plain");
    all.quiet().await;
    sys.quiet().await;
}

#[tokio::test]
async fn mqtt_4_8_2_shared_subscription_gives_each_message_to_one_member() {
    let server = start();
    let mut members = Vec::new();
    for name in ["w1", "w2"] {
        let mut c = Client::tcp(&server, Version::V5).await;
        c.connect(name).await;
        c.subscribe(1, "$share/workers/jobs/+", sub(QoS::AtLeastOnce))
            .await;
        members.push(c);
    }
    let mut publisher = Client::tcp(&server, Version::V5).await;
    publisher.connect("boss").await;
    for i in 0..4u16 {
        publisher
            .publish(
                "jobs/x",
                &[b'0' + u8::try_from(i).unwrap()],
                QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .await;
    }
    // In turn: two each, none twice.
    let mut seen = Vec::new();
    for m in &mut members {
        for _ in 0..2 {
            seen.push(m.received().await.payload().to_vec());
        }
        m.quiet().await;
    }
    seen.sort();
    assert_eq!(seen, [b"0", b"1", b"2", b"3"]);
}

#[tokio::test]
async fn mqtt_3_3_2_3_8_subscription_identifiers_and_no_local() {
    let server = start();
    let mut c = Client::tcp(&server, Version::V5).await;
    c.connect("ids").await;
    let with_id = Properties::builder()
        .push(Property::SubscriptionIdentifier(7))
        .unwrap()
        .build();
    c.subscribe_with(1, "t/+", sub(QoS::AtMostOnce), with_id)
        .await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..sub(QoS::AtMostOnce)
    };
    c.subscribe(2, "mine", no_local).await;
    let mut other = Client::tcp(&server, Version::V5).await;
    other.connect("other").await;
    other.publish("t/1", b"x", QoS::AtMostOnce, false, 0).await;
    let got = c.received().await;
    let ids: Vec<Property> = got
        .properties
        .iter()
        .filter(|p| matches!(p, Property::SubscriptionIdentifier(_)))
        .collect();
    assert_eq!(ids, [Property::SubscriptionIdentifier(7)]);
    // MQTT-3.8.3-3: its own publication does not come back.
    c.publish("mine", b"me", QoS::AtMostOnce, false, 0).await;
    c.quiet().await;
    other
        .publish("mine", b"you", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(c.received().await.payload(), b"you");
}

#[tokio::test]
async fn mqtt_6_0_websocket_needs_the_subprotocol_and_carries_packets_across_frames() {
    let server = start();
    // Without the subprotocol: refused before the upgrade (MQTT-6.0.0-3).
    let request = format!("ws://{}/mqtt", server.addr)
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    match within(
        "plain upgrade",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::BAD_REQUEST)
        }
        other => panic!("expected a 400, got {:?}", other.map(|x| x.1)),
    }
    for version in BOTH {
        let mut ws = Client::ws(server.addr, version).await;
        // The CONNECT split over two frames (MQTT-6.0.0-2).
        let connect = Connect::new(version, s("ws-client"), None, None, None).unwrap();
        let mut buf = BytesMut::new();
        Packet::Connect(connect).encode(version, &mut buf).unwrap();
        ws.send_raw(&buf[..3]).await;
        ws.send_raw(&buf[3..]).await;
        match ws.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        ws.subscribe(1, "w", sub(QoS::AtLeastOnce)).await;
        let mut tcp = Client::tcp(&server, version).await;
        tcp.connect("tcp-client").await;
        tcp.publish("w", b"over ws", QoS::AtLeastOnce, false, 1)
            .await;
        assert_eq!(ws.received().await.payload(), b"over ws");
        tcp.send(Packet::Disconnect(Default::default())).await;
        ws.send(Packet::Disconnect(Default::default())).await;
    }
    let e = server
        .wait_event(STEP, |e| {
            e["event"] == "opened" && e["client_id"] == "ws-client"
        })
        .await;
    assert_eq!(e["transport"], "mqtt-ws");
}

/// The event-log line of `client_id`'s `event`.
async fn event_of(server: &Server, event: &str, client_id: &str) -> Value {
    server
        .wait_event(STEP, |e| {
            e["event"] == event && e["protocol"] == "mqtt" && e["client_id"] == client_id
        })
        .await
}

#[tokio::test]
async fn mqtt_event_log_records_connect_and_close_with_version_and_reason_code() {
    let server = start();
    let mut c = Client::tcp(&server, Version::V5).await;
    c.connect("logged").await;
    let opened = event_of(&server, "opened", "logged").await;
    assert_eq!(opened["version"], "5.0");
    assert_eq!(opened["transport"], "mqtt");
    c.send(Packet::Disconnect(Default::default())).await;
    assert!(
        c.recv().await.is_none(),
        "the server closes after DISCONNECT"
    );
    let closed = event_of(&server, "closed", "logged").await;
    assert_eq!(closed["reason"], "CLOSED_BY_CLIENT");
    assert_eq!(closed["reason_code"], 0);
    assert_eq!(closed["version"], "5.0");
}

#[tokio::test]
async fn mqtt_control_api_lists_sessions_and_closes_with_0x98() {
    let server = start();
    let mut v5 = Client::tcp(&server, Version::V5).await;
    v5.connect("controlled").await;
    let mut v3 = Client::tcp(&server, Version::V311).await;
    v3.connect("old-timer").await;
    let list = server
        .control(Method::GET, "/sessions", "")
        .await
        .expect("control list");
    assert_eq!(list.status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&list.body).unwrap();
    let mqtt: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["protocol"] == "mqtt")
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mqtt,
        [
            ("controlled".to_owned(), "5.0".to_owned()),
            ("old-timer".to_owned(), "3.1.1".to_owned())
        ]
    );
    let r = server
        .control(Method::POST, "/sessions/controlled/close", "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    match v5.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, 0x98),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert!(v5.recv().await.is_none());
    let closed = event_of(&server, "closed", "controlled").await;
    assert_eq!(closed["reason"], "CLOSED_BY_CONTROLLER");
    assert_eq!(closed["reason_code"], 0x98);
    // 3.1.1 has no DISCONNECT from the server: the connection just ends.
    let r = server
        .control(Method::DELETE, "/sessions/old-timer", "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(v3.recv().await.is_none());
    let r = server
        .control(Method::POST, "/sessions/nobody/close", "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mqtt_shutdown_sends_5_0_clients_disconnect_0x8b() {
    let mut server = start();
    let mut v5 = Client::tcp(&server, Version::V5).await;
    v5.connect("leaving").await;
    let mut v3 = Client::tcp(&server, Version::V311).await;
    v3.connect("leaving-too").await;
    let read = tokio::spawn(async move {
        let first = v5.recv().await;
        let end = v5.recv().await;
        let v3_end = v3.recv().await;
        (first, end, v3_end)
    });
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    let (first, end, v3_end) = within("the clients see the end", read).await.unwrap();
    match first {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, 0x8B),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert!(end.is_none());
    assert!(v3_end.is_none());
    let closed = event_of(&server, "closed", "leaving").await;
    assert_eq!(closed["reason_code"], 0x8B);
}

#[tokio::test]
async fn mqtt_3_1_1_users_file_checks_user_name_and_password() {
    let server = Server::start_with(&["--ping-period", "0"], |dir| {
        let users = dir.join("users");
        add_user(&users, "alice", "s3cret");
        vec!["--users".to_owned(), users.display().to_string()]
    });
    for (version, bad) in [(Version::V311, 0x04), (Version::V5, 0x86)] {
        for (user, password) in [(None, None), (Some("alice"), Some("guess"))] {
            let mut c = Client::tcp(&server, version).await;
            let connect = Connect::new(
                version,
                s("someone"),
                None,
                user.map(s),
                password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            )
            .unwrap();
            let ack = c.connect_with(connect).await;
            assert_eq!(ack.code, bad, "{version:?} {user:?}");
            assert!(c.recv().await.is_none(), "closed after the refusal");
        }
        let mut c = Client::tcp(&server, version).await;
        let connect = Connect::new(
            version,
            s("alice-device"),
            None,
            Some(s("alice")),
            Some(Bytes::from_static(b"s3cret")),
        )
        .unwrap();
        assert_eq!(c.connect_with(connect).await.code, 0);
    }
    let opened = event_of(&server, "opened", "alice-device").await;
    assert_eq!(opened["principal"], "alice");
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_keeps_its_subscriptions_and_queues_while_offline() {
    let server = start();
    for version in BOTH {
        let id = format!("durable-{}", version_name(version));
        let connect = || {
            let mut c = Connect::new(version, s(&id), None, None, None).unwrap();
            c.clean_start = false;
            if version == Version::V5 {
                c.properties = Properties::builder()
                    .push(Property::SessionExpiryInterval(60))
                    .unwrap()
                    .build();
            }
            c
        };
        let mut c = Client::tcp(&server, version).await;
        assert_eq!(c.connect_with(connect()).await.code, 0);
        c.subscribe(1, "q/#", sub(QoS::AtLeastOnce)).await;
        c.send(Packet::Disconnect(Default::default())).await;
        assert!(c.recv().await.is_none());
        let mut publisher = Client::tcp(&server, version).await;
        publisher.connect("feeder").await;
        publisher
            .publish("q/1", b"while away", QoS::AtLeastOnce, false, 1)
            .await;
        let mut back = Client::tcp(&server, version).await;
        let ack = back.connect_with(connect()).await;
        assert_eq!((ack.code, ack.session_present), (0, true));
        let got = back.received().await;
        assert_eq!((got.topic(), got.payload()), ("q/1", &b"while away"[..]));
        assert_eq!(got.qos, QoS::AtLeastOnce);
        // The subscription held too: a live message arrives.
        publisher
            .publish("q/2", b"live", QoS::AtLeastOnce, false, 2)
            .await;
        assert_eq!(back.received().await.payload(), b"live");
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::V311 => "311",
        Version::V5 => "5",
    }
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_is_routed_to_subscribers_on_an_unclean_end() {
    let server = start();
    for version in BOTH {
        let mut watcher = Client::tcp(&server, version).await;
        watcher.connect("watcher").await;
        watcher.subscribe(1, "wills/+", sub(QoS::AtLeastOnce)).await;
        let will = sessionwire::mqtt::Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
            topic: s("wills/dying"),
            payload: Bytes::from_static(b"gone"),
        };
        let mut dying = Client::tcp(&server, version).await;
        let connect = Connect::new(version, s("dying"), Some(will), None, None).unwrap();
        assert_eq!(dying.connect_with(connect).await.code, 0);
        // The socket drops without DISCONNECT.
        drop(dying);
        let got = watcher.received().await;
        assert_eq!((got.topic(), got.payload()), ("wills/dying", &b"gone"[..]));
        watcher.send(Packet::Disconnect(Default::default())).await;
    }
}

#[tokio::test]
async fn mqtt_client_limit_counts_both_protocols() {
    let server = Server::start(&["--ping-period", "0", "--max-clients", "2"]);
    let mut first = Client::tcp(&server, Version::V5).await;
    first.connect("first").await;
    let ws = sessionwire_client::WsClient::connect(
        server.addr,
        &sessionwire_client::ConnectOptions::default(),
    )
    .await
    .expect("a protocol session");
    assert_eq!(
        ws.response().code,
        sessionwire::session::ResponseCode::Connected
    );
    // Full: MQTT is refused server busy (5.0 0x89, 3.1.1 0x03) ...
    for (version, code) in [(Version::V5, 0x89), (Version::V311, 0x03)] {
        let mut third = Client::tcp(&server, version).await;
        let connect = Connect::new(version, s("third"), None, None, None).unwrap();
        assert_eq!(third.connect_with(connect).await.code, code);
    }
    // ... and so is the protocol (113) while MQTT holds a place.
    let refused = sessionwire_client::WsClient::connect(
        server.addr,
        &sessionwire_client::ConnectOptions::default(),
    )
    .await
    .expect("an answer");
    assert_eq!(
        refused.response().code,
        sessionwire::session::ResponseCode::ClientLimit
    );
    first.send(Packet::Disconnect(Default::default())).await;
    assert!(first.recv().await.is_none());
    let mut again = Client::tcp(&server, Version::V311).await;
    again.connect("again").await;
}

#[tokio::test]
async fn mqtt_idle_connections_from_one_address_leave_room_for_others() {
    // --max-clients 1: 257 MQTT connection places; past half of them taken,
    // one address may hold 32 connections not yet answered a CONNACK.
    let server = Server::start(&["--ping-period", "0", "--max-clients", "1"]);
    let addr = server.mqtt.unwrap();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(
            within("idle connect", TcpStream::connect(addr))
                .await
                .unwrap(),
        );
    }
    // The last ones were closed at once, long before the CONNECT timeout
    // (10 s) would have closed them.
    let mut last = idle.pop().unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), last.read(&mut buf))
        .await
        .expect("dropped at the accept");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Another address still gets in.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = within("other address", socket.connect(addr)).await.unwrap();
    let mut other = Client::over(Link::Tcp(stream), Version::V5);
    other.connect("elsewhere").await;
    drop(idle);
}

#[tokio::test]
async fn mqtt_4_8_2_shared_subscription_prefers_members_with_a_connection() {
    let server = start();
    // w1 keeps its session (and its membership) while offline.
    let mut away = Client::tcp(&server, Version::V5).await;
    let mut connect = Connect::new(Version::V5, s("w1"), None, None, None).unwrap();
    connect.clean_start = false;
    connect.properties = Properties::builder()
        .push(Property::SessionExpiryInterval(60))
        .unwrap()
        .build();
    assert_eq!(away.connect_with(connect).await.code, 0);
    away.subscribe(1, "$share/g/work", sub(QoS::AtLeastOnce))
        .await;
    away.send(Packet::Disconnect(Default::default())).await;
    assert!(away.recv().await.is_none());
    let mut here = Client::tcp(&server, Version::V5).await;
    here.connect("w2").await;
    here.subscribe(1, "$share/g/work", sub(QoS::AtLeastOnce))
        .await;
    let mut boss = Client::tcp(&server, Version::V5).await;
    boss.connect("boss").await;
    for i in 1..=4u16 {
        boss.publish("work", b"job", QoS::AtLeastOnce, false, i)
            .await;
    }
    for _ in 0..4 {
        assert_eq!(here.received().await.payload(), b"job");
    }
    here.quiet().await;
}

#[tokio::test]
async fn mqtt_3_3_2_3_application_properties_pass_through_unchanged() {
    let server = start();
    let mut sub5 = Client::tcp(&server, Version::V5).await;
    sub5.connect("props-in").await;
    sub5.subscribe(1, "p", sub(QoS::AtLeastOnce)).await;
    let mut publisher = Client::tcp(&server, Version::V5).await;
    publisher.connect("props-out").await;
    let sent = vec![
        Property::PayloadFormatIndicator(1),
        Property::ContentType(s("text/plain")),
        Property::ResponseTopic(s("replies/1")),
        Property::CorrelationData(Bytes::from_static(b"\x00\x01corr")),
        Property::UserProperty(s("k"), s("v1")),
        Property::UserProperty(s("k"), s("v2")),
    ];
    let mut builder = Properties::builder();
    for p in &sent {
        builder = builder.push(p.clone()).unwrap();
    }
    let publish = Publish::new(&s("p"), b"body")
        .with_qos(QoS::AtLeastOnce, 1)
        .with_properties(builder.build());
    publisher.send(Packet::Publish(publish)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let got = sub5.received().await;
    let props: Vec<Property> = got.properties.iter().collect();
    for p in &sent {
        assert!(props.contains(p), "{p:?} missing from {props:?}");
    }
    // User properties keep their order (MQTT-3.3.2-18).
    let users: Vec<&Property> = props
        .iter()
        .filter(|p| matches!(p, Property::UserProperty(..)))
        .collect();
    assert_eq!(users, [&sent[4], &sent[5]]);
}

#[tokio::test]
async fn mqtt_3_10_4_unsubscribe_stops_deliveries() {
    let server = start();
    for version in BOTH {
        let mut c = Client::tcp(&server, version).await;
        c.connect("leaver").await;
        c.subscribe(1, "u/+", sub(QoS::AtMostOnce)).await;
        c.subscribe(2, "u/keep", sub(QoS::AtMostOnce)).await;
        let filters = sessionwire::mqtt::TopicFilters::new(&[s("u/+")]).unwrap();
        c.send(Packet::Unsubscribe(sessionwire::mqtt::Unsubscribe {
            packet_id: 3,
            properties: Properties::new(),
            filters,
        }))
        .await;
        assert!(matches!(c.recv().await, Some(Packet::UnsubAck(a)) if a.packet_id == 3));
        let mut p = Client::tcp(&server, version).await;
        p.connect("poster").await;
        p.publish("u/other", b"no", QoS::AtLeastOnce, false, 1)
            .await;
        p.publish("u/keep", b"yes", QoS::AtLeastOnce, false, 2)
            .await;
        assert_eq!(c.received().await.payload(), b"yes");
        c.quiet().await;
    }
}

#[tokio::test]
async fn mqtt_3_3_1_9_to_13_retain_handling_and_retain_as_published() {
    let server = start();
    let mut publisher = Client::tcp(&server, Version::V5).await;
    publisher.connect("rh-pub").await;
    publisher
        .publish("rh/t", b"stored", QoS::AtLeastOnce, true, 1)
        .await;
    let mut c = Client::tcp(&server, Version::V5).await;
    c.connect("rh-sub").await;
    let with = |rh: u8, rap: bool| SubscriptionOptions {
        retain_handling: rh,
        retain_as_published: rap,
        ..sub(QoS::AtLeastOnce)
    };
    // 2: never.
    c.subscribe(1, "rh/#", with(2, false)).await;
    c.quiet().await;
    // 1: only for a new subscription; rh/# exists already.
    c.subscribe(2, "rh/#", with(1, false)).await;
    c.quiet().await;
    c.subscribe(3, "rh/+", with(1, true)).await;
    let got = c.received().await;
    assert_eq!((got.payload(), got.retain), (&b"stored"[..], true));
    // 0: every time.
    c.subscribe(4, "rh/+", with(0, true)).await;
    assert_eq!(c.received().await.payload(), b"stored");
    // A live retained publication: retain kept for rh/+ (retain as
    // published), one delivery for both subscriptions.
    publisher
        .publish("rh/t", b"again", QoS::AtLeastOnce, true, 2)
        .await;
    let got = c.received().await;
    assert_eq!((got.payload(), got.retain), (&b"again"[..], true));
    c.quiet().await;
    // Without retain as published anywhere, the flag is cleared.
    c.subscribe(5, "rh/+", with(2, false)).await;
    publisher
        .publish("rh/t", b"third", QoS::AtLeastOnce, true, 3)
        .await;
    let got = c.received().await;
    assert_eq!((got.payload(), got.retain), (&b"third"[..], false));
}

#[tokio::test]
async fn mqtt_queue_limit_drops_new_messages_for_a_subscriber_that_stops_acknowledging() {
    // --queue-limit bounds MQTT sessions' queues too. A subscriber that
    // stops acknowledging holds its publisher for at most 1 s (flow
    // control); then new messages its full queue cannot take are dropped,
    // and what it holds stays: nobody is closed.
    let server = Server::start(&["--ping-period", "0", "--queue-limit", "4"]);
    let mut slow = Client::tcp(&server, Version::V5).await;
    let mut connect = Connect::new(Version::V5, s("slow"), None, None, None).unwrap();
    // Receive maximum 1: one message in flight, the rest queued.
    connect.properties = Properties::builder()
        .push(Property::ReceiveMaximum(1))
        .unwrap()
        .build();
    assert_eq!(slow.connect_with(connect).await.code, 0);
    slow.subscribe(1, "flood", sub(QoS::AtLeastOnce)).await;
    let mut publisher = Client::tcp(&server, Version::V5).await;
    publisher.connect("flooder").await;
    for i in 1..=8u16 {
        let payload = [b'0' + i as u8];
        publisher
            .publish("flood", &payload, QoS::AtLeastOnce, false, i)
            .await;
    }
    // One in flight and four queued; the last three were dropped.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(slow.received().await.payload().to_vec());
    }
    assert_eq!(got, [b"1", b"2", b"3", b"4", b"5"].map(|p| p.to_vec()));
    slow.quiet().await;
    // Still connected: it is served again.
    publisher
        .publish("flood", b"again", QoS::AtLeastOnce, false, 9)
        .await;
    assert_eq!(slow.received().await.payload(), b"again");
}

#[tokio::test]
async fn mqtt_3_2_2_3_6_oversized_publish_over_websocket_gets_0x95() {
    let server = start();
    let mut ws = Client::ws(server.addr, Version::V5).await;
    ws.connect("big-ws").await;
    // Over the default 32 KiB packet bound, in one WebSocket frame.
    let payload = vec![b'x'; 40_000];
    let publish = Publish::new(&s("big"), &payload);
    ws.send(Packet::Publish(publish)).await;
    match ws.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, 0x95),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    let closed = event_of(&server, "closed", "big-ws").await;
    assert_eq!(closed["reason"], "MESSAGE_TOO_LARGE");
    assert_eq!(closed["transport"], "mqtt-ws");
}

#[tokio::test]
async fn mqtt_3_1_4_3_takeover_at_the_client_limit_is_not_refused() {
    let server = Server::start(&["--ping-period", "0", "--max-clients", "1"]);
    let mut first = Client::tcp(&server, Version::V5).await;
    first.connect("only").await;
    let mut second = Client::tcp(&server, Version::V5).await;
    second.connect("only").await;
    match first.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, 0x8E),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // Another client id is still one too many.
    let mut other = Client::tcp(&server, Version::V5).await;
    let connect = Connect::new(Version::V5, s("another"), None, None, None).unwrap();
    assert_eq!(other.connect_with(connect).await.code, 0x89);
}

#[tokio::test]
async fn mqtt_deep_filters_and_topics_are_refused_without_harm() {
    let server = start();
    let mut c = Client::tcp(&server, Version::V311).await;
    c.connect("deep").await;
    // Past the tree's level bound: refused, 0x80.
    let deep_filter = "+/".repeat(16_000);
    let codes = c
        .subscribe_answer(1, &deep_filter, sub(QoS::AtMostOnce), Properties::new())
        .await;
    assert_eq!(codes, [0x80]);
    c.subscribe(2, "ok", sub(QoS::AtMostOnce)).await;
    // A topic of 30,000 levels, retained: neither routed nor kept, and not
    // acknowledged as kept. 5.0: PUBACK 0x97.
    let deep = "/".repeat(30_000);
    let mut p5 = Client::tcp(&server, Version::V5).await;
    p5.connect("deep-pub-5").await;
    let retained = Publish::new(&s(&deep), b"x")
        .with_qos(QoS::AtLeastOnce, 1)
        .with_retain(true);
    p5.send(Packet::Publish(retained.clone())).await;
    match p5.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.code), (1, 0x97)),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    p5.publish("ok", b"still here", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(c.received().await.payload(), b"still here");
    // 3.1.1 cannot say so: closed without a PUBACK (MQTT-3.3.5-2), so that
    // the client keeps the message.
    let mut p = Client::tcp(&server, Version::V311).await;
    p.connect("deep-pub").await;
    p.send(Packet::Publish(retained)).await;
    assert!(p.recv().await.is_none(), "closed without a PUBACK");
    c.quiet().await;
}

#[tokio::test]
async fn mqtt_3_9_3_suback_refuses_a_filter_past_the_level_bound() {
    let server = start();
    // 129 levels: one past the bound of 128.
    let filter = format!("{}#", "a/".repeat(128));
    for (version, refused) in [(Version::V311, 0x80), (Version::V5, 0x97)] {
        let mut c = Client::tcp(&server, version).await;
        c.connect("too-deep").await;
        let codes = c
            .subscribe_answer(1, &filter, sub(QoS::AtLeastOnce), Properties::new())
            .await;
        // 5.0: Quota exceeded, the code for a limit of the server's own.
        assert_eq!(codes, [refused], "{version:?}");
        // One level fewer is kept.
        let kept = format!("{}#", "a/".repeat(127));
        c.subscribe(2, &kept, sub(QoS::AtLeastOnce)).await;
        // The refused one was never held: nothing to unsubscribe.
        let codes = c.unsubscribe(3, &[&filter, &kept]).await;
        match version {
            Version::V5 => assert_eq!(codes, [0x11, 0x00]),
            _ => assert_eq!(codes, [] as [u8; 0]),
        }
        c.quiet().await;
    }
}

#[tokio::test]
async fn mqtt_3_11_3_unsuback_says_whether_a_subscription_existed() {
    let server = start();
    let mut c = Client::tcp(&server, Version::V5).await;
    c.connect("unsub").await;
    c.subscribe(1, "x/+", sub(QoS::AtLeastOnce)).await;
    assert_eq!(c.unsubscribe(2, &["x/+", "y"]).await, [0x00, 0x11]);
    // Removed by the first: none left.
    assert_eq!(c.unsubscribe(3, &["x/+"]).await, [0x11]);
    c.quiet().await;
}

/// A client that subscribes and then reads nothing: what waits for its
/// socket beyond the kernel's buffers is bounded (`--queue-bytes`, at least
/// two of the largest packets); past that bound it is closed
/// MESSAGE_QUEUE_LIMIT_REACHED (0x97), and the publisher is still served.
#[tokio::test]
async fn mqtt_a_client_that_does_not_read_is_closed_at_its_write_bound() {
    let server = Server::start(&[
        "--ping-period",
        "0",
        "--queue-bytes",
        "65536",
        "--max-message-size",
        "16384",
    ]);
    let addr = server.mqtt.expect("MQTT listens over TCP");
    // A small receive window, so that the kernel holds little for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within("tcp connect", socket.connect(addr)).await.unwrap();
    let mut sleeper = Client::over(Link::Tcp(stream), Version::V5);
    sleeper.connect("sleeper").await;
    sleeper.subscribe(1, "flood", sub(QoS::AtMostOnce)).await;
    let mut publisher = Client::tcp(&server, Version::V5).await;
    publisher.connect("flooder").await;
    let closed = |e: &Value| {
        e["event"] == "closed" && e["protocol"] == "mqtt" && e["client_id"] == "sleeper"
    };
    let payload = vec![0x5a; 8 * 1024];
    // At most 32 MiB, far beyond any socket buffer on loopback.
    for i in 0..4096 {
        publisher
            .publish("flood", &payload, QoS::AtMostOnce, false, 0)
            .await;
        if i % 64 == 63 && server.events().iter().any(closed) {
            break;
        }
    }
    let event = event_of(&server, "closed", "sleeper").await;
    assert_eq!(event["reason"], "MESSAGE_QUEUE_LIMIT_REACHED");
    assert_eq!(event["reason_code"], 0x97);
    publisher
        .publish("after", b"still served", QoS::AtLeastOnce, false, 1)
        .await;
}

/// Hundreds of clients on the event loop, then shutdown (SIGTERM): every
/// 5.0 client gets DISCONNECT 0x8B (Server shutting down) and the end of
/// the stream, and the server exits 0 within its grace.
#[tokio::test]
async fn mqtt_shutdown_reaches_every_one_of_many_clients() {
    const CLIENTS: usize = 300;
    let mut server = start();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = Client::tcp(&server, Version::V5).await;
        c.connect(&format!("many-{i}")).await;
        clients.push(c);
    }
    let read = tokio::spawn(async move {
        let mut ended = 0;
        for mut c in clients {
            match c.recv().await {
                Some(Packet::Disconnect(d)) => assert_eq!(d.code, 0x8B),
                other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
            }
            assert!(c.recv().await.is_none(), "the stream ends");
            ended += 1;
        }
        ended
    });
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    let ended = within("every client sees the end", read).await.unwrap();
    assert_eq!(ended, CLIENTS);
}
