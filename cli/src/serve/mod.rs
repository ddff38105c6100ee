//! `sessionwire serve`: the reference server. Tokio drives the sans-IO
//! session layer ([`sessionwire::session`]).
//!
//! - [`http`]: the main listener, WebSocket upgrades and the HTTP polling
//!   transport on one port (hyper);
//! - [`ws`]: one task per WebSocket connection (tokio-tungstenite);
//! - [`hub`]: the one task that owns the [`Registry`](sessionwire::session::Registry)
//!   and every session; connections talk to it over bounded channels;
//! - [`control`]: the control API on its own listener, behind a bearer token;
//! - [`events`]: the JSON-lines event log;
//! - [`passwords`]: the pool that checks passwords, bounded in memory, in
//!   waiting and per source address;
//! - [`slots`]: per-source-address bounds on connections that have not sent
//!   a request head;
//! - [`users`]: the users file (principal and Argon2 password hash) and
//!   `sessionwire add-user`.
//!
//! Shutdown (SIGINT or SIGTERM): the listeners stop accepting, every open
//! session is aborted (ABORTED: ABORT, then the socket closes), the event log
//! is flushed and the process exits 0, all within [`SHUTDOWN_GRACE`].

pub mod control;
pub mod events;
pub mod http;
pub mod hub;
pub mod passwords;
pub mod slots;
pub mod users;
pub mod ws;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hyper::header::HeaderValue;
use sessionwire::session::handshake::{
    ConnectionRequest, ConnectionResponse, Credentials, ResponseCode,
};
use sessionwire::session::SessionConfig;
use sessionwire::{Limits, Violation};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::control::ControlToken;
use self::events::EventLog;
use self::hub::{Command, Hub};
use self::passwords::{PasswordChecks, Verdict};
use self::slots::{Pending, SOURCE_PENDING};
use self::users::Users;

/// How long shutdown may take, from the signal to the exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Capacity of the channel into the hub: connections wait (and stop
/// reading) when it is full.
const HUB_QUEUE: usize = 4096;

/// WebSocket read buffer: eagerly allocated per connection, so small.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Arguments of `sessionwire serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the WebSocket and HTTP polling listener (port 0: any free
    /// port; the bound address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the control API listener; it only starts with
    /// --control-token-file.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub control: SocketAddr,
    /// File holding the control API's bearer token (read once at start).
    #[arg(long, value_name = "FILE")]
    pub control_token_file: Option<PathBuf>,
    /// Users file: `principal:argon2-hash` per line (see `sessionwire
    /// add-user`). Without it, anyone connects, anonymous or not.
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Event log: one JSON line per session event, appended to PATH (`-`:
    /// stdout).
    #[arg(long, value_name = "PATH")]
    pub events: Option<String>,
    /// SYSTEM_PING period in ms (0: no pings, no idle checking).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub ping_period: u64,
    /// Largest message accepted from a client, type byte included.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,
    /// Largest decoded HTTP polling batch accepted.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT_MAX_BATCH_SIZE)]
    pub max_batch_size: usize,
    /// Most messages queued for one client (then MESSAGE_QUEUE_LIMIT_REACHED).
    #[arg(long, value_name = "MESSAGES", default_value_t = Limits::DEFAULT_MAX_QUEUE_MESSAGES)]
    pub queue_limit: usize,
    /// Most bytes queued for one client (then MESSAGE_QUEUE_LIMIT_REACHED).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT_MAX_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// Most sessions held at once (then 113).
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// HTTP polling: how far ahead of the next send an out-of-order send may be.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_REORDER_WINDOW)]
    pub reorder_window: u32,
    /// HTTP polling: how long a gap in send numbers may stay open, in ms.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub reorder_wait: u64,
    /// Sent messages kept per session to resend after a reconnection.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_RECOVERY_BUFFER)]
    pub recovery_buffer: usize,
    /// HTTP polling: how long an empty poll is held open, in ms.
    #[arg(long, value_name = "MS", default_value_t = 25_000)]
    pub poll_timeout: u64,
    /// HTTP polling: how long a client may go without an open poll, in ms.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub poll_gap: u64,
    /// HTTP polling: a browser origin (`https://app.example`) whose pages
    /// may read the answers, credentials included (repeatable). None by
    /// default: no CORS headers at all.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allow_origins: Vec<HeaderValue>,
}

/// An `--allow-origin` value: a serialized origin, compared byte for byte
/// with the request's `Origin` (`null` is refused: any sandboxed page sends
/// it).
fn parse_origin(s: &str) -> Result<HeaderValue, String> {
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

impl ServeArgs {
    fn limits(&self) -> Result<Limits, String> {
        Limits::builder()
            .max_message_size(self.max_message_size)
            .max_batch_size(self.max_batch_size)
            .max_queue_messages(self.queue_limit)
            .max_queue_bytes(self.queue_bytes)
            .max_clients(self.max_clients)
            .reorder_window(self.reorder_window)
            .reorder_wait(Duration::from_millis(self.reorder_wait))
            .recovery_buffer(self.recovery_buffer)
            .build()
            .map_err(|e| format!("invalid limits: {e}"))
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            ping_period: (self.ping_period > 0).then(|| Duration::from_millis(self.ping_period)),
            poll_timeout: Duration::from_millis(self.poll_timeout),
            poll_gap: Duration::from_millis(self.poll_gap),
            ..SessionConfig::default()
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    /// The way into the hub.
    pub hub: mpsc::Sender<Command>,
    /// The limits sessions enforce.
    pub limits: Limits,
    /// Per-connection WebSocket settings.
    pub ws_config: WebSocketConfig,
    /// The users file, when one was given.
    pub users: Option<Arc<Users>>,
    /// The password checking pool (with a users file).
    pub passwords: Option<PasswordChecks>,
    /// `--allow-origin` values.
    pub allow_origins: Vec<HeaderValue>,
    /// Connections waiting for a request head, per source address.
    pub pending: Arc<Pending>,
    /// WebSocket connections: taken before the 101, held until the task
    /// ends.
    pub ws_slots: Arc<Semaphore>,
    /// Bounds the HTTP connections open at once.
    pub connections: Arc<Semaphore>,
    /// Connection numbers.
    next_conn: AtomicU64,
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

    /// Decides the credentials of a new session before it reaches the hub
    /// (Argon2 is slow: it runs in the bounded pool of [`passwords`]).
    /// `Err(Busy)`: not checked (the pool is saturated or `peer` is over
    /// its limits); the attempt is refused with 113 without reaching the hub.
    pub async fn authenticate(
        &self,
        request: &Result<ConnectionRequest, Violation>,
        peer: IpAddr,
    ) -> Result<bool, Busy> {
        let (principal, password) = match credentials_check(self.users.as_ref(), request) {
            Check::Allow => return Ok(true),
            Check::Deny => return Ok(false),
            Check::Verify {
                principal,
                password,
            } => (principal, password),
        };
        let Some(passwords) = &self.passwords else {
            return Ok(false);
        };
        match passwords.check(peer, principal, password).await {
            Verdict::Accepted => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Busy => Err(Busy),
        }
    }
}

/// A connection attempt refused without a password check (113).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Busy {
    /// The connection response telling the client the server is busy.
    pub fn response(self) -> bytes::Bytes {
        ConnectionResponse::rejection(ResponseCode::ClientLimit).to_bytes()
    }
}

/// What a connection request's credentials need.
#[derive(Debug)]
enum Check {
    /// Nothing to check.
    Allow,
    /// Refused without a check.
    Deny,
    /// A password to verify against the users file.
    Verify {
        principal: String,
        password: Vec<u8>,
    },
}

/// Without a users file anyone connects; with one, a new session needs a
/// listed principal and its password (anonymous ones are refused).
/// Reconnections (the session token is their credential) and faulty
/// requests pass: the registry decides those.
fn credentials_check(
    users: Option<&Arc<Users>>,
    request: &Result<ConnectionRequest, Violation>,
) -> Check {
    if users.is_none() {
        return Check::Allow;
    }
    let Ok(request) = request else {
        return Check::Allow;
    };
    if request.reconnect.is_some() {
        return Check::Allow;
    }
    let Some(principal) = request.principal.clone() else {
        return Check::Deny;
    };
    let password = match &request.credentials {
        Credentials::Text(t) => t.as_bytes().to_vec(),
        Credentials::Binary(b) => b.clone(),
        _ => Vec::new(),
    };
    Check::Verify {
        principal,
        password,
    }
}

/// Runs `sessionwire serve` until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(serve(args));
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the listening line (and the event
    // log with `--events -`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(args: &ServeArgs) -> ExitCode {
    match start(args).await {
        Ok(running) => running.wait().await,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

struct Running {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    hub: tokio::task::JoinHandle<EventLog>,
}

async fn start(args: &ServeArgs) -> Result<Running, String> {
    let limits = args.limits()?;
    // One descriptor per connection: take the hard limit, not the usual
    // soft 1024, so that --max-clients can be reached.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
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

    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_message = limits.max_message_size();
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.saturating_mul(4).max(64 * 1024))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let http_connections = args.max_clients.saturating_mul(2).saturating_add(64);
    let connections = Arc::new(Semaphore::new(http_connections));
    let shared = Arc::new(Shared {
        hub: hub_tx,
        limits: limits.clone(),
        ws_config,
        users,
        passwords,
        allow_origins: args.allow_origins.clone(),
        pending: Pending::new(SOURCE_PENDING, Arc::clone(&connections), http_connections),
        ws_slots: Arc::new(Semaphore::new(
            args.max_clients.saturating_add(ws::WS_SLACK),
        )),
        connections,
        next_conn: AtomicU64::new(1),
        ws_tasks: AtomicUsize::new(0),
        stop: stop_rx.clone(),
    });
    let hub = Hub::new(limits, args.session_config(), events);
    let hub = tokio::spawn(hub.run(hub_rx));
    tokio::spawn(http::accept_loop(listener, Arc::clone(&shared)));

    let control_shown = match control {
        Some((l, addr, token)) => {
            tokio::spawn(control::accept_loop(
                l,
                Arc::new(token),
                shared.hub.clone(),
                stop_rx,
            ));
            format!("on {addr}")
        }
        None => "off".to_owned(),
    };
    // The one line tests read to find the ports.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "listening ws+http on {listen_addr} control {control_shown}"
    );
    let _ = out.flush();
    drop(out);
    tracing::info!(%listen_addr, control = %control_shown, "listening");
    Ok(Running {
        shared,
        stop: stop_tx,
        hub,
    })
}

impl Running {
    async fn wait(self) -> ExitCode {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let _ = self.stop.send(true);
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
        // Give the WebSocket tasks the time to write their ABORT.
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
        ExitCode::SUCCESS
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(q: &str) -> Result<ConnectionRequest, Violation> {
        ConnectionRequest::from_query(q)
    }

    #[test]
    fn section_2_without_a_users_file_anyone_connects() {
        for q in [
            "ty=WB&v=29&ca=8&r=0",
            "ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D",
        ] {
            assert!(matches!(credentials_check(None, &request(q)), Check::Allow));
        }
    }

    #[test]
    fn section_2_with_a_users_file_anonymous_is_refused_and_principals_are_checked() {
        let users = Arc::new(Users::default());
        let anonymous = request("ty=WB&v=29&ca=8&r=0");
        assert!(matches!(
            credentials_check(Some(&users), &anonymous),
            Check::Deny
        ));
        let alice = request("ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D");
        match credentials_check(Some(&users), &alice) {
            Check::Verify {
                principal,
                password,
                ..
            } => assert_eq!(
                (principal.as_str(), &password[..]),
                ("alice", &b"s3cret"[..])
            ),
            other => panic!("{other:?}"),
        }
        let no_password = request("ty=WB&v=29&ca=8&r=0&username=alice");
        match credentials_check(Some(&users), &no_password) {
            Check::Verify { password, .. } => assert!(password.is_empty()),
            other => panic!("{other:?}"),
        }
        // The token is a reconnection's credential; a faulty request is
        // refused by the registry with its own code.
        let reconnect = request("ty=WB&v=29&ca=8&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=1&ss=0");
        assert!(matches!(
            credentials_check(Some(&users), &reconnect),
            Check::Allow
        ));
        let faulty = request("ty=WB&v=28&ca=8&r=0");
        assert!(matches!(
            credentials_check(Some(&users), &faulty),
            Check::Allow
        ));
    }

    #[test]
    fn serve_args_build_the_limits_and_ping_period() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::parse_from([
            "serve",
            "--max-message-size",
            "1024",
            "--queue-limit",
            "8",
            "--reorder-wait",
            "150",
            "--ping-period",
            "0",
        ]);
        let limits = cli.serve.limits().unwrap();
        assert_eq!(limits.max_message_size(), 1024);
        assert_eq!(limits.max_queue_messages(), 8);
        assert_eq!(limits.reorder_wait(), Duration::from_millis(150));
        assert_eq!(cli.serve.session_config().ping_period, None);
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:8080");
        let cli = Cli::parse_from(["serve", "--max-clients", "0"]);
        assert!(cli.serve.limits().is_err());
    }

    /// `serve` arguments as clap parses them.
    fn serve_args(args: &[&str]) -> ServeArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Cli::parse_from(std::iter::once("serve").chain(args.iter().copied())).serve
    }

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
        let args = serve_args(&[
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
        ]);
        assert_eq!(args.allow_origins.len(), 2);
        assert!(serve_args(&[]).allow_origins.is_empty());
    }
}
