//! The replica's side of a request: entries a peer sends (replication,
//! handoff, repair), a coordinator's quorum read, and `peek`.

use super::Node;
use crate::error::{Error, Result};
use crate::peer::{self, Entry};
use crate::store::Stored;

impl Node {
    /// Takes over entries sent by a peer; for each key the newer version wins.
    /// A batch over [`peer::MAX_ENTRIES`], or holding one version beyond the
    /// clock's horizon, is refused whole: nothing changes.
    pub fn absorb(&self, entries: Vec<Entry>) -> Result<usize> {
        self.admit_batch("absorb", &entries)?;
        let mut applied = 0;
        for entry in entries {
            self.clock.observe(entry.stored.version)?;
            if self.merge_copy(
                &entry.key,
                entry.stored.value.as_deref(),
                entry.stored.version,
            )? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Refuses a batch from a peer over [`peer::MAX_ENTRIES`] or holding an
    /// implausible version (see [`crate::version`]), before any is applied.
    pub(super) fn admit_batch(&self, what: &str, entries: &[Entry]) -> Result<()> {
        peer::within(what, entries.len(), peer::MAX_ENTRIES)?;
        for entry in entries {
            self.clock
                .admit(entry.stored.version)
                .map_err(|e| Error::Refused {
                    peer: self.me.to_string(),
                    message: format!(
                        "{what}: the entry for key {:?}: {e}; nothing was stored",
                        String::from_utf8_lossy(&entry.key)
                    ),
                })?;
        }
        Ok(())
    }

    /// Answers a coordinator's quorum read: our copy, whether we vouch for it
    /// (we hold the key in our ring, our ring is the caller's `ring`, and we
    /// trust our copies), and our ring id.
    pub fn replica_read(&self, key: &[u8], ring: u64) -> Result<(Option<Stored>, bool, u64)> {
        let copy = self.store.get(key)?;
        let (ours, holds) = {
            let view = self.view.read();
            let holds = view
                .ring
                .owners(key, self.config.replicas)
                .contains(&&self.me);
            (view.ring_id, holds)
        };
        let trusted = ours == ring && holds && self.trusts_itself();
        Ok((copy, trusted, ours))
    }

    /// Takes a coordinator's writes (the newer copy wins, as for `absorb`),
    /// and acknowledges them only if we route as the coordinator did. They
    /// are clients' writes, so each must fit under our `--max-memory`: those
    /// that do not are left out and the batch is refused as
    /// [`Error::Full`] (after the others were stored; see
    /// [`crate::capacity`]).
    pub fn replicate(&self, entries: Vec<Entry>, ring: u64) -> Result<()> {
        self.admit_batch("replicate", &entries)?;
        let mut full = None;
        for entry in entries {
            self.clock.observe(entry.stored.version)?;
            match self.store_capped(
                &entry.key,
                entry.stored.value.as_deref(),
                entry.stored.version,
            ) {
                Err(e @ Error::Full { .. }) => {
                    full.get_or_insert(e);
                }
                other => drop(other?),
            }
        }
        if let Some(full) = full {
            return Err(full);
        }
        if ring == self.ring_id() {
            Ok(())
        } else {
            Err(Error::Refused {
                peer: self.me.to_string(),
                message: "this node routes with another ring than the coordinator; \
                          retry once the ring settles"
                    .into(),
            })
        }
    }

    /// Our own copies of `keys`, tombstones included, with versions. A key
    /// named twice is served once; at most [`peer::MAX_KEYS`] keys, and a
    /// reply of at most [`crate::config::Config::max_reply_bytes`] (refused,
    /// not cut short, as soon as it would grow past that).
    pub fn peek(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Entry>> {
        peer::within("peek", keys.len(), peer::MAX_KEYS)?;
        let mut seen = std::collections::HashSet::new();
        let mut reply = peer::BoundedReply::new("peek", self.config.max_reply_bytes());
        for key in keys {
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Some(stored) = self.store.get(&key)? {
                reply.push(Entry::new(key, stored))?;
            }
        }
        Ok(reply.into_entries())
    }
}
