//! The users file (`--users FILE`) and `sessionwire add-user`.
//!
//! One user per line: `principal:hash`, where the hash is an Argon2id PHC
//! string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). Blank lines and
//! lines starting with `#` are ignored. A principal is 1 to 256 bytes with no
//! `:`, whitespace or control character.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The longest principal accepted.
pub const MAX_PRINCIPAL: usize = 256;

/// The largest users file read.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What is wrong with a users file.
#[derive(Debug, PartialEq, Eq)]
pub struct UsersError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub kind: UsersErrorKind,
}

/// The ways a users line can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsersErrorKind {
    /// No `:` between principal and hash.
    MissingSeparator,
    /// An empty, too long or forbidden principal.
    BadPrincipal,
    /// A hash that is not a PHC string.
    BadHash,
    /// The principal appears on an earlier line.
    Duplicate,
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            UsersErrorKind::MissingSeparator => "expected principal:hash",
            UsersErrorKind::BadPrincipal => "bad principal",
            UsersErrorKind::BadHash => "hash is not a PHC string",
            UsersErrorKind::Duplicate => "principal listed twice",
        };
        write!(f, "line {}: {what}", self.line)
    }
}

impl std::error::Error for UsersError {}

/// Whether `p` may be a principal in the users file.
pub fn valid_principal(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PRINCIPAL
        && !p
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// The users and their password hashes.
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// Parses a users file's text.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut hashes = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let err = |kind| UsersError { line, kind };
            let (principal, hash) = content
                .split_once(':')
                .ok_or(err(UsersErrorKind::MissingSeparator))?;
            if !valid_principal(principal) {
                return Err(err(UsersErrorKind::BadPrincipal));
            }
            if PasswordHash::new(hash).is_err() {
                return Err(err(UsersErrorKind::BadHash));
            }
            if hashes
                .insert(principal.to_owned(), hash.to_owned())
                .is_some()
            {
                return Err(err(UsersErrorKind::Duplicate));
            }
        }
        Ok(Users { hashes })
    }

    /// Reads and parses a users file.
    pub fn load(path: &Path) -> io::Result<Users> {
        let meta = std::fs::metadata(path)?;
        if meta.len() > MAX_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "users file too large",
            ));
        }
        let text = std::fs::read_to_string(path)?;
        Users::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `password` is `principal`'s. An unknown principal costs as
    /// much as a known one (a dummy hash is checked), so timing does not
    /// tell which principals exist.
    #[cfg(test)]
    pub fn verify(&self, principal: &str, password: &[u8]) -> bool {
        let mut blocks = vec![Block::default(); self.max_blocks()];
        self.verify_in(principal, password, &mut blocks)
    }

    /// Checks `password` like `verify` (tests only), with the Argon2 working memory
    /// supplied by the caller (at least [`max_blocks`](Self::max_blocks)
    /// blocks): a checking thread reuses one buffer instead of allocating
    /// (and leaving resident) a fresh one per check. A hash needing more
    /// blocks than given fails.
    pub fn verify_in(&self, principal: &str, password: &[u8], blocks: &mut [Block]) -> bool {
        match self.hashes.get(principal) {
            Some(hash) => check_in(hash, password, blocks),
            None => {
                let _ = check_in(dummy_hash(), password, blocks);
                false
            }
        }
    }

    /// The most Argon2 blocks (1 KiB each) one check of this file needs,
    /// the unknown-principal check included.
    pub fn max_blocks(&self) -> usize {
        self.hashes
            .values()
            .map(String::as_str)
            .chain([dummy_hash()])
            .filter_map(|h| PasswordHash::new(h).ok())
            .filter_map(|h| Params::try_from(&h).ok())
            .map(|p| p.block_count())
            .max()
            .unwrap_or(0)
    }
}

/// Verifies `password` against the PHC string `hash`, computing in `blocks`.
fn check_in(hash: &str, password: &[u8], blocks: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let needed = params.block_count();
    let Some(memory) = blocks.get_mut(..needed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(password, salt, out, memory)
        .is_err()
    {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(out).is_ok_and(|computed| computed == expected)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"no such user").unwrap_or_default())
}

/// Hashes a password with Argon2id (default parameters) and a fresh random
/// salt, as a PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    hash_with(&Argon2::default(), password)
}

fn hash_with(argon: &Argon2<'_>, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon.hash_password(password, &salt)?.to_string())
}

/// The users file text with `principal` set to `hash`: its line replaced
/// where it was, or appended.
pub fn with_user(text: &str, principal: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + principal.len() + hash.len() + 2);
    let mut replaced = false;
    for raw in text.lines() {
        let is_it = raw
            .trim()
            .split_once(':')
            .is_some_and(|(p, _)| p == principal && !raw.trim().starts_with('#'));
        if is_it {
            if !replaced {
                out.push_str(&format!("{principal}:{hash}\n"));
                replaced = true;
            }
        } else {
            out.push_str(raw);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("{principal}:{hash}\n"));
    }
    out
}

/// Sets `principal`'s password in the users file at `path` (creating the
/// file, or replacing the principal's line): the password is stored as an
/// Argon2id hash and the file is written atomically, by renaming.
///
/// The error says what is wrong, with the file's path where it applies.
pub fn add_user(path: &Path, principal: &str, password: &str) -> Result<(), String> {
    check_principal(principal)?;
    let existing = read_existing(path)?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    let hash = hash_password(password.as_bytes()).map_err(|e| format!("hashing: {e}"))?;
    let text = with_user(&existing, principal, &hash);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// Checks that `principal` can be added and that the users file at `path`,
/// if it exists, is well formed: what [`add_user`] checks before it hashes,
/// for a caller that wants to fail before asking for a password.
pub fn check_add_user(path: &Path, principal: &str) -> Result<(), String> {
    check_principal(principal)?;
    read_existing(path).map(drop)
}

fn check_principal(principal: &str) -> Result<(), String> {
    if valid_principal(principal) {
        Ok(())
    } else {
        Err(format!(
            "bad principal {principal:?}: 1 to {MAX_PRINCIPAL} bytes, no ':', space or control character"
        ))
    }
}

/// The users file's text (empty when it does not exist yet), checked.
fn read_existing(path: &Path) -> Result<String, String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Users::parse(&existing).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: the tests check the format, not the cost.
    fn quick() -> Argon2<'static> {
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    }

    #[test]
    fn users_file_verifies_the_right_password_only() {
        let hash = hash_with(&quick(), b"s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert_eq!(users.len(), 1);
        assert!(users.verify("alice", b"s3cret"));
        assert!(!users.verify("alice", b"guess"));
        assert!(!users.verify("alice", b""));
        assert!(!users.verify("bob", b"s3cret"));
    }

    #[test]
    fn users_file_faults_name_their_line() {
        let hash = hash_with(&quick(), b"x").unwrap();
        for (text, line, kind) in [
            ("alice\n".to_owned(), 1, UsersErrorKind::MissingSeparator),
            (format!("\n:{hash}\n"), 2, UsersErrorKind::BadPrincipal),
            (format!("a b:{hash}\n"), 1, UsersErrorKind::BadPrincipal),
            ("alice:plaintext\n".to_owned(), 1, UsersErrorKind::BadHash),
            (
                format!("alice:{hash}\nalice:{hash}\n"),
                2,
                UsersErrorKind::Duplicate,
            ),
        ] {
            assert_eq!(Users::parse(&text).unwrap_err(), UsersError { line, kind });
        }
    }

    #[test]
    fn with_user_replaces_in_place_or_appends() {
        let text = "# team\nalice:$old\nbob:$b\n";
        assert_eq!(
            with_user(text, "alice", "$new"),
            "# team\nalice:$new\nbob:$b\n"
        );
        assert_eq!(
            with_user(text, "carol", "$c"),
            "# team\nalice:$old\nbob:$b\ncarol:$c\n"
        );
        assert_eq!(with_user("", "a", "$h"), "a:$h\n");
    }

    #[test]
    fn principals_exclude_separators_and_controls() {
        assert!(valid_principal("alice@example"));
        for bad in ["", "a:b", "a b", "a\tb", "a\u{7}", &"x".repeat(257)] {
            assert!(!valid_principal(bad), "{bad:?}");
        }
    }
}
