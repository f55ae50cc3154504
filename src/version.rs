//! Versions of stored values: a hybrid logical clock with a node tie-break.
//!
//! Every write gets a `Version` from the clock of the node that stores it. When
//! two copies of a key meet (handoff, repair), the larger version wins, on every
//! node alike. The clock follows wall time in microseconds, never goes backwards,
//! and jumps forward past any version it has seen, so a write that happens after
//! another one (causally) always carries a larger version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a clock reads wall time, in microseconds since the Unix epoch: the
/// system clock for a real node, virtual time in the simulation.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock as a [`WallClock`].
pub fn system_wall() -> WallClock {
    Arc::new(wall_micros)
}

/// Bits below the microsecond count, for events within the same microsecond.
const LOGICAL_BITS: u32 = 10;

/// A value's version. Ordered by `stamp`, then `origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock reading: microseconds since the epoch, shifted left by
    /// 10 bits, plus a logical counter. Fits an `i64` until the year 2255.
    pub stamp: u64,
    /// Tie-break: a hash of the writing node's address.
    pub origin: u32,
}

/// A node's hybrid logical clock.
pub struct Clock {
    last: AtomicU64,
    origin: u32,
    wall: WallClock,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("last", &self.last)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Clock {
    /// A clock on the system's wall time that tags its versions with `origin`.
    #[cfg(test)]
    pub fn new(origin: u32) -> Self {
        Self::with_wall(origin, system_wall())
    }

    /// A clock reading wall time from `wall`.
    pub fn with_wall(origin: u32, wall: WallClock) -> Self {
        Clock {
            last: AtomicU64::new(0),
            origin,
            wall,
        }
    }

    /// Wall time as this clock reads it, in microseconds since the epoch.
    pub fn wall_micros(&self) -> u64 {
        (self.wall)()
    }

    /// A fresh version, larger than every version this clock issued or observed.
    pub fn tick(&self) -> Version {
        let physical = (self.wall)() << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Version {
                        stamp: next,
                        origin: self.origin,
                    };
                }
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past a version seen from elsewhere.
    pub fn observe(&self, seen: Version) {
        self.last.fetch_max(seen.stamp, Ordering::AcqRel);
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_within_one_microsecond() {
        let clock = Clock::new(7);
        let mut last = clock.tick();
        for _ in 0..10_000 {
            let next = clock.tick();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn a_clock_jumps_past_versions_it_observes() {
        let clock = Clock::new(1);
        let future = Version {
            stamp: clock.tick().stamp + (1 << 40),
            origin: 2,
        };
        clock.observe(future);
        assert!(clock.tick().stamp > future.stamp);
    }

    #[test]
    fn equal_stamps_are_ordered_by_origin() {
        let a = Version {
            stamp: 5,
            origin: 1,
        };
        let b = Version {
            stamp: 5,
            origin: 2,
        };
        assert!(a < b);
    }

    #[test]
    fn stamps_fit_in_a_thrift_i64() {
        assert!(Clock::new(0).tick().stamp < i64::MAX as u64);
    }
}
