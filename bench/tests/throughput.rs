//! The throughput mode of the load generator against the in-process
//! reference server and the echo floor: every request answered, nothing
//! lost, every session closed cleanly. Speed is never asserted here (see
//! BENCHMARKS.md, "Server against a floor").
//!
//! Every run is bounded by its request count and by its duration; each
//! server is stopped at the end of its test.

use std::time::Duration;

use sessionwire::session::handshake::ConnectionResponse;
use sessionwire::session::ResponseCode;
use sessionwire_bench::floor;
use sessionwire_client::throughput::{
    self, RequestMix, ThroughputConfig, ThroughputReport, Transport,
};
use sessionwire_client::{ClientError, ConnectOptions, WsClient};
use sessionwire_server::{Server, ServerConfig};

/// The bound on a whole run (the load's own bounds come first).
const RUN: Duration = Duration::from_secs(60);

fn config(addr: std::net::SocketAddr, transport: Transport, sessions: usize) -> ThroughputConfig {
    ThroughputConfig {
        addr,
        transport,
        sessions,
        window: 8,
        requests: Some(sessions as u64 * 50),
        duration: Duration::from_secs(20),
        mix: RequestMix::Both,
        connect_concurrency: 16,
        ramp_timeout: Duration::from_secs(10),
    }
}

async fn run(config: &ThroughputConfig) -> ThroughputReport {
    tokio::time::timeout(RUN, throughput::run(config))
        .await
        .expect("the run ends within its bounds")
}

/// Every request of the quota was sent and answered as expected, with a
/// latency sample each.
fn assert_sane(report: &ThroughputReport, config: &ThroughputConfig) {
    let want = config.requests.expect("a request count");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.connected, config.sessions, "{report}");
    assert_eq!(
        (report.sent, report.answered, report.lost),
        (want, want, 0),
        "{report}"
    );
    assert_eq!(report.latency.count as u64, want, "{report}");
    assert!(report.latency.p50 <= report.latency.max, "{report}");
    assert!(report.messages_per_second() > 0.0, "{report}");
}

async fn in_process_server() -> Server {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        ..ServerConfig::default()
    };
    Server::bind(config).await.expect("bind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_3_server_answers_every_pipelined_request_over_websocket() {
    let server = in_process_server().await;
    let config = config(server.local_addr(), Transport::WebSocket, 4);
    let report = run(&config).await;
    assert_sane(&report, &config);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_6_server_answers_every_pipelined_request_over_polling() {
    let server = in_process_server().await;
    let config = config(server.local_addr(), Transport::Polling, 3);
    let report = run(&config).await;
    assert_sane(&report, &config);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_3_floor_answers_every_pipelined_request() {
    let (listener, addr) = floor::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind");
    let floor = tokio::spawn(floor::serve(listener));
    for mix in [RequestMix::Ping, RequestMix::Service, RequestMix::Both] {
        let config = ThroughputConfig {
            mix,
            ..config(addr, Transport::WebSocket, 4)
        };
        let report = run(&config).await;
        assert_sane(&report, &config);
    }
    floor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_2_floor_refuses_a_path_not_ending_in_diffusion() {
    let (listener, addr) = floor::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind");
    let floor = tokio::spawn(floor::serve(listener));
    let options = ConnectOptions {
        path: "/elsewhere".to_owned(),
        ..ConnectOptions::default()
    };
    let refused = tokio::time::timeout(RUN, WsClient::connect(addr, &options))
        .await
        .expect("bounded");
    assert!(
        matches!(refused, Err(ClientError::WebSocket(_))),
        "{refused:?}"
    );
    let accepted = tokio::time::timeout(RUN, WsClient::connect(addr, &ConnectOptions::default()))
        .await
        .expect("bounded")
        .expect("/diffusion is accepted");
    assert_eq!(accepted.response().code, ResponseCode::Connected);
    floor.abort();
}

#[test]
fn section_2_floor_connection_response_decodes_as_connected() {
    let response = ConnectionResponse::decode(&floor::CONNECTED).expect("a valid response");
    assert_eq!(response.code, ResponseCode::Connected);
    assert!(response.session.is_some());
}
