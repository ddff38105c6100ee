//! HTTP polling: batches of 100 messages, decoded from their base64 text with
//! `polling::decode_body`, and iterated from the decoded binary batch with
//! `polling::frames`, and fed in 1000-character chunks to `BodyDecoder`, each
//! against a baseline that only splits frames.
//!
//! Run: `cargo bench -p sessionwire --bench polling`.

mod common;

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessionwire::polling::BodyDecoder;
use sessionwire::{polling, Limits};

/// Messages per batch.
const BATCH: usize = 100;

/// Base64 characters per chunk fed to the incremental decoders.
const CHUNK: usize = 1000;

fn polling(c: &mut Criterion) {
    let limits = Limits::default();
    let messages = common::cycle(&common::mixed_messages(), BATCH);
    let text = polling::encode_body(&messages).expect("small bodies");
    let mut raw = Vec::new();
    polling::encode_batch(&messages, &mut raw).expect("small bodies");
    let batch = Bytes::from(raw);
    // Share the buffer once, so that no view taken while benchmarking
    // promotes it.
    drop(batch.clone());

    // Both sides must see every message of a valid batch.
    let decoded = polling::decode_body(text.as_bytes(), &limits);
    assert_eq!((decoded.messages.len(), decoded.violation), (BATCH, None));
    let mut split = 0;
    common::split_batch(&batch, |_, _| split += 1);
    assert_eq!(split, BATCH);
    assert_eq!(
        polling::frames(&batch, &limits)
            .filter(Result::is_ok)
            .count(),
        BATCH
    );

    let mut group = c.benchmark_group("polling_decode_body");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("baseline", |b| {
        b.iter(|| {
            let decoded = STANDARD.decode(black_box(text.as_bytes()));
            let batch = Bytes::from(decoded.unwrap_or_default());
            let mut frames = Vec::new();
            common::split_batch(&batch, |ty, body| frames.push((ty, body)));
            frames
        })
    });
    group.bench_function("validated", |b| {
        b.iter(|| polling::decode_body(black_box(text.as_bytes()), &limits))
    });
    group.finish();

    let mut group = c.benchmark_group("polling_frames");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("baseline", |b| {
        b.iter(|| {
            common::split_batch(black_box(&batch), |ty, body| {
                black_box((ty, body));
            })
        })
    });
    group.bench_function("validated", |b| {
        b.iter(|| {
            for m in polling::frames(black_box(&batch), &limits) {
                black_box(m.ok());
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("polling_body_decoder");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("baseline", |b| {
        b.iter(|| {
            let mut split = common::SplitStream::default();
            let mut frames = Vec::new();
            for chunk in black_box(text.as_bytes()).chunks(CHUNK) {
                split.feed(chunk, |ty, body| frames.push((ty, body)));
            }
            frames
        })
    });
    group.bench_function("validated", |b| {
        b.iter(|| {
            let mut decoder = BodyDecoder::new(limits.clone());
            let mut out = Vec::new();
            for chunk in black_box(text.as_bytes()).chunks(CHUNK) {
                let _ = decoder.feed(chunk, &mut out);
            }
            (decoder.finish().ok(), out)
        })
    });
    group.finish();
}

criterion_group!(benches, polling);
criterion_main!(benches);
