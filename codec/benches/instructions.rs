//! Instruction counts of every decode path and of its split-only floor, under
//! valgrind's callgrind (through gungraun), so that the figures do not move
//! with the machine's load.
//!
//! Every benchmark decodes exactly [`MESSAGES`] messages: a path's
//! instructions per message is its count divided by that, and its ratio is
//! floor / validated (1.0: validation costs nothing over finding the message
//! boundaries). `.ci/bench-check` runs these and compares them with
//! `codec/benches/instructions.baseline`.
//!
//! Each path is a pair of functions named `<path>_floor` and
//! `<path>_validated` with the same bench ids; the check pairs them by name.
//! To add a path (the MQTT packets, for one), add such a pair and its group
//! below, then list the group in `main!`.
//!
//! Run: `cargo bench -p sessionwire --bench instructions` (needs valgrind and
//! `gungraun-runner` at the version of the `gungraun` dev-dependency).

mod common;

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use common::Kind;
use gungraun::{library_benchmark, library_benchmark_group, main};
use sessionwire::polling::{self, BodyDecoder};
use sessionwire::{Limits, Message};

/// Messages decoded by every benchmark (`.ci/bench-check` divides by it).
const MESSAGES: usize = 100;

/// Base64 characters per chunk fed to the incremental decoders: a chunk
/// boundary falls inside some messages and inside some base64 quanta.
const CHUNK: usize = 1000;

/// [`MESSAGES`] WebSocket messages of one kind, each in an already shared
/// buffer, and the default limits.
fn websocket_input(kind: Kind) -> WebSocketInput {
    let messages = common::cycle(&common::messages_of(kind), MESSAGES);
    let wires = common::websocket_wires(&messages);
    let limits = Limits::default();
    assert!(wires.iter().all(|w| Message::decode(w, &limits).is_ok()));
    (wires, limits)
}

/// What a WebSocket benchmark takes and gives back (so that dropping the
/// input is not measured).
type WebSocketInput = (Vec<Bytes>, Limits);

/// Declares a WebSocket benchmark function with one bench per [`Kind`], so
/// that the floor and the validated side have the same ids.
macro_rules! for_each_kind {
    (fn $name:ident($input:ident) $body:block) => {
        #[library_benchmark]
        #[bench::service_request(args = (Kind::ServiceRequest), setup = websocket_input)]
        #[bench::service_response(args = (Kind::ServiceResponse), setup = websocket_input)]
        #[bench::service_error(args = (Kind::ServiceError), setup = websocket_input)]
        #[bench::topic_value(args = (Kind::TopicValue), setup = websocket_input)]
        #[bench::topic_delta(args = (Kind::TopicDelta), setup = websocket_input)]
        #[bench::abort(args = (Kind::Abort), setup = websocket_input)]
        #[bench::close(args = (Kind::Close), setup = websocket_input)]
        #[bench::fetch_reply(args = (Kind::FetchReply), setup = websocket_input)]
        #[bench::service(args = (Kind::Service), setup = websocket_input)]
        #[bench::mix(args = (Kind::Mix), setup = websocket_input)]
        fn $name($input: WebSocketInput) -> WebSocketInput $body
    };
}

for_each_kind! {
    fn websocket_floor(input) {
        for wire in &input.0 {
            black_box(common::split_websocket(black_box(wire)));
        }
        input
    }
}

for_each_kind! {
    fn websocket_validated(input) {
        for wire in &input.0 {
            black_box(Message::decode(black_box(wire), &input.1).ok());
        }
        input
    }
}

library_benchmark_group!(
    name = websocket;
    benchmarks = websocket_floor, websocket_validated
);

/// A batch of [`MESSAGES`] messages of the mix: its base64 text, the decoded
/// binary batch (already shared) and the default limits.
fn polling_input() -> (String, Bytes, Limits) {
    let messages = common::cycle(&common::mixed_messages(), MESSAGES);
    let text = polling::encode_body(&messages).expect("small bodies");
    let mut raw = Vec::new();
    polling::encode_batch(&messages, &mut raw).expect("small bodies");
    let batch = Bytes::from(raw);
    drop(batch.clone());
    let limits = Limits::default();
    let decoded = polling::decode_body(text.as_bytes(), &limits);
    assert_eq!(
        (decoded.messages.len(), decoded.violation),
        (MESSAGES, None)
    );
    (text, batch, limits)
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn decode_body_floor(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    let decoded = STANDARD.decode(black_box(input.0.as_bytes()));
    let batch = Bytes::from(decoded.unwrap_or_default());
    let mut frames = Vec::new();
    common::split_batch(&batch, |ty, body| frames.push((ty, body)));
    black_box(frames);
    input
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn decode_body_validated(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    black_box(polling::decode_body(
        black_box(input.0.as_bytes()),
        &input.2,
    ));
    input
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn frames_floor(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    common::split_batch(black_box(&input.1), |ty, body| {
        black_box((ty, body));
    });
    input
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn frames_validated(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    for m in polling::frames(black_box(&input.1), &input.2) {
        black_box(m.ok());
    }
    input
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn body_decoder_floor(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    let mut split = common::SplitStream::default();
    let mut out = Vec::new();
    for chunk in black_box(input.0.as_bytes()).chunks(CHUNK) {
        split.feed(chunk, |ty, body| out.push((ty, body)));
    }
    black_box(out);
    input
}

#[library_benchmark]
#[bench::mix(setup = polling_input)]
fn body_decoder_validated(input: (String, Bytes, Limits)) -> (String, Bytes, Limits) {
    let mut decoder = BodyDecoder::new(input.2.clone());
    let mut out = Vec::new();
    for chunk in black_box(input.0.as_bytes()).chunks(CHUNK) {
        let _ = decoder.feed(chunk, &mut out);
    }
    black_box((decoder.finish().ok(), out));
    input
}

library_benchmark_group!(
    name = polling_body;
    benchmarks =
        decode_body_floor,
        decode_body_validated,
        frames_floor,
        frames_validated,
        body_decoder_floor,
        body_decoder_validated
);

// The MQTT packets go here next: a group of `mqtt_floor` / `mqtt_validated`
// pairs (one bench id per packet type), listed after `polling_body`.
main!(library_benchmark_groups = websocket, polling_body);
