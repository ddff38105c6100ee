//! Why a server closes a client: the close reasons of docs/protocol.md section 1.
//!
//! The list is the server's own. Ids are the wire/API ids; there is no id 10.
//! The codec never sends a close reason to the client: the server decides one
//! and then acts on the wire (ABORT, a dropped socket, a response code).

use std::fmt;
use std::str::FromStr;

/// Declares the close reasons from one table, so that id, name, description
/// and recoverability cannot drift apart.
macro_rules! close_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $recoverable:literal, $desc:literal; )*) => {
        /// Why the server closes a client session.
        ///
        /// ```
        /// use sessionwire::CloseReason;
        /// let r = CloseReason::from_id(7).unwrap();
        /// assert_eq!(r, CloseReason::InvalidInboundMessage);
        /// assert_eq!(r.name(), "INVALID_INBOUND_MESSAGE");
        /// assert!(!r.is_recoverable());
        /// assert_eq!(r.to_string(), "INVALID_INBOUND_MESSAGE (7)");
        /// assert_eq!(CloseReason::from_id(10), None);
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum CloseReason {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl CloseReason {
            /// Every close reason, in id order.
            pub const ALL: [CloseReason; 15] = [ $( CloseReason::$variant, )* ];

            /// The wire/API id of this reason.
            pub const fn id(self) -> u8 {
                self as u8
            }

            /// The reason with this id; `None` for an unknown id (including 10).
            pub const fn from_id(id: u8) -> Option<CloseReason> {
                match id {
                    $( $id => Some(CloseReason::$variant), )*
                    _ => None,
                }
            }

            /// The upper-case name, as docs/protocol.md spells it (`MESSAGE_TOO_LARGE`).
            pub const fn name(self) -> &'static str {
                match self {
                    $( CloseReason::$variant => $name, )*
                }
            }

            /// The reason with this exact upper-case name; `None` otherwise.
            pub fn from_name(name: &str) -> Option<CloseReason> {
                match name {
                    $( $name => Some(CloseReason::$variant), )*
                    _ => None,
                }
            }

            /// A one-line description of when the server closes for this reason.
            pub const fn description(self) -> &'static str {
                match self {
                    $( CloseReason::$variant => $desc, )*
                }
            }

            /// Whether the session may be resumed by a reconnection after a close
            /// for this reason.
            pub const fn is_recoverable(self) -> bool {
                match self {
                    $( CloseReason::$variant => $recoverable, )*
                }
            }
        }
    };
}

close_reasons! {
    /// The connection dropped, or a connect/poll failed in a way the client may retry.
    ConnectionLost = 0, "CONNECTION_LOST", true,
        "the connection dropped, or a connect or poll failed in a way the client may retry";
    /// An I/O operation failed.
    IoException = 1, "IO_EXCEPTION", true,
        "an I/O operation failed (read on a closed socket, TLS failure)";
    /// No answer to a ping in time, or no poll opened in time.
    ClientUnresponsive = 2, "CLIENT_UNRESPONSIVE", true,
        "no answer to a ping in time, or no poll opened in time";
    /// The outbound queue hit its limit; the queue is discarded.
    MessageQueueLimitReached = 3, "MESSAGE_QUEUE_LIMIT_REACHED", false,
        "the outbound queue for the client hit its limit; the queue is discarded";
    /// The client asked to close.
    ClosedByClient = 4, "CLOSED_BY_CLIENT", false,
        "the client asked to close";
    /// The client sent a message over the server's maximum size.
    MessageTooLarge = 5, "MESSAGE_TOO_LARGE", false,
        "the client sent a message over the server's maximum; the message is discarded";
    /// A bug or resource failure on the server side.
    InternalError = 6, "INTERNAL_ERROR", false,
        "a bug or resource failure on the server side";
    /// Bytes that are not a valid message.
    InvalidInboundMessage = 7, "INVALID_INBOUND_MESSAGE", false,
        "bytes that are not a valid message";
    /// The server refused the connection, or the client used an unknown client id.
    Aborted = 8, "ABORTED", false,
        "the server refused the connection, or the client used an unknown client id";
    /// Missing, invalid or duplicate sequence numbers, or the reorder wait ran out.
    LostMessages = 9, "LOST_MESSAGES", false,
        "missing, invalid or duplicate sequence numbers, or the reorder wait ran out";
    /// A control session closed the client.
    ClosedByController = 11, "CLOSED_BY_CONTROLLER", false,
        "a control session closed the client";
    /// The session moved to another server.
    FailedOver = 12, "FAILED_OVER", false,
        "the session moved to another server; this one evicts its local view";
    /// The session's authentication expired.
    Expired = 13, "EXPIRED", false,
        "the session's authentication expired";
    /// The session's authentication was revoked.
    Revoked = 14, "REVOKED", false,
        "the session's authentication was revoked";
    /// Closed to make way for a new session with the same identity.
    SessionTakenOver = 15, "SESSION_TAKEN_OVER", false,
        "closed to make way for a new session with the same identity";
}

impl fmt::Display for CloseReason {
    /// `NAME (id)`, for example `MESSAGE_TOO_LARGE (5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.id())
    }
}

/// The error of parsing a [`CloseReason`] from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCloseReason;

impl fmt::Display for UnknownCloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown close reason")
    }
}

impl std::error::Error for UnknownCloseReason {}

impl FromStr for CloseReason {
    type Err = UnknownCloseReason;

    /// Accepts a name (`LOST_MESSAGES`) or a decimal id (`9`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(r) = CloseReason::from_name(s) {
            return Ok(r);
        }
        s.parse::<u8>()
            .ok()
            .and_then(CloseReason::from_id)
            .ok_or(UnknownCloseReason)
    }
}

impl TryFrom<u8> for CloseReason {
    type Error = UnknownCloseReason;

    fn try_from(id: u8) -> Result<Self, Self::Error> {
        CloseReason::from_id(id).ok_or(UnknownCloseReason)
    }
}

impl From<CloseReason> for u8 {
    fn from(r: CloseReason) -> u8 {
        r.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocol.md section 1, row by row: id, name, recoverable.
    const TABLE: [(u8, &str, bool); 15] = [
        (0, "CONNECTION_LOST", true),
        (1, "IO_EXCEPTION", true),
        (2, "CLIENT_UNRESPONSIVE", true),
        (3, "MESSAGE_QUEUE_LIMIT_REACHED", false),
        (4, "CLOSED_BY_CLIENT", false),
        (5, "MESSAGE_TOO_LARGE", false),
        (6, "INTERNAL_ERROR", false),
        (7, "INVALID_INBOUND_MESSAGE", false),
        (8, "ABORTED", false),
        (9, "LOST_MESSAGES", false),
        (11, "CLOSED_BY_CONTROLLER", false),
        (12, "FAILED_OVER", false),
        (13, "EXPIRED", false),
        (14, "REVOKED", false),
        (15, "SESSION_TAKEN_OVER", false),
    ];

    #[test]
    fn protocol_section_1_ids_names_and_recoverability() {
        for (i, (id, name, rec)) in TABLE.into_iter().enumerate() {
            let r = CloseReason::from_id(id).expect("known id");
            assert_eq!(CloseReason::ALL[i], r);
            assert_eq!(r.id(), id);
            assert_eq!(r.name(), name);
            assert_eq!(r.is_recoverable(), rec, "{name}");
            assert_eq!(CloseReason::from_name(name), Some(r));
            assert_eq!(name.parse::<CloseReason>(), Ok(r));
            assert_eq!(id.to_string().parse::<CloseReason>(), Ok(r));
            assert_eq!(r.to_string(), format!("{name} ({id})"));
            assert_eq!(u8::from(r), id);
            assert!(!r.description().is_empty());
        }
    }

    #[test]
    fn protocol_section_1_there_is_no_10_and_unknown_ids_are_rejected() {
        for id in 0..=255u8 {
            let known = TABLE.iter().any(|(i, _, _)| *i == id);
            assert_eq!(CloseReason::from_id(id).is_some(), known, "id {id}");
            assert_eq!(CloseReason::try_from(id).is_ok(), known);
        }
        assert_eq!(CloseReason::from_id(10), None);
        assert_eq!("10".parse::<CloseReason>(), Err(UnknownCloseReason));
        assert_eq!(
            "lost_messages".parse::<CloseReason>(),
            Err(UnknownCloseReason)
        );
        assert_eq!("".parse::<CloseReason>(), Err(UnknownCloseReason));
        assert_eq!(UnknownCloseReason.to_string(), "unknown close reason");
    }
}
