//! MQTT over WebSocket: upgrades on the main listener's path `/mqtt` with
//! the subprotocol `mqtt` (MQTT-6.0.0-3, MQTT-6.0.0-4). These are few and
//! tungstenite needs a runtime: one task per connection, which hands what
//! it reads to the MQTT event loop (`event_loop.rs`, which also serves MQTT
//! over TCP) as it comes (packets need not align with WebSocket frames,
//! MQTT-6.0.0-2) and writes what the loop sends it.
//!
//! Every channel is bounded: into the loop, its queue (a connection waits,
//! and stops reading, when it is full); out of it, [`MQTT_CONN_QUEUE`]
//! batches and [`conn_bytes`] bytes per connection. The session layer
//! bounds what waits beyond that (its in-flight window and queue); a
//! connection whose batches are not taken is dropped by the loop.
//!
//! A WebSocket data frame that is not binary closes the connection
//! (MQTT-6.0.0-1), as the end of the stream does.

use std::future::{ready, Future};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::channel::{conn_bytes, FINAL_WRITE, LINGER};
use super::channel::{ConnIn, ConnOut, LoopCommand, MqttCommand, MqttOut};
use crate::Shared;

/// Batches the loop may have queued for one WebSocket connection; past it
/// the connection is too slow and is dropped.
pub const MQTT_CONN_QUEUE: usize = 64;

/// Bytes a WebSocket frame may hold beyond twice the largest packet.
const WS_FRAME_SLACK: usize = 1024;

/// Registers a new connection with the loop: its number, its end of the
/// outbox, and whether the loop took it (once the future resolves).
fn open(shared: &Shared, peer: IpAddr) -> (u64, ConnIn, impl Future<Output = bool> + '_) {
    let conn = shared.next_conn();
    let (out, rx) = ConnOut::pair(MQTT_CONN_QUEUE, conn_bytes(&shared.limits));
    let open = MqttCommand::Open { conn, peer, out };
    (conn, rx, to_loop(shared, open))
}

/// Tells the loop the connection is gone.
fn lost(shared: &Shared, conn: u64) -> impl Future<Output = bool> + '_ {
    to_loop(shared, MqttCommand::Lost { conn })
}

/// Hands a command to the loop, waiting for room when its queue is full;
/// false when the loop is gone.
fn to_loop(shared: &Shared, command: MqttCommand) -> impl Future<Output = bool> + '_ {
    let wait = match shared.mqtt.try_send(LoopCommand::Conn(command)) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(c)) => Some(Box::pin(shared.mqtt.send(c))),
        Err(mpsc::error::TrySendError::Closed(_)) => return Either::Left(ready(false)),
    };
    Either::Right(async move {
        match wait {
            None => true,
            Some(send) => send.await,
        }
    })
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
    let (conn, rx, opened) = open(shared, peer.ip());
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
                    if !to_loop(shared, MqttCommand::Bytes { conn, data }).await {
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
        // The loop lets go: the task sees the end once the queue is empty.
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
    async fn outbox_wakes_a_waiting_task_when_the_loop_lets_go() {
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
}
