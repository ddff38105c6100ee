//! The reference server of the session protocol, as a library: tokio drives
//! the sans-IO session layer ([`sessionwire::session`]). `sessionwire serve`
//! is a thin call into it, and tests may start it in-process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessionwire_server::StartError> {
//! use sessionwire_server::{Server, ServerConfig};
//!
//! let config = ServerConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     ..ServerConfig::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("{}", server.listening_line());
//! sessionwire_server::wait_for_signal().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! - `http`: the main listener, WebSocket upgrades and the HTTP polling
//!   transport on one port (hyper);
//! - `ws`: one task per WebSocket connection (tokio-tungstenite);
//! - [`mqtt`]: MQTT over TCP on one event-loop thread that owns the broker
//!   (subscription tree, retained messages, the codec's MQTT session
//!   registry), and over WebSocket on `/mqtt`;
//! - `hub`: the one task that owns the [`Registry`](sessionwire::session::Registry)
//!   and every session; connections talk to it over bounded channels;
//! - `channel`: what connections and the hub say to each other (commands,
//!   answers, a WebSocket connection's batches);
//! - `control`: the control API on its own listener, behind a bearer token;
//! - `events`: the JSON-lines event log;
//! - `passwords`: the pool that checks passwords, bounded in memory, in
//!   waiting and per source address;
//! - `slots`: per-source-address bounds on connections that have not sent
//!   a request head;
//! - [`users`]: the users file (principal and Argon2 password hash) and
//!   [`users::add_user`], behind `sessionwire add-user`.
//!
//! Shutdown ([`Server::shutdown`]): the listeners stop accepting, every open
//! session is aborted (ABORTED: ABORT, then the socket closes), the event log
//! is flushed, all within [`SHUTDOWN_GRACE`].

#![warn(missing_docs)]

mod channel;
mod control;
mod events;
mod http;
mod hub;
pub mod mqtt;
mod passwords;
mod response;
mod slots;
pub mod users;
mod ws;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use hyper::header::HeaderValue;
use sessionwire::mqtt::session::MqttConfig;
use sessionwire::session::SessionConfig;
use sessionwire::Limits;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::channel::{Clients, Command};
use self::control::ControlToken;
use self::events::EventLog;
use self::hub::Hub;
use self::mqtt::channel::{LoopCommand, LoopSender};
use self::mqtt::retained::RetainedLimits;
use self::mqtt::tree::TreeLimits;
use self::passwords::PasswordChecks;
use self::slots::{Pending, SOURCE_PENDING};
use self::users::Users;

/// How long shutdown may take, from the signal to the exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Capacity of the channel into the hub: connections wait (and stop
/// reading) when it is full.
const HUB_QUEUE: usize = 4096;

/// WebSocket read buffer: eagerly allocated per connection, so small.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Bytes of WebSocket frames a connection buffers before writing them out
/// without waiting for its flush: a batch of answers fed together goes out
/// in one write at the flush (none at all: one write per message).
const WS_WRITE_BUFFER: usize = 8 * 1024;

/// Everything the reference server is configured with: a plain value, built
/// by the command line or by whoever embeds the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address of the WebSocket and HTTP polling listener (port 0: any free
    /// port; [`Server::local_addr`] tells which).
    pub listen: SocketAddr,
    /// Address of the control API listener; it only starts with
    /// [`control_token_file`](Self::control_token_file).
    pub control: SocketAddr,
    /// File holding the control API's bearer token (read once at start).
    pub control_token_file: Option<PathBuf>,
    /// Users file: `principal:argon2-hash` per line (see [`users::add_user`]).
    /// Without it, anyone connects, anonymous or not.
    pub users: Option<PathBuf>,
    /// Event log: one JSON line per session event, appended to this path
    /// (`-`: stdout).
    pub events: Option<String>,
    /// The limits every session enforces.
    pub limits: Limits,
    /// Per-session settings (pings, poll timeouts).
    pub session: SessionConfig,
    /// Address of the MQTT listener (TCP); `None`: no MQTT over TCP (MQTT
    /// over WebSocket, path `/mqtt` on [`listen`](Self::listen), is always
    /// served). `None` by default so that embedders opt in; `sessionwire
    /// serve` listens on 127.0.0.1:1883 unless told `--mqtt-listen off`.
    pub mqtt_listen: Option<SocketAddr>,
    /// HTTP polling: the browser origins (`https://app.example`, see
    /// [`parse_origin`]) whose pages may read the answers, credentials
    /// included. None by default: no CORS headers at all.
    pub allow_origins: Vec<HeaderValue>,
    /// The MQTT session layer's settings (receive maximum, topic aliases,
    /// server keep alive, session expiry, ...), for both MQTT listeners.
    /// Its `limits`, `max_queued_messages` and `max_queued_bytes` are not
    /// read: [`limits`](Self::limits) gives them, for both protocols.
    pub mqtt: MqttConfig,
    /// The MQTT broker's quotas per principal (source address, user name)
    /// beside its global bounds.
    pub mqtt_quotas: MqttQuotas,
    /// The MQTT broker's bounds on retained messages (messages held, their
    /// bytes as the store counts them, levels per topic).
    pub mqtt_retained: RetainedLimits,
}

/// The MQTT broker's quotas: what one source address (IPv6: one /64) or
/// one user name may hold of what the server holds for everyone, so that
/// one actor exhausts only its own share. `None`: the default share, a
/// quarter; `Some(0)`: no share (the global bound alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttQuotas {
    /// Subscriptions over all clients (`--mqtt-max-subscriptions`).
    pub max_subscriptions: usize,
    /// Subscriptions the clients of one source address may hold, and the
    /// same part of the tree's bytes.
    pub max_subscriptions_per_source: Option<usize>,
    /// Subscriptions the clients of one user name may hold, and the same
    /// part of the tree's bytes.
    pub max_subscriptions_per_user: Option<usize>,
    /// Persistent sessions one source address may hold (default: a quarter
    /// of `mqtt.max_sessions`); past it, its own oldest offline session
    /// ends.
    pub max_sessions_per_source: Option<usize>,
    /// MQTT-over-TCP connections one source address may have open once
    /// half of the connection places are taken (default: a quarter of the
    /// places).
    pub max_connections_per_source: Option<usize>,
    /// Without a users file (every client anonymous): the most seconds a
    /// session outlives its connection.
    pub anonymous_session_expiry: u32,
}

impl Default for MqttQuotas {
    /// A million subscriptions; a quarter of each bound per principal;
    /// anonymous sessions kept 300 s.
    fn default() -> MqttQuotas {
        MqttQuotas {
            max_subscriptions: TreeLimits::default().max_subscriptions,
            max_subscriptions_per_source: None,
            max_subscriptions_per_user: None,
            max_sessions_per_source: None,
            max_connections_per_source: None,
            anonymous_session_expiry: mqtt::broker::DEFAULT_ANONYMOUS_SESSION_EXPIRY,
        }
    }
}

/// A quarter of `total` when `share` is `None`.
fn share_of(share: Option<usize>, total: usize) -> usize {
    share.unwrap_or(total / mqtt::tree::DEFAULT_SHARE)
}

impl MqttQuotas {
    /// The subscription tree's bounds.
    fn tree(&self) -> TreeLimits {
        let total = self.max_subscriptions;
        TreeLimits {
            max_subscriptions: total,
            ..TreeLimits::default()
        }
        .with_shares(
            share_of(self.max_subscriptions_per_source, total),
            share_of(self.max_subscriptions_per_user, total),
        )
    }

    /// The broker's quotas, for a registry of `max_sessions`.
    fn broker(&self, max_sessions: usize) -> mqtt::broker::Quotas {
        mqtt::broker::Quotas {
            sessions_per_source: share_of(self.max_sessions_per_source, max_sessions),
            anonymous_session_expiry: Some(self.anonymous_session_expiry),
        }
    }

    /// Open connections per source address once crowded, of `places`
    /// (no share: as many as there are).
    fn connections(&self, places: usize) -> u32 {
        let n = match share_of(self.max_connections_per_source, places) {
            0 => places,
            n => n,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// An allowed origin: a serialized origin, compared byte for byte with the
/// request's `Origin` (`null` is refused: any sandboxed page sends it).
///
/// ```
/// assert!(sessionwire_server::parse_origin("https://app.example/").is_ok());
/// assert!(sessionwire_server::parse_origin("null").is_err());
/// ```
pub fn parse_origin(s: &str) -> Result<HeaderValue, String> {
    let origin = s.trim_end_matches('/');
    let scheme_ok = origin.split_once("://").is_some_and(|(scheme, host)| {
        matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
    });
    if !scheme_ok {
        return Err(format!(
            "{s:?} is not an origin (scheme://host[:port], e.g. https://app.example)"
        ));
    }
    HeaderValue::from_str(origin).map_err(|e| format!("{s:?}: {e}"))
}

impl Default for ServerConfig {
    /// Listens on 127.0.0.1:8080 (control 127.0.0.1:8081, off without a
    /// token file), default limits, pings every 30 s, polls held 25 s and
    /// expected every 15 s.
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            control: SocketAddr::from(([127, 0, 0, 1], 8081)),
            control_token_file: None,
            users: None,
            events: None,
            allow_origins: Vec::new(),
            mqtt_listen: None,
            mqtt: MqttConfig::default(),
            mqtt_quotas: MqttQuotas::default(),
            mqtt_retained: RetainedLimits::default(),
            limits: Limits::default(),
            session: SessionConfig {
                ping_period: Some(Duration::from_secs(30)),
                poll_timeout: Duration::from_secs(25),
                poll_gap: Duration::from_secs(15),
                ..SessionConfig::default()
            },
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// What every connection task shares.
pub(crate) struct Shared {
    /// The way into the hub.
    pub hub: mpsc::Sender<Command>,
    /// The limits sessions enforce.
    pub limits: Limits,
    /// Per-connection WebSocket settings.
    pub ws_config: WebSocketConfig,
    /// `--allow-origin` values.
    pub allow_origins: Vec<HeaderValue>,
    /// Connections waiting for a request head, per source address.
    pub pending: Arc<Pending>,
    /// WebSocket connections: taken before the 101, held until the task
    /// ends.
    pub ws_slots: Arc<Semaphore>,
    /// The way into the MQTT event loop.
    pub mqtt: LoopSender,
    /// Bounds the HTTP connections open at once.
    pub connections: Arc<Semaphore>,
    /// Bytes of HTTP send bodies read and not yet taken by their session
    /// ([`http::read_budget`]): one permit per byte, taken before it is
    /// buffered.
    pub reading: Arc<Semaphore>,
    /// Connection numbers (shared with the MQTT event loop).
    next_conn: Arc<AtomicU64>,
    /// WebSocket connection tasks alive (shutdown waits for them).
    pub ws_tasks: AtomicUsize,
    /// Flips to `true` on shutdown.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    /// A fresh connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running reference server: its listeners accept until [`shutdown`](Self::shutdown).
pub struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    hub: tokio::task::JoinHandle<EventLog>,
    local_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    mqtt_addr: Option<SocketAddr>,
}

impl Server {
    /// Reads the users and token files, opens the event log, binds the
    /// listeners and starts serving on the current tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Server, StartError> {
        start(&config).await.map_err(StartError)
    }

    /// The bound address of the WebSocket and HTTP polling listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the control API, when it runs.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The bound address of the MQTT listener (TCP), when it runs.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The line `sessionwire serve` prints once listening:
    /// `listening ws+http on ADDR control on ADDR mqtt on ADDR` (`control
    /// off` when the control API does not run; the MQTT part only when MQTT
    /// listens over TCP).
    pub fn listening_line(&self) -> String {
        let control = match self.control_addr {
            Some(addr) => format!("on {addr}"),
            None => "off".to_owned(),
        };
        let mut line = format!("listening ws+http on {} control {control}", self.local_addr);
        if let Some(addr) = self.mqtt_addr {
            line.push_str(&format!(" mqtt on {addr}"));
        }
        line
    }
}

async fn start(args: &ServerConfig) -> Result<Server, String> {
    let limits = args.limits.clone();
    let users = match &args.users {
        Some(path) => {
            let users = Users::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if users.is_empty() {
                tracing::warn!(file = %path.display(), "the users file has no user: nobody can connect");
            } else {
                tracing::info!(users = users.len(), "users loaded");
            }
            Some(Arc::new(users))
        }
        None => None,
    };
    let control_token = match &args.control_token_file {
        Some(path) => {
            Some(ControlToken::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let passwords = match &users {
        Some(u) => Some(
            PasswordChecks::start(Arc::clone(u))
                .map_err(|e| format!("cannot start the password checks: {e}"))?,
        ),
        None => None,
    };
    let events = EventLog::open(args.events.as_deref()).map_err(|e| format!("--events: {e}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let listen_addr = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let control = match control_token {
        Some(token) => {
            let l = TcpListener::bind(args.control)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.control))?;
            let addr = l
                .local_addr()
                .map_err(|e| format!("control address: {e}"))?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the control API listens beyond loopback: plain HTTP, keep the link trusted");
            }
            Some((l, addr, token))
        }
        None => None,
    };

    let mqtt = match args.mqtt_listen {
        Some(addr) => {
            let l = mio::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen for MQTT on {addr}: {e}"))?;
            let bound = l.local_addr().map_err(|e| format!("MQTT address: {e}"))?;
            Some((l, bound))
        }
        None => None,
    };

    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_message = limits.max_message_size();
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(max_message.saturating_mul(4).max(64 * 1024))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let http_connections = limits.max_clients().saturating_mul(2).saturating_add(64);
    let connections = Arc::new(Semaphore::new(http_connections));
    let mqtt_places = limits.max_clients().saturating_add(ws::WS_SLACK);
    let mqtt_slots = Arc::new(Semaphore::new(mqtt_places));
    let next_conn = Arc::new(AtomicU64::new(1));
    let clients = Arc::new(Clients::default());
    let passwords = passwords.map(Arc::new);
    let mqtt_addr = mqtt.as_ref().map(|(_, addr)| *addr);
    let mqtt_loop = mqtt::event_loop::spawn(mqtt::event_loop::Setup {
        listener: mqtt.map(|(l, _)| l),
        limits: limits.clone(),
        slots: Arc::clone(&mqtt_slots),
        pending: Pending::new(SOURCE_PENDING, Arc::clone(&mqtt_slots), mqtt_places),
        open: Pending::new(
            args.mqtt_quotas.connections(mqtt_places),
            mqtt_slots,
            mqtt_places,
        ),
        tree: args.mqtt_quotas.tree(),
        quotas: args.mqtt_quotas.broker(args.mqtt.max_sessions),
        log: events.share().map_err(|e| format!("--events: {e}"))?,
        clients: Arc::clone(&clients),
        next_conn: Arc::clone(&next_conn),
        passwords: passwords.clone(),
        mqtt: args.mqtt.clone(),
        retained: args.mqtt_retained,
    })
    .map_err(|e| format!("cannot start the MQTT event loop: {e}"))?;
    let shared = Arc::new(Shared {
        hub: hub_tx,
        limits: limits.clone(),
        ws_config,
        allow_origins: args.allow_origins.clone(),
        pending: Pending::new(SOURCE_PENDING, Arc::clone(&connections), http_connections),
        ws_slots: Arc::new(Semaphore::new(
            limits.max_clients().saturating_add(ws::WS_SLACK),
        )),
        mqtt: mqtt_loop.clone(),
        connections,
        reading: Arc::new(Semaphore::new(http::read_budget(&limits))),
        next_conn,
        ws_tasks: AtomicUsize::new(0),
        stop: stop_rx.clone(),
    });
    let mut hub = Hub::new(limits, args.session.clone(), events).with_mqtt(mqtt_loop, clients);
    if let Some(checks) = passwords {
        hub = hub.with_passwords(checks, &shared.hub);
    }
    let hub = tokio::spawn(hub.run(hub_rx));
    tokio::spawn(http::accept_loop(listener, Arc::clone(&shared)));

    let control_addr = match control {
        Some((l, addr, token)) => {
            tokio::spawn(control::accept_loop(
                l,
                Arc::new(token),
                shared.hub.clone(),
                stop_rx,
            ));
            Some(addr)
        }
        None => None,
    };
    let server = Server {
        shared,
        stop: stop_tx,
        hub,
        local_addr: listen_addr,
        control_addr,
        mqtt_addr,
    };
    let control_shown = match control_addr {
        Some(addr) => format!("on {addr}"),
        None => "off".to_owned(),
    };
    let mqtt_shown = mqtt_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(%listen_addr, control = %control_shown, mqtt = %mqtt_shown, "listening");
    Ok(server)
}

impl Server {
    /// Stops the server within [`SHUTDOWN_GRACE`]: the listeners stop
    /// accepting, every open session is aborted (ABORTED: ABORT, then the
    /// socket closes) and the event log is flushed.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let _ = self.stop.send(true);
        // The MQTT loop closes its clients (5.0: DISCONNECT 0x8B) and ends
        // once their last writes are done, beside the hub's aborts.
        let (loop_done, loop_stopped) = oneshot::channel();
        let until = std::time::Instant::now() + SHUTDOWN_GRACE;
        let stop_loop = LoopCommand::Shutdown {
            until,
            done: loop_done,
        };
        let _ = tokio::time::timeout_at(deadline, self.shared.mqtt.send(stop_loop)).await;
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .shared
            .hub
            .send(Command::Shutdown { done: done_tx })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout_at(deadline, done_rx).await;
        }
        // The loop's event log is flushed before the hub's is closed.
        let _ = tokio::time::timeout_at(deadline, loop_stopped).await;
        // Give the WebSocket tasks the time to write their ABORT or
        // DISCONNECT.
        while self.shared.ws_tasks.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match tokio::time::timeout_at(deadline, self.hub).await {
            Ok(Ok(events)) => {
                // Flushing may block on a slow file: off the runtime.
                let _ = tokio::time::timeout_at(
                    deadline + Duration::from_millis(500),
                    tokio::task::spawn_blocking(move || events.close()),
                )
                .await;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "hub task failed"),
            Err(_) => tracing::warn!("hub did not stop in time"),
        }
        tracing::info!("stopped");
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C where there are no signals).
pub async fn wait_for_signal() {
    listen_for_signals().await;
}

/// Takes SIGINT and SIGTERM over now (from the call, not from the first
/// poll) and resolves when one comes: call it before telling the world the
/// server is up, so that a signal sent at once stops the server cleanly
/// rather than killing the process. Must be called within a tokio runtime.
pub fn listen_for_signals() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_allow_origin_takes_serialized_origins_only() {
        assert_eq!(
            parse_origin("https://app.example/").unwrap(),
            "https://app.example"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000"
        );
        for bad in [
            "null",
            "*",
            "app.example",
            "https://",
            "https://a/path",
            "ftp://a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
