//! `sessionwire serve`: parses the server's options and runs the reference
//! server ([`sessionwire_server`]) until SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sessionwire::mqtt::session::MqttConfig;
use sessionwire::mqtt::QoS;
use sessionwire::session::SessionConfig;
use sessionwire::Limits;
use sessionwire_server::mqtt::retained::RetainedLimits;
use sessionwire_server::{parse_origin, HeaderValue, MqttQuotas, Server, ServerConfig};

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
    /// Address of the MQTT listener (TCP; `off`: none). MQTT over WebSocket
    /// is served on the main listener, path `/mqtt`, either way.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:1883", value_parser = parse_mqtt_listen)]
    pub mqtt_listen: MqttListen,
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
    /// The longest reconnection wait granted, in ms: a client asking for more
    /// (`r`) is kept this long. A session waiting for a reconnection is
    /// closed CONNECTION_LOST sooner when the server is full and a new
    /// client arrives.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub max_reconnect_wait: u64,
    /// Most bytes all sessions may hold at once in reorder buffers (HTTP
    /// sends waiting for their turn) and recovery buffers (sent messages
    /// kept for a reconnection); a session growing past it is closed
    /// MESSAGE_QUEUE_LIMIT_REACHED.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_buffered_bytes: usize,
    /// HTTP polling: how long an empty poll is held open, in ms.
    #[arg(long, value_name = "MS", default_value_t = 25_000)]
    pub poll_timeout: u64,
    /// HTTP polling: how long a client may go without an open poll, in ms.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub poll_gap: u64,
    /// A new session of a principal closes that principal's older sessions
    /// (SESSION_TAKEN_OVER). Off by default: sessions of one principal
    /// coexist, as on the real server.
    #[arg(long)]
    pub principal_takeover: bool,
    /// HTTP polling: a browser origin (`https://app.example`) whose pages
    /// may read the answers, credentials included (repeatable). None by
    /// default: no CORS headers at all.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allow_origins: Vec<HeaderValue>,
    /// The MQTT session settings.
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// The MQTT session settings of `sessionwire serve`, for both MQTT
/// listeners (docs/mqtt.md, "Sessions"). The message size, the client limit
/// and the queue bounds are the options above, shared with the session
/// protocol.
#[derive(Debug, Args)]
#[command(next_help_heading = "MQTT")]
pub struct MqttArgs {
    /// QoS 2 PUBLISHes a client may have waiting for their PUBREL (announced
    /// to 5.0 clients as the receive maximum).
    #[arg(long, value_name = "N", default_value_t = MqttConfig::default().receive_maximum,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub mqtt_receive_maximum: u16,
    /// QoS 1 and 2 messages sent to one client and not yet acknowledged
    /// (the client's own receive maximum lowers it).
    #[arg(long, value_name = "N", default_value_t = MqttConfig::default().max_inflight,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub mqtt_max_inflight: u16,
    /// Topic aliases a 5.0 client may set (0: none).
    #[arg(long, value_name = "N", default_value_t = MqttConfig::default().topic_alias_maximum)]
    pub mqtt_topic_alias_maximum: u16,
    /// Topic aliases the server sets on what it sends a 5.0 client, at most
    /// the client's own maximum (0: none, whole topics always).
    #[arg(long, value_name = "N", default_value_t = MqttConfig::default().outbound_topic_aliases)]
    pub mqtt_server_topic_aliases: u16,
    /// A keep alive in seconds imposed on 5.0 clients, announced as the
    /// server keep alive (0 turns theirs off). Without it they keep their
    /// own.
    #[arg(long, value_name = "SECS")]
    pub mqtt_server_keep_alive: Option<u16>,
    /// The longest a session outlives its connection, in seconds: the cap on
    /// a 5.0 session expiry interval, and the life of a 3.1.1 session
    /// without clean session.
    #[arg(long, value_name = "SECS", default_value_t = MqttConfig::default().max_session_expiry)]
    pub mqtt_max_session_expiry: u32,
    /// The highest QoS clients may publish with (0, 1 or 2); subscriptions
    /// are granted at most this.
    #[arg(long, value_name = "QOS", default_value_t = MqttConfig::default().maximum_qos as u8,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub mqtt_maximum_qos: u8,
    /// The most sessions kept for offline clients; past it the one offline
    /// the longest among those holding no message is ended (else the one
    /// offline the longest).
    #[arg(long, value_name = "N", default_value_t = MqttConfig::default().max_sessions)]
    pub mqtt_max_sessions: usize,
    /// Bytes of message data the broker holds over all clients: queued and
    /// in-flight messages (one count for a message many sessions hold) and
    /// retained messages. Once spent, PUBLISHes are refused (5.0: 0x97;
    /// 3.1.1: closed unacknowledged) and deliveries dropped.
    #[arg(long, value_name = "BYTES", default_value_t = MqttConfig::default().max_held_bytes,
          value_parser = clap::builder::TypedValueParser::map(
              clap::value_parser!(u64).range(1..),
              |n| usize::try_from(n).unwrap_or(usize::MAX)))]
    pub mqtt_max_held_bytes: usize,
    /// How long a connection may take to send its whole CONNECT, in ms.
    #[arg(long, value_name = "MS", default_value_t = default_connect_timeout_ms(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub mqtt_connect_timeout: u64,
    /// Subscriptions the server holds over all clients; past it (or past
    /// the tree's 256 MiB) SUBSCRIBE is refused (0x97, 3.1.1: 0x80).
    #[arg(long, value_name = "N", default_value_t = MqttQuotas::default().max_subscriptions)]
    pub mqtt_max_subscriptions: usize,
    /// Subscriptions the clients of one source address (IPv6: one /64) may
    /// hold together, and the same part of the tree's bytes [default: a
    /// quarter of --mqtt-max-subscriptions; 0: no share].
    #[arg(long, value_name = "N")]
    pub mqtt_max_subscriptions_per_source: Option<usize>,
    /// Subscriptions the clients of one user name may hold together, and
    /// the same part of the tree's bytes [default: a quarter of
    /// --mqtt-max-subscriptions; 0: no share].
    #[arg(long, value_name = "N")]
    pub mqtt_max_subscriptions_per_user: Option<usize>,
    /// Persistent sessions one source address may hold; past it, its own
    /// oldest offline session ends [default: a quarter of
    /// --mqtt-max-sessions; 0: no share].
    #[arg(long, value_name = "N")]
    pub mqtt_max_sessions_per_source: Option<usize>,
    /// MQTT-over-TCP connections one source address may have open once half
    /// of the connection places (--max-clients and 256) are taken [default:
    /// a quarter of the places; 0: no share].
    #[arg(long, value_name = "N")]
    pub mqtt_max_connections_per_source: Option<usize>,
    /// Without --users (every client anonymous): the most seconds a session
    /// outlives its connection, below --mqtt-max-session-expiry.
    #[arg(long, value_name = "SECS", default_value_t = MqttQuotas::default().anonymous_session_expiry)]
    pub mqtt_anonymous_session_expiry: u32,
    /// The most retained messages the broker keeps (one per topic); a new
    /// topic past it is refused.
    #[arg(long, value_name = "N", default_value_t = RetainedLimits::default().max_messages)]
    pub mqtt_retained_messages: usize,
    /// The most bytes retained messages may take: their topics and payloads
    /// and the store's own structure, as allocated; a message past it is
    /// refused.
    #[arg(long, value_name = "BYTES", default_value_t = RetainedLimits::default().max_bytes)]
    pub mqtt_retained_bytes: usize,
}

/// The session layer's connect timeout, in ms (the option's default).
fn default_connect_timeout_ms() -> u64 {
    u64::try_from(MqttConfig::default().connect_timeout.as_millis()).unwrap_or(u64::MAX)
}

impl MqttArgs {
    /// The session layer's settings (its limits and queue bounds are the
    /// server's, filled in by the server).
    fn config(&self) -> MqttConfig {
        MqttConfig {
            receive_maximum: self.mqtt_receive_maximum,
            max_inflight: self.mqtt_max_inflight,
            topic_alias_maximum: self.mqtt_topic_alias_maximum,
            outbound_topic_aliases: self.mqtt_server_topic_aliases,
            server_keep_alive: self.mqtt_server_keep_alive,
            max_session_expiry: self.mqtt_max_session_expiry,
            maximum_qos: QoS::from_u8(self.mqtt_maximum_qos).unwrap_or(QoS::ExactlyOnce),
            max_sessions: self.mqtt_max_sessions,
            max_held_bytes: self.mqtt_max_held_bytes,
            connect_timeout: Duration::from_millis(self.mqtt_connect_timeout),
            ..MqttConfig::default()
        }
    }

    /// The broker's quotas per principal.
    fn quotas(&self) -> MqttQuotas {
        MqttQuotas {
            max_subscriptions: self.mqtt_max_subscriptions,
            max_subscriptions_per_source: self.mqtt_max_subscriptions_per_source,
            max_subscriptions_per_user: self.mqtt_max_subscriptions_per_user,
            max_sessions_per_source: self.mqtt_max_sessions_per_source,
            max_connections_per_source: self.mqtt_max_connections_per_source,
            anonymous_session_expiry: self.mqtt_anonymous_session_expiry,
        }
    }

    /// The broker's bounds on retained messages.
    fn retained(&self) -> RetainedLimits {
        RetainedLimits {
            max_messages: self.mqtt_retained_messages,
            max_bytes: self.mqtt_retained_bytes,
            ..RetainedLimits::default()
        }
    }
}

/// `--mqtt-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqttListen(pub Option<SocketAddr>);

/// Parses `--mqtt-listen`.
fn parse_mqtt_listen(s: &str) -> Result<MqttListen, String> {
    if s == "off" {
        return Ok(MqttListen(None));
    }
    s.parse()
        .map(|a| MqttListen(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (an address such as 127.0.0.1:1883, or off)"))
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

    /// The server's configuration.
    fn config(&self) -> Result<ServerConfig, String> {
        Ok(ServerConfig {
            listen: self.listen,
            control: self.control,
            control_token_file: self.control_token_file.clone(),
            users: self.users.clone(),
            events: self.events.clone(),
            allow_origins: self.allow_origins.clone(),
            mqtt_listen: self.mqtt_listen.0,
            mqtt: self.mqtt.config(),
            mqtt_quotas: self.mqtt.quotas(),
            mqtt_retained: self.mqtt.retained(),
            limits: self.limits()?,
            session: self.session_config(),
        })
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            ping_period: (self.ping_period > 0).then(|| Duration::from_millis(self.ping_period)),
            poll_timeout: Duration::from_millis(self.poll_timeout),
            poll_gap: Duration::from_millis(self.poll_gap),
            principal_takeover: self.principal_takeover,
            max_reconnect_wait: Duration::from_millis(self.max_reconnect_wait),
            max_buffered_bytes: self.max_buffered_bytes,
            ..SessionConfig::default()
        }
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
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // One descriptor per connection: take the hard limit, not the usual
    // soft 1024, so that --max-clients can be reached.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Signals are ours before anyone learns the ports: a SIGTERM sent as
    // soon as the line is read stops the server cleanly.
    let signals = sessionwire_server::listen_for_signals();
    // The one line tests read to find the ports.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.listening_line());
    let _ = out.flush();
    drop(out);
    signals.await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reconnection_wait_and_held_data_bounds_reach_the_session_config() {
        let defaults = serve_args(&[]).session_config();
        assert_eq!(defaults.max_reconnect_wait, Duration::from_secs(60));
        assert_eq!(defaults.max_buffered_bytes, 64 << 20);
        let set = serve_args(&[
            "--max-reconnect-wait",
            "2500",
            "--max-buffered-bytes",
            "4096",
        ])
        .session_config();
        assert_eq!(set.max_reconnect_wait, Duration::from_millis(2500));
        assert_eq!(set.max_buffered_bytes, 4096);
    }

    #[test]
    fn cors_allow_origin_is_repeatable_and_off_by_default() {
        let args = serve_args(&[
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
        ]);
        assert_eq!(args.allow_origins.len(), 2);
        assert!(serve_args(&[]).allow_origins.is_empty());
    }

    #[test]
    fn mqtt_listen_defaults_to_1883_on_loopback_and_can_be_off() {
        assert_eq!(
            serve_args(&[]).config().unwrap().mqtt_listen,
            Some("127.0.0.1:1883".parse().unwrap())
        );
        let off = serve_args(&["--mqtt-listen", "off"]);
        assert_eq!(off.config().unwrap().mqtt_listen, None);
        let port0 = serve_args(&["--mqtt-listen", "127.0.0.2:0"]);
        assert_eq!(port0.mqtt_listen.0.unwrap().to_string(), "127.0.0.2:0");
        assert!(parse_mqtt_listen("nowhere").is_err());
    }

    #[test]
    fn mqtt_retained_bounds_default_to_the_stores_and_reach_the_config() {
        let defaults = serve_args(&[]).config().unwrap().mqtt_retained;
        assert_eq!(defaults, RetainedLimits::default());
        assert_eq!(
            (defaults.max_messages, defaults.max_bytes),
            (10_000, 64 << 20)
        );
        let set = serve_args(&[
            "--mqtt-retained-messages",
            "3",
            "--mqtt-retained-bytes",
            "4096",
        ])
        .config()
        .unwrap()
        .mqtt_retained;
        assert_eq!(
            set,
            RetainedLimits {
                max_messages: 3,
                max_bytes: 4096,
                ..RetainedLimits::default()
            }
        );
    }

    #[test]
    fn mqtt_settings_default_to_the_session_layer_defaults_and_reach_the_config() {
        assert_eq!(
            serve_args(&[]).config().unwrap().mqtt,
            MqttConfig::default()
        );
        let set = serve_args(&[
            "--mqtt-receive-maximum",
            "5",
            "--mqtt-max-inflight",
            "6",
            "--mqtt-topic-alias-maximum",
            "0",
            "--mqtt-server-topic-aliases",
            "3",
            "--mqtt-server-keep-alive",
            "30",
            "--mqtt-max-session-expiry",
            "60",
            "--mqtt-maximum-qos",
            "1",
            "--mqtt-max-sessions",
            "7",
            "--mqtt-connect-timeout",
            "2500",
        ])
        .config()
        .unwrap()
        .mqtt;
        assert_eq!(
            set,
            MqttConfig {
                receive_maximum: 5,
                max_inflight: 6,
                topic_alias_maximum: 0,
                outbound_topic_aliases: 3,
                server_keep_alive: Some(30),
                max_session_expiry: 60,
                maximum_qos: QoS::AtLeastOnce,
                max_sessions: 7,
                connect_timeout: Duration::from_millis(2500),
                ..MqttConfig::default()
            }
        );
    }

    #[test]
    fn mqtt_quotas_default_to_a_quarter_and_reach_the_config() {
        assert_eq!(
            serve_args(&[]).config().unwrap().mqtt_quotas,
            MqttQuotas::default()
        );
        let set = serve_args(&[
            "--mqtt-max-subscriptions",
            "5000",
            "--mqtt-max-subscriptions-per-source",
            "0",
            "--mqtt-max-subscriptions-per-user",
            "100",
            "--mqtt-max-sessions-per-source",
            "7",
            "--mqtt-max-connections-per-source",
            "20000",
            "--mqtt-anonymous-session-expiry",
            "86400",
        ]);
        assert_eq!(
            set.config().unwrap().mqtt_quotas,
            MqttQuotas {
                max_subscriptions: 5000,
                max_subscriptions_per_source: Some(0),
                max_subscriptions_per_user: Some(100),
                max_sessions_per_source: Some(7),
                max_connections_per_source: Some(20000),
                anonymous_session_expiry: 86400,
            }
        );
    }

    #[test]
    fn mqtt_settings_out_of_range_are_refused() {
        use clap::Parser as _;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        for bad in [
            ["--mqtt-receive-maximum", "0"],
            ["--mqtt-max-inflight", "0"],
            ["--mqtt-maximum-qos", "3"],
            ["--mqtt-connect-timeout", "0"],
            ["--mqtt-topic-alias-maximum", "65536"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("serve").chain(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
