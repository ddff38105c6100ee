//! Password checks under a flood of wrong ones.
//!
//! An Argon2 check is slow on purpose and needs a large block of working
//! memory (19 MiB at the default parameters). Three bounds keep a flood of
//! attempts from taking the server's memory or its users' time:
//!
//! - **Memory**: a fixed pool of [`WORKERS`] threads does every check, each
//!   in one buffer allocated when it starts and reused for every check, so
//!   hashing memory stays at `WORKERS` buffers however many attempts come
//!   (allocating a buffer per check leaves each one resident in the C
//!   allocator: hundreds of MiB after a few hundred attempts).
//! - **Waiting**: at most [`QUEUE`] checks wait for a worker, each for at
//!   most [`QUEUE_WAIT`]; past either bound the attempt is refused as
//!   [`Verdict::Busy`] (113, as when the server is full) without a check.
//! - **Per source address** (IPv6: per /64): at most [`SOURCE_IN_FLIGHT`]
//!   checks waiting or running, and after [`SOURCE_FAILURES`] wrong
//!   passwords within [`FAILURE_WINDOW`], every attempt is refused as busy
//!   (113) until the window ends. 113 rather than 116: no check was made, so
//!   the server does not claim the password was wrong (a real user sharing
//!   the attacker's address is told to come back, not that their password is
//!   bad), and a client stops retrying at once on either code. At most
//!   [`MAX_SOURCES`] addresses are tracked; when that many are active, new
//!   ones are refused as busy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::Block;
use tokio::sync::oneshot;

use super::users::Users;

/// Threads checking passwords (each holds one Argon2 buffer).
pub const WORKERS: usize = 2;
/// Checks waiting for a worker.
pub const QUEUE: usize = 16;
/// How long a check may wait for a worker.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// Checks one source address may have waiting or running: one, so that a
/// single address never holds more than one of the [`WORKERS`].
pub const SOURCE_IN_FLIGHT: u32 = 1;
/// Wrong passwords from one source address before it is refused.
pub const SOURCE_FAILURES: u32 = 10;
/// The window [`SOURCE_FAILURES`] counts in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses tracked at once.
pub const MAX_SOURCES: usize = 4096;

/// How long a queued check may take beyond its wait (a check at the default
/// parameters takes tens of ms; this only bounds a stuck worker).
const CHECK_GRACE: Duration = Duration::from_secs(5);

/// The outcome of a password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is the principal's.
    Accepted,
    /// Unknown principal or wrong password (116).
    Refused,
    /// Not checked: the queue is full or too slow, or the source address is
    /// over its limits (113).
    Busy,
}

/// One check for a worker.
struct Job {
    principal: String,
    password: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Verdict>,
}

/// What is known of one source address.
#[derive(Debug)]
struct Source {
    in_flight: u32,
    failures: u32,
    window_start: Instant,
}

/// The password checking pool and the per-source limits.
pub struct PasswordChecks {
    jobs: SyncSender<Job>,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl PasswordChecks {
    /// Starts [`WORKERS`] threads checking against `users`, each with its own
    /// buffer of [`Users::max_blocks`] blocks.
    pub fn start(users: Arc<Users>) -> std::io::Result<PasswordChecks> {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let blocks = users.max_blocks();
        for i in 0..WORKERS {
            let users = Arc::clone(&users);
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&users, &rx, blocks))?;
        }
        Ok(PasswordChecks {
            jobs,
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `password` for `principal`, asked from `peer`. Dropping the
    /// future (the client went away) gives the address's place back.
    pub async fn check(&self, peer: IpAddr, principal: String, password: Vec<u8>) -> Verdict {
        let source = source_key(peer);
        let now = Instant::now();
        if !self.admit(source, now) {
            return Verdict::Busy;
        }
        let mut place = InFlight {
            checks: self,
            source,
            verdict: Verdict::Busy,
        };
        let (reply, answer) = oneshot::channel();
        let deadline = now + QUEUE_WAIT;
        let job = Job {
            principal,
            password,
            deadline,
            reply,
        };
        place.verdict = match self.jobs.try_send(job) {
            Ok(()) => {
                match tokio::time::timeout_at((deadline + CHECK_GRACE).into(), answer).await {
                    Ok(Ok(v)) => v,
                    _ => Verdict::Busy,
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Verdict::Busy,
        };
        place.verdict
    }

    /// Takes an in-flight place for `source`, unless it is over a limit.
    fn admit(&self, source: IpAddr, now: Instant) -> bool {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if !sources.contains_key(&source) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, s| s.in_flight > 0 || now < s.window_start + FAILURE_WINDOW);
            if sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let s = sources.entry(source).or_insert(Source {
            in_flight: 0,
            failures: 0,
            window_start: now,
        });
        if now >= s.window_start + FAILURE_WINDOW {
            s.failures = 0;
            s.window_start = now;
        }
        if s.failures >= SOURCE_FAILURES || s.in_flight >= SOURCE_IN_FLIGHT {
            return false;
        }
        s.in_flight += 1;
        true
    }

    /// Gives back `source`'s in-flight place and counts a wrong password.
    fn settle(&self, source: IpAddr, verdict: Verdict, now: Instant) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sources.get_mut(&source) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if verdict == Verdict::Refused {
                if now >= s.window_start + FAILURE_WINDOW {
                    s.failures = 0;
                    s.window_start = now;
                }
                s.failures = s.failures.saturating_add(1);
            }
        }
    }
}

/// An address's place in flight; given back (and a wrong password counted)
/// on drop, however the check ends.
struct InFlight<'a> {
    checks: &'a PasswordChecks,
    source: IpAddr,
    verdict: Verdict,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.checks
            .settle(self.source, self.verdict, Instant::now());
    }
}

/// The address limits count against: IPv4 as is (an IPv4-mapped IPv6
/// address as its IPv4 one), IPv6 by /64 (one host usually holds a whole
/// /64).
pub fn source_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// A worker: takes checks until the pool is dropped. Its buffer is
/// allocated once, here.
fn work(users: &Users, jobs: &Mutex<Receiver<Job>>, blocks: usize) {
    let mut memory = vec![Block::default(); blocks];
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if job.reply.is_closed() {
            continue;
        }
        let verdict = if Instant::now() > job.deadline {
            Verdict::Busy
        } else if users.verify_in(&job.principal, &job.password, &mut memory) {
            Verdict::Accepted
        } else {
            Verdict::Refused
        };
        let _ = job.reply.send(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn pool() -> PasswordChecks {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = argon2::password_hash::SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let hash = argon2::PasswordHasher::hash_password(&argon, b"right", &salt)
            .unwrap()
            .to_string();
        let users = Users::parse(&format!("alice:{hash}\n")).unwrap();
        PasswordChecks::start(Arc::new(users)).unwrap()
    }

    #[tokio::test]
    async fn password_check_pool_accepts_the_right_password_only() {
        let checks = pool();
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let right = checks.check(peer, "alice".into(), b"right".to_vec()).await;
        assert_eq!(right, Verdict::Accepted);
        let wrong = checks.check(peer, "alice".into(), b"wrong".to_vec()).await;
        assert_eq!(wrong, Verdict::Refused);
        let nobody = checks.check(peer, "bob".into(), b"right".to_vec()).await;
        assert_eq!(nobody, Verdict::Refused);
    }

    #[tokio::test]
    async fn password_failures_per_source_are_refused_busy_past_the_limit() {
        let checks = pool();
        let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        for _ in 0..SOURCE_FAILURES {
            let v = checks
                .check(attacker, "alice".into(), b"guess".to_vec())
                .await;
            assert_eq!(v, Verdict::Refused);
        }
        // Even the right password: no check is made any more.
        let v = checks
            .check(attacker, "alice".into(), b"right".to_vec())
            .await;
        assert_eq!(v, Verdict::Busy);
        // Another address is not affected.
        let user = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let v = checks.check(user, "alice".into(), b"right".to_vec()).await;
        assert_eq!(v, Verdict::Accepted);
    }

    #[test]
    fn password_limits_count_ipv6_by_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a.into()), source_key(b.into()));
        assert_ne!(source_key(a.into()), source_key(c.into()));
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped();
        assert_eq!(
            source_key(mapped.into()),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
        );
    }

    #[tokio::test]
    async fn password_check_abandoned_midway_gives_the_place_back() {
        let checks = pool();
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
        let abandoned = tokio::time::timeout(
            Duration::ZERO,
            checks.check(peer, "alice".into(), b"right".to_vec()),
        )
        .await;
        assert!(abandoned.is_err(), "the check was still running");
        // The source's one in-flight place is free again at once, whatever
        // the worker still does with the abandoned job (asking through
        // `check` here would also depend on how fast the worker gets to a
        // second job on a loaded machine).
        let now = Instant::now();
        assert!(
            checks.admit(source_key(peer), now),
            "the place was given back"
        );
        assert!(!checks.admit(source_key(peer), now), "one place per source");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_past_the_queue_are_refused_busy() {
        let checks = Arc::new(pool());
        // More checks at once, from as many addresses, than workers and
        // queue places: the surplus is refused without waiting.
        let n = WORKERS + QUEUE + 64;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let checks = Arc::clone(&checks);
                let peer = IpAddr::V4(Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8));
                tokio::spawn(async move { checks.check(peer, "alice".into(), b"x".to_vec()).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            busy += usize::from(t.await.unwrap() == Verdict::Busy);
        }
        assert!(busy >= 1, "the queue is bounded");
        assert!(busy < n, "some were checked");
    }

    #[test]
    fn password_sources_in_flight_are_bounded() {
        let checks = pool();
        let now = Instant::now();
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        for _ in 0..SOURCE_IN_FLIGHT {
            assert!(checks.admit(peer, now));
        }
        assert!(!checks.admit(peer, now));
        checks.settle(peer, Verdict::Accepted, now);
        assert!(checks.admit(peer, now));
    }
}
