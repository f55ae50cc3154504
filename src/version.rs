//! Versions of stored values: a hybrid logical clock with a node tie-break.
//!
//! Every write gets a `Version` from the clock of the node that stores it. When
//! two copies of a key meet (handoff, repair), the larger version wins, on every
//! node alike. The clock follows wall time in microseconds, never goes backwards,
//! and jumps forward past any version it has seen, so a write that happens after
//! another one (causally) always carries a larger version.
//!
//! # Never wrapping
//!
//! Versions come from other nodes (replication, handoff, anti-entropy, relayed
//! writes), so a corrupt or forged one must not break the clock. A stamp travels
//! as a Thrift `i64`; a negative one (`-1` reads as `u64::MAX`) or `i64::MAX`
//! would, once observed, push the clock to where `last + 1` wraps, and the
//! forged copy would then beat every later write for good. So:
//!
//! - [`Clock::admit`] refuses any stamp more than [`HORIZON`] (one hour) of
//!   wall time ahead of this node's wall clock: the node refuses the whole
//!   request, changing nothing. The bound is on wall time, not on the clock's
//!   last reading, so a stream of stamps each just under the bound cannot
//!   ratchet the clock forward an hour at a time. One hour is far above any
//!   honest skew (nodes must agree within the gap between one client's
//!   successive writes to a key anyway, see the README's consistency model)
//!   and far below the 230 years left before `2^63`.
//! - [`Clock::observe`] admits first, so the clock never moves past
//!   wall time plus the horizon, and [`Clock::tick`] saturates at
//!   [`MAX_STAMP`] rather than wrap (unreachable while the horizon holds).

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

/// How far ahead of this node's wall clock a version seen from elsewhere may
/// be (see the module doc).
pub const HORIZON: std::time::Duration = std::time::Duration::from_secs(3600);

/// The largest stamp there is: the largest a Thrift `i64` carries.
pub const MAX_STAMP: u64 = i64::MAX as u64;

/// `micros` as a stamp with a zero logical counter, saturating at [`MAX_STAMP`].
fn stamp_of(micros: u64) -> u64 {
    micros.saturating_mul(1 << LOGICAL_BITS).min(MAX_STAMP)
}

/// A value's version. Ordered by `stamp`, then `origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock reading: microseconds since the epoch, shifted left by
    /// 10 bits, plus a logical counter. Fits an `i64` until the year 2255.
    pub stamp: u64,
    /// Tie-break: a hash of the writing node's address.
    pub origin: u32,
}

impl Version {
    /// The wall time the version was taken at, in microseconds since the
    /// epoch, as the writing node's clock read it.
    pub fn wall_micros(self) -> u64 {
        self.stamp >> LOGICAL_BITS
    }

    /// How long before `now_micros` (wall microseconds since the epoch) the
    /// version was taken; zero for one taken later.
    pub fn age(self, now_micros: u64) -> std::time::Duration {
        std::time::Duration::from_micros(now_micros.saturating_sub(self.wall_micros()))
    }
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

    /// A fresh version, larger than every version this clock issued or
    /// observed (it saturates at [`MAX_STAMP`], which [`Clock::admit`] keeps
    /// out of reach).
    pub fn tick(&self) -> Version {
        let physical = stamp_of((self.wall)());
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last.saturating_add(1)).min(MAX_STAMP);
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

    /// The largest stamp this node accepts from elsewhere now: its wall time
    /// plus [`HORIZON`].
    pub fn horizon(&self) -> u64 {
        stamp_of((self.wall)().saturating_add(HORIZON.as_micros() as u64))
    }

    /// Whether `seen`, from elsewhere, is plausible: not beyond
    /// [`Clock::horizon`]. Changes nothing either way.
    pub fn admit(&self, seen: Version) -> Result<(), Implausible> {
        let horizon = self.horizon();
        if seen.stamp > horizon {
            return Err(Implausible {
                stamp: seen.stamp,
                horizon,
            });
        }
        Ok(())
    }

    /// Moves the clock past a version seen from elsewhere, if it is plausible
    /// ([`Clock::admit`]); an implausible one leaves the clock as it was.
    pub fn observe(&self, seen: Version) -> Result<(), Implausible> {
        self.admit(seen)?;
        self.last.fetch_max(seen.stamp, Ordering::AcqRel);
        Ok(())
    }
}

/// A version too far ahead of this node's clock to have been taken honestly
/// (see the module doc). Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Implausible {
    /// The stamp refused.
    pub stamp: u64,
    /// The largest stamp the node accepted at that moment.
    pub horizon: u64,
}

impl std::fmt::Display for Implausible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stamp > MAX_STAMP {
            // A negative i64 on the wire.
            write!(f, "version stamp {} is negative", self.stamp as i64)
        } else {
            write!(
                f,
                "version stamp {} is more than {} s ahead of this node's clock \
                 (the most it accepts now is {}); check the sender's clock",
                self.stamp,
                HORIZON.as_secs(),
                self.horizon
            )
        }
    }
}

impl From<Implausible> for crate::error::Error {
    fn from(e: Implausible) -> Self {
        crate::error::Error::refused_here(format!("{e}; nothing was stored"))
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
        clock.observe(future).unwrap();
        assert!(clock.tick().stamp > future.stamp);
    }

    /// A clock whose wall reads `micros`, forever.
    fn stopped_at(micros: u64) -> Clock {
        Clock::with_wall(1, Arc::new(move || micros))
    }

    #[test]
    fn a_version_beyond_the_horizon_is_refused_and_leaves_the_clock_alone() {
        let wall = 1_700_000_000_000_000; // 2023, in microseconds
        let clock = stopped_at(wall);
        let before = clock.tick();
        let hour = HORIZON.as_micros() as u64;
        let at = |micros: u64| Version {
            stamp: micros << LOGICAL_BITS,
            origin: 2,
        };
        // Exactly an hour ahead: taken; a microsecond more: refused.
        assert_eq!(clock.admit(at(wall + hour)), Ok(()));
        assert!(clock.admit(at(wall + hour + 1)).is_err());
        for forged in [u64::MAX, (-2i64) as u64, MAX_STAMP, MAX_STAMP - 1] {
            let forged = Version {
                stamp: forged,
                origin: 2,
            };
            let refused = clock.observe(forged).unwrap_err();
            assert_eq!(refused.stamp, forged.stamp);
        }
        // Negative on the wire (-1 reads as u64::MAX): the error says so.
        let minus_one = Version {
            stamp: -1i64 as u64,
            origin: 0,
        };
        let message = clock.admit(minus_one).unwrap_err().to_string();
        assert!(message.contains("-1 is negative"), "{message}");
        // The clock moved only by its own tick.
        let next = clock.tick();
        assert_eq!(next.stamp, before.stamp + 1);
    }

    #[test]
    fn observing_the_horizon_never_pushes_the_clock_past_two_to_the_63() {
        let wall = 1_700_000_000_000_000;
        let clock = stopped_at(wall);
        let edge = Version {
            stamp: clock.horizon(),
            origin: 9,
        };
        clock.observe(edge).unwrap();
        let mut last = edge;
        for _ in 0..1000 {
            let next = clock.tick();
            assert!(next > last && next.stamp < MAX_STAMP);
            last = next;
        }
    }

    #[test]
    fn a_clock_saturates_instead_of_wrapping() {
        // A wall clock so far ahead that every stamp is the largest there is.
        let clock = stopped_at(u64::MAX);
        assert_eq!(clock.tick().stamp, MAX_STAMP);
        assert_eq!(clock.tick().stamp, MAX_STAMP);
        assert_eq!(clock.horizon(), MAX_STAMP);
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
