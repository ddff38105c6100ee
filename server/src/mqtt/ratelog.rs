//! Log lines an attacker can cause, at most one per interval: the rest are
//! counted, and the next line says how many were not written (issue 18: a
//! WARN line with its whole topic for each refused retained message wrote
//! 990k lines, 141 MB of stderr).

use std::time::{Duration, Instant};

/// One kind of log line, limited to one per [`interval`](Self::new).
#[derive(Debug)]
pub struct RateLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// A line at most every `interval`.
    pub fn new(interval: Duration) -> RateLog {
        RateLog {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now`: `Some(n)`, with `n` the lines
    /// not written since the last one; `None`, counted.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_the_rest() {
        let t0 = Instant::now();
        let mut log = RateLog::new(Duration::from_secs(10));
        assert_eq!(log.allow(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(log.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.allow(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(log.allow(t0 + Duration::from_secs(11)), None);
    }
}
