//! Request/response throughput (`sessionwire load --mode throughput`): N
//! sessions, each keeping a window of requests in flight, as fast as the
//! server answers.
//!
//! Each session connects (over WebSocket or HTTP polling), waits for every
//! other session to connect, then sends requests (USER_PING, a request for an
//! unknown service, or the two in turn) keeping `window` of them unanswered at
//! any time, until its share of `--requests` is sent or `--duration` has
//! passed; then it waits (at most [`DRAIN`]) for the last answers and closes.
//!
//! Every answer must match a request in flight by conversation id: a
//! SERVICE_RESPONSE for a USER_PING, a SERVICE_ERROR with code 100 for the
//! unknown service. Answers to different services may arrive in another order
//! than their requests. An answer to nothing in flight or of the wrong kind,
//! any other message, and every request still unanswered at the end count as
//! *lost*.
//!
//! Over HTTP polling a session's requests go out in batches (one `m=2` send
//! in flight, as the real client does), each carrying as many requests as the
//! window has room for, while one poll is always open for the answers.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _};
use hyper::StatusCode;
use sessionwire::message::service::{SYSTEM_PING, UNKNOWN_SERVICE_ERROR, USER_PING};
use sessionwire::message::ServiceRequest;
use sessionwire::session::ResponseCode;
use sessionwire::Message;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::load::{raise_fd_limit, Arrival, LoadError, Percentiles};
use crate::{ping_response, ConnectOptions, HttpClient, Inbound, WsClient, WsMessage};

/// The service id the throughput mode asks for when it wants the server's
/// "unknown service" answer: no server of this protocol offers it.
pub const UNKNOWN_SERVICE: u32 = 0x7fff;

/// How long a session waits for the answers to its last requests.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The transport the sessions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One WebSocket connection per session.
    WebSocket,
    /// HTTP polling: a poll always open, sends one at a time.
    Polling,
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ws" | "websocket" => Ok(Transport::WebSocket),
            "http" | "polling" => Ok(Transport::Polling),
            _ => Err(format!("unknown transport {s:?} (ws or http)")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "ws",
            Transport::Polling => "http",
        })
    }
}

/// Which requests the sessions send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMix {
    /// USER_PING only (answered by SERVICE_RESPONSE).
    Ping,
    /// An unknown service only (answered by SERVICE_ERROR 100).
    Service,
    /// The two in turn.
    Both,
}

impl FromStr for RequestMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ping" => Ok(RequestMix::Ping),
            "service" => Ok(RequestMix::Service),
            "both" => Ok(RequestMix::Both),
            _ => Err(format!("unknown request mix {s:?} (ping, service or both)")),
        }
    }
}

impl fmt::Display for RequestMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestMix::Ping => "ping",
            RequestMix::Service => "service",
            RequestMix::Both => "both",
        })
    }
}

impl RequestMix {
    /// The service of the `n`th request of a session (from 0).
    fn service(self, n: u64) -> u32 {
        match self {
            RequestMix::Ping => USER_PING,
            RequestMix::Service => UNKNOWN_SERVICE,
            RequestMix::Both if n % 2 == 0 => USER_PING,
            RequestMix::Both => UNKNOWN_SERVICE,
        }
    }
}

/// What a throughput run does.
#[derive(Clone, Debug)]
pub struct ThroughputConfig {
    /// Address of the server's WebSocket and HTTP listener (loopback).
    pub addr: SocketAddr,
    /// The transport of every session.
    pub transport: Transport,
    /// Sessions.
    pub sessions: usize,
    /// Requests in flight per session (at least 1).
    pub window: usize,
    /// Requests in all, shared evenly among the sessions (`None`: as many
    /// as fit in the duration).
    pub requests: Option<u64>,
    /// Longest time requests are sent for.
    pub duration: Duration,
    /// Which requests are sent.
    pub mix: RequestMix,
    /// Connections opened at once while connecting.
    pub connect_concurrency: usize,
    /// Longest time to connect every session: sessions not connected by
    /// then count as failed.
    pub ramp_timeout: Duration,
}

impl Default for ThroughputConfig {
    /// One WebSocket session to 127.0.0.1:8080, 16 requests in flight, both
    /// kinds in turn, for 10 s.
    fn default() -> ThroughputConfig {
        ThroughputConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            transport: Transport::WebSocket,
            sessions: 1,
            window: 16,
            requests: None,
            duration: Duration::from_secs(10),
            mix: RequestMix::Both,
            connect_concurrency: 64,
            ramp_timeout: Duration::from_secs(120),
        }
    }
}

impl ThroughputConfig {
    /// The requests session `index` sends at most.
    fn quota(&self, index: usize) -> u64 {
        let Some(total) = self.requests else {
            return u64::MAX;
        };
        let n = self.sessions.max(1) as u64;
        total / n + u64::from((index as u64) < total % n)
    }
}

/// What a throughput run saw.
#[derive(Clone, Debug, Default)]
pub struct ThroughputReport {
    /// The transport.
    pub transport: Option<Transport>,
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions the server connected (response 100).
    pub connected: usize,
    /// Connection attempts that failed or were refused.
    pub failed: usize,
    /// Sessions whose connection ended before they were done.
    pub dropped: usize,
    /// Sessions closed cleanly at the end (WebSocket: the server closed the
    /// socket after CLOSE_REQUEST; polling: the CLOSE_REQUEST send was
    /// answered 200).
    pub closed_cleanly: usize,
    /// Requests in flight per session.
    pub window: usize,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered as expected.
    pub answered: u64,
    /// Requests unanswered at the end, plus answers to nothing in flight or
    /// of the wrong kind, plus unexpected messages.
    pub lost: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Round trips (request written to answer read), in microseconds.
    pub latency: Percentiles,
    /// SYSTEM_PINGs the server sent meanwhile (answered, not counted above).
    pub system_pings: u64,
}

impl ThroughputReport {
    /// Protocol messages per second: every request sent and every answer
    /// received, over the elapsed time.
    pub fn messages_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.sent + self.answered) as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether every session connected and closed cleanly and every request
    /// was answered as expected.
    pub fn is_clean(&self) -> bool {
        self.connected == self.requested
            && self.failed == 0
            && self.dropped == 0
            && self.closed_cleanly == self.connected
            && self.lost == 0
            && self.answered == self.sent
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "transport": self.transport.map(|t| t.to_string()),
            "sessions": {
                "requested": self.requested,
                "connected": self.connected,
                "failed": self.failed,
                "dropped": self.dropped,
                "closed_cleanly": self.closed_cleanly,
            },
            "window": self.window,
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "messages_per_s": self.messages_per_second(),
            "latency_us": {
                "count": self.latency.count,
                "p50": self.latency.p50,
                "p90": self.latency.p90,
                "p99": self.latency.p99,
                "p999": self.latency.p999,
                "max": self.latency.max,
            },
            "system_pings": self.system_pings,
        })
    }
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        let transport = self.transport.map(|t| t.to_string()).unwrap_or_default();
        writeln!(
            f,
            "sessions ({transport}): requested {}, connected {}, failed {}, dropped {}, closed cleanly {}",
            self.requested, self.connected, self.failed, self.dropped, self.closed_cleanly
        )?;
        writeln!(
            f,
            "requests: window {}, sent {}, answered {}, lost {}, in {:.2} s ({:.0} msgs/s)",
            self.window,
            self.sent,
            self.answered,
            self.lost,
            self.elapsed.as_secs_f64(),
            self.messages_per_second()
        )?;
        write!(
            f,
            "latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
            ms(self.latency.p50),
            ms(self.latency.p90),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.latency.count
        )
    }
}

/// Runs a throughput load on a new multi-threaded runtime.
pub fn run_blocking(config: &ThroughputConfig) -> Result<ThroughputReport, LoadError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    Ok(rt.block_on(run(config)))
}

/// What the sessions are told, all at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connecting.
    Ramp,
    /// Send requests until this instant (or the quota).
    Go(tokio::time::Instant),
    /// Every session is done: close.
    Close,
}

/// What one session saw.
#[derive(Default)]
struct SessionStats {
    connected: bool,
    failed: bool,
    dropped: bool,
    closed_cleanly: bool,
    sent: u64,
    answered: u64,
    lost: u64,
    system_pings: u64,
    /// When the last answer arrived.
    last_answer: Option<Instant>,
    latencies: Vec<u64>,
}

/// Runs a throughput load (see the [module documentation](self)).
pub async fn run(config: &ThroughputConfig) -> ThroughputReport {
    let _ = raise_fd_limit(config.sessions);
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let settled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let ramp_deadline = Instant::now() + config.ramp_timeout;
    let mut tasks = Vec::with_capacity(config.sessions);
    for index in 0..config.sessions {
        let plan = Plan {
            addr: config.addr,
            window: config.window.max(1),
            quota: config.quota(index),
            mix: config.mix,
            gate: gate.clone(),
            settled: settled.clone(),
            done: Arrival(Some(done.clone())),
            ramp_deadline,
            phase: phase_rx.clone(),
        };
        tasks.push(match config.transport {
            Transport::WebSocket => tokio::spawn(ws_session(plan)),
            Transport::Polling => tokio::spawn(http_session(plan)),
        });
    }
    while settled.load(Ordering::Relaxed) < config.sessions && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    let stop = tokio::time::Instant::from_std(start) + config.duration;
    let _ = phase_tx.send(Phase::Go(stop));
    let done_deadline = stop + DRAIN + Duration::from_secs(1);
    while done.load(Ordering::Relaxed) < config.sessions
        && tokio::time::Instant::now() < done_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = phase_tx.send(Phase::Close);
    let mut report = ThroughputReport {
        transport: Some(config.transport),
        requested: config.sessions,
        window: config.window.max(1),
        ..ThroughputReport::default()
    };
    let mut latencies = Vec::new();
    let mut last = None;
    for task in tasks {
        let Ok(s) = task.await else {
            report.failed += 1;
            continue;
        };
        report.connected += usize::from(s.connected);
        report.failed += usize::from(s.failed);
        report.dropped += usize::from(s.dropped);
        report.closed_cleanly += usize::from(s.closed_cleanly);
        report.sent += s.sent;
        report.answered += s.answered;
        report.lost += s.lost;
        report.system_pings += s.system_pings;
        last = last.max(s.last_answer);
        latencies.extend(s.latencies);
    }
    report.elapsed = last.map_or(Duration::ZERO, |l| l.saturating_duration_since(start));
    report.latency = Percentiles::of(&mut latencies);
    report
}

/// What one session is told to do.
struct Plan {
    addr: SocketAddr,
    window: usize,
    quota: u64,
    mix: RequestMix,
    gate: Arc<Semaphore>,
    settled: Arc<AtomicUsize>,
    done: Arrival,
    ramp_deadline: Instant,
    phase: watch::Receiver<Phase>,
}

impl Plan {
    /// Connects with `connect` (bounded by the ramp deadline and the gate;
    /// the session counts as settled either way), then waits for the start.
    /// Returns the client, the session's flight and when requests stop
    /// being sent; or, when the session cannot run, its stats.
    async fn open<C, F>(
        &mut self,
        connect: F,
        code: impl Fn(&C) -> ResponseCode,
    ) -> Result<(C, Flight, tokio::time::Instant), SessionStats>
    where
        F: std::future::Future<Output = Result<C, crate::ClientError>>,
    {
        let connected = {
            let _permit = self.gate.acquire().await;
            let deadline = tokio::time::Instant::from_std(self.ramp_deadline);
            tokio::time::timeout_at(deadline, connect).await
        };
        self.settled.fetch_add(1, Ordering::Relaxed);
        let client = match connected {
            Ok(Ok(c)) if code(&c) == ResponseCode::Connected => c,
            _ => {
                return Err(SessionStats {
                    failed: true,
                    ..SessionStats::default()
                })
            }
        };
        let flight = Flight::new(self);
        match self.start().await {
            Some(stop) => Ok((client, flight, stop)),
            None => Err(flight.into_stats()),
        }
    }

    /// Waits for the start; returns when requests stop being sent.
    async fn start(&mut self) -> Option<tokio::time::Instant> {
        loop {
            match *self.phase.borrow_and_update() {
                Phase::Ramp => {}
                Phase::Go(stop) => return Some(stop),
                Phase::Close => return None,
            }
            self.phase.changed().await.ok()?;
        }
    }

    /// Waits until every session is done.
    async fn until_close(&mut self) {
        while *self.phase.borrow_and_update() != Phase::Close {
            if self.phase.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The requests of one session: what is in flight and what the answers
/// showed.
struct Flight {
    mix: RequestMix,
    quota: u64,
    window: usize,
    next_conversation: u64,
    /// Conversation id, service, when sent; oldest first.
    outstanding: VecDeque<(u64, u32, Instant)>,
    stats: SessionStats,
}

impl Flight {
    fn new(plan: &Plan) -> Flight {
        Flight {
            mix: plan.mix,
            quota: plan.quota,
            window: plan.window,
            next_conversation: 1,
            outstanding: VecDeque::with_capacity(plan.window),
            stats: SessionStats {
                connected: true,
                ..SessionStats::default()
            },
        }
    }

    /// How many more requests may go out now.
    fn room(&self, sending: bool) -> usize {
        if !sending {
            return 0;
        }
        let left = self.quota.saturating_sub(self.stats.sent);
        let free = self.window.saturating_sub(self.outstanding.len());
        usize::try_from(left).map_or(free, |left| left.min(free))
    }

    /// The next request, recorded as sent at `at`.
    fn next_request(&mut self, at: Instant) -> Message {
        let service = self.mix.service(self.stats.sent);
        let conversation = self.next_conversation;
        self.next_conversation += 1;
        self.stats.sent += 1;
        self.outstanding.push_back((conversation, service, at));
        Message::ServiceRequest(ServiceRequest {
            service,
            conversation,
            payload: Bytes::new(),
        })
    }

    /// Whether the quota is spent and every answer is in.
    fn finished(&self) -> bool {
        self.stats.sent >= self.quota && self.outstanding.is_empty()
    }

    /// Whether requests may still be sent (`stop` not reached), or `None`
    /// when the session is done: finished, or past `stop` with nothing in
    /// flight, or past the drain.
    fn sending(&self, stop: tokio::time::Instant) -> Option<bool> {
        let now = tokio::time::Instant::now();
        let sending = now < stop;
        let drained = self.outstanding.is_empty() || now >= stop + DRAIN;
        (!self.finished() && (sending || !drained)).then_some(sending)
    }

    /// Takes one message from the server. Returns the answer to send back
    /// (to a SYSTEM_PING), if any.
    fn take(&mut self, message: &Message) -> Option<Message> {
        let (conversation, expected) = match message {
            Message::ServiceRequest(req) if req.service == SYSTEM_PING => {
                self.stats.system_pings += 1;
                return Some(ping_response(req));
            }
            Message::ServiceResponse(r) => (r.conversation, USER_PING),
            Message::ServiceError(e) if e.code == UNKNOWN_SERVICE_ERROR => {
                (e.conversation, UNKNOWN_SERVICE)
            }
            _ => {
                self.stats.lost += 1;
                return None;
            }
        };
        // Answers to different services may come back in another order
        // than the requests (a server answers pings in its session layer and
        // other services in the application): match by conversation id.
        let found = self
            .outstanding
            .iter()
            .position(|&(c, service, _)| c == conversation && service == expected);
        match found.and_then(|i| self.outstanding.remove(i)) {
            Some((_, _, at)) => {
                let now = Instant::now();
                self.stats.answered += 1;
                self.stats.last_answer = Some(now);
                self.stats
                    .latencies
                    .push(now.saturating_duration_since(at).as_micros() as u64);
            }
            // An answer to nothing in flight, or of the wrong kind.
            None => self.stats.lost += 1,
        }
        None
    }

    /// The stats, counting what is still unanswered as lost.
    fn into_stats(mut self) -> SessionStats {
        self.stats.lost += self.outstanding.len() as u64;
        self.stats
    }
}

/// One WebSocket session: connect, send with a window, drain, close.
async fn ws_session(mut plan: Plan) -> SessionStats {
    let options = ConnectOptions {
        read_buffer: 4096,
        ..ConnectOptions::default()
    };
    let connect = WsClient::connect(plan.addr, &options);
    let (mut client, mut flight, stop) = match plan.open(connect, |c| c.response().code).await {
        Ok(opened) => opened,
        Err(stats) => return stats,
    };
    let drain_until = stop + DRAIN;
    let mut alive = true;
    while alive {
        let Some(sending) = flight.sending(stop) else {
            break;
        };
        // Fill the window, then flush once.
        let at = Instant::now();
        let mut queued = 0;
        for _ in 0..flight.room(sending) {
            let request = flight.next_request(at);
            let ws = client.stream_mut();
            if ws
                .feed(WsMessage::Binary(request.to_bytes()))
                .await
                .is_err()
            {
                alive = false;
                break;
            }
            queued += 1;
        }
        if queued > 0 && client.stream_mut().flush().await.is_err() {
            alive = false;
        }
        if !alive {
            break;
        }
        // Wait for an answer (or the stop), then take every answer already
        // read without waiting again.
        let deadline = if sending { stop } else { drain_until };
        let first = match tokio::time::timeout_at(deadline, client.read()).await {
            Ok(inbound) => inbound,
            Err(_) => continue,
        };
        let mut next = Some(first);
        while let Some(inbound) = next.take() {
            match inbound {
                Inbound::Message(m) => {
                    if let Some(answer) = flight.take(&m) {
                        if client.send(&answer).await.is_err() {
                            alive = false;
                        }
                    }
                }
                end if end.is_end() => alive = false,
                _ => flight.stats.lost += 1,
            }
            if alive {
                next = client.read().now_or_never();
            }
        }
    }
    let mut stats = flight.into_stats();
    if !alive {
        stats.dropped = true;
        return stats;
    }
    plan.done.arrive();
    plan.until_close().await;
    if let Ok(seen) = client.close().await {
        stats.closed_cleanly = seen.last().is_some_and(Inbound::is_end);
    }
    stats
}

/// One HTTP polling session: a poll always open (its own task), requests
/// sent in batches, one send in flight.
async fn http_session(mut plan: Plan) -> SessionStats {
    let options = ConnectOptions::default();
    let connect = HttpClient::connect(plan.addr, &options);
    let (client, mut flight, stop) = match plan.open(connect, |c| c.response().code).await {
        Ok(opened) => opened,
        Err(stats) => return stats,
    };
    // The poller hands every batch it receives to the session; it ends when
    // a poll fails or the session drops its receiver.
    let (tx, mut rx) = mpsc::channel::<Option<Vec<Message>>>(4);
    let poller = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let batch = match client.poll().await {
                    Ok(p) if p.reply.status == StatusCode::OK && p.violation.is_none() => {
                        Some(p.messages)
                    }
                    _ => None,
                };
                let end = batch.is_none();
                if tx.send(batch).await.is_err() || end {
                    return;
                }
            }
        })
    };
    let drain_until = stop + DRAIN;
    let mut alive = true;
    while alive {
        let Some(sending) = flight.sending(stop) else {
            break;
        };
        let at = Instant::now();
        let batch: Vec<Message> = (0..flight.room(sending))
            .map(|_| flight.next_request(at))
            .collect();
        if !batch.is_empty() {
            match client.send(&batch).await {
                Ok(reply) if reply.status == StatusCode::OK => {}
                _ => {
                    alive = false;
                    break;
                }
            }
        }
        let deadline = if sending { stop } else { drain_until };
        let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => None,
            Err(_) => continue,
        };
        let mut next = Some(first);
        while let Some(received) = next.take() {
            let Some(messages) = received else {
                alive = false;
                break;
            };
            let answers: Vec<Message> = messages.iter().filter_map(|m| flight.take(m)).collect();
            if !answers.is_empty() && client.send(&answers).await.is_err() {
                alive = false;
                break;
            }
            next = rx.try_recv().ok();
        }
    }
    poller.abort();
    let mut stats = flight.into_stats();
    if !alive {
        stats.dropped = true;
        return stats;
    }
    plan.done.arrive();
    plan.until_close().await;
    stats.closed_cleanly = client
        .send(&[Message::Close])
        .await
        .is_ok_and(|r| r.status == StatusCode::OK);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_shared_evenly_among_sessions() {
        let config = ThroughputConfig {
            sessions: 3,
            requests: Some(10),
            ..ThroughputConfig::default()
        };
        let quotas: Vec<u64> = (0..3).map(|i| config.quota(i)).collect();
        assert_eq!(quotas, [4, 3, 3]);
        let unbounded = ThroughputConfig::default();
        assert_eq!(unbounded.quota(0), u64::MAX);
    }

    #[test]
    fn section_3_answers_match_their_request_by_conversation_id() {
        let mut f = Flight {
            mix: RequestMix::Both,
            quota: 4,
            window: 2,
            next_conversation: 1,
            outstanding: VecDeque::new(),
            stats: SessionStats::default(),
        };
        let at = Instant::now();
        assert_eq!(f.room(true), 2);
        assert_eq!(f.room(false), 0);
        let first = f.next_request(at);
        let second = f.next_request(at);
        assert!(
            matches!(first, Message::ServiceRequest(ref r) if r.service == USER_PING && r.conversation == 1)
        );
        assert!(
            matches!(second, Message::ServiceRequest(ref r) if r.service == UNKNOWN_SERVICE && r.conversation == 2)
        );
        assert_eq!(f.room(true), 0);
        let error = |conversation| {
            Message::ServiceError(sessionwire::message::ServiceError {
                conversation,
                message: "unknown service".into(),
                code: UNKNOWN_SERVICE_ERROR,
            })
        };
        let pong = |conversation| {
            ping_response(&ServiceRequest {
                service: USER_PING,
                conversation,
                payload: Bytes::new(),
            })
        };
        // The second request answered first: fine.
        assert_eq!(f.take(&error(2)), None);
        assert_eq!((f.stats.answered, f.stats.lost), (1, 0));
        // The wrong kind of answer for request 1, then an answer to
        // nothing in flight: both lost, request 1 still in flight.
        assert_eq!(f.take(&error(1)), None);
        assert_eq!(f.take(&pong(2)), None);
        assert_eq!((f.stats.answered, f.stats.lost), (1, 2));
        assert_eq!(f.take(&pong(1)), None);
        assert_eq!((f.stats.answered, f.stats.lost), (2, 2));
        assert_eq!(f.stats.latencies.len(), 2);
        // A SYSTEM_PING is answered, not counted.
        let system = Message::ServiceRequest(ServiceRequest {
            service: SYSTEM_PING,
            conversation: 9,
            payload: Bytes::new(),
        });
        assert!(
            matches!(f.take(&system), Some(Message::ServiceResponse(r)) if r.conversation == 9)
        );
        assert_eq!(f.stats.system_pings, 1);
        // Any other message is lost.
        assert_eq!(f.take(&Message::Abort), None);
        assert_eq!(f.stats.lost, 3);
        // Two more fill the quota; unanswered, they are lost at the end.
        let _ = f.next_request(at);
        let _ = f.next_request(at);
        assert_eq!(f.room(true), 0);
        assert!(!f.finished());
        let stats = f.into_stats();
        assert_eq!((stats.sent, stats.answered, stats.lost), (4, 2, 5));
    }

    #[test]
    fn transport_and_mix_parse() {
        assert_eq!("ws".parse(), Ok(Transport::WebSocket));
        assert_eq!("http".parse(), Ok(Transport::Polling));
        assert!("tcp".parse::<Transport>().is_err());
        assert_eq!("service".parse(), Ok(RequestMix::Service));
        assert!("all".parse::<RequestMix>().is_err());
        assert_eq!(RequestMix::Both.service(2), USER_PING);
        assert_eq!(RequestMix::Both.service(3), UNKNOWN_SERVICE);
    }
}
