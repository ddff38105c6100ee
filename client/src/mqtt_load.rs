//! The MQTT load generator behind `sessionwire load --mode mqtt`: drives any
//! MQTT broker on loopback (ours, or mosquitto for comparison) with the
//! codec's own packet encoder and decoder over tokio TCP.
//!
//! Two patterns: [`Pattern::FanIn`] (N publishers, one subscriber on
//! `…/+`) and [`Pattern::FanOut`] (one publisher, N subscribers), at QoS 0
//! or 1, MQTT 3.1.1 or 5.0.
//!
//! Phases: ramp (subscribers connect and subscribe, then publishers
//! connect, a bounded number at a time), settle (everything idle: the
//! broker's resident memory is read, and read before the ramp too, giving
//! the memory per idle connection), exchange (publishers publish for the
//! run's duration), drain (wait for what is still on its way), close
//! (DISCONNECT). Every phase is bounded in time.
//!
//! Flow control is end to end: at most [`MqttLoadConfig::window`] messages
//! are on their way at once, a message leaving the window when its last
//! receiver has it, so neither broker is asked to queue without bound and
//! the rate measured is what the broker sustains. A QoS 1 publisher also
//! keeps no more PUBLISHes unacknowledged than the broker's Receive Maximum
//! (5.0 CONNACK; 3.1.1: the window).
//!
//! Each payload carries the publisher's index, a sequence number and the
//! time it was sent, so each receiver times the delivery. A message is
//! *lost* when a receiver it was routed to never gets it (for QoS 1 this
//! must be 0).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, BytesMut};
use sessionwire::mqtt::{
    Ack, Connect, Disconnect, Packet, Property, PropertyId, Publish, QoS, Sender, Str, Subscribe,
    SubscriptionOptions, Subscriptions, Version,
};
use sessionwire::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::load::{
    bytes_per, growth_per, per_second, raise_fd_limit, LoadError, Percentiles, ProcessMemory,
};

/// Who publishes to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// N publishers, each on its own topic, to one subscriber of them all.
    FanIn,
    /// One publisher to N subscribers of its topic.
    FanOut,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        match s {
            "fan-in" => Ok(Pattern::FanIn),
            "fan-out" => Ok(Pattern::FanOut),
            _ => Err(format!("{s:?}: expected fan-in or fan-out")),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::FanIn => "fan-in",
            Pattern::FanOut => "fan-out",
        })
    }
}

/// What an MQTT load run does.
#[derive(Clone, Debug)]
pub struct MqttLoadConfig {
    /// The broker's MQTT over TCP address (loopback).
    pub addr: SocketAddr,
    /// The MQTT version every client speaks.
    pub version: Version,
    /// Who publishes to whom.
    pub pattern: Pattern,
    /// N: publishers (fan-in) or subscribers (fan-out).
    pub connections: usize,
    /// QoS of the publications and the subscriptions (0 or 1).
    pub qos: QoS,
    /// Messages on their way at once, all publishers together.
    pub window: usize,
    /// Payload size in bytes (at least the 20-byte header).
    pub payload: usize,
    /// How long publishers publish.
    pub duration: Duration,
    /// How long everything stays idle after the ramp before the broker's
    /// memory is read.
    pub settle: Duration,
    /// Connections opened at once during the ramp.
    pub connect_concurrency: usize,
    /// Longest ramp: connections not up by then count as failed.
    pub ramp_timeout: Duration,
    /// Longest wait for the messages still on their way after the exchange.
    pub drain: Duration,
    /// The broker's process id: its memory is read from /proc/PID/status.
    pub server_pid: Option<u32>,
}

impl Default for MqttLoadConfig {
    /// Fan-in from 1,000 publishers to 127.0.0.1:1883 in MQTT 5.0 at QoS 1,
    /// 64 messages on their way, 64-byte payloads, 10 s of publishing after
    /// 2 s of idling.
    fn default() -> MqttLoadConfig {
        MqttLoadConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            version: Version::V5,
            pattern: Pattern::FanIn,
            connections: 1000,
            qos: QoS::AtLeastOnce,
            window: 64,
            payload: 64,
            duration: Duration::from_secs(10),
            settle: Duration::from_secs(2),
            connect_concurrency: 64,
            ramp_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(10),
            server_pid: None,
        }
    }
}

/// What an MQTT load run saw.
#[derive(Clone, Debug, Default)]
pub struct MqttReport {
    /// The pattern run.
    pub pattern: Option<Pattern>,
    /// Connections asked for (N, plus the one on the other side).
    pub requested: usize,
    /// Connections the broker accepted (CONNACK 0, and SUBACK for
    /// subscribers).
    pub connected: usize,
    /// Connections that failed (socket, refusal, timeout).
    pub failed: usize,
    /// Connections the broker closed before the run ended.
    pub dropped: usize,
    /// How long the ramp took.
    pub ramp: Duration,
    /// From the first publication to the last delivery (or the drain's end).
    pub exchange: Duration,
    /// Messages published.
    pub published: u64,
    /// Deliveries expected: each message times its receivers.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Delivery latency (publish to receipt), in microseconds.
    pub latency: Percentiles,
    /// Deliveries expected and never received.
    pub lost: u64,
    /// The broker's memory before the ramp.
    pub server_before: Option<ProcessMemory>,
    /// The broker's memory with every connection up and idle.
    pub server_idle: Option<ProcessMemory>,
    /// The broker's memory at the end.
    pub server_after: Option<ProcessMemory>,
}

impl MqttReport {
    /// Deliveries per second during the exchange.
    pub fn delivered_per_second(&self) -> f64 {
        per_second(self.delivered, self.exchange)
    }

    /// The broker's resident memory per idle connection, in bytes: growth
    /// of VmRSS from before the ramp to the idle point, over the connections.
    pub fn idle_bytes_per_connection(&self) -> Option<u64> {
        bytes_per(
            self.server_before,
            self.server_idle.map(|m| m.rss_kib),
            self.connected,
        )
    }

    /// The broker's anonymous memory per idle connection, in bytes: growth
    /// of RssAnon from before the ramp to the idle point, over the
    /// connections. Unlike [`idle_bytes_per_connection`](Self::idle_bytes_per_connection)
    /// it leaves out the executable's code, which the first connections page
    /// in once (BENCHMARKS.md, "What the first clients page in").
    pub fn idle_anon_bytes_per_connection(&self) -> Option<u64> {
        growth_per(
            self.server_before.and_then(|m| m.anon_kib),
            self.server_idle.and_then(|m| m.anon_kib),
            self.connected,
        )
    }

    /// Whether the run met its bar: every connection up to the end, nothing
    /// lost.
    pub fn is_clean(&self) -> bool {
        self.connected == self.requested && self.dropped == 0 && self.lost == 0
    }

    /// The report as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mem = |m: Option<ProcessMemory>| m.map(|m| m.to_json());
        serde_json::json!({
            "pattern": self.pattern.map(|p| p.to_string()),
            "requested": self.requested,
            "connected": self.connected,
            "failed": self.failed,
            "dropped": self.dropped,
            "ramp_s": self.ramp.as_secs_f64(),
            "exchange_s": self.exchange.as_secs_f64(),
            "published": self.published,
            "expected": self.expected,
            "delivered": self.delivered,
            "messages_per_s": self.delivered_per_second(),
            "latency_us": self.latency.to_json(),
            "lost": self.lost,
            "server_before": mem(self.server_before),
            "server_idle": mem(self.server_idle),
            "server_after": mem(self.server_after),
            "idle_bytes_per_connection": self.idle_bytes_per_connection(),
            "idle_anon_bytes_per_connection": self.idle_anon_bytes_per_connection(),
        })
    }
}

impl fmt::Display for MqttReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "connections: requested {}, connected {}, failed {}, dropped {}; ramp {:.2} s",
            self.requested,
            self.connected,
            self.failed,
            self.dropped,
            self.ramp.as_secs_f64()
        )?;
        writeln!(
            f,
            "exchange: {:.2} s, {} published, {} of {} deliveries ({:.0} msgs/s), {} lost",
            self.exchange.as_secs_f64(),
            self.published,
            self.delivered,
            self.expected,
            self.delivered_per_second(),
            self.lost
        )?;
        writeln!(
            f,
            "latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.latency.count
        )?;
        match (self.server_before, self.server_idle) {
            (Some(b), Some(i)) => write!(
                f,
                "broker memory: before {} KiB, idle {} KiB ({} B/connection; anonymous {} B/connection)",
                b.rss_kib,
                i.rss_kib,
                self.idle_bytes_per_connection().unwrap_or(0),
                self.idle_anon_bytes_per_connection().unwrap_or(0)
            ),
            _ => write!(f, "broker memory: not read (no --server-pid)"),
        }
    }
}

/// The payload's header: publisher index (u32), sequence (u64), send time
/// in ns since the run's base instant (u64), big-endian.
const HEADER: usize = 4 + 8 + 8;

/// How long a task may take to close once told to.
const CLOSE: Duration = Duration::from_secs(5);

/// Latency samples kept per receiver at most (reservoir sampled beyond).
const SAMPLES: usize = 1 << 20;

/// What every task shares.
struct Shared {
    config: MqttLoadConfig,
    base: Instant,
    /// Messages that may still be sent before one leaves the window.
    window: Semaphore,
    /// Fan-out: receipts per message still on its way, by sequence number
    /// modulo their count (never fewer than the window).
    receipts: Vec<AtomicU32>,
    /// Receivers per message.
    /// Receivers per message: the subscribers that subscribed (set after
    /// their ramp; fan-in: 1).
    receivers: AtomicU32,
    published: AtomicU64,
    delivered: AtomicU64,
    ready: AtomicUsize,
    /// Publishers done publishing.
    finished: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    topic_prefix: String,
}

impl Shared {
    /// The state of a run whose messages each go to `receivers`, at most
    /// `window` of them on their way.
    fn new(config: MqttLoadConfig, receivers: u32, window: usize, topic_prefix: String) -> Shared {
        // One receiver per message needs no count of receipts.
        let ring = if receivers > 1 { window } else { 0 };
        Shared {
            config,
            base: Instant::now(),
            window: Semaphore::new(window),
            receipts: (0..ring).map(|_| AtomicU32::new(0)).collect(),
            receivers: AtomicU32::new(receivers),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            topic_prefix,
        }
    }
}

/// The run's phase, as the tasks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ramp,
    Publish,
    Close,
}

/// One client connection: its socket halves and the decoder of what the
/// broker sends.
struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    decoder: sessionwire::mqtt::Decoder,
    input: BytesMut,
    output: BytesMut,
    version: Version,
}

impl Conn {
    /// Connects and completes the CONNECT/CONNACK exchange; returns the
    /// connection and the broker's Receive Maximum.
    async fn open(shared: &Shared, client_id: &str) -> Result<(Conn, u16), String> {
        let version = shared.config.version;
        let stream = TcpStream::connect(shared.config.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            read,
            write,
            decoder: sessionwire::mqtt::Decoder::new(version, Sender::Server, &Limits::default()),
            input: BytesMut::with_capacity(4096),
            output: BytesMut::new(),
            version,
        };
        let id = Str::try_from(client_id).map_err(|e| e.to_string())?;
        let connect = Connect::new(version, id, None, None, None).map_err(|e| e.to_string())?;
        conn.send(&Packet::Connect(connect)).await?;
        match conn.next().await? {
            Some(Packet::ConnAck(ack)) if ack.code == 0 => {
                let receive_max = match ack.properties.get(PropertyId::ReceiveMaximum) {
                    Some(Property::ReceiveMaximum(m)) => m,
                    _ => u16::MAX,
                };
                Ok((conn, receive_max))
            }
            Some(Packet::ConnAck(ack)) => Err(format!("CONNACK {:#04x}", ack.code)),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    /// Queues a packet for [`flush`](Self::flush).
    fn queue(&mut self, packet: &Packet) -> Result<(), String> {
        packet
            .encode(self.version, &mut self.output)
            .map_err(|e| e.to_string())
    }

    /// Writes what is queued.
    async fn flush(&mut self) -> Result<(), String> {
        if !self.output.is_empty() {
            self.write
                .write_all(&self.output)
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.output.clear();
        }
        Ok(())
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        self.queue(packet)?;
        self.flush().await
    }

    /// The next packet the broker sends; `None` when it closed the
    /// connection.
    async fn next(&mut self) -> Result<Option<Packet>, String> {
        loop {
            if let Some(p) = self
                .decoder
                .decode(&mut self.input)
                .map_err(|v| v.to_string())?
            {
                return Ok(Some(p));
            }
            let n = self
                .read
                .read_buf(&mut self.input)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// Runs the load on a new multi-threaded runtime.
pub fn run_blocking(config: &MqttLoadConfig) -> Result<MqttReport, LoadError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    Ok(rt.block_on(run(config)))
}

/// Runs the load (see the [module documentation](self)).
pub async fn run(config: &MqttLoadConfig) -> MqttReport {
    let n = config.connections.max(1);
    let _ = raise_fd_limit(n + 1);
    let mem = || config.server_pid.and_then(ProcessMemory::of);
    let window = config.window.clamp(1, usize::from(u16::MAX));
    let receivers = match config.pattern {
        Pattern::FanIn => 1,
        Pattern::FanOut => u32::try_from(n).unwrap_or(u32::MAX),
    };
    // Topics and client ids of this run, apart from any other run's.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let run_id = std::process::id() ^ clock;
    let shared = Arc::new(Shared::new(
        MqttLoadConfig {
            window,
            payload: config.payload.max(HEADER),
            ..config.clone()
        },
        receivers,
        window,
        format!("swload/{run_id:x}"),
    ));
    let mut report = MqttReport {
        pattern: Some(config.pattern),
        requested: n + 1,
        server_before: mem(),
        ..MqttReport::default()
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let ramp_start = Instant::now();
    let ramp_deadline = ramp_start + config.ramp_timeout;
    let (subscribers, publishers) = match config.pattern {
        Pattern::FanIn => (1, n),
        Pattern::FanOut => (n, 1),
    };
    let mut sub_tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (shared, gate, phase) = (shared.clone(), gate.clone(), phase_rx.clone());
        sub_tasks.push(tokio::spawn(async move {
            subscriber(&shared, i, &gate, phase).await
        }));
    }
    wait_ready(&shared, subscribers, ramp_deadline).await;
    if config.pattern == Pattern::FanOut {
        // A subscriber that failed its ramp receives nothing: each message
        // goes to those that subscribed (a late one would count as lost).
        let subscribed = shared.ready.load(Ordering::Relaxed).max(1);
        shared.receivers.store(
            u32::try_from(subscribed).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }
    let mut pub_tasks = Vec::with_capacity(publishers);
    for i in 0..publishers {
        let (shared, gate, phase) = (shared.clone(), gate.clone(), phase_rx.clone());
        pub_tasks.push(tokio::spawn(async move {
            publisher(&shared, i, &gate, phase).await
        }));
    }
    wait_ready(&shared, subscribers + publishers, ramp_deadline).await;
    report.ramp = ramp_start.elapsed();
    report.connected = shared.ready.load(Ordering::Relaxed);
    tokio::time::sleep(config.settle).await;
    report.server_idle = mem();

    let start = Instant::now();
    let _ = phase_tx.send(Phase::Publish);
    tokio::time::sleep(config.duration).await;
    // Publishers stop at the end of the duration by themselves (one
    // blocked in a write may take longer); then the deliveries still on
    // their way are waited for.
    let up = shared
        .ready
        .load(Ordering::Relaxed)
        .saturating_sub(subscribers);
    let stop_deadline = Instant::now() + config.drain;
    while shared.finished.load(Ordering::Relaxed) < up && Instant::now() < stop_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let published = shared.published.load(Ordering::Relaxed);
    let expected = published * u64::from(shared.receivers.load(Ordering::Relaxed));
    let drain_deadline = Instant::now() + config.drain;
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report.exchange = start.elapsed();
    let _ = phase_tx.send(Phase::Close);
    for mut t in pub_tasks {
        if tokio::time::timeout(CLOSE, &mut t).await.is_err() {
            t.abort();
        }
    }
    let mut latencies = Vec::new();
    let mut max = 0;
    for mut t in sub_tasks {
        match tokio::time::timeout(CLOSE, &mut t).await {
            Ok(Ok((samples, m))) => {
                latencies.extend(samples);
                max = max.max(m);
            }
            Ok(Err(_)) => {}
            Err(_) => t.abort(),
        }
    }
    report.published = published;
    report.expected = expected;
    report.delivered = shared.delivered.load(Ordering::Relaxed);
    report.lost = expected.saturating_sub(report.delivered);
    report.failed = shared.failed.load(Ordering::Relaxed);
    report.dropped = shared.dropped.load(Ordering::Relaxed);
    report.latency = Percentiles::of(&mut latencies);
    report.latency.max = max;
    report.server_after = mem();
    report
}

/// Waits until `count` connections are ready or failed, or the deadline.
async fn wait_ready(shared: &Shared, count: usize, deadline: Instant) {
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < count
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens a connection during the ramp, at most `connect_concurrency` at once.
async fn ramp_open(shared: &Shared, client_id: &str, gate: &Semaphore) -> Option<(Conn, u16)> {
    let left = shared
        .config
        .ramp_timeout
        .saturating_sub(shared.base.elapsed());
    let opened = tokio::time::timeout(left, async {
        let _permit = gate.acquire().await.ok()?;
        Conn::open(shared, client_id).await.ok()
    })
    .await;
    match opened {
        Ok(Some(c)) => Some(c),
        _ => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One subscriber: subscribes, then receives until the run closes;
/// returns its latency samples and the largest latency.
async fn subscriber(
    shared: &Shared,
    index: usize,
    gate: &Semaphore,
    mut phase: watch::Receiver<Phase>,
) -> (Vec<u64>, u64) {
    let filter = match shared.config.pattern {
        Pattern::FanIn => format!("{}/in/+", shared.topic_prefix),
        Pattern::FanOut => format!("{}/out", shared.topic_prefix),
    };
    let id = format!("{}-s{index}", shared.topic_prefix.replace('/', "-"));
    let Some((mut conn, _)) = ramp_open(shared, &id, gate).await else {
        return (Vec::new(), 0);
    };
    let Ok(filter) = Str::try_from(filter.as_str()) else {
        return (Vec::new(), 0);
    };
    let options = SubscriptionOptions::qos(shared.config.qos);
    let subscribed = async {
        let subscriptions = Subscriptions::new(&[(filter, options)]).map_err(|e| e.to_string())?;
        conn.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Default::default(),
            subscriptions,
        }))
        .await?;
        match conn.next().await? {
            Some(Packet::SubAck(ack)) if ack.codes.first().is_some_and(|c| *c <= 2) => Ok(()),
            other => Err(format!("expected SUBACK, got {other:?}")),
        }
    };
    if subscribed.await.is_err() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return (Vec::new(), 0);
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut seen: u64 = 0;
    let mut max = 0;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ index as u64;
    loop {
        tokio::select! {
            packet = conn.next() => {
                let packet = match packet {
                    Ok(Some(p)) => p,
                    _ => {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let Packet::Publish(publish) = packet else { continue };
                if publish.qos == QoS::AtLeastOnce
                    && conn.queue(&Packet::PubAck(Ack::new(publish.packet_id))).is_err()
                {
                    break;
                }
                let Some(latency) = received(shared, publish.payload()) else { continue };
                max = max.max(latency);
                seen += 1;
                // Reservoir sampling keeps a uniform sample of bounded size.
                if samples.len() < SAMPLES {
                    samples.push(latency);
                } else {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let j = rng % seen;
                    if let Ok(j) = usize::try_from(j) {
                        if j < SAMPLES {
                            samples[j] = latency;
                        }
                    }
                }
                // Acknowledge what one read brought in one write.
                if conn.input.is_empty() && conn.flush().await.is_err() {
                    break;
                }
            }
            _ = async { phase.wait_for(|p| *p == Phase::Close).await.is_ok() } => {
                let _ = conn.send(&Packet::Disconnect(Disconnect::default())).await;
                break;
            }
        }
    }
    (samples, max)
}

/// Counts a delivery and lets its message leave the window once its last
/// receiver has it; returns the latency in µs (`None`: not ours).
fn received(shared: &Shared, payload: &[u8]) -> Option<u64> {
    if payload.len() < HEADER {
        return None;
    }
    let mut p = payload;
    let _publisher = p.get_u32();
    let seq = p.get_u64();
    let sent = p.get_u64();
    let now = u64::try_from(shared.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    if shared.receipts.is_empty() {
        shared.window.add_permits(1);
    } else {
        let slot = &shared.receipts[usize::try_from(seq).unwrap_or(0) % shared.receipts.len()];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == shared.receivers.load(Ordering::Relaxed) {
            slot.store(0, Ordering::Release);
            shared.window.add_permits(1);
        }
    }
    Some(now.saturating_sub(sent) / 1000)
}

/// One publisher: publishes while the run's phase is `Publish` and its
/// duration lasts, a message whenever the window has room.
async fn publisher(
    shared: &Shared,
    index: usize,
    gate: &Semaphore,
    mut phase: watch::Receiver<Phase>,
) {
    let id = format!("{}-p{index}", shared.topic_prefix.replace('/', "-"));
    let topic = match shared.config.pattern {
        Pattern::FanIn => format!("{}/in/{index}", shared.topic_prefix),
        Pattern::FanOut => format!("{}/out", shared.topic_prefix),
    };
    let Some((conn, receive_max)) = ramp_open(shared, &id, gate).await else {
        return;
    };
    let Ok(topic) = Str::try_from(topic.as_str()) else {
        return;
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let Conn {
        mut read,
        write,
        decoder,
        input,
        output,
        version,
    } = conn;
    // PUBLISHes not yet acknowledged (QoS 1), bounded by Receive Maximum.
    let in_flight = Arc::new(Semaphore::new(usize::from(receive_max.max(1))));
    let reader = {
        let in_flight = in_flight.clone();
        let mut conn_in = (decoder, input);
        async move {
            loop {
                match conn_in.0.decode(&mut conn_in.1) {
                    Ok(Some(Packet::PubAck(_))) => in_flight.add_permits(1),
                    Ok(Some(_)) => {}
                    Ok(None) => match read.read_buf(&mut conn_in.1).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    Err(_) => return,
                }
            }
        }
    };
    let reader = tokio::spawn(reader);
    let mut write = write;
    let mut output = output;
    if phase.wait_for(|p| *p != Phase::Ramp).await.is_err() {
        return;
    }
    let end = tokio::time::Instant::now() + shared.config.duration;
    let mut payload = vec![0u8; shared.config.payload];
    let mut packet_id: u16 = 0;
    let mut seq: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = shared.window.acquire() => p,
            _ = tokio::time::sleep_until(end) => break,
        };
        let Ok(permit) = permit else { break };
        permit.forget();
        let mut qos_id = 0;
        if shared.config.qos == QoS::AtLeastOnce {
            let acked = tokio::select! {
                p = in_flight.acquire() => p,
                _ = tokio::time::sleep_until(end) => break,
            };
            let Ok(acked) = acked else { break };
            acked.forget();
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            qos_id = packet_id;
        }
        let sent = u64::try_from(shared.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut header = &mut payload[..HEADER];
        header.put_u32(u32::try_from(index).unwrap_or(u32::MAX));
        header.put_u64(seq);
        header.put_u64(sent);
        seq += 1;
        let publish = Publish::new(&topic, &payload).with_qos(shared.config.qos, qos_id);
        if Packet::Publish(publish)
            .encode(version, &mut output)
            .is_err()
        {
            break;
        }
        if write.write_all(&output).await.is_err() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            break;
        }
        output.clear();
        shared.published.fetch_add(1, Ordering::Relaxed);
    }
    shared.finished.fetch_add(1, Ordering::Relaxed);
    let _ = phase.wait_for(|p| *p == Phase::Close).await;
    output.clear();
    if Packet::Disconnect(Disconnect::default())
        .encode(version, &mut output)
        .is_ok()
    {
        let _ = write.write_all(&output).await;
    }
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's state with its whole window taken, as while publishing.
    fn shared(receivers: u32, window: usize) -> Shared {
        let s = Shared::new(MqttLoadConfig::default(), receivers, window, String::new());
        s.window.forget_permits(window);
        s
    }

    fn payload(seq: u64) -> Vec<u8> {
        let mut p = Vec::new();
        p.put_u32(0);
        p.put_u64(seq);
        p.put_u64(0);
        p
    }

    #[test]
    fn fan_out_message_leaves_the_window_with_its_last_receiver() {
        let s = shared(3, 2);
        for _ in 0..2 {
            assert!(received(&s, &payload(5)).is_some());
            assert_eq!(s.window.available_permits(), 0);
        }
        received(&s, &payload(5));
        assert_eq!(s.window.available_permits(), 1);
        // The slot starts again from zero for the message that reuses it.
        received(&s, &payload(7));
        assert_eq!(s.window.available_permits(), 1);
        assert_eq!(s.delivered.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn fan_in_message_leaves_the_window_when_received() {
        let s = shared(1, 4);
        received(&s, &payload(0));
        received(&s, &payload(1));
        assert_eq!(s.window.available_permits(), 2);
    }

    #[test]
    fn a_payload_without_the_header_is_not_counted() {
        let s = shared(1, 4);
        assert_eq!(received(&s, &[0; HEADER - 1]), None);
        assert_eq!(s.delivered.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn patterns_parse_and_print_alike() {
        for p in [Pattern::FanIn, Pattern::FanOut] {
            assert_eq!(p.to_string().parse::<Pattern>(), Ok(p));
        }
        assert!("fan".parse::<Pattern>().is_err());
    }
}
