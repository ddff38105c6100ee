//! End to end: attacks on the real `sessionwire serve` (issue 9 items 1 to
//! 6), each reproduced from raw sockets and checked against its bound.
//!
//! Attackers bind their sockets to other loopback addresses (127.1.x.y) so
//! that per-source limits apply to them while a real client from 127.0.0.1
//! still gets in. Every loop is bounded in count and every wait in time.
//! Linux only: the rest of 127/8 is routed to `lo` there, and memory is read
//! from /proc.
#![cfg(target_os = "linux")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use sessionwire::session::ResponseCode;
use sessionwire_client::{self as client, ConnectOptions, HttpClient, WsClient};
use sessionwire_tests::attack::{
    attacker, connect_from, connect_with_head, http_connect_from, masked_frame, read_head,
    read_to_close, server_frames, upgrade_head, waiting_connect_head, Head, GOOD_KEY,
};
use sessionwire_tests::server::Server;
use sessionwire_tests::sessionwire_bin;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The bound on every single step of a test.
const STEP: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A server whose users file holds alice (password `s3cret`, default Argon2
/// parameters: 19 MiB per check).
fn server_with_alice(args: &[&str]) -> Server {
    Server::start_with(args, |dir| {
        let users = dir.join("users");
        let mut child = std::process::Command::new(sessionwire_bin())
            .arg("add-user")
            .arg("--users")
            .arg(&users)
            .arg("alice")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sessionwire add-user");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
        assert!(child.wait().unwrap().success(), "add-user failed");
        vec!["--users".to_owned(), users.display().to_string()]
    })
}

/// The code of an HTTP polling connect from attacker address `n` (0 when
/// the attempt failed at the socket level).
async fn attempt(server: SocketAddr, n: u16, principal: &str, password: &str) -> u8 {
    let tried = tokio::time::timeout(
        STEP,
        http_connect_from(attacker(n), server, principal, password),
    )
    .await;
    match tried {
        Ok(Ok(r)) => r.code.code(),
        _ => 0,
    }
}

/// The session id in a connection response, as the event log shows it.
fn id_of(r: &sessionwire::session::ConnectionResponse) -> String {
    r.session.expect("a session").id.to_string()
}

/// Waits for the `closed` event of session `id`.
async fn closed_event(server: &Server, id: &str) -> Value {
    server
        .wait_event(STEP, |e| e["event"] == "closed" && e["session"] == id)
        .await
}

// ------------------------------------------------- item 2: password flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_flood_from_many_addresses_keeps_hashing_memory_bounded() {
    let server = server_with_alice(&["--ping-period", "0"]);
    let addr = server.addr;
    // 1,000 wrong passwords from 100 addresses (10 each: none is cut off by
    // its own failure count), 64 at a time.
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..1000u16 {
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire().await.unwrap();
            attempt(addr, 100 + i % 100, "alice", "guess").await
        }));
    }
    let mut codes = [0usize; 256];
    for t in tasks {
        codes[usize::from(t.await.unwrap())] += 1;
    }
    let took = start.elapsed();
    let memory = server.memory();
    eprintln!(
        "1000 wrong passwords from 100 addresses in {took:?}: {} x 116, {} x 113, {} failed; server {memory:?}",
        codes[116], codes[113], codes[0]
    );
    assert_eq!(codes[116] + codes[113], 1000, "every attempt was answered");
    assert!(codes[116] > 0, "some passwords were checked");
    assert!(
        memory.hwm_kib < 100 * 1024,
        "hashing memory is bounded: {memory:?}"
    );
    // The right password still gets in.
    let alice = ConnectOptions::default().with_user("alice", "s3cret");
    let c = bounded("alice", HttpClient::connect(addr, &alice))
        .await
        .unwrap();
    assert_eq!(c.response().code, ResponseCode::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_flood_from_one_address_is_cut_off_and_the_real_user_gets_in() {
    let server = server_with_alice(&["--ping-period", "0"]);
    let addr = server.addr;
    // A baseline: one check with nothing else going on.
    let alice = ConnectOptions::default().with_user("alice", "s3cret");
    let t = Instant::now();
    let c = bounded("alice alone", WsClient::connect(addr, &alice))
        .await
        .unwrap();
    let alone = t.elapsed();
    assert_eq!(c.response().code, ResponseCode::Connected);
    c.drop_connection();
    // 1,000 wrong passwords from one address, 30 at a time (under the
    // address's allowance of connections waiting for a head).
    let flood = tokio::spawn(async move {
        let gate = Arc::new(Semaphore::new(30));
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire().await.unwrap();
                attempt(addr, 1, "alice", "guess").await
            }));
        }
        let mut codes = [0usize; 256];
        for t in tasks {
            codes[usize::from(t.await.unwrap())] += 1;
        }
        codes
    });
    // Meanwhile, the real user connects again and again from 127.0.0.1.
    let mut waits = Vec::new();
    while !flood.is_finished() && waits.len() < 20 {
        let t = Instant::now();
        let c = bounded("alice during the flood", WsClient::connect(addr, &alice))
            .await
            .unwrap();
        waits.push(t.elapsed());
        assert_eq!(c.response().code, ResponseCode::Connected);
        c.drop_connection();
    }
    let codes = bounded("flood", flood).await.unwrap();
    eprintln!(
        "1000 wrong passwords from one address: {} x 116, {} x 113, {} failed; \
         the real user waited {alone:?} alone, {waits:?} during the flood",
        codes[116], codes[113], codes[0]
    );
    assert_eq!(codes[116] + codes[113], 1000, "every attempt was answered");
    assert_eq!(codes[100], 0, "no wrong password got in");
    // At most ten failures are checked; then the address is refused
    // without a check.
    assert!(codes[116] <= 10, "{} checked", codes[116]);
    assert!(
        !waits.is_empty(),
        "the real user connected during the flood"
    );
}

// ----------------------------------------------- item 4: connection slots

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_burst_gets_no_more_101s_than_websocket_slots() {
    // --max-clients 100: 100 sessions plus 256 closing or refused WebSockets;
    // 264 HTTP connection places (2 x 100 + 64).
    let server = Server::start(&["--ping-period", "0", "--max-clients", "100"]);
    let slots = 100 + 256;
    let addr = server.addr;
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(250));
    let mut tasks = Vec::new();
    for i in 0..1500u16 {
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut s = connect_from(attacker(200 + i % 60), addr).await.ok()?;
            s.write_all(upgrade_head(addr, GOOD_KEY).as_bytes())
                .await
                .ok()?;
            let head = tokio::time::timeout(STEP, read_head(&mut s))
                .await
                .ok()?
                .ok()??;
            drop(permit);
            let at = start.elapsed();
            if head.status == 503 {
                // Refused: the server closes the connection.
                let closed = tokio::time::timeout(STEP, read_to_close(&mut s)).await;
                return Some((head.status, at, Some(matches!(closed, Ok(Ok(_))))));
            }
            // Upgraded: hold the socket (unread) until the test ends.
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(s);
            Some((head.status, at, None))
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        if let Some(a) = t.await.unwrap() {
            answers.push(a);
        }
    }
    let mut upgraded: Vec<Duration> = answers.iter().filter(|a| a.0 == 101).map(|a| a.1).collect();
    upgraded.sort();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    // A refused WebSocket holds its slot for at least a second after its
    // 101 (the server waits for the client's close frame): within any half
    // second, no more 101s than slots.
    let most = upgraded
        .iter()
        .enumerate()
        .map(|(i, t)| {
            upgraded[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_millis(500))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "1500 upgrades: {} x 101 ({most} in the busiest half second, {slots} slots), {} x 503",
        upgraded.len(),
        refused.len()
    );
    assert!(most <= slots, "{most} upgrades at once for {slots} slots");
    assert!(!refused.is_empty(), "the burst went past the slots");
    assert!(
        refused.iter().all(|a| a.2 == Some(true)),
        "every 503 closed its connection"
    );
    let c = bounded(
        "after the burst",
        HttpClient::connect(addr, &ConnectOptions::default()),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            c.response().code,
            ResponseCode::Connected | ResponseCode::ClientLimit
        ),
        "{:?}",
        c.response()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_one_address_does_not_starve_other_clients() {
    let server = Server::start(&["--ping-period", "0", "--max-clients", "100"]);
    let addr = server.addr;
    // 500 sockets from one address, each sending half a request head.
    let mut held = Vec::new();
    for _ in 0..500 {
        let Ok(mut s) = connect_from(attacker(1), addr).await else {
            continue;
        };
        let _ = s.write_all(b"GET /diffusion HTTP/1.1\r\nhost: x\r\n").await;
        held.push(s);
    }
    assert!(held.len() > 400, "connected {}", held.len());
    // The server keeps them only while half of its connection places
    // (2 x 100 + 64) are free, and closes the rest at once.
    let mut open = 0;
    for s in &mut held {
        let ended = tokio::time::timeout(Duration::from_millis(20), read_to_close(s)).await;
        if ended.is_err() {
            open += 1;
        }
    }
    eprintln!("slowloris: {open} of {} half-open sockets kept", held.len());
    assert!(
        open <= 264 / 2 + 1,
        "{open} half-open sockets from one address kept"
    );
    // Another address is served at once, over both transports.
    let options = ConnectOptions::default();
    let mut ws = bounded("ws", WsClient::connect(addr, &options))
        .await
        .unwrap();
    assert_eq!(ws.response().code, ResponseCode::Connected);
    bounded("ping", ws.user_ping()).await.unwrap();
    let http = bounded("http", HttpClient::connect(addr, &options))
        .await
        .unwrap();
    assert_eq!(http.response().code, ResponseCode::Connected);
    drop(held);
}

// ---------------------------------------------------- item 5: RFC 6455

/// Sends an upgrade request with `key` from attacker address `n`; the
/// socket and the answer's head.
async fn upgrade_from(server: &Server, n: u16, key: &str) -> (TcpStream, Head) {
    let mut s = bounded("connect", connect_from(attacker(n), server.addr))
        .await
        .unwrap();
    s.write_all(upgrade_head(server.addr, key).as_bytes())
        .await
        .unwrap();
    let head = bounded("answer", read_head(&mut s)).await.unwrap();
    (s, head.expect("an answer"))
}

/// An anonymous session over a raw WebSocket: the socket and the session
/// id.
async fn raw_session(server: &Server) -> (TcpStream, String) {
    let (mut s, head) = upgrade_from(server, 7, GOOD_KEY).await;
    assert_eq!(head.status, 101);
    let mut bytes = head.rest;
    let mut chunk = [0u8; 1024];
    let response = loop {
        if let Some((2, payload)) = server_frames(&bytes).into_iter().next() {
            break sessionwire::session::ConnectionResponse::decode(&payload).unwrap();
        }
        let n = bounded(
            "response",
            tokio::io::AsyncReadExt::read(&mut s, &mut chunk),
        )
        .await
        .unwrap();
        assert!(n > 0, "closed before the connection response");
        bytes.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(response.code, ResponseCode::Connected);
    (s, id_of(&response))
}

/// The close frame among what the server sent after the connection
/// response, as (code, reason).
fn close_frame_of(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    server_frames(bytes)
        .into_iter()
        .find(|(op, _)| *op == 8)
        .map(|(_, p)| {
            let code = p.get(..2).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
            (code, p.get(2..).unwrap_or_default().to_vec())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6455_7_4_close_with_a_forbidden_code_closes_invalid_inbound_message() {
    let server = Server::start(&["--ping-period", "0"]);
    let mut cases: Vec<(String, Vec<u8>)> = [999u16, 1004, 1005, 1006, 1015, 2000, 5000]
        .iter()
        .map(|c| (format!("code {c}"), c.to_be_bytes().to_vec()))
        .collect();
    cases.push(("a 1-byte payload".into(), vec![0x03]));
    cases.push((
        "a reason that is not UTF-8".into(),
        vec![0x03, 0xe8, 0xff, 0xfe],
    ));
    for (what, payload) in cases {
        let (mut s, id) = raw_session(&server).await;
        s.write_all(&masked_frame(8, &payload)).await.unwrap();
        let e = closed_event(&server, &id).await;
        assert_eq!(e["reason"], "INVALID_INBOUND_MESSAGE", "{what}: {e}");
        let rest = bounded("close", read_to_close(&mut s))
            .await
            .unwrap_or_default();
        let close = close_frame_of(&rest);
        assert!(close.is_some(), "{what}: no close frame: {rest:?}");
        if what.starts_with("code") {
            // Section 7.4.1: the endpoint fails the connection with 1002.
            assert_eq!(close.map(|c| c.0), Some(1002), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6455_5_5_1_client_close_frame_is_answered_with_a_close_frame() {
    let server = Server::start(&["--ping-period", "0"]);
    let (mut s, id) = raw_session(&server).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    s.write_all(&masked_frame(8, &payload)).await.unwrap();
    let rest = bounded("close", read_to_close(&mut s)).await.unwrap();
    let (code, _) = close_frame_of(&rest).expect("a close frame in answer");
    assert_eq!(code, 1000, "the close code is echoed");
    let e = closed_event(&server, &id).await;
    assert_eq!(e["reason"], "CONNECTION_LOST", "{e}");
}

#[tokio::test]
async fn rfc6455_4_2_1_key_that_is_not_base64_of_16_bytes_is_refused_400() {
    let server = Server::start(&["--ping-period", "0"]);
    for key in [
        "",
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZSEh",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let (_, head) = upgrade_from(&server, 9, key).await;
        assert_eq!(head.status, 400, "key {key:?}");
    }
    let (_, head) = upgrade_from(&server, 9, GOOD_KEY).await;
    assert_eq!(head.status, 101);
}

#[tokio::test]
async fn http_request_head_over_64_kib_in_one_segment_is_refused() {
    let server = Server::start(&["--ping-period", "0"]);
    for (size, refused) in [(60 * 1024, false), (100 * 1024, true)] {
        let mut head = upgrade_head(server.addr, GOOD_KEY);
        head.truncate(head.len() - 2);
        head.push_str("x-pad: ");
        head.push_str(&"a".repeat(size));
        head.push_str("\r\n\r\n");
        let mut s = bounded("connect", connect_from(attacker(11), server.addr))
            .await
            .unwrap();
        // One write: the whole head arrives at once.
        let _ = s.write_all(head.as_bytes()).await;
        let answer = bounded("answer", read_head(&mut s)).await;
        let status = answer.ok().flatten().map(|h| h.status);
        if refused {
            assert!(
                matches!(status, None | Some(431)),
                "{size} bytes: {status:?}"
            );
        } else {
            assert_eq!(status, Some(101), "{size} bytes");
        }
    }
}

// --------------------------------------------------------- item 6: CORS

/// A polling request with `origin`; the answer's CORS headers.
async fn cors_of(
    server: &Server,
    method: Method,
    origin: &str,
) -> (Option<String>, Option<String>) {
    let reply = bounded(
        "request",
        client::request(
            server.addr,
            method,
            "/diffusion",
            &[
                ("origin", origin),
                ("m", "1"),
                ("access-control-request-headers", "m"),
            ],
            "",
        ),
    )
    .await
    .unwrap();
    let get = |n: &str| {
        reply
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        get("access-control-allow-origin"),
        get("access-control-allow-credentials"),
    )
}

#[tokio::test]
async fn cors_only_configured_origins_are_allowed_with_credentials() {
    let server = Server::start(&[
        "--ping-period",
        "0",
        "--allow-origin",
        "https://app.example",
    ]);
    for method in [Method::OPTIONS, Method::POST] {
        let (origin, credentials) = cors_of(&server, method.clone(), "https://app.example").await;
        assert_eq!(origin.as_deref(), Some("https://app.example"), "{method}");
        assert_eq!(credentials.as_deref(), Some("true"), "{method}");
        for other in ["null", "https://evil.example", "https://app.example.evil"] {
            let (origin, credentials) = cors_of(&server, method.clone(), other).await;
            assert_eq!((origin, credentials), (None, None), "{method} {other}");
        }
    }
    // None configured: no origin is allowed.
    let server = Server::start(&["--ping-period", "0"]);
    let (origin, credentials) = cors_of(&server, Method::POST, "https://app.example").await;
    assert_eq!((origin, credentials), (None, None));
}

// ------------------------------------ item 1: reconnection squatting

/// The number of events named `event` in the server's log.
fn count_events(server: &Server, event: &str) -> usize {
    server
        .events()
        .iter()
        .filter(|e| e["event"] == event)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_1_reconnection_squatting_does_not_lock_out_a_new_client() {
    // Polls must come within 0.5 s, so the squatters' sessions soon wait for
    // a reconnection; the wait itself is the server's default (60 s), far
    // longer than the test: only ending a wait can make room.
    let server = Server::start(&[
        "--ping-period",
        "0",
        "--max-clients",
        "100",
        "--poll-gap",
        "500",
    ]);
    let addr = server.addr;
    // 300 connects asking for the longest wait there is, from 10 addresses,
    // 32 at a time, and never a poll: no socket is held afterwards.
    let head = Arc::new(waiting_connect_head(addr, i64::MAX as u64));
    let gate = Arc::new(Semaphore::new(32));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300u16 {
        let (gate, head) = (Arc::clone(&gate), Arc::clone(&head));
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire().await.unwrap();
            let tried =
                tokio::time::timeout(STEP, connect_with_head(attacker(300 + i % 10), addr, &head))
                    .await;
            match tried {
                Ok(Ok(r)) => r.code.code(),
                _ => 0,
            }
        }));
    }
    let mut codes = [0usize; 256];
    for t in tasks {
        codes[usize::from(t.await.unwrap())] += 1;
    }
    let burst = start.elapsed();
    assert_eq!(codes[100] + codes[113], 300, "every connect was answered");
    assert!(codes[100] >= 100, "the squatters filled the server");
    // Every squatter session has missed its poll and waits.
    bounded("squatters waiting", async {
        while count_events(&server, "disconnected") < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let closed_before = count_events(&server, "closed");
    // A fresh client from another address is let in, over both transports.
    let asked = Instant::now();
    let http = bounded(
        "http client",
        HttpClient::connect(addr, &ConnectOptions::default()),
    )
    .await
    .unwrap();
    let http_took = asked.elapsed();
    assert_eq!(http.response().code, ResponseCode::Connected);
    let ws = bounded(
        "ws client",
        WsClient::connect(addr, &ConnectOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(ws.response().code, ResponseCode::Connected);
    // Each took the place of a waiting squatter, closed at once.
    let e = server
        .wait_event(STEP, |e| e["event"] == "closed" && e["transport"] == "http")
        .await;
    assert_eq!(e["reason"], "CLIENT_UNRESPONSIVE", "{e}");
    bounded("two waits ended", async {
        while count_events(&server, "closed") < closed_before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let memory = server.memory();
    eprintln!(
        "300 squatting connects in {burst:?}: {} x 100, {} x 113; then a fresh client got 100 in {http_took:?}; server {memory:?}",
        codes[100], codes[113]
    );
}

// -------------------------------------------- item 3: held inbound data

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_6_held_sends_across_sessions_stay_within_the_server_budget() {
    const BUDGET: u64 = 16 << 20;
    const SESSIONS: usize = 12;
    const SENDS: usize = 24;
    let budget = BUDGET.to_string();
    let server = Server::start(&[
        "--ping-period",
        "0",
        "--poll-gap",
        "60000",
        "--reorder-wait",
        "2000",
        "--max-buffered-bytes",
        &budget,
    ]);
    let addr = server.addr;
    let before = server.memory();
    // 1,000,000 bytes of base64 text: under the batch limit, held as sent.
    let body = bytes::Bytes::from(vec![b'A'; 1_000_000]);
    let mut ids = Vec::new();
    let mut sends = Vec::new();
    let start = Instant::now();
    for _ in 0..SESSIONS {
        let c = bounded(
            "connect",
            HttpClient::connect(addr, &ConnectOptions::default()),
        )
        .await
        .unwrap();
        ids.push(id_of(c.response()));
        // s=0 never comes: every send is held, none may be acknowledged.
        for s in 1..=SENDS {
            let (c, body) = (c.clone(), body.clone());
            sends.push(tokio::spawn(async move {
                let tried =
                    tokio::time::timeout(STEP, c.send_with(&s.to_string(), client::full(body)))
                        .await;
                // An acknowledgement is an empty 200 (a 200 carrying ABORT
                // answers a send for a session already closed).
                matches!(tried, Ok(Ok(r)) if r.status == hyper::StatusCode::OK
                    && r.body.is_empty()
                    && !r.headers.contains_key("diffusion-connection"))
            }));
        }
    }
    let mut acked = 0;
    for t in sends {
        acked += usize::from(t.await.unwrap());
    }
    let took = start.elapsed();
    assert_eq!(acked, 0, "a held send is answered only in its turn");
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let e = closed_event(&server, id).await;
        *reasons.entry(e["reason"].to_string()).or_default() += 1;
    }
    let memory = server.memory();
    eprintln!(
        "{SESSIONS} sessions x {SENDS} held sends of 1 MB in {took:?}, budget {BUDGET}: closes {reasons:?}; server before {before:?}, after {memory:?}"
    );
    assert!(
        reasons.contains_key("\"MESSAGE_QUEUE_LIMIT_REACHED\""),
        "the budget closed the sessions that passed it: {reasons:?}"
    );
    assert!(
        memory.hwm_kib < (BUDGET / 1024) + 50 * 1024,
        "held data is bounded by the budget plus 50 MB: {memory:?}"
    );
}
