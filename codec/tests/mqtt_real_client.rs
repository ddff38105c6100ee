//! The codec against a real MQTT client: `mosquitto_pub` and
//! `mosquitto_sub` (Debian's mosquitto-clients) connect to a loopback peer
//! that decodes what they send with `Decoder::server`, answers with packets
//! this codec encodes, and checks that every packet received re-encodes to
//! exactly the bytes the client sent. Both versions.
//!
//! The clients must be installed (`apt-get install mosquitto-clients`); a
//! missing client fails the test rather than skipping it. Every run is
//! bounded: socket timeouts of 10 s, and the client is killed at the end.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sessionwire::mqtt::{
    Ack, ConnAck, Decoder, Packet, Properties, Publish, QoS, Str, SubAck, Version,
};
use sessionwire::Limits;

/// A client process, killed when dropped.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` against the peer listening on `listener`, speaking `v`.
fn spawn(program: &str, listener: &TcpListener, v: Version, args: &[&str]) -> Client {
    let port = listener.local_addr().unwrap().port().to_string();
    let version = match v {
        Version::V311 => "mqttv311",
        Version::V5 => "mqttv5",
    };
    match Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Client(child),
        Err(e) => panic!("{program} must be installed (Debian: mosquitto-clients): {e}"),
    }
}

/// A loopback peer for one client connection.
struct Peer {
    socket: TcpStream,
    decoder: Decoder,
    /// Every byte the client sent.
    raw: Vec<u8>,
    /// Every packet decoded from it.
    packets: Vec<Packet>,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Peer {
        let (socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Peer {
            socket,
            decoder: Decoder::server(&Limits::default()),
            raw: Vec::new(),
            packets: Vec::new(),
        }
    }

    /// The next packet, or `None` once the client closed the connection.
    fn next(&mut self) -> Option<Packet> {
        let mut buf = [0u8; 512];
        loop {
            let n = match self.socket.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("reading the client: {e}"),
            };
            if n == 0 {
                assert_eq!(
                    self.decoder.buffered(),
                    0,
                    "the client stopped inside a packet"
                );
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
            let mut input = &buf[..n];
            // Feed everything; keep the first packet and queue the rest.
            let mut first = None;
            while !input.is_empty() || first.is_none() {
                match self.decoder.feed(&mut input) {
                    Ok(Some(p)) => {
                        self.packets.push(p.clone());
                        if first.is_none() {
                            first = Some(p);
                        }
                    }
                    Ok(None) => break,
                    Err(v) => panic!("the real client's bytes were refused: {v}"),
                }
            }
            if first.is_some() {
                return first;
            }
        }
    }

    fn send(&mut self, p: Packet, v: Version) {
        self.socket.write_all(&p.to_bytes(v).unwrap()).unwrap();
    }

    /// Reads until the client closes, then checks that the packets
    /// re-encode to exactly the bytes received.
    fn finish(mut self, v: Version) -> Vec<Packet> {
        while self.next().is_some() {}
        let mut again = Vec::new();
        for p in &self.packets {
            p.encode_to_vec(v, &mut again).unwrap();
        }
        assert_eq!(again, self.raw, "re-encoding gives the client's bytes");
        self.packets
    }
}

fn connack() -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code: 0,
        properties: Properties::new(),
    })
}

#[test]
fn mosquitto_pub_connect_and_publish_decode_and_reencode() {
    for v in [Version::V311, Version::V5] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut args = vec![
            "-i",
            "real-pub",
            "-k",
            "30",
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "sensors/room-1",
            "-m",
            "21.5",
            "-q",
            "1",
            "--will-topic",
            "clients/real-pub",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ];
        if v == Version::V5 {
            args.extend([
                "-D",
                "connect",
                "session-expiry-interval",
                "60",
                "-D",
                "publish",
                "user-property",
                "unit",
                "celsius",
                "-D",
                "publish",
                "content-type",
                "text/plain",
            ]);
        }
        let _client = spawn("mosquitto_pub", &listener, v, &args);
        let mut peer = Peer::accept(&listener);
        let Some(Packet::Connect(c)) = peer.next() else {
            panic!("CONNECT first")
        };
        assert_eq!(
            (c.version, c.client_id().as_str(), c.keep_alive),
            (v, "real-pub", 30)
        );
        assert_eq!(c.user_name().as_deref(), Some("alice"));
        assert_eq!(c.password().as_deref(), Some(&b"s3cret"[..]));
        let will = c.will().expect("a will");
        assert_eq!(
            (will.topic.as_str(), &will.payload[..], will.qos),
            ("clients/real-pub", &b"gone"[..], QoS::AtLeastOnce)
        );
        peer.send(connack(), v);
        let Some(Packet::Publish(p)) = peer.next() else {
            panic!("then PUBLISH")
        };
        assert_eq!(
            (p.topic(), p.payload(), p.qos),
            ("sensors/room-1", &b"21.5"[..], QoS::AtLeastOnce)
        );
        if v == Version::V5 {
            assert_eq!(p.properties.iter().count(), 2);
        }
        peer.send(Packet::PubAck(Ack::new(p.packet_id)), v);
        let packets = peer.finish(v);
        assert!(
            matches!(packets.last(), Some(Packet::Disconnect(_))),
            "{packets:?}"
        );
    }
}

#[test]
fn mosquitto_sub_subscribes_and_decodes_what_we_encode() {
    for v in [Version::V311, Version::V5] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = spawn(
            "mosquitto_sub",
            &listener,
            v,
            &[
                "-i", "real-sub", "-t", "a/+/c", "-t", "x/#", "-q", "2", "-C", "1",
            ],
        );
        let mut peer = Peer::accept(&listener);
        assert!(matches!(peer.next(), Some(Packet::Connect(_))));
        peer.send(connack(), v);
        let Some(Packet::Subscribe(s)) = peer.next() else {
            panic!("SUBSCRIBE")
        };
        let filters: Vec<_> = s
            .subscriptions
            .iter()
            .map(|(f, o)| (f.to_string(), o.qos))
            .collect();
        assert_eq!(
            filters,
            [
                ("a/+/c".to_string(), QoS::ExactlyOnce),
                ("x/#".to_string(), QoS::ExactlyOnce)
            ]
        );
        peer.send(
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Properties::new(),
                codes: Bytes::from_static(&[0x02, 0x02]),
            }),
            v,
        );
        // A QoS 0 message the client prints, then it disconnects (-C 1).
        let message = Publish::new(&Str::from_static("a/b/c"), b"hello from the codec");
        peer.send(Packet::Publish(message), v);
        let packets = peer.finish(v);
        assert!(
            matches!(packets.last(), Some(Packet::Disconnect(_))),
            "{packets:?}"
        );
        let out = client_output(client);
        assert_eq!(out.trim(), "hello from the codec");
    }
}

/// What the client printed, once it exited.
fn client_output(mut client: Client) -> String {
    let mut out = String::new();
    if let Some(stdout) = client.0.stdout.as_mut() {
        stdout.read_to_string(&mut out).unwrap();
    }
    out
}
