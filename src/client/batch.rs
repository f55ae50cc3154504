//! [`Client::get_many`] and [`Client::put_many`]: many keys, one call per
//! owner.
//!
//! The keys are grouped by their owner in the ring the client last learned,
//! each group is sent to its owner as `fetch_many` / `store_many` calls of
//! at most [`BATCH_KEYS`] keys (and, for writes, about [`BATCH_BYTES`] of
//! values), and the owners are called at the same time, one thread each.
//! Whatever a batch cannot answer is done again key by key, the way
//! [`Client::get`] and [`Client::put`] do it (other replicas, then the entry
//! node): a batch to an owner that is down or older than batches, a value
//! too large for a batch reply, a streamed value. So a batch call gives the
//! same outcomes as a loop over the keys, in fewer round trips.

use std::collections::BTreeMap;

use super::{Client, moves_on};
use crate::addr::NodeAddr;
use crate::error::{Error, ErrorKind, Result};
use crate::stream;
use crate::wire::Conn;

/// The most keys of one `fetch_many` / `store_many` call the client sends.
pub const BATCH_KEYS: usize = 1_000;

/// About the most value bytes of one `store_many` call the client sends (a
/// single larger item goes alone).
pub const BATCH_BYTES: usize = 8 << 20;

/// One owner's share of a batch: the positions of its keys in the caller's
/// list, in order.
type Groups = BTreeMap<NodeAddr, Vec<usize>>;

/// What one owner's thread gives back: its connection and the positions
/// it answered.
type Done<R> = (NodeAddr, Conn, Vec<(usize, Result<R>)>);

impl Client {
    /// The values at `keys`, in the order given: `Ok(None)` for a key not
    /// stored, an error for a key that could not be read (the others still
    /// are). Each key is read as [`Client::get`] reads it, streamed values
    /// included; not a snapshot: a write landing meanwhile may be seen for
    /// one key and not for another.
    ///
    /// ```no_run
    /// let mut ring = thrifty_p2p::Client::connect("127.0.0.1:9900")?;
    /// for (key, value) in ["a", "b"].iter().zip(ring.get_many(&["a", "b"])) {
    ///     println!("{key}: {:?}", value?);
    /// }
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn get_many<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Vec<Result<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        let groups = self.by_owner(keys.iter().copied().enumerate());
        let batches = groups
            .into_iter()
            .map(|(owner, positions)| {
                let calls = positions
                    .chunks(BATCH_KEYS)
                    .map(|chunk| chunk.to_vec())
                    .collect();
                (owner, calls)
            })
            .collect();
        let answered = self.on_owners(batches, |conn, positions| {
            let asked: Vec<&[u8]> = positions.iter().map(|&i| keys[i]).collect();
            conn.fetch_many(&asked)
        });
        let mut outcomes: Vec<Option<Result<Option<Vec<u8>>>>> = Vec::new();
        outcomes.resize_with(keys.len(), || None);
        for (position, outcome) in answered {
            outcomes[position] = Some(outcome);
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| match outcome {
                Some(Err(e)) if again_alone(&e) => self.get(keys[i]),
                Some(outcome) => outcome,
                None => self.get(keys[i]),
            })
            .collect()
    }

    /// Stores each `(key, value)` of `items`, in the order given: one
    /// outcome per item. Each item is stored as [`Client::put`] stores it
    /// (acknowledged by a write quorum; a large value streamed) and stands
    /// alone: not atomic, so some items may be stored and others fail, and a
    /// reader may see some before the others. Of two items for one key, the
    /// later one wins.
    ///
    /// ```no_run
    /// let mut ring = thrifty_p2p::Client::connect("127.0.0.1:9900")?;
    /// let items = [("a", "apple"), ("b", "banana")];
    /// for outcome in ring.put_many(&items) {
    ///     outcome?;
    /// }
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        items: &[(K, V)],
    ) -> Vec<Result<()>> {
        let items: Vec<(&[u8], &[u8])> = items
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        let chunk = self.options.stream.chunk_bytes;
        // Of two items for one key only the last is written: what versions
        // taken in order would make of them anyway, and one owner's batch
        // then never races with another's for the same key.
        let mut last = BTreeMap::new();
        for (i, (key, _)) in items.iter().enumerate() {
            last.insert(*key, i);
        }
        let small = items.iter().enumerate().filter(|&(i, (key, value))| {
            last.get(key) == Some(&i) && value.len() <= chunk && !value.starts_with(&stream::MAGIC)
        });
        let groups = self.by_owner(small.map(|(i, (key, _))| (i, *key)));
        let batches = groups
            .into_iter()
            .map(|(owner, positions)| (owner, split_by_bytes(&positions, |i| items[i].1.len())))
            .collect();
        let answered = self.on_owners(batches, |conn, positions| {
            let asked: Vec<(&[u8], &[u8])> = positions.iter().map(|&i| items[i]).collect();
            conn.store_many(&asked)
        });
        let mut outcomes: Vec<Option<Result<()>>> = Vec::new();
        outcomes.resize_with(items.len(), || None);
        for (position, outcome) in answered {
            outcomes[position] = Some(outcome);
        }
        let mut outcomes: Vec<Result<()>> = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                let (key, value) = items[i];
                match outcome {
                    // Superseded by a later item of the same key: told below.
                    None if last.get(key) != Some(&i) => Ok(()),
                    Some(Err(e)) if again_alone(&e) => self.put(key, value),
                    Some(outcome) => outcome,
                    None => self.put(key, value),
                }
            })
            .collect();
        // An item superseded by a later one of its key shares its outcome.
        for (i, (key, _)) in items.iter().enumerate() {
            let last = last[key];
            if last != i
                && let Err(e) = &outcomes[last]
            {
                outcomes[i] = Err(Error::Remote {
                    peer: "this client".into(),
                    kind: e.kind(),
                    message: format!(
                        "a later item of the same key replaced this one and failed: {e}"
                    ),
                });
            }
        }
        outcomes
    }

    /// `keys` (with their positions) grouped by the owner this client
    /// would send each to first.
    fn by_owner<'k>(&mut self, keys: impl Iterator<Item = (usize, &'k [u8])>) -> Groups {
        let mut groups = Groups::new();
        for (position, key) in keys {
            let owner = self
                .candidates(key, false)
                .into_iter()
                .next()
                .unwrap_or_else(|| self.entry.clone());
            groups.entry(owner).or_default().push(position);
        }
        groups
    }

    /// Makes each owner's calls on its own connection, the owners at the
    /// same time (one thread each), and returns every position answered.
    /// A call that fails as a whole answers none of its positions: the
    /// caller does those one by one.
    fn on_owners<R: Send>(
        &mut self,
        batches: Vec<(NodeAddr, Vec<Vec<usize>>)>,
        call: impl Fn(&mut Conn, &[usize]) -> Result<Vec<Result<R>>> + Sync,
    ) -> Vec<(usize, Result<R>)> {
        let mut work = Vec::new();
        for (owner, calls) in batches {
            let conn = match self.conns.remove(&owner) {
                Some(conn) => Some(conn),
                None => Conn::open(&owner, &self.options).ok(),
            };
            if let Some(conn) = conn {
                work.push((owner, conn, calls));
            }
        }
        let call = &call;
        let done: Vec<Done<R>> = std::thread::scope(|scope| {
            let threads: Vec<_> = work
                .into_iter()
                .map(|(owner, mut conn, calls)| {
                    scope.spawn(move || {
                        let mut answered = Vec::new();
                        for positions in calls {
                            match call(&mut conn, &positions) {
                                Ok(outcomes) => {
                                    answered.extend(positions.into_iter().zip(outcomes))
                                }
                                Err(e) => {
                                    log::debug!("a batch to {owner} failed ({e}): key by key");
                                    if conn.is_broken() {
                                        break;
                                    }
                                }
                            }
                        }
                        (owner, conn, answered)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("a batch thread panicked"))
                .collect()
        });
        let mut answered = Vec::new();
        for (owner, conn, outcomes) in done {
            if !conn.is_broken() {
                self.conns.insert(owner, conn);
            }
            answered.extend(outcomes);
        }
        answered
    }
}

/// Whether one key's answer in a batch means "ask for this key alone":
/// its value did not fit the batch's reply, it is streamed, or its owner
/// could not serve it where another replica might.
fn again_alone(error: &crate::Error) -> bool {
    matches!(error.kind(), ErrorKind::TooLarge | ErrorKind::Streamed) || moves_on(error)
}

/// `positions` cut into calls of at most [`BATCH_KEYS`] items and about
/// [`BATCH_BYTES`] of values each (`size` gives an item's value size).
fn split_by_bytes(positions: &[usize], size: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &position in positions {
        let full = calls
            .last()
            .is_none_or(|call| call.len() >= BATCH_KEYS || bytes + size(position) > BATCH_BYTES);
        if full {
            calls.push(Vec::new());
            bytes = 0;
        }
        bytes += size(position);
        calls.last_mut().expect("pushed above").push(position);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_at_most_batch_keys_and_about_batch_bytes() {
        let positions: Vec<usize> = (0..2_500).collect();
        let calls = split_by_bytes(&positions, |_| 10);
        let lens: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![1_000, 1_000, 500]);
        let calls = split_by_bytes(&[0, 1, 2, 3], |_| BATCH_BYTES / 2);
        assert_eq!(calls, vec![vec![0, 1], vec![2, 3]]);
        // An item larger than a call goes alone.
        let calls = split_by_bytes(&[0, 1, 2], |i| if i == 1 { BATCH_BYTES * 2 } else { 1 });
        assert_eq!(calls, vec![vec![0], vec![1], vec![2]]);
        assert!(split_by_bytes(&[], |_| 1).is_empty());
    }
}
