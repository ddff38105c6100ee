//! The MQTT codec as a `tokio_util` codec over a real TCP connection on
//! 127.0.0.1: a client and a server exchange packets through
//! `Framed<TcpStream, MqttCodec>`, and a bad packet ends the server's stream
//! with its violation. Needs the `tokio-codec` feature.
#![cfg(feature = "tokio-codec")]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sessionwire::mqtt::tokio::{CodecError, MqttCodec};
use sessionwire::mqtt::{Ack, ConnAck, Connect, Packet, Properties, Publish, QoS, Str, Version};
use sessionwire::{CloseReason, Limits};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

fn connect() -> Packet {
    let mut c = Connect::new(Version::V5, Str::from_static("framed"), None, None, None).unwrap();
    c.keep_alive = 30;
    Packet::Connect(c)
}

fn publish(id: u16) -> Packet {
    let mut p = Publish::new(&Str::from_static("a/b"), b"hello");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = id;
    Packet::Publish(p)
}

#[tokio::test]
async fn framed_tcp_stream_exchanges_packets_and_stops_at_a_violation() {
    let limits = Limits::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_limits = limits.clone();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MqttCodec::server(&server_limits));
        let mut received = Vec::new();
        loop {
            match framed.next().await {
                Some(Ok(p)) => {
                    let reply = match &p {
                        Packet::Connect(_) => Packet::ConnAck(ConnAck {
                            session_present: false,
                            code: 0,
                            properties: Properties::new(),
                        }),
                        Packet::Publish(publish) => Packet::PubAck(Ack::new(publish.packet_id)),
                        _ => continue,
                    };
                    received.push(p);
                    framed.send(reply).await.unwrap();
                }
                Some(Err(CodecError::Violation(v))) => return (received, Some(v)),
                Some(Err(e)) => panic!("{e}"),
                None => return (received, None),
            }
        }
    });

    let run = async {
        let socket = TcpStream::connect(addr).await.unwrap();
        let mut client = Framed::new(socket, MqttCodec::client(Version::V5, &limits));
        client.send(connect()).await.unwrap();
        assert!(matches!(client.next().await, Some(Ok(Packet::ConnAck(_)))));
        for id in 1..=3 {
            client.send(publish(id)).await.unwrap();
            let Some(Ok(Packet::PubAck(ack))) = client.next().await else {
                panic!("a PUBACK")
            };
            assert_eq!(ack.packet_id, id);
        }
        // A PUBLISH with QoS 3 (MQTT-3.3.1-4), written raw.
        let mut socket = client.into_inner();
        socket.write_all(&[0x36, 0x00]).await.unwrap();
        server.await.unwrap()
    };
    let (received, violation) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the exchange finishes in time");
    assert_eq!(received.len(), 4);
    assert_eq!(received[0], connect());
    let v = violation.expect("the bad packet is reported");
    assert_eq!(v.kind().reason_code(), Some(0x81));
    assert_eq!(v.close_reason(), CloseReason::InvalidInboundMessage);
    let connect_len = connect().encoded_len(Version::V5).unwrap();
    let publish_len = publish(1).encoded_len(Version::V5).unwrap();
    assert_eq!(v.offset(), connect_len + 3 * publish_len);
}
