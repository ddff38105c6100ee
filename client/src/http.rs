//! The HTTP polling transport (docs/protocol.md section 6): every request is a
//! POST to `/diffusion` with its parameters in headers; `m=0` connects, `m=1`
//! polls, `m=2` sends. Bodies are base64 batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sessionwire::message::service::SYSTEM_PING;
use sessionwire::session::handshake::ConnectionResponse;
use sessionwire::session::SessionToken;
use sessionwire::{polling, Limits, Message, Violation};

use super::ws::{ping_response, user_ping};
use super::{ClientError, ConnectOptions};

/// A request body: whole, or streamed by the caller (a slow or lying client).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An HTTP answer as received.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The answer to a poll, decoded.
#[derive(Clone, Debug)]
pub struct PollReply {
    /// The answer as received.
    pub reply: HttpReply,
    /// The messages of the batch, in order (empty for an empty body).
    pub messages: Vec<Message>,
    /// The fault in the batch, if it did not decode whole.
    pub violation: Option<Violation>,
    /// The server said `diffusion-connection: reconnect`.
    pub reconnect: bool,
}

/// A whole body.
pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body that yields `body` one byte every `delay`: a slow client.
pub fn trickled_body(body: Vec<u8>, delay: Duration) -> Body {
    let bytes = futures_util::stream::unfold(body.into_iter(), move |mut rest| async move {
        let b = rest.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok(Frame::data(Bytes::copy_from_slice(&[b]))), rest))
    });
    StreamBody::new(bytes).boxed()
}

fn http_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

fn http_err(e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::Http(Box::new(e))
}

/// Sends one HTTP/1.1 request to `addr` and reads the whole answer. For the
/// control API and for requests the polling client does not make.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpReply, ClientError> {
    send_request(&http_client(), addr, method, path, headers, full(body)).await
}

async fn send_request(
    client: &Client<HttpConnector, Body>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<HttpReply, ClientError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(http_err)?;
        let value = HeaderValue::from_str(value).map_err(http_err)?;
        builder = builder.header(name, value);
    }
    let req = builder.body(body).map_err(http_err)?;
    let resp = client.request(req).await.map_err(http_err)?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(http_err)?.to_bytes();
    Ok(HttpReply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A session over HTTP polling. Cheap to clone: clones share the session and
/// its `s` counters, so one clone can hold a poll open while another sends.
#[derive(Clone, Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    path: String,
    client: Client<HttpConnector, Body>,
    response: ConnectionResponse,
    connect_reply: HttpReply,
    next_poll: Arc<AtomicU64>,
    next_send: Arc<AtomicU64>,
    next_conversation: Arc<AtomicU64>,
    limits: Limits,
}

impl HttpClient {
    /// Connects (`m=0`) and decodes the raw connection response in the body.
    /// A rejection is not an error: look at [`response`](Self::response).
    pub async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<HttpClient, ClientError> {
        let mut fields = options.http_headers();
        fields.push(("m".to_owned(), "0".to_owned()));
        let headers: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let client = http_client();
        let reply = send_request(
            &client,
            addr,
            Method::POST,
            &options.path,
            &headers,
            full(Bytes::new()),
        )
        .await?;
        let response = ConnectionResponse::decode(&reply.body).map_err(ClientError::Handshake)?;
        Ok(HttpClient {
            addr,
            path: options.path.clone(),
            client,
            response,
            connect_reply: reply,
            next_poll: Arc::new(AtomicU64::new(0)),
            next_send: Arc::new(AtomicU64::new(0)),
            next_conversation: Arc::new(AtomicU64::new(1)),
            limits: Limits::builder()
                .max_message_size(16 << 20)
                .max_batch_size(64 << 20)
                .build()
                .unwrap_or_default(),
        })
    }

    /// The connection response.
    pub fn response(&self) -> &ConnectionResponse {
        &self.response
    }

    /// The HTTP answer to the connect.
    pub fn connect_reply(&self) -> &HttpReply {
        &self.connect_reply
    }

    /// The session token, when the server connected the session.
    pub fn token(&self) -> Option<SessionToken> {
        self.response.session.map(|s| s.token)
    }

    fn token_str(&self) -> String {
        self.token()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The next conversation id for a request of this client (from 1 up).
    pub fn next_conversation(&self) -> u64 {
        self.next_conversation.fetch_add(1, Ordering::Relaxed)
    }

    /// Continues the conversation numbering of a session this client
    /// resumes (the next request gets `next`).
    pub fn resume_conversation(&self, next: u64) {
        self.next_conversation.store(next, Ordering::Relaxed);
    }

    /// A POST to the session path with the session token and these headers.
    pub async fn post(
        &self,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<HttpReply, ClientError> {
        let token = self.token_str();
        let mut all = vec![("c", token.as_str())];
        all.extend_from_slice(headers);
        send_request(
            &self.client,
            self.addr,
            Method::POST,
            &self.path,
            &all,
            body,
        )
        .await
    }

    /// Opens the next poll (`m=1`, `s` counting from 0) and waits for its
    /// answer.
    pub async fn poll(&self) -> Result<PollReply, ClientError> {
        let s = self.next_poll.fetch_add(1, Ordering::Relaxed).to_string();
        self.poll_with(&s).await
    }

    /// A poll with this `s`, whatever it is; the poll counter is not touched.
    pub async fn poll_with(&self, sequence: &str) -> Result<PollReply, ClientError> {
        let reply = self
            .post(&[("m", "1"), ("s", sequence)], full(Bytes::new()))
            .await?;
        let reconnect = reply
            .headers
            .get("diffusion-connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"reconnect"));
        let batch = polling::decode_body(&reply.body, &self.limits);
        Ok(PollReply {
            reply,
            messages: batch.messages,
            violation: batch.violation,
            reconnect,
        })
    }

    /// Sends `messages` as one batch (`m=2`, `s` counting from 0).
    pub async fn send(&self, messages: &[Message]) -> Result<HttpReply, ClientError> {
        let body =
            polling::encode_body(messages).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let s = self.next_send.fetch_add(1, Ordering::Relaxed).to_string();
        self.send_with(&s, full(body)).await
    }

    /// A send with this `s` and body, whatever they are; the send counter is
    /// not touched.
    pub async fn send_with(&self, sequence: &str, body: Body) -> Result<HttpReply, ClientError> {
        self.post(&[("m", "2"), ("s", sequence)], body).await
    }

    /// Takes the next send number without sending (to make a gap).
    pub fn skip_send(&self) -> u64 {
        self.next_send.fetch_add(1, Ordering::Relaxed)
    }

    /// Answers every SYSTEM_PING among `messages` in one send; returns how
    /// many were answered.
    pub async fn answer_pings(&self, messages: &[Message]) -> Result<usize, ClientError> {
        let answers: Vec<Message> = messages
            .iter()
            .filter_map(|m| match m {
                Message::ServiceRequest(r) if r.service == SYSTEM_PING => Some(ping_response(r)),
                _ => None,
            })
            .collect();
        if !answers.is_empty() {
            self.send(&answers).await?;
        }
        Ok(answers.len())
    }

    /// Sends a USER_PING and polls until its SERVICE_RESPONSE arrives,
    /// answering SYSTEM_PINGs; returns the other messages that arrived.
    pub async fn user_ping(&self) -> Result<Vec<Message>, ClientError> {
        let conversation = self.next_conversation();
        let reply = self.send(&[user_ping(conversation)]).await?;
        if reply.status != StatusCode::OK {
            return Err(ClientError::Unexpected(format!(
                "send answered {}",
                reply.status
            )));
        }
        let mut others = Vec::new();
        loop {
            let poll = self.poll().await?;
            if poll.reply.status != StatusCode::OK {
                return Err(ClientError::Unexpected(format!(
                    "poll answered {}",
                    poll.reply.status
                )));
            }
            self.answer_pings(&poll.messages).await?;
            let mut found = false;
            for m in poll.messages {
                match &m {
                    Message::ServiceResponse(r) if r.conversation == conversation => found = true,
                    Message::ServiceRequest(r) if r.service == SYSTEM_PING => {}
                    _ => others.push(m),
                }
            }
            if found {
                return Ok(others);
            }
        }
    }
}
