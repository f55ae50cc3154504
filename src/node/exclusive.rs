//! `Exclusive`: one operation at a time per key, at the key's owner, for
//! the writes that must read before they write (create-only, append; and
//! leases, which can take the same lock). A striped table of async mutexes:
//! a key's stripe is picked by a hash of the key, so memory is fixed (no
//! entry per key to create or clean up) and two keys that share a stripe
//! only wait for each other, which costs time, never correctness.
//!
//! It serialises what reaches this node. What makes it per key across the
//! ring is that conditional requests are forwarded to the key's owner, as
//! writes are (`node::conditional`); while the ring changes two nodes may
//! each believe they own a key, and each then serialises only its own
//! requests (README, Consistency model).
//!
//! An async mutex, not `parking_lot`'s: the holder waits on other nodes
//! (a quorum read, then a quorum write) with the lock held.

use std::hash::{BuildHasher, Hasher};

use tokio::sync::{Mutex, MutexGuard};

/// Stripes: more than the operations a node serves at once, so unrelated
/// keys rarely wait for each other.
const STRIPES: usize = 256;

/// The striped per-key lock.
pub struct Exclusive {
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Exclusive {
    fn default() -> Self {
        Exclusive::new()
    }
}

impl Exclusive {
    /// A table of [`STRIPES`] unlocked stripes.
    pub fn new() -> Self {
        Exclusive {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }

    fn stripe(&self, key: &[u8]) -> usize {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        (hasher.finish() % STRIPES as u64) as usize
    }

    /// Waits until no other holder has `key` (or a key sharing its stripe),
    /// and holds it until the guard is dropped.
    pub async fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(key)].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn holders_of_one_key_never_overlap() {
        let exclusive = Arc::new(Exclusive::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (exclusive, inside, most) = (exclusive.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let _held = exclusive.lock(b"key").await;
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_key_is_free_again_once_its_guard_is_dropped() {
        let exclusive = Exclusive::new();
        drop(exclusive.lock(b"a").await);
        let held = exclusive.lock(b"a").await;
        // Another key is not blocked unless it shares the stripe.
        let other = (0u32..)
            .map(|i| i.to_be_bytes())
            .find(|k| exclusive.stripe(k) != exclusive.stripe(b"a"))
            .unwrap();
        let _other = exclusive.lock(&other).await;
        drop(held);
    }
}
