//! Flow control between publishers and the subscribers they feed (see
//! `docs/mqtt.md`, "Flow control and what can still be lost").
//!
//! The registry keeps a bounded queue per session and, once it is full,
//! drops the new message ([`Dropped::QueueFull`]). Before that happens to a
//! connected subscriber that is still reading, the broker pushes back: a
//! delivery that leaves the subscriber's queue at [`HIGH_WATER`] percent or
//! more pauses the TCP publisher that sent it (its socket is not read, and
//! TCP slows the publisher down by itself). The pause is a [`Hold`] the
//! subscriber has on its publishers; it ends when the queue is back under
//! [`LOW_WATER`] percent, the subscriber's connection goes, it completes no
//! acknowledgement for [`NO_PROGRESS`], or the hold is [`PAUSE_BOUND`] old.
//! The last two make the hold *spent*: that subscriber causes no pause again
//! until its queue is back under the low-water mark, and meanwhile it alone
//! loses the new messages its full queue cannot take.
//!
//! Every message not kept for a subscriber is counted here, per subscriber
//! and in total, and logged at most once per [`LOSS_LOG_INTERVAL`] per
//! subscriber with the count since its last line.
//!
//! [`Dropped::QueueFull`]: sessionwire::mqtt::session::Dropped::QueueFull

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sessionwire::mqtt::session::{Backlog, ConnId, Delivered, Dropped};

/// A delivery leaving a connected subscriber's queue at least this full
/// (percent, of messages or bytes) pauses the publisher that sent it. Low,
/// because a pause takes effect at the publisher's next read: what one
/// read brings (up to `READ_BUFFER`, some hundreds of small PUBLISHes)
/// must still fit.
pub const HIGH_WATER: usize = 25;

/// A hold ends once its subscriber's queue is under this fill (percent).
pub const LOW_WATER: usize = 10;

/// The longest a subscriber holds its publishers, however well it reads.
pub const PAUSE_BOUND: Duration = Duration::from_secs(5);

/// A hold ends when its subscriber completes no acknowledgement for this
/// long: it stopped reading, and pausing others for it helps no one.
pub const NO_PROGRESS: Duration = Duration::from_secs(1);

/// The most often one subscriber's losses are logged.
pub const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The most publishers one subscriber holds at once; a publisher past it
/// is not paused (the subscriber's queue bounds what it can then lose).
pub const MAX_HELD: usize = 256;

/// The most subscribers whose losses are counted apart; past it losses
/// are only counted in the total (and logged once per interval).
const MAX_LOSS_ENTRIES: usize = 10_000;

/// Why a message was not kept for a subscriber, as counted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Its session's queue was full.
    QueueFull,
    /// QoS 0 for a connection with too many bytes not yet written.
    Shed,
    /// A retained message not sent after a SUBSCRIBE: its client left
    /// before its turn came.
    RetainedLeft,
    /// The server-wide budget (`--mqtt-max-held-bytes`) was three
    /// quarters held and the message would have waited in its queue.
    Budget,
}

impl Loss {
    /// The loss a delivery's answer counts as, if it is one.
    pub fn of(answer: Delivered) -> Option<Loss> {
        match answer {
            Delivered::Dropped(Dropped::QueueFull) => Some(Loss::QueueFull),
            Delivered::Dropped(Dropped::Budget) => Some(Loss::Budget),
            _ => None,
        }
    }
}

impl Loss {
    fn index(self) -> usize {
        match self {
            Loss::QueueFull => 0,
            Loss::Shed => 1,
            Loss::RetainedLeft => 2,
            Loss::Budget => 3,
        }
    }
}

/// Messages not kept, by [`Loss`]: queue full, QoS 0 shed, retained left,
/// budget.
pub type LossCounts = [u64; 4];

/// What flow control needs of a subscriber's [`Backlog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// Its session has a connection.
    pub connected: bool,
    /// Its queue is at least [`HIGH_WATER`] percent full.
    pub high: bool,
    /// Its queue is at least [`LOW_WATER`] percent full.
    pub low: bool,
    /// [`Backlog::acked`]: grows while the client acknowledges.
    pub acked: u64,
}

impl From<Backlog> for Fill {
    fn from(b: Backlog) -> Fill {
        Fill {
            connected: b.connected,
            high: b.fill_at_least(HIGH_WATER),
            low: b.fill_at_least(LOW_WATER),
            acked: b.acked,
        }
    }
}

/// One subscriber's hold on the publishers feeding it.
#[derive(Debug)]
struct Hold {
    /// When the hold began.
    since: Instant,
    /// The subscriber's acknowledgement count when last seen.
    acked: u64,
    /// When that count last moved.
    progress: Instant,
    /// The publishers it pauses.
    publishers: Vec<ConnId>,
    /// Its bound passed or it stopped acknowledging: it pauses no one
    /// until its queue is back under the low-water mark.
    spent: bool,
}

/// One subscriber's losses not logged yet.
#[derive(Debug)]
struct Losses {
    counts: LossCounts,
    /// When its last line was written.
    logged: Option<Instant>,
}

/// The publishers paused and the subscribers holding them, and every
/// message lost. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Flow {
    /// Holds by subscriber client id.
    holds: HashMap<String, Hold>,
    /// Paused publishers, with how many holds pause each.
    paused: HashMap<ConnId, usize>,
    /// Publishers no longer paused: the loop reads them again (their
    /// readiness was taken while they were paused).
    resumed: Vec<u64>,
    /// Losses per subscriber not logged yet.
    losses: HashMap<String, Losses>,
    /// Losses of subscribers past [`MAX_LOSS_ENTRIES`] not logged yet.
    other_losses: LossCounts,
    other_logged: Option<Instant>,
    /// Every loss since the start.
    total: LossCounts,
    /// Publishers paused since the start.
    pauses: u64,
    /// Holds that passed their bound or saw no progress.
    spent: u64,
}

impl Flow {
    /// Whether reading from `conn` is paused.
    pub fn is_paused(&self, conn: ConnId) -> bool {
        !self.paused.is_empty() && self.paused.contains_key(&conn)
    }

    /// A delivery to `subscriber` (whose backlog is now `backlog`) came
    /// from `publisher`: paused if the subscriber is connected, its queue
    /// is past [`HIGH_WATER`] and its hold is not spent.
    pub fn delivered(&mut self, now: Instant, subscriber: &str, backlog: Fill, publisher: ConnId) {
        if !backlog.connected || !backlog.high {
            return;
        }
        let hold = match self.holds.get_mut(subscriber) {
            Some(h) => h,
            None => self.holds.entry(subscriber.to_owned()).or_insert(Hold {
                since: now,
                acked: backlog.acked,
                progress: now,
                publishers: Vec::new(),
                spent: false,
            }),
        };
        if hold.spent || hold.publishers.len() >= MAX_HELD || hold.publishers.contains(&publisher) {
            return;
        }
        hold.publishers.push(publisher);
        let n = self.paused.entry(publisher).or_insert(0);
        if *n == 0 {
            self.pauses = self.pauses.saturating_add(1);
            tracing::debug!(conn = publisher.0, subscriber, "MQTT publisher paused");
        }
        *n = n.saturating_add(1);
    }

    /// Looks at every hold with `backlog` (the registry's, by client id)
    /// and ends those whose time is up, whose subscriber caught up, left or
    /// stopped acknowledging.
    pub fn check(&mut self, now: Instant, backlog: impl Fn(&str) -> Option<Fill>) {
        if !self.holds.is_empty() {
            let mut ended = Vec::new();
            for (subscriber, hold) in self.holds.iter_mut() {
                let b = backlog(subscriber).filter(|b| b.connected);
                let caught_up = b.is_none_or(|b| !b.low);
                if caught_up {
                    ended.push(subscriber.clone());
                    continue;
                }
                if hold.spent {
                    continue;
                }
                if let Some(b) = b {
                    if b.acked != hold.acked {
                        hold.acked = b.acked;
                        hold.progress = now;
                    }
                }
                let stalled = now.saturating_duration_since(hold.progress) >= NO_PROGRESS;
                let over = now.saturating_duration_since(hold.since) >= PAUSE_BOUND;
                if stalled || over {
                    hold.spent = true;
                    self.spent = self.spent.saturating_add(1);
                    tracing::warn!(
                        client_id = %subscriber,
                        held_ms = now.saturating_duration_since(hold.since).as_millis() as u64,
                        why = if over { "pause bound" } else { "no acknowledgement" },
                        "MQTT subscriber does not keep up: its publishers resume, and new messages its full queue cannot take are dropped"
                    );
                    let publishers = std::mem::take(&mut hold.publishers);
                    release(&mut self.paused, &mut self.resumed, publishers);
                }
            }
            for subscriber in ended {
                if let Some(hold) = self.holds.remove(&subscriber) {
                    release(&mut self.paused, &mut self.resumed, hold.publishers);
                }
            }
        }
        self.log_losses(now, false);
    }

    /// When [`check`](Self::check) must next run for a hold to end on
    /// time.
    pub fn deadline(&self) -> Option<Instant> {
        let holds = self
            .holds
            .values()
            .filter(|h| !h.spent && !h.publishers.is_empty())
            .map(|h| (h.since + PAUSE_BOUND).min(h.progress + NO_PROGRESS))
            .min();
        let logs = self
            .losses
            .values()
            .filter(|l| l.counts.iter().any(|&c| c > 0))
            .filter_map(|l| l.logged)
            .chain(
                self.other_logged
                    .filter(|_| self.other_losses.iter().any(|&c| c > 0)),
            )
            .map(|t| t + LOSS_LOG_INTERVAL)
            .min();
        holds.into_iter().chain(logs).min()
    }

    /// The connection `conn` is gone: it is paused no more (and not read
    /// again).
    pub fn forget(&mut self, conn: ConnId) {
        self.paused.remove(&conn);
    }

    /// The publishers to read again since the last call.
    pub fn take_resumed(&mut self, into: &mut Vec<u64>) {
        into.append(&mut self.resumed);
    }

    /// A message was not kept for `subscriber`: counted, and logged unless
    /// its last line is more recent than [`LOSS_LOG_INTERVAL`].
    pub fn lost(&mut self, now: Instant, subscriber: &str, why: Loss) {
        let i = why.index();
        self.total[i] = self.total[i].saturating_add(1);
        if !self.losses.contains_key(subscriber) && self.losses.len() < MAX_LOSS_ENTRIES {
            self.losses.insert(
                subscriber.to_owned(),
                Losses {
                    counts: [0; 4],
                    logged: None,
                },
            );
        }
        let entry = self.losses.get_mut(subscriber);
        let (counts, logged) = match entry {
            Some(e) => (&mut e.counts, &mut e.logged),
            None => (&mut self.other_losses, &mut self.other_logged),
        };
        counts[i] = counts[i].saturating_add(1);
        if logged.is_none_or(|t| now.saturating_duration_since(t) >= LOSS_LOG_INTERVAL) {
            log_loss(subscriber, counts);
            *counts = [0; 4];
            *logged = Some(now);
        }
    }

    /// Writes the lines due (or, with `all`, every count not logged yet)
    /// and forgets the subscribers with nothing to log.
    fn log_losses(&mut self, now: Instant, all: bool) {
        if self.losses.is_empty() && self.other_logged.is_none() {
            return;
        }
        let due = |logged: Option<Instant>| {
            all || logged.is_none_or(|t| now.saturating_duration_since(t) >= LOSS_LOG_INTERVAL)
        };
        self.losses.retain(|subscriber, l| {
            if !due(l.logged) {
                return true;
            }
            if l.counts.iter().any(|&c| c > 0) {
                log_loss(subscriber, &l.counts);
            }
            false
        });
        if due(self.other_logged) {
            if self.other_losses.iter().any(|&c| c > 0) {
                log_loss("(other subscribers)", &self.other_losses);
            }
            self.other_losses = [0; 4];
            self.other_logged = None;
        }
    }

    /// Messages lost since the start, by [`Loss`].
    pub fn total_lost(&self) -> LossCounts {
        self.total
    }

    /// Publishers paused since the start, and holds that were spent.
    pub fn pauses(&self) -> (u64, u64) {
        (self.pauses, self.spent)
    }
}

/// Ends one hold on each of `publishers`; those no longer held are read
/// again.
fn release(paused: &mut HashMap<ConnId, usize>, resumed: &mut Vec<u64>, publishers: Vec<ConnId>) {
    for p in publishers {
        if let Some(n) = paused.get_mut(&p) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                paused.remove(&p);
                resumed.push(p.0);
                tracing::debug!(conn = p.0, "MQTT publisher resumed");
            }
        }
    }
}

fn log_loss(subscriber: &str, counts: &LossCounts) {
    tracing::warn!(
        client_id = subscriber,
        queue_full = counts[0],
        qos0_shed = counts[1],
        retained_not_sent = counts[2],
        budget = counts[3],
        "MQTT messages dropped for a subscriber that does not keep up"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber's fill: `percent` of its queue taken.
    fn backlog(percent: usize, acked: u64, connected: bool) -> Fill {
        Fill {
            connected,
            high: percent >= HIGH_WATER,
            low: percent >= LOW_WATER,
            acked,
        }
    }

    #[test]
    fn a_subscriber_past_high_water_pauses_its_publisher_until_it_is_under_low_water() {
        let mut flow = Flow::default();
        let t0 = Instant::now();
        flow.delivered(t0, "s", backlog(HIGH_WATER - 1, 0, true), ConnId(7));
        assert!(!flow.is_paused(ConnId(7)));
        flow.delivered(t0, "s", backlog(HIGH_WATER, 0, true), ConnId(7));
        assert!(flow.is_paused(ConnId(7)));
        // Progress, still above low water: held.
        flow.check(t0 + NO_PROGRESS / 2, |_| Some(backlog(LOW_WATER, 5, true)));
        assert!(flow.is_paused(ConnId(7)));
        flow.check(t0 + NO_PROGRESS / 2, |_| {
            Some(backlog(LOW_WATER - 1, 9, true))
        });
        assert!(!flow.is_paused(ConnId(7)));
        let mut resumed = Vec::new();
        flow.take_resumed(&mut resumed);
        assert_eq!(resumed, [7]);
        assert!(flow.holds.is_empty());
    }

    #[test]
    fn offline_sessions_never_pause_a_publisher() {
        let mut flow = Flow::default();
        flow.delivered(Instant::now(), "s", backlog(100, 0, false), ConnId(1));
        assert!(!flow.is_paused(ConnId(1)));
    }

    #[test]
    fn a_hold_ends_at_its_bound_and_is_spent_until_the_queue_drains() {
        let mut flow = Flow::default();
        let t0 = Instant::now();
        flow.delivered(t0, "s", backlog(HIGH_WATER, 0, true), ConnId(1));
        // Acknowledging steadily, never under low water.
        let mut t = t0;
        let mut acked = 0;
        while t < t0 + PAUSE_BOUND {
            assert!(flow.is_paused(ConnId(1)));
            assert!(flow.deadline().is_some_and(|d| d > t));
            t += NO_PROGRESS / 2;
            acked += 1;
            flow.check(t, |_| Some(backlog(HIGH_WATER, acked, true)));
        }
        assert!(!flow.is_paused(ConnId(1)));
        // Spent: a new delivery pauses no one.
        flow.delivered(t, "s", backlog(100, acked, true), ConnId(1));
        assert!(!flow.is_paused(ConnId(1)));
        // Drained: the next burst may pause again.
        flow.check(t, |_| Some(backlog(0, acked, true)));
        flow.delivered(t, "s", backlog(HIGH_WATER, acked, true), ConnId(1));
        assert!(flow.is_paused(ConnId(1)));
    }

    #[test]
    fn a_subscriber_that_stops_acknowledging_releases_its_publishers() {
        let mut flow = Flow::default();
        let t0 = Instant::now();
        flow.delivered(t0, "s", backlog(HIGH_WATER, 3, true), ConnId(1));
        flow.delivered(t0, "s", backlog(HIGH_WATER, 3, true), ConnId(2));
        flow.delivered(t0, "other", backlog(HIGH_WATER, 3, true), ConnId(2));
        flow.check(t0 + NO_PROGRESS, |c| {
            Some(backlog(HIGH_WATER, if c == "s" { 3 } else { 4 }, true))
        });
        assert!(!flow.is_paused(ConnId(1)));
        // Still held by "other", which acknowledges.
        assert!(flow.is_paused(ConnId(2)));
        assert_eq!(flow.pauses(), (2, 1));
    }

    #[test]
    fn a_subscriber_that_leaves_releases_its_publishers() {
        let mut flow = Flow::default();
        let t0 = Instant::now();
        flow.delivered(t0, "s", backlog(HIGH_WATER, 0, true), ConnId(1));
        flow.check(t0, |_| Some(backlog(HIGH_WATER, 0, false)));
        assert!(!flow.is_paused(ConnId(1)));
        flow.delivered(t0, "s", backlog(HIGH_WATER, 0, true), ConnId(1));
        flow.check(t0, |_| None);
        assert!(!flow.is_paused(ConnId(1)));
    }

    #[test]
    fn losses_are_counted_each_time_and_logged_once_per_interval() {
        let mut flow = Flow::default();
        let t0 = Instant::now();
        for _ in 0..1000 {
            flow.lost(t0, "s", Loss::QueueFull);
        }
        flow.lost(t0, "s", Loss::Shed);
        assert_eq!(flow.total_lost(), [1000, 1, 0, 0]);
        // The first loss was logged; the rest wait for the interval.
        assert_eq!(flow.losses["s"].counts, [999, 1, 0, 0]);
        assert_eq!(flow.deadline(), Some(t0 + LOSS_LOG_INTERVAL));
        flow.check(t0 + LOSS_LOG_INTERVAL, |_| None);
        assert!(flow.losses.is_empty());
        assert_eq!(flow.deadline(), None);
    }
}
