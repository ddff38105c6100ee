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
//! To add a path, add such a pair and its group below, then list the group in
//! `main!`.
//!
//! Run: `cargo bench -p sessionwire --bench instructions` (needs valgrind and
//! `gungraun-runner` at the version of the `gungraun` dev-dependency).

mod common;
mod mqtt_inputs;

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use common::Kind;
use gungraun::{library_benchmark, library_benchmark_group, main};
use sessionwire::mqtt::{self, Decoder, Packet, QoS, Sender, Version};
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

/// The MQTT streams: PUBLISH of 90 bytes at QoS 1 in both versions and at
/// QoS 0, and a client's session mixing every packet it sends.
#[derive(Clone, Copy, Debug)]
enum MqttStream {
    PublishQos1V311,
    PublishQos1V5,
    PublishQos0V311,
    SessionV311,
    SessionV5,
}

/// What an MQTT benchmark takes and gives back: [`MESSAGES`] packets of one
/// stream in an already shared buffer, their version and the default limits.
type MqttInput = (Bytes, Version, Limits);

/// [`MESSAGES`] packets of `which`, checked to decode whole.
fn mqtt_input(which: MqttStream) -> MqttInput {
    let (version, list) = match which {
        MqttStream::PublishQos1V311 => (Version::V311, publishes(Version::V311, QoS::AtLeastOnce)),
        MqttStream::PublishQos1V5 => (Version::V5, publishes(Version::V5, QoS::AtLeastOnce)),
        MqttStream::PublishQos0V311 => (Version::V311, publishes(Version::V311, QoS::AtMostOnce)),
        MqttStream::SessionV311 => (Version::V311, mqtt_inputs::session(Version::V311)),
        MqttStream::SessionV5 => (Version::V5, mqtt_inputs::session(Version::V5)),
    };
    let list: Vec<Packet> = list.iter().cycle().take(MESSAGES).cloned().collect();
    let stream = Bytes::from(mqtt_inputs::stream(&list, version));
    drop(stream.clone());
    let limits = Limits::default();
    let decoded = mqtt::packets(&stream, Some(version), Sender::Client, &limits)
        .collect::<Result<Vec<_>, _>>()
        .expect("decodes");
    assert_eq!(decoded, list);
    assert_eq!(mqtt_inputs::split(&stream, drop), stream.len());
    (stream, version, limits)
}

/// [`MESSAGES`] PUBLISH packets of 90 bytes at `qos`.
fn publishes(version: Version, qos: QoS) -> Vec<Packet> {
    (1..=MESSAGES as u16)
        .map(|id| mqtt_inputs::publish(version, qos, id))
        .collect()
}

/// Declares an MQTT benchmark function with one bench per stream, so that
/// the floor and the validated side have the same ids.
macro_rules! for_each_mqtt_stream {
    (fn $name:ident($input:ident) $body:block) => {
        #[library_benchmark]
        #[bench::publish_qos1_311(args = (MqttStream::PublishQos1V311), setup = mqtt_input)]
        #[bench::publish_qos1_5(args = (MqttStream::PublishQos1V5), setup = mqtt_input)]
        #[bench::publish_qos0_311(args = (MqttStream::PublishQos0V311), setup = mqtt_input)]
        #[bench::session_311(args = (MqttStream::SessionV311), setup = mqtt_input)]
        #[bench::session_5(args = (MqttStream::SessionV5), setup = mqtt_input)]
        fn $name($input: MqttInput) -> MqttInput $body
    };
}

/// The floor of the one-buffer MQTT paths: steps over each packet by its
/// fixed header.
fn mqtt_split(input: MqttInput) -> MqttInput {
    mqtt_inputs::split(black_box(&input.0), |p| {
        black_box(p);
    });
    input
}

for_each_mqtt_stream! {
    fn mqtt_floor(input) {
        mqtt_split(input)
    }
}

for_each_mqtt_stream! {
    fn mqtt_validated(input) {
        for p in mqtt::packets(black_box(&input.0), Some(input.1), Sender::Client, &input.2) {
            black_box(p.ok());
        }
        input
    }
}

for_each_mqtt_stream! {
    fn mqtt_borrowed_floor(input) {
        mqtt_split(input)
    }
}

for_each_mqtt_stream! {
    fn mqtt_borrowed_validated(input) {
        for p in mqtt::packet_refs(black_box(&input.0), Some(input.1), Sender::Client, &input.2) {
            black_box(p.ok());
        }
        input
    }
}

/// MQTT bytes per chunk fed to the streaming decoders: packet boundaries
/// fall inside chunks and some packets span two.
const MQTT_CHUNK: usize = 1000;

for_each_mqtt_stream! {
    fn mqtt_decoder_floor(input) {
        let mut buf = BytesMut::new();
        for chunk in black_box(&input.0[..]).chunks(MQTT_CHUNK) {
            buf.extend_from_slice(chunk);
            while let Some(n) = mqtt_inputs::whole_len(&buf) {
                black_box(buf.split_to(n).freeze());
            }
        }
        black_box(buf);
        input
    }
}

for_each_mqtt_stream! {
    fn mqtt_decoder_validated(input) {
        let mut decoder = Decoder::new(input.1, Sender::Client, &input.2);
        for mut chunk in black_box(&input.0[..]).chunks(MQTT_CHUNK) {
            while !chunk.is_empty() {
                black_box(decoder.feed(&mut chunk).ok());
            }
        }
        black_box(decoder);
        input
    }
}

library_benchmark_group!(
    name = mqtt_packets;
    benchmarks = mqtt_floor, mqtt_validated, mqtt_borrowed_floor, mqtt_borrowed_validated,
        mqtt_decoder_floor, mqtt_decoder_validated
);

main!(
    library_benchmark_groups = websocket,
    polling_body,
    mqtt_packets
);
