//! The `mqtt_session` fuzz target body: drives a [`Registry`] with an
//! `arbitrary` sequence of what a server and its MQTT clients can do, and
//! checks the registry's books after every step:
//!
//! - no connection is closed twice, and nothing is written to one after its
//!   close decision;
//! - [`Registry::connected`] is the number of sessions with a connection,
//!   within the client limit, and the offline sessions within their cap;
//! - timers never fire forever, and the caller's clock going backwards
//!   breaks nothing.
//!
//! Steps are raw bytes or packets picked from a list of valid and invalid
//! ones of both versions (so that inputs reach connected sessions, QoS
//! handshakes and wills), connection drops, time, deliveries and server
//! closes. The same function runs under cargo-fuzz and in the stable tests
//! (the module's proptest, `check/tests/fuzz_replay.rs`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::{ConnId, Delivery, Event, Message, MqttConfig, Refuse, Registry, ServerClose};
use crate::mqtt::{
    Ack, Connect, Disconnect, Packet, Properties, Property, Publish, QoS, Str, Version, Will,
};
use crate::session::ids::SeededRandom;
use crate::{CloseReason, Limits};

/// The most steps one input may drive: bounds the work per input.
const MAX_STEPS: usize = 256;

/// The client ids the steps use.
const CLIENTS: [&str; 2] = ["m", "n"];

#[derive(Arbitrary, Debug)]
struct Setup {
    max_message_size: u8,
    max_clients: u8,
    receive_maximum: u8,
    max_inflight: u8,
    max_queued_messages: u8,
    topic_alias_maximum: u8,
    server_keep_alive: Option<u8>,
    max_session_expiry: u8,
    connect_timeout_ms: u16,
    max_sessions: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Open(u8),
    Bytes(u8, Vec<u8>),
    Packet(u8, u8),
    Lost(u8),
    Advance(u16),
    /// The caller's clock going backwards.
    Rewind(u16),
    Deliver {
        client: bool,
        qos: u8,
        payload: u8,
        expires_ms: Option<u16>,
    },
    Close {
        client: bool,
        controller: bool,
    },
    /// How the server decides the next CONNECTs: accept, or refuse.
    Decide(u8),
}

/// Packets of both versions a client could send, valid and not.
fn packets() -> Vec<Bytes> {
    let mut out = Vec::new();
    for version in [Version::V311, Version::V5] {
        let mut list = Vec::new();
        for (i, id) in CLIENTS.iter().enumerate() {
            let will_properties = match version {
                Version::V5 => Properties::builder()
                    .push(Property::WillDelayInterval(2))
                    .map(|b| b.build())
                    .unwrap_or_default(),
                Version::V311 => Properties::new(),
            };
            let will = Will {
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: will_properties,
                topic: Str::from_static("will"),
                payload: Bytes::from_static(b"gone"),
            };
            let Ok(mut c) = Connect::new(version, Str::from_static(id), Some(will), None, None)
            else {
                continue;
            };
            c.clean_start = i == 0;
            c.keep_alive = 5;
            if version == Version::V5 {
                c.properties = Properties::builder()
                    .push(Property::SessionExpiryInterval(10))
                    .and_then(|b| b.push(Property::ReceiveMaximum(2)))
                    .map(|b| b.build())
                    .unwrap_or_default();
            }
            list.push(Packet::Connect(c));
        }
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let p = Publish::new(&Str::from_static("t"), b"p").with_qos(qos, 1 + qos as u16);
            list.push(Packet::Publish(p.clone().with_dup(qos != QoS::AtMostOnce)));
            list.push(Packet::Publish(p));
        }
        for id in 1..=3 {
            list.push(Packet::PubAck(Ack::new(id)));
            list.push(Packet::PubRec(Ack::new(id)));
            list.push(Packet::PubRel(Ack::new(id)));
            list.push(Packet::PubComp(Ack::new(id)));
        }
        list.push(Packet::PingReq);
        list.push(Packet::Disconnect(Disconnect::default()));
        list.push(Packet::Disconnect(Disconnect {
            code: 0x04,
            properties: Properties::new(),
        }));
        out.extend(list.iter().filter_map(|p| p.to_bytes(version).ok()));
    }
    out
}

/// Runs one input; the first close decision and the index of the step that
/// led to it, if any connection was closed. Panics when an invariant breaks.
pub fn mqtt_session(data: &[u8], origin: Instant) -> Option<(CloseReason, usize)> {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return None;
    };
    let max_clients = usize::from(setup.max_clients % 4) + 1;
    let max_sessions = usize::from(setup.max_sessions % 3);
    let limits = Limits::builder()
        .max_message_size(16 + usize::from(setup.max_message_size))
        .max_clients(max_clients)
        .build()
        .ok()?;
    let config = MqttConfig {
        limits,
        receive_maximum: u16::from(setup.receive_maximum % 4),
        max_inflight: u16::from(setup.max_inflight % 4),
        max_queued_messages: usize::from(setup.max_queued_messages % 5),
        max_queued_bytes: 64,
        topic_alias_maximum: u16::from(setup.topic_alias_maximum % 4),
        // The same byte, so that inputs keep their meaning.
        outbound_topic_aliases: u16::from(setup.topic_alias_maximum % 4),
        server_keep_alive: setup.server_keep_alive.map(|k| u16::from(k % 8)),
        max_session_expiry: u32::from(setup.max_session_expiry % 20),
        connect_timeout: Duration::from_millis(1000 + u64::from(setup.connect_timeout_ms)),
        maximum_qos: QoS::ExactlyOnce,
        max_sessions,
        // Small, so that a spent budget is reached.
        max_held_bytes: 4096,
    };
    let packets = packets();
    let mut r = Registry::new(config, SeededRandom::new(11));
    let mut now = origin;
    let mut decide = 0u8;
    let mut closed: HashSet<ConnId> = HashSet::new();
    let mut first = None;
    for index in 0..MAX_STEPS {
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        let conn = |c: u8| ConnId(u64::from(c % 4));
        match step {
            // A server never names two connections alike.
            Step::Open(c) if closed.contains(&conn(c)) => {}
            Step::Open(c) => r.open(now, conn(c)),
            Step::Bytes(c, b) => r.handle_bytes(now, conn(c), &b),
            Step::Packet(c, p) => {
                if let Some(bytes) = packets.get(usize::from(p) % packets.len().max(1)) {
                    r.handle_bytes(now, conn(c), bytes);
                }
            }
            Step::Lost(c) => r.connection_lost(now, conn(c)),
            Step::Advance(ms) => {
                let end = now + Duration::from_millis(u64::from(ms));
                let mut fired = 0;
                while let Some(t) = r.poll_timeout().filter(|t| *t <= end) {
                    now = now.max(t);
                    r.handle_timeout(now);
                    fired += 1;
                    assert!(fired < 10_000, "timers keep firing");
                }
                now = end;
            }
            Step::Rewind(ms) => {
                let back = now.checked_sub(Duration::from_millis(u64::from(ms)));
                r.handle_timeout(back.unwrap_or(now));
            }
            Step::Deliver {
                client,
                qos,
                payload,
                expires_ms,
            } => {
                let qos = QoS::from_u8(qos % 3).unwrap_or(QoS::AtMostOnce);
                let message = Message {
                    topic: Str::from_static("d"),
                    payload: Bytes::from(vec![b'x'; usize::from(payload % 48)]),
                    qos,
                    retain: false,
                    properties: Properties::new(),
                    expires_at: expires_ms.map(|ms| now + Duration::from_millis(u64::from(ms))),
                };
                let delivery = Delivery {
                    qos,
                    retain: false,
                    subscription_ids: vec![1],
                };
                r.deliver(now, CLIENTS[usize::from(client)], &message, delivery);
            }
            Step::Close { client, controller } => {
                let why = if controller {
                    ServerClose::Controller
                } else {
                    ServerClose::Shutdown
                };
                r.close(now, CLIENTS[usize::from(client)], why);
            }
            Step::Decide(d) => decide = d,
        }
        // The server: decide every CONNECT, drain the rest.
        loop {
            let mut any = false;
            while let Some(e) = r.poll_event() {
                any = true;
                if let Event::Connect(incoming) = e {
                    match decide % 5 {
                        1 => r.refuse(now, incoming, Refuse::BadCredentials),
                        2 => r.refuse(now, incoming, Refuse::NotAuthorized),
                        3 => r.refuse(now, incoming, Refuse::Busy),
                        _ => r.accept(now, incoming),
                    }
                }
            }
            while let Some((c, _)) = r.poll_transmit() {
                any = true;
                assert!(!closed.contains(&c), "{c:?} written after its close");
            }
            while let Some((c, close)) = r.poll_close() {
                any = true;
                assert!(closed.insert(c), "{c:?} closed twice");
                first.get_or_insert((close.reason, index));
            }
            if !any {
                break;
            }
        }
        let online = r.sessions().filter(|s| s.conn.is_some()).count();
        assert_eq!(r.connected(), online, "connected count");
        assert!(r.connected() <= max_clients, "client limit");
        assert!(
            r.sessions().count() - online <= max_sessions,
            "offline-session cap"
        );
        for s in r.sessions() {
            if let Some(c) = s.conn {
                assert!(!closed.contains(&c), "a session on a closed connection");
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mqtt_registry_keeps_its_books_whatever_the_server_and_clients_do(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            mqtt_session(&data, Instant::now());
        }
    }

    #[test]
    fn mqtt_session_target_closes_for_several_reasons() {
        // Deterministic inputs (xorshift): their first closes differ.
        let mut reasons = HashSet::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let data: Vec<u8> = (0..400)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            reasons.extend(mqtt_session(&data, Instant::now()).map(|(r, _)| r));
        }
        assert!(reasons.len() >= 3, "{reasons:?}");
    }
}
