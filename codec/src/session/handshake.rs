//! The handshake of docs/protocol.md section 2: the connection request (a WebSocket
//! URL query string or HTTP polling headers) and the connection response.
//!
//! Parsing is strict: a missing, repeated or malformed field is a typed
//! [`Violation`] at the byte offset of the field (for headers: the index of the
//! header). Unknown keys are ignored so that a newer client still connects.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::session::ids::{SessionId, SessionToken};
use crate::{Field, Violation, ViolationKind};

/// The protocol byte that starts every connection response (0x23).
pub const PROTOCOL_BYTE: u8 = 0x23;
/// The protocol version this codec speaks.
pub const PROTOCOL_VERSION: u8 = 29;

/// How the client connects: the `ty` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// `WB`: WebSocket, binary messages.
    WebSocket,
    /// `B`: HTTP polling (browsers).
    HttpPolling,
}

/// The decoded `password` field.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No password field.
    None,
    /// Type 1: a text password.
    Text(String),
    /// Type 2: binary credentials.
    Binary(Vec<u8>),
}

impl fmt::Debug for Credentials {
    /// Never shows the secret itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Text(t) => write!(f, "Text(<{} bytes>)", t.len()),
            Credentials::Binary(b) => write!(f, "Binary(<{} bytes>)", b.len()),
        }
    }
}

impl Credentials {
    /// Decodes `password`: base64 of `[1 = text | 2 = bytes][varint length][value]`.
    ///
    /// ```
    /// use sessionwire::session::handshake::Credentials;
    /// assert_eq!(
    ///     Credentials::decode("AQZzM2NyZXQ="),
    ///     Some(Credentials::Text("s3cret".into()))
    /// );
    /// assert_eq!(Credentials::decode("AQdzM2NyZXQ="), None); // length 7, 6 bytes
    /// ```
    pub fn decode(text: &str) -> Option<Credentials> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        let (&kind, rest) = raw.split_first()?;
        let (len, used) = read_varint(rest)?;
        let value = rest.get(used..)?;
        if u64::try_from(value.len()).ok()? != len {
            return None;
        }
        match kind {
            1 => String::from_utf8(value.to_vec())
                .ok()
                .map(Credentials::Text),
            2 => Some(Credentials::Binary(value.to_vec())),
            _ => None,
        }
    }

    /// Encodes as the client sends it in `password` (base64, before URL encoding).
    pub fn encode(&self) -> Option<String> {
        let (kind, value): (u8, &[u8]) = match self {
            Credentials::None => return None,
            Credentials::Text(t) => (1, t.as_bytes()),
            Credentials::Binary(b) => (2, b),
        };
        let mut raw = vec![kind];
        let mut n = value.len() as u64;
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                raw.push(low);
                break;
            }
            raw.push(low | 0x80);
        }
        raw.extend_from_slice(value);
        Some(base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// A minimal varint: 7 bits per byte, least significant group first, at most
/// 10 bytes, no redundant trailing zero group. Returns (value, bytes used).
fn read_varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        let group = u64::from(b & 0x7f);
        let shifted = group.checked_shl(7 * i as u32)?;
        if i == 9 && group > 1 {
            return None;
        }
        value |= shifted;
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None;
            }
            return Some((value, i + 1));
        }
    }
    None
}

/// The reconnection fields `c`, `cs` and `ss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// `c`: the session token; `None` when the client sent `cs`/`ss` without it
    /// (the registry answers that with 115 and `CONNECTION_LOST`).
    pub token: Option<SessionToken>,
    /// `cs`: the number of the oldest client message the client can still resend.
    pub client_oldest: u32,
    /// `ss`: the number of the last server message the client received (0: none).
    pub server_last: u32,
}

/// A parsed connection request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRequest {
    /// `ty`: the transport.
    pub connection_type: ConnectionType,
    /// `v`: the protocol version (always [`PROTOCOL_VERSION`] once parsed).
    pub version: u8,
    /// `ca`: capability bits (2 = zlib).
    pub capabilities: u8,
    /// `r`: how long the server keeps the session for a reconnection (zero: none).
    pub reconnect_timeout: Duration,
    /// `sp`: session properties.
    pub properties: BTreeMap<String, String>,
    /// `username`: the principal; `None` for an anonymous session.
    pub principal: Option<String>,
    /// `password`: the decoded credentials.
    pub credentials: Credentials,
    /// `c`, `cs`, `ss`: present on a reconnection.
    pub reconnect: Option<Reconnect>,
}

const KEYS: [&str; 10] = [
    "ty", "v", "ca", "r", "sp", "username", "password", "c", "cs", "ss",
];

/// Field values by key, as found: (value, offset).
#[derive(Default)]
struct RawFields {
    values: [Option<(String, usize)>; KEYS.len()],
}

impl RawFields {
    fn put(&mut self, key: &str, value: String, offset: usize) -> Result<(), Violation> {
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            if self.values[i].is_some() {
                return Err(Violation::new(
                    ViolationKind::HandshakeFieldDuplicated(Field::Named(KEYS[i])),
                    offset,
                ));
            }
            self.values[i] = Some((value, offset));
        }
        Ok(())
    }

    fn take(&mut self, key: &'static str) -> Option<(String, usize)> {
        let i = KEYS.iter().position(|k| *k == key)?;
        self.values[i].take()
    }

    fn require(&mut self, key: &'static str, end: usize) -> Result<(String, usize), Violation> {
        self.take(key).ok_or(Violation::new(
            ViolationKind::HandshakeFieldMissing(Field::Named(key)),
            end,
        ))
    }
}

fn malformed(key: &'static str, offset: usize) -> Violation {
    Violation::new(
        ViolationKind::HandshakeFieldMalformed(Field::Named(key)),
        offset,
    )
}

/// A decimal number of at most `max_digits` digits, no sign, no spaces.
fn decimal(text: &str, max: u64) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = text.parse().ok()?;
    (v <= max).then_some(v)
}

/// Percent-decodes one query component (`+` is a space, `%XX` a byte) and
/// checks that the result is UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_digit(*bytes.get(i + 1)?)?;
                let lo = hex_digit(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl ConnectionRequest {
    /// Parses the request of a WebSocket upgrade: the whole request target
    /// (`/diffusion?ty=WB&...`, whose path must end in `/diffusion`) or just the
    /// query string after `?`. Offsets in violations count from the start of
    /// `target`.
    ///
    /// ```
    /// use sessionwire::session::handshake::{ConnectionRequest, Credentials};
    /// let q = "/diffusion?ty=WB&v=29&ca=10&r=0&sp=%7B%22room%22%3A%227%22%7D\
    ///          &username=alice&password=AQZzM2NyZXQ%3D";
    /// let req = ConnectionRequest::from_query(q).unwrap();
    /// assert_eq!(req.principal.as_deref(), Some("alice"));
    /// assert_eq!(req.credentials, Credentials::Text("s3cret".into()));
    /// assert_eq!(req.properties["room"], "7");
    /// ```
    pub fn from_query(target: &str) -> Result<ConnectionRequest, Violation> {
        check_size(target.len())?;
        let (query, base) = match target.find('?') {
            Some(q) => {
                let path = &target[..q];
                if !path.ends_with("/diffusion") {
                    return Err(malformed("path", 0));
                }
                (&target[q + 1..], q + 1)
            }
            None if target.starts_with('/') => return Err(malformed("path", 0)),
            None => (target, 0),
        };
        let mut raw = RawFields::default();
        let mut offset = base;
        for part in query.split('&') {
            let here = offset;
            offset = offset.saturating_add(part.len()).saturating_add(1);
            if part.is_empty() {
                continue;
            }
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let value_offset = here + key.len() + 1;
            let field = KEYS.iter().find(|k| **k == key).copied();
            let Some(field) = field else { continue };
            let decoded = percent_decode(value).ok_or(malformed(field, value_offset))?;
            raw.put(key, decoded, value_offset)?;
        }
        Self::from_fields(raw, ConnectionType::WebSocket, target.len())
    }

    /// Parses the headers of an HTTP polling connect (`m=0`). Header names are
    /// matched case-insensitively; values are taken verbatim, except `sp`, which
    /// is percent-decoded when it does not already start with `{`, and
    /// `username`, which the real client percent-encodes. Offsets in
    /// violations are the index of the offending header (or the header count
    /// for a missing one).
    pub fn from_headers<'a, I>(headers: I) -> Result<ConnectionRequest, Violation>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut raw = RawFields::default();
        let mut count = 0usize;
        let mut total = 0usize;
        for (index, (name, value)) in headers.into_iter().enumerate() {
            count = index + 1;
            total = total.saturating_add(name.len()).saturating_add(value.len());
            check_size(total)?;
            let lower = name.to_ascii_lowercase();
            let Some(field) = KEYS.iter().find(|k| **k == lower).copied() else {
                continue;
            };
            let value = if (field == "sp" && !value.starts_with('{')) || field == "username" {
                percent_decode(value).ok_or(malformed(field, index))?
            } else {
                value.to_owned()
            };
            raw.put(field, value, index)?;
        }
        Self::from_fields(raw, ConnectionType::HttpPolling, count)
    }

    fn from_fields(
        mut raw: RawFields,
        expected: ConnectionType,
        end: usize,
    ) -> Result<ConnectionRequest, Violation> {
        let (ty, at) = raw.require("ty", end)?;
        let connection_type = match (ty.as_str(), expected) {
            ("WB", ConnectionType::WebSocket) => ConnectionType::WebSocket,
            ("B", ConnectionType::HttpPolling) => ConnectionType::HttpPolling,
            _ => return Err(malformed("ty", at)),
        };
        let (v, at) = raw.require("v", end)?;
        let version = decimal(&v, u64::MAX).ok_or(malformed("v", at))?;
        if version != u64::from(PROTOCOL_VERSION) {
            let shown = u32::try_from(version).unwrap_or(u32::MAX);
            return Err(Violation::new(ViolationKind::UnsupportedVersion(shown), at));
        }
        let (ca, at) = raw.require("ca", end)?;
        let capabilities = decimal(&ca, u64::from(u8::MAX)).ok_or(malformed("ca", at))? as u8;
        let (r, at) = raw.require("r", end)?;
        let reconnect_timeout =
            Duration::from_millis(decimal(&r, i64::MAX as u64).ok_or(malformed("r", at))?);
        let properties = match raw.take("sp") {
            None => BTreeMap::new(),
            Some((sp, at)) => crate::session::properties::parse(&sp)
                .map_err(|_| Violation::new(ViolationKind::MalformedSessionProperties, at))?,
        };
        let principal = match raw.take("username") {
            None => None,
            Some((u, at)) if u.is_empty() => return Err(malformed("username", at)),
            Some((u, _)) => Some(u),
        };
        let credentials = match raw.take("password") {
            None => Credentials::None,
            Some((p, at)) => Credentials::decode(&p)
                .ok_or(Violation::new(ViolationKind::MalformedCredentials, at))?,
        };
        let token = match raw.take("c") {
            None => None,
            Some((c, at)) => {
                Some(SessionToken::from_bytes(c.as_bytes()).ok_or(malformed("c", at))?)
            }
        };
        let cs = raw.take("cs");
        let ss = raw.take("ss");
        let number = |field: Option<(String, usize)>, key: &'static str| match field {
            None => Err(Violation::new(
                ViolationKind::HandshakeFieldMissing(Field::Named(key)),
                end,
            )),
            Some((text, at)) => decimal(&text, i32::MAX as u64)
                .map(|n| n as u32)
                .ok_or(malformed(key, at)),
        };
        let reconnect = if token.is_none() && cs.is_none() && ss.is_none() {
            None
        } else {
            Some(Reconnect {
                token,
                client_oldest: number(cs, "cs")?,
                server_last: number(ss, "ss")?,
            })
        };
        Ok(ConnectionRequest {
            connection_type,
            version: PROTOCOL_VERSION,
            capabilities,
            reconnect_timeout,
            properties,
            principal,
            credentials,
            reconnect,
        })
    }
}

/// The largest connection request accepted: the request target, or the
/// connection headers' names and values together. A real request is a few
/// hundred bytes; session properties make it grow, but not this far.
pub const MAX_REQUEST_LEN: usize = 16 * 1024;

fn check_size(size: usize) -> Result<(), Violation> {
    if size > MAX_REQUEST_LEN {
        return Err(Violation::new(
            ViolationKind::MessageTooLarge {
                size: size as u64,
                limit: MAX_REQUEST_LEN,
            },
            MAX_REQUEST_LEN,
        ));
    }
    Ok(())
}

/// The response code of a connection response (section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResponseCode {
    /// 100: connected.
    Connected = 100,
    /// 102: protocol version not supported.
    VersionNotSupported = 102,
    /// 105: reconnected.
    Reconnected = 105,
    /// 106: reconnected with message loss.
    ReconnectedWithLoss = 106,
    /// 113: rejected: licence or client limit.
    ClientLimit = 113,
    /// 114: reconnection not supported.
    ReconnectionNotSupported = 114,
    /// 115: protocol error.
    ProtocolError = 115,
    /// 116: authentication failed.
    AuthenticationFailed = 116,
    /// 117: unknown session.
    UnknownSession = 117,
    /// 118: reconnection failed: message loss.
    ReconnectionFailed = 118,
    /// 119: server not ready.
    ServerNotReady = 119,
}

impl ResponseCode {
    /// Every code, in numeric order.
    pub const ALL: [ResponseCode; 11] = [
        ResponseCode::Connected,
        ResponseCode::VersionNotSupported,
        ResponseCode::Reconnected,
        ResponseCode::ReconnectedWithLoss,
        ResponseCode::ClientLimit,
        ResponseCode::ReconnectionNotSupported,
        ResponseCode::ProtocolError,
        ResponseCode::AuthenticationFailed,
        ResponseCode::UnknownSession,
        ResponseCode::ReconnectionFailed,
        ResponseCode::ServerNotReady,
    ];

    /// The code byte.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The code for this byte; `None` for an unknown code.
    pub fn from_code(code: u8) -> Option<ResponseCode> {
        ResponseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the response carries the session fields (100, 105 and 106).
    pub const fn has_session(self) -> bool {
        matches!(
            self,
            ResponseCode::Connected | ResponseCode::Reconnected | ResponseCode::ReconnectedWithLoss
        )
    }

    /// The code a server answers a rejected connection request with: 102 for an
    /// unsupported version, 115 for any other fault in the request.
    pub fn for_violation(violation: &Violation) -> ResponseCode {
        match violation.kind() {
            ViolationKind::UnsupportedVersion(_) => ResponseCode::VersionNotSupported,
            _ => ResponseCode::ProtocolError,
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ResponseCode::Connected => "CONNECTED",
            ResponseCode::VersionNotSupported => "VERSION_NOT_SUPPORTED",
            ResponseCode::Reconnected => "RECONNECTED",
            ResponseCode::ReconnectedWithLoss => "RECONNECTED_WITH_MESSAGE_LOSS",
            ResponseCode::ClientLimit => "CLIENT_LIMIT",
            ResponseCode::ReconnectionNotSupported => "RECONNECTION_NOT_SUPPORTED",
            ResponseCode::ProtocolError => "PROTOCOL_ERROR",
            ResponseCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ResponseCode::UnknownSession => "UNKNOWN_SESSION",
            ResponseCode::ReconnectionFailed => "RECONNECTION_FAILED",
            ResponseCode::ServerNotReady => "SERVER_NOT_READY",
        };
        write!(f, "{} {}", self.code(), name)
    }
}

/// The session fields of a 100, 105 or 106 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionDetails {
    /// The session id.
    pub id: SessionId,
    /// The session token the client echoes on reconnection.
    pub token: SessionToken,
    /// The system ping period in ms (`<= 0`: no idle checking).
    pub ping_period_ms: i64,
    /// For 105: the next client message number the server expects; for 100
    /// and 106: the server's maximum message size.
    pub value: i32,
}

/// A connection response: the first WebSocket message, or the body of the
/// answer to an HTTP `m=0` connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionResponse {
    /// The response code.
    pub code: ResponseCode,
    /// The session fields, present exactly for 100, 105 and 106.
    pub session: Option<SessionDetails>,
}

impl ConnectionResponse {
    /// Length of a response with session fields.
    pub const SESSION_LEN: usize = 3 + 16 + SessionToken::LEN + 8 + 4;

    /// A response without session fields (a rejection).
    pub const fn rejection(code: ResponseCode) -> ConnectionResponse {
        ConnectionResponse {
            code,
            session: None,
        }
    }

    /// Appends the response bytes to `out`. Session fields are written when
    /// present; a well-formed response has them exactly for 100, 105 and 106.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(PROTOCOL_BYTE);
        out.put_u8(PROTOCOL_VERSION);
        out.put_u8(self.code.code());
        if let Some(s) = &self.session {
            out.put_i64(s.id.server);
            out.put_i64(s.id.value);
            out.put_slice(s.token.as_bytes());
            out.put_i64(s.ping_period_ms);
            out.put_i32(s.value);
        }
    }

    /// The response as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(Self::SESSION_LEN);
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes a response as the client does: the protocol byte, the version,
    /// a known code, and the session fields exactly when the code has them.
    ///
    /// ```
    /// use sessionwire::session::handshake::{ConnectionResponse, ResponseCode};
    /// let r = ConnectionResponse::decode(&[0x23, 29, 117]).unwrap();
    /// assert_eq!(r.code, ResponseCode::UnknownSession);
    /// assert!(ConnectionResponse::decode(&[0x24, 29, 117]).is_err());
    /// ```
    pub fn decode(input: &[u8]) -> Result<ConnectionResponse, Violation> {
        let truncated =
            |name| Violation::new(ViolationKind::Truncated(Field::Named(name)), input.len());
        let &protocol = input.first().ok_or(truncated("protocol byte"))?;
        if protocol != PROTOCOL_BYTE {
            return Err(Violation::new(
                ViolationKind::MalformedField(Field::Named("protocol byte")),
                0,
            ));
        }
        let &version = input.get(1).ok_or(truncated("protocol version"))?;
        if version != PROTOCOL_VERSION {
            return Err(Violation::new(
                ViolationKind::UnsupportedVersion(u32::from(version)),
                1,
            ));
        }
        let &code_byte = input.get(2).ok_or(truncated("response code"))?;
        let code = ResponseCode::from_code(code_byte).ok_or(Violation::new(
            ViolationKind::MalformedField(Field::Named("response code")),
            2,
        ))?;
        if !code.has_session() {
            if input.len() > 3 {
                return Err(Violation::new(ViolationKind::TrailingBytes, 3));
            }
            return Ok(ConnectionResponse::rejection(code));
        }
        let be8 = |at: usize, name| -> Result<[u8; 8], Violation> {
            input
                .get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or(truncated(name))
        };
        let server = i64::from_be_bytes(be8(3, "session id")?);
        let value = i64::from_be_bytes(be8(11, "session id")?);
        let token_bytes = input.get(19..43).ok_or(truncated("session token"))?;
        let token = SessionToken::from_bytes(token_bytes).ok_or(Violation::new(
            ViolationKind::MalformedField(Field::Named("session token")),
            19,
        ))?;
        let ping_period_ms = i64::from_be_bytes(be8(43, "ping period")?);
        let last: [u8; 4] = input
            .get(51..55)
            .and_then(|s| s.try_into().ok())
            .ok_or(truncated("response value"))?;
        if input.len() > Self::SESSION_LEN {
            return Err(Violation::new(
                ViolationKind::TrailingBytes,
                Self::SESSION_LEN,
            ));
        }
        Ok(ConnectionResponse {
            code,
            session: Some(SessionDetails {
                id: SessionId { server, value },
                token,
                ping_period_ms,
                value: i32::from_be_bytes(last),
            }),
        })
    }
}

/// Percent-encodes `text` for a query component or a header value: every
/// byte but the URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

impl ConnectionRequest {
    /// The request's fields before any URL encoding, in the order the real
    /// client sends them: `ty`, `v`, `ca`, `r`, then `sp`, `username`,
    /// `password`, `c`, `cs`, `ss` when present.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let ty = match self.connection_type {
            ConnectionType::WebSocket => "WB",
            ConnectionType::HttpPolling => "B",
        };
        let mut f = vec![
            ("ty", ty.to_owned()),
            ("v", self.version.to_string()),
            ("ca", self.capabilities.to_string()),
            ("r", self.reconnect_timeout.as_millis().to_string()),
        ];
        if !self.properties.is_empty() {
            f.push(("sp", crate::session::properties::encode(&self.properties)));
        }
        if let Some(p) = &self.principal {
            f.push(("username", p.clone()));
        }
        if let Some(pw) = self.credentials.encode() {
            f.push(("password", pw));
        }
        if let Some(rc) = &self.reconnect {
            if let Some(token) = &rc.token {
                f.push(("c", token.as_str().to_owned()));
            }
            f.push(("cs", rc.client_oldest.to_string()));
            f.push(("ss", rc.server_last.to_string()));
        }
        f
    }

    /// The query string of a WebSocket connect (without the `?`), which
    /// [`from_query`](Self::from_query) reads back to this request. Prefix
    /// it with the path, e.g. `/diffusion?`.
    ///
    /// ```
    /// use sessionwire::session::handshake::{ConnectionRequest, Credentials};
    /// let mut req = ConnectionRequest::from_query("ty=WB&v=29&ca=8&r=0").unwrap();
    /// req.principal = Some("alice".into());
    /// req.credentials = Credentials::Text("s3cret".into());
    /// let q = req.to_query();
    /// assert_eq!(q, "ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D");
    /// assert_eq!(ConnectionRequest::from_query(&q), Ok(req));
    /// ```
    pub fn to_query(&self) -> String {
        let mut q = String::new();
        for (i, (k, v)) in self.fields().into_iter().enumerate() {
            if i > 0 {
                q.push('&');
            }
            q.push_str(k);
            q.push('=');
            percent_encode(&v, &mut q);
        }
        q
    }

    /// The headers of an HTTP polling connect (without `m: 0`), which
    /// [`from_headers`](Self::from_headers) reads back to this request.
    /// Every value is ASCII: `sp` and `username` are percent-encoded.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        self.fields()
            .into_iter()
            .map(|(k, v)| match k {
                "sp" | "username" => {
                    let mut e = String::new();
                    percent_encode(&v, &mut e);
                    (k, e)
                }
                _ => (k, v),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OBSERVED: &str = "/diffusion?ty=WB&v=29&ca=10&r=0&sp=%7B%22room%22%3A%227%22%2C%22%24Environment%22%3A%22NODE_linux_20.20.2%22%7D&username=alice&password=AQZzM2NyZXQ%3D";

    fn parse(q: &str) -> Result<ConnectionRequest, Violation> {
        ConnectionRequest::from_query(q)
    }

    fn kind(q: &str) -> ViolationKind {
        parse(q).unwrap_err().kind()
    }

    #[test]
    fn section_2_observed_websocket_request_parses() {
        let r = parse(OBSERVED).unwrap();
        assert_eq!(r.connection_type, ConnectionType::WebSocket);
        assert_eq!(r.version, 29);
        assert_eq!(r.capabilities, 10);
        assert_eq!(r.reconnect_timeout, Duration::ZERO);
        assert_eq!(r.properties.len(), 2);
        assert_eq!(r.properties["$Environment"], "NODE_linux_20.20.2");
        assert_eq!(r.principal.as_deref(), Some("alice"));
        assert_eq!(r.credentials, Credentials::Text("s3cret".into()));
        assert_eq!(r.reconnect, None);
        // Without the path too.
        assert_eq!(parse(&OBSERVED["/diffusion?".len()..]).unwrap(), r);
    }

    #[test]
    fn section_2_password_is_base64_of_type_length_value() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode("AQZzM2NyZXQ=")
            .unwrap();
        assert_eq!(raw, [0x01, 0x06, 0x73, 0x33, 0x63, 0x72, 0x65, 0x74]);
        let c = Credentials::Text("s3cret".into());
        assert_eq!(c.encode().as_deref(), Some("AQZzM2NyZXQ="));
        let b = Credentials::Binary(vec![0, 1, 2, 255]);
        assert_eq!(Credentials::decode(&b.encode().unwrap()), Some(b));
        let long = Credentials::Text("x".repeat(300));
        assert_eq!(Credentials::decode(&long.encode().unwrap()), Some(long));
        assert_eq!(Credentials::None.encode(), None);
    }

    #[test]
    fn section_2_bad_credential_encoding_is_a_violation() {
        for bad in [
            "AQZzM2NyZXQ",  // missing padding
            "AwZzM2NyZXQ=", // type 3
            "AQdzM2NyZXQ=", // length 7, value of 6
            "AQVzM2NyZXQ=", // length 5, value of 6
            "AQ==",         // no length
            "",             // nothing
            "AYAAczNjcmV0", // non-minimal varint length
            "AQL/+w==",     // text that is not UTF-8
            "!!!!",         // not base64
        ] {
            assert_eq!(Credentials::decode(bad), None, "{bad}");
            let q = format!("ty=WB&v=29&ca=10&r=0&username=a&password={bad}");
            assert_eq!(kind(&q), ViolationKind::MalformedCredentials, "{bad}");
        }
    }

    #[test]
    fn section_2_missing_required_field_is_named() {
        for (q, field) in [
            ("v=29&ca=10&r=0", "ty"),
            ("ty=WB&ca=10&r=0", "v"),
            ("ty=WB&v=29&r=0", "ca"),
            ("ty=WB&v=29&ca=10", "r"),
            ("ty=WB&v=29&ca=10&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&ss=0", "cs"),
            ("ty=WB&v=29&ca=10&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=1", "ss"),
        ] {
            let v = parse(q).unwrap_err();
            assert_eq!(
                v.kind(),
                ViolationKind::HandshakeFieldMissing(Field::Named(field))
            );
            assert_eq!(v.close_reason(), crate::CloseReason::Aborted);
            assert_eq!(ResponseCode::for_violation(&v), ResponseCode::ProtocolError);
        }
    }

    #[test]
    fn section_2_malformed_field_is_named_with_its_offset() {
        for (q, field) in [
            ("ty=WS&v=29&ca=10&r=0", "ty"),
            ("ty=B&v=29&ca=10&r=0", "ty"),
            ("ty=WB&v=x&ca=10&r=0", "v"),
            ("ty=WB&v=29&ca=256&r=0", "ca"),
            ("ty=WB&v=29&ca=-1&r=0", "ca"),
            ("ty=WB&v=29&ca=10&r=1e3", "r"),
            ("ty=WB&v=29&ca=10&r=", "r"),
            ("ty=WB&v=29&ca=10&r=99999999999999999999", "r"),
            ("ty=WB&v=29&ca=10&r=0&username=", "username"),
            ("ty=WB&v=29&ca=10&r=0&username=%ff", "username"),
            ("ty=WB&v=29&ca=10&r=0&username=%4", "username"),
            ("ty=WB&v=29&ca=10&r=0&c=short&cs=1&ss=0", "c"),
            (
                "ty=WB&v=29&ca=10&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=x&ss=0",
                "cs",
            ),
            (
                "ty=WB&v=29&ca=10&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=1&ss=2147483648",
                "ss",
            ),
            ("/other?ty=WB&v=29&ca=10&r=0", "path"),
        ] {
            let v = parse(q).unwrap_err();
            assert_eq!(
                v.kind(),
                ViolationKind::HandshakeFieldMalformed(Field::Named(field)),
                "{q}"
            );
        }
        let v = parse("ty=WB&v=29&ca=1x&r=0").unwrap_err();
        assert_eq!(v.offset(), "ty=WB&v=29&ca=".len());
    }

    #[test]
    fn section_6_polling_username_is_percent_decoded_as_the_real_client_encodes_it() {
        let headers = [
            ("ty", "B"),
            ("v", "29"),
            ("ca", "10"),
            ("r", "0"),
            ("username", "alice%40example.com"),
            ("password", "AQZzM2NyZXQ="),
        ];
        let req = ConnectionRequest::from_headers(headers).unwrap();
        assert_eq!(req.principal.as_deref(), Some("alice@example.com"));
        assert_eq!(req.credentials, Credentials::Text("s3cret".into()));
        let bad = [
            ("ty", "B"),
            ("v", "29"),
            ("ca", "10"),
            ("r", "0"),
            ("username", "%ff"),
        ];
        assert_eq!(
            ConnectionRequest::from_headers(bad).unwrap_err().kind(),
            ViolationKind::HandshakeFieldMalformed(Field::Named("username"))
        );
    }

    #[test]
    fn section_2_repeated_field_is_rejected() {
        assert_eq!(
            kind("ty=WB&v=29&v=29&ca=10&r=0"),
            ViolationKind::HandshakeFieldDuplicated(Field::Named("v"))
        );
    }

    #[test]
    fn section_2_unsupported_version_answers_102() {
        let v = parse("ty=WB&v=28&ca=10&r=0").unwrap_err();
        assert_eq!(v.kind(), ViolationKind::UnsupportedVersion(28));
        assert_eq!(
            ResponseCode::for_violation(&v),
            ResponseCode::VersionNotSupported
        );
        assert_eq!(
            kind("ty=WB&v=99999999999&ca=10&r=0"),
            ViolationKind::UnsupportedVersion(u32::MAX)
        );
    }

    #[test]
    fn section_2_malformed_sp_json_is_rejected() {
        for sp in [
            "%7B",
            "%5B%5D",
            "%7B%22a%22%3A1%7D",
            "x",
            "%7B%22a%22%3Anull%7D",
        ] {
            let q = format!("ty=WB&v=29&ca=10&r=0&sp={sp}");
            assert_eq!(kind(&q), ViolationKind::MalformedSessionProperties, "{sp}");
        }
        let ok = parse("ty=WB&v=29&ca=10&r=0&sp=%7B%7D").unwrap();
        assert!(ok.properties.is_empty());
    }

    #[test]
    fn section_2_reconnect_fields_parse() {
        let r = parse("ty=WB&v=29&ca=10&r=5000&c=abcdefghijklmnopqrstuvwx&cs=3&ss=7").unwrap();
        assert_eq!(r.reconnect_timeout, Duration::from_secs(5));
        let rc = r.reconnect.unwrap();
        assert_eq!(rc.token.unwrap().as_str(), "abcdefghijklmnopqrstuvwx");
        assert_eq!((rc.client_oldest, rc.server_last), (3, 7));
        let no_token = parse("ty=WB&v=29&ca=10&r=5000&cs=3&ss=7").unwrap();
        assert_eq!(no_token.reconnect.unwrap().token, None);
    }

    #[test]
    fn section_2_oversized_request_is_rejected_before_parsing() {
        let long = format!("{OBSERVED}&x={}", "y".repeat(MAX_REQUEST_LEN));
        let v = parse(&long).unwrap_err();
        assert!(matches!(v.kind(), ViolationKind::MessageTooLarge { .. }));
    }

    #[test]
    fn section_6_http_connect_headers_parse() {
        let headers = [
            ("ty", "B"),
            ("V", "29"),
            ("ca", "8"),
            ("r", "1000"),
            ("sp", "%7B%22room%22%3A%227%22%7D"),
            ("username", "alice"),
            ("password", "AQZzM2NyZXQ="),
            ("m", "0"),
        ];
        let r = ConnectionRequest::from_headers(headers).unwrap();
        assert_eq!(r.connection_type, ConnectionType::HttpPolling);
        assert_eq!(r.properties["room"], "7");
        assert_eq!(r.credentials, Credentials::Text("s3cret".into()));
        let raw_sp = [
            ("ty", "B"),
            ("v", "29"),
            ("ca", "8"),
            ("r", "0"),
            ("sp", "{\"a\":\"b\"}"),
        ];
        let r = ConnectionRequest::from_headers(raw_sp).unwrap();
        assert_eq!(r.properties["a"], "b");
        let ws = [("ty", "WB"), ("v", "29"), ("ca", "8"), ("r", "0")];
        let v = ConnectionRequest::from_headers(ws).unwrap_err();
        assert_eq!(
            v.kind(),
            ViolationKind::HandshakeFieldMalformed(Field::Named("ty"))
        );
        assert_eq!(v.offset(), 0);
        let missing = [("ty", "B"), ("v", "29"), ("ca", "8")];
        let v = ConnectionRequest::from_headers(missing).unwrap_err();
        assert_eq!(
            v.kind(),
            ViolationKind::HandshakeFieldMissing(Field::Named("r"))
        );
    }

    fn details(value: i32) -> SessionDetails {
        SessionDetails {
            id: SessionId {
                server: 0x0102030405060708,
                value: -2,
            },
            token: SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap(),
            ping_period_ms: 90_000,
            value,
        }
    }

    #[test]
    fn section_2_every_response_code_round_trips() {
        for code in ResponseCode::ALL {
            let resp = ConnectionResponse {
                code,
                session: code.has_session().then(|| details(32768)),
            };
            let bytes = resp.to_bytes();
            assert_eq!(&bytes[..3], &[0x23, 29, code.code()]);
            let len = if code.has_session() { 55 } else { 3 };
            assert_eq!(bytes.len(), len, "{code}");
            assert_eq!(ConnectionResponse::decode(&bytes), Ok(resp), "{code}");
            // Every proper prefix is truncated, fed byte by byte.
            for n in 0..bytes.len() {
                let v = ConnectionResponse::decode(&bytes[..n]).unwrap_err();
                assert!(
                    matches!(v.kind(), ViolationKind::Truncated(_)),
                    "{code} {n}"
                );
            }
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(
                ConnectionResponse::decode(&long).unwrap_err().kind(),
                ViolationKind::TrailingBytes
            );
        }
    }

    #[test]
    fn section_2_response_layout_is_big_endian() {
        let r = ConnectionResponse {
            code: ResponseCode::Reconnected,
            session: Some(details(7)),
        };
        let b = r.to_bytes();
        assert_eq!(&b[3..11], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &b[11..19],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(&b[19..43], b"ABCDEFGHIJKLMNOPQRSTUVWX");
        assert_eq!(&b[43..51], &90_000i64.to_be_bytes());
        assert_eq!(&b[51..55], &[0, 0, 0, 7]);
    }

    #[test]
    fn section_7_bad_response_is_a_handshake_error() {
        assert!(ConnectionResponse::decode(&[0x24, 29, 100]).is_err());
        assert_eq!(
            ConnectionResponse::decode(&[0x23, 28, 100])
                .unwrap_err()
                .kind(),
            ViolationKind::UnsupportedVersion(28)
        );
        for unknown in [0u8, 101, 103, 104, 107, 112, 120, 255] {
            assert!(ConnectionResponse::decode(&[0x23, 29, unknown]).is_err());
        }
        let mut b = ConnectionResponse {
            code: ResponseCode::Connected,
            session: Some(details(1)),
        }
        .to_bytes()
        .to_vec();
        b[20] = b' ';
        assert_eq!(
            ConnectionResponse::decode(&b).unwrap_err().kind(),
            ViolationKind::MalformedField(Field::Named("session token"))
        );
    }

    fn any_request(connection_type: ConnectionType) -> impl Strategy<Value = ConnectionRequest> {
        let token = proptest::collection::vec(0x21u8..=0x7e, SessionToken::LEN)
            .prop_map(|b| SessionToken::from_bytes(&b).expect("printable"));
        let reconnect = (
            proptest::option::of(token),
            0..=i32::MAX as u32,
            0..=i32::MAX as u32,
        )
            .prop_map(|(token, client_oldest, server_last)| Reconnect {
                token,
                client_oldest,
                server_last,
            });
        let credentials = prop_oneof![
            Just(Credentials::None),
            ".*".prop_map(Credentials::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Credentials::Binary),
        ];
        (
            any::<u8>(),
            0..=i64::MAX as u64,
            proptest::collection::btree_map(".*", ".*", 0..4),
            proptest::option::of(".+"),
            credentials,
            proptest::option::of(reconnect),
        )
            .prop_map(
                move |(capabilities, r, properties, principal, credentials, reconnect)| {
                    ConnectionRequest {
                        connection_type,
                        version: PROTOCOL_VERSION,
                        capabilities,
                        reconnect_timeout: Duration::from_millis(r),
                        properties,
                        principal,
                        credentials,
                        reconnect,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn section_2_to_query_then_from_query_is_the_identity(
            req in any_request(ConnectionType::WebSocket)
        ) {
            let q = req.to_query();
            prop_assert_eq!(ConnectionRequest::from_query(&q), Ok(req.clone()));
            prop_assert_eq!(ConnectionRequest::from_query(&format!("/diffusion?{q}")), Ok(req));
        }

        #[test]
        fn section_2_to_headers_then_from_headers_is_the_identity(
            req in any_request(ConnectionType::HttpPolling)
        ) {
            let headers = req.to_headers();
            prop_assert!(headers.iter().all(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b))));
            let parsed = ConnectionRequest::from_headers(headers.iter().map(|(k, v)| (*k, v.as_str())));
            prop_assert_eq!(parsed, Ok(req));
        }
    }

    #[test]
    fn credentials_debug_shows_the_kind_and_length_never_the_secret() {
        assert_eq!(format!("{:?}", Credentials::None), "None");
        assert_eq!(
            format!("{:?}", Credentials::Text("s3cret".into())),
            "Text(<6 bytes>)"
        );
        assert_eq!(
            format!("{:?}", Credentials::Binary(vec![1, 2, 3])),
            "Binary(<3 bytes>)"
        );
    }

    fn password(raw: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn section_2_password_length_is_a_minimal_varint() {
        let mut raw = vec![1, 0x86, 0x00];
        raw.extend_from_slice(b"s3cret");
        assert_eq!(Credentials::decode(&password(&raw)), None, "6 as 86 00");
        raw.splice(1..3, [0x06]);
        assert_eq!(
            Credentials::decode(&password(&raw)),
            Some(Credentials::Text("s3cret".into()))
        );
    }

    #[test]
    fn section_2_password_length_holds_at_most_64_bits() {
        let mut max = [0xff; 10];
        max[9] = 0x01;
        assert_eq!(read_varint(&max), Some((u64::MAX, 10)));
        let mut top = [0x80; 10];
        top[9] = 0x01;
        assert_eq!(read_varint(&top), Some((1 << 63, 10)));
        // A tenth group above 1 would shift bits past the 64th.
        max[9] = 0x02;
        assert_eq!(read_varint(&max), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
        // 6 with a tenth group of 2 (2^64 + 6): not 6.
        let mut raw = vec![1, 0x86];
        raw.extend_from_slice(&[0x80; 8]);
        raw.push(0x02);
        raw.extend_from_slice(b"s3cret");
        assert_eq!(Credentials::decode(&password(&raw)), None);
    }

    #[test]
    fn section_2_numbers_are_at_most_20_plain_digits() {
        let twenty = format!("{:0>20}", 29);
        let r = parse(&format!("ty=WB&v={twenty}&ca=10&r=0")).unwrap();
        assert_eq!(r.version, 29);
        for v in [format!("0{twenty}"), "+29".to_owned(), String::new()] {
            assert_eq!(
                kind(&format!("ty=WB&v={v}&ca=10&r=0")),
                ViolationKind::HandshakeFieldMalformed(Field::Named("v")),
                "v={v}"
            );
        }
    }

    #[test]
    fn section_2_percent_escapes_take_either_case_of_hex_digit() {
        for q in [
            "ty=WB&v=29&ca=10&r=0&username=caf%c3%a9+au+lait",
            "ty=WB&v=29&ca=10&r=0&username=caf%C3%A9+au+lait",
            "ty=WB&v=29&ca=10&r=0&username=caf%c3%A9%20au%20lait",
        ] {
            assert_eq!(parse(q).unwrap().principal.as_deref(), Some("café au lait"));
        }
        assert_eq!(
            kind("ty=WB&v=29&ca=10&r=0&username=caf%g3"),
            ViolationKind::HandshakeFieldMalformed(Field::Named("username"))
        );
    }

    #[test]
    fn section_2_offsets_count_from_the_start_of_the_request_target() {
        let q = "/diffusion?ty=WB&v=29&ca=1x&r=0";
        assert_eq!(
            parse(q).unwrap_err().offset(),
            "/diffusion?ty=WB&v=29&ca=".len()
        );
        // A path without a query is a path, not a query string.
        let v = parse("/diffusion").unwrap_err();
        assert_eq!(
            (v.kind(), v.offset()),
            (
                ViolationKind::HandshakeFieldMalformed(Field::Named("path")),
                0
            )
        );
    }

    #[test]
    fn section_6_a_missing_header_is_reported_at_the_header_count() {
        let v =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8")]).unwrap_err();
        assert_eq!(
            (v.kind(), v.offset()),
            (ViolationKind::HandshakeFieldMissing(Field::Named("r")), 3)
        );
    }

    #[test]
    fn section_2_a_request_of_exactly_16_kib_is_parsed() {
        let base = "ty=WB&v=29&ca=8&r=0&x=";
        let q = format!("{base}{}", "y".repeat(16 * 1024 - base.len()));
        assert!(parse(&q).is_ok());
        let v = parse(&format!("{q}y")).unwrap_err();
        assert_eq!(
            v.kind(),
            ViolationKind::MessageTooLarge {
                size: 16 * 1024 + 1,
                limit: 16 * 1024
            }
        );
        // Headers: the names and values together.
        let pad = "y".repeat(16 * 1024 - "tyBv29ca8r0x".len());
        let mut headers = [
            ("ty", "B"),
            ("v", "29"),
            ("ca", "8"),
            ("r", "0"),
            ("x", &pad),
        ];
        assert!(ConnectionRequest::from_headers(headers.iter().copied()).is_ok());
        headers[4].0 = "xx"; // one byte more
        assert!(matches!(
            ConnectionRequest::from_headers(headers.iter().copied())
                .unwrap_err()
                .kind(),
            ViolationKind::MessageTooLarge { .. }
        ));
    }

    #[test]
    fn section_2_session_fields_come_with_100_105_and_106_only() {
        for code in ResponseCode::ALL {
            assert_eq!(
                code.has_session(),
                matches!(code.code(), 100 | 105 | 106),
                "{code}"
            );
        }
        assert_eq!(
            ConnectionResponse::decode(&[0x23, 29, 117]),
            Ok(ConnectionResponse::rejection(ResponseCode::UnknownSession))
        );
    }

    #[test]
    fn response_codes_print_their_number_and_name() {
        for (code, shown) in [
            (ResponseCode::Connected, "100 CONNECTED"),
            (
                ResponseCode::ReconnectedWithLoss,
                "106 RECONNECTED_WITH_MESSAGE_LOSS",
            ),
            (ResponseCode::ReconnectionFailed, "118 RECONNECTION_FAILED"),
            (ResponseCode::ServerNotReady, "119 SERVER_NOT_READY"),
        ] {
            assert_eq!(code.to_string(), shown);
        }
    }

    #[test]
    fn section_2_to_query_escapes_all_but_the_unreserved_bytes() {
        let mut req = parse("ty=WB&v=29&ca=8&r=0").unwrap();
        req.principal = Some("Az09-._~ /é".into());
        assert_eq!(
            req.to_query(),
            "ty=WB&v=29&ca=8&r=0&username=Az09-._~%20%2F%C3%A9"
        );
        assert_eq!(
            req.to_headers()[4],
            ("username", "Az09-._~%20%2F%C3%A9".to_owned())
        );
    }
}
