//! A second server on the codec's public API only (WebSocket, no passwords): it
//! feeds bytes and events in and carries out what the registry hands out, with
//! no rule of its own per close reason. `minimal_server [PING_MS]` prints its
//! 127.0.0.1 address, then `closed <id> <REASON>` per session closed for good.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sessionwire::{Connect, ConnectionRequest, Event, Limits, RandomSource, RandomSourceFailed};
use sessionwire::{Registry, SessionConfig, SessionEvent, SessionToken, Transmit};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message as Ws;

/// What a connection tells the hub.
enum Cmd {
    Connect(String, mpsc::Sender<Out>),
    Inbound(SessionToken, Bytes),
    Lost(SessionToken),
}

/// What the hub tells a connection (`frame`: end with a close frame, or drop).
enum Out {
    Attached(SessionToken),
    Send(Bytes),
    Close { frame: bool },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let ping_ms: u64 = std::env::args()
        .nth(1)
        .map_or(30_000, |a| a.parse().expect("PING_MS"));
    let config = SessionConfig {
        ping_period: (ping_ms > 0).then(|| Duration::from_millis(ping_ms)),
        ..SessionConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let (tx, rx) = mpsc::channel(1024);
    let os_random = |b: &mut [u8]| getrandom::fill(b).map_err(|_| RandomSourceFailed);
    let registry = Registry::new(Limits::default(), config, os_random);
    let conns = HashMap::new();
    tokio::spawn(Hub { registry, conns }.run(rx));
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, tx.clone()));
    }
}

/// The one task that owns the registry, and the connection of each session.
struct Hub<R> {
    registry: Registry<R>,
    conns: HashMap<SessionToken, mpsc::Sender<Out>>,
}

impl<R: RandomSource> Hub<R> {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let idle = Instant::now() + Duration::from_secs(3600);
            let wake = self.registry.poll_timeout().unwrap_or(idle);
            let woken = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).into_iter().collect(),
                    None => return,
                },
                () = tokio::time::sleep_until(wake.into()) => self.registry.handle_timeout(Instant::now()),
            };
            for token in woken {
                self.drive(token);
            }
            while let Some((token, close)) = self.registry.poll_close() {
                if let Some(session) = self.registry.session(&token) {
                    println!("closed {} {}", session.id(), close.reason.name());
                }
                self.drive(token); // the last transmits: the ABORT, if one was queued
                let frame = close.sends_close_frame();
                if let Some(out) = self.conns.remove(&token) {
                    let _ = out.try_send(Out::Close { frame });
                }
            }
            self.registry.reap();
        }
    }

    /// Feeds one command; returns the session to drive.
    fn handle(&mut self, cmd: Cmd) -> Option<SessionToken> {
        let now = Instant::now();
        match cmd {
            Cmd::Connect(target, out) => {
                let request = ConnectionRequest::from_query(&target);
                let outcome = match self.registry.handle_connect(now, request) {
                    Connect::Answered(outcome) => outcome,
                    // No passwords here: everyone is who they claim to be.
                    Connect::Incoming(incoming) => {
                        let principal = incoming.request().principal.clone();
                        self.registry.accept(now, incoming, principal)
                    }
                };
                let token = outcome.session.filter(|_| outcome.refused.is_none());
                let displaced = token.filter(|_| outcome.displaced);
                if let Some(mut s) = displaced.and_then(|t| self.registry.session_mut(&t)) {
                    while s.poll_event().is_some() {} // the old transport's loss: replaced below
                }
                let _ = out.try_send(Out::Send(outcome.response.to_bytes()));
                let _ = out.try_send(token.map_or(Out::Close { frame: true }, Out::Attached));
                self.conns.extend(token.map(|t| (t, out)));
                token
            }
            Cmd::Inbound(token, data) => {
                if let Some(mut s) = self.registry.session_mut(&token) {
                    s.handle_websocket(now, data);
                }
                Some(token)
            }
            Cmd::Lost(token) => {
                self.conns.remove(&token);
                if let Some(mut s) = self.registry.session_mut(&token) {
                    s.handle_event(now, SessionEvent::TransportLost);
                }
                Some(token)
            }
        }
    }

    /// Hands a session's events and transmits to its connection.
    fn drive(&mut self, token: SessionToken) {
        let Some(mut session) = self.registry.session_mut(&token) else {
            return;
        };
        while let Some(event) = session.poll_event() {
            if let (Event::Disconnected { .. }, Some(out)) = (event, self.conns.remove(&token)) {
                let _ = out.try_send(Out::Close { frame: false });
            }
        }
        // With a connection, one slot stays free for the close; without,
        // the transmits go nowhere.
        let out = self.conns.get(&token);
        while out.is_none_or(|o| o.capacity() > 1) {
            let Some(t) = session.poll_transmit() else {
                break;
            };
            if let (Transmit::WebSocket(b), Some(out)) = (t, out) {
                let _ = out.try_send(Out::Send(b));
            }
        }
    }
}

/// One WebSocket connection: bytes in to the hub, what the hub says out.
#[allow(clippy::result_large_err)] // the handshake callback's error is tungstenite's
async fn connection(stream: TcpStream, hub: mpsc::Sender<Cmd>) {
    let mut target = String::new();
    let capture = |req: &Request, resp: Response| {
        target = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, capture).await else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::channel(64); // one slot is kept for the close
    let Ok(()) = hub.send(Cmd::Connect(target, out_tx)).await else {
        return;
    };
    let mut token = None;
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Out::Attached(t)) => token = Some(t),
                Some(Out::Send(b)) => {
                    if ws.send(Ws::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close { frame }) => {
                    if frame {
                        let _ = ws.close(None).await;
                    }
                    return;
                }
                None => return,
            },
            msg = ws.next(), if token.is_some() => match (msg, token) {
                // A hub that is gone closes `out_rx`, which ends the loop.
                (Some(Ok(Ws::Binary(b))), Some(t)) => drop(hub.send(Cmd::Inbound(t, b)).await),
                (Some(Ok(Ws::Close(_)) | Err(_)) | None, _) => break,
                _ => {} // pings are answered by tungstenite; text is ignored
            },
        }
    }
    if let Some(token) = token {
        let _ = hub.send(Cmd::Lost(token)).await;
    }
}
