//! Session ids and session tokens, drawn from a cryptographically secure
//! random source (the operating system's, through `getrandom`).

use std::fmt;

/// The random source failed: the server cannot mint a session. The registry
/// answers 119 (server not ready) and closes the attempt with `INTERNAL_ERROR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomSourceFailed;

impl fmt::Display for RandomSourceFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the secure random source failed")
    }
}

impl std::error::Error for RandomSourceFailed {}

fn fill(buf: &mut [u8]) -> Result<(), RandomSourceFailed> {
    getrandom::fill(buf).map_err(|_| RandomSourceFailed)
}

/// A session id as the handshake carries it: a server part and a value part,
/// each a big-endian `i64` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// Identifies the server that minted the session.
    pub server: i64,
    /// Identifies the session on that server.
    pub value: i64,
}

impl SessionId {
    /// A fresh id for `server` with a random value part.
    pub fn generate(server: i64) -> Result<SessionId, RandomSourceFailed> {
        let mut b = [0u8; 8];
        fill(&mut b)?;
        Ok(SessionId {
            server,
            value: i64::from_be_bytes(b),
        })
    }
}

impl fmt::Display for SessionId {
    /// `server-value` in hexadecimal, as the server logs it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.server, self.value)
    }
}

/// The 24-byte printable session token: the client echoes it as `c` when it
/// reconnects, so it is the key to a session and must be unguessable.
///
/// Generated tokens use the 64-character URL-safe alphabet (6 random bits per
/// byte, 144 bits in all) so that they need no escaping in a query string;
/// parsed tokens may be any printable ASCII (0x21-0x7e).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionToken([u8; SessionToken::LEN]);

impl SessionToken {
    /// The token length on the wire.
    pub const LEN: usize = 24;

    const ALPHABET: &'static [u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// A fresh random token.
    pub fn generate() -> Result<SessionToken, RandomSourceFailed> {
        let mut b = [0u8; Self::LEN];
        fill(&mut b)?;
        for byte in &mut b {
            // 64 divides 256: masking keeps every character equally likely.
            *byte = Self::ALPHABET[usize::from(*byte & 63)];
        }
        Ok(SessionToken(b))
    }

    /// The token with these bytes: exactly 24 bytes of printable ASCII.
    pub fn from_bytes(bytes: &[u8]) -> Option<SessionToken> {
        let arr: [u8; Self::LEN] = bytes.try_into().ok()?;
        if arr.iter().all(|b| (0x21..=0x7e).contains(b)) {
            Some(SessionToken(arr))
        } else {
            None
        }
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The token as text (always printable ASCII).
    pub fn as_str(&self) -> &str {
        // Invariant: every byte is printable ASCII, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for SessionToken {
    /// Shows only a prefix: a token is a credential and must not end up whole
    /// in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionToken({}...)",
            self.as_str().get(..4).unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_2_token_is_24_printable_bytes_and_random() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 24);
        assert!(a.as_bytes().iter().all(|c| (0x21..=0x7e).contains(c)));
        assert_ne!(a, b, "two tokens from a CSPRNG are different");
        assert_eq!(SessionToken::from_bytes(a.as_bytes()), Some(a));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn section_2_token_rejects_wrong_length_or_unprintable_bytes() {
        assert_eq!(SessionToken::from_bytes(&[b'a'; 23]), None);
        assert_eq!(SessionToken::from_bytes(&[b'a'; 25]), None);
        let mut b = [b'a'; 24];
        b[5] = b' ';
        assert_eq!(SessionToken::from_bytes(&b), None);
        b[5] = 0x7f;
        assert_eq!(SessionToken::from_bytes(&b), None);
        b[5] = b'~';
        assert!(SessionToken::from_bytes(&b).is_some());
    }

    #[test]
    fn section_2_session_ids_differ_in_their_value_part() {
        let a = SessionId::generate(7).unwrap();
        let b = SessionId::generate(7).unwrap();
        assert_eq!(a.server, 7);
        assert_ne!(a.value, b.value);
        assert_eq!(a.to_string().len(), 33);
    }
}
