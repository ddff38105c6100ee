//! One MQTT-over-TCP socket of the event loop (`event_loop.rs`): no task,
//! no buffer of its own while it keeps up.
//!
//! Reads go into the loop's one buffer. What the broker has for the
//! connection in one loop turn is written with one `writev`; only what the
//! socket would not take stays, in a buffer bounded by
//! [`conn_bytes`](super::channel::conn_bytes), and past that bound the
//! connection does not keep up and is closed (the registry's
//! `outbound_full`, 0x97). The broker also closes a connection whose
//! socket takes nothing of what waits for [`WRITE_STALL`], and stops
//! sending QoS 0 to one with more than [`SHED_BYTES`] waiting.

use std::io::{self, IoSlice, Read as _, Write as _};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use mio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::slots::PendingSlot;

/// Most buffers gathered into one `writev`.
const GATHER: usize = 64;

/// How long bytes may wait for a socket that takes none of them before
/// its client is taken to have stopped reading (closed 0x97, its session
/// kept).
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// Bytes waiting for a connection past which QoS 0 messages for it are
/// dropped (counted) rather than added: QoS 1 and 2 are bounded by the
/// in-flight window, QoS 0 by nothing else.
pub const SHED_BYTES: usize = 256 * 1024;

/// Bytes a socket would not take yet.
#[derive(Debug)]
struct Unsent {
    bytes: BytesMut,
    /// When the socket last took some (or the bytes began to wait).
    progress: Instant,
}

/// An MQTT client's TCP socket.
#[derive(Debug)]
pub struct TcpConn {
    stream: TcpStream,
    /// Bytes the socket would not take yet; `None` while the client keeps
    /// up (boxed, as is `waiting`: a pointer in every idle connection
    /// rather than the whole buffer or slot).
    unsent: Option<Box<Unsent>>,
    /// Its address's place among connections not answered yet, given back
    /// at the first write (the CONNACK, or the end of a connection whose
    /// CONNECT never came).
    waiting: Option<Box<PendingSlot>>,
    /// Its place among the MQTT-over-TCP connections.
    _slot: OwnedSemaphorePermit,
    /// Its address's share of the open connections, held until the socket
    /// is dropped.
    _open: PendingSlot,
    /// Its writes passed the bound: closed without a last write.
    gave_up: bool,
}

/// What a write came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Everything is written, or waits within the bound for the socket.
    Ok,
    /// What waits would pass the bound: the client does not keep up.
    Full,
    /// The socket failed.
    Failed,
}

impl TcpConn {
    /// A connection holding its places: among all connections, among its
    /// address's not answered yet, and among its address's open ones.
    pub fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        waiting: PendingSlot,
        open: PendingSlot,
    ) -> TcpConn {
        TcpConn {
            stream,
            unsent: None,
            waiting: Some(Box::new(waiting)),
            _slot: slot,
            _open: open,
            gave_up: false,
        }
    }

    /// The socket, to register with the loop.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// One read into `buf`: `Ok(0)` at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Writes `batch` after what still waits: with one system call when
    /// nothing waits and the socket takes it all; what it does not take
    /// waits, up to `bound` bytes.
    pub fn write(&mut self, batch: &[Bytes], bound: usize, now: Instant) -> Sent {
        self.waiting = None;
        let Some(total) = batch.iter().try_fold(0usize, |n, b| n.checked_add(b.len())) else {
            return self.give_up();
        };
        if let Some(unsent) = self.unsent.as_mut() {
            // The socket is full: the writable event writes the rest.
            if unsent
                .bytes
                .len()
                .checked_add(total)
                .is_none_or(|n| n > bound)
            {
                return self.give_up();
            }
            for b in batch {
                unsent.bytes.extend_from_slice(b);
            }
            return Sent::Ok;
        }
        let mut written = 0;
        while written < total {
            let mut slices = [IoSlice::new(&[]); GATHER];
            let n = gather(batch, written, &mut slices);
            match self.stream.write_vectored(&slices[..n]) {
                Ok(0) => return Sent::Failed,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Sent::Failed,
            }
        }
        if written == total {
            return Sent::Ok;
        }
        if total - written > bound {
            return self.give_up();
        }
        let mut unsent = BytesMut::with_capacity(total - written);
        let mut skip = written;
        for b in batch {
            let from = skip.min(b.len());
            skip -= from;
            unsent.extend_from_slice(&b[from..]);
        }
        self.unsent = Some(Box::new(Unsent {
            bytes: unsent,
            progress: now,
        }));
        Sent::Ok
    }

    /// The socket can take more: writes what waits.
    pub fn write_unsent(&mut self, now: Instant) -> Sent {
        let Some(waiting) = self.unsent.as_mut() else {
            return Sent::Ok;
        };
        let unsent = &mut waiting.bytes;
        let mut written = 0;
        while written < unsent.len() {
            match self.stream.write(&unsent[written..]) {
                Ok(0) => return Sent::Failed,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Sent::Failed,
            }
        }
        if written == unsent.len() {
            // Nothing stays allocated for a connection that keeps up.
            self.unsent = None;
        } else if written > 0 {
            unsent.advance(written);
            waiting.progress = now;
        }
        Sent::Ok
    }

    /// Whether bytes wait for the socket.
    pub fn has_unsent(&self) -> bool {
        self.unsent.is_some()
    }

    /// How many bytes wait for the socket.
    pub fn unsent_len(&self) -> usize {
        self.unsent.as_ref().map_or(0, |u| u.bytes.len())
    }

    /// While bytes wait: when the socket last took some of them (or they
    /// began to wait).
    pub fn progress(&self) -> Option<Instant> {
        self.unsent.as_ref().map(|u| u.progress)
    }

    /// Whether it was given up on (its writes passed the bound).
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Ends our side of the stream once everything is written.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    fn give_up(&mut self) -> Sent {
        self.gave_up = true;
        self.unsent = None;
        Sent::Full
    }
}

/// Fills `out` with the parts of `batch` from byte `skip` on; how many.
fn gather<'a>(batch: &'a [Bytes], mut skip: usize, out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for b in batch {
        if n == out.len() {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out[n] = IoSlice::new(&b[skip..]);
        skip = 0;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_skips_what_was_written_and_stops_at_the_slice_bound() {
        let batch = [
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"fgh"),
        ];
        let mut out = [IoSlice::new(&[]); 2];
        let n = gather(&batch, 4, &mut out);
        assert_eq!(n, 2);
        assert_eq!((&*out[0], &*out[1]), (&b"e"[..], &b"fgh"[..]));
        let n = gather(&batch, 0, &mut out);
        assert_eq!((n, &*out[0], &*out[1]), (2, &b"abc"[..], &b"de"[..]));
        assert_eq!(gather(&batch, 8, &mut out), 0);
    }
}
