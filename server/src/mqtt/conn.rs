//! MQTT connections: a TCP listener (`--mqtt-listen`) and WebSocket
//! upgrades on the main listener's path `/mqtt` with the subprotocol `mqtt`
//! (MQTT-6.0.0-3, MQTT-6.0.0-4). One task per connection; it hands what it
//! reads to the hub as it comes (packets need not align with reads or
//! WebSocket frames, MQTT-6.0.0-2) and writes what the hub sends it.
//!
//! Every channel is bounded: into the hub, the hub's queue (a connection
//! waits, and stops reading, when it is full), one read of at most
//! [`READ_CHUNK`] bytes per command; out of it, [`MQTT_CONN_QUEUE`] batches
//! and [`conn_bytes`] bytes per connection. The session layer bounds what waits beyond that (its
//! in-flight window and queue); a connection whose batches are not taken is
//! dropped by the hub.
//!
//! A WebSocket data frame that is not binary closes the connection
//! (MQTT-6.0.0-1), as the end of the stream does.

use std::future::{poll_fn, ready, Future};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::channel::{ConnIn, ConnOut, MqttCommand, MqttOut};
use crate::channel::Command;
use crate::slots::PendingSlot;
use crate::Shared;

/// Most bytes one read hands to the hub.
pub const READ_CHUNK: usize = 8 * 1024;

/// Batches of bytes the hub may have queued for one connection; past it the
/// connection is too slow and is dropped.
pub const MQTT_CONN_QUEUE: usize = 64;

/// Bytes a WebSocket frame may hold beyond twice the largest packet.
const WS_FRAME_SLACK: usize = 1024;

/// How long a closing connection keeps reading (and discarding) after its
/// last write, so that the socket ends with a FIN rather than a reset that
/// could destroy the last packets before the client reads them.
const LINGER: Duration = Duration::from_secs(1);

/// How long the last writes may wait for a client that is slow to read.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Accepts MQTT connections over TCP until shutdown.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&shared.mqtt_slots).try_acquire_owned() else {
            tracing::debug!(%peer, "too many MQTT connections: dropped");
            continue;
        };
        // Held until the hub first writes to the connection (its CONNACK,
        // or the end of a connection that sent no CONNECT in time).
        let Some(waiting) = shared.mqtt_pending.take(peer.ip()) else {
            tracing::debug!(%peer, "too many MQTT connections without CONNACK from this address: dropped");
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.mqtt_tasks.fetch_add(1, Ordering::AcqRel);
        let running = Running {
            shared: Arc::clone(&shared),
            _slot: slot,
        };
        let task = run_tcp(stream, peer.ip(), running, Some(waiting));
        tokio::spawn(task);
    }
}

/// A running connection task, counted in `mqtt_tasks` for as long as it
/// lives (shutdown waits for the count to fall to zero), with its place
/// among the MQTT connections.
struct Running {
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.mqtt_tasks.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The task of one TCP connection. Not an `async fn`, whose arguments are
/// moved into locals and so kept twice in the future: the block uses its
/// captures in place, and every byte of its future is held by each idle
/// connection for its life (an argument the block does not use would not
/// even be kept: `running` holds the connection's place). `waiting` is
/// given back at the first write.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn run_tcp(
    mut stream: TcpStream,
    peer: IpAddr,
    running: Running,
    mut waiting: Option<PendingSlot>,
) -> impl Future<Output = ()> + Send {
    async move {
        let shared = &*running.shared;
        let (conn, rx, opened) = open(shared, peer, "mqtt");
        if !opened.await {
            return;
        }
        // Borrowed halves: no shared allocation, as `into_split` would make.
        let (mut rd, mut wr) = stream.split();
        // Only the wait for either side is inline in the task, whose future
        // every idle connection holds for its life: a poll of the outbox and of
        // the socket's readiness, which keep their wakers in place (no waiting
        // future of tens of bytes each). Writing and closing, whose futures are
        // larger, are boxed while they run.
        loop {
            // Outbound first: what the hub sent is written before more is read.
            let wake = poll_fn(|cx| match rx.poll_next(cx) {
                Poll::Ready(out) => Poll::Ready(Wake::Out(out)),
                Poll::Pending => poll_read_chunk(rd.as_ref(), cx).map(Wake::Read),
            })
            .await;
            match wake {
                Wake::Out(Some(MqttOut::Write(batch))) => {
                    drop(waiting.take());
                    if !Box::pin(write_all(&mut wr, batch, &rx)).await {
                        lost(shared, conn).await;
                        return;
                    }
                }
                Wake::Out(Some(MqttOut::Close) | None) => {
                    Box::pin(async {
                        let _ = tokio::time::timeout(FINAL_WRITE, wr.shutdown()).await;
                        drain(&mut rd).await;
                    })
                    .await;
                    return;
                }
                Wake::Read(Some(data)) => {
                    if !to_hub(shared, MqttCommand::Bytes { conn, data }).await {
                        return;
                    }
                }
                Wake::Read(None) => {
                    lost(shared, conn).await;
                    return;
                }
            }
        }
    }
}

/// What an idle TCP connection wakes for.
enum Wake {
    /// The hub sent a batch, a close, or let go (`None`).
    Out(Option<MqttOut>),
    /// The client sent bytes, or its end or an error (`None`).
    Read(Option<Bytes>),
}

/// Bytes the hub may have queued for one connection: the outbound queue
/// bound (`--queue-bytes`), and at least two of the largest packets.
pub fn conn_bytes(limits: &sessionwire::Limits) -> usize {
    limits
        .max_queue_bytes()
        .max(limits.max_message_size().saturating_mul(2))
}

/// Registers a new connection with the hub: its number, its end of the
/// outbox, and whether the hub took it (once the future resolves). Not an
/// `async fn`, for the reason [`to_hub`] gives.
fn open<'a>(
    shared: &'a Shared,
    peer: IpAddr,
    transport: &'static str,
) -> (u64, ConnIn, impl Future<Output = bool> + 'a) {
    let conn = shared.next_conn();
    let (out, rx) = ConnOut::pair(MQTT_CONN_QUEUE, conn_bytes(&shared.limits));
    let open = MqttCommand::Open {
        conn,
        peer,
        transport,
        out,
    };
    (conn, rx, to_hub(shared, open))
}

/// Tells the hub the connection is gone (not an `async fn`, as
/// [`to_hub`]).
fn lost(shared: &Shared, conn: u64) -> impl Future<Output = bool> + '_ {
    to_hub(shared, MqttCommand::Lost { conn })
}

/// Hands a command to the hub, waiting for room when its queue is full;
/// false when the hub is gone.
///
/// Not an `async fn`: its future would hold the whole command (a
/// [`Command`] is large) and sit, at its largest, in every connection's
/// task for its life. The command is handed over at once when there is
/// room; only the wait for room is a (boxed) future.
fn to_hub(shared: &Shared, command: MqttCommand) -> impl Future<Output = bool> + '_ {
    let wait = match shared.hub.try_send(Command::Mqtt(command)) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(c)) => Some(Box::pin(shared.hub.send(c))),
        Err(mpsc::error::TrySendError::Closed(_)) => return Either::Left(ready(false)),
    };
    Either::Right(async move {
        match wait {
            None => true,
            Some(send) => send.await.is_ok(),
        }
    })
}

/// One read of at most [`READ_CHUNK`] bytes; `None` at the end or on an
/// error.
#[cfg(test)]
async fn read_chunk(rd: &TcpStream) -> Option<Bytes> {
    poll_fn(|cx| poll_read_chunk(rd, cx)).await
}

/// Polls for one read of at most [`READ_CHUNK`] bytes; `None` at the end
/// or on an error.
///
/// The buffer is allocated only once the socket is readable, and a short
/// read is copied out of it: an idle connection holds no read buffer.
fn poll_read_chunk(rd: &TcpStream, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
    loop {
        if ready!(rd.poll_read_ready(cx)).is_err() {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match rd.try_read_buf(&mut buf) {
            Ok(0) => return Poll::Ready(None),
            Ok(n) if n < READ_CHUNK / 4 => return Poll::Ready(Some(Bytes::copy_from_slice(&buf))),
            Ok(_) => return Poll::Ready(Some(buf.freeze())),
            // Readiness is cleared: the next poll registers the waker.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(None),
        }
    }
}

/// Writes a batch and flushes; false when a write failed or the hub gave up
/// on the connection meanwhile.
///
/// Several packets are copied into one buffer first: one system call
/// rather than one per packet.
async fn write_all<W: AsyncWrite + Unpin>(wr: &mut W, batch: Vec<Bytes>, rx: &ConnIn) -> bool {
    let write = async {
        match batch.as_slice() {
            [one] => wr.write_all(one).await?,
            many => wr.write_all(&many.concat()).await?,
        }
        wr.flush().await
    };
    tokio::select! {
        r = write => r.is_ok(),
        () = rx.closing() => false,
    }
}

/// Reads and discards until the client closes its side, for [`LINGER`].
async fn drain<R: AsyncRead + Unpin>(rd: &mut R) {
    // On the heap: an array here would sit in every connection's task.
    let mut buf = vec![0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Whether the client offers the subprotocol `mqtt`.
fn offers_mqtt<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "mqtt")
}

/// Answers an upgrade on `/mqtt`: the protocol's slot and key checks, the
/// subprotocol `mqtt` required and answered, then the connection task.
pub fn upgrade<B>(req: Request<B>, shared: Arc<Shared>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if !offers_mqtt(&req) {
        return crate::response::respond(
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the subprotocol mqtt\n",
        );
    }
    let (slot, accept) = match crate::ws::check_upgrade(&req, &shared, peer) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    // A frame may hold a whole packet of the largest size and parts of
    // others: the frame bound is twice the packet bound, so that an
    // oversized packet reaches the codec (0x95) rather than breaking the
    // WebSocket.
    let limit = shared
        .limits
        .max_message_size()
        .saturating_mul(2)
        .saturating_add(WS_FRAME_SLACK);
    let config = shared
        .ws_config
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    crate::ws::spawn_upgraded(
        req,
        slot,
        shared,
        peer,
        config,
        move |ws, shared| async move {
            run_ws(ws, peer, &shared).await;
        },
    );
    crate::ws::switching(&accept, Some("mqtt"))
}

use crate::ws::Ws;

async fn run_ws(mut ws: Ws, peer: SocketAddr, shared: &Shared) {
    let (conn, rx, opened) = open(shared, peer.ip(), "mqtt-ws");
    if !opened.await {
        return;
    }
    loop {
        tokio::select! {
            out = rx.next() => match out {
                Some(MqttOut::Write(batch)) => {
                    let write = async {
                        for b in batch {
                            ws.feed(WsMessage::Binary(b)).await?;
                        }
                        ws.flush().await
                    };
                    let ok = tokio::select! {
                        r = write => r.is_ok(),
                        () = rx.closing() => false,
                    };
                    if !ok {
                        lost(shared, conn).await;
                        return;
                    }
                }
                Some(MqttOut::Close) | None => {
                    let _ = tokio::time::timeout(FINAL_WRITE, ws.close(None)).await;
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Binary(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    if !to_hub(shared, MqttCommand::Bytes { conn, data }).await {
                        return;
                    }
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) => {
                    let _ = tokio::time::timeout(LINGER, ws.flush()).await;
                    lost(shared, conn).await;
                    return;
                }
                // A text frame (MQTT-6.0.0-1), an oversized or broken
                // frame, the end of the stream.
                _ => {
                    lost(shared, conn).await;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_6_0_0_3_the_client_must_offer_the_mqtt_subprotocol() {
        let req = |p: Option<&str>| {
            let mut b = Request::builder();
            if let Some(p) = p {
                b = b.header(hyper::header::SEC_WEBSOCKET_PROTOCOL, p);
            }
            b.body(()).unwrap()
        };
        assert!(offers_mqtt(&req(Some("mqtt"))));
        assert!(offers_mqtt(&req(Some("mqttv3.1, mqtt"))));
        assert!(!offers_mqtt(&req(Some("mqttv3.1"))));
        assert!(!offers_mqtt(&req(None)));
    }

    #[tokio::test]
    async fn outbox_is_bounded_but_always_takes_the_close() {
        let (out, rx) = ConnOut::pair(2, 100);
        let batch = || MqttOut::Write(vec![Bytes::from_static(b"x")]);
        assert!(out.send(batch()));
        assert!(out.send(batch()));
        assert!(!out.send(batch()), "full");
        assert!(out.send(MqttOut::Close), "a close always fits");
        assert!(matches!(rx.next().await, Some(MqttOut::Write(_))));
        assert!(matches!(rx.next().await, Some(MqttOut::Write(_))));
        assert!(matches!(rx.next().await, Some(MqttOut::Close)));
        // The hub lets go: the task sees the end once the queue is empty.
        assert!(out.send(batch()));
        drop(out);
        assert!(matches!(rx.next().await, Some(MqttOut::Write(_))));
        assert!(rx.next().await.is_none());
        // The task is gone: nothing more is queued.
        let (out, rx) = ConnOut::pair(2, 100);
        drop(rx);
        assert!(!out.send(batch()));
    }

    #[tokio::test]
    async fn outbox_is_bounded_in_bytes() {
        let (out, rx) = ConnOut::pair(10, 5);
        let three = || MqttOut::Write(vec![Bytes::from_static(b"abc")]);
        assert!(out.send(three()));
        assert!(!out.send(three()), "3 + 3 > 5");
        assert!(out.send(MqttOut::Write(vec![Bytes::from_static(b"de")])));
        assert!(matches!(rx.next().await, Some(MqttOut::Write(_))));
        assert!(out.send(three()), "room again once taken");
        assert!(out.send(MqttOut::Close));
    }

    #[tokio::test]
    async fn outbox_wakes_a_waiting_task() {
        let (out, rx) = ConnOut::pair(2, 100);
        let task = tokio::spawn(async move { rx.next().await.is_some() });
        tokio::task::yield_now().await;
        assert!(out.send(MqttOut::Close));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("woken")
            .unwrap();
        assert!(got);
    }

    #[tokio::test]
    async fn outbox_giving_up_wakes_a_writing_task_and_stays_given_up() {
        let (out, rx) = ConnOut::pair(2, 100);
        let rx = Arc::new(rx);
        let waiting = Arc::clone(&rx);
        let task = tokio::spawn(async move { waiting.closing().await });
        tokio::task::yield_now().await;
        out.give_up();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("woken")
            .unwrap();
        // Whoever asks later learns it at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.closing())
            .await
            .expect("still given up");
    }

    #[tokio::test]
    async fn outbox_wakes_a_waiting_task_when_the_hub_lets_go() {
        let (out, rx) = ConnOut::pair(2, 100);
        let task = tokio::spawn(async move { rx.next().await.is_none() });
        tokio::task::yield_now().await;
        drop(out);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("woken")
            .unwrap();
        assert!(ended);
    }

    #[tokio::test]
    async fn reads_are_handed_on_in_chunks_of_at_most_read_chunk() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let data: Vec<u8> = (0..READ_CHUNK * 2 + 5).map(|i| i as u8).collect();
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = read_chunk(&server).await {
            assert!(chunk.len() <= READ_CHUNK, "{}", chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
    }
}
