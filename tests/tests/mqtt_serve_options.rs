//! `sessionwire serve`'s MQTT options reach the broker: each is set on the
//! command line and seen by a raw-socket client (the CONNACK's properties,
//! what a PUBLISH carries, the QoS granted, when a silent socket is closed).

use std::time::{Duration, Instant};

use sessionwire::mqtt::{
    ConnAck, Connect, Packet, Properties, Property, PropertyId, Publish, QoS, Str, Version,
};
use sessionwire_tests::mqtt::{RawClient, Read, WAIT};
use sessionwire_tests::server::Server;

/// Our server with its MQTT listener on a free port and `options`.
fn serve(options: &[&str]) -> Server {
    let mut args = vec!["--mqtt-listen", "127.0.0.1:0"];
    args.extend_from_slice(options);
    Server::start(&args)
}

fn mqtt(server: &Server) -> std::net::SocketAddr {
    server.mqtt.expect("the MQTT listener")
}

fn str(s: &str) -> Str {
    Str::try_from(s).expect("a valid string")
}

/// A 5.0 client connected as `id`, announcing `alias_max` topic aliases.
fn connect_v5(server: &Server, id: &str, alias_max: u16) -> (RawClient, ConnAck) {
    let mut connect = Connect::new(Version::V5, str(id), None, None, None).expect("a CONNECT");
    if alias_max > 0 {
        connect.properties = Properties::builder()
            .push(Property::TopicAliasMaximum(alias_max))
            .expect("a property")
            .build();
    }
    let (c, ack) = RawClient::connect_with(mqtt(server), connect);
    assert_eq!(ack.code, 0, "{id}");
    (c, ack)
}

/// MQTT-3.2.2 (5.0 CONNACK properties): `--mqtt-receive-maximum`,
/// `--mqtt-maximum-qos`, `--mqtt-server-keep-alive` and
/// `--mqtt-topic-alias-maximum` are what the CONNACK announces; by default
/// it announces a receive maximum of 64 and 16 topic aliases, no maximum
/// QoS (2 is the default) and no server keep alive.
#[test]
fn mqtt_3_2_2_connack_announces_the_serve_options() {
    let server = serve(&[]);
    let (_c, ack) = connect_v5(&server, "defaults", 0);
    let p = &ack.properties;
    assert_eq!(
        p.get(PropertyId::ReceiveMaximum),
        Some(Property::ReceiveMaximum(64))
    );
    assert_eq!(
        p.get(PropertyId::TopicAliasMaximum),
        Some(Property::TopicAliasMaximum(16))
    );
    assert_eq!(p.get(PropertyId::MaximumQos), None);
    assert_eq!(p.get(PropertyId::ServerKeepAlive), None);

    let server = serve(&[
        "--mqtt-receive-maximum",
        "5",
        "--mqtt-maximum-qos",
        "1",
        "--mqtt-server-keep-alive",
        "7",
        "--mqtt-topic-alias-maximum",
        "0",
    ]);
    let (_c, ack) = connect_v5(&server, "options", 0);
    let p = &ack.properties;
    assert_eq!(
        p.get(PropertyId::ReceiveMaximum),
        Some(Property::ReceiveMaximum(5))
    );
    assert_eq!(p.get(PropertyId::MaximumQos), Some(Property::MaximumQos(1)));
    assert_eq!(
        p.get(PropertyId::ServerKeepAlive),
        Some(Property::ServerKeepAlive(7))
    );
    assert_eq!(p.get(PropertyId::TopicAliasMaximum), None);
}

/// MQTT-3.8.4 (the granted QoS is at most the server's maximum):
/// `--mqtt-maximum-qos 1` grants a QoS 2 subscription QoS 1, in both
/// versions.
#[test]
fn mqtt_3_8_4_maximum_qos_option_lowers_the_granted_qos() {
    let server = serve(&["--mqtt-maximum-qos", "1"]);
    for version in [Version::V311, Version::V5] {
        let (mut c, code) = RawClient::connect(mqtt(&server), version, "granted", 0);
        assert_eq!(code, 0);
        assert_eq!(c.subscribe("q/#", QoS::ExactlyOnce), 1, "{version:?}");
    }
}

/// MQTT-3.1.2-26/27: with `--mqtt-server-topic-aliases 0` the broker sets
/// no topic alias on what it sends, even to a client that allows some (by
/// default the second PUBLISH of a topic carries the alias alone).
#[test]
fn mqtt_3_1_2_26_server_topic_aliases_option() {
    for (options, want) in [
        (&[][..], [Some(1), Some(1)]),
        (&["--mqtt-server-topic-aliases", "0"][..], [None, None]),
    ] {
        let server = serve(options);
        let (mut sub, _) = connect_v5(&server, "alias-sub", 4);
        assert_eq!(sub.subscribe("a/#", QoS::AtMostOnce), 0);
        let (mut publisher, _) = connect_v5(&server, "alias-pub", 0);
        for _ in 0..2 {
            publisher.send(&Packet::Publish(Publish::new(&str("a/b"), b"m")));
        }
        let mut aliases = Vec::new();
        for _ in 0..2 {
            match sub.read(WAIT) {
                Read::Packet(Packet::Publish(p)) => {
                    aliases.push(match p.properties.get(PropertyId::TopicAlias) {
                        Some(Property::TopicAlias(a)) => Some(a),
                        _ => None,
                    });
                    if aliases.len() == 1 || want[1].is_none() {
                        assert_eq!(p.topic(), "a/b", "{options:?}");
                    }
                }
                other => panic!("expected a PUBLISH, got {other:?}"),
            }
        }
        assert_eq!(aliases, want, "{options:?}");
    }
}

/// A connection whose CONNECT never comes is closed after
/// `--mqtt-connect-timeout` (here 300 ms, against 10 s by default).
#[test]
fn mqtt_connect_timeout_option() {
    let server = serve(&["--mqtt-connect-timeout", "300"]);
    let mut c = RawClient::open(mqtt(&server), Version::V5);
    let start = Instant::now();
    assert_eq!(c.read_until_closed(Duration::from_secs(5)), None);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}
