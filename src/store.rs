//! The local store: this node's share of the keys, in memory, with versions.
//!
//! Sharded `HashMap`s behind `parking_lot` read-write locks: operations are short
//! and never await, so a blocking lock held for a few hundred nanoseconds is
//! cheaper than an async one, and sharding keeps the two cores from contending.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::RwLock;

use crate::version::Version;

const SHARDS: usize = 64;

/// One stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Its version.
    pub version: Version,
}

#[derive(Debug)]
struct Slot {
    value: Box<[u8]>,
    version: Version,
}

/// A node's local keys.
#[derive(Debug)]
pub struct Store {
    shards: Vec<RwLock<HashMap<Box<[u8]>, Slot>>>,
    hasher: RandomState,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, key: &[u8]) -> &RwLock<HashMap<Box<[u8]>, Slot>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Stored> {
        self.shard(key).read().get(key).map(|slot| Stored {
            value: slot.value.to_vec(),
            version: slot.version,
        })
    }

    /// The version stored at `key`, if any.
    pub fn version(&self, key: &[u8]) -> Option<Version> {
        self.shard(key).read().get(key).map(|slot| slot.version)
    }

    /// Stores `value` unless the key already holds a version at least as new.
    /// Returns whether the value was applied.
    pub fn merge(&self, key: &[u8], value: &[u8], version: Version) -> bool {
        let mut shard = self.shard(key).write();
        match shard.get_mut(key) {
            Some(slot) if slot.version >= version => false,
            Some(slot) => {
                slot.value = value.into();
                slot.version = version;
                true
            }
            None => {
                shard.insert(
                    key.into(),
                    Slot {
                        value: value.into(),
                        version,
                    },
                );
                true
            }
        }
    }

    /// Stores `value` with a version made by `next` from the version it replaces,
    /// atomically, so an overwrite always gets a larger version than the old copy.
    pub fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        next: impl FnOnce(Option<Version>) -> Version,
    ) -> Version {
        let mut shard = self.shard(key).write();
        match shard.get_mut(key) {
            Some(slot) => {
                let version = next(Some(slot.version));
                slot.value = value.into();
                slot.version = version;
                version
            }
            None => {
                let version = next(None);
                shard.insert(
                    key.into(),
                    Slot {
                        value: value.into(),
                        version,
                    },
                );
                version
            }
        }
    }

    /// Deletes `key` only if it still holds `version`: a handoff deletes what it
    /// sent, never a newer write that arrived meanwhile.
    pub fn remove_if(&self, key: &[u8], version: Version) -> bool {
        let mut shard = self.shard(key).write();
        if shard.get(key).is_some_and(|slot| slot.version == version) {
            shard.remove(key);
            true
        } else {
            false
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys for which `pick` is true, copied out shard by shard (no lock is
    /// held across shards, so writers are never blocked for long).
    pub fn keys_where(&self, mut pick: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for shard in &self.shards {
            let shard = shard.read();
            keys.extend(shard.keys().filter(|k| pick(k)).map(|k| k.to_vec()));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 0 }
    }

    #[test]
    fn merge_keeps_the_newer_version() {
        let store = Store::new();
        assert!(store.merge(b"k", b"new", v(2)));
        assert!(!store.merge(b"k", b"old", v(1)));
        assert!(!store.merge(b"k", b"same", v(2)));
        assert_eq!(store.get(b"k").unwrap().value, b"new");
        assert!(store.merge(b"k", b"newer", v(3)));
        assert_eq!(store.get(b"k").unwrap().value, b"newer");
    }

    #[test]
    fn overwrite_sees_the_version_it_replaces() {
        let store = Store::new();
        store.merge(b"k", b"a", v(10));
        let got = store.overwrite(b"k", b"b", |old| v(old.unwrap().stamp + 1));
        assert_eq!(got, v(11));
        assert_eq!(store.get(b"k").unwrap().value, b"b");
    }

    #[test]
    fn remove_if_spares_a_newer_write() {
        let store = Store::new();
        store.merge(b"k", b"a", v(1));
        store.merge(b"k", b"b", v(2));
        assert!(!store.remove_if(b"k", v(1)));
        assert!(store.remove_if(b"k", v(2)));
        assert!(store.get(b"k").is_none());
    }

    #[test]
    fn keys_where_filters_every_shard() {
        let store = Store::new();
        for i in 0..1000u32 {
            store.merge(&i.to_be_bytes(), b"x", v(1));
        }
        let even = store.keys_where(|k| k[3] % 2 == 0);
        assert_eq!(even.len(), 500);
        assert_eq!(store.len(), 1000);
    }
}
