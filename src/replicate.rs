//! Replication: carrying writes to a key's other replicas.
//!
//! Each peer gets one sender thread and a queue. Writes from many requests are
//! drained into one `absorb` call per round trip, so under load the cost of a
//! round trip is shared by every write waiting in the queue (group commit).
//! A write's coordinator waits on an [`Ack`] until a quorum of replicas stored
//! it. Entries a peer could not take become hints: the keys are remembered per
//! peer and sent again (with their current value) once it answers again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::addr::NodeAddr;
use crate::client::Pool;
use crate::idl::diststore::{Entry, TStoreSyncClient};

/// Most hinted keys kept per peer; past that, anti-entropy repairs the rest.
const MAX_HINTS_PER_PEER: usize = 1_000_000;

/// Counts replica acknowledgements for one write. Sender threads settle it;
/// the coordinating request awaits it without blocking its tokio worker.
#[derive(Default)]
pub struct Ack {
    /// (acknowledged, failed)
    state: Mutex<(usize, usize)>,
    changed: tokio::sync::Notify,
}

impl Ack {
    /// A fresh counter.
    pub fn new() -> Arc<Self> {
        Arc::new(Ack::default())
    }

    fn settle(&self, ok: bool) {
        let mut state = self.state.lock();
        if ok {
            state.0 += 1;
        } else {
            state.1 += 1;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Waits until `needed` of `total` replicas acknowledged, until so many
    /// failed that `needed` cannot be reached, or until `timeout`. Returns the
    /// acknowledgements counted.
    pub async fn wait(&self, needed: usize, total: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before looking, so none is missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock();
                if state.0 >= needed || total - state.1 < needed {
                    return state.0;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state.lock().0;
            }
        }
    }
}

struct Outgoing {
    entry: Entry,
    ack: Option<Arc<Ack>>,
}

#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Outgoing>>,
    ready: Condvar,
}

/// Sends entries to peers in batches, and keeps hints for those that failed.
pub struct Replicator {
    pool: Arc<Pool>,
    queues: Mutex<HashMap<NodeAddr, Arc<Queue>>>,
    hints: Mutex<HashMap<NodeAddr, HashSet<Vec<u8>>>>,
    pending: Arc<AtomicUsize>,
    batch_entries: usize,
    batch_bytes: usize,
}

impl Replicator {
    /// A replicator sending through `pool`, in batches of at most
    /// `batch_entries` entries or `batch_bytes` bytes.
    pub fn new(pool: Arc<Pool>, batch_entries: usize, batch_bytes: usize) -> Arc<Self> {
        Arc::new(Replicator {
            pool,
            queues: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            pending: Arc::new(AtomicUsize::new(0)),
            batch_entries: batch_entries.max(1),
            batch_bytes,
        })
    }

    /// Queues `entry` for `peer`; `ack` (if any) learns whether it was stored.
    pub fn send(self: &Arc<Self>, peer: &NodeAddr, entry: Entry, ack: Option<Arc<Ack>>) {
        let queue = self.queue(peer);
        self.pending.fetch_add(1, Ordering::Relaxed);
        queue.items.lock().push_back(Outgoing { entry, ack });
        queue.ready.notify_one();
    }

    fn queue(self: &Arc<Self>, peer: &NodeAddr) -> Arc<Queue> {
        let mut queues = self.queues.lock();
        if let Some(queue) = queues.get(peer) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::default());
        queues.insert(peer.clone(), queue.clone());
        let me = self.clone();
        let peer = peer.clone();
        let worker = queue.clone();
        std::thread::Builder::new()
            .name(format!("replicate-{peer}"))
            .spawn(move || me.sender(&peer, &worker))
            .expect("spawn a replication thread");
        queue
    }

    /// One peer's sender: drains the queue into batches until the process ends.
    fn sender(&self, peer: &NodeAddr, queue: &Queue) {
        loop {
            let batch = {
                let mut items = queue.items.lock();
                while items.is_empty() {
                    queue.ready.wait(&mut items);
                }
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(item) = items.pop_front() {
                    bytes += item.entry.key.as_ref().map_or(0, Vec::len)
                        + item.entry.value.as_ref().map_or(0, Vec::len);
                    batch.push(item);
                    if batch.len() >= self.batch_entries || bytes >= self.batch_bytes {
                        break;
                    }
                }
                batch
            };
            let entries: Vec<Entry> = batch.iter().map(|o| o.entry.clone()).collect();
            let result = self.pool.call(peer, |c| c.absorb(entries.clone()));
            if let Err(e) = &result {
                log::debug!("replicating {} entries to {peer} failed: {e}", batch.len());
                self.add_hints(peer, batch.iter().filter_map(|o| o.entry.key.clone()));
            }
            for item in &batch {
                if let Some(ack) = &item.ack {
                    ack.settle(result.is_ok());
                }
            }
            self.pending.fetch_sub(batch.len(), Ordering::Relaxed);
        }
    }

    /// Remembers keys `peer` should receive once it answers again.
    pub fn add_hints(&self, peer: &NodeAddr, keys: impl IntoIterator<Item = Vec<u8>>) {
        let mut hints = self.hints.lock();
        let set = hints.entry(peer.clone()).or_default();
        for key in keys {
            if set.len() >= MAX_HINTS_PER_PEER {
                log::warn!("too many hints for {peer}; anti-entropy will repair the rest");
                break;
            }
            set.insert(key);
        }
    }

    /// Takes every hint kept for `peer`.
    pub fn take_hints(&self, peer: &NodeAddr) -> Vec<Vec<u8>> {
        self.hints
            .lock()
            .remove(peer)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default()
    }

    /// Peers with hints waiting.
    pub fn hinted_peers(&self) -> Vec<NodeAddr> {
        self.hints.lock().keys().cloned().collect()
    }

    /// Entries queued or in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Hinted keys, over all peers.
    pub fn hint_count(&self) -> usize {
        self.hints.lock().values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn wait(ack: &Ack, needed: usize, total: usize) -> usize {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(ack.wait(needed, total, Duration::from_secs(10)))
    }

    #[test]
    fn an_ack_returns_once_the_quorum_is_reached() {
        let ack = Ack::new();
        ack.settle(true);
        ack.settle(true);
        assert_eq!(wait(&ack, 2, 3), 2);
    }

    #[test]
    fn an_ack_gives_up_as_soon_as_the_quorum_is_impossible() {
        let ack = Ack::new();
        ack.settle(false);
        ack.settle(false);
        let started = Instant::now();
        assert_eq!(wait(&ack, 2, 3), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_ack_waits_for_a_late_replica() {
        let ack = Ack::new();
        let late = ack.clone();
        let handle = std::thread::spawn(move || late.settle(true));
        assert_eq!(wait(&ack, 1, 1), 1);
        handle.join().unwrap();
    }
}
