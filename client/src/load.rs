//! The load generator behind `sessionwire load`: opens many WebSocket sessions to a server on loopback,
//! holds them, exchanges pings, and reports what it saw.
//!
//! Phases: ramp (connect every session, a bounded number at a time, each
//! answering SYSTEM_PING from then on), settle (all idle; the server's
//! resident memory is read), exchange (each session sends a USER_PING every
//! interval, spread evenly over the interval, and times the answer), drain
//! (wait for the last answers) and, once every session has drained, close
//! (CLOSE_REQUEST, as the real client does). It stops by itself: every phase
//! is bounded in time.
//!
//! A message is *lost* when a USER_PING is never answered, is answered out of
//! order, or a session's connection ends before the run does.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionwire::message::service::SYSTEM_PING;
use sessionwire::session::ResponseCode;
use sessionwire::Message;
use tokio::sync::{watch, Semaphore};

use crate::{ping_response, user_ping, ConnectOptions, Inbound, WsClient};

/// What a load run does: where it connects, how many sessions it holds and
/// for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// WebSocket address of the server (loopback).
    pub addr: SocketAddr,
    /// Sessions to open and hold.
    pub sessions: usize,
    /// Connections opened at once during the ramp.
    pub connect_concurrency: usize,
    /// Each session sends a USER_PING this often during the exchange, in ms.
    pub ping_interval: u64,
    /// How long the exchange lasts, in seconds.
    pub duration: u64,
    /// How long all sessions stay idle after the ramp before the server's
    /// idle memory is read, in seconds.
    pub settle: u64,
    /// Longest ramp, in seconds: sessions not connected by then count as
    /// failed.
    pub ramp_timeout: u64,
    /// The server's process id: its memory is read from /proc/PID/status.
    pub server_pid: Option<u32>,
}

impl Default for LoadConfig {
    /// 1000 sessions to 127.0.0.1:8080, 64 connecting at once, a ping a second
    /// for 10 s after 2 s of idling, a ramp of at most 120 s.
    fn default() -> LoadConfig {
        LoadConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sessions: 1000,
            connect_concurrency: 64,
            ping_interval: 1000,
            duration: 10,
            settle: 2,
            ramp_timeout: 120,
            server_pid: None,
        }
    }
}

/// A process's memory as /proc/PID/status reports it, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the resident peak so far.
    pub hwm_kib: u64,
    /// RssAnon: the resident part that is anonymous memory (heap, stacks,
    /// buffers), without the file-backed pages of the executable and its
    /// libraries; `None` on kernels that do not report it (before 4.5).
    pub anon_kib: Option<u64>,
}

impl ProcessMemory {
    /// Reads `/proc/<pid>/status`; `None` when the process or the fields
    /// are not there (not Linux, or the process ended).
    pub fn of(pid: u32) -> Option<ProcessMemory> {
        Self::read(&Path::new("/proc").join(pid.to_string()).join("status"))
    }

    fn read(path: &Path) -> Option<ProcessMemory> {
        let text = std::fs::read_to_string(path).ok()?;
        Self::parse(&text)
    }

    /// Parses the text of a /proc status file.
    pub fn parse(status: &str) -> Option<ProcessMemory> {
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(ProcessMemory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:"),
        })
    }

    /// The memory as a JSON object (KiB).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"rss_kib": self.rss_kib, "hwm_kib": self.hwm_kib, "anon_kib": self.anon_kib})
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (sorted here).
    pub fn of(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| -> u64 {
            if n == 0 {
                return 0;
            }
            let r = ((p / 100.0) * n as f64).ceil() as usize;
            samples[r.clamp(1, n) - 1]
        };
        Percentiles {
            count: n,
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            p999: rank(99.9),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

impl Percentiles {
    /// The percentiles as a JSON object (`latency_us` in the reports).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
        })
    }
}

/// `count` over `elapsed`, per second (0 for no time).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Growth of a process's resident memory from `before` to `kib`, in bytes,
/// per one of `n` things (sessions, connections) held.
pub fn bytes_per(before: Option<ProcessMemory>, kib: Option<u64>, n: usize) -> Option<u64> {
    growth_per(before.map(|m| m.rss_kib), kib, n)
}

/// Growth from `before` KiB to `after` KiB, in bytes, per one of `n`.
pub fn growth_per(before: Option<u64>, after: Option<u64>, n: usize) -> Option<u64> {
    let n = u64::try_from(n.max(1)).ok()?;
    Some(after?.saturating_sub(before?) * 1024 / n)
}

/// What a load run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions the server connected (response 100).
    pub connected: usize,
    /// Sessions still connected when the exchange ended.
    pub held: usize,
    /// Connection attempts the server answered with another code.
    pub refused: usize,
    /// Connection attempts that failed (socket, upgrade, timeout).
    pub failed: usize,
    /// Sessions whose connection ended before the run did.
    pub dropped: usize,
    /// Sessions the server closed cleanly after their CLOSE_REQUEST.
    pub closed_cleanly: usize,
    /// How long the ramp took.
    pub ramp: Duration,
    /// How long the exchange took.
    pub exchange: Duration,
    /// Protocol messages sent and received during the exchange (all
    /// sessions, both directions, pings included).
    pub messages: u64,
    /// USER_PINGs sent during the exchange.
    pub user_pings: u64,
    /// USER_PING round trips, in microseconds.
    pub latency: Percentiles,
    /// Messages lost (must be 0).
    pub lost: u64,
    /// The server's memory before the ramp.
    pub server_before: Option<ProcessMemory>,
    /// The server's memory with every session held and idle.
    pub server_idle: Option<ProcessMemory>,
    /// The server's memory at the end (its VmHWM is the run's peak).
    pub server_after: Option<ProcessMemory>,
}

impl Report {
    /// Messages per second during the exchange.
    pub fn messages_per_second(&self) -> f64 {
        per_second(self.messages, self.exchange)
    }

    /// The server's resident memory per held idle session, in bytes: growth
    /// of VmRSS from before the ramp to the idle point, over the sessions held.
    pub fn idle_bytes_per_session(&self) -> Option<u64> {
        bytes_per(
            self.server_before,
            self.server_idle.map(|m| m.rss_kib),
            self.connected,
        )
    }

    /// The server's peak memory per session, in bytes: VmHWM at the end, less
    /// VmRSS before the ramp, over the sessions connected.
    pub fn peak_bytes_per_session(&self) -> Option<u64> {
        bytes_per(
            self.server_before,
            self.server_after.map(|m| m.hwm_kib),
            self.connected,
        )
    }

    /// Whether the run met its bar: every session held, nothing lost.
    pub fn is_clean(&self) -> bool {
        self.held == self.requested && self.lost == 0
    }

    /// The report as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mem = |m: Option<ProcessMemory>| m.map(|m| m.to_json());
        serde_json::json!({
            "requested": self.requested,
            "connected": self.connected,
            "held": self.held,
            "refused": self.refused,
            "failed": self.failed,
            "dropped": self.dropped,
            "closed_cleanly": self.closed_cleanly,
            "ramp_s": self.ramp.as_secs_f64(),
            "exchange_s": self.exchange.as_secs_f64(),
            "messages": self.messages,
            "messages_per_s": self.messages_per_second(),
            "user_pings": self.user_pings,
            "latency_us": self.latency.to_json(),
            "lost": self.lost,
            "server_before": mem(self.server_before),
            "server_idle": mem(self.server_idle),
            "server_after": mem(self.server_after),
            "idle_bytes_per_session": self.idle_bytes_per_session(),
            "peak_bytes_per_session": self.peak_bytes_per_session(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "sessions: requested {}, connected {}, held {}, refused {}, failed {}, dropped {}, closed cleanly {}",
            self.requested, self.connected, self.held, self.refused, self.failed, self.dropped, self.closed_cleanly
        )?;
        let ramp = self.ramp.as_secs_f64();
        writeln!(
            f,
            "ramp: {ramp:.2} s ({:.0} sessions/s)",
            if ramp > 0.0 {
                self.connected as f64 / ramp
            } else {
                0.0
            }
        )?;
        writeln!(
            f,
            "exchange: {:.2} s, {} messages ({:.0} msgs/s), {} user pings",
            self.exchange.as_secs_f64(),
            self.messages,
            self.messages_per_second(),
            self.user_pings
        )?;
        writeln!(
            f,
            "latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
            ms(self.latency.p50),
            ms(self.latency.p90),
            ms(self.latency.p99),
            ms(self.latency.p999),
            ms(self.latency.max),
            self.latency.count
        )?;
        writeln!(f, "lost messages: {}", self.lost)?;
        match (self.server_before, self.server_idle, self.server_after) {
            (Some(b), Some(i), Some(a)) => write!(
                f,
                "server memory: before {} KiB, idle {} KiB ({} B/session), peak {} KiB ({} B/session)",
                b.rss_kib,
                i.rss_kib,
                self.idle_bytes_per_session().unwrap_or(0),
                a.hwm_kib,
                self.peak_bytes_per_session().unwrap_or(0)
            ),
            _ => write!(f, "server memory: not read (no --server-pid)"),
        }
    }
}

/// Why a load run could not run.
#[derive(Debug)]
pub enum LoadError {
    /// The async runtime could not start.
    Runtime(std::io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Runtime(e) => write!(f, "starting the runtime: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ramp,
    /// Pings start at this instant (plus each session's offset): a moment
    /// after the phase change, so that waking every session is not timed.
    Exchange(tokio::time::Instant),
    /// No more pings: wait for the last answers.
    Stop,
    /// Every session has its answers: close (not before, so that no
    /// answer waits behind other sessions' closes).
    Close,
}

/// How long a session waits for the answers to its last pings.
const DRAIN: Duration = Duration::from_secs(5);

/// Counts a session in once, whichever way it ends.
pub(crate) struct Arrival(pub(crate) Option<Arc<AtomicUsize>>);

impl Arrival {
    pub(crate) fn arrive(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.arrive();
    }
}

/// How long after the exchange phase starts the first pings go out.
const EXCHANGE_WARM_UP: Duration = Duration::from_millis(500);

#[derive(Default)]
struct SessionStats {
    connected: bool,
    refused: bool,
    failed: bool,
    held: bool,
    dropped: bool,
    closed_cleanly: bool,
    messages: u64,
    user_pings: u64,
    lost: u64,
    latencies: Vec<u64>,
}

/// Raises the open-file limit so that `sessions` sockets fit (as root the
/// hard limit too); returns the soft limit now in force.
pub fn raise_fd_limit(sessions: usize) -> std::io::Result<u64> {
    let want = (sessions as u64).saturating_mul(2).saturating_add(256);
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    if hard < want {
        // Only a privileged process may raise the hard limit; otherwise the
        // soft limit goes as far as the hard one allows.
        let _ = rlimit::Resource::NOFILE.set(want, want);
    }
    rlimit::increase_nofile_limit(want)
}

/// Runs the load on a new multi-threaded runtime.
pub fn run_blocking(args: &LoadConfig) -> Result<Report, LoadError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    Ok(rt.block_on(run(args)))
}

/// Runs the load (see the [module documentation](self)).
pub async fn run(args: &LoadConfig) -> Report {
    let _ = raise_fd_limit(args.sessions);
    let mem = || args.server_pid.and_then(ProcessMemory::of);
    let mut report = Report {
        requested: args.sessions,
        server_before: mem(),
        ..Report::default()
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let settled = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let ramp_start = Instant::now();
    let ramp_deadline = ramp_start + Duration::from_secs(args.ramp_timeout);
    let interval = Duration::from_millis(args.ping_interval.max(1));
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        // Spread the pings evenly over one interval.
        let offset = interval.mul_f64(i as f64 / args.sessions.max(1) as f64);
        let plan = Plan {
            addr: args.addr,
            gate: gate.clone(),
            settled: settled.clone(),
            ramp_deadline,
            interval,
            offset,
        };
        tasks.push(tokio::spawn(session(
            plan,
            Arrival(Some(drained.clone())),
            phase_rx.clone(),
        )));
    }
    while settled.load(Ordering::Relaxed) < args.sessions && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.ramp = ramp_start.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    report.server_idle = mem();
    let epoch = tokio::time::Instant::now() + EXCHANGE_WARM_UP;
    let _ = phase_tx.send(Phase::Exchange(epoch));
    tokio::time::sleep_until(epoch + Duration::from_secs(args.duration)).await;
    let _ = phase_tx.send(Phase::Stop);
    report.exchange = epoch.elapsed();
    let drain_deadline = Instant::now() + DRAIN + Duration::from_secs(2);
    while drained.load(Ordering::Relaxed) < args.sessions && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = phase_tx.send(Phase::Close);
    let mut latencies = Vec::new();
    for t in tasks {
        let Ok(s) = t.await else {
            report.failed += 1;
            continue;
        };
        report.connected += usize::from(s.connected);
        report.refused += usize::from(s.refused);
        report.failed += usize::from(s.failed);
        report.held += usize::from(s.held);
        report.dropped += usize::from(s.dropped);
        report.closed_cleanly += usize::from(s.closed_cleanly);
        report.messages += s.messages;
        report.user_pings += s.user_pings;
        report.lost += s.lost;
        latencies.extend(s.latencies);
    }
    report.latency = Percentiles::of(&mut latencies);
    report.server_after = mem();
    report
}

/// What one session is told to do.
struct Plan {
    addr: SocketAddr,
    /// Bounds the connections opened at once.
    gate: Arc<Semaphore>,
    /// Counts the sessions done connecting (either way).
    settled: Arc<AtomicUsize>,
    ramp_deadline: Instant,
    interval: Duration,
    /// When, within an interval, this session pings.
    offset: Duration,
}

/// One session through every phase.
async fn session(
    plan: Plan,
    mut drained: Arrival,
    mut phase: watch::Receiver<Phase>,
) -> SessionStats {
    let Plan {
        addr,
        gate,
        settled,
        ramp_deadline,
        interval,
        offset,
    } = plan;
    let mut stats = SessionStats::default();
    let options = ConnectOptions {
        read_buffer: 4096,
        ..ConnectOptions::default()
    };
    let connected = {
        let _permit = gate.acquire().await;
        let deadline = tokio::time::Instant::from_std(ramp_deadline);
        tokio::time::timeout_at(deadline, WsClient::connect(addr, &options)).await
    };
    settled.fetch_add(1, Ordering::Relaxed);
    let mut client = match connected {
        Ok(Ok(c)) if c.response().code == ResponseCode::Connected => c,
        Ok(Ok(_)) => {
            stats.refused = true;
            return stats;
        }
        _ => {
            stats.failed = true;
            return stats;
        }
    };
    stats.connected = true;

    // Ramp and settle: idle, answering SYSTEM_PING.
    while *phase.borrow() == Phase::Ramp {
        tokio::select! {
            inbound = client.read() => {
                if !answer(&mut client, inbound, &mut None).await {
                    stats.dropped = true;
                    return stats;
                }
            }
            _ = phase.changed() => {}
        }
    }

    // Exchange: a USER_PING every interval.
    let Phase::Exchange(epoch) = *phase.borrow() else {
        return stats;
    };
    let mut outstanding = std::collections::VecDeque::new();
    let mut counted = Counted {
        messages: 0,
        outstanding: &mut outstanding,
        latencies: &mut stats.latencies,
        lost: 0,
    };
    let mut ticker = tokio::time::interval_at(epoch + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alive = true;
    while alive && matches!(*phase.borrow(), Phase::Exchange(_)) {
        tokio::select! {
            inbound = client.read() => {
                alive = answer(&mut client, inbound, &mut Some(&mut counted)).await;
            }
            _ = ticker.tick() => {
                let conversation = client.next_conversation();
                let at = Instant::now();
                if client.send(&user_ping(conversation)).await.is_err() {
                    alive = false;
                } else {
                    counted.messages += 1;
                    counted.outstanding.push_back((conversation, at));
                    stats.user_pings += 1;
                }
            }
            _ = phase.changed() => {}
        }
    }
    // Drain: the answers to the last pings.
    let drain_until = tokio::time::Instant::now() + DRAIN;
    while alive && !counted.outstanding.is_empty() {
        match tokio::time::timeout_at(drain_until, client.read()).await {
            Ok(inbound) => alive = answer(&mut client, inbound, &mut Some(&mut counted)).await,
            Err(_) => break,
        }
    }
    stats.messages = counted.messages;
    stats.lost = counted.lost + counted.outstanding.len() as u64;
    if !alive {
        stats.dropped = true;
        return stats;
    }
    drained.arrive();
    // Idle (answering SYSTEM_PING) until every session has drained.
    while *phase.borrow() != Phase::Close {
        tokio::select! {
            inbound = client.read() => {
                if !answer(&mut client, inbound, &mut None).await {
                    stats.dropped = true;
                    return stats;
                }
            }
            changed = phase.changed() => if changed.is_err() { break },
        }
    }
    stats.held = true;
    // Close as the real client does; the server should close the socket.
    if let Ok(seen) = client.close().await {
        stats.closed_cleanly = seen.last().is_some_and(Inbound::is_end);
    }
    stats
}

struct Counted<'a> {
    messages: u64,
    outstanding: &'a mut std::collections::VecDeque<(u64, Instant)>,
    latencies: &'a mut Vec<u64>,
    lost: u64,
}

/// Handles one inbound item: answers SYSTEM_PING, matches USER_PING
/// answers. Returns false when the connection is over.
async fn answer(
    client: &mut WsClient,
    inbound: Inbound,
    counted: &mut Option<&mut Counted<'_>>,
) -> bool {
    match inbound {
        Inbound::Message(Message::ServiceRequest(req)) if req.service == SYSTEM_PING => {
            let ok = client.send(&ping_response(&req)).await.is_ok();
            if let Some(c) = counted {
                c.messages += 2;
            }
            ok
        }
        Inbound::Message(Message::ServiceResponse(resp)) => {
            if let Some(c) = counted {
                c.messages += 1;
                match c.outstanding.front() {
                    Some(&(conv, at)) if conv == resp.conversation => {
                        c.outstanding.pop_front();
                        c.latencies.push(at.elapsed().as_micros() as u64);
                    }
                    // An answer to nothing sent, or out of order.
                    _ => c.lost += 1,
                }
            }
            true
        }
        i if i.is_end() => false,
        _ => {
            if let Some(c) = counted {
                c.messages += 1;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_parse() {
        let text =
            "Name:\tsessionwire\nVmPeak:\t  9999 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(
            ProcessMemory::parse(text),
            Some(ProcessMemory {
                rss_kib: 4096,
                hwm_kib: 5120,
                anon_kib: None,
            })
        );
        let text = format!("{text}RssAnon:\t    1024 kB\nRssFile:\t    3072 kB\n");
        assert_eq!(
            ProcessMemory::parse(&text).and_then(|m| m.anon_kib),
            Some(1024)
        );
        assert_eq!(ProcessMemory::parse("Name:\tx\n"), None);
        let own = ProcessMemory::of(std::process::id()).expect("this process's status");
        assert!(own.anon_kib.is_some_and(|a| a > 0 && a <= own.rss_kib));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        let mut one = [7];
        assert_eq!(Percentiles::of(&mut one).p999, 7);
    }
}
