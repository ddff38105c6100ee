//! The minimal server example (`server/examples/minimal_server.rs`), built on the
//! codec's public API alone, driven by the test client to each kind of close
//! the registry decides: the example has no code of its own per reason.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessionwire::session::ResponseCode;
use sessionwire::Message;
use sessionwire_client::{ConnectOptions, Inbound, WsClient};
use sessionwire_tests::minimal_server_example;

/// The most any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// The example, running, and the lines it prints.
struct Example {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Example {
    /// Starts the example (built once per test process)
    /// with a ping every `ping_ms`.
    fn start(ping_ms: u64) -> Example {
        let mut child = Command::new(minimal_server_example())
            .arg(ping_ms.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = lines.recv_timeout(STEP).expect("the address line");
        let addr = addr.parse().expect("an address");
        Example { child, addr, lines }
    }

    /// The close reason the example printed for session `id`.
    fn closed(&self, id: &str) -> String {
        loop {
            let line = self.lines.recv_timeout(STEP).expect("a close line");
            let fields: Vec<&str> = line.split(' ').collect();
            if let ["closed", i, reason] = fields[..] {
                if i == id {
                    return reason.to_owned();
                }
            }
        }
    }

    async fn connect(&self) -> (WsClient, String) {
        let c = tokio::time::timeout(
            STEP,
            WsClient::connect(self.addr, &ConnectOptions::default()),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        assert_eq!(c.response().code, ResponseCode::Connected);
        let id = c.response().session.expect("a session").id.to_string();
        (c, id)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn section_5_close_request_closes_closed_by_client_with_a_close_frame() {
    let server = Example::start(30_000);
    let (mut c, id) = server.connect().await;
    let seen = c.close().await.expect("close");
    assert!(
        !seen.contains(&Inbound::Message(Message::Abort)),
        "{seen:?}"
    );
    assert!(matches!(seen.last(), Some(Inbound::Closed(_))), "{seen:?}");
    assert_eq!(server.closed(&id), "CLOSED_BY_CLIENT");
}

#[tokio::test]
async fn section_5_invalid_message_sends_abort_then_a_close_frame() {
    let server = Example::start(30_000);
    let (mut c, id) = server.connect().await;
    c.send_raw(Vec::new()).await.expect("send an empty message");
    let seen = c.recv_until_end(STEP).await;
    let n = seen.len();
    assert!(n >= 2, "{seen:?}");
    assert_eq!(seen[n - 2], Inbound::Message(Message::Abort), "{seen:?}");
    assert!(matches!(seen[n - 1], Inbound::Closed(_)), "{seen:?}");
    assert_eq!(server.closed(&id), "INVALID_INBOUND_MESSAGE");
}

#[tokio::test]
async fn section_4_unanswered_ping_closes_client_unresponsive() {
    let server = Example::start(200);
    let (mut c, id) = server.connect().await;
    c.set_answer_pings(false);
    let start = Instant::now();
    let seen = c.recv_until_end(STEP).await;
    assert!(
        seen.iter()
            .any(|i| matches!(i, Inbound::Message(Message::ServiceRequest(_)))),
        "a SYSTEM_PING first: {seen:?}"
    );
    assert!(seen.last().is_some_and(Inbound::is_end), "{seen:?}");
    assert!(
        !seen.contains(&Inbound::Message(Message::Abort)),
        "recoverable: {seen:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(server.closed(&id), "CLIENT_UNRESPONSIVE");
}

#[tokio::test]
async fn section_2_unsupported_version_is_refused_102_then_closed() {
    let server = Example::start(30_000);
    let options = ConnectOptions {
        version: 102,
        ..ConnectOptions::default()
    };
    let mut c = tokio::time::timeout(STEP, WsClient::connect(server.addr, &options))
        .await
        .expect("connect in time")
        .expect("a response");
    assert_eq!(c.response().code, ResponseCode::VersionNotSupported);
    let seen = c.recv_until_end(STEP).await;
    assert!(matches!(seen.last(), Some(Inbound::Closed(_))), "{seen:?}");
}
