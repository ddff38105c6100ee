//! Handing freed heap memory back to the system once the loop goes quiet.
//!
//! A burst (a ramp of connections, a message to thousands of subscribers)
//! allocates short-lived buffers; once they are freed, glibc's allocator
//! keeps the pages for reuse, so the process's resident size stays at the
//! burst's peak. When the loop has been busy and then has a turn with
//! nothing to do, it asks the allocator to return its free pages, at most
//! once per [`TRIM_EVERY`]. Memory in use is untouched: nothing any
//! connection holds is freed or moved.

use std::time::{Duration, Instant};

/// The shortest time between two trims: each walks the allocator's free
/// lists, so a loop that wakes often without work does not pay it often.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// When the loop last trimmed, and whether it has worked since.
#[derive(Debug)]
pub struct Trim {
    last: Instant,
    worked: bool,
}

impl Trim {
    /// Nothing to give back yet.
    pub fn new(now: Instant) -> Trim {
        Trim {
            last: now,
            worked: false,
        }
    }

    /// The loop's turn had work.
    pub fn worked(&mut self) {
        self.worked = true;
    }

    /// The loop's turn had nothing to do: if there was work since the last
    /// time and [`TRIM_EVERY`] has passed, `first` lets go of the room the
    /// loop's own queues kept from a burst (they are empty now), then free
    /// memory is given back.
    pub fn quiet(&mut self, now: Instant, first: impl FnOnce()) {
        if self.worked && now.saturating_duration_since(self.last) >= TRIM_EVERY {
            self.worked = false;
            self.last = now;
            first();
            release();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: `malloc_trim` takes no pointer and has no precondition; it
    // locks the allocator's arenas itself, so calling it while other
    // threads allocate is sound, and it only returns pages no allocation
    // uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_turn_trims_once_after_work_and_not_more_often_than_the_period() {
        let start = Instant::now();
        let mut trim = Trim::new(start);
        let shrunk = std::cell::Cell::new(0);
        let shrink = || shrunk.set(shrunk.get() + 1);
        trim.quiet(start + TRIM_EVERY, shrink);
        assert_eq!(trim.last, start, "no work, nothing to give back");
        trim.worked();
        trim.quiet(start + TRIM_EVERY / 2, shrink);
        assert_eq!(trim.last, start, "too soon");
        assert_eq!(shrunk.get(), 0);
        trim.quiet(start + TRIM_EVERY, shrink);
        assert_eq!(trim.last, start + TRIM_EVERY);
        assert_eq!(shrunk.get(), 1, "the queues let go first");
        assert!(!trim.worked);
        trim.quiet(start + TRIM_EVERY * 3, shrink);
        assert_eq!(trim.last, start + TRIM_EVERY, "no work since");
        assert_eq!(shrunk.get(), 1);
    }
}
