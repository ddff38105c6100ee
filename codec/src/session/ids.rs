//! Session ids and session tokens, drawn from a random source the caller
//! injects: a server passes a cryptographically secure one (the operating
//! system's); tests, scenarios and fuzzing pass a [`SeededRandom`] so that
//! every run mints the same ids.

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

/// Where session ids and tokens come from. A token is the key to a session,
/// so a server must pass a cryptographically secure source.
///
/// Any `FnMut(&mut [u8]) -> Result<(), RandomSourceFailed>` is one:
///
/// ```
/// use sessionwire::session::ids::{RandomSource, RandomSourceFailed, SessionToken};
/// let mut zeros = |buf: &mut [u8]| -> Result<(), RandomSourceFailed> {
///     buf.fill(0);
///     Ok(())
/// };
/// let token = SessionToken::generate(&mut zeros).unwrap();
/// assert_eq!(token.as_str(), "AAAAAAAAAAAAAAAAAAAAAAAA");
/// ```
pub trait RandomSource {
    /// Fills `buf` with random bytes, or says the source failed.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomSourceFailed>;
}

impl<F> RandomSource for F
where
    F: FnMut(&mut [u8]) -> Result<(), RandomSourceFailed>,
{
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomSourceFailed> {
        self(buf)
    }
}

/// A deterministic source (SplitMix64) for tests, scenarios and fuzzing:
/// the same seed gives the same ids and tokens. Predictable, so never for a
/// server facing clients.
#[derive(Clone, Debug)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A source that starts from `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomSourceFailed> {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
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
    /// A fresh id for `server` with a value part drawn from `random`.
    pub fn generate(
        server: i64,
        random: &mut impl RandomSource,
    ) -> Result<SessionId, RandomSourceFailed> {
        let mut b = [0u8; 8];
        random.fill(&mut b)?;
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

    /// A fresh token drawn from `random`.
    pub fn generate(random: &mut impl RandomSource) -> Result<SessionToken, RandomSourceFailed> {
        let mut b = [0u8; Self::LEN];
        random.fill(&mut b)?;
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
        let mut rng = SeededRandom::new(1);
        let a = SessionToken::generate(&mut rng).unwrap();
        let b = SessionToken::generate(&mut rng).unwrap();
        assert_eq!(a.as_bytes().len(), 24);
        assert!(a.as_bytes().iter().all(|c| (0x21..=0x7e).contains(c)));
        assert_ne!(a, b, "two draws from one source are different");
        let again = SessionToken::generate(&mut SeededRandom::new(1)).unwrap();
        assert_eq!(a, again, "the same seed mints the same token");
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
        let mut rng = SeededRandom::new(7);
        let a = SessionId::generate(7, &mut rng).unwrap();
        let b = SessionId::generate(7, &mut rng).unwrap();
        assert_eq!(a.server, 7);
        assert_ne!(a.value, b.value);
        assert_eq!(a.to_string().len(), 33);
    }

    #[test]
    fn section_2_a_failed_random_source_mints_nothing() {
        let mut broken =
            |_: &mut [u8]| -> Result<(), RandomSourceFailed> { Err(RandomSourceFailed) };
        assert_eq!(SessionToken::generate(&mut broken), Err(RandomSourceFailed));
        assert_eq!(SessionId::generate(1, &mut broken), Err(RandomSourceFailed));
    }

    #[test]
    fn seeded_random_is_splitmix64() {
        // The first outputs of SplitMix64 from seed 0, its published test
        // vector, each written little-endian; a last partial chunk takes the
        // low bytes of the next output.
        let words: [u64; 3] = [
            0xe220_a839_7b1d_cdaf,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f,
        ];
        let mut expected = Vec::new();
        for w in words {
            expected.extend_from_slice(&w.to_le_bytes());
        }
        let mut buf = [0u8; 20];
        SeededRandom::new(0).fill(&mut buf).unwrap();
        assert_eq!(buf[..], expected[..20]);
    }

    #[test]
    fn random_source_failure_says_what_failed() {
        assert_eq!(
            RandomSourceFailed.to_string(),
            "the secure random source failed"
        );
    }

    #[test]
    fn session_token_debug_shows_only_a_four_character_prefix() {
        let t = SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap();
        assert_eq!(format!("{t:?}"), "SessionToken(ABCD...)");
    }
}
