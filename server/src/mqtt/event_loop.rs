//! The MQTT event loop: one thread that owns the [`Broker`] and every
//! MQTT-over-TCP socket, driven by a `mio` poll, the way mosquitto runs. A
//! connection costs its socket and the broker's and registry's state: no
//! task, no runtime registration, no outbox shared between threads.
//!
//! Each turn of the loop:
//! 1. waits for readiness, a command or the next deadline (the registry's
//!    timers, a closing socket's end);
//! 2. reads every readable socket once into the loop's one buffer of
//!    [`READ_BUFFER`] bytes, straight into the registry (a socket whose read
//!    filled the buffer is read again next turn, so that one client cannot
//!    hold the loop, and a subscriber's acknowledgements are taken between
//!    a publisher's few kilobytes of PUBLISHes); a publisher paused by flow
//!    control (`flow.rs`) is not read, and is read again the turn it
//!    resumes; accepts new
//!    connections, at most [`ACCEPTS`] a turn; takes the commands waiting
//!    (WebSocket connections, password verdicts, the control API,
//!    shutdown), at most [`COMMANDS`] a turn;
//! 3. drives the broker once: what the turn produced for a connection (its
//!    PUBACKs, the PUBLISHes routed to it) is written with one system call.
//!
//! Accepting is bounded as before: the slot limit (`--max-clients` and some
//! slack) and, once half of the slots are taken, [`SOURCE_PENDING`]
//! connections per address not answered yet, and
//! [`Setup::open`]'s share of the places per address (a quarter by
//! default) for connections open at all, so that idle or stalled sockets
//! from one address cannot take every place; the registry's CONNECT
//! timeout ends the rest. A closing socket writes what waits (for at most
//! [`FINAL_WRITE`]), ends its side and reads until the client ends its own
//! (for at most [`LINGER`]), so that its last packets are not lost to a
//! reset.
//!
//! [`SOURCE_PENDING`]: crate::slots::SOURCE_PENDING

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use sessionwire::mqtt::session::MqttConfig;
use sessionwire::Limits;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::broker::{Broker, Quotas};
use super::channel::{LoopCommand, LoopSender, FINAL_WRITE, LINGER};
use super::retained::RetainedLimits;
use super::tcp::{Sent, TcpConn};
use super::tree::TreeLimits;
use super::trim::Trim;
use crate::channel::{Clients, SessionInfo};
use crate::events::EventLog;
use crate::passwords::PasswordChecks;
use crate::slots::Pending;

/// The loop's own tokens; a connection's token is its number.
const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);

/// The one read buffer: the most bytes one socket hands the registry in
/// one turn. Small, so that reads are fair: a publisher's burst is taken a
/// few dozen PUBLISHes a turn, and what waits in its socket pushes back on
/// it through TCP, while the acknowledgements of the subscribers it feeds
/// are read in between.
pub const READ_BUFFER: usize = 4 * 1024;

/// Readiness events taken per turn.
const EVENTS: usize = 1024;

/// Connections accepted per turn.
pub const ACCEPTS: usize = 256;

/// Commands taken per turn.
pub const COMMANDS: usize = 256;

/// Commands waiting for the loop before their senders wait.
const LOOP_QUEUE: usize = 4096;

/// How long the loop sleeps at most with nothing due: it then looks whether
/// the server is gone (every sender dropped).
const IDLE: Duration = Duration::from_secs(1);

/// How long the listener rests after an accept failed (descriptors run
/// out) before it is tried again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What the loop is given to start.
pub struct Setup {
    /// The MQTT-over-TCP listener (`None`: `--mqtt-listen off`).
    pub listener: Option<TcpListener>,
    /// The limits (the MQTT queue takes the protocol's queue bounds).
    pub limits: Limits,
    /// Places for TCP connections, taken at the accept.
    pub slots: Arc<Semaphore>,
    /// Per-address places for connections not answered yet.
    pub pending: Arc<Pending>,
    /// Per-address places for open connections, held by each socket from
    /// the accept until it is dropped, as its place in `slots` is (counted
    /// once half of `slots` are taken).
    pub open: Arc<Pending>,
    /// The subscription tree's bounds, per principal and in total.
    pub tree: TreeLimits,
    /// The broker's quotas per principal.
    pub quotas: Quotas,
    /// The loop's writer to the event log.
    pub log: EventLog,
    /// The clients of both protocols.
    pub clients: Arc<Clients>,
    /// Connection numbers, shared with the WebSocket connections.
    pub next_conn: Arc<AtomicU64>,
    /// With a users file: the password checks, run on the current runtime.
    pub passwords: Option<Arc<PasswordChecks>>,
    /// The session layer's settings; its limits and queue bounds are
    /// replaced by `limits`'.
    pub mqtt: MqttConfig,
    /// The bounds on retained messages.
    pub retained: RetainedLimits,
}

/// Starts the loop on its own thread; the way into it.
pub fn spawn(setup: Setup) -> io::Result<LoopSender> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel(LOOP_QUEUE);
    let sender = LoopSender::new(tx, waker);
    let limits = setup.limits;
    let mut broker = Broker::new(
        MqttConfig {
            // One queue bound for both protocols (--queue-limit,
            // --queue-bytes).
            max_queued_messages: limits.max_queue_messages(),
            max_queued_bytes: limits.max_queue_bytes(),
            limits: limits.clone(),
            ..setup.mqtt
        },
        setup.tree,
        setup.retained,
    );
    broker.with_quotas(setup.quotas);
    broker.with_io(poll.registry().try_clone()?);
    broker.with_clients(setup.clients);
    if let Some(checks) = setup.passwords {
        broker.with_passwords(
            checks,
            tokio::runtime::Handle::current(),
            sender.downgrade(),
        );
    }
    let mut listener = setup.listener;
    if let Some(l) = listener.as_mut() {
        poll.registry().register(l, LISTENER, Interest::READABLE)?;
    }
    let running = Loop {
        poll,
        broker,
        accepting: listener.is_some(),
        listener,
        slots: setup.slots,
        pending: setup.pending,
        open: setup.open,
        log: setup.log,
        next_conn: setup.next_conn,
        rx,
        more_commands: false,
        buf: vec![0; READ_BUFFER],
        again: Vec::new(),
        accept_retry: None,
        closing: HashMap::new(),
        deadlines: BinaryHeap::new(),
        stop: None,
    };
    std::thread::Builder::new()
        .name("mqtt-loop".into())
        .spawn(move || running.run())?;
    Ok(sender)
}

/// A socket whose connection ended: its last bytes, then its end.
struct Closing {
    tcp: TcpConn,
    /// When it is dropped whatever is left.
    until: Instant,
    /// Our side is ended.
    shut: bool,
}

struct Loop {
    poll: Poll,
    broker: Broker,
    listener: Option<TcpListener>,
    /// The listener may have connections waiting.
    accepting: bool,
    /// When the listener is tried again after a failed accept.
    accept_retry: Option<Instant>,
    slots: Arc<Semaphore>,
    pending: Arc<Pending>,
    /// Per-address places for open connections, each held by its
    /// [`TcpConn`] until the socket is dropped.
    open: Arc<Pending>,
    log: EventLog,
    next_conn: Arc<AtomicU64>,
    rx: mpsc::Receiver<LoopCommand>,
    /// Commands were left for the next turn.
    more_commands: bool,
    buf: Vec<u8>,
    /// Sockets whose last read filled the buffer: read again next turn.
    again: Vec<u64>,
    closing: HashMap<u64, Closing>,
    /// When closing sockets end (an entry whose socket's `until` moved on
    /// is stale).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Shutting down: until when, and who waits.
    stop: Option<(Instant, oneshot::Sender<()>)>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut trim = Trim::new(Instant::now());
        loop {
            let now = Instant::now();
            let busy = !self.again.is_empty() || self.accepting || self.more_commands;
            let timeout = if busy {
                Duration::ZERO
            } else {
                self.next_deadline()
                    .map_or(IDLE, |d| d.saturating_duration_since(now).min(IDLE))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "MQTT event loop: poll failed");
                    break;
                }
            }
            let now = Instant::now();
            if events.is_empty() && !busy {
                let broker = &mut self.broker;
                trim.quiet(now, || broker.shrink());
            } else {
                trim.worked();
            }
            // Each socket is read at most once a turn: one already read
            // from `again` and readable again waits for the next turn.
            let mut read = std::mem::take(&mut self.again);
            read.sort_unstable();
            read.dedup();
            for &conn in &read {
                self.socket(now, conn, true, false);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accepting = true,
                    Token(t) => {
                        let conn = t as u64;
                        let mut readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if readable && read.binary_search(&conn).is_ok() {
                            readable = false;
                            self.again.push(conn);
                        }
                        self.socket(now, conn, readable, event.is_writable());
                    }
                }
            }
            if self.accept_retry.is_some_and(|t| t <= now) {
                self.accept_retry = None;
                self.accepting = self.listener.is_some();
            }
            if self.accepting {
                self.accept(now);
            }
            let open = self.commands(now);
            if self.broker.poll_timeout().is_some_and(|t| t <= now) {
                self.broker.handle_timeout(now);
            }
            self.drive(now);
            self.expire(now);
            if !open {
                break;
            }
            if let Some((until, _)) = &self.stop {
                let done = self.closing.is_empty() && self.broker.connections() == 0;
                if done || now >= *until {
                    break;
                }
            }
        }
        self.log.close();
        if let Some((_, done)) = self.stop {
            let _ = done.send(());
        }
    }

    /// Carries out what the turn did, and hands the loop the sockets whose
    /// connection ended.
    fn drive(&mut self, now: Instant) {
        self.broker.drive(now, &mut self.log);
        for (conn, tcp) in self.broker.take_closing() {
            self.close(now, conn, tcp);
        }
        self.broker.take_resumed(&mut self.again);
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.broker.poll_timeout(),
            self.broker.flow_deadline(),
            self.deadlines.peek().map(|Reverse((t, _))| *t),
            self.accept_retry,
            self.stop.as_ref().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Readiness of a connection's socket, or of a closing one.
    fn socket(&mut self, now: Instant, conn: u64, readable: bool, writable: bool) {
        if self.broker.has(conn) {
            if writable {
                self.broker.writable(now, conn);
            }
            if readable && self.broker.readable(now, conn, &mut self.buf) {
                self.again.push(conn);
            }
        } else if self.closing.contains_key(&conn) {
            self.linger(now, conn);
        }
    }

    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            self.accepting = false;
            return;
        };
        for _ in 0..ACCEPTS {
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accepting = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    self.accepting = false;
                    self.accept_retry = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::debug!(%peer, "too many MQTT connections: dropped");
                continue;
            };
            // Held until the connection is first written to (its CONNACK,
            // or the end of a connection that sent no CONNECT in time).
            let Some(waiting) = self.pending.take(peer.ip()) else {
                tracing::debug!(%peer, "too many MQTT connections without CONNACK from this address: dropped");
                continue;
            };
            // Held by the socket until it is dropped.
            let Some(open) = self.open.take(peer.ip()) else {
                tracing::debug!(%peer, "MQTT source address holds its share of the connection places: dropped");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let tcp = TcpConn::new(stream, slot, waiting, open);
            if !self.broker.open_tcp(now, conn, peer.ip(), tcp) {
                tracing::warn!(%peer, "MQTT connection could not be registered: dropped");
            }
        }
    }

    /// Takes the commands waiting, at most [`COMMANDS`]; false once every
    /// sender is gone (the server is).
    fn commands(&mut self, now: Instant) -> bool {
        for _ in 0..COMMANDS {
            match self.rx.try_recv() {
                Ok(command) => self.command(now, command),
                Err(TryRecvError::Empty) => {
                    self.more_commands = false;
                    return true;
                }
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        self.more_commands = true;
        true
    }

    fn command(&mut self, now: Instant, command: LoopCommand) {
        match command {
            LoopCommand::Conn(c) => self.broker.handle(now, c),
            LoopCommand::Checked { incoming, verdict } => {
                self.broker.checked(now, incoming, verdict);
            }
            LoopCommand::List {
                mut sessions,
                reply,
            } => {
                sessions.extend(self.broker.list().into_iter().map(|m| SessionInfo {
                    protocol: Some("mqtt"),
                    id: m.client_id,
                    version: Some(m.version),
                    principal: None,
                    transport: "mqtt",
                    state: m.state,
                    age_ms: None,
                    queue_depth: None,
                }));
                let _ = reply.send(sessions);
            }
            LoopCommand::Close { client_id, reply } => {
                let found = self.broker.close(now, &client_id);
                // Closed (and logged) before the answer goes.
                self.drive(now);
                let _ = reply.send(found);
            }
            LoopCommand::Shutdown { until, done } => {
                // No more connections: the listener goes.
                self.listener = None;
                self.accepting = false;
                self.broker.shutdown(now, &mut self.log);
                self.stop = Some((until, done));
            }
        }
    }

    /// A socket whose connection ended: written out and ended, or dropped
    /// at once when it was given up on.
    fn close(&mut self, now: Instant, conn: u64, tcp: TcpConn) {
        if tcp.gave_up() {
            return;
        }
        let until = now + FINAL_WRITE;
        self.closing.insert(
            conn,
            Closing {
                tcp,
                until,
                shut: false,
            },
        );
        self.deadlines.push(Reverse((until, conn)));
        self.linger(now, conn);
    }

    /// Writes what waits, then ends our side and discards what the client
    /// still sends until it ends its own.
    fn linger(&mut self, now: Instant, conn: u64) {
        let Some(c) = self.closing.get_mut(&conn) else {
            return;
        };
        if c.tcp.has_unsent() && c.tcp.write_unsent(now) == Sent::Failed {
            self.closing.remove(&conn);
            return;
        }
        if !c.shut && !c.tcp.has_unsent() {
            c.tcp.shutdown_write();
            c.shut = true;
            c.until = now + LINGER;
            self.deadlines.push(Reverse((c.until, conn)));
        }
        match c.tcp.read(&mut self.buf) {
            Ok(0) => {
                self.closing.remove(&conn);
            }
            Ok(n) if n == self.buf.len() => self.again.push(conn),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.closing.remove(&conn);
            }
        }
    }

    /// Drops the closing sockets whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, conn))) = self.deadlines.peek() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            if self.closing.get(&conn).is_some_and(|c| c.until <= now) {
                self.closing.remove(&conn);
            }
        }
    }
}
