//! The control API: HTTP/1.1 on its own listener (`--control`, loopback by
//! default), every request carrying `Authorization: Bearer TOKEN` with the
//! token of `--control-token-file`. A request without the right token gets
//! 401 and changes nothing.
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `GET /sessions` | - | 200, JSON array: `id`, `principal`, `transport`, `state`, `age_ms`, `queue_depth` |
//! | `POST /sessions/ID/close` (or `DELETE /sessions/ID`) | closes CLOSED_BY_CONTROLLER | 204, or 404 |
//! | `POST /sessions/ID/failover` | closes FAILED_OVER | 204, or 404 |
//! | `POST /sessions/ID/expire` | closes EXPIRED | 204, or 404 |
//! | `POST /sessions/ID/revoke` | closes REVOKED | 204, or 404 |
//!
//! MQTT sessions (connected or offline) are listed after the protocol's
//! with `protocol: "mqtt"`, `id` (the client identifier), `version`
//! (`3.1.1` or `5.0`), `transport: "mqtt"` and `state` (`connected` or
//! `offline`); `close` (or `DELETE`) with a client id as `ID` ends that
//! session, sending a 5.0 client DISCONNECT 0x98 first (a client id holding
//! `/` is named percent-encoded, `%2F`). The other actions do not apply to
//! MQTT.

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sessionwire::session::SessionEvent;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::channel::Command;

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// The bearer token, read once at start.
pub struct ControlToken(Vec<u8>);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(<secret>)")
    }
}

impl ControlToken {
    /// A token from its text (surrounding whitespace trimmed); `None` when
    /// empty or not printable ASCII.
    pub fn new(text: &str) -> Option<ControlToken> {
        let t = text.trim();
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| ControlToken(t.as_bytes().to_vec()))
    }

    /// Reads the token file.
    pub fn read(path: &Path) -> io::Result<ControlToken> {
        if std::fs::metadata(path)?.len() > MAX_TOKEN_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "token file too large",
            ));
        }
        let text = std::fs::read_to_string(path)?;
        ControlToken::new(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "token must be printable ASCII, not empty",
            )
        })
    }

    /// Whether an `Authorization` header carries this token, compared in
    /// constant time.
    pub fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header else { return false };
        let bytes = value.as_bytes();
        let Some(given) = bytes
            .strip_prefix(b"Bearer ")
            .or_else(|| bytes.strip_prefix(b"bearer "))
        else {
            return false;
        };
        bool::from(given.ct_eq(&self.0))
    }
}

/// A control request, routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// List the sessions.
    List,
    /// Apply `event` to the session with this id.
    Act(String, SessionEvent),
    /// No such resource.
    NotFound,
    /// The resource exists but not with this method.
    MethodNotAllowed,
}

/// Routes a request by method and path. The session id is percent-decoded
/// (an MQTT client id may hold `/` or spaces: `a%2Fb`); one that does not
/// decode to UTF-8 names no session.
pub fn route(method: &Method, path: &str) -> Route {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let decoded: Vec<String> = parts
        .iter()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .map(|d| d.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let parts: Vec<&str> = parts
        .iter()
        .zip(&decoded)
        .enumerate()
        .map(|(i, (raw, dec))| if i == 2 { dec.as_str() } else { *raw })
        .collect();
    match parts.as_slice() {
        ["", "sessions"] => match *method {
            Method::GET => Route::List,
            _ => Route::MethodNotAllowed,
        },
        ["", "sessions", id] if !id.is_empty() => match *method {
            Method::DELETE => Route::Act((*id).to_owned(), SessionEvent::ClosedByController),
            _ => Route::MethodNotAllowed,
        },
        ["", "sessions", id, action] if !id.is_empty() => {
            let event = match *action {
                "close" => SessionEvent::ClosedByController,
                "failover" => SessionEvent::FailedOver,
                "expire" => SessionEvent::Expired,
                "revoke" => SessionEvent::Revoked,
                _ => return Route::NotFound,
            };
            match *method {
                Method::POST => Route::Act((*id).to_owned(), event),
                _ => Route::MethodNotAllowed,
            }
        }
        _ => Route::NotFound,
    }
}

/// Accepts control connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    token: Arc<ControlToken>,
    hub: mpsc::Sender<Command>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let token = Arc::clone(&token);
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let token = Arc::clone(&token);
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(handle(req, &token, &hub).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Answers one control request.
pub async fn handle<B>(
    req: Request<B>,
    token: &ControlToken,
    hub: &mpsc::Sender<Command>,
) -> Response<Full<Bytes>> {
    if !token.check(req.headers().get(AUTHORIZATION)) {
        let mut r = respond(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    match route(req.method(), req.uri().path()) {
        Route::List => {
            let (tx, rx) = oneshot::channel();
            if hub.send(Command::List { reply: tx }).await.is_err() {
                return respond(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
            }
            match rx.await {
                Ok(list) => match serde_json::to_vec(&list) {
                    Ok(json) => {
                        let mut r = respond(StatusCode::OK, json);
                        r.headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        r
                    }
                    Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, ""),
                },
                Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
            }
        }
        Route::Act(id, event) => {
            let (tx, rx) = oneshot::channel();
            if hub
                .send(Command::Act {
                    id,
                    event,
                    reply: tx,
                })
                .await
                .is_err()
            {
                return respond(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
            }
            match rx.await {
                Ok(true) => respond(StatusCode::NO_CONTENT, ""),
                Ok(false) => respond(StatusCode::NOT_FOUND, "no such session\n"),
                Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
            }
        }
        Route::NotFound => respond(StatusCode::NOT_FOUND, "not found\n"),
        Route::MethodNotAllowed => respond(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn control_auth_accepts_only_the_exact_bearer_token() {
        let t = ControlToken::new(" s3cret-token\n").unwrap();
        assert!(t.check(Some(&header("Bearer s3cret-token"))));
        assert!(t.check(Some(&header("bearer s3cret-token"))));
        assert!(!t.check(None));
        assert!(!t.check(Some(&header("Bearer s3cret-toke"))));
        assert!(!t.check(Some(&header("Bearer s3cret-tokenX"))));
        assert!(!t.check(Some(&header("Bearer "))));
        assert!(!t.check(Some(&header("Basic s3cret-token"))));
        assert!(!t.check(Some(&header("s3cret-token"))));
    }

    #[tokio::test]
    async fn control_request_without_the_token_gets_401_and_changes_nothing() {
        let token = ControlToken::new("right").unwrap();
        let (hub, mut rx) = mpsc::channel(4);
        for auth in [None, Some("Bearer wrong"), Some("Basic right")] {
            for (method, path) in [
                (Method::GET, "/sessions"),
                (Method::POST, "/sessions/abc/close"),
                (Method::DELETE, "/sessions/abc"),
            ] {
                let mut req = Request::builder().method(method).uri(path);
                if let Some(a) = auth {
                    req = req.header(AUTHORIZATION, a);
                }
                let r = handle(req.body(()).unwrap(), &token, &hub).await;
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                assert!(rx.try_recv().is_err(), "nothing reached the hub");
            }
        }
        // With the token, the request reaches the hub.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/sessions/abc/revoke")
            .header(AUTHORIZATION, "Bearer right")
            .body(())
            .unwrap();
        let answer = tokio::spawn(async move {
            match rx.recv().await {
                Some(Command::Act { id, event, reply }) => {
                    assert_eq!((id.as_str(), event), ("abc", SessionEvent::Revoked));
                    let _ = reply.send(false);
                }
                other => panic!("{other:?}"),
            }
        });
        assert_eq!(
            handle(req, &token, &hub).await.status(),
            StatusCode::NOT_FOUND
        );
        answer.await.unwrap();
    }

    #[test]
    fn control_token_must_be_printable_and_not_empty() {
        assert!(ControlToken::new("  \n").is_none());
        assert!(ControlToken::new("a b").is_none());
        assert!(ControlToken::new("abc").is_some());
    }

    #[test]
    fn control_routes_map_to_session_events() {
        assert_eq!(route(&Method::GET, "/sessions"), Route::List);
        assert_eq!(route(&Method::GET, "/sessions/"), Route::List);
        assert_eq!(route(&Method::POST, "/sessions"), Route::MethodNotAllowed);
        for (action, event) in [
            ("close", SessionEvent::ClosedByController),
            ("failover", SessionEvent::FailedOver),
            ("expire", SessionEvent::Expired),
            ("revoke", SessionEvent::Revoked),
        ] {
            assert_eq!(
                route(&Method::POST, &format!("/sessions/abc/{action}")),
                Route::Act("abc".into(), event)
            );
            assert_eq!(
                route(&Method::GET, &format!("/sessions/abc/{action}")),
                Route::MethodNotAllowed
            );
        }
        assert_eq!(
            route(&Method::DELETE, "/sessions/abc"),
            Route::Act("abc".into(), SessionEvent::ClosedByController)
        );
        assert_eq!(
            route(&Method::POST, "/sessions/abc/explode"),
            Route::NotFound
        );
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
        // An MQTT client id with a slash or a space, percent-encoded.
        assert_eq!(
            route(&Method::POST, "/sessions/dev%2F1%20a/close"),
            Route::Act("dev/1 a".into(), SessionEvent::ClosedByController)
        );
        assert_eq!(route(&Method::POST, "/sessions/%FF/close"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/sessions/a/b/c"), Route::NotFound);
    }
}
