//! End to end: the real `sessionwire serve` on ephemeral loopback ports,
//! driven by the test client (`sessionwire-client`) over WebSocket and HTTP
//! polling.
//!
//! Each test reaches one close reason of docs/protocol.md section 1 the way a
//! client or the control API can, and checks both sides: what the client saw
//! on the wire (ABORT or not, the socket closed or dropped, HTTP answers) and
//! the server's event log line (`reason`, `reason_id`, `violation`,
//! `abort_sent`). Then hostile clients (a trickled message, a 4 GiB body, a
//! thousand garbage upgrades) after which the server must still serve a good
//! client within bounded memory, and a small run of `sessionwire load`.
//!
//! Every await is bounded; each server is killed when its guard drops.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use sessionwire::message::service::{SYSTEM_PING, USER_PING};
use sessionwire::message::{ServiceRequest, TopicMessage};
use sessionwire::session::handshake::Reconnect;
use sessionwire::session::ResponseCode;
use sessionwire::{polling, Message};
use sessionwire_client::{
    full, user_ping, ClientError, ConnectOptions, HttpClient, Inbound, WsClient,
};
use sessionwire_tests::server::{add_user, Server};
use sessionwire_tests::sessionwire_bin;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The bound on every single step of a test.
const STEP: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A WebSocket session that must be connected (100).
async fn ws_connect(server: &Server, options: &ConnectOptions) -> WsClient {
    let c = within("ws connect", WsClient::connect(server.addr, options))
        .await
        .expect("ws connect");
    assert_eq!(
        c.response().code,
        ResponseCode::Connected,
        "{:?}",
        c.response()
    );
    c
}

/// An HTTP polling session that must be connected (100).
async fn http_connect(server: &Server, options: &ConnectOptions) -> HttpClient {
    let c = within("http connect", HttpClient::connect(server.addr, options))
        .await
        .expect("http connect");
    assert_eq!(
        c.response().code,
        ResponseCode::Connected,
        "{:?}",
        c.response()
    );
    c
}

/// The session id as the event log and the control API show it.
fn session_id(response: &sessionwire::session::ConnectionResponse) -> String {
    response
        .session
        .expect("a connected session")
        .id
        .to_string()
}

/// Waits for the event `event` of session `id` and checks its reason.
async fn expect_event(server: &Server, event: &str, id: &str, reason: &str) -> Value {
    let e = server
        .wait_event(STEP, |e| e["event"] == event && e["session"] == id)
        .await;
    assert_eq!(e["reason"], reason, "{e}");
    let want = sessionwire::CloseReason::from_name(reason).expect("a close reason name");
    assert_eq!(e["reason_id"], u64::from(want.id()), "{e}");
    assert!(e["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    e
}

/// Checks the end of what a WebSocket client saw: ABORT as the last message,
/// then the socket closed with a close frame.
fn assert_abort_then_close(seen: &[Inbound]) {
    let n = seen.len();
    assert!(n >= 2, "expected ABORT then a close: {seen:?}");
    assert_eq!(seen[n - 2], Inbound::Message(Message::Abort), "{seen:?}");
    assert!(matches!(seen[n - 1], Inbound::Closed(_)), "{seen:?}");
}

/// Checks that the socket ended with no ABORT anywhere.
fn assert_end_without_abort(seen: &[Inbound]) {
    assert!(seen.last().is_some_and(Inbound::is_end), "no end: {seen:?}");
    assert!(
        !seen.contains(&Inbound::Message(Message::Abort)),
        "unexpected ABORT: {seen:?}"
    );
}

/// Whether a poll answer carries ABORT.
fn poll_aborted(p: &Result<sessionwire_client::PollReply, ClientError>) -> bool {
    matches!(p, Ok(r) if r.reply.status == StatusCode::OK && r.messages == [Message::Abort])
}

fn topic_value(len: usize) -> Message {
    Message::TopicValue(TopicMessage {
        topic: 7,
        compressed: false,
        data: Bytes::from(vec![b'x'; len]),
    })
}

// ------------------------------------------------------------ CLOSED_BY_CLIENT

#[tokio::test]
async fn section_5_ws_close_request_closes_closed_by_client() {
    let server = Server::start(&["--ping-period", "200"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let opened = server
        .wait_event(STEP, |e| e["event"] == "opened" && e["session"] == id)
        .await;
    assert_eq!(opened["code"], 100);
    assert_eq!(opened["transport"], "ws");
    within("user ping", c.user_ping())
        .await
        .expect("USER_PING answered");
    let seen = within("close", c.close()).await.expect("close");
    // Section 5: the server closes the socket; no ABORT for the client's
    // own close.
    assert_end_without_abort(&seen);
    assert!(matches!(seen.last(), Some(Inbound::Closed(_))), "{seen:?}");
    let e = expect_event(&server, "closed", &id, "CLOSED_BY_CLIENT").await;
    assert_eq!(e["abort_sent"], false);
    assert_eq!(e["transport"], "ws");
}

#[tokio::test]
async fn section_5_http_close_request_closes_closed_by_client() {
    let server = Server::start(&["--ping-period", "0"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    // A USER_PING round trip over polls first.
    within("http user ping", c.user_ping())
        .await
        .expect("USER_PING answered");
    let reply = within("send close", c.send(&[Message::Close])).await;
    if let Ok(r) = &reply {
        assert_eq!(r.status, StatusCode::OK);
    }
    let e = expect_event(&server, "closed", &id, "CLOSED_BY_CLIENT").await;
    assert_eq!(e["transport"], "http");
    assert_eq!(e["abort_sent"], false);
    // The session is gone: a poll gets no messages but ABORT, or no answer.
    let p = within("poll after close", c.poll()).await;
    assert!(p.is_err() || poll_aborted(&p), "{p:?}");
}

// --------------------------------------------------------- CLIENT_UNRESPONSIVE

#[tokio::test]
async fn section_4_ws_unanswered_ping_closes_client_unresponsive() {
    let server = Server::start(&["--ping-period", "150"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    assert_eq!(c.response().session.unwrap().ping_period_ms, 150);
    let id = session_id(c.response());
    c.set_answer_pings(false);
    let start = Instant::now();
    let seen = c.recv_until_end(STEP).await;
    // A SYSTEM_PING arrived and went unanswered; the server dropped the
    // socket without ABORT (the reason is recoverable) before the next one.
    let pings = seen
        .iter()
        .filter(|i| matches!(i, Inbound::Message(Message::ServiceRequest(r)) if r.service == SYSTEM_PING))
        .count();
    assert!(pings >= 1, "{seen:?}");
    assert_end_without_abort(&seen);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let e = expect_event(&server, "closed", &id, "CLIENT_UNRESPONSIVE").await;
    assert_eq!(e["abort_sent"], false);
}

#[tokio::test]
async fn section_4_http_no_poll_in_time_closes_client_unresponsive() {
    let server = Server::start(&["--ping-period", "0", "--poll-gap", "200"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    // No poll is opened.
    let e = expect_event(&server, "closed", &id, "CLIENT_UNRESPONSIVE").await;
    assert_eq!(e["transport"], "http");
    let p = within("late poll", c.poll()).await;
    assert!(
        p.as_ref().map_or(true, |r| r.messages.is_empty()
            || r.messages == [Message::Abort]),
        "{p:?}"
    );
}

// ------------------------------------------------------------ MESSAGE_TOO_LARGE

#[tokio::test]
async fn section_1_ws_message_over_the_limit_closes_message_too_large() {
    let server = Server::start(&["--ping-period", "0", "--max-message-size", "1024"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    assert_eq!(
        c.response().session.unwrap().value,
        1024,
        "100 carries the maximum"
    );
    // At the limit: accepted (a topic message is delivered, not answered).
    c.send(&topic_value(1024 - 5)).await.unwrap();
    within("ping", c.user_ping())
        .await
        .expect("still connected");
    c.send(&topic_value(1024 - 4)).await.unwrap();
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &id, "MESSAGE_TOO_LARGE").await;
    assert_eq!(e["violation"], "message-too-large");
    assert_eq!(e["abort_sent"], true);
}

#[tokio::test]
async fn section_1_ws_frame_declaring_4_gib_closes_message_too_large() {
    let server = Server::start(&["--ping-period", "0"]);
    let before = server.memory();
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    // A masked binary frame header declaring 2^32 bytes, then a few bytes.
    let mut head = vec![0x82, 0xff];
    head.extend_from_slice(&(4u64 << 30).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4, 0, 0x38, 0x01]);
    c.stream_mut().get_mut().write_all(&head).await.unwrap();
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &id, "MESSAGE_TOO_LARGE").await;
    assert_eq!(e["abort_sent"], true);
    let after = server.memory();
    assert!(
        after.hwm_kib < before.hwm_kib + 16 * 1024,
        "memory grew: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn section_1_http_message_over_the_limit_closes_message_too_large() {
    let server = Server::start(&["--ping-period", "0", "--max-message-size", "256"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let poller = c.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the batch limit, but one message is over the message limit.
    let _ = within("send", c.send(&[topic_value(1000)])).await;
    let p = poll.await.unwrap();
    assert!(poll_aborted(&p), "the open poll carries ABORT: {p:?}");
    let e = expect_event(&server, "closed", &id, "MESSAGE_TOO_LARGE").await;
    assert_eq!(e["violation"], "message-too-large");
}

// ------------------------------------------------------ INVALID_INBOUND_MESSAGE

#[tokio::test]
async fn section_3_ws_unknown_type_closes_invalid_inbound_message() {
    let server = Server::start(&["--ping-period", "0"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    c.send_raw(vec![0x3f, 1, 2, 3]).await.unwrap();
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &id, "INVALID_INBOUND_MESSAGE").await;
    assert_eq!(e["violation"], "unknown-type");
    assert_eq!(e["offset"], 0);
    assert_eq!(e["abort_sent"], true);
}

#[tokio::test]
async fn section_2_ws_text_frame_closes_invalid_inbound_message() {
    let server = Server::start(&["--ping-period", "0"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    c.send_ws(tokio_tungstenite_text("hello")).await.unwrap();
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &id, "INVALID_INBOUND_MESSAGE").await;
    assert_eq!(e["violation"], "malformed-field");
    assert_eq!(e["abort_sent"], true);
}

fn tokio_tungstenite_text(text: &str) -> sessionwire_client::WsMessage {
    sessionwire_client::WsMessage::text(text)
}

#[tokio::test]
async fn section_6_http_bad_base64_closes_invalid_inbound_message() {
    let server = Server::start(&["--ping-period", "0"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let poller = c.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = within("send", c.send_with("0", full("!!!!"))).await;
    let p = poll.await.unwrap();
    assert!(poll_aborted(&p), "{p:?}");
    let e = expect_event(&server, "closed", &id, "INVALID_INBOUND_MESSAGE").await;
    assert_eq!(e["violation"], "invalid-base64");
}

// --------------------------------------------------------------- LOST_MESSAGES

#[tokio::test]
async fn section_6_ws_duplicate_request_closes_lost_messages() {
    let server = Server::start(&["--ping-period", "0"]);
    let mut c = ws_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    within("ping", c.user_ping()).await.unwrap();
    // The same conversation id again: a duplicated message.
    c.send(&user_ping(1)).await.unwrap();
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &id, "LOST_MESSAGES").await;
    assert_eq!(e["violation"], "sequence-duplicate");
    assert_eq!(e["abort_sent"], true);
}

#[tokio::test]
async fn section_6_http_gap_not_filled_in_time_closes_lost_messages() {
    let server = Server::start(&["--ping-period", "0", "--reorder-wait", "150"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let poller = c.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    // Send 1 arrives, send 0 never does.
    let body = polling::encode_body(&[user_ping(1)]).unwrap();
    let sender = c.clone();
    let held =
        tokio::spawn(async move { within("held send", sender.send_with("1", full(body))).await });
    let p = poll.await.unwrap();
    assert!(poll_aborted(&p), "{p:?}");
    let e = expect_event(&server, "closed", &id, "LOST_MESSAGES").await;
    assert_eq!(e["violation"], "sequence-gap");
    // The out-of-order send was held, unanswered until its turn, which never
    // came: it is never acknowledged.
    let h = held.await.unwrap();
    assert!(
        !matches!(&h, Ok(r) if r.status == StatusCode::OK),
        "a held send is acknowledged only in its turn: {h:?}"
    );
}

#[tokio::test]
async fn section_6_http_duplicate_send_closes_lost_messages() {
    let server = Server::start(&["--ping-period", "0"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let body = polling::encode_body(&[user_ping(1)]).unwrap();
    let first = within("send 0", c.send_with("0", full(body.clone())))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        // The answer to the ping, then the ABORT.
        let a = within("poll 0", poller.poll()).await;
        let b = within("poll 1", poller.poll()).await;
        (a, b)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = within("send 0 again", c.send_with("0", full(body))).await;
    let (a, b) = poll.await.unwrap();
    let a = a.unwrap();
    assert!(
        matches!(&a.messages[..], [Message::ServiceResponse(r)] if r.conversation == 1),
        "{a:?}"
    );
    assert!(poll_aborted(&b), "{b:?}");
    let e = expect_event(&server, "closed", &id, "LOST_MESSAGES").await;
    assert_eq!(e["violation"], "sequence-duplicate");
}

// ------------------------------------------------- MESSAGE_QUEUE_LIMIT_REACHED

#[tokio::test]
async fn section_1_ws_client_that_stops_reading_closes_message_queue_limit_reached() {
    let server = Server::start(&["--ping-period", "0", "--queue-limit", "8"]);
    let options = ConnectOptions {
        recv_buffer: Some(4096),
        ..ConnectOptions::default()
    };
    let mut c = ws_connect(&server, &options).await;
    let id = session_id(c.response());
    // Many requests, and no reading: the answers pile up in the server.
    let mut sent = 0u64;
    let burst = async {
        for conversation in 1..=200_000u64 {
            if c.send(&user_ping(conversation)).await.is_err() {
                break;
            }
            sent += 1;
            if conversation % 1000 == 0 && !server.events().iter().all(|e| e["event"] != "closed") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(STEP, burst).await;
    let e = expect_event(&server, "closed", &id, "MESSAGE_QUEUE_LIMIT_REACHED").await;
    assert_eq!(e["abort_sent"], true);
    // Reading again: the answers that fitted, then ABORT and the close.
    let seen = c.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let answers = seen.len() as u64 - 2;
    assert!(answers < sent, "{answers} answers for {sent} requests");
}

#[tokio::test]
async fn section_1_http_client_that_stops_polling_closes_message_queue_limit_reached() {
    let server = Server::start(&["--ping-period", "0", "--queue-limit", "4"]);
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    // Four answers fit the queue while no poll is open; the fifth does not.
    let four: Vec<Message> = (1..=4).map(user_ping).collect();
    let r = within("send 4", c.send(&four)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.events().iter().all(|e| e["event"] != "closed"),
        "{:?}",
        server.events()
    );
    let _ = within("send 5th", c.send(&[user_ping(5)])).await;
    let e = expect_event(&server, "closed", &id, "MESSAGE_QUEUE_LIMIT_REACHED").await;
    assert_eq!(e["transport"], "http");
    // The queue was discarded: the next poll gets ABORT, not the answers.
    let p = within("poll", c.poll()).await;
    assert!(poll_aborted(&p), "{p:?}");
}

// ------------------------------------------------------- CLOSED_BY_CONTROLLER

#[tokio::test]
async fn section_1_control_close_closes_closed_by_controller() {
    let server = Server::start(&["--ping-period", "200"]);
    let mut ws = ws_connect(&server, &ConnectOptions::default()).await;
    let http = http_connect(&server, &ConnectOptions::default()).await;
    let ws_id = session_id(ws.response());
    let http_id = session_id(http.response());

    let list = within("list", server.control(Method::GET, "/sessions", ""))
        .await
        .unwrap();
    assert_eq!(list.status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&list.body).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        ids.contains(&ws_id.as_str()) && ids.contains(&http_id.as_str()),
        "{list}"
    );

    // Without the token: 401, nothing happens.
    let denied = within(
        "no token",
        sessionwire_client::request(
            server.control,
            Method::POST,
            &format!("/sessions/{ws_id}/close"),
            &[],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    within("still alive", ws.user_ping()).await.unwrap();

    let r = within(
        "close ws",
        server.control(Method::POST, &format!("/sessions/{ws_id}/close"), ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let seen = ws.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &ws_id, "CLOSED_BY_CONTROLLER").await;
    assert_eq!(e["abort_sent"], true);

    let poller = http.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = within(
        "delete http",
        server.control(Method::DELETE, &format!("/sessions/{http_id}"), ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let p = poll.await.unwrap();
    assert!(poll_aborted(&p), "{p:?}");
    expect_event(&server, "closed", &http_id, "CLOSED_BY_CONTROLLER").await;

    let gone = within(
        "unknown",
        server.control(Method::POST, &format!("/sessions/{ws_id}/close"), ""),
    )
    .await
    .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn section_1_control_failover_expire_revoke_close_with_their_reasons() {
    let server = Server::start(&["--ping-period", "0"]);
    for (action, reason, abort) in [
        ("failover", "FAILED_OVER", false),
        ("expire", "EXPIRED", true),
        ("revoke", "REVOKED", true),
    ] {
        let mut c = ws_connect(&server, &ConnectOptions::default()).await;
        let id = session_id(c.response());
        let r = within(
            action,
            server.control(Method::POST, &format!("/sessions/{id}/{action}"), ""),
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{action}");
        let seen = c.recv_until_end(STEP).await;
        if abort {
            assert_abort_then_close(&seen);
        } else {
            // Failover: no ABORT, the client should reconnect elsewhere.
            assert_end_without_abort(&seen);
        }
        let e = expect_event(&server, "closed", &id, reason).await;
        assert_eq!(e["abort_sent"], abort, "{e}");
    }
}

// ------------------------------------------------------------ CONNECTION_LOST

#[tokio::test]
async fn section_6_ws_connection_lost_then_recovered_on_reconnect() {
    let server = Server::start(&["--ping-period", "200"]);
    let options = ConnectOptions::default().with_reconnect_timeout(Duration::from_secs(5));
    let mut c = ws_connect(&server, &options).await;
    let id = session_id(c.response());
    let token = c.token().unwrap();
    for _ in 0..3 {
        within("ping", c.user_ping()).await.unwrap();
    }
    let (sent, received) = (c.sent(), c.received());
    c.drop_connection();
    let e = expect_event(&server, "disconnected", &id, "CONNECTION_LOST").await;
    assert_eq!(e["transport"], "ws");

    let again = ConnectOptions {
        reconnect: Some(Reconnect {
            token: Some(token),
            client_oldest: 1,
            server_last: received,
        }),
        ..options.clone()
    };
    let mut c = within("reconnect", WsClient::connect(server.addr, &again))
        .await
        .unwrap();
    assert_eq!(
        c.response().code,
        ResponseCode::Reconnected,
        "{:?}",
        c.response()
    );
    let details = c.response().session.unwrap();
    assert_eq!(details.id.to_string(), id, "the same session");
    assert_eq!(
        details.value,
        i32::try_from(sent).unwrap() + 1,
        "next client message expected"
    );
    c.resume_counts(sent, received, 4);
    let e = server
        .wait_event(STEP, |e| e["event"] == "reconnected" && e["session"] == id)
        .await;
    assert_eq!(e["code"], 105);
    // The session goes on: requests, pings resent or new, then a clean close.
    within("ping after recovery", c.user_ping()).await.unwrap();
    let seen = within("close", c.close()).await.unwrap();
    assert_end_without_abort(&seen);
    expect_event(&server, "closed", &id, "CLOSED_BY_CLIENT").await;
}

#[tokio::test]
async fn section_1_ws_connection_lost_for_good_then_unknown_session_is_aborted() {
    let server = Server::start(&["--ping-period", "0"]);
    let options = ConnectOptions::default().with_reconnect_timeout(Duration::from_millis(300));
    let c = ws_connect(&server, &options).await;
    let id = session_id(c.response());
    let token = c.token().unwrap();
    c.drop_connection();
    expect_event(&server, "disconnected", &id, "CONNECTION_LOST").await;
    // Nobody reconnects within r: closed for good, still CONNECTION_LOST.
    let e = expect_event(&server, "closed", &id, "CONNECTION_LOST").await;
    assert_eq!(e["abort_sent"], false);

    // ABORTED: a reconnection with a token the server no longer knows.
    let again = ConnectOptions {
        reconnect: Some(Reconnect {
            token: Some(token),
            client_oldest: 1,
            server_last: 0,
        }),
        ..options
    };
    let mut late = within("late reconnect", WsClient::connect(server.addr, &again))
        .await
        .unwrap();
    assert_eq!(late.response().code, ResponseCode::UnknownSession);
    assert!(late.response().session.is_none());
    let seen = late.recv_until_end(STEP).await;
    assert!(
        seen.last().is_some_and(Inbound::is_end),
        "closed after 117: {seen:?}"
    );
    let r = server
        .wait_event(STEP, |e| e["event"] == "refused" && e["code"] == 117)
        .await;
    assert_eq!(r["reason"], "ABORTED");
    assert_eq!(r["reason_id"], 8);
}

#[tokio::test]
async fn section_6_http_poll_gap_then_recovered_on_reconnect() {
    let server = Server::start(&["--ping-period", "0", "--poll-gap", "200"]);
    let options = ConnectOptions::default().with_reconnect_timeout(Duration::from_secs(5));
    let c = http_connect(&server, &options).await;
    let id = session_id(c.response());
    within("ping", c.user_ping()).await.unwrap();
    // No poll for longer than the gap: disconnected, kept for a reconnection.
    expect_event(&server, "disconnected", &id, "CLIENT_UNRESPONSIVE").await;
    let p = within("poll while disconnected", c.poll()).await.unwrap();
    assert!(
        p.reconnect,
        "diffusion-connection: reconnect expected: {p:?}"
    );
    let again = ConnectOptions {
        reconnect: Some(Reconnect {
            token: c.token(),
            client_oldest: 1,
            // One response received: the answer to the USER_PING.
            server_last: 1,
        }),
        ..options
    };
    let r = within("reconnect", HttpClient::connect(server.addr, &again))
        .await
        .unwrap();
    assert_eq!(
        r.response().code,
        ResponseCode::Reconnected,
        "{:?}",
        r.response()
    );
    r.resume_conversation(2);
    let e = server
        .wait_event(STEP, |e| e["event"] == "reconnected" && e["session"] == id)
        .await;
    assert_eq!(e["transport"], "http");
    within("ping after recovery", r.user_ping()).await.unwrap();
}

// --------------------------------------------------------- SESSION_TAKEN_OVER

#[tokio::test]
async fn section_1_row_15_sessions_of_one_principal_coexist_by_default() {
    let server = Server::start(&["--ping-period", "0"]);
    let alice = ConnectOptions::default().with_user("alice", "s3cret");
    let mut first = ws_connect(&server, &alice).await;
    let mut second = ws_connect(&server, &alice).await;
    let third = http_connect(&server, &alice).await;
    assert_ne!(session_id(first.response()), session_id(second.response()));
    within("first", first.user_ping()).await.unwrap();
    within("second", second.user_ping()).await.unwrap();
    within("third", third.user_ping()).await.unwrap();
    within("first again", first.user_ping()).await.unwrap();
}

#[tokio::test]
async fn section_8_principal_takeover_when_enabled_closes_session_taken_over() {
    let server = Server::start_with(&["--ping-period", "0", "--principal-takeover"], |dir| {
        let users = dir.join("users");
        add_user(&users, "alice", "s3cret");
        vec!["--users".to_owned(), users.display().to_string()]
    });
    let alice = ConnectOptions::default().with_user("alice", "s3cret");
    let mut first = ws_connect(&server, &alice).await;
    let first_id = session_id(first.response());
    within("ping", first.user_ping()).await.unwrap();

    // Wrong password: 116, the attempt closes CONNECTION_LOST, the first
    // session is untouched.
    let wrong = ConnectOptions::default().with_user("alice", "guess");
    let refused = within("wrong password", WsClient::connect(server.addr, &wrong))
        .await
        .unwrap();
    assert_eq!(refused.response().code, ResponseCode::AuthenticationFailed);
    let r = server
        .wait_event(STEP, |e| e["event"] == "refused" && e["code"] == 116)
        .await;
    assert_eq!(r["reason"], "CONNECTION_LOST");
    assert_eq!(r["principal"], "alice");
    within("first still alive", first.user_ping())
        .await
        .unwrap();

    // The same principal over HTTP polling takes the identity over.
    let second = http_connect(&server, &alice).await;
    let seen = first.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    let e = expect_event(&server, "closed", &first_id, "SESSION_TAKEN_OVER").await;
    assert_eq!(e["principal"], "alice");
    assert_eq!(e["abort_sent"], true);
    within("second works", second.user_ping()).await.unwrap();
}

// --------------------------------------------------------------------- ABORTED

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_1_shutdown_aborts_open_sessions() {
    let mut server = Server::start(&["--ping-period", "0"]);
    let mut ws = ws_connect(&server, &ConnectOptions::default()).await;
    let http = http_connect(&server, &ConnectOptions::default()).await;
    let (ws_id, http_id) = (session_id(ws.response()), session_id(http.response()));
    let poller = http.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let code = tokio::task::block_in_place(|| server.terminate(STEP));
    assert_eq!(code, Some(0), "clean exit after SIGTERM");
    let seen = ws.recv_until_end(STEP).await;
    assert_abort_then_close(&seen);
    assert!(poll_aborted(&poll.await.unwrap()));
    // The log is flushed before the exit.
    for id in [&ws_id, &http_id] {
        let e = server
            .events()
            .into_iter()
            .find(|e| e["event"] == "closed" && e["session"] == id.as_str())
            .unwrap_or_else(|| panic!("no closed event for {id}: {:#?}", server.events()));
        assert_eq!(e["reason"], "ABORTED");
        assert_eq!(e["reason_id"], 8);
    }
}

#[tokio::test]
async fn section_1_bad_request_and_unknown_http_session_are_aborted() {
    let server = Server::start(&["--ping-period", "0"]);
    // A request the server refuses (a repeated field): 115, ABORTED.
    let bad = ConnectOptions {
        extra: vec![("v".to_owned(), "29".to_owned())],
        ..ConnectOptions::default()
    };
    let mut c = within("bad request", WsClient::connect(server.addr, &bad))
        .await
        .unwrap();
    assert_eq!(c.response().code, ResponseCode::ProtocolError);
    assert!(c
        .recv_until_end(STEP)
        .await
        .last()
        .is_some_and(Inbound::is_end));
    let r = server
        .wait_event(STEP, |e| e["event"] == "refused" && e["code"] == 115)
        .await;
    assert_eq!(r["reason"], "ABORTED");
    assert_eq!(r["violation"], "handshake-field-duplicated");
    // A poll for a session the server never had: ABORT.
    let reply = within(
        "unknown poll",
        sessionwire_client::request(
            server.addr,
            Method::POST,
            "/diffusion",
            &[("m", "1"), ("s", "0"), ("c", "ABCDEFGHIJKLMNOPQRSTUVWX")],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        &reply.body[..],
        polling::encode_body(&[Message::Abort]).unwrap().as_bytes()
    );
}

// ------------------------------------------------------------ hostile clients

/// A good client still gets through: connect, a USER_PING round trip, close.
async fn assert_serves_a_good_client(server: &Server) {
    let mut c = ws_connect(server, &ConnectOptions::default()).await;
    within("good ping", c.user_ping())
        .await
        .expect("good client served");
    within("good close", c.close()).await.unwrap();
    let h = http_connect(server, &ConnectOptions::default()).await;
    within("good http ping", h.user_ping())
        .await
        .expect("good http client served");
}

#[tokio::test]
async fn section_3_slow_client_trickling_a_message_byte_by_byte_is_served() {
    let server = Server::start(&["--ping-period", "0"]);
    let mut slow = ws_connect(&server, &ConnectOptions::default()).await;
    let mut other = ws_connect(&server, &ConnectOptions::default()).await;
    let ping = Message::ServiceRequest(ServiceRequest {
        service: USER_PING,
        conversation: slow.next_conversation(),
        payload: Bytes::from(vec![b'p'; 64]),
    });
    let trickle = slow.send_trickled(ping.to_bytes(), Duration::from_millis(10));
    let meanwhile = async {
        // Others are served while the slow one trickles.
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < Duration::from_millis(500) {
            other.user_ping().await.unwrap();
            n += 1;
        }
        n
    };
    let (sent, served) = within("trickle", async { tokio::join!(trickle, meanwhile) }).await;
    sent.unwrap();
    assert!(served > 5, "only {served} pings served meanwhile");
    match within("answer", slow.recv()).await.unwrap() {
        Inbound::Message(Message::ServiceResponse(r)) => assert_eq!(r.conversation, 1),
        other => panic!("{other:?}"),
    }

    // The same over HTTP: a send body streamed one byte at a time.
    let h = http_connect(&server, &ConnectOptions::default()).await;
    let body = polling::encode_body(&[user_ping(1)]).unwrap().into_bytes();
    let chunks = futures_stream(body, Duration::from_millis(20));
    let reply = within("trickled send", h.send_with("0", chunks))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let p = within("poll", h.poll()).await.unwrap();
    assert!(
        matches!(&p.messages[..], [Message::ServiceResponse(r)] if r.conversation == 1),
        "{p:?}"
    );
    assert_serves_a_good_client(&server).await;
}

/// A request body that yields one byte every `delay`.
fn futures_stream(body: Vec<u8>, delay: Duration) -> sessionwire_client::Body {
    sessionwire_client::trickled_body(body, delay)
}

#[tokio::test]
async fn section_6_http_body_declaring_4_gib_is_refused_unread() {
    let server = Server::start(&["--ping-period", "0"]);
    let before = server.memory();
    let c = http_connect(&server, &ConnectOptions::default()).await;
    let id = session_id(c.response());
    let token = c.token().unwrap();
    let poller = c.clone();
    let poll = tokio::spawn(async move { within("poll", poller.poll()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Hand-written on purpose: a client that lies about its body.
    let mut s = within("tcp", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let head = format!(
        "POST /diffusion HTTP/1.1\r\nhost: {}\r\nm: 2\r\ns: 0\r\nc: {}\r\ncontent-length: {}\r\n\r\nAAAA",
        server.addr,
        token.as_str(),
        4u64 << 30
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server drops the connection without reading the body.
    let mut rest = Vec::new();
    let read = within("dropped", s.read_to_end(&mut rest)).await;
    assert!(read.is_err() || rest.len() < 1024, "{read:?} {rest:?}");
    assert!(poll_aborted(&poll.await.unwrap()));
    let e = expect_event(&server, "closed", &id, "MESSAGE_TOO_LARGE").await;
    assert_eq!(e["violation"], "batch-too-large");
    let after = server.memory();
    assert!(
        after.hwm_kib < before.hwm_kib + 16 * 1024,
        "memory grew: {before:?} -> {after:?}"
    );
    assert_serves_a_good_client(&server).await;
}

/// Garbage upgrade requests of many shapes, from a fixed seed.
fn garbage(i: usize, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    match i % 8 {
        0 => (0..(next() % 512 + 1)).map(|_| next() as u8).collect(),
        1 => format!("GET /diffusion?ty=WB&v=29&ca=8&r=0 HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 12\r\nsec-websocket-key: {key}\r\n\r\n").into_bytes(),
        2 => format!("GET /diffusion?ty=WB&v=29&ca=8&r=0 HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n\r\n").into_bytes(),
        3 => format!("GET /elsewhere HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n\r\n").into_bytes(),
        4 => {
            let mut v = b"GET /diffusion HTTP/1.1\r\n".to_vec();
            v.extend((0..(next() % 2048)).map(|_| (next() % 94 + 32) as u8));
            v.extend_from_slice(b"\r\n\r\n");
            v
        }
        5 => format!("POST /diffusion HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\ncontent-length: 0\r\n\r\n").into_bytes(),
        6 => {
            let mut v = format!("GET /diffusion?ty=WB HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\nx: ").into_bytes();
            v.extend(std::iter::repeat_n(b'a', 70 * 1024));
            v.extend_from_slice(b"\r\n\r\n");
            v
        }
        _ => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not really TLS\r\n\r\n".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_2_thousand_garbage_upgrades_leave_the_server_serving() {
    let server = Server::start(&["--ping-period", "0"]);
    assert_serves_a_good_client(&server).await;
    let before = server.memory();
    let addr = server.addr;
    let start = Instant::now();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let attempt = async {
                let mut s = TcpStream::connect(addr).await?;
                let _ = s.write_all(&garbage(i, addr)).await;
                let _ = s.shutdown().await;
                let mut sink = [0u8; 4096];
                // Read until the server closes.
                loop {
                    match s.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            tokio::time::timeout(Duration::from_secs(5), attempt)
                .await
                .is_ok()
        }));
    }
    let mut closed = 0;
    for t in tasks {
        closed += usize::from(t.await.unwrap());
    }
    let took = start.elapsed();
    assert_eq!(
        closed, 1000,
        "every garbage connection was closed by the server"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_serves_a_good_client(&server).await;
    let after = server.memory();
    assert!(
        after.rss_kib < before.rss_kib + 32 * 1024,
        "memory grew: {before:?} -> {after:?}"
    );
    // Nothing was opened by garbage.
    let opened = server
        .events()
        .iter()
        .filter(|e| e["event"] == "opened")
        .count();
    assert_eq!(opened, 4, "only the good clients opened sessions");
}

// ------------------------------------------------------------------------ load

#[test]
fn load_smoke_100_sessions_hold_and_lose_nothing() {
    let server = Server::start(&["--ping-period", "300"]);
    let out = std::process::Command::new(sessionwire_bin())
        .args(["load", "--addr", &server.addr.to_string()])
        .args(["--sessions", "100", "--duration", "1", "--settle", "0"])
        .args(["--ping-interval", "200", "--ramp-timeout", "20", "--json"])
        .args(["--server-pid", &server.pid().to_string()])
        .output()
        .expect("sessionwire load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(report["held"], 100, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(
        report["latency_us"]["count"].as_u64().unwrap() >= 100,
        "{report}"
    );
    assert!(
        report["server_idle"]["rss_kib"].as_u64().unwrap() > 0,
        "{report}"
    );
    let opened = server
        .events()
        .iter()
        .filter(|e| e["event"] == "opened")
        .count();
    assert_eq!(opened, 100);
}
