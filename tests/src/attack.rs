//! Raw-socket attackers for the hostile-client tests: TCP connections bound
//! to a chosen loopback source address (Linux routes all of 127/8 to `lo`),
//! hand-written HTTP heads and WebSocket frames, and bounded reads of the
//! answers. Every read here is bounded in bytes; callers bound it in time.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use sessionwire::session::handshake::Credentials;
use sessionwire::session::ConnectionResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The most bytes of an answer the helpers read.
const MAX_ANSWER: usize = 256 * 1024;

/// A valid `Sec-WebSocket-Key` (the RFC 6455 example).
pub const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `n`-th attacker address: 127.1.x.y, never 127.0.0.1.
pub fn attacker(n: u16) -> Ipv4Addr {
    let [hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(127, 1, hi, lo)
}

/// A TCP connection to `server` from `source` (any port).
pub async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP polling connect (`m: 0`) with a text password, asking the server
/// to close the connection after its answer.
pub fn connect_head(server: SocketAddr, principal: &str, password: &str) -> String {
    let password = Credentials::Text(password.to_owned())
        .encode()
        .unwrap_or_default();
    format!(
        "POST /diffusion HTTP/1.1\r\nhost: {server}\r\nm: 0\r\nty: B\r\nv: 29\r\nca: 8\r\nr: 0\r\n\
         username: {principal}\r\npassword: {password}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// An anonymous HTTP polling connect (`m: 0`) asking for a reconnection wait
/// of `r` ms, asking the server to close the connection after its answer.
pub fn waiting_connect_head(server: SocketAddr, r: u64) -> String {
    format!(
        "POST /diffusion HTTP/1.1\r\nhost: {server}\r\nm: 0\r\nty: B\r\nv: 29\r\nca: 8\r\nr: {r}\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// A WebSocket upgrade request for an anonymous session with `key`.
pub fn upgrade_head(server: SocketAddr, key: &str) -> String {
    format!(
        "GET /diffusion?ty=WB&v=29&ca=8&r=0 HTTP/1.1\r\nhost: {server}\r\nupgrade: websocket\r\n\
         connection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n\r\n"
    )
}

/// An answer's head: the status code and the header lines (lower-cased
/// names), and what was read past the head.
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `name: value` per header, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Bytes read after the empty line.
    pub rest: Vec<u8>,
}

impl Head {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an answer's head; `Ok(None)` when the server closed first.
pub async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Head>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, text.clone()))?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            return Ok(Some(Head {
                status,
                headers,
                rest: buf[end + 4..].to_vec(),
            }));
        }
        if buf.len() > MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes (keeping at most 256 KiB); `Ok(bytes)`
/// when it closed with a FIN.
pub async fn read_to_close(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() < MAX_ANSWER {
            out.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends an HTTP polling connect from `source` and decodes the connection
/// response in the answer's body.
pub async fn http_connect_from(
    source: Ipv4Addr,
    server: SocketAddr,
    principal: &str,
    password: &str,
) -> io::Result<ConnectionResponse> {
    connect_with_head(source, server, &connect_head(server, principal, password)).await
}

/// Sends the HTTP polling connect `head` from `source` and decodes the
/// connection response in the answer's body.
pub async fn connect_with_head(
    source: Ipv4Addr,
    server: SocketAddr,
    head: &str,
) -> io::Result<ConnectionResponse> {
    let mut s = connect_from(source, server).await?;
    s.write_all(head.as_bytes()).await?;
    let head = read_head(&mut s)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
    let mut body = head.rest;
    body.extend(read_to_close(&mut s).await?);
    ConnectionResponse::decode(&body)
        .map_err(|v| io::Error::new(io::ErrorKind::InvalidData, v.to_string()))
}

/// A client frame (masked, as RFC 6455 section 5.3 requires) with `opcode`
/// and `payload` (under 126 bytes).
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The frames (opcode, payload) in unmasked server bytes; stops at a
/// truncated frame.
pub fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => break,
            126 => break,
            n => (usize::from(n), 2),
        };
        let Some(payload) = bytes.get(header..header + len) else {
            break;
        };
        out.push((opcode, payload.to_vec()));
        bytes = &bytes[header + len..];
    }
    out
}
