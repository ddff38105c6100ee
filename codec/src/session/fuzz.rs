//! The `session` fuzz target body: drives a registry and its sessions with an
//! `arbitrary` sequence of events and checks the session invariants after
//! every step:
//!
//! - a session closes at most once, and its state agrees with that close;
//! - nothing is sent after the close (the ABORT is queued with the decision);
//! - memory held stays within the limits (queue, reorder buffer, recovery);
//! - time never goes backwards inside, even when the caller's does.
//!
//! The same function runs under cargo-fuzz and in the stable tests below
//! (run them with `cargo test --all-features`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::message::{Message, TopicMessage};
use crate::session::handshake::{ConnectionRequest, ConnectionType};
use crate::session::ids::{SeededRandom, SessionToken};
use crate::session::registry::{Connect, ConnectOutcome, Registry};
use crate::session::state::{Session, SessionConfig, SessionEvent, SessionState, Transmit};
use crate::{CloseReason, Limits};

/// The most steps one input may drive: bounds the work per input.
const MAX_STEPS: usize = 256;

#[derive(Arbitrary, Debug)]
struct Setup {
    max_message_size: u8,
    queue_messages: u8,
    queue_bytes: u16,
    reorder_window: u8,
    reorder_wait_ms: u16,
    recovery_buffer: u8,
    max_clients: u8,
    ping_ms: u16,
    poll_timeout_ms: u16,
    poll_gap_ms: u16,
    test_reconnect: bool,
    allow_loss: bool,
    http: bool,
    reconnect_ms: u16,
}

#[derive(Arbitrary, Debug)]
enum Step {
    WebSocket(Vec<u8>),
    Send {
        sequence: Sequence,
        body: Vec<u8>,
    },
    Base64Send {
        sequence: Sequence,
        messages: Vec<Vec<u8>>,
    },
    Poll(Sequence),
    Advance(u16),
    /// The caller's clock going backwards: the session must not follow.
    Rewind(u16),
    Event(u8),
    ServerSend {
        topic: u32,
        data: Vec<u8>,
    },
    Reconnect {
        cs: u8,
        ss: u8,
        http: bool,
    },
    SecondConnect {
        same_identity: bool,
    },
    Select(u8),
    Writable(bool),
}

#[derive(Arbitrary, Debug)]
enum Sequence {
    Next,
    Number(u8),
    Text(String),
}

/// Checks one session after a step.
#[derive(Default)]
struct Watch {
    closed: bool,
    reason: Option<CloseReason>,
    now: Option<Instant>,
}

/// Runs the target on `data`. Panics when an invariant breaks.
///
/// Returns the first close decision of any session and the index of the step
/// that led to it, so that a corpus can record what each input does.
/// Virtual time starts at `origin` (any instant: only durations from it
/// matter).
pub fn session(data: &[u8], origin: Instant) -> Option<(CloseReason, usize)> {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return None;
    };
    let Ok(limits) = Limits::builder()
        .max_message_size(usize::from(setup.max_message_size).max(1))
        .max_batch_size(4096)
        .max_queue_messages(usize::from(setup.queue_messages % 16).max(1))
        .max_queue_bytes(usize::from(setup.queue_bytes % 2048).max(1))
        .reorder_window(u32::from(setup.reorder_window % 9))
        .reorder_wait(Duration::from_millis(u64::from(
            setup.reorder_wait_ms % 2000,
        )))
        .recovery_buffer(usize::from(setup.recovery_buffer % 9))
        .max_clients(usize::from(setup.max_clients % 4).max(1))
        .build()
    else {
        return None;
    };
    let config = SessionConfig {
        server_id: 1,
        ping_period: (setup.ping_ms % 3000 > 0)
            .then(|| Duration::from_millis(u64::from(setup.ping_ms % 3000))),
        poll_timeout: Duration::from_millis(u64::from(setup.poll_timeout_ms % 3000)),
        poll_gap: Duration::from_millis(u64::from(setup.poll_gap_ms % 3000)),
        test_reconnect: setup.test_reconnect,
        allow_message_loss: setup.allow_loss,
        // The second connect of the same principal exercises the takeover.
        principal_takeover: true,
        // Under the reconnection waits asked for (up to 4 s), so the cap is
        // exercised; a small budget, so held data closes sessions.
        max_reconnect_wait: Duration::from_millis(3000),
        max_buffered_bytes: 4096,
    };
    let mut now = origin;
    let mut registry = Registry::new(limits.clone(), config, SeededRandom::new(1));
    let r = setup.reconnect_ms % 4000;
    let first = request(setup.http, r, "alice", None);
    let outcome = connect(&mut registry, now, Ok(first));
    let mut current = outcome.session?;
    let mut tokens = vec![current];
    let mut watches: HashMap<SessionToken, Watch> = HashMap::new();
    let mut next_send = 0u64;
    let mut next_poll = 0u64;
    let mut writable = true;
    let mut first = None;

    for index in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        let seq = |s: &Sequence, counter: &mut u64| match s {
            Sequence::Next => {
                let t = counter.to_string();
                *counter += 1;
                t
            }
            Sequence::Number(n) => n.to_string(),
            Sequence::Text(t) => t.clone(),
        };
        match step {
            Step::Advance(ms) => {
                let target = now + Duration::from_millis(u64::from(ms));
                let mut guard = 0;
                while let Some(t) = registry.poll_timeout().filter(|t| *t <= target) {
                    guard += 1;
                    if guard > 1_000 {
                        break;
                    }
                    now = now.max(t);
                    let _woken = registry.handle_timeout(now);
                    check(&mut registry, &mut watches, &limits, writable);
                    note_first(&watches, &mut first, index);
                }
                now = target;
                let _woken = registry.handle_timeout(now);
            }
            Step::Rewind(ms) => {
                // Feed an earlier time once; `now` itself stays.
                let earlier = now
                    .checked_sub(Duration::from_millis(u64::from(ms)))
                    .unwrap_or(now);
                if let Some(mut s) = registry.session_mut(&current) {
                    s.handle_timeout(earlier);
                }
            }
            Step::WebSocket(bytes) => {
                if let Some(mut s) = registry.session_mut(&current) {
                    s.handle_websocket(now, Bytes::from(bytes));
                }
            }
            Step::Send { sequence, body } => {
                let s = seq(&sequence, &mut next_send);
                if let Some(mut session) = registry.session_mut(&current) {
                    session.handle_http_send(now, &s, Bytes::from(body));
                }
            }
            Step::Base64Send { sequence, messages } => {
                let s = seq(&sequence, &mut next_send);
                let decoded: Vec<Message> = messages
                    .iter()
                    .filter_map(|m| Message::decode(&Bytes::copy_from_slice(m), &limits).ok())
                    .collect();
                if let Ok(body) = crate::polling::encode_body(&decoded) {
                    if let Some(mut session) = registry.session_mut(&current) {
                        session.handle_http_send(now, &s, Bytes::from(body));
                    }
                }
            }
            Step::Poll(sequence) => {
                let s = seq(&sequence, &mut next_poll);
                if let Some(mut session) = registry.session_mut(&current) {
                    session.handle_http_poll(now, &s);
                }
            }
            Step::Event(e) => {
                let event = match e % 8 {
                    0 => SessionEvent::TransportLost,
                    1 => SessionEvent::IoFailure,
                    2 => SessionEvent::ClosedByController,
                    3 => SessionEvent::FailedOver,
                    4 => SessionEvent::Expired,
                    5 => SessionEvent::Revoked,
                    6 => SessionEvent::TakenOver,
                    _ => SessionEvent::ResourceFailure,
                };
                if let Some(mut s) = registry.session_mut(&current) {
                    s.handle_event(now, event);
                }
            }
            Step::ServerSend { topic, data } => {
                let m = Message::TopicValue(TopicMessage {
                    topic,
                    compressed: false,
                    data: Bytes::from(data),
                });
                if let Some(mut s) = registry.session_mut(&current) {
                    s.send(now, m);
                }
            }
            Step::Reconnect { cs, ss, http } => {
                let rc = Some((current, u32::from(cs), u32::from(ss)));
                let req = request(http, r, "alice", rc);
                let outcome = connect(&mut registry, now, Ok(req));
                if outcome.session.is_some() {
                    next_send = 0;
                    next_poll = 0;
                }
            }
            Step::SecondConnect { same_identity } => {
                let who = if same_identity { "alice" } else { "bob" };
                let outcome = connect(&mut registry, now, Ok(request(setup.http, r, who, None)));
                if let Some(t) = outcome.session {
                    tokens.push(t);
                }
            }
            Step::Select(i) => {
                current = tokens[usize::from(i) % tokens.len()];
            }
            Step::Writable(w) => writable = w,
        }
        check(&mut registry, &mut watches, &limits, writable);
        note_first(&watches, &mut first, index);
    }
    first
}

/// Keeps the first close decision seen, with the step it came at.
fn note_first(
    watches: &HashMap<SessionToken, Watch>,
    first: &mut Option<(CloseReason, usize)>,
    index: usize,
) {
    if first.is_none() {
        *first = watches
            .values()
            .filter_map(|w| w.reason)
            .min()
            .map(|r| (r, index));
    }
}

fn request(
    http: bool,
    reconnect_ms: u16,
    principal: &str,
    reconnect: Option<(SessionToken, u32, u32)>,
) -> ConnectionRequest {
    let mut q = format!(
        "ty={}&v=29&ca=8&r={reconnect_ms}&username={principal}",
        if http { "B" } else { "WB" }
    );
    if let Some((t, cs, ss)) = reconnect {
        q.push_str(&format!("&c={}&cs={cs}&ss={ss}", t.as_str()));
    }
    let parsed = if http {
        let headers: Vec<(&str, &str)> = q.split('&').filter_map(|kv| kv.split_once('=')).collect();
        ConnectionRequest::from_headers(headers)
    } else {
        ConnectionRequest::from_query(&q)
    };
    match parsed {
        Ok(r) => r,
        Err(v) => panic!("the target's own request does not parse: {v}"),
    }
}

/// Everyone gets in as the principal they claim.
fn connect(
    registry: &mut Registry<SeededRandom>,
    now: Instant,
    request: Result<ConnectionRequest, crate::Violation>,
) -> ConnectOutcome {
    match registry.handle_connect(now, request) {
        Connect::Answered(o) => o,
        Connect::Incoming(incoming) => {
            let principal = incoming.request().principal.clone();
            registry.accept(now, incoming, principal)
        }
    }
}

fn check(
    registry: &mut Registry<SeededRandom>,
    watches: &mut HashMap<SessionToken, Watch>,
    limits: &Limits,
    writable: bool,
) {
    let tokens: Vec<SessionToken> = registry.tokens().collect();
    for token in tokens {
        let Some(mut s) = registry.session_mut(&token) else {
            continue;
        };
        let w = watches.entry(token).or_default();
        let drain = writable || s.transport() == ConnectionType::HttpPolling || s.is_closed();
        let mut sent_something = false;
        if drain {
            while let Some(t) = s.poll_transmit() {
                sent_something = true;
                if let Transmit::WebSocket(b) = &t {
                    assert!(!b.is_empty(), "an empty WebSocket message");
                }
            }
        }
        assert!(
            !(w.closed && sent_something),
            "a transmit after the close decision"
        );
        while s.poll_event().is_some() {}
        if let Some(close) = s.poll_close() {
            assert!(!w.closed, "a session closed twice");
            w.closed = true;
            w.reason = Some(close.reason);
            assert_eq!(s.state(), SessionState::Closed(close.reason));
        }
        assert_eq!(
            w.closed,
            matches!(s.state(), SessionState::Closed(_)),
            "state and close decision disagree"
        );
        assert!(s.poll_close().is_none(), "a session closed twice");
        if let Some(prev) = w.now {
            assert!(s.now() >= prev, "time went backwards inside");
        }
        w.now = Some(s.now());
        check_memory(&s, limits);
    }
}

fn check_memory(s: &Session, limits: &Limits) {
    let m = s.memory();
    assert!(m.queued_messages <= limits.max_queue_messages());
    assert!(m.queued_bytes <= limits.max_queue_bytes());
    assert!(m.held_sends as u64 <= u64::from(limits.reorder_window()) + 1);
    assert!(m.recovery_messages <= limits.recovery_buffer());
    assert!(m.resend_messages <= limits.recovery_buffer());
    if s.is_closed() {
        assert_eq!(
            (m.queued_messages, m.held_sends, m.resend_messages),
            (0, 0, 0),
            "a closed session holds nothing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fuzz_session_fixed_inputs_keep_the_invariants() {
        let fixed: [&[u8]; 6] = [
            &[],
            &[0; 64],
            &[0xff; 256],
            b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20\x21\x22\x23\x24\x25\x26\x27\x28\x29\x2a\x2b\x2c\x2d\x2e\x2f",
            &[7; 1024],
            &[
                0x40, 0x08, 0x10, 0x00, 0x04, 0x00, 0x01, 0x02, 0x04, 0x02, 0xe8, 0x03, 0xe8,
                0x03, 0xd0, 0x07, 0x01, 0x01, 0x00, 0x88, 0x13, 0x03, 0x01, 0x1d, 0x04, 0x10,
                0x27, 0x06, 0x00, 0x07, 0x02, 0x00, 0x02, 0x00, 0x00,
            ],
        ];
        for input in fixed {
            session(input, Instant::now());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn fuzz_session_random_inputs_keep_the_invariants(
            data in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            session(&data, Instant::now());
        }
    }
}
