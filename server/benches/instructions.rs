//! Instruction counts of the retained store's refusal path, under valgrind's
//! callgrind (through gungraun), so that the figures do not move with the
//! machine's load.
//!
//! A retained PUBLISH that the store refuses because it already holds its
//! bound of messages must cost the topic's levels, never a walk of what the
//! store holds: it runs on the broker's one MQTT thread, and a flood of such
//! messages against a full store must not stall everyone else (see
//! `server/src/mqtt/retained.rs`, "Cost"). This bench refuses the same
//! [`MESSAGES`] new 128-level topics (half new from their first level, half
//! sharing all but their last level with a held topic) on two stores:
//!
//! - `retained_refusal_floor`: the store's message bound is 1 and it holds
//!   one 128-level topic;
//! - `retained_refusal_validated`: the bound is 1,000 and it holds 1,000
//!   such topics (128,000 levels).
//!
//! Both stores are built in the benchmark's setup, which callgrind does not
//! count, and their bytes bound is far above what they hold, so that every
//! refusal is for the message bound. Half of the held messages can expire
//! (an hour on), so the expiry index is not empty and is looked at. The
//! ratio `.ci/bench-check` prints (floor / validated) is the proof: near
//! 1.0, a refusal costs the same whether the store holds one topic or a
//! thousand of 128 levels (0.99: about 38,000 instructions a refusal on
//! either). The store before its expiry index, which walked every held
//! topic on each refusal, gave 0.007 here: about 71,000 instructions a
//! refusal with one topic held, 9,650,000 with a thousand.
//!
//! The pair follows `codec/benches/instructions.rs`: functions named
//! `<path>_floor` and `<path>_validated` with the same bench ids, paired by
//! name; `.ci/bench-check` runs both files and compares them with
//! `codec/benches/instructions.baseline`.
//!
//! Run: `cargo bench -p sessionwire-server --bench instructions` (needs
//! valgrind and `gungraun-runner` at the version of the `gungraun`
//! dev-dependency).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gungraun::{library_benchmark, library_benchmark_group, main};
use sessionwire_server::mqtt::retained::{RetainError, Retained, RetainedLimits};

/// Retained messages refused by every benchmark (`.ci/bench-check`
/// divides by it, as by the codec's).
const MESSAGES: usize = 100;

/// Levels of every topic, held or refused: the store's default depth.
const LEVELS: usize = 128;

/// The payload of every message, and the size the store is told of.
const PAYLOAD: &[u8] = &[0x5a; 100];

/// What a benchmark takes and gives back (so that dropping the store is
/// not measured): the full store, the [`MESSAGES`] topics it refuses, and
/// the instant the refusals happen at.
type Input = (Retained<Bytes>, Vec<String>, Instant);

/// A topic of [`LEVELS`] levels: `d<first>/1/2/.../126/<last>`.
fn deep(first: usize, last: usize) -> String {
    let mut t = format!("d{first}");
    for level in 1..LEVELS - 1 {
        t.push('/');
        t.push_str(&level.to_string());
    }
    t.push('/');
    t.push_str(&last.to_string());
    t
}

/// A store holding `held` topics of [`LEVELS`] levels, full by its message
/// bound (and far from its bytes bound), and [`MESSAGES`] new topics of as
/// many levels that it must refuse, the same for every store: half new from
/// their first level, half sharing all but their last level with a held
/// topic (so that the walk goes down the trie's whole depth).
fn full_store(held: usize) -> Input {
    let now = Instant::now();
    let mut store = Retained::new(RetainedLimits {
        max_messages: held,
        max_bytes: 1 << 30,
        max_levels: LEVELS,
    });
    for i in 0..held {
        let expires = (i % 2 == 0).then(|| now + Duration::from_secs(3600 + i as u64));
        store
            .set(
                now,
                &deep(i, i),
                Some(Bytes::from_static(PAYLOAD)),
                PAYLOAD.len(),
                expires,
            )
            .expect("below both bounds");
    }
    assert_eq!(store.len(), held);
    let fresh: Vec<String> = (0..MESSAGES)
        .map(|k| {
            let new = 1_000_000 + k;
            if k % 2 == 0 {
                deep(new, new)
            } else {
                deep(0, new)
            }
        })
        .collect();
    for topic in &fresh {
        assert_eq!(
            store.set(
                now,
                topic,
                Some(Bytes::from_static(PAYLOAD)),
                PAYLOAD.len(),
                None
            ),
            Err(RetainError::TooMany),
            "refused for the message bound"
        );
    }
    assert_eq!(store.len(), held, "nothing dropped");
    (store, fresh, now)
}

/// Refuses every topic of the input.
fn refuse_all(mut input: Input) -> Input {
    let (store, fresh, now) = &mut input;
    for topic in fresh.iter() {
        let _ = black_box(store.set(
            *now,
            black_box(topic),
            Some(Bytes::from_static(PAYLOAD)),
            PAYLOAD.len(),
            None,
        ));
    }
    input
}

#[library_benchmark]
#[bench::deep_topics(args = (1), setup = full_store)]
fn retained_refusal_floor(input: Input) -> Input {
    refuse_all(input)
}

#[library_benchmark]
#[bench::deep_topics(args = (1000), setup = full_store)]
fn retained_refusal_validated(input: Input) -> Input {
    refuse_all(input)
}

library_benchmark_group!(
    name = retained_refusal;
    benchmarks = retained_refusal_floor, retained_refusal_validated
);

main!(library_benchmark_groups = retained_refusal);
