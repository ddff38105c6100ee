//! WebSocket decoding: `Message::decode`, one message at a time, against a
//! baseline that only splits off the type byte.
//!
//! Run: `cargo bench -p sessionwire --bench websocket`.

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessionwire::{Limits, Message};

fn bench_group(c: &mut Criterion, name: &str, wires: &[Bytes]) {
    let limits = Limits::default();
    let bytes: usize = wires.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("baseline", |b| {
        b.iter(|| {
            for wire in wires {
                black_box(common::split_websocket(black_box(wire)));
            }
        })
    });
    group.bench_function("validated", |b| {
        b.iter(|| {
            for wire in wires {
                black_box(Message::decode(black_box(wire), &limits).ok());
            }
        })
    });
    group.finish();
}

fn websocket(c: &mut Criterion) {
    let limits = Limits::default();
    let mix = common::websocket_wires(&common::mixed_messages());
    let service = common::websocket_wires(&common::service_messages());
    // Every benchmarked message is valid, so both sides do their whole work.
    for wire in mix.iter().chain(&service) {
        assert!(Message::decode(wire, &limits).is_ok(), "{wire:?}");
    }
    bench_group(c, "websocket_mix", &mix);
    bench_group(c, "websocket_service", &service);
}

criterion_group!(benches, websocket);
criterion_main!(benches);
