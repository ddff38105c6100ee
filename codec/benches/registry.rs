//! The session registry's timers: the next deadline of all sessions from the
//! registry's heap (`poll_timeout`), against a scan of every session (what a
//! server had to do before the registry kept the timers), and the cost of
//! driving one session (the `SessionMut` guard refiles its deadline).
//!
//! Run: `cargo bench -p sessionwire --bench registry`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sessionwire::message::ServiceResponse;
use sessionwire::session::handshake::ConnectionRequest;
use sessionwire::session::{Connect, Registry, SeededRandom, SessionConfig, SessionToken};
use sessionwire::{Limits, Message};

/// A registry holding `n` WebSocket sessions opened a microsecond apart.
fn registry(n: usize, t0: Instant) -> (Registry<SeededRandom>, Vec<SessionToken>) {
    let limits = Limits::builder().max_clients(n).build().expect("limits");
    let mut r = Registry::new(limits, SessionConfig::default(), SeededRandom::new(1));
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let now = t0 + Duration::from_micros(i as u64);
        let request = ConnectionRequest::from_query("ty=WB&v=29&ca=8&r=0");
        let Connect::Incoming(incoming) = r.handle_connect(now, request) else {
            panic!("a new session");
        };
        tokens.push(r.accept(now, incoming, None).session.expect("accepted"));
    }
    (r, tokens)
}

fn timers(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("registry");
    for n in [100usize, 10_000] {
        let (mut r, tokens) = registry(n, t0);
        group.bench_with_input(BenchmarkId::new("poll_timeout", n), &n, |b, _| {
            b.iter(|| black_box(r.poll_timeout()))
        });
        group.bench_with_input(BenchmarkId::new("scan", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    tokens
                        .iter()
                        .filter_map(|t| r.session(t)?.poll_timeout())
                        .min(),
                )
            })
        });
        // One message out to one session: its deadline does not move.
        let message = Message::ServiceResponse(ServiceResponse {
            conversation: 1,
            payload: Bytes::from_static(b"ok"),
        });
        let token = tokens[n / 2];
        group.bench_with_input(BenchmarkId::new("drive_one", n), &n, |b, _| {
            b.iter(|| {
                let mut s = r.session_mut(&token).expect("held");
                assert!(s.send(t0, message.clone()));
                while let Some(t) = s.poll_transmit() {
                    black_box(t);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
