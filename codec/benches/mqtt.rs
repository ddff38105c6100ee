//! MQTT decoding: 100,000 QoS 1 PUBLISH packets of 90 bytes (MQTT 3.1.1, as
//! a client sends them), decoded and fully checked with `mqtt::packets`,
//! against a floor that only splits the stream by remaining length and hands
//! out one view per packet. "decoded / floor" is the share of the floor's
//! speed that full validation keeps.
//!
//! Run: `cargo bench -p sessionwire --bench mqtt`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessionwire::mqtt::{self, Decoder, Packet, Publish, QoS, Sender, Str, Version};
use sessionwire::Limits;

/// Packets per stream.
const PACKETS: usize = 100_000;
/// Bytes per packet, fixed header included.
const SIZE: usize = 90;

/// One QoS 1 PUBLISH of exactly [`SIZE`] bytes.
fn publish(id: u16) -> Packet {
    let topic = Str::from_static("devices/sensor-0042/telemetry");
    // 2 header bytes, 2 + topic, 2 packet id bytes, then the payload.
    let payload = vec![b'x'; SIZE - 2 - 2 - topic.len() - 2];
    let mut p = Publish::new(&topic, &payload);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = id;
    Packet::Publish(p)
}

/// The floor: split the stream by each packet's remaining length (a
/// variable byte integer), one view per packet, nothing checked.
fn split_only(stream: &Bytes) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while pos < stream.len() {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = stream[pos + i];
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = pos + i + len;
        black_box(stream.slice(pos..end));
        pos = end;
        count += 1;
    }
    count
}

fn decode(stream: &Bytes, limits: &Limits) -> usize {
    let mut count = 0;
    for p in mqtt::packets(stream, Some(Version::V311), Sender::Client, limits).flatten() {
        black_box(p);
        count += 1;
    }
    count
}

/// The streaming decoder fed the stream in chunks of [`CHUNK`] bytes, as a
/// server reading a socket does: each packet is split off its buffer.
fn decoder(stream: &[u8], limits: &Limits) -> usize {
    let mut decoder = Decoder::new(Version::V311, Sender::Client, limits);
    let mut count = 0;
    for mut chunk in stream.chunks(CHUNK) {
        while let Ok(Some(p)) = decoder.feed(&mut chunk) {
            black_box(p);
            count += 1;
        }
    }
    count
}

/// Bytes per chunk fed to [`decoder`].
const CHUNK: usize = 4096;

fn mqtt_publish(c: &mut Criterion) {
    let limits = Limits::default();
    let mut raw = Vec::with_capacity(PACKETS * SIZE);
    for i in 0..PACKETS {
        publish((i % 65_535) as u16 + 1)
            .encode_to_vec(Version::V311, &mut raw)
            .expect("encodes");
    }
    assert_eq!(raw.len(), PACKETS * SIZE);
    let stream = Bytes::from(raw);
    // Share the buffer once, so that no view taken while benchmarking
    // promotes it.
    drop(stream.clone());
    assert_eq!(split_only(&stream), PACKETS);
    assert_eq!(decode(&stream, &limits), PACKETS);
    assert_eq!(decoder(&stream, &limits), PACKETS);

    let mut group = c.benchmark_group("mqtt_publish_qos1_90b");
    group.throughput(Throughput::Elements(PACKETS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("split_only", |b| b.iter(|| split_only(black_box(&stream))));
    group.bench_function("decoded", |b| {
        b.iter(|| decode(black_box(&stream), &limits))
    });
    group.bench_function("decoder", |b| {
        b.iter(|| decoder(black_box(&stream), &limits))
    });
    group.finish();
}

criterion_group!(benches, mqtt_publish);
criterion_main!(benches);
