//! The MQTT broker under pressure (issue 18), end to end against
//! `sessionwire serve`: flow control instead of loss (a QoS 1 burst to a
//! persistent subscriber, a will watcher, retained messages after a
//! SUBSCRIBE), liveness with the retained store full, and memory bounded
//! under fan-out to offline sessions and to subscribers that never read.
//! SECURITY.md ("The MQTT broker under pressure") has the figures.
//!
//! The tests without server options run against mosquitto too
//! (`SESSIONWIRE_MQTT_BROKER=mosquitto`). Every loop is bounded in count and
//! in time; the figures are printed (`--nocapture`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sessionwire_client::load::ProcessMemory;
use sessionwire_tests::attack::attacker;
use sessionwire_tests::mqtt::{Broker, BrokerOptions};
use sessionwire_tests::server::Server;
use sessionwire_tests::wire::{
    parse_publish, puback, publish, session_expiry, Connect, Got, Probe, Wire, DISCONNECT, V311, V5,
};

fn broker() -> Broker {
    Broker::start_default(&BrokerOptions::default())
}

fn rss_mib(pid: u32) -> f64 {
    ProcessMemory::of(pid).map_or(0.0, |m| m.rss_kib as f64 / 1024.0)
}

/// What a reading-and-acknowledging subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Payloads (as read), in arrival order.
    payloads: Vec<Vec<u8>>,
    /// Whether the broker closed the connection.
    closed: bool,
    /// Messages received before the close.
    closed_after: Option<usize>,
}

/// A subscriber thread: reads every PUBLISH on `w`, acknowledges QoS 1 at
/// once, until `want` messages, a close, or `limit`.
fn reader(mut w: Wire, want: usize, limit: Duration) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut seen = Seen::default();
        while seen.payloads.len() < want {
            match w.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Frame(f) => {
                    if let Some(m) = parse_publish(w.level, &f) {
                        if m.qos > 0 && w.send(&puback(m.packet_id)).is_err() {
                            seen.closed = true;
                        }
                        seen.payloads.push(m.payload);
                    }
                }
                Got::Closed => {
                    seen.closed = true;
                    break;
                }
                Got::Timeout => break,
            }
        }
        if seen.closed {
            seen.closed_after = Some(seen.payloads.len());
        }
        seen
    })
}

/// Writes `n` QoS 1 PUBLISHes (3.1.1, ids cycling 1..=65535) to
/// `topic(i)` with payload `i` from a writer thread while reading the
/// PUBACKs; returns the PUBACKs counted within `limit`.
fn burst(
    addr: SocketAddr,
    id: &str,
    n: usize,
    retain: bool,
    topic: impl Fn(usize) -> String + Send + 'static,
    limit: Duration,
) -> usize {
    let (mut w, _) = Wire::connected(addr, &Connect::new(V311, id));
    let mut out = w.try_clone_stream().expect("a second handle");
    out.set_write_timeout(Some(limit)).expect("a write timeout");
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let mut batch = Vec::new();
        for i in 0..n {
            let pid = (i % 65_535) as u16 + 1;
            batch.extend(publish(
                V311,
                &topic(i),
                i.to_string().as_bytes(),
                1,
                pid,
                retain,
            ));
            if batch.len() > 32 * 1024 || i + 1 == n {
                if out.write_all(&batch).is_err() {
                    return;
                }
                batch.clear();
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut acks = 0;
    while acks < n {
        match w.read(deadline.saturating_duration_since(Instant::now())) {
            Got::Frame(f) if f.kind() == 4 => acks += 1,
            Got::Frame(_) => {}
            _ => break,
        }
    }
    let _ = w.send(&DISCONNECT);
    drop(w);
    let _ = writer.join();
    acks
}

/// The distinct numbers the payloads carry, sorted.
fn distinct_numbers(payloads: &[Vec<u8>]) -> Vec<usize> {
    let mut got: Vec<usize> = payloads
        .iter()
        .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .collect();
    got.sort_unstable();
    got.dedup();
    got
}

/// The sequence numbers in `payloads` must be 0..n, each once, in order;
/// returns (received, distinct, first out of place).
fn check_sequence(payloads: &[Vec<u8>]) -> (usize, usize, Option<usize>) {
    let nums: Vec<usize> = payloads
        .iter()
        .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .collect();
    let mut distinct = nums.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let misplaced = nums
        .iter()
        .enumerate()
        .find(|(i, n)| *i != **n)
        .map(|(i, _)| i);
    (nums.len(), distinct.len(), misplaced)
}

/// Issue 18, 1: a burst of `n` QoS 1 PUBLISHes to a persistent subscriber
/// reading and acknowledging at full speed: every message arrives, once, in
/// order, and the subscriber is never disconnected.
fn qos1_burst(level: u8, n: usize, limit: Duration) {
    let b = broker();
    let id = format!("burst-sub-{level}-{n}");
    let mut connect = Connect::new(level, &id).clean(false);
    if level == V5 {
        connect = connect.properties(session_expiry(3_600));
    }
    let (mut sub, _) = Wire::connected(b.addr(), &connect);
    assert_eq!(sub.subscribe("b/#", 1), Some(1), "SUBACK granting QoS 1");
    let probe = Probe::start(b.addr(), "burst-probe");
    let started = Instant::now();
    let seen = reader(sub, n, limit);
    let acks = burst(b.addr(), "burst-pub", n, false, |_| "b/x".to_owned(), limit);
    let seen = seen.join().expect("the subscriber thread");
    let took = started.elapsed();
    probe.stop("QoS 1 burst");
    let (received, distinct, misplaced) = check_sequence(&seen.payloads);
    eprintln!(
        "{:?} level {level} burst {n}: {acks} PUBACKs, subscriber got {received} ({distinct} distinct, \
         lost {}), disconnected after {:?}, first out of order {misplaced:?}, {took:.2?}",
        b.kind(),
        n.saturating_sub(distinct),
        seen.closed_after,
    );
    assert_eq!(acks, n, "every PUBLISH acknowledged to the publisher");
    assert!(
        !seen.closed,
        "the subscriber was disconnected after {:?}",
        seen.closed_after
    );
    assert_eq!(received, n, "every acknowledged message delivered");
    assert_eq!(distinct, n, "each message once");
    assert_eq!(misplaced, None, "in order");
    assert!(took < limit, "{took:?}");
}

#[test]
fn qos1_burst_2000_to_persistent_subscriber_311_loses_nothing() {
    qos1_burst(V311, 2_000, Duration::from_secs(30));
}

#[test]
fn qos1_burst_2000_to_persistent_subscriber_5_loses_nothing() {
    qos1_burst(V5, 2_000, Duration::from_secs(30));
}

#[test]
fn qos1_burst_20000_to_persistent_subscriber_311_loses_nothing() {
    qos1_burst(V311, 20_000, Duration::from_secs(90));
}

/// Issue 18, 1: 2,000 clients with QoS 1 wills drop their sockets without
/// DISCONNECT; a `will/#` watcher gets every will and stays connected.
#[test]
fn will_watcher_gets_2000_wills_and_stays_connected() {
    const N: usize = 2_000;
    let limit = Duration::from_secs(60);
    let b = broker();
    let (mut watcher, _) =
        Wire::connected(b.addr(), &Connect::new(V311, "will-watcher").clean(false));
    assert_eq!(watcher.subscribe("will/#", 1), Some(1));
    let probe = Probe::start(b.addr(), "will-probe");
    let started = Instant::now();
    let seen = reader(watcher, N, limit);
    let addr = b.addr();
    // All 2,000 connect first, then all drop at once: the wills arrive in
    // one burst, as when a network link fails.
    let droppers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in (t..N).step_by(4) {
                    let c = Connect::new(V311, &format!("willer-{i}")).will(
                        &format!("will/{i}"),
                        i.to_string().as_bytes(),
                        1,
                    );
                    if let Ok((w, Got::Frame(f))) = Wire::connect(addr, None, &c) {
                        if f.kind() == 2 {
                            held.push(w);
                        }
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<Wire> = droppers
        .into_iter()
        .flat_map(|d| d.join().unwrap())
        .collect();
    let connected = held.len();
    for w in held {
        w.drop_unclean();
    }
    let seen = seen.join().unwrap();
    probe.stop("will burst");
    let got = distinct_numbers(&seen.payloads);
    eprintln!(
        "{:?} wills: {connected} willing clients connected, watcher got {} ({} distinct), \
         disconnected after {:?}, {:.2?}",
        b.kind(),
        seen.payloads.len(),
        got.len(),
        seen.closed_after,
        started.elapsed()
    );
    assert_eq!(connected, N);
    assert!(
        !seen.closed,
        "the watcher was disconnected after {:?}",
        seen.closed_after
    );
    assert_eq!(got.len(), N, "every will delivered");
}

/// Issue 18, 1: 3,000 retained QoS 1 messages on distinct topics; a new
/// QoS 1 wildcard subscriber gets all of them (paced through its in-flight
/// window) and stays connected.
#[test]
fn retained_3000_after_subscribe_all_delivered_subscriber_kept() {
    const N: usize = 3_000;
    let limit = Duration::from_secs(60);
    let b = broker();
    let acks = burst(b.addr(), "retainer", N, true, |i| format!("r/{i}"), limit);
    assert_eq!(acks, N, "every retained PUBLISH acknowledged");
    let started = Instant::now();
    let (mut sub, _) = Wire::connected(b.addr(), &Connect::new(V311, "retained-sub"));
    // The SUBACK comes first; the retained messages after it.
    sub.send(&sessionwire_tests::wire::subscribe(V311, 1, &[("r/#", 1)]))
        .unwrap();
    let seen = reader(sub, N, limit).join().unwrap();
    let got = distinct_numbers(&seen.payloads);
    eprintln!(
        "{:?} retained: subscriber got {} of {N} ({} distinct), disconnected after {:?}, {:.2?}",
        b.kind(),
        seen.payloads.len(),
        got.len(),
        seen.closed_after,
        started.elapsed()
    );
    assert!(
        !seen.closed,
        "the subscriber was disconnected after {:?}",
        seen.closed_after
    );
    assert_eq!(got.len(), N, "every retained message delivered");
}

/// A topic of 128 levels: 127 times `first`, then `i`.
fn deep_topic(first: &str, i: usize) -> String {
    format!("{}{i}", format!("{first}/").repeat(127))
}

/// Issue 18, 2 and 4: with the retained store full of 128-level topics, a
/// refused retained PUBLISH gets PUBACK 0x97 (not 0x00), costs no walk of
/// the store (a client from 127.0.0.1 completes each QoS 1 round trip
/// within 1 s while refusals arrive 20 a second), and the refusals are
/// logged rate-limited.
#[test]
fn retained_store_full_refusals_0x97_and_others_served_within_1s() {
    const STORE: usize = 1_000;
    const ATTACK: Duration = Duration::from_secs(4);
    let store = STORE.to_string();
    let mut server =
        Server::start_with_stderr_file(&["--mqtt-retained-messages", &store], |_| Vec::new());
    let addr = server.mqtt.expect("the MQTT listener");
    let acks = burst(
        addr,
        "filler",
        STORE,
        true,
        |i| deep_topic("d", i),
        Duration::from_secs(60),
    );
    assert_eq!(acks, STORE, "the store filled");
    let (mut legit, _) = Wire::connected(addr, &Connect::new(V5, "legit"));
    assert_eq!(legit.subscribe("live/t", 1), Some(1));
    let stop = Arc::new(AtomicBool::new(false));
    let attacker_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut a, got) =
                Wire::connect(addr, Some(attacker(1)), &Connect::new(V5, "deep-attacker")).unwrap();
            assert!(matches!(got, Got::Frame(ref f) if f.kind() == 2), "{got:?}");
            let mut codes = Vec::new();
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) && i < 200 {
                i += 1;
                let t = Instant::now();
                let code = a.publish_acked(
                    &deep_topic("e", usize::from(i)),
                    b"x",
                    true,
                    i,
                    Duration::from_secs(30),
                );
                codes.push(code);
                std::thread::sleep(Duration::from_millis(50).saturating_sub(t.elapsed()));
            }
            codes
        })
    };
    let started = Instant::now();
    let mut trips = Vec::new();
    let mut n = 0u16;
    while started.elapsed() < ATTACK {
        n += 1;
        let t = Instant::now();
        legit
            .send(&publish(V5, "live/t", b"ping", 1, n, false))
            .unwrap();
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) && t.elapsed() < Duration::from_secs(5) {
            match legit.read(Duration::from_secs(5).saturating_sub(t.elapsed())) {
                Got::Frame(f) if f.kind() == 4 && f.packet_id() == Some(n) => acked = true,
                Got::Frame(f) => {
                    if let Some(m) = parse_publish(V5, &f) {
                        delivered = true;
                        let _ = legit.send(&puback(m.packet_id));
                    }
                }
                _ => break,
            }
        }
        trips.push(if acked && delivered {
            Some(t.elapsed())
        } else {
            None
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let codes = attacker_thread.join().unwrap();
    let stderr = server.stderr_text();
    let refusal_lines = stderr.lines().filter(|l| l.contains("retained")).count();
    let within = trips
        .iter()
        .filter(|t| t.is_some_and(|d| d < Duration::from_secs(1)))
        .count();
    let slowest = trips.iter().flatten().max().copied();
    eprintln!(
        "retained full ({STORE} x 128 levels): attacker PUBACK codes {:?}; legitimate round trips \
         within 1 s: {within} of {} (slowest {slowest:?}); stderr {} bytes, {refusal_lines} lines \
         about retained messages",
        codes
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, c| {
                *m.entry(*c).or_insert(0) += 1;
                m
            }),
        trips.len(),
        stderr.len(),
    );
    assert!(server.is_running());
    assert!(!codes.is_empty());
    assert!(
        codes.iter().all(|c| *c == Some(0x97)),
        "every refused retained message answered 0x97 (quota exceeded)"
    );
    assert_eq!(within, trips.len(), "every round trip within 1 s");
    assert!(trips.len() >= 10, "{} round trips", trips.len());
    assert!(
        refusal_lines <= 10,
        "{refusal_lines} stderr lines about refused retained messages (rate-limited: at most 10)"
    );
}

/// Issue 18, 3: 1,000 persistent sessions subscribed `m/#` at QoS 1 go
/// offline; 4 MB of QoS 1 publishes (400 x 10 KB) to `m/x` keep the
/// broker under 100 MB RSS (one stored copy per message, not one per
/// queue). The publisher stops at the first sample over the bound.
#[test]
fn offline_fanout_1000_sessions_4mb_stays_under_100mb() {
    const SESSIONS: usize = 1_000;
    const MESSAGES: u16 = 400;
    const BOUND_MIB: f64 = 100.0;
    let b = broker();
    let addr = b.addr();
    let started = Instant::now();
    let makers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in (t..SESSIONS).step_by(4) {
                    let (mut w, _) = Wire::connected(
                        addr,
                        &Connect::new(V311, &format!("offline-{i}")).clean(false),
                    );
                    assert_eq!(w.subscribe("m/#", 1), Some(1));
                    let _ = w.send(&DISCONNECT);
                }
            })
        })
        .collect();
    for m in makers {
        m.join().unwrap();
    }
    let before = rss_mib(b.pid());
    let probe = Probe::start(addr, "fanout-probe");
    let (mut publisher, _) = Wire::connected(addr, &Connect::new(V311, "fanout-pub"));
    let body = vec![b'x'; 10 * 1024];
    let mut peak = before;
    let mut sent = 0;
    for i in 1..=MESSAGES {
        let code = publisher.publish_acked("m/x", &body, false, i, Duration::from_secs(30));
        assert!(code.is_some(), "PUBACK for message {i}");
        sent = i;
        if i % 10 == 0 {
            peak = peak.max(rss_mib(b.pid()));
            if peak > BOUND_MIB {
                break;
            }
        }
    }
    peak = peak.max(rss_mib(b.pid()));
    probe.stop("offline fan-out");
    eprintln!(
        "{:?} offline fan-out: {SESSIONS} sessions, {sent} x 10 KB: RSS {before:.1} MB before, \
         peak {peak:.1} MB, {:.2?}",
        b.kind(),
        started.elapsed()
    );
    assert_eq!(
        sent, MESSAGES,
        "stopped at {peak:.1} MB after {sent} messages"
    );
    assert!(peak < BOUND_MIB, "RSS {peak:.1} MB");
}

/// Issue 18, 3: 100 subscribers that never read while a publisher sends
/// QoS 0 and QoS 1 messages for a few seconds: the broker's RSS grows by
/// at most the server-wide budget (`--mqtt-max-held-bytes`, 32 MiB here)
/// plus 10%, plus 24 MiB of slack: the 101 connections' own buffers (a read
/// buffer and a write buffer up to 64 KiB each, 13 MiB at most) and the
/// allocator's arenas for two threads.
#[test]
fn stalled_readers_rss_growth_within_held_bytes_budget() {
    const BUDGET: usize = 32 << 20;
    const READERS: usize = 100;
    const RUN: Duration = Duration::from_secs(4);
    let budget = BUDGET.to_string();
    let server = Server::start(&["--mqtt-max-held-bytes", &budget]);
    let addr = server.mqtt.expect("the MQTT listener");
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (mut w, _) = Wire::connected(addr, &Connect::new(V311, &format!("stalled-{i}")));
        assert_eq!(w.subscribe("h/#", 1), Some(1));
        readers.push(w);
    }
    let before = rss_mib(server.pid());
    let probe = Probe::start(addr, "stall-probe");
    let (publisher, _) = Wire::connected(addr, &Connect::new(V311, "stall-pub"));
    let mut out = publisher.try_clone_stream().unwrap();
    out.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let body = vec![b'y'; 8 * 1024];
    let (mut sent, mut peak) = (0usize, before);
    let mut pid = 0u16;
    let mut pushed_back = false;
    while started.elapsed() < RUN {
        use std::io::Write as _;
        if pushed_back {
            // A write timed out part-way through a packet: the stream is
            // no longer framed, so only sample from here on.
            std::thread::sleep(Duration::from_millis(50));
            peak = peak.max(rss_mib(server.pid()));
            continue;
        }
        let mut batch = Vec::new();
        for _ in 0..16 {
            pid = pid % 65_535 + 1;
            let qos = u8::from(sent % 2 == 1);
            batch.extend(publish(V311, "h/x", &body, qos, pid, false));
            sent += 1;
        }
        if out.write_all(&batch).is_err() {
            // Pushed back: the broker stopped reading this publisher.
            pushed_back = true;
        }
        peak = peak.max(rss_mib(server.pid()));
    }
    std::thread::sleep(Duration::from_millis(500));
    peak = peak.max(rss_mib(server.pid()));
    probe.stop("stalled readers");
    let growth = peak - before;
    let bound = 1.1 * (BUDGET as f64 / (1 << 20) as f64) + 24.0;
    eprintln!(
        "stalled readers: {READERS} subscribers, about {} MB offered in {RUN:?}: RSS {before:.1} MB \
         before, peak {peak:.1} MB, growth {growth:.1} MB (bound {bound:.1} MB), pushed back: \
         {pushed_back}",
        sent * body.len() / 1_000_000
    );
    drop(readers);
    drop(publisher);
    assert!(
        growth < bound,
        "RSS grew {growth:.1} MB, bound {bound:.1} MB"
    );
}
