//! The reference server started in-process through the library
//! (`sessionwire_server::Server::bind`), driven by the test client: what an
//! application embedding the server relies on.
//!
//! Every await is bounded; each server is shut down at the end of its test.

use std::future::Future;
use std::time::Duration;

use hyper::StatusCode;
use sessionwire::session::ResponseCode;
use sessionwire::Message;
use sessionwire_client::{user_ping, ConnectOptions, HttpClient, Inbound, WsClient};
use sessionwire_server::{Server, ServerConfig, SHUTDOWN_GRACE};

/// The bound on every single step of a test.
const STEP: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A server on an ephemeral loopback port, everything else by default.
async fn bind() -> Server {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        ..ServerConfig::default()
    };
    within("bind", Server::bind(config)).await.expect("bind")
}

#[tokio::test]
async fn section_2_in_process_server_answers_100_and_user_ping_over_both_transports() {
    let server = bind().await;
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    assert!(server.control_addr().is_none());
    assert_eq!(
        server.listening_line(),
        format!("listening ws+http on {addr} control off")
    );

    let mut ws = within(
        "ws connect",
        WsClient::connect(addr, &ConnectOptions::default()),
    )
    .await
    .expect("ws connect");
    assert_eq!(ws.response().code, ResponseCode::Connected);
    within("ws user ping", ws.user_ping())
        .await
        .expect("USER_PING answered over WebSocket");

    let http = within(
        "http connect",
        HttpClient::connect(addr, &ConnectOptions::default()),
    )
    .await
    .expect("http connect");
    assert_eq!(http.response().code, ResponseCode::Connected);
    let conversation = http.next_conversation();
    let sent = within("http send", http.send(&[user_ping(conversation)]))
        .await
        .expect("http send");
    assert_eq!(sent.status, StatusCode::OK);
    let polled = within("http poll", http.poll()).await.expect("http poll");
    assert!(
        polled
            .messages
            .iter()
            .any(|m| matches!(m, Message::ServiceResponse(r) if r.conversation == conversation)),
        "USER_PING answered over HTTP polling: {:?}",
        polled.messages
    );

    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn section_1_in_process_shutdown_aborts_open_sessions() {
    let server = bind().await;
    let mut ws = within(
        "ws connect",
        WsClient::connect(server.local_addr(), &ConnectOptions::default()),
    )
    .await
    .expect("ws connect");
    assert_eq!(ws.response().code, ResponseCode::Connected);
    let started = tokio::time::Instant::now();
    within("shutdown", server.shutdown()).await;
    assert!(started.elapsed() <= SHUTDOWN_GRACE + Duration::from_secs(1));
    // ABORTED: the client sees ABORT, then the socket ends.
    let seen = ws.recv_until_end(STEP).await;
    assert!(seen.contains(&Inbound::Message(Message::Abort)), "{seen:?}");
    assert!(seen.last().is_some_and(Inbound::is_end), "{seen:?}");
}
