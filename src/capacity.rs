//! The node's cap on stored bytes (`location --max-memory`): whether a write
//! fits, with room reserved for writes admitted but not yet stored.
//!
//! What is capped is the engine's own exact count of key and value bytes
//! ([`crate::store::Usage::bytes`]), not the process's resident memory: that
//! count is the same on every engine and every run, known without asking the
//! allocator, and it is what an operator sizes (the data). The process uses
//! more on top: the engine's overhead (about 0.3x in memory; on disk the LSM
//! tree's), tombstones, the bytes in flight (`--inflight-bytes`) and the ring.
//!
//! The rule, and why:
//! - A client's write (through its coordinator, or a coordinator's
//!   `replicate` to a replica) is refused with [`Error::Full`] when the bytes
//!   held, plus those of writes admitted and still being stored, plus the
//!   write's growth would exceed the cap. The growth of an overwrite is what
//!   it adds over the copy it replaces, so rewriting a key at the same size
//!   always fits.
//! - Erases (tombstones) are always taken: they are how room is made.
//! - Handoff, anti-entropy repair and hints are never refused: they carry
//!   writes some replica already acknowledged, and refusing them could lose
//!   those or keep replicas apart for ever. They count in the usage, so a
//!   node they take over its cap refuses client writes until erases make
//!   room.
//! - Nothing is ever evicted.
//!
//! A write that turns out older than the copy held stores nothing but is
//! still checked; two writes to the same key at once may both subtract the
//! old copy, so the cap can be passed by at most that copy's size then.

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A node's cap and the room reserved for the writes it admitted.
#[derive(Debug, Default)]
pub struct Capacity {
    limit: Option<u64>,
    reserved: Mutex<u64>,
}

/// Room held for one admitted write; given back when dropped (once the write
/// is stored, when the engine's count has it).
#[derive(Debug)]
pub struct Reservation<'a> {
    capacity: &'a Capacity,
    bytes: u64,
}

impl Capacity {
    /// A cap of `limit` bytes; `None`: no cap, every write fits.
    pub fn new(limit: Option<u64>) -> Self {
        Capacity {
            limit,
            reserved: Mutex::new(0),
        }
    }

    /// The cap, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Admits a write that grows the store by `growth` bytes when it holds
    /// `used` (the engine's count), or says why not: [`Error::Full`] naming
    /// `node`. A `growth` of 0 (an erase, or an overwrite no larger than the
    /// copy it replaces) always fits.
    pub fn admit(&self, node: &str, used: u64, growth: u64) -> Result<Reservation<'_>> {
        let Some(limit) = self.limit.filter(|_| growth > 0) else {
            return Ok(Reservation {
                capacity: self,
                bytes: 0,
            });
        };
        let mut reserved = self.reserved.lock();
        let held = used.saturating_add(*reserved);
        if held.saturating_add(growth) > limit {
            return Err(Error::Full {
                node: node.to_string(),
                used: held,
                needed: growth,
                limit,
            });
        }
        // Below the limit, so below u64::MAX.
        *reserved += growth;
        Ok(Reservation {
            capacity: self,
            bytes: growth,
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.capacity.reserved.lock() -= self.bytes;
    }
}

/// The bytes a write of `value` at `key` adds over the copy it replaces,
/// whose value is `old_len` bytes (`None`: no value held): 0 for an erase.
pub fn growth(key: &[u8], value: Option<&[u8]>, old_len: Option<usize>) -> u64 {
    let Some(value) = value else { return 0 };
    let new = (key.len() + value.len()) as u64;
    let old = old_len.map_or(0, |len| (key.len() + len) as u64);
    new.saturating_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_write_fits_up_to_the_exact_byte_and_not_one_more() {
        let cap = Capacity::new(Some(100));
        assert!(cap.admit("n", 90, 10).is_ok());
        let error = cap.admit("n", 90, 11).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Full);
        let text = error.to_string();
        for part in [
            "n is full",
            "holds 90 bytes",
            "needs 11 more",
            "--max-memory of 100",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(text.contains("erase keys, raise --max-memory, or add nodes"));
    }

    #[test]
    fn writes_admitted_and_not_yet_stored_hold_their_room_until_dropped() {
        let cap = Capacity::new(Some(100));
        let first = cap.admit("n", 0, 60).unwrap();
        assert!(cap.admit("n", 0, 41).is_err(), "60 reserved + 41 > 100");
        let second = cap.admit("n", 0, 40).unwrap();
        drop(first);
        drop(second);
        assert!(cap.admit("n", 0, 100).is_ok());
    }

    #[test]
    fn erases_and_writes_that_do_not_grow_fit_even_over_the_cap() {
        let cap = Capacity::new(Some(100));
        assert!(cap.admit("n", 500, 0).is_ok());
        assert_eq!(growth(b"key", None, Some(50)), 0);
        assert_eq!(growth(b"key", Some(&[0; 50]), Some(50)), 0);
        assert_eq!(growth(b"key", Some(&[0; 60]), Some(50)), 10);
        assert_eq!(growth(b"key", Some(&[0; 60]), None), 63);
    }

    #[test]
    fn without_a_cap_everything_fits() {
        let cap = Capacity::new(None);
        assert!(cap.admit("n", u64::MAX, u64::MAX / 2).is_ok());
    }
}
