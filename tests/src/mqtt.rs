//! MQTT brokers for the real-client tests, behind one small abstraction:
//! [`Broker::start`] runs either our server (`sessionwire serve
//! --mqtt-listen`) or Debian's `mosquitto` on a free loopback port, and the
//! tests talk to [`Broker::addr`] with real clients (`mosquitto_pub`,
//! `mosquitto_sub`, paho-mqtt) or with [`RawClient`], a blocking socket
//! speaking the codec's packets.
//!
//! The tests run against our server; `SESSIONWIRE_MQTT_BROKER=mosquitto`
//! runs them against mosquitto instead, to check that what they expect is
//! what a well-known broker does (the event-log checks are ours only).
//!
//! Every wait here is bounded, and child processes are killed on drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sessionwire::mqtt::{
    ConnAck, Connect, Decoder, Packet, QoS, Sender, Str, Subscribe, SubscriptionOptions,
    Subscriptions, Version,
};
use sessionwire::Limits;

use crate::server::{add_user, Server};
use crate::workspace_root;

/// Which broker a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// Our server: `sessionwire serve --mqtt-listen 127.0.0.1:0`.
    Sessionwire,
    /// Debian's `mosquitto`, started with a generated configuration.
    Mosquitto,
}

impl BrokerKind {
    /// The broker the tests use: ours, unless `SESSIONWIRE_MQTT_BROKER`
    /// says `mosquitto`.
    pub fn from_env() -> BrokerKind {
        match std::env::var("SESSIONWIRE_MQTT_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            _ => BrokerKind::Sessionwire,
        }
    }
}

/// How a broker is configured for a test.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// Largest packet accepted from a client (`--max-message-size`,
    /// mosquitto's `max_packet_size`).
    pub max_packet_size: Option<usize>,
    /// User names and passwords the broker accepts (empty: anyone
    /// connects); our users file, mosquitto's password file.
    pub users: Vec<(String, String)>,
}

/// A running broker; stopped when dropped.
pub enum Broker {
    /// Our server, with its MQTT listener.
    Sessionwire {
        /// The server process.
        server: Server,
        /// Its MQTT over TCP address.
        mqtt: SocketAddr,
    },
    /// A mosquitto process.
    Mosquitto(Mosquitto),
}

impl Broker {
    /// Starts the broker of [`BrokerKind::from_env`].
    pub fn start_default(options: &BrokerOptions) -> Broker {
        Broker::start(BrokerKind::from_env(), options)
    }

    /// Starts a broker of `kind` on loopback.
    pub fn start(kind: BrokerKind, options: &BrokerOptions) -> Broker {
        match kind {
            BrokerKind::Sessionwire => {
                let mut args = vec!["--mqtt-listen".to_owned(), "127.0.0.1:0".to_owned()];
                if let Some(max) = options.max_packet_size {
                    args.push("--max-message-size".to_owned());
                    args.push(max.to_string());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let server = Server::start_with(&args, |dir| {
                    if options.users.is_empty() {
                        return Vec::new();
                    }
                    let users = dir.join("users");
                    for (user, password) in &options.users {
                        add_user(&users, user, password);
                    }
                    vec!["--users".to_owned(), users.display().to_string()]
                });
                let mqtt = server.mqtt.expect("the server's MQTT listener");
                Broker::Sessionwire { server, mqtt }
            }
            BrokerKind::Mosquitto => Broker::Mosquitto(Mosquitto::start(options)),
        }
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        match self {
            Broker::Sessionwire { .. } => BrokerKind::Sessionwire,
            Broker::Mosquitto(_) => BrokerKind::Mosquitto,
        }
    }

    /// The MQTT over TCP address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Broker::Sessionwire { mqtt, .. } => *mqtt,
            Broker::Mosquitto(m) => m.addr,
        }
    }

    /// The MQTT over WebSocket address and path (subprotocol `mqtt`).
    pub fn websocket(&self) -> (SocketAddr, &'static str) {
        match self {
            Broker::Sessionwire { server, .. } => (server.addr, "/mqtt"),
            Broker::Mosquitto(m) => (m.websocket, "/mqtt"),
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        match self {
            Broker::Sessionwire { server, .. } => server.pid(),
            Broker::Mosquitto(m) => m.child.id(),
        }
    }

    /// Our server's MQTT events (`"protocol":"mqtt"`) so far; empty for
    /// mosquitto, which has no event log.
    pub fn mqtt_events(&self) -> Vec<Value> {
        match self {
            Broker::Sessionwire { server, .. } => server
                .events()
                .into_iter()
                .filter(|e| e["protocol"] == "mqtt")
                .collect(),
            Broker::Mosquitto(_) => Vec::new(),
        }
    }

    /// Waits (up to `limit`) for our server to log that `client_id`'s
    /// connection ended with `reason` (the close reason's name) and, when
    /// given, the MQTT reason `code` (logged for 3.1.1 connections too, as
    /// the code a 5.0 client would have got); returns the event. Mosquitto has no
    /// event log: `None` at once.
    pub fn expect_close_event(
        &self,
        limit: Duration,
        client_id: Option<&str>,
        reason: &str,
        code: Option<u8>,
    ) -> Option<Value> {
        if self.kind() == BrokerKind::Mosquitto {
            return None;
        }
        let matches = |e: &Value| {
            e["reason"] == reason
                && client_id.is_none_or(|id| event_client_id(e) == Some(id))
                && code.is_none_or(|c| event_reason_code(e) == Some(u64::from(c)))
        };
        let deadline = Instant::now() + limit;
        loop {
            let events = self.mqtt_events();
            if let Some(e) = events.iter().find(|e| matches(e)) {
                return Some(e.clone());
            }
            if Instant::now() >= deadline {
                panic!(
                    "no MQTT event with reason {reason} code {code:?} for {client_id:?} \
                     within {limit:?}; MQTT events: {events:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The client id an MQTT event names.
pub fn event_client_id(e: &Value) -> Option<&str> {
    e["client_id"].as_str()
}

/// The MQTT reason code an event carries.
pub fn event_reason_code(e: &Value) -> Option<u64> {
    e["reason_code"].as_u64()
}

/// A mosquitto broker on a free loopback port, with its configuration in a
/// temporary directory; killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it listens for MQTT over WebSocket.
    pub websocket: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto -c` with a generated configuration: an MQTT and a
    /// WebSocket listener on 127.0.0.1, anonymous clients allowed, no
    /// persistence file, queues unbounded, and `options`.
    pub fn start(options: &BrokerOptions) -> Mosquitto {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (port, ws) = (free_port(), free_port());
        let mut config = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\n\
             listener {port} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n"
        );
        if let Some(max) = options.max_packet_size {
            config.push_str(&format!("max_packet_size {max}\n"));
        }
        if !options.users.is_empty() {
            let file = dir.path().join("passwords");
            std::fs::write(&file, "").expect("writing the password file");
            for (user, password) in &options.users {
                let status = Command::new(tool("mosquitto_passwd"))
                    .arg("-b")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .status()
                    .expect("running mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed");
            }
            config = config.replace("allow_anonymous true", "allow_anonymous false");
            config.push_str(&format!("password_file {}\n", file.display()));
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config).expect("writing mosquitto.conf");
        let child = Command::new(tool("mosquitto"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut m = Mosquitto {
            child,
            addr,
            websocket: SocketAddr::from(([127, 0, 0, 1], ws)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() >= deadline || !matches!(m.child.try_wait(), Ok(None)) {
                let _ = m.child.kill();
                panic!("mosquitto did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// The path of a tool the tests need; panics when it is not installed, so
/// that a missing tool fails the test instead of skipping it (`.ci/run`
/// installs them).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (bash .ci/run installs it)"))
}

/// Both MQTT versions, for the tests that run over each.
pub const VERSIONS: [Version; 2] = [Version::V311, Version::V5];

/// How long a test waits for anything a client should see.
pub const WAIT: Duration = Duration::from_secs(15);

/// The broker of [`BrokerKind::from_env`] with the default options.
pub fn broker() -> Broker {
    Broker::start_default(&BrokerOptions::default())
}

/// A short name of a version for client ids and topics: `311` or `5`.
pub fn tag(version: Version) -> &'static str {
    match version {
        Version::V311 => "311",
        Version::V5 => "5",
    }
}

/// The `-V` argument of mosquitto_pub/mosquitto_sub for a version.
pub fn mosquitto_version(v: Version) -> &'static str {
    match v {
        Version::V311 => "mqttv311",
        Version::V5 => "mqttv5",
    }
}

/// The paho-mqtt helper script (`tests/mqtt/paho_client.py`).
pub fn paho_script() -> PathBuf {
    workspace_root().join("tests/mqtt/paho_client.py")
}

/// A child process whose standard output is read line by line on a thread;
/// killed on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: String,
}

impl Proc {
    /// Spawns `program` with `args`, stdout piped, stderr inherited.
    pub fn spawn(program: &Path, args: &[String]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            what: format!("{} {}", program.display(), args.join(" ")),
        }
    }

    /// Waits (up to `limit`) for a line containing `needle`; returns it.
    /// Panics with every line seen when none comes.
    pub fn wait_line(&mut self, limit: Duration, needle: &str) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line with {needle:?} within {limit:?}; saw {:#?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// Waits (up to `limit`) for the process to exit, then returns its exit
    /// code and every line it printed; kills it and panics if it does not
    /// exit in time.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {limit:?}; printed {:#?}",
                    self.what, self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends at EOF; give it a moment to pass the rest.
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        (status.code(), std::mem::take(&mut self.seen))
    }

    /// Kills the process with SIGKILL (an unclean end: no DISCONNECT).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end, bounded by `limit`; returns the exit code and
/// the output lines.
pub fn run(program: &Path, args: &[String], limit: Duration) -> (Option<i32>, Vec<String>) {
    Proc::spawn(program, args).finish(limit)
}

/// Strings from string slices, for argument lists.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// What a [`RawClient`] read.
#[derive(Debug)]
pub enum Read {
    /// A whole packet.
    Packet(Packet),
    /// The broker closed the connection.
    Closed,
    /// Nothing within the time allowed.
    Timeout,
}

/// A blocking MQTT client on a plain socket, built on the codec: sends
/// whatever a test wants (valid or not) and decodes what the broker sends.
pub struct RawClient {
    stream: TcpStream,
    decoder: Decoder,
    pending: BytesMut,
    /// The connection's version.
    pub version: Version,
}

impl RawClient {
    /// Connects the socket (no MQTT yet).
    pub fn open(addr: SocketAddr, version: Version) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connecting to the broker");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        RawClient {
            stream,
            decoder: Decoder::new(version, Sender::Server, &Limits::default()),
            pending: BytesMut::new(),
            version,
        }
    }

    /// Connects and sends a CONNECT (clean start) with `client_id` and
    /// `keep_alive`; returns the client and the CONNACK's code and
    /// session-present flag.
    pub fn connect(
        addr: SocketAddr,
        version: Version,
        client_id: &str,
        keep_alive: u16,
    ) -> (RawClient, u8) {
        let id = Str::try_from(client_id).expect("a valid client id");
        let mut connect = Connect::new(version, id, None, None, None).expect("a CONNECT");
        connect.keep_alive = keep_alive;
        let (c, ack) = RawClient::connect_with(addr, connect);
        (c, ack.code)
    }

    /// Connects and sends `connect`; returns the client and the CONNACK.
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut c = RawClient::open(addr, connect.version);
        c.send(&Packet::Connect(connect));
        match c.read(Duration::from_secs(5)) {
            Read::Packet(Packet::ConnAck(ack)) => (c, ack),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// Subscribes to `filter` at `qos` (packet identifier 1) and returns
    /// the SUBACK's code; panics on anything but a SUBACK within [`WAIT`].
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        let filter = Str::try_from(filter).expect("a valid filter");
        let subscriptions =
            Subscriptions::new(&[(filter, SubscriptionOptions::qos(qos))]).expect("a subscription");
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Default::default(),
            subscriptions,
        }));
        match self.read(WAIT) {
            Read::Packet(Packet::SubAck(ack)) => ack.codes[0],
            other => panic!("expected a SUBACK, got {other:?}"),
        }
    }

    /// Encodes and sends a packet.
    pub fn send(&mut self, packet: &Packet) {
        let bytes = packet.to_bytes(self.version).expect("encoding a packet");
        self.send_raw(&bytes);
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        // The broker may already have closed: a failed write shows up as
        // `Read::Closed` on the next read.
        let _ = self.stream.write_all(bytes);
    }

    /// Reads the next packet, waiting at most `limit`.
    pub fn read(&mut self, limit: Duration) -> Read {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            match self.decoder.decode(&mut self.pending) {
                Ok(Some(p)) => return Read::Packet(p),
                Ok(None) => {}
                Err(v) => panic!("the broker sent a bad packet: {v}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("a read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => return Read::Closed,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read::Timeout
                }
                Err(_) => return Read::Closed,
            }
        }
    }

    /// Reads until the broker closes the connection (up to `limit`) and
    /// returns the reason code of the DISCONNECT it sent first, if any.
    /// Panics if the connection is still open after `limit`.
    pub fn read_until_closed(&mut self, limit: Duration) -> Option<u8> {
        let deadline = Instant::now() + limit;
        let mut code = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Read::Packet(Packet::Disconnect(d)) => code = Some(d.code),
                Read::Packet(_) => {}
                Read::Closed => return code,
                Read::Timeout => panic!("the broker did not close the connection in {limit:?}"),
            }
        }
    }
}

/// A payload of `n` bytes.
pub fn payload(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}
