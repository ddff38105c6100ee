//! Decoding allocates nothing: every decoded message is a set of views of the
//! input buffer (docs/protocol.md section 3 for WebSocket, section 6 for HTTP
//! polling batches).
//!
//! This file is its own test binary because it installs a counting global
//! allocator. Counts are kept per thread and only while a measured closure
//! runs, so the test harness's own allocations (on its threads, or before and
//! after the closure) are never counted.
//!
//! A note on `Bytes::from(Vec<u8>)`: when the vector's length equals its
//! capacity, the `Bytes` is "promotable": it holds the vector without a shared
//! header, and its first clone or slice allocates that header once. Decoding
//! takes views (`slice_ref`), so the first decode from such a buffer pays that
//! one allocation; the tests below share each buffer first and say so.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use bytes::Bytes;
use sessionwire::message::{
    service, FetchFields, FetchReply, Message, ServiceError, ServiceRequest, ServiceResponse, Text,
    TopicMessage,
};
use sessionwire::{polling, Limits, MessageType};

/// The system allocator, counting the allocations of the thread that armed it.
struct Counting;

thread_local! {
    // Const-initialised and without `Drop`, so reading them never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: while a thread is being torn down its thread-locals may be
    // gone; an allocation then is not one we measure.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|count| count.set(count.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting touches only
// thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f`, and returns its result and the number of allocations (including
/// reallocations) it made on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.with(|count| count.set(0));
    ARMED.with(|armed| armed.set(true));
    let out = black_box(f());
    ARMED.with(|armed| armed.set(false));
    (out, COUNT.with(Cell::get))
}

/// Wire bytes in a buffer that no longer allocates when viewed: made from a
/// `Vec` whose length equals its capacity (so "promotable"), then shared by
/// one clone, which is the one allocation that promotion costs.
fn shared(wire: &[u8]) -> Bytes {
    let vec = wire.to_vec();
    assert_eq!(vec.len(), vec.capacity(), "to_vec allocates exactly");
    let bytes = Bytes::from(vec);
    let (first, promoted) = allocations(|| bytes.clone());
    assert_eq!(
        promoted, 1,
        "the first clone of a promotable Bytes allocates its shared header"
    );
    let (second, again) = allocations(|| bytes.clone());
    assert_eq!(again, 0, "later clones share that header");
    drop((first, second));
    bytes
}

/// One valid message of every type, the compressed flag included, with
/// non-empty views wherever a type has any.
fn every_type() -> Vec<Message> {
    let messages = vec![
        Message::ServiceRequest(ServiceRequest {
            service: service::USER_PING,
            conversation: 1,
            payload: Bytes::new(),
        }),
        Message::ServiceRequest(ServiceRequest {
            service: service::SYSTEM_PING,
            conversation: 70_000,
            payload: Bytes::from_static(b"payload"),
        }),
        Message::ServiceResponse(ServiceResponse {
            conversation: 300,
            payload: Bytes::from_static(&[0xa5; 32]),
        }),
        Message::ServiceError(ServiceError {
            conversation: 2,
            message: Text::from_static("unknown service"),
            code: service::UNKNOWN_SERVICE_ERROR,
        }),
        Message::TopicValue(TopicMessage {
            topic: 7,
            compressed: false,
            data: Bytes::from_static(&[0x5a; 1024]),
        }),
        Message::TopicValue(TopicMessage {
            topic: 8,
            compressed: true,
            // `hello`, zlib-compressed: validated by inflating it.
            data: Bytes::from_static(&[
                0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15,
            ]),
        }),
        Message::TopicDelta(TopicMessage {
            topic: 9,
            compressed: false,
            data: Bytes::from_static(b"delta"),
        }),
        Message::Abort,
        Message::Close,
        Message::FetchReply(FetchReply {
            conversation: 12,
            fields: FetchFields::new(["a", "", "bc"]).expect("no delimiters"),
            body: Bytes::from_static(b"body"),
        }),
    ];
    for ty in MessageType::ALL {
        assert!(
            messages.iter().any(|m| m.message_type() == ty),
            "{ty:?} is covered"
        );
    }
    messages
}

#[test]
fn decoding_a_websocket_message_allocates_nothing() {
    let limits = Limits::default();
    for message in every_type() {
        let wire = shared(&message.to_bytes());
        let (decoded, n) = allocations(|| Message::decode(&wire, &limits));
        assert_eq!(decoded.as_ref(), Ok(&message));
        assert_eq!(n, 0, "decoding {message:?} allocated {n} times");
    }
}

#[test]
fn decoding_a_websocket_message_from_a_static_buffer_allocates_nothing() {
    let limits = Limits::default();
    // Static buffers are never promoted: views of them are free from the start.
    let wire = Bytes::from_static(&[0x04, 0, 0, 0, 7, b'v', b'a', b'l']);
    let (decoded, n) = allocations(|| Message::decode(&wire, &limits));
    assert!(matches!(decoded, Ok(Message::TopicValue(_))));
    assert_eq!(n, 0);
}

#[test]
fn decoding_from_an_unshared_promotable_buffer_allocates_only_its_promotion() {
    let limits = Limits::default();
    let wire = Bytes::from(vec![0x06, 0x05, 0xaa, 0xbb]);
    let (first, n) = allocations(|| Message::decode(&wire, &limits));
    assert!(first.is_ok());
    assert_eq!(n, 1, "the first view promotes the buffer, once");
    let (second, n) = allocations(|| Message::decode(&wire, &limits));
    assert_eq!(second, first);
    assert_eq!(n, 0, "after promotion decoding allocates nothing");
}

#[test]
fn rejecting_a_websocket_message_allocates_nothing_at_any_length() {
    let limits = Limits::default();
    let mut rejected = 0;
    // Every strict prefix of every message, byte by byte, and bad type bytes.
    for message in every_type() {
        let wire = shared(&message.to_bytes());
        for cut in 0..wire.len() {
            let prefix = wire.slice(..cut);
            let (decoded, n) = allocations(|| Message::decode(&prefix, &limits));
            assert_eq!(n, 0, "decoding {prefix:?} allocated {n} times");
            rejected += usize::from(decoded.is_err());
        }
    }
    for bad in [
        &[0x3f, 1, 2, 3][..],
        &[0x44, 0, 0, 0, 1],
        &[0x86, 1],
        &[29, 0],
    ] {
        let wire = shared(bad);
        let (decoded, n) = allocations(|| Message::decode(&wire, &limits));
        assert!(decoded.is_err(), "{bad:?} must be rejected");
        assert_eq!(n, 0, "rejecting {bad:?} allocated {n} times");
    }
    assert!(rejected > 0, "some prefixes are invalid");
}

/// A binary batch of `rounds` copies of one message of every type.
fn batch(rounds: usize) -> (Bytes, usize) {
    let messages: Vec<Message> = every_type().into_iter().cycle().take(rounds * 10).collect();
    let mut raw = Vec::new();
    polling::encode_batch(&messages, &mut raw).expect("small bodies");
    (shared(&raw), messages.len())
}

#[test]
fn iterating_polling_frames_allocates_nothing_per_message() {
    let limits = Limits::default();
    for rounds in [1, 10, 100] {
        let (batch, expected) = batch(rounds);
        let ((ok, failed), n) = allocations(|| {
            let (mut ok, mut failed) = (0usize, 0usize);
            for step in polling::frames(&batch, &limits) {
                match black_box(step) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
        assert_eq!((ok, failed), (expected, 0));
        assert_eq!(n, 0, "{expected} frames allocated {n} times");
    }
}

#[test]
fn iterating_polling_frames_to_a_violation_allocates_nothing() {
    let limits = Limits::default();
    let (good, expected) = batch(1);
    let mut raw = good.to_vec();
    // An unknown type after the valid frames, then a frame cut short.
    raw.extend([0, 0, 0, 0, 0x3f, 0, 0, 0, 9, 4]);
    let batch = shared(&raw);
    for cut in 0..=batch.len() {
        let prefix = batch.slice(..cut);
        let (steps, n) = allocations(|| {
            let mut steps = 0usize;
            for step in polling::frames(&prefix, &limits) {
                black_box(step.ok());
                steps += 1;
            }
            steps
        });
        assert!(
            steps <= expected + 1,
            "at most one violation ends the frames"
        );
        assert_eq!(n, 0, "frames of {cut} bytes allocated {n} times");
    }
}

// ---- MQTT (codec/src/mqtt) ----

mod mqtt_common;

use sessionwire::mqtt::{self, Packet as MqttPacket, Sender, Version};

#[test]
fn decoding_every_mqtt_packet_allocates_nothing() {
    for v in [Version::V311, Version::V5] {
        for (from, packet) in mqtt_common::every_packet(v) {
            let wire = shared(&packet.to_bytes(v).expect("encodes"));
            let (decoded, n) = allocations(|| MqttPacket::decode(&wire, v, from));
            assert_eq!(decoded.as_ref(), Ok(&packet));
            assert_eq!(n, 0, "decoding {packet:?} allocated {n} times");
            // Reading properties, subscriptions and filters back is lazy too.
            let (count, n) = allocations(|| match &packet {
                MqttPacket::Publish(p) => p.properties.iter().count(),
                MqttPacket::Subscribe(s) => s.subscriptions.iter().count(),
                MqttPacket::Unsubscribe(u) => u.filters.iter().count(),
                MqttPacket::Connect(c) => c.properties.iter().count(),
                _ => 0,
            });
            black_box(count);
            assert_eq!(n, 0, "reading {packet:?} back allocated {n} times");
        }
    }
}

#[test]
fn decoding_every_mqtt_packet_borrowed_allocates_nothing() {
    for v in [Version::V311, Version::V5] {
        for (from, packet) in mqtt_common::every_packet(v) {
            let wire = packet.to_bytes(v).expect("encodes");
            let (decoded, n) = allocations(|| mqtt::PacketRef::decode(&wire, v, from));
            mqtt_common::assert_same(&decoded.expect("decodes"), &packet);
            assert_eq!(n, 0, "decoding {packet:?} borrowed allocated {n} times");
        }
    }
}

#[test]
fn walking_an_mqtt_stream_allocates_nothing_per_packet() {
    let limits = Limits::default();
    for v in [Version::V311, Version::V5] {
        let mut raw = Vec::new();
        let mut expected = 0;
        for _ in 0..20 {
            for (from, packet) in mqtt_common::every_packet(v) {
                if from == Sender::Client {
                    packet.encode_to_vec(v, &mut raw).unwrap();
                    expected += 1;
                }
            }
        }
        let stream = shared(&raw);
        let ((ok, failed), n) = allocations(|| {
            let (mut ok, mut failed) = (0usize, 0usize);
            for step in mqtt::packets(&stream, Some(v), Sender::Client, &limits) {
                match black_box(step) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            for step in mqtt::packet_refs(&stream, Some(v), Sender::Client, &limits) {
                match black_box(step) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
        assert_eq!((ok, failed), (2 * expected, 0));
        assert_eq!(n, 0, "{expected} packets allocated {n} times");
    }
}

#[test]
fn rejecting_an_mqtt_packet_allocates_nothing_at_any_length() {
    let mut rejected = 0;
    for v in [Version::V311, Version::V5] {
        for (from, packet) in mqtt_common::every_packet(v) {
            let wire = shared(&packet.to_bytes(v).unwrap());
            for cut in 0..wire.len() {
                let prefix = wire.slice(..cut);
                let (decoded, n) = allocations(|| MqttPacket::decode(&prefix, v, from));
                assert_eq!(n, 0, "decoding {prefix:?} allocated {n} times");
                rejected += usize::from(decoded.is_err());
            }
        }
    }
    assert!(rejected > 0);
}
