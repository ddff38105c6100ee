//! A protocol-level test client for the reference server, and the load
//! generator behind `sessionwire load` ([`load`], and [`throughput`] for
//! request/response throughput).
//!
//! The client is built on the codec: it connects
//! over WebSocket ([`WsClient`]) or HTTP polling ([`HttpClient`]), decodes the
//! connection response with [`ConnectionResponse::decode`], sends and receives
//! [`Message`](sessionwire::Message)s and answers SYSTEM_PING, and can also
//! misbehave on purpose: raw bytes, unanswered pings, a socket it stops
//! reading, a message trickled byte by byte, arbitrary HTTP sequence numbers.
//!
//! The client has no timeouts of its own: wrap its futures in
//! [`tokio::time::timeout`] where a test must stay bounded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessionwire_client::ClientError> {
//! use sessionwire_client::{ConnectOptions, WsClient};
//! let addr = "127.0.0.1:8080".parse().unwrap();
//! let mut client = WsClient::connect(addr, &ConnectOptions::default()).await?;
//! let round_trip = client.user_ping().await?;
//! println!("{round_trip:?}");
//! client.close().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod http;
pub mod load;
pub mod mqtt_load;
pub mod throughput;
mod ws;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sessionwire::session::handshake::{
    ConnectionRequest, ConnectionResponse, ConnectionType, Credentials, Reconnect, PROTOCOL_VERSION,
};
use sessionwire::Violation;

pub use self::http::{full, request, trickled_body, Body, HttpClient, HttpReply, PollReply};
pub use self::ws::{ping_response, user_ping, Inbound, WsClient};
/// The WebSocket message type of the client's WebSocket layer.
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The default connection path (section 2: a custom path ends in `/diffusion`).
pub const DEFAULT_PATH: &str = "/diffusion";

/// What a client puts in its connection request (docs/protocol.md section 2), and
/// how it sets up its socket.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Request path; must end in `/diffusion` for the server to accept it.
    pub path: String,
    /// `v`: the protocol version (29 unless a test wants another).
    pub version: u32,
    /// `ca`: capability bits.
    pub capabilities: u8,
    /// `r`: how long the server should keep the session for a reconnection
    /// (zero: no reconnection).
    pub reconnect_timeout: Duration,
    /// `sp`: session properties.
    pub properties: BTreeMap<String, String>,
    /// `username`.
    pub principal: Option<String>,
    /// `password`, encoded as the real client does.
    pub credentials: Credentials,
    /// `c`, `cs`, `ss`: set to reconnect.
    pub reconnect: Option<Reconnect>,
    /// Extra fields appended verbatim (unknown keys, or repeats of known ones).
    pub extra: Vec<(String, String)>,
    /// WebSocket: the socket's receive buffer size (`SO_RCVBUF`), to make a
    /// client that stops reading push back on the server quickly.
    pub recv_buffer: Option<u32>,
    /// WebSocket: the client's read buffer size (smaller saves memory when
    /// holding many sessions).
    pub read_buffer: usize,
}

impl Default for ConnectOptions {
    /// An anonymous WebSocket/HTTP session, version 29, capabilities 8, no
    /// reconnection, no session properties.
    fn default() -> Self {
        ConnectOptions {
            path: DEFAULT_PATH.to_owned(),
            version: u32::from(PROTOCOL_VERSION),
            capabilities: 8,
            reconnect_timeout: Duration::ZERO,
            properties: BTreeMap::new(),
            principal: None,
            credentials: Credentials::None,
            reconnect: None,
            extra: Vec::new(),
            recv_buffer: None,
            read_buffer: 8 * 1024,
        }
    }
}

impl ConnectOptions {
    /// These options with principal and text password.
    pub fn with_user(mut self, principal: &str, password: &str) -> Self {
        self.principal = Some(principal.to_owned());
        self.credentials = Credentials::Text(password.to_owned());
        self
    }

    /// These options with a reconnection timeout (`r`).
    pub fn with_reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// The connection request these options describe, for `transport`.
    pub fn request(&self, transport: ConnectionType) -> ConnectionRequest {
        ConnectionRequest {
            connection_type: transport,
            version: PROTOCOL_VERSION,
            capabilities: self.capabilities,
            reconnect_timeout: self.reconnect_timeout,
            properties: self.properties.clone(),
            principal: self.principal.clone(),
            credentials: self.credentials.clone(),
            reconnect: self.reconnect,
        }
    }

    /// The `v` value to send: the codec's encoders write the version they
    /// speak, a test may ask for another.
    fn version_field(&self, field: (&'static str, String)) -> (String, String) {
        match field {
            ("v", _) => ("v".to_owned(), self.version.to_string()),
            (k, v) => (k.to_owned(), v),
        }
    }

    /// The HTTP polling connect headers (without `m`), as the codec encodes
    /// them, then the extra fields.
    pub fn http_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .request(ConnectionType::HttpPolling)
            .to_headers()
            .into_iter()
            .map(|f| self.version_field(f))
            .collect();
        h.extend(self.extra.iter().cloned());
        h
    }

    /// The WebSocket request target: path and query, as the codec encodes
    /// it, then the extra fields.
    pub fn ws_target(&self) -> String {
        let mut q = self.request(ConnectionType::WebSocket).to_query();
        if self.version != u32::from(PROTOCOL_VERSION) {
            // The query always starts `ty=WB&v=29&`.
            q = q.replacen(
                &format!("&v={PROTOCOL_VERSION}&"),
                &format!("&v={}&", self.version),
                1,
            );
        }
        let mut extra = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.extra {
            extra.append_pair(k, v);
        }
        let extra = extra.finish();
        if !extra.is_empty() {
            q.push('&');
            q.push_str(&extra);
        }
        format!("{}?{}", self.path, q)
    }
}

/// Why a client operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed.
    Io(std::io::Error),
    /// The WebSocket layer failed (handshake or frames).
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The HTTP client failed.
    Http(Box<dyn std::error::Error + Send + Sync>),
    /// The connection response did not decode (section 7: HANDSHAKE_ERROR).
    Handshake(Violation),
    /// The first WebSocket message was a text frame (a handshake error).
    TextResponse,
    /// The connection closed before the expected answer arrived.
    Closed,
    /// The server answered a message the client did not expect here.
    Unexpected(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "I/O: {e}"),
            ClientError::WebSocket(e) => write!(f, "WebSocket: {e}"),
            ClientError::Http(e) => write!(f, "HTTP: {e}"),
            ClientError::Handshake(v) => write!(f, "bad connection response: {v:?}"),
            ClientError::TextResponse => f.write_str("connection response in a text frame"),
            ClientError::Closed => f.write_str("connection closed"),
            ClientError::Unexpected(what) => write!(f, "unexpected: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

/// The session token of a connection response, when it has one.
pub fn token_of(response: &ConnectionResponse) -> Option<sessionwire::session::SessionToken> {
    response.session.map(|s| s.token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwire::session::handshake::{ConnectionRequest, Credentials};

    #[test]
    fn section_2_ws_target_parses_back_to_the_same_request() {
        let mut o = ConnectOptions::default().with_user("alice", "s3cret");
        o.properties.insert("room".into(), "7 & 8".into());
        o.reconnect_timeout = Duration::from_millis(1500);
        let req = ConnectionRequest::from_query(&o.ws_target()).unwrap();
        assert_eq!(req.principal.as_deref(), Some("alice"));
        assert_eq!(req.credentials, Credentials::Text("s3cret".into()));
        assert_eq!(req.properties["room"], "7 & 8");
        assert_eq!(req.reconnect_timeout, Duration::from_millis(1500));
        assert_eq!(req.capabilities, 8);
        assert_eq!(req.reconnect, None);
    }

    #[test]
    fn section_2_unsupported_version_and_extra_fields_are_sent_as_asked() {
        let o = ConnectOptions {
            version: 102,
            extra: vec![("v".into(), "29".into())],
            ..ConnectOptions::default()
        };
        assert_eq!(o.ws_target(), "/diffusion?ty=WB&v=102&ca=8&r=0&v=29");
        let h = o.http_headers();
        assert_eq!(h[1], ("v".to_owned(), "102".to_owned()));
        assert_eq!(h.last(), Some(&("v".to_owned(), "29".to_owned())));
    }

    #[test]
    fn section_6_http_fields_parse_as_headers() {
        let o = ConnectOptions::default().with_user("bob", "pw");
        let fields = o.http_headers();
        let req =
            ConnectionRequest::from_headers(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap();
        assert_eq!(req.principal.as_deref(), Some("bob"));
        assert_eq!(req.credentials, Credentials::Text("pw".into()));
    }
}
