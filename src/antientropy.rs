//! Anti-entropy digests: a summary of which versions a node holds, bucket by
//! bucket, so two replicas find where they differ without sending every key.
//!
//! Keys fall into [`BUCKETS`] buckets by the top bits of their ring position.
//! A bucket's digest is the XOR of a 64-bit fingerprint of each (key, version,
//! tombstone) in it, so it does not depend on scan order and two nodes holding
//! the same copies compute the same digest. Only keys that both nodes replicate
//! are summarised; the caller says which with a predicate.

use crate::ring::key_position;
use crate::version::Version;

/// Number of buckets the key space is cut into for comparison.
pub const BUCKETS: usize = 4096;

/// The bucket a key falls into.
pub fn bucket_of(key: &[u8]) -> usize {
    (key_position(key) >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A fingerprint of one copy of a key.
pub fn fingerprint(key: &[u8], version: Version, tombstone: bool) -> u64 {
    let stamp = mix(version.stamp ^ (u64::from(version.origin) << 1) ^ u64::from(tombstone));
    mix(key_position(key) ^ stamp)
}

/// Per-bucket digests of a set of copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests(Vec<u64>);

impl Default for Digests {
    fn default() -> Self {
        Digests(vec![0; BUCKETS])
    }
}

impl Digests {
    /// Digests of nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one copy.
    pub fn add(&mut self, key: &[u8], version: Version, tombstone: bool) {
        self.0[bucket_of(key)] ^= fingerprint(key, version, tombstone);
    }

    /// The digests as Thrift sends them.
    pub fn to_wire(&self) -> Vec<i64> {
        self.0.iter().map(|&d| d as i64).collect()
    }

    /// Buckets where `theirs` differs from ours. A peer sending the wrong number
    /// of buckets differs everywhere.
    pub fn differing(&self, theirs: &[i64]) -> Vec<i32> {
        if theirs.len() != BUCKETS {
            return (0..BUCKETS as i32).collect();
        }
        self.0
            .iter()
            .zip(theirs)
            .enumerate()
            .filter(|(_, (ours, theirs))| **ours != **theirs as u64)
            .map(|(bucket, _)| bucket as i32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 1 }
    }

    #[test]
    fn the_same_copies_in_any_order_give_the_same_digests() {
        let mut a = Digests::new();
        let mut b = Digests::new();
        for i in 0..1000u32 {
            a.add(&i.to_be_bytes(), v(u64::from(i)), false);
        }
        for i in (0..1000u32).rev() {
            b.add(&i.to_be_bytes(), v(u64::from(i)), false);
        }
        assert!(a.differing(&b.to_wire()).is_empty());
    }

    #[test]
    fn a_newer_version_or_a_tombstone_changes_only_its_bucket() {
        let mut base = Digests::new();
        base.add(b"k", v(1), false);
        base.add(b"other", v(1), false);
        let mut newer = Digests::new();
        newer.add(b"k", v(2), false);
        newer.add(b"other", v(1), false);
        let mut erased = Digests::new();
        erased.add(b"k", v(1), true);
        erased.add(b"other", v(1), false);
        let expected = vec![bucket_of(b"k") as i32];
        assert_eq!(base.differing(&newer.to_wire()), expected);
        assert_eq!(base.differing(&erased.to_wire()), expected);
    }

    #[test]
    fn a_missing_key_shows_as_a_difference() {
        let mut a = Digests::new();
        a.add(b"k", v(1), false);
        assert_eq!(
            a.differing(&Digests::new().to_wire()),
            vec![bucket_of(b"k") as i32]
        );
    }

    #[test]
    fn a_malformed_digest_list_differs_everywhere() {
        assert_eq!(Digests::new().differing(&[0; 3]).len(), BUCKETS);
    }
}
