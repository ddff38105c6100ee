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
//! - **Fairness** (issue 18: a flood of wrong passwords from 100-300
//!   addresses let the right one in 0 of 39 times): a check from an address
//!   with a wrong password in its window is *suspect*. Suspect checks take
//!   at most [`SUSPECT_QUEUE`] of the [`QUEUE`] waiting places, and a
//!   worker takes a clean check before any suspect one, so a right password
//!   from an address with no recent failure waits behind no flood, however
//!   many addresses the flood comes from.
//! - **Per user name**: wrong passwords are counted per user name too;
//!   suspect checks of one user name are at most [`USER_SUSPECT_IN_FLIGHT`]
//!   at once, and none once it has [`USER_FAILURES`] wrong ones in its
//!   window (refused as busy), so a guessing campaign spread over many
//!   addresses gets one try per address and window at an account. A check
//!   from a clean address is never held back by others' guesses at the
//!   same name. At most [`MAX_SOURCES`] user names are tracked; past that,
//!   suspect checks of untracked names are refused as busy.
//! - **Known addresses**: an address that gave a right password within
//!   [`TRUST_WINDOW`] (and no wrong one in its failure window) is
//!   *trusted*: its checks go first and have [`TRUSTED_QUEUE`] waiting
//!   places of their own beyond [`QUEUE`], so that a flood from addresses
//!   never seen before (each of whose first try is clean) cannot keep out
//!   a user who logged in lately. At most [`MAX_TRUSTED`] addresses are
//!   remembered, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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
/// Source addresses (and user names) tracked at once.
pub const MAX_SOURCES: usize = 4096;
/// Waiting places suspect checks may take: the rest of the [`QUEUE`] is
/// kept for checks from addresses with no recent failure.
pub const SUSPECT_QUEUE: usize = QUEUE / 2;
/// Wrong passwords for one user name, within [`FAILURE_WINDOW`], past which
/// its checks from suspect addresses are refused.
pub const USER_FAILURES: u32 = SOURCE_FAILURES;
/// Suspect checks of one user name waiting or running at once.
pub const USER_SUSPECT_IN_FLIGHT: u32 = 2;
/// How long an address stays trusted after a right password.
pub const TRUST_WINDOW: Duration = Duration::from_secs(3600);
/// Waiting places of trusted addresses' checks, beyond [`QUEUE`].
pub const TRUSTED_QUEUE: usize = 4;
/// Trusted addresses remembered at once.
pub const MAX_TRUSTED: usize = 1024;

/// Which lane a check waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// From an address trusted after a right password: first, with places
    /// of its own.
    Trusted,
    /// From an address with no recent failure.
    Clean,
    /// From an address with a recent failure.
    Suspect,
}

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

/// The checks waiting for a worker, in three lanes.
#[derive(Default)]
struct Lanes {
    /// From trusted addresses: taken before any other, at most
    /// [`TRUSTED_QUEUE`].
    trusted: VecDeque<Job>,
    /// From addresses with no recent failure, for user names not under
    /// attack: taken first.
    clean: VecDeque<Job>,
    /// The rest: at most [`SUSPECT_QUEUE`].
    suspect: VecDeque<Job>,
    /// The pool is dropped: workers stop.
    closed: bool,
}

impl Lanes {
    /// The next check for a worker: a trusted one first, then a clean one.
    fn next(&mut self) -> Option<Job> {
        self.trusted
            .pop_front()
            .or_else(|| self.clean.pop_front())
            .or_else(|| self.suspect.pop_front())
    }
}

/// The queue the workers take checks from.
#[derive(Default)]
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

/// The password checking pool and the per-source limits.
pub struct PasswordChecks {
    queue: Arc<Queue>,
    sources: Mutex<Tracked>,
}

/// What is known of the sources and user names that tried lately.
#[derive(Default)]
struct Tracked {
    sources: HashMap<IpAddr, Source>,
    users: HashMap<String, Source>,
    /// Addresses that gave a right password, and until when they are
    /// trusted.
    trusted: HashMap<IpAddr, Instant>,
}

impl Drop for PasswordChecks {
    fn drop(&mut self) {
        let mut lanes = self
            .queue
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        lanes.closed = true;
        drop(lanes);
        self.queue.ready.notify_all();
    }
}

impl PasswordChecks {
    /// Starts [`WORKERS`] threads checking against `users`, each with its own
    /// buffer of [`Users::max_blocks`] blocks.
    pub fn start(users: Arc<Users>) -> std::io::Result<PasswordChecks> {
        let queue = Arc::new(Queue::default());
        let blocks = users.max_blocks();
        for i in 0..WORKERS {
            let users = Arc::clone(&users);
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&users, &queue, blocks))?;
        }
        Ok(PasswordChecks {
            queue,
            sources: Mutex::new(Tracked::default()),
        })
    }

    /// Checks `password` for `principal`, asked from `peer`. Dropping the
    /// future (the client went away) gives the address's place back.
    pub async fn check(&self, peer: IpAddr, principal: String, password: Vec<u8>) -> Verdict {
        let source = source_key(peer);
        let now = Instant::now();
        let Some(lane) = self.admit_as(source, &principal, now) else {
            return Verdict::Busy;
        };
        let suspect = lane == Lane::Suspect;
        let mut place = InFlight {
            checks: self,
            source,
            user: principal.clone(),
            suspect,
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
        place.verdict = if self.enqueue(job, lane) {
            match tokio::time::timeout_at((deadline + CHECK_GRACE).into(), answer).await {
                Ok(Ok(v)) => v,
                _ => Verdict::Busy,
            }
        } else {
            Verdict::Busy
        };
        place.verdict
    }

    /// Puts a check in its lane; false when its places are full: the
    /// trusted lane's own, or the queue's (for a suspect one, its part of
    /// it).
    fn enqueue(&self, job: Job, lane: Lane) -> bool {
        let mut lanes = self
            .queue
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let waiting = lanes.clean.len().saturating_add(lanes.suspect.len());
        let full = match lane {
            Lane::Trusted => lanes.trusted.len() >= TRUSTED_QUEUE,
            Lane::Clean => waiting >= QUEUE,
            Lane::Suspect => waiting >= QUEUE || lanes.suspect.len() >= SUSPECT_QUEUE,
        };
        if lanes.closed || full {
            return false;
        }
        match lane {
            Lane::Trusted => lanes.trusted.push_back(job),
            Lane::Clean => lanes.clean.push_back(job),
            Lane::Suspect => lanes.suspect.push_back(job),
        }
        drop(lanes);
        self.queue.ready.notify_one();
        true
    }

    /// Takes an in-flight place for `source`, unless it is over a limit.
    #[cfg(test)]
    fn admit(&self, source: IpAddr, now: Instant) -> bool {
        self.admit_as(source, "", now).is_some()
    }

    /// Takes an in-flight place for `source` (and, if the check is
    /// suspect, one of `user`'s), unless one is over a limit: the lane the
    /// check waits in, or `None`.
    fn admit_as(&self, source: IpAddr, user: &str, now: Instant) -> Option<Lane> {
        let mut tracked = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let Tracked {
            sources,
            users,
            trusted,
        } = &mut *tracked;
        let s = track(sources, source, now)?;
        if s.failures >= SOURCE_FAILURES || s.in_flight >= SOURCE_IN_FLIGHT {
            return None;
        }
        let suspect = s.failures > 0;
        if suspect {
            // A suspect check holds a place of its user name's.
            let u = track(users, user.to_owned(), now)?;
            if u.failures >= USER_FAILURES || u.in_flight >= USER_SUSPECT_IN_FLIGHT {
                return None;
            }
            u.in_flight += 1;
        }
        if let Some(s) = sources.get_mut(&source) {
            s.in_flight += 1;
        }
        let lane = if suspect {
            Lane::Suspect
        } else if trusted.get(&source).is_some_and(|&until| now < until) {
            Lane::Trusted
        } else {
            Lane::Clean
        };
        Some(lane)
    }

    /// Gives back the in-flight places of a check and counts a wrong
    /// password against its address and its user name.
    fn settle(&self, source: IpAddr, user: &str, suspect: bool, verdict: Verdict, now: Instant) {
        let mut tracked = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let Tracked {
            sources,
            users,
            trusted,
        } = &mut *tracked;
        if verdict == Verdict::Accepted {
            trust(trusted, source, now);
        }
        let failed = verdict == Verdict::Refused;
        if let Some(s) = sources.get_mut(&source) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if failed {
                s.fail(now);
            }
        }
        if suspect {
            if let Some(u) = users.get_mut(user) {
                u.in_flight = u.in_flight.saturating_sub(1);
            }
        }
        if failed {
            if let Some(u) = track(users, user.to_owned(), now) {
                u.fail(now);
            }
        }
    }
}

impl Source {
    /// Counts a wrong password in the current window.
    fn fail(&mut self, now: Instant) {
        if now >= self.window_start + FAILURE_WINDOW {
            self.failures = 0;
            self.window_start = now;
        }
        self.failures = self.failures.saturating_add(1);
    }
}

/// Trusts `source` for [`TRUST_WINDOW`] from `now`; at [`MAX_TRUSTED`]
/// addresses the expired ones go, then the one trusted the longest ago.
fn trust(trusted: &mut HashMap<IpAddr, Instant>, source: IpAddr, now: Instant) {
    if !trusted.contains_key(&source) && trusted.len() >= MAX_TRUSTED {
        trusted.retain(|_, until| now < *until);
        if trusted.len() >= MAX_TRUSTED {
            if let Some(oldest) = trusted.iter().min_by_key(|(_, u)| **u).map(|(a, _)| *a) {
                trusted.remove(&oldest);
            }
        }
    }
    trusted.insert(source, now + TRUST_WINDOW);
}

/// The entry of `key` in `map`, its window renewed if it ended; `None`
/// when [`MAX_SOURCES`] entries are active and `key` is not one.
fn track<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Source>,
    key: K,
    now: Instant,
) -> Option<&mut Source> {
    if !map.contains_key(&key) && map.len() >= MAX_SOURCES {
        map.retain(|_, s| s.in_flight > 0 || now < s.window_start + FAILURE_WINDOW);
        if map.len() >= MAX_SOURCES {
            return None;
        }
    }
    let s = map.entry(key).or_insert(Source {
        in_flight: 0,
        failures: 0,
        window_start: now,
    });
    if now >= s.window_start + FAILURE_WINDOW {
        s.failures = 0;
        s.window_start = now;
    }
    Some(s)
}

/// An address's place in flight; given back (and a wrong password counted)
/// on drop, however the check ends.
struct InFlight<'a> {
    checks: &'a PasswordChecks,
    source: IpAddr,
    user: String,
    suspect: bool,
    verdict: Verdict,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.checks.settle(
            self.source,
            &self.user,
            self.suspect,
            self.verdict,
            Instant::now(),
        );
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
fn work(users: &Users, queue: &Queue, blocks: usize) {
    let mut memory = vec![Block::default(); blocks];
    loop {
        let job = {
            let mut lanes = queue.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if lanes.closed {
                    return;
                }
                if let Some(job) = lanes.next() {
                    break job;
                }
                lanes = queue
                    .ready
                    .wait(lanes)
                    .unwrap_or_else(PoisonError::into_inner);
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
        checks.settle(peer, "", false, Verdict::Accepted, now);
        assert!(checks.admit(peer, now));
    }

    /// A pool with no worker: checks wait in their lanes.
    fn idle() -> PasswordChecks {
        PasswordChecks {
            queue: Arc::new(Queue::default()),
            sources: Mutex::new(Tracked::default()),
        }
    }

    /// A check for `user` from `peer`, admitted and queued if it may be:
    /// whether it was, and the way its verdict would come back.
    fn queue_one(
        checks: &PasswordChecks,
        peer: IpAddr,
        user: &str,
        now: Instant,
    ) -> Option<oneshot::Receiver<Verdict>> {
        let lane = checks.admit_as(peer, user, now)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            principal: user.to_owned(),
            password: Vec::new(),
            deadline: now + QUEUE_WAIT,
            reply,
        };
        checks.enqueue(job, lane).then_some(answer)
    }

    /// An address with one wrong password in its window.
    fn fail_once(checks: &PasswordChecks, peer: IpAddr, user: &str, now: Instant) {
        assert_eq!(checks.admit_as(peer, user, now), Some(Lane::Clean));
        checks.settle(peer, user, false, Verdict::Refused, now);
    }

    #[test]
    fn password_flood_from_300_addresses_leaves_a_clean_address_its_places() {
        let checks = idle();
        let now = Instant::now();
        let flood: Vec<IpAddr> = (0..300u16)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)))
            .collect();
        for (i, &peer) in flood.iter().enumerate() {
            fail_once(&checks, peer, &format!("u{i}"), now);
        }
        // Every flooding address tries again at once: the suspect lane
        // takes its share of the waiting places and no more.
        let queued: Vec<_> = flood
            .iter()
            .enumerate()
            .filter_map(|(i, &peer)| queue_one(&checks, peer, &format!("u{i}"), now))
            .collect();
        assert_eq!(queued.len(), SUSPECT_QUEUE);
        // A right password from a clean address is queued, and taken first.
        let clean = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(checks.admit_as(clean, "alice", now), Some(Lane::Clean));
        checks.settle(clean, "alice", false, Verdict::Accepted, now);
        let _answer = queue_one(&checks, clean, "alice", now).expect("a clean place");
        let mut lanes = checks.queue.lanes.lock().unwrap();
        assert_eq!(lanes.next().map(|j| j.principal), Some("alice".to_owned()));
        assert!(lanes.next().is_some_and(|j| j.principal.starts_with('u')));
    }

    #[test]
    fn password_guesses_at_one_user_are_charged_to_the_user_name() {
        let checks = idle();
        let now = Instant::now();
        let peer = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 2, 0, i));
        // Suspect addresses guessing alice's password: a few at once.
        for i in 0..8 {
            fail_once(&checks, peer(i), "bob", now);
        }
        let at_once = (0..8)
            .filter(|&i| checks.admit_as(peer(i), "alice", now).is_some())
            .count();
        assert_eq!(at_once, USER_SUSPECT_IN_FLIGHT as usize);
        for i in 0..8 {
            checks.settle(peer(i), "alice", true, Verdict::Refused, now);
        }
        // Past USER_FAILURES wrong ones, none from a suspect address...
        for i in 8..8 + USER_FAILURES as u8 {
            checks.settle(peer(i), "alice", false, Verdict::Refused, now);
        }
        assert_eq!(checks.admit_as(peer(100), "bob", now), Some(Lane::Clean));
        fail_once(&checks, peer(101), "carol", now);
        assert_eq!(checks.admit_as(peer(101), "alice", now), None);
        // ...while a clean address still has its check made.
        let clean = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(checks.admit_as(clean, "alice", now), Some(Lane::Clean));
    }

    #[test]
    fn password_flood_of_new_addresses_leaves_a_trusted_address_its_places() {
        let checks = idle();
        let now = Instant::now();
        // 127.0.0.1 gave the right password lately.
        let known = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(checks.admit_as(known, "alice", now), Some(Lane::Clean));
        checks.settle(known, "alice", false, Verdict::Accepted, now);
        // Addresses never seen before: each first try is clean, and they
        // fill every waiting place.
        let flood: Vec<_> = (0..100u8)
            .filter_map(|i| {
                let peer = IpAddr::V4(Ipv4Addr::new(10, 3, 0, i));
                queue_one(&checks, peer, "alice", now)
            })
            .collect();
        assert_eq!(flood.len(), QUEUE);
        // The known address still gets a place, and goes first.
        assert_eq!(checks.admit_as(known, "alice", now), Some(Lane::Trusted));
        checks.settle(known, "alice", false, Verdict::Busy, now);
        let _answer = queue_one(&checks, known, "alice", now).expect("a trusted place");
        // Its places are bounded too.
        let mut lanes = checks.queue.lanes.lock().unwrap();
        assert_eq!(lanes.trusted.len(), 1);
        assert!(lanes.next().is_some_and(|j| j.deadline == now + QUEUE_WAIT));
        assert!(lanes.trusted.is_empty());
        drop(lanes);
        // A wrong password from it makes it suspect, not trusted.
        checks.settle(known, "alice", false, Verdict::Refused, now);
        assert_eq!(checks.admit_as(known, "alice", now), Some(Lane::Suspect));
    }

    #[test]
    fn trusted_addresses_are_bounded_and_expire() {
        let mut trusted = HashMap::new();
        let now = Instant::now();
        for i in 0..MAX_TRUSTED + 10 {
            let peer = IpAddr::V6(Ipv6Addr::from(u128::try_from(i).unwrap()));
            trust(&mut trusted, peer, now + Duration::from_millis(i as u64));
        }
        assert_eq!(trusted.len(), MAX_TRUSTED);
        // The first ten, trusted the longest ago, were forgotten.
        assert!(!trusted.contains_key(&IpAddr::V6(Ipv6Addr::from(0u128))));
        let checks = idle();
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        checks.settle(peer, "alice", false, Verdict::Accepted, now);
        let later = now + TRUST_WINDOW + Duration::from_secs(1);
        assert_eq!(checks.admit_as(peer, "alice", later), Some(Lane::Clean));
    }
}
