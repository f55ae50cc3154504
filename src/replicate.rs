//! Replication: carrying writes to a key's other replicas.
//!
//! Each peer gets one sender task (one of the node's [`Tasks`]) and a queue.
//! Writes from many requests are drained into one `absorb` call per round
//! trip, so under load the cost of a round trip is shared by every write
//! waiting in the queue (group commit).
//! A write's coordinator waits on an [`Ack`] until a quorum of replicas stored
//! it. Entries a peer could not take become hints: the keys are remembered per
//! peer and sent again (with their current value) once it answers again.
//!
//! An entry queued longer than the replicator's `max_age` (a quarter of the
//! tombstone grace) is not sent as it was queued: it becomes a hint too, so
//! the peer gets the key's value as it is when the hint is delivered. A copy
//! that waited behind a slow peer could otherwise arrive after the key was
//! erased and its tombstone collected, and bring the erased value back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::addr::NodeAddr;
use crate::error::{Error, ErrorKind};
use crate::peer::{Entry, Request};
use crate::tasks::Tasks;
use crate::transport::Transport;

/// Most hinted keys kept per peer; past that, anti-entropy repairs the rest.
const MAX_HINTS_PER_PEER: usize = 1_000_000;

/// Counts replica acknowledgements for one write. Sender threads settle it;
/// the coordinating request awaits it without blocking its tokio worker.
#[derive(Default)]
pub struct Ack {
    /// (acknowledged, failed)
    state: Mutex<(usize, usize)>,
    /// The first replica that refused the write as full (its address and
    /// message), so the coordinator can pass that on.
    full: Mutex<Option<(String, String)>>,
    changed: tokio::sync::Notify,
    /// Set once the coordinator stopped waiting: the write's copies still
    /// queued are repairs from then on.
    settled: AtomicBool,
}

impl Ack {
    /// A fresh counter.
    pub fn new() -> Arc<Self> {
        Arc::new(Ack::default())
    }

    /// A replica refused the write because it is full (`--max-memory`):
    /// counted as a failure, and kept for [`Ack::refusal`].
    fn refuse_full(&self, peer: &NodeAddr, message: String) {
        self.full
            .lock()
            .get_or_insert_with(|| (peer.to_string(), message));
        self.settle(false);
    }

    /// The error of the first replica that refused the write as full, if one did.
    pub fn refusal(&self) -> Option<Error> {
        let (peer, message) = self.full.lock().clone()?;
        Some(Error::Remote {
            peer,
            kind: ErrorKind::Full,
            message,
        })
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
        let acked = self.wait_for(needed, total, timeout).await;
        self.settled.store(true, Ordering::Release);
        acked
    }

    /// Whether nobody waits on this counter any more.
    fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    async fn wait_for(&self, needed: usize, total: usize, timeout: Duration) -> usize {
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
    /// The write's quorum counter and the coordinator's ring id; `None` for
    /// repairs, which nobody waits for.
    ack: Option<(Arc<Ack>, u64)>,
    /// When it was queued.
    queued: tokio::time::Instant,
}

/// Sends entries to peers in batches, and keeps hints for those that failed.
pub struct Replicator {
    transport: Arc<dyn Transport>,
    tasks: Tasks,
    queues: Mutex<BTreeMap<NodeAddr, mpsc::UnboundedSender<Outgoing>>>,
    hints: Mutex<BTreeMap<NodeAddr, BTreeSet<Vec<u8>>>>,
    pending: AtomicUsize,
    batch_entries: usize,
    batch_bytes: usize,
    timeout: Duration,
    /// Entries queued longer than this go as hints (see the module doc).
    max_age: Duration,
}

impl Replicator {
    /// A replicator sending through `transport` from tasks spawned with
    /// `tasks`, in batches of at most `batch_entries` entries or `batch_bytes`
    /// bytes, waiting at most `timeout` for each batch's reply; an entry
    /// queued longer than `max_age` is sent as a hint instead (module doc).
    pub fn new(
        transport: Arc<dyn Transport>,
        tasks: Tasks,
        batch_entries: usize,
        batch_bytes: usize,
        timeout: Duration,
        max_age: Duration,
    ) -> Arc<Self> {
        Arc::new(Replicator {
            transport,
            tasks,
            queues: Mutex::new(BTreeMap::new()),
            hints: Mutex::new(BTreeMap::new()),
            pending: AtomicUsize::new(0),
            batch_entries: batch_entries.max(1),
            batch_bytes,
            timeout,
            max_age,
        })
    }

    /// Queues `entry` for `peer`; `ack` (if any) learns whether it was stored
    /// by a peer that routes with the coordinator's ring id given with it.
    /// Never blocks: callable from the request path and from plain threads.
    pub fn send(self: &Arc<Self>, peer: &NodeAddr, entry: Entry, ack: Option<(Arc<Ack>, u64)>) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut queues = self.queues.lock();
        let queue = queues.entry(peer.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let me = self.clone();
            let peer = peer.clone();
            self.tasks.spawn(async move { me.sender(peer, rx).await });
            tx
        });
        let queued = tokio::time::Instant::now();
        if let Err(mpsc::error::SendError(lost)) = queue.send(Outgoing { entry, ack, queued }) {
            // The runtime is shutting down; nothing will carry it.
            self.pending.fetch_sub(1, Ordering::Relaxed);
            if let Some((ack, _)) = lost.ack {
                ack.settle(false);
            }
        }
    }

    /// One peer's sender task: whatever has queued up while the previous
    /// batch was in flight goes out as the next batch.
    async fn sender(&self, peer: NodeAddr, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let mut next = None;
        while let Some(first) = match next.take() {
            Some(item) => Some(item),
            None => queue.recv().await,
        } {
            // One batch carries one ring id (or none): a ring change between
            // two writes starts a new batch. A write whose coordinator stopped
            // waiting is a repair by now and travels with the repairs, so a
            // backlog (a peer that was slow to answer) drains in few batches.
            let ring_of = |item: &Outgoing| {
                item.ack
                    .as_ref()
                    .filter(|(ack, _)| !ack.settled())
                    .map(|(_, ring)| *ring)
            };
            let ring = ring_of(&first);
            let mut bytes = first.entry.bytes();
            let mut batch = vec![first];
            while batch.len() < self.batch_entries && bytes < self.batch_bytes {
                let Ok(item) = queue.try_recv() else { break };
                if ring_of(&item) != ring {
                    next = Some(item);
                    break;
                }
                bytes += item.entry.bytes();
                batch.push(item);
            }
            let (batch, stale): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|item| item.queued.elapsed() <= self.max_age);
            if !stale.is_empty() {
                log::debug!(
                    "{} entries for {peer} waited longer than {:?}; sent as hints",
                    stale.len(),
                    self.max_age
                );
                self.add_hints(&peer, stale.iter().map(|o| o.entry.key.clone()));
                for item in &stale {
                    if let Some((ack, _)) = &item.ack {
                        ack.settle(false);
                    }
                }
                self.pending.fetch_sub(stale.len(), Ordering::Relaxed);
            }
            if batch.is_empty() {
                continue;
            }
            let entries = newest_per_key(&batch);
            let request = match ring {
                Some(ring) => Request::Replicate { entries, ring },
                None => Request::Absorb(entries),
            };
            let result = self.transport.call(&peer, request, self.timeout).await;
            // A full replica answered and refused what did not fit: no hint,
            // which would be replayed past its cap at once (anti-entropy
            // still brings it any copy stored elsewhere; see `capacity`).
            let full = match &result {
                Err(Error::Remote {
                    kind: ErrorKind::Full,
                    message,
                    ..
                }) => Some(message.clone()),
                _ => None,
            };
            if let Err(e) = &result {
                log::debug!("replicating {} entries failed: {e}", batch.len());
                if full.is_none() {
                    self.add_hints(&peer, batch.iter().map(|o| o.entry.key.clone()));
                }
            }
            for item in &batch {
                if let Some((ack, _)) = &item.ack {
                    match &full {
                        Some(message) => ack.refuse_full(&peer, message.clone()),
                        None => ack.settle(result.is_ok()),
                    }
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
        self.hints.lock().values().map(BTreeSet::len).sum()
    }
}

/// The batch's entries, only the newest copy of each key (the receiver keeps
/// the newest anyway), in the order of their first appearance.
fn newest_per_key(batch: &[Outgoing]) -> Vec<Entry> {
    let mut at: BTreeMap<&[u8], usize> = BTreeMap::new();
    let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
    for item in batch {
        match at.get(item.entry.key.as_slice()) {
            Some(&i) => {
                if entries[i].stored.version < item.entry.stored.version {
                    entries[i] = item.entry.clone();
                }
            }
            None => {
                at.insert(&item.entry.key, entries.len());
                entries.push(item.entry.clone());
            }
        }
    }
    entries
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

    fn outgoing(key: &str, stamp: u64, ack: Option<(Arc<Ack>, u64)>) -> Outgoing {
        let stored = crate::store::Stored {
            value: Some(stamp.to_string().into_bytes()),
            version: crate::version::Version { stamp, origin: 0 },
        };
        Outgoing {
            entry: Entry::new(key.as_bytes().to_vec(), stored),
            ack,
            queued: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn a_batch_carries_only_the_newest_copy_of_each_key() {
        let batch = [
            outgoing("a", 1, None),
            outgoing("b", 5, None),
            outgoing("a", 3, None),
            outgoing("b", 4, None),
        ];
        let entries: Vec<(Vec<u8>, u64)> = newest_per_key(&batch)
            .into_iter()
            .map(|e| (e.key, e.stored.version.stamp))
            .collect();
        assert_eq!(entries, vec![(b"a".to_vec(), 3), (b"b".to_vec(), 5)]);
    }

    #[test]
    fn a_write_nobody_waits_for_any_more_is_a_repair() {
        let ack = Ack::new();
        assert!(!ack.settled());
        ack.settle(true);
        assert_eq!(wait(&ack, 1, 2), 1);
        assert!(ack.settled());
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
