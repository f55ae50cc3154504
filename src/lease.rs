//! Leases with fencing tokens, the pure part: the record a lease is kept as,
//! and the decisions on it (`lock`, `unlock`, `renew`, a fenced write's
//! check), as functions of the current record and the time. No node, no I/O;
//! `node::lease` reads the record, asks these functions, and writes the
//! answer back.
//!
//! # Design, and why
//!
//! - **The lease is data.** A key's lease is a small record stored under the
//!   internal key [`record_key`] (`"\0thrifty-lease\0"` ++ key), read with a
//!   quorum read and written with a quorum write like any value. So it is
//!   replicated (N copies), survives the `kill -9` of any one node, moves
//!   with handoff and is repaired by anti-entropy; no separate lease table,
//!   no timers on any node. The leading NUL keeps such keys out of the way of
//!   keys people type, as chunk keys do ([`crate::stream`]); listings leave
//!   them out and clients cannot write them.
//! - **Decisions at the key's owner, one at a time per key.** `lock`,
//!   `unlock`, `renew` and fenced writes of a key are forwarded to the
//!   key's owner (as writes are), which takes the key's stripe of
//!   `node::exclusive` (the lock create-only writes and appends take), reads
//!   the record, decides here, and writes the new record before it answers.
//!   Two requests for one key reaching one owner thus never interleave
//!   between read and write; a fenced write is checked and written under
//!   the same lock, so no lease can be granted between its check and its
//!   write. While nodes disagree on the owner (a partition, a join not yet
//!   agreed) two nodes may each decide (README, Consistency model): leases
//!   are as safe as the ring's view of ownership, like create-only writes.
//! - **Expiry is wall-clock time**, in milliseconds since the epoch, taken
//!   from the deciding node's clock when it decides: nothing expires by a
//!   timer, a lease is simply free once `expires_ms` has passed on the
//!   clock of whichever owner decides next. That assumes the nodes' clocks
//!   agree to well within a TTL (NTP keeps them within milliseconds); a new
//!   owner whose clock runs ahead by `d` frees a lease `d` early. Holders
//!   should therefore fence their writes, not trust the clock alone.
//! - **Tokens**: a new lease's token is the larger of the previous token
//!   plus one and the version stamp (hybrid clock, microseconds) of the
//!   record write that grants it, and the deciding node has observed the
//!   previous record's version first. So tokens strictly increase per key,
//!   are never reused (unlock and expiry keep the record, and with it the
//!   count), and the record with the newest token is also the record with
//!   the newest version: replicas merging copies by version (last writer
//!   wins) can never bring back an older token.
//! - **The fencing rule**: a write fenced with token `t` is accepted only if
//!   `t` is the newest lease granted on the key and that lease was not
//!   unlocked. An *expired* lease that nobody has taken since still fences
//!   with its token: only a newer lease supersedes it (the classic rule),
//!   because refusing on time alone would make the check depend on clocks
//!   again, while no other holder can be in conflict. An unlocked lease's
//!   token is refused: its holder said it was done.
//! - **Bounded input**: TTLs from [`MIN_TTL_MS`] to [`MAX_TTL_MS`] (one
//!   day; renew for longer), and a record that does not decode is an error,
//!   never a panic.

use crate::error::{Error, Result};
use crate::upload::shown;

/// The prefix of the internal key a lease is stored under.
pub const LEASE_PREFIX: &[u8] = b"\0thrifty-lease\0";

/// The shortest lease, in milliseconds.
pub const MIN_TTL_MS: i64 = 1;

/// The longest lease, in milliseconds: one day. A holder that needs longer
/// renews.
pub const MAX_TTL_MS: i64 = 86_400_000;

/// The internal key `key`'s lease is stored under.
pub fn record_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEASE_PREFIX.len() + key.len());
    out.extend_from_slice(LEASE_PREFIX);
    out.extend_from_slice(key);
    out
}

/// Whether `key` is the internal key of some lease.
pub fn is_record_key(key: &[u8]) -> bool {
    key.starts_with(LEASE_PREFIX)
}

/// A lease as granted: its fencing token and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: larger than every earlier lease's on the key.
    pub token: i64,
    /// When the lease expires by itself, in wall-clock milliseconds since
    /// the epoch.
    pub expires_ms: i64,
}

/// A key's lease record: the newest lease granted on it, and whether its
/// holder gave it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The newest token granted on the key.
    pub token: i64,
    /// When that lease expires (wall-clock milliseconds).
    pub expires_ms: i64,
    /// Whether it was unlocked.
    pub released: bool,
}

/// The record's first bytes (not the value envelope's nor a manifest's, so
/// no reader takes a record for either).
const MAGIC: &[u8; 4] = b"TPL1";

/// A record's size: magic, flags, token, expiry.
const RECORD_BYTES: usize = MAGIC.len() + 1 + 8 + 8;

impl Record {
    /// The stored bytes: `"TPL1"`, flags (1: released), token and expiry as
    /// big-endian i64.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(u8::from(self.released));
        out.extend_from_slice(&self.token.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out
    }

    /// A record from its stored bytes; `Err` says how they are damaged.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
        if bytes.len() != RECORD_BYTES || !bytes.starts_with(MAGIC) {
            return Err(format!(
                "a lease record is {RECORD_BYTES} bytes starting with {MAGIC:?}, this one is {} bytes",
                bytes.len()
            ));
        }
        let released = match bytes[4] {
            0 => false,
            1 => true,
            other => return Err(format!("unknown lease record flags {other}")),
        };
        let int = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Record {
            token: int(5),
            expires_ms: int(13),
            released,
        })
    }

    /// Whether someone holds the lease at `now_ms`.
    pub fn held_at(&self, now_ms: i64) -> bool {
        !self.released && now_ms < self.expires_ms
    }

    fn lease(&self) -> Lease {
        Lease {
            token: self.token,
            expires_ms: self.expires_ms,
        }
    }
}

/// What a lease request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Take the lease for `ttl_ms`.
    Lock {
        /// Milliseconds.
        ttl_ms: i64,
    },
    /// Give lease `token` back.
    Unlock {
        /// The holder's token.
        token: i64,
    },
    /// Extend lease `token` to `ttl_ms` from now.
    Renew {
        /// The holder's token.
        token: i64,
        /// Milliseconds.
        ttl_ms: i64,
    },
}

impl Op {
    /// Refuses a TTL out of bounds, before anything is read or sent.
    pub fn check(&self) -> Result<()> {
        match *self {
            Op::Lock { ttl_ms } | Op::Renew { ttl_ms, .. } => check_ttl(ttl_ms),
            Op::Unlock { .. } => Ok(()),
        }
    }
}

/// Refuses a TTL outside [`MIN_TTL_MS`]..=[`MAX_TTL_MS`].
pub fn check_ttl(ttl_ms: i64) -> Result<()> {
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        return Err(Error::refused_here(format!(
            "a lease's ttl is {MIN_TTL_MS} to {MAX_TTL_MS} ms (one day), not {ttl_ms}; renew a lease to keep it longer (nothing was changed)"
        )));
    }
    Ok(())
}

/// The decision on `op` for `key`, given its current record (`None`: no
/// lease was ever granted on it), the deciding node's wall clock `now_ms`
/// and `stamp`, the version stamp the new record will be written under:
/// the record to write and the lease to answer with.
pub fn decide(
    key: &[u8],
    current: Option<Record>,
    op: Op,
    now_ms: i64,
    stamp: i64,
) -> Result<(Record, Lease)> {
    op.check()?;
    match op {
        Op::Lock { ttl_ms } => {
            if let Some(current) = current
                && current.held_at(now_ms)
            {
                return Err(Error::Held {
                    key: shown(key),
                    until_ms: current.expires_ms,
                    left_ms: current.expires_ms - now_ms,
                });
            }
            let after = current.map_or(0, |c| c.token.saturating_add(1));
            let record = Record {
                token: after.max(stamp).max(1),
                expires_ms: now_ms.saturating_add(ttl_ms),
                released: false,
            };
            Ok((record, record.lease()))
        }
        Op::Unlock { token } => {
            let mut record = current_of(key, current, token)?;
            record.released = true;
            Ok((record, record.lease()))
        }
        Op::Renew { token, ttl_ms } => {
            let mut record = current_of(key, current, token)?;
            record.expires_ms = now_ms.saturating_add(ttl_ms);
            Ok((record, record.lease()))
        }
    }
}

/// Accepts a write fenced with `fence` on `key` whose lease record is
/// `current` (see the fencing rule in the module doc), or refuses it
/// with [`Error::StaleToken`].
pub fn check_fence(key: &[u8], current: Option<Record>, fence: i64) -> Result<()> {
    current_of(key, current, fence).map(drop)
}

/// The record, if `token` is its current lease.
fn current_of(key: &[u8], current: Option<Record>, token: i64) -> Result<Record> {
    let stale = |reason: String| Error::StaleToken {
        key: shown(key),
        token,
        reason,
    };
    let Some(current) = current else {
        return Err(stale("no lease was ever granted on this key".into()));
    };
    if token < current.token {
        return Err(stale(format!(
            "a newer lease, token {}, was granted since",
            current.token
        )));
    }
    if token > current.token {
        return Err(stale(format!(
            "no lease with this token was granted; the newest is {}",
            current.token
        )));
    }
    if current.released {
        return Err(stale("it was unlocked".into()));
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const KEY: &[u8] = b"k";

    fn lock(current: Option<Record>, now: i64, stamp: i64) -> Result<(Record, Lease)> {
        decide(KEY, current, Op::Lock { ttl_ms: 100 }, now, stamp)
    }

    #[test]
    fn a_record_round_trips_and_damage_is_an_error() {
        let record = Record {
            token: 42,
            expires_ms: -7,
            released: true,
        };
        assert_eq!(Record::decode(&record.encode()), Ok(record));
        assert!(Record::decode(b"TPL1").is_err());
        let mut flags = record.encode();
        flags[4] = 9;
        assert!(Record::decode(&flags).unwrap_err().contains("flags 9"));
        assert!(!record.encode().starts_with(&crate::value::MAGIC));
    }

    #[test]
    fn a_held_lease_refuses_lock_saying_until_when() {
        let (first, lease) = lock(None, 1_000, 5).unwrap();
        assert_eq!(lease.expires_ms, 1_100);
        let error = lock(Some(first), 1_050, 6).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Held);
        assert!(error.to_string().contains("until 1100"), "{error}");
        assert!(error.to_string().contains("50 ms from now"), "{error}");
    }

    #[test]
    fn tokens_grow_through_expiry_and_unlock_even_when_the_clock_does_not() {
        let (first, _) = lock(None, 1_000, 500).unwrap();
        assert_eq!(first.token, 500);
        // Expired: a new lease, a larger token, though the stamp went back.
        let (second, _) = lock(Some(first), 1_100, 10).unwrap();
        assert_eq!(second.token, 501);
        let (released, _) =
            decide(KEY, Some(second), Op::Unlock { token: 501 }, 1_101, 11).unwrap();
        assert!(released.released);
        assert_eq!(released.token, 501);
        let (third, _) = lock(Some(released), 1_102, 900).unwrap();
        assert_eq!(third.token, 900);
    }

    #[test]
    fn unlock_and_renew_need_the_current_token() {
        let (record, _) = lock(None, 1_000, 50).unwrap();
        for token in [49, 51] {
            let error = decide(KEY, Some(record), Op::Unlock { token }, 1_001, 60).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::StaleToken, "{error}");
        }
        let (renewed, lease) = decide(
            KEY,
            Some(record),
            Op::Renew {
                token: 50,
                ttl_ms: 500,
            },
            1_050,
            61,
        )
        .unwrap();
        assert_eq!((lease.token, lease.expires_ms), (50, 1_550));
        let (released, _) =
            decide(KEY, Some(renewed), Op::Unlock { token: 50 }, 1_060, 62).unwrap();
        let again = decide(KEY, Some(released), Op::Unlock { token: 50 }, 1_061, 63).unwrap_err();
        assert!(again.to_string().contains("unlocked"), "{again}");
        let error = decide(KEY, None, Op::Unlock { token: 1 }, 1, 1).unwrap_err();
        assert!(
            error.to_string().contains("no lease was ever granted"),
            "{error}"
        );
    }

    #[test]
    fn a_fence_is_the_newest_unreleased_token_expired_or_not() {
        let (old, _) = lock(None, 1_000, 70).unwrap();
        assert!(check_fence(KEY, Some(old), 70).is_ok());
        // Expired, nobody took it since: still fences.
        assert!(check_fence(KEY, Some(old), 70).is_ok());
        let (new, _) = lock(Some(old), 2_000, 80).unwrap();
        let stale = check_fence(KEY, Some(new), 70).unwrap_err();
        assert_eq!(stale.kind(), ErrorKind::StaleToken);
        assert!(
            stale.to_string().contains("newer lease, token 80"),
            "{stale}"
        );
        assert!(check_fence(KEY, Some(new), 80).is_ok());
        assert!(check_fence(KEY, None, 80).is_err());
        let (released, _) = decide(KEY, Some(new), Op::Unlock { token: 80 }, 2_001, 81).unwrap();
        assert!(check_fence(KEY, Some(released), 80).is_err());
    }

    #[test]
    fn ttls_out_of_bounds_are_refused_with_the_bounds() {
        for ttl_ms in [0, -1, i64::MIN, MAX_TTL_MS + 1, i64::MAX] {
            let error = lock_ttl(ttl_ms).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Refused);
            assert!(error.to_string().contains("1 to 86400000 ms"), "{error}");
        }
        assert!(lock_ttl(MAX_TTL_MS).is_ok());
        assert!(lock_ttl(MIN_TTL_MS).is_ok());
    }

    fn lock_ttl(ttl_ms: i64) -> Result<(Record, Lease)> {
        decide(KEY, None, Op::Lock { ttl_ms }, i64::MAX - 5, 1)
    }
}
