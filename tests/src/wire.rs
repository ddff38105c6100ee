//! MQTT packets as bytes, for the pressure and quota tests: a blocking
//! client ([`Wire`]) that writes hand-built packets as fast as the socket
//! takes them and reads whole frames back (fixed header and body, nothing
//! decoded), optionally from another loopback source address. Written by
//! hand rather than through the codec so that a test can pipeline thousands
//! of packets, send what a real client would not, and see exactly the bytes
//! the broker sent (a CONNACK's length, say).
//!
//! Every read is bounded in time and in bytes (a frame over [`MAX_FRAME`]
//! is an error, not an allocation).

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The largest frame [`Wire::read`] accepts (body, not counting the fixed
/// header).
pub const MAX_FRAME: usize = 1 << 20;

/// Protocol level 4 (3.1.1).
pub const V311: u8 = 4;
/// Protocol level 5 (5.0).
pub const V5: u8 = 5;

/// One frame as the broker sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The first byte: packet type (high nibble) and flags.
    pub header: u8,
    /// The variable header and payload.
    pub body: Vec<u8>,
}

impl Frame {
    /// The packet type (1 CONNECT ... 14 DISCONNECT).
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The whole frame as it was on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.header];
        put_varint(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    /// The packet identifier of a PUBACK, PUBREC, SUBACK (first two body
    /// bytes).
    pub fn packet_id(&self) -> Option<u16> {
        Some(u16::from_be_bytes([
            *self.body.first()?,
            *self.body.get(1)?,
        ]))
    }
}

/// What [`Wire::read`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// A whole frame.
    Frame(Frame),
    /// The broker closed the connection (or reset it).
    Closed,
    /// Nothing whole within the time allowed.
    Timeout,
}

/// A PUBLISH as a subscriber reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The QoS (from the header flags).
    pub qos: u8,
    /// Whether the retain flag was set.
    pub retain: bool,
    /// The topic.
    pub topic: String,
    /// The packet identifier (0 at QoS 0).
    pub packet_id: u16,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Parses a PUBLISH frame of protocol `level`; `None` for anything else or
/// a malformed one.
pub fn parse_publish(level: u8, f: &Frame) -> Option<Message> {
    if f.kind() != 3 {
        return None;
    }
    let qos = (f.header >> 1) & 3;
    let b = &f.body;
    let tlen = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    let topic = String::from_utf8(b.get(2..2 + tlen)?.to_vec()).ok()?;
    let mut at = 2 + tlen;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
        at += 2;
    }
    if level == V5 {
        let (plen, used) = get_varint(b.get(at..)?)?;
        at = at.checked_add(used)?.checked_add(plen)?;
    }
    Some(Message {
        qos,
        retain: f.header & 1 != 0,
        topic,
        packet_id,
        payload: b.get(at..)?.to_vec(),
    })
}

/// Appends an MQTT variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// Reads a variable byte integer: its value and its length in bytes.
pub fn get_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        n |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("a string under 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// 5.0 properties: the length, then `props` as given.
fn put_props(out: &mut Vec<u8>, level: u8, props: &[u8]) {
    if level == V5 {
        put_varint(out, props.len());
        out.extend_from_slice(props);
    }
}

/// The 5.0 Session Expiry Interval property (0x11).
pub fn session_expiry(secs: u32) -> Vec<u8> {
    let mut p = vec![0x11];
    p.extend_from_slice(&secs.to_be_bytes());
    p
}

/// The 5.0 Maximum Packet Size property (0x27).
pub fn maximum_packet_size(bytes: u32) -> Vec<u8> {
    let mut p = vec![0x27];
    p.extend_from_slice(&bytes.to_be_bytes());
    p
}

/// A will for [`Connect`].
#[derive(Clone, Debug)]
pub struct Will {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: u8,
}

/// What a CONNECT carries.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Protocol level: [`V311`] or [`V5`].
    pub level: u8,
    /// The client identifier.
    pub client_id: String,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean: bool,
    /// Keep alive in seconds (0: off).
    pub keep_alive: u16,
    /// CONNECT properties, encoded (5.0 only).
    pub properties: Vec<u8>,
    /// The will.
    pub will: Option<Will>,
    /// User name and password.
    pub login: Option<(String, String)>,
}

impl Connect {
    /// A CONNECT of `level` for `client_id`: clean, keep alive off, no
    /// properties, no will, anonymous.
    pub fn new(level: u8, client_id: &str) -> Connect {
        Connect {
            level,
            client_id: client_id.to_owned(),
            clean: true,
            keep_alive: 0,
            properties: Vec::new(),
            will: None,
            login: None,
        }
    }

    /// The same with clean session (clean start) `clean`.
    pub fn clean(mut self, clean: bool) -> Connect {
        self.clean = clean;
        self
    }

    /// The same with these 5.0 properties, encoded.
    pub fn properties(mut self, properties: Vec<u8>) -> Connect {
        self.properties = properties;
        self
    }

    /// The same with a will.
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8) -> Connect {
        self.will = Some(Will {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
        });
        self
    }

    /// The same with a user name and password.
    pub fn login(mut self, user: &str, password: &str) -> Connect {
        self.login = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The packet's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, b"MQTT");
        b.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
        }
        if self.login.is_some() {
            flags |= 0xc0;
        }
        b.push(flags);
        b.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_props(&mut b, self.level, &self.properties);
        put_str(&mut b, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            put_props(&mut b, self.level, &[]);
            put_str(&mut b, w.topic.as_bytes());
            put_str(&mut b, &w.payload);
        }
        if let Some((u, p)) = &self.login {
            put_str(&mut b, u.as_bytes());
            put_str(&mut b, p.as_bytes());
        }
        frame(0x10, &b)
    }
}

/// A PUBLISH of protocol `level`.
pub fn publish(
    level: u8,
    topic: &str,
    payload: &[u8],
    qos: u8,
    packet_id: u16,
    retain: bool,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(topic.len() + payload.len() + 8);
    put_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.extend_from_slice(&packet_id.to_be_bytes());
    }
    put_props(&mut b, level, &[]);
    b.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &b)
}

/// A SUBSCRIBE of protocol `level` for `filters` (filter, QoS).
pub fn subscribe(level: u8, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = packet_id.to_be_bytes().to_vec();
    put_props(&mut b, level, &[]);
    for (f, qos) in filters {
        put_str(&mut b, f.as_bytes());
        b.push(*qos);
    }
    frame(0x82, &b)
}

/// A PUBACK for `packet_id` (success; the short 5.0 form).
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x40, 0x02, hi, lo]
}

/// A DISCONNECT (normal, short form in both versions).
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// A blocking connection speaking raw frames.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The protocol level the frames are parsed as.
    pub level: u8,
}

/// A runtime to bind sockets to a chosen source address (tokio's
/// `TcpSocket`), shared by every test of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

impl Wire {
    /// A TCP connection to `addr` from 127.0.0.1 (no packet sent).
    pub fn open(addr: SocketAddr, level: u8) -> io::Result<Wire> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Self::wrap(stream, level)
    }

    /// A TCP connection to `addr` from `source` (another loopback address,
    /// [`crate::attack::attacker`]).
    pub fn open_from(source: Ipv4Addr, addr: SocketAddr, level: u8) -> io::Result<Wire> {
        let stream = runtime().block_on(async {
            let s = tokio::time::timeout(
                Duration::from_secs(5),
                crate::attack::connect_from(source, addr),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
            s.into_std()
        })?;
        stream.set_nonblocking(false)?;
        Self::wrap(stream, level)
    }

    fn wrap(stream: TcpStream, level: u8) -> io::Result<Wire> {
        stream.set_nodelay(true)?;
        Ok(Wire {
            stream,
            buf: Vec::new(),
            level,
        })
    }

    /// Opens a connection from `source` (127.0.0.1 when `None`), sends
    /// `connect` and reads the answer: the CONNACK frame, or what came
    /// instead.
    pub fn connect(
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        connect: &Connect,
    ) -> io::Result<(Wire, Got)> {
        let mut w = match source {
            Some(s) => Wire::open_from(s, addr, connect.level)?,
            None => Wire::open(addr, connect.level)?,
        };
        w.send(&connect.encode())?;
        let got = w.read(Duration::from_secs(10));
        Ok((w, got))
    }

    /// Connects from 127.0.0.1 and panics unless the CONNACK's code is 0;
    /// returns the connection and the session-present flag.
    pub fn connected(addr: SocketAddr, connect: &Connect) -> (Wire, bool) {
        let (w, got) = Wire::connect(addr, None, connect).expect("connecting");
        match got {
            Got::Frame(f) if f.kind() == 2 && f.body.get(1) == Some(&0) => {
                (w, f.body.first() == Some(&1))
            }
            other => panic!("{}: expected CONNACK 0, got {other:?}", connect.client_id),
        }
    }

    /// Writes bytes (all of them, blocking while the socket is full).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A clone of the socket, for a writer thread.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Reads the next frame, waiting at most `limit`.
    pub fn read(&mut self, limit: Duration) -> Got {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.take_frame() {
                return f;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Got::Timeout
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    /// A whole frame from the buffer, if there is one; a frame over
    /// [`MAX_FRAME`] or a bad length reads as [`Got::Closed`].
    fn take_frame(&mut self) -> Option<Got> {
        if self.buf.len() < 2 {
            return None;
        }
        let Some((len, used)) = get_varint(&self.buf[1..]) else {
            if self.buf.len() >= 5 {
                return Some(Got::Closed);
            }
            return None;
        };
        if len > MAX_FRAME {
            return Some(Got::Closed);
        }
        let end = 1 + used + len;
        if self.buf.len() < end {
            return None;
        }
        let f = Frame {
            header: self.buf[0],
            body: self.buf[1 + used..end].to_vec(),
        };
        self.buf.drain(..end);
        Some(Got::Frame(f))
    }

    /// Subscribes to `filter` at `qos` and returns the SUBACK's first
    /// code, `None` if no SUBACK came within 10 s (other frames are
    /// skipped).
    pub fn subscribe(&mut self, filter: &str, qos: u8) -> Option<u8> {
        self.send(&subscribe(self.level, 1, &[(filter, qos)]))
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Frame(f) if f.kind() == 9 => {
                    let at = if self.level == V5 {
                        let (plen, used) = get_varint(f.body.get(2..)?)?;
                        2 + used + plen
                    } else {
                        2
                    };
                    return f.body.get(at).copied();
                }
                Got::Frame(_) => {}
                _ => return None,
            }
        }
    }

    /// Publishes at QoS 1 and waits for its PUBACK; returns the PUBACK's
    /// reason code (0 in 3.1.1), skipping other frames, within `limit`.
    pub fn publish_acked(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        packet_id: u16,
        limit: Duration,
    ) -> Option<u8> {
        self.send(&publish(self.level, topic, payload, 1, packet_id, retain))
            .ok()?;
        let deadline = Instant::now() + limit;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Frame(f) if f.kind() == 4 && f.packet_id() == Some(packet_id) => {
                    return Some(f.body.get(2).copied().unwrap_or(0))
                }
                Got::Frame(f) => {
                    if let Some(m) = parse_publish(self.level, &f) {
                        if m.qos > 0 {
                            let _ = self.send(&puback(m.packet_id));
                        }
                    }
                }
                _ => return None,
            }
        }
    }

    /// Drops the socket without a DISCONNECT (and with no linger).
    pub fn drop_unclean(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A legitimate client from 127.0.0.1 checking that the broker still
/// serves: on its own thread, a QoS 1 round trip every 100 ms (a PUBLISH to
/// a topic it subscribes to, answered by both the PUBACK and the message)
/// until [`Probe::stop`]. The liveness bound of issue 18: each within 1 s
/// while an attack runs.
pub struct Probe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Option<Duration>>>,
}

impl Probe {
    /// The bound a round trip must keep.
    pub const BOUND: Duration = Duration::from_secs(1);

    /// Connects `client_id` (5.0, clean) to `addr`, subscribes, and starts
    /// the round trips; at most 600 of them (a minute).
    pub fn start(addr: SocketAddr, client_id: &str) -> Probe {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // Panics unless the CONNACK is 0.
        let (mut w, _) = Wire::connected(addr, &Connect::new(V5, client_id));
        let topic = format!("probe/{client_id}");
        assert_eq!(w.subscribe(&topic, 1), Some(1), "the probe subscribes");
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut trips = Vec::new();
            let mut n = 0u16;
            while !flag.load(Ordering::Relaxed) && trips.len() < 600 {
                n = n.wrapping_add(1).max(1);
                let t = Instant::now();
                if w.send(&publish(V5, &topic, b"ping", 1, n, false)).is_err() {
                    trips.push(None);
                    break;
                }
                let (mut acked, mut delivered) = (false, false);
                let limit = Duration::from_secs(5);
                while !(acked && delivered) && t.elapsed() < limit {
                    match w.read(limit.saturating_sub(t.elapsed())) {
                        Got::Frame(f) if f.kind() == 4 && f.packet_id() == Some(n) => {
                            acked = true;
                        }
                        Got::Frame(f) => {
                            if let Some(m) = parse_publish(V5, &f) {
                                delivered = true;
                                let _ = w.send(&puback(m.packet_id));
                            }
                        }
                        _ => break,
                    }
                }
                trips.push((acked && delivered).then(|| t.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            trips
        });
        Probe { stop, thread }
    }

    /// Ends the round trips: each one's time (`None`: not completed within
    /// 5 s). Panics unless there was at least one and each kept
    /// [`Probe::BOUND`]; `what` names the attack in the message.
    pub fn stop(self, what: &str) -> Vec<Option<Duration>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let trips = self.thread.join().expect("the probe thread");
        let slowest = trips.iter().flatten().max().copied();
        eprintln!(
            "{what}: {} legitimate QoS 1 round trips, slowest {slowest:?}",
            trips.len()
        );
        assert!(!trips.is_empty(), "{what}: no round trip");
        assert!(
            trips.iter().all(|t| t.is_some_and(|d| d < Probe::BOUND)),
            "{what}: a round trip missed {:?}: {trips:?}",
            Probe::BOUND
        );
        trips
    }
}
