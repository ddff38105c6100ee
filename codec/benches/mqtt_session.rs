//! The MQTT session registry on its hot paths: a message routed to one of
//! many connected clients (QoS 0, and QoS 1 through to its PUBACK), a
//! client's QoS 1 PUBLISH taken in, and a whole connection (CONNECT,
//! CONNACK, DISCONNECT).
//!
//! Run: `cargo bench -p sessionwire --bench mqtt_session`.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sessionwire::mqtt::session::{ConnId, Delivery, Event, Message, MqttConfig, Registry};
use sessionwire::mqtt::{Connect, Packet, Properties, Publish, QoS, Str, Version};
use sessionwire::session::SeededRandom;
use sessionwire::Limits;

/// How many clients are connected while one is driven.
const CLIENTS: u64 = 1_000;

fn connect_bytes(id: &str) -> Vec<u8> {
    let c = Connect::new(
        Version::V311,
        Str::try_from(id).expect("id"),
        None,
        None,
        None,
    )
    .expect("connect");
    Packet::Connect(c)
        .to_bytes(Version::V311)
        .expect("encodes")
        .to_vec()
}

/// Drains everything, accepting every CONNECT.
fn drain(r: &mut Registry<SeededRandom>, now: Instant) -> usize {
    let mut n = 0;
    loop {
        let mut any = false;
        while let Some(e) = r.poll_event() {
            any = true;
            if let Event::Connect(incoming) = e {
                r.accept(now, incoming);
            }
        }
        while let Some((_, b)) = r.poll_transmit() {
            any = true;
            n += b.len();
        }
        while r.poll_close().is_some() {
            any = true;
        }
        if !any {
            return n;
        }
    }
}

fn registry(t0: Instant) -> Registry<SeededRandom> {
    let limits = Limits::builder()
        .max_clients(CLIENTS as usize + 10)
        .build()
        .expect("limits");
    let config = MqttConfig {
        limits,
        ..MqttConfig::default()
    };
    let mut r = Registry::new(config, SeededRandom::new(1));
    for i in 0..CLIENTS {
        r.open(t0, ConnId(i));
        r.handle_bytes(t0, ConnId(i), &connect_bytes(&format!("c{i}")));
        drain(&mut r, t0);
    }
    r
}

fn message(qos: QoS) -> (Message, Delivery) {
    (
        Message {
            topic: Str::from_static("sensors/room-1/temperature"),
            payload: Bytes::from_static(&[b'x'; 64]),
            qos,
            retain: false,
            properties: Properties::new(),
            expires_at: None,
        },
        Delivery {
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        },
    )
}

fn routing(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut r = registry(t0);
    let mut group = c.benchmark_group("mqtt_session");
    let (m0, d0) = message(QoS::AtMostOnce);
    group.bench_function("deliver_qos0", |b| {
        b.iter(|| {
            r.deliver(t0, "c500", &m0, d0.clone());
            black_box(drain(&mut r, t0))
        })
    });
    let (m1, d1) = message(QoS::AtLeastOnce);
    let mut next = 0u16;
    group.bench_function("deliver_qos1_acked", |b| {
        b.iter(|| {
            r.deliver(t0, "c501", &m1, d1.clone());
            black_box(drain(&mut r, t0));
            // Packet ids go 1, 2, ... 65535, 1, ...
            next = next.checked_add(1).unwrap_or(1);
            let [hi, lo] = next.to_be_bytes();
            r.handle_bytes(t0, ConnId(501), &[0x40, 0x02, hi, lo]);
            black_box(drain(&mut r, t0))
        })
    });
    let publish = Packet::Publish(
        Publish::new(&Str::from_static("sensors/room-1/temperature"), &[b'x'; 64])
            .with_qos(QoS::AtLeastOnce, 7),
    )
    .to_bytes(Version::V311)
    .expect("encodes");
    group.bench_function("inbound_publish_qos1", |b| {
        b.iter(|| {
            r.handle_bytes(t0, ConnId(502), &publish);
            black_box(drain(&mut r, t0))
        })
    });
    let connect = connect_bytes("visitor");
    let mut conn = CLIENTS;
    group.bench_function("connect_disconnect", |b| {
        b.iter(|| {
            conn += 1;
            r.open(t0, ConnId(conn));
            r.handle_bytes(t0, ConnId(conn), &connect);
            r.handle_bytes(t0, ConnId(conn), &[0xe0, 0x00]);
            black_box(drain(&mut r, t0))
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
