//! An injectable monotonic clock.
//!
//! Everything with windows, rates or expiry (the detector, containment, the cache) reads time
//! through [`Clock`] so that tests can move time forward deterministically with [`ManualClock`]
//! instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic time source. `now()` is the time elapsed since the clock's own epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time since this clock's epoch.
    fn now(&self) -> Duration;

    /// This clock's reading for the real instant `at` (e.g. when a datagram was received),
    /// saving a clock read on the query path. A clock that is not driven by real time (a
    /// test's [`ManualClock`]) ignores `at` and returns [`Clock::now`].
    fn at(&self, at: Instant) -> Duration {
        let _ = at;
        self.now()
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real monotonic clock (`Instant`), with its epoch at construction.
#[derive(Debug)]
pub struct SystemClock {
    /// The instant that `now()` measures from.
    epoch: Instant,
}

impl SystemClock {
    /// A clock whose epoch is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// A shared system clock.
    #[must_use]
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Nanoseconds since the epoch.
    nanos: AtomicU64,
}

impl ManualClock {
    /// A manual clock at time zero.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// How far ahead [`deadline`] puts an instant whose `after` the platform's clock cannot add
/// (as tokio's own "far future"): about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `from + after`, never panicking: an `after` past what the platform's clock can represent
/// (`Instant + Duration` panics there) gives a deadline about 30 years ahead instead. Configured
/// durations are bounded by validation; this keeps a value that slipped past it from panicking
/// a task on the query path.
#[must_use]
pub fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(FAR_FUTURE))
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_too_far_for_the_clock_does_not_panic() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let far = deadline(now, Duration::from_secs(u64::MAX));
        assert!(far > now + Duration::from_secs(86_400 * 365), "{far:?}");
        assert!(deadline(now, Duration::MAX) >= now);
    }
}
