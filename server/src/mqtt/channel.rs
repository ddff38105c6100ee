//! What the MQTT event loop (`event_loop.rs`, which owns the broker) and
//! the rest of the server say to each other: the [`LoopCommand`]s into the
//! loop, through a bounded channel and a [`mio::Waker`] ([`LoopSender`]);
//! what a WebSocket connection task says ([`MqttCommand`]) and the
//! [`MqttOut`] batches back through its bounded outbox ([`ConnOut`] is the
//! loop's end, [`ConnIn`] the task's).
//!
//! Kept apart from the connections (`conn.rs`), the loop and the broker
//! (`broker.rs`), which all use them, so that none imports another for
//! them.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessionwire::mqtt::session::Incoming;
use tokio::sync::{mpsc, oneshot};

use crate::channel::SessionInfo;
use crate::passwords::Verdict;

/// How long a closing connection keeps reading (and discarding) after its
/// last write, so that the socket ends with a FIN rather than a reset that
/// could destroy the last packets before the client reads them.
pub const LINGER: Duration = Duration::from_secs(1);

/// How long the last writes may wait for a client that is slow to read.
pub const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Bytes the loop may have waiting for one connection: the outbound queue
/// bound (`--queue-bytes`), and at least two of the largest packets.
pub fn conn_bytes(limits: &sessionwire::Limits) -> usize {
    limits
        .max_queue_bytes()
        .max(limits.max_message_size().saturating_mul(2))
}

/// What the rest of the server tells the MQTT event loop.
#[derive(Debug)]
pub enum LoopCommand {
    /// A WebSocket connection's news.
    Conn(MqttCommand),
    /// The password check of a CONNECT is over.
    Checked {
        /// The attempt, to accept or refuse.
        incoming: Incoming,
        /// What the check found.
        verdict: Verdict,
    },
    /// Control: the sessions of the other protocol, to which the MQTT
    /// sessions are added before the answer goes.
    List {
        /// The session protocol's sessions.
        sessions: Vec<SessionInfo>,
        /// Where the whole list goes.
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    /// Control: close the client with this id (5.0: DISCONNECT 0x98).
    Close {
        /// The client identifier.
        client_id: String,
        /// Whether there was such a session.
        reply: oneshot::Sender<bool>,
    },
    /// Close every client (5.0: DISCONNECT 0x8B), stop accepting, and end
    /// once the last writes are done or at `until`.
    Shutdown {
        /// When the loop ends whatever is left.
        until: Instant,
        /// Answered as the loop ends, its event log flushed.
        done: oneshot::Sender<()>,
    },
}

/// The way into the event loop: a bounded channel, and the waker of the
/// loop's poll.
#[derive(Clone, Debug)]
pub struct LoopSender {
    tx: mpsc::Sender<LoopCommand>,
    waker: Arc<mio::Waker>,
}

/// A [`LoopSender`] that does not keep the loop's channel open.
#[derive(Clone, Debug)]
pub struct WeakLoopSender {
    tx: mpsc::WeakSender<LoopCommand>,
    waker: Arc<mio::Waker>,
}

impl LoopSender {
    /// The sending end of `tx`, waking the loop with `waker`.
    pub fn new(tx: mpsc::Sender<LoopCommand>, waker: Arc<mio::Waker>) -> LoopSender {
        LoopSender { tx, waker }
    }

    /// Queues `command` if there is room, and wakes the loop.
    pub fn try_send(
        &self,
        command: LoopCommand,
    ) -> Result<(), mpsc::error::TrySendError<LoopCommand>> {
        self.tx.try_send(command)?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// Queues `command`, waiting for room; false when the loop is gone.
    pub async fn send(&self, command: LoopCommand) -> bool {
        let sent = self.tx.send(command).await.is_ok();
        if sent {
            let _ = self.waker.wake();
        }
        sent
    }

    /// Queues `command` now if there is room, else from a task that waits
    /// for it (for a caller that must not wait: the hub).
    pub fn send_soon(&self, command: LoopCommand) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.try_send(command) {
            let this = self.clone();
            tokio::spawn(async move { this.send(command).await });
        }
    }

    /// A sender that does not keep the loop's channel open.
    pub fn downgrade(&self) -> WeakLoopSender {
        WeakLoopSender {
            tx: self.tx.downgrade(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl WeakLoopSender {
    /// The sender, while the loop's channel is open.
    pub fn upgrade(&self) -> Option<LoopSender> {
        Some(LoopSender {
            tx: self.tx.upgrade()?,
            waker: Arc::clone(&self.waker),
        })
    }
}

/// What a WebSocket connection tells the loop.
#[derive(Debug)]
pub enum MqttCommand {
    /// A connection opened.
    Open {
        /// Its number.
        conn: u64,
        /// The client's address (password checks are bounded per address).
        peer: IpAddr,
        /// The way to it.
        out: ConnOut,
    },
    /// Bytes the client sent, in order.
    Bytes {
        /// The connection.
        conn: u64,
        /// What was read.
        data: Bytes,
    },
    /// The connection is gone (its end, an I/O error, a frame MQTT does not
    /// allow).
    Lost {
        /// The connection.
        conn: u64,
    },
}

/// The batches waiting for one connection, shared by the loop (which
/// pushes) and the connection's task (which takes). A queue that allocates
/// only when used, rather than a channel, which allocates a block of slots
/// up front for every idle connection; one task waits on it, so its waker
/// is kept in the state rather than in a [`tokio::sync::Notify`] (two of
/// which, and their waiting futures, would double the bytes an idle
/// connection holds here and in its task).
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutState>,
    /// Most batches waiting (a close is always taken).
    capacity: usize,
    /// Most bytes waiting in those batches.
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct OutState {
    queue: VecDeque<MqttOut>,
    /// Bytes in the queued batches.
    bytes: usize,
    /// The loop dropped its end.
    loop_gone: bool,
    /// The task dropped its end.
    task_gone: bool,
    /// The loop gave up on the connection: a task stuck writing to a client
    /// that does not read stops.
    gave_up: bool,
    /// The task, waiting for a batch, the loop's end or its giving up.
    waker: Option<Waker>,
}

impl OutState {
    /// Keeps `cx`'s waker for the next change.
    fn wait(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state with `f` and, if it says it changed something,
    /// wakes the waiting task once the lock is released; what `f` said.
    fn change(&self, f: impl FnOnce(&mut OutState) -> bool) -> bool {
        let mut state = self.state();
        let changed = f(&mut state);
        let waker = if changed { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        changed
    }
}

/// The loop's end of an MQTT-over-WebSocket connection.
#[derive(Debug)]
pub struct ConnOut(Arc<Outbox>);

/// The connection task's end.
#[derive(Debug)]
pub struct ConnIn(Arc<Outbox>);

impl ConnOut {
    /// Both ends; at most `capacity` batches and `max_bytes` bytes wait.
    pub fn pair(capacity: usize, max_bytes: usize) -> (ConnOut, ConnIn) {
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutState::default()),
            capacity,
            max_bytes,
        });
        (ConnOut(Arc::clone(&outbox)), ConnIn(outbox))
    }

    /// Queues `out`; false when it would take the connection past its
    /// batches or bytes waiting (a [`MqttOut::Close`] always fits) or its
    /// task is gone.
    pub fn send(&self, out: MqttOut) -> bool {
        let (capacity, max_bytes) = (self.0.capacity, self.0.max_bytes);
        self.0.change(|state| {
            let bytes = state.bytes.checked_add(out.size());
            let full = state.queue.len() >= capacity || bytes.is_none_or(|b| b > max_bytes);
            if (full && !matches!(out, MqttOut::Close)) || state.task_gone {
                return false;
            }
            state.bytes = bytes.unwrap_or(usize::MAX);
            state.queue.push_back(out);
            true
        })
    }

    /// Bytes queued for the task and not taken yet.
    pub fn waiting_bytes(&self) -> usize {
        self.0.state().bytes
    }

    /// Tells the task to stop writing and end.
    pub fn give_up(&self) {
        self.0.change(|state| {
            state.gave_up = true;
            true
        });
    }
}

impl Drop for ConnOut {
    fn drop(&mut self) {
        self.0.change(|state| {
            state.loop_gone = true;
            true
        });
    }
}

impl ConnIn {
    /// The next batch or close; `None` once the loop let go with nothing
    /// left.
    pub async fn next(&self) -> Option<MqttOut> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`next`](Self::next) as a poll: the waker is kept under the same
    /// lock as the queue, so no push is missed.
    pub fn poll_next(&self, cx: &Context<'_>) -> Poll<Option<MqttOut>> {
        let mut state = self.0.state();
        if let Some(out) = state.queue.pop_front() {
            state.bytes = state.bytes.saturating_sub(out.size());
            if state.queue.is_empty() {
                // An idle connection keeps no slots.
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some(out));
        }
        if state.loop_gone {
            return Poll::Ready(None);
        }
        state.wait(cx);
        Poll::Pending
    }

    /// The next batch or close if one is waiting.
    #[cfg(test)]
    pub fn try_next(&self) -> Option<MqttOut> {
        let mut state = self.0.state();
        let out = state.queue.pop_front()?;
        state.bytes = state.bytes.saturating_sub(out.size());
        Some(out)
    }

    /// Resolves when the loop gives up on the connection.
    pub async fn closing(&self) {
        poll_fn(|cx| {
            let mut state = self.0.state();
            if state.gave_up {
                return Poll::Ready(());
            }
            state.wait(cx);
            Poll::Pending
        })
        .await;
    }
}

impl Drop for ConnIn {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.task_gone = true;
        state.queue = VecDeque::new();
        state.waker = None;
    }
}

/// What the loop tells an MQTT connection.
#[derive(Debug)]
pub enum MqttOut {
    /// Write these bytes, in order, with one flush.
    Write(Vec<Bytes>),
    /// Everything is written: close the connection.
    Close,
}

impl MqttOut {
    /// The bytes it holds.
    fn size(&self) -> usize {
        match self {
            MqttOut::Write(batch) => batch.iter().map(Bytes::len).sum(),
            MqttOut::Close => 0,
        }
    }
}
