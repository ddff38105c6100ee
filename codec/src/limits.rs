//! The configured limits: every bound the codec and the session layer enforce.
//!
//! One value, shared by every decoder, so that a server sets its limits once.
//! Each limit is checked against a declared length *before* a byte is buffered.

use std::fmt;
use std::time::Duration;

/// The bounds a server enforces on its clients.
///
/// Build one with [`Limits::builder`]; [`Limits::default`] gives the documented
/// defaults.
///
/// ```
/// use sessionwire::Limits;
/// let limits = Limits::builder().max_message_size(1024).build().unwrap();
/// assert_eq!(limits.max_message_size(), 1024);
/// assert_eq!(limits.max_batch_size(), Limits::DEFAULT_MAX_BATCH_SIZE);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    max_message_size: usize,
    max_batch_size: usize,
    max_queue_messages: usize,
    max_queue_bytes: usize,
    reorder_window: u32,
    reorder_wait: Duration,
    recovery_buffer: usize,
    max_clients: usize,
}

impl Limits {
    /// Default maximum size of one message, type byte included: 32 KiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 32 * 1024;
    /// Default maximum size of one decoded HTTP polling batch: 1 MiB.
    pub const DEFAULT_MAX_BATCH_SIZE: usize = 1024 * 1024;
    /// Default maximum number of messages queued for one client: 1,000.
    pub const DEFAULT_MAX_QUEUE_MESSAGES: usize = 1000;
    /// Default maximum bytes queued for one client: 4 MiB.
    pub const DEFAULT_MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
    /// Default reorder window for HTTP sends held out of order: 32 sequence numbers.
    pub const DEFAULT_REORDER_WINDOW: u32 = 32;
    /// Default time an out-of-order send waits for its gap to fill: 5 s.
    pub const DEFAULT_REORDER_WAIT: Duration = Duration::from_secs(5);
    /// Default number of sent messages kept for recovery on reconnect: 256,
    /// the number the client keeps for resending.
    pub const DEFAULT_RECOVERY_BUFFER: usize = 256;
    /// Default maximum number of connected clients: 10,000.
    pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder {
            limits: Limits::default(),
        }
    }

    /// Largest message accepted, in bytes, type byte included. A larger one
    /// closes the client with `MESSAGE_TOO_LARGE`.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Largest decoded HTTP polling batch (the binary batch, not its base64 text).
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Largest base64 text that can hold a batch of at most
    /// [`max_batch_size`](Self::max_batch_size) bytes.
    pub fn max_batch_text(&self) -> usize {
        self.max_batch_size.div_ceil(3).saturating_mul(4)
    }

    /// Most messages queued for one client before `MESSAGE_QUEUE_LIMIT_REACHED`.
    pub fn max_queue_messages(&self) -> usize {
        self.max_queue_messages
    }

    /// Most bytes queued for one client before `MESSAGE_QUEUE_LIMIT_REACHED`.
    pub fn max_queue_bytes(&self) -> usize {
        self.max_queue_bytes
    }

    /// How far ahead of the next expected HTTP send sequence number a send may be
    /// held for reordering; further is `LOST_MESSAGES`.
    pub fn reorder_window(&self) -> u32 {
        self.reorder_window
    }

    /// How long a gap in HTTP send sequence numbers may stay open before
    /// `LOST_MESSAGES`.
    pub fn reorder_wait(&self) -> Duration {
        self.reorder_wait
    }

    /// How many sent messages a session keeps to resend after a reconnection.
    pub fn recovery_buffer(&self) -> usize {
        self.recovery_buffer
    }

    /// Most sessions a registry holds at once.
    pub fn max_clients(&self) -> usize {
        self.max_clients
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_batch_size: Self::DEFAULT_MAX_BATCH_SIZE,
            max_queue_messages: Self::DEFAULT_MAX_QUEUE_MESSAGES,
            max_queue_bytes: Self::DEFAULT_MAX_QUEUE_BYTES,
            reorder_window: Self::DEFAULT_REORDER_WINDOW,
            reorder_wait: Self::DEFAULT_REORDER_WAIT,
            recovery_buffer: Self::DEFAULT_RECOVERY_BUFFER,
            max_clients: Self::DEFAULT_MAX_CLIENTS,
        }
    }
}

/// Builds a [`Limits`]; see [`Limits::builder`].
#[derive(Clone, Debug)]
pub struct LimitsBuilder {
    limits: Limits,
}

impl LimitsBuilder {
    /// Sets [`Limits::max_message_size`]; at least 1.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Sets [`Limits::max_batch_size`]; at least 5 (one empty-bodied message).
    pub fn max_batch_size(mut self, bytes: usize) -> Self {
        self.limits.max_batch_size = bytes;
        self
    }

    /// Sets [`Limits::max_queue_messages`]; at least 1.
    pub fn max_queue_messages(mut self, messages: usize) -> Self {
        self.limits.max_queue_messages = messages;
        self
    }

    /// Sets [`Limits::max_queue_bytes`]; at least 1.
    pub fn max_queue_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_queue_bytes = bytes;
        self
    }

    /// Sets [`Limits::reorder_window`]; 0 allows no reordering at all.
    pub fn reorder_window(mut self, sequence_numbers: u32) -> Self {
        self.limits.reorder_window = sequence_numbers;
        self
    }

    /// Sets [`Limits::reorder_wait`].
    pub fn reorder_wait(mut self, wait: Duration) -> Self {
        self.limits.reorder_wait = wait;
        self
    }

    /// Sets [`Limits::recovery_buffer`].
    pub fn recovery_buffer(mut self, messages: usize) -> Self {
        self.limits.recovery_buffer = messages;
        self
    }

    /// Sets [`Limits::max_clients`]; at least 1.
    pub fn max_clients(mut self, clients: usize) -> Self {
        self.limits.max_clients = clients;
        self
    }

    /// Checks the values and returns the limits.
    pub fn build(self) -> Result<Limits, InvalidLimits> {
        let l = &self.limits;
        let bad = if l.max_message_size == 0 {
            Some("max_message_size must be at least 1")
        } else if l.max_batch_size < 5 {
            Some("max_batch_size must be at least 5")
        } else if l.max_queue_messages == 0 {
            Some("max_queue_messages must be at least 1")
        } else if l.max_queue_bytes == 0 {
            Some("max_queue_bytes must be at least 1")
        } else if l.max_clients == 0 {
            Some("max_clients must be at least 1")
        } else {
            None
        };
        match bad {
            Some(why) => Err(InvalidLimits(why)),
            None => Ok(self.limits),
        }
    }
}

/// A [`LimitsBuilder`] was given a value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidLimits(&'static str);

impl fmt::Display for InvalidLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidLimits {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_constants() {
        let l = Limits::default();
        assert_eq!(l.max_message_size(), 32 * 1024);
        assert_eq!(l.max_batch_size(), 1024 * 1024);
        assert_eq!(l.max_queue_messages(), 1000);
        assert_eq!(l.max_queue_bytes(), 4 * 1024 * 1024);
        assert_eq!(l.reorder_window(), 32);
        assert_eq!(l.reorder_wait(), Duration::from_secs(5));
        assert_eq!(l.recovery_buffer(), 256);
        assert_eq!(l.max_clients(), 10_000);
        assert_eq!(Limits::builder().build(), Ok(l));
    }

    #[test]
    fn builder_sets_each_limit_and_rejects_zero() {
        let l = Limits::builder()
            .max_message_size(10)
            .max_batch_size(100)
            .max_queue_messages(2)
            .max_queue_bytes(3)
            .reorder_window(4)
            .reorder_wait(Duration::from_millis(5))
            .recovery_buffer(6)
            .max_clients(7)
            .build()
            .unwrap();
        assert_eq!(
            (
                l.max_message_size(),
                l.max_batch_size(),
                l.max_queue_messages(),
                l.max_queue_bytes(),
                l.reorder_window(),
                l.reorder_wait(),
                l.recovery_buffer(),
                l.max_clients()
            ),
            (10, 100, 2, 3, 4, Duration::from_millis(5), 6, 7)
        );
        assert!(Limits::builder().max_message_size(0).build().is_err());
        assert!(Limits::builder().max_batch_size(4).build().is_err());
        assert!(Limits::builder().max_queue_messages(0).build().is_err());
        assert!(Limits::builder().max_queue_bytes(0).build().is_err());
        assert!(Limits::builder().max_clients(0).build().is_err());
        // The error says which limit is wrong (`check` prints it).
        assert_eq!(
            Limits::builder()
                .max_clients(0)
                .build()
                .unwrap_err()
                .to_string(),
            "max_clients must be at least 1"
        );
    }

    #[test]
    fn batch_text_limit_covers_the_base64_of_a_full_batch() {
        for n in [5usize, 6, 7, 8, 100, 1 << 20] {
            let l = Limits::builder().max_batch_size(n).build().unwrap();
            assert_eq!(l.max_batch_text(), n.div_ceil(3) * 4);
        }
    }
}
