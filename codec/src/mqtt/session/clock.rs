//! Times the registry keeps, in eight bytes each: nanoseconds since the
//! first time it was given (an [`Instant`] takes sixteen, and every
//! connection and session keeps two).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// A time: one more than the nanoseconds since the clock's epoch (so that
/// `Option<Tick>` is eight bytes too). Lasts 584 years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Tick(NonZeroU64);

impl Tick {
    /// `d` later, saturating at the end of time.
    pub(super) fn after(self, d: Duration) -> Tick {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(nanos))
    }
}

/// Turns the server's instants into [`Tick`]s and back. The epoch is the
/// first instant it is given; an instant before it counts as the epoch.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clock {
    epoch: Option<Instant>,
}

impl Clock {
    /// `now` as a tick.
    pub(super) fn tick(&mut self, now: Instant) -> Tick {
        let epoch = *self.epoch.get_or_insert(now);
        let nanos =
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
        Tick(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant of `t` (`None` before any was given, or past what an
    /// `Instant` holds).
    pub(super) fn instant(&self, t: Tick) -> Option<Instant> {
        self.epoch?.checked_add(Duration::from_nanos(t.0.get() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_trip_to_the_nanosecond() {
        let t0 = Instant::now();
        let mut c = Clock::default();
        let a = c.tick(t0 + Duration::from_nanos(5));
        assert_eq!(c.instant(a), Some(t0 + Duration::from_nanos(5)));
        let b = c.tick(t0 + Duration::from_secs(90));
        assert_eq!(
            c.instant(b),
            Some(t0 + Duration::from_secs(90) + Duration::from_nanos(0))
        );
        assert!(a < b);
        assert_eq!(
            a.after(Duration::from_secs(90)),
            c.tick(t0 + Duration::from_secs(90) + Duration::from_nanos(5))
        );
        // Before the epoch: the epoch itself.
        assert_eq!(c.tick(t0), c.tick(t0 + Duration::from_nanos(5)));
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
    }
}
