//! The same MQTT streams decoded and encoded, in one process, by a split-only
//! floor and by each peer codec. Throughput is in packets; the ratio to the
//! floor is what BENCHMARKS.md reports (`scripts/mqtt-peers-table.py`).
//!
//! ```sh
//! cargo bench -p sessionwire-bench --bench mqtt_peers -- --warm-up-time 1 --measurement-time 3
//! ```

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sessionwire_bench::encode::Packets;
use sessionwire_bench::inputs::{publishes, sessions, SESSION_PACKETS};
use sessionwire_bench::{Peer, Version};

/// PUBLISH packets in the first input.
const PUBLISHES: usize = 100_000;
/// Sessions in the mixed input (31 packets each).
const SESSIONS: usize = 1_000;

const VERSIONS: [Version; 2] = [Version::V311, Version::V5];
const ALL: [Peer; 7] = Peer::ALL;
/// Encoding has one floor and one way of ours: the decode-only variants
/// encode the same packets.
const ENCODERS: [Peer; 5] = [
    Peer::Floor,
    Peer::Sessionwire,
    Peer::Mqttrs,
    Peer::Mqttbytes,
    Peer::Rumqttc,
];

fn inputs(version: Version) -> [(&'static str, Vec<u8>, usize); 2] {
    [
        ("publish_qos1_90B", publishes(version, PUBLISHES), PUBLISHES),
        (
            "session",
            sessions(version, SESSIONS),
            SESSIONS * SESSION_PACKETS,
        ),
    ]
}

fn decode(c: &mut Criterion) {
    for version in VERSIONS {
        for (what, stream, packets) in inputs(version) {
            let mut group = c.benchmark_group(format!("mqtt_decode_{what}"));
            group.throughput(Throughput::Elements(packets as u64));
            for peer in ALL.into_iter().filter(|p| p.supports(version)) {
                let id = BenchmarkId::new(peer.name(), version.label());
                group.bench_function(id, |b| {
                    b.iter_batched_ref(
                        || BytesMut::from(&stream[..]),
                        |input| {
                            let n = peer.decode_all(input, version);
                            assert_eq!(n, Ok(packets));
                        },
                        BatchSize::LargeInput,
                    )
                });
            }
            group.finish();
        }
    }
}

fn encode(c: &mut Criterion) {
    for version in VERSIONS {
        for (what, stream, packets) in inputs(version) {
            let mut group = c.benchmark_group(format!("mqtt_encode_{what}"));
            group.throughput(Throughput::Elements(packets as u64));
            for peer in ENCODERS.into_iter().filter(|p| p.supports(version)) {
                let decoded = Packets::decode(peer, version, &stream).expect("bench input decodes");
                let id = BenchmarkId::new(peer.name(), version.label());
                group.bench_function(id, |b| {
                    b.iter_batched_ref(
                        || decoded.output(stream.len() * 2),
                        |out| decoded.encode(out).expect("encodes"),
                        BatchSize::LargeInput,
                    )
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
