//! The local store: this node's share of the keys, versioned, with tombstones,
//! behind one [`Engine`] interface with two implementations.
//!
//! A delete is a write of "no value" (a tombstone) with a version, and the
//! tombstone is kept: a replica that was down may later offer an older copy of
//! the key, and [`Engine::merge`] must see that the delete is newer and refuse it.
//! Only [`Engine::remove_if`] forgets an entry, and only the exact version it was
//! told about: a handoff's sender once the new owner has the copy, and the
//! node's tombstone collector once no replica can offer an older copy any
//! more (`node::tombstones`). Both engines give the entry's memory or disk
//! space back and keep [`Usage`] exact.
//!
//! # Engines
//!
//! - `memory` (the default): 64 shards behind `parking_lot` locks, each an
//!   arena of records with a compact hash table of handles (about 1.3x the
//!   raw key and value bytes). Lost when the process exits.
//! - `disk` (`location --data-dir DIR`): the [fjall] LSM-tree storage engine. A
//!   write that returned `Ok` survives `kill -9`; with `sync` it also survives
//!   power loss.
//!
//! # Why fjall, not redb
//!
//! Both are pure-Rust, crash-safe and well kept. What decides it is the cost of
//! a write that must survive `kill -9`, at the ~50k writes/s a node serves:
//!
//! - fjall appends every write to a journal and, unless told otherwise, hands
//!   it to the OS (`PersistMode::Buffer`, one `write(2)`) before `insert`
//!   returns; `fsync` is a separate, optional `Database::persist` call. So the
//!   `kill -9` guarantee costs a syscall per write, and writers on different
//!   keys run concurrently.
//! - redb is a copy-on-write B-tree with one writer at a time. Its cheap commit,
//!   `Durability::None`, is kept only in the process's memory ("will not be
//!   persisted to disk unless followed by a commit with `Durability::Immediate`",
//!   redb 4.5 docs and source), so it is lost on `kill -9`. Every write would
//!   need `Durability::Immediate`, i.e. an `fsync` per commit with all writers
//!   serialised behind it, or a group-commit layer of our own on top.
//!
//! fjall's costs, accepted: its files are an LSM tree with background
//! compaction threads, and it has no exact key count, so the disk engine counts
//! live values, their bytes and tombstones once at open (a full scan) and
//! keeps the counts itself ([`Usage`]).
//!
//! # Listing order
//!
//! Keys are listed in one order on every node, whatever its engine, so a
//! client can merge the pages of several replicas and resume anywhere with a
//! cursor any node understands: by [`list_group`] (the top six bits of the
//! key's ring position, a value every node computes alike), then by the key's
//! bytes. [`list_position`] is that order as bytes, compared bytewise, and a
//! cursor is such a position: a page starts at the first key at or after it.
//! The memory engine keeps each group in a shard of its own, so a page costs
//! one shard's worth of work, never the whole store; the disk engine walks its
//! key-ordered tree once per group.
//!
//! [fjall]: https://docs.rs/fjall

mod disk;
mod memory;
mod ranges;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::ring::key_position;
use crate::version::Version;

/// Groups of the listing order (see the module doc): one per memory shard.
pub const LIST_GROUPS: usize = 64;

/// The listing group of `key`: the top six bits of its ring position.
pub fn list_group(key: &[u8]) -> u8 {
    group_at(key_position(key)) as u8
}

/// Bits of a ring position below its listing group.
const GROUP_SHIFT: u32 = 64 - LIST_GROUPS.trailing_zeros();

/// The listing group of a ring position (see [`list_group`]).
pub(crate) fn group_at(position: u64) -> usize {
    (position >> GROUP_SHIFT) as usize
}

/// The first ring position of listing group `group`.
fn group_start(group: usize) -> u64 {
    (group as u64) << GROUP_SHIFT
}

/// Where `key` sits in the listing order: its group, then its bytes.
pub fn list_position(key: &[u8]) -> Vec<u8> {
    cursor(usize::from(list_group(key)), key, false)
}

/// The smallest position after `key`'s: where a listing resumes once `key`
/// was listed.
pub fn list_position_after(key: &[u8]) -> Vec<u8> {
    cursor(usize::from(list_group(key)), key, true)
}

/// The position of `key` in `group` (a key of another group is just a
/// bound within it), or with `after` the smallest position past it: what
/// [`split_cursor`] splits.
fn cursor(group: usize, key: &[u8], after: bool) -> Vec<u8> {
    let mut position = Vec::with_capacity(2 + key.len());
    position.push(group as u8);
    position.extend_from_slice(key);
    if after {
        position.push(0);
    }
    position
}

/// A cursor split into the group it starts in and the smallest key of that
/// group it may list (an empty cursor starts at the very beginning).
fn split_cursor(from: &[u8]) -> (usize, &[u8]) {
    match from.split_first() {
        Some((&group, key)) => (usize::from(group), key),
        None => (0, &[]),
    }
}

/// One page of a listing (see [`Engine::list`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// (key, version, is_tombstone), in listing order.
    pub entries: Vec<(Vec<u8>, Version, bool)>,
    /// Where the next page starts; `None` once the listing reached the end.
    /// Every entry between the page's start and this position is in
    /// `entries`.
    pub next: Option<Vec<u8>>,
}

/// What a key held before a write changed it: the version and whether it
/// was a tombstone, or `None` if the key was absent.
pub type Held = Option<(Version, bool)>;

/// One stored entry: a value, or a tombstone (value `None`) marking a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The value's bytes, or `None` for a tombstone. An empty value is
    /// `Some(vec![])`, which is not a tombstone.
    pub value: Option<Vec<u8>>,
    /// The version of the write (or delete) that produced this entry.
    pub version: Version,
}

/// What a store holds, by its own exact count (kept up to date by every
/// write, never estimated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Entries holding a value (what [`Engine::len`] counts).
    pub values: usize,
    /// Key and value bytes of those entries (tombstones not counted, nor
    /// any engine overhead).
    pub bytes: u64,
    /// Entries that are tombstones.
    pub tombstones: usize,
}

impl Usage {
    /// The usage of one entry: `key` holding `value`, or a tombstone.
    pub fn of(key: &[u8], value: Option<&[u8]>) -> Usage {
        match value {
            Some(value) => Usage {
                values: 1,
                bytes: (key.len() + value.len()) as u64,
                tombstones: 0,
            },
            None => Usage {
                values: 0,
                bytes: 0,
                tombstones: 1,
            },
        }
    }

    fn add(&mut self, other: Usage) {
        self.values += other.values;
        self.bytes += other.bytes;
        self.tombstones += other.tombstones;
    }

    fn sub(&mut self, other: Usage) {
        self.values -= other.values;
        self.bytes -= other.bytes;
        self.tombstones -= other.tombstones;
    }
}

/// Where a node keeps its keys. Implementations are internally synchronised:
/// every method takes `&self` and may be called from many threads at once, and
/// each write is atomic with respect to the other writes to the same key.
pub trait Engine: Send + Sync + 'static {
    /// The entry at `key`: a value, a tombstone, or `None` if the key is unknown.
    fn get(&self, key: &[u8]) -> Result<Option<Stored>>;

    /// The length of the value at `key` without copying it: `None` for an
    /// unknown key or a tombstone (which an engine may report as 0). What a reply to a read will carry, known
    /// before the reply is made (the server reserves its budget with it).
    fn value_len(&self, key: &[u8]) -> Result<Option<usize>>;

    /// Applies (value, version) unless the key holds a version >= `version`
    /// (a value or a tombstone). Returns what the key held if applied, `None`
    /// if not. `position` is the key's [`key_position`], which the store has
    /// computed already (the writes below take it too).
    fn merge(
        &self,
        key: &[u8],
        position: u64,
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<Option<Held>>;

    /// Atomically: reads the current version (None if absent), asks `next` for
    /// the new version, writes. Returns it and what the key held. `next` is
    /// called exactly once, while the key is locked, so it must not call back
    /// into the store.
    fn overwrite(
        &self,
        key: &[u8],
        position: u64,
        value: Option<&[u8]>,
        next: &mut dyn FnMut(Option<Version>) -> Version,
    ) -> Result<(Version, Held)>;

    /// Deletes the entry (tombstone or value) only if it still holds exactly
    /// `version`. Returns whether the removed entry was a tombstone, `None`
    /// if nothing was removed. This forgets the key entirely, so use it only
    /// once no older copy can come back (after a handoff was acknowledged, or
    /// when a tombstone has been seen by every replica).
    fn remove_if(&self, key: &[u8], position: u64, version: Version) -> Result<Option<bool>>;

    /// Number of entries holding a value (tombstones not counted).
    fn len(&self) -> usize;

    /// Values, their key and value bytes, and tombstones, counted exactly:
    /// kept up to date by every write (the disk engine counts once at open).
    fn usage(&self) -> Usage;

    /// Visits every entry (key, version, is_tombstone) until `visit` returns
    /// false. May see a mix of before/after states for keys written
    /// concurrently, but never blocks writers for the whole scan; `visit` runs
    /// with no lock held, so it may read or write the store.
    fn scan(&self, visit: &mut dyn FnMut(&[u8], Version, bool) -> bool) -> Result<()>;

    /// [`Engine::scan`] of the entries of the listing groups ([`list_group`])
    /// whose bits are set in `groups`. The default scans everything and skips
    /// the rest.
    fn scan_groups(
        &self,
        groups: u64,
        visit: &mut dyn FnMut(&[u8], Version, bool) -> bool,
    ) -> Result<()> {
        self.scan(&mut |key, version, tombstone| {
            groups >> list_group(key) & 1 == 0 || visit(key, version, tombstone)
        })
    }

    /// Whether [`Engine::scan_groups`] of one group costs that group's share
    /// of a whole scan (rather than a whole scan).
    fn scans_groups_apart(&self) -> bool {
        false
    }

    /// A page of the entries (tombstones included) whose key starts with
    /// `prefix`, in listing order (module doc) from position `from` on: at
    /// most `limit` of them, and it stops early, with `next` set, once it has
    /// looked at `budget` entries, so one call never walks a whole large
    /// store. A `from` in the middle of a group that no longer holds the key
    /// it names simply resumes at the next key.
    fn list(&self, from: &[u8], prefix: &[u8], limit: usize, budget: usize) -> Result<Listed>;

    /// Records that the node runs with this store at `wall_micros` (wall
    /// time, microseconds since the epoch), for [`Engine::last_alive`]. Kept
    /// apart from the entries. The memory engine, whose entries do not
    /// outlive the process, records nothing.
    fn mark_alive(&self, wall_micros: u64) -> Result<()> {
        let _ = wall_micros;
        Ok(())
    }

    /// When a node last ran with this store, as [`Engine::mark_alive`]
    /// recorded it; `None` if never (or for the memory engine).
    fn last_alive(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// The node's store: an engine plus conveniences. Clones share the engine
/// (the simulation keeps a crashed node's store to restart it with).
///
/// The store also keeps the digests anti-entropy compares, by range of ring
/// position, up to date with every write (`ranges`, [`Store::range_digests`]).
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
    ranges: Arc<ranges::Ranges>,
    /// Writes applied (see [`Store::writes`]).
    writes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.engine.len())
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    /// An empty in-memory store, as [`Store::memory`].
    fn default() -> Self {
        Store::memory()
    }
}

impl Store {
    fn with(engine: Arc<dyn Engine>) -> Store {
        Store {
            engine,
            ranges: Arc::default(),
            writes: Arc::default(),
        }
    }

    /// An empty in-memory store (the default; lost when the process exits).
    pub fn memory() -> Store {
        Store::with(Arc::new(memory::Memory::new()))
    }

    /// An empty in-memory store whose scans visit keys in the same order in
    /// every run, for the deterministic simulation ([`crate::sim`]).
    pub fn memory_deterministic() -> Store {
        Store::with(Arc::new(memory::Memory::deterministic()))
    }

    /// The disk engine in `dir`, created if absent, recovered if present.
    ///
    /// Every write that returns `Ok` has reached the OS and survives the
    /// process being killed. With `sync`, it has also been `fdatasync`ed and
    /// survives power loss, at the price of a disk flush per write (concurrent
    /// writers share flushes). Fails with [`crate::Error::Storage`] if `dir`
    /// cannot be used or another process has it open.
    pub fn open(dir: &Path, sync: bool) -> Result<Store> {
        Ok(Store::with(Arc::new(disk::Disk::open(dir, sync)?)))
    }

    /// The entry at `key` (value or tombstone), if any. See [`Engine::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Stored>> {
        self.engine.get(key)
    }

    /// The length of the value at `key`, not copied. See [`Engine::value_len`].
    pub fn value_len(&self, key: &[u8]) -> Result<Option<usize>> {
        self.engine.value_len(key)
    }

    /// Stores `value` (`None`: a tombstone) unless the key already holds a
    /// version at least as new. Returns whether applied. See [`Engine::merge`].
    pub fn merge(&self, key: &[u8], value: Option<&[u8]>, version: Version) -> Result<bool> {
        let position = key_position(key);
        let gate = self.ranges.gate(position);
        let Some(held) = self.engine.merge(key, position, value, version)? else {
            return Ok(false);
        };
        gate.record(held, Some((version, value.is_none())));
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Stores `value` (`None`: a tombstone) with a version made by `next` from
    /// the version it replaces, atomically, so an overwrite always gets a
    /// larger version than the old copy. `next` runs under the key's lock.
    pub fn overwrite(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        next: impl FnOnce(Option<Version>) -> Version,
    ) -> Result<Version> {
        // The trait takes `FnMut` to stay object safe; engines call it once.
        let mut next = Some(next);
        let position = key_position(key);
        let gate = self.ranges.gate(position);
        let (version, held) = self.engine.overwrite(key, position, value, &mut |old| {
            let next = next.take().expect("engines call `next` exactly once");
            next(old)
        })?;
        gate.record(held, Some((version, value.is_none())));
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }

    /// Forgets `key` only if it still holds `version`: a handoff deletes what it
    /// sent, never a newer write that arrived meanwhile. See [`Engine::remove_if`].
    pub fn remove_if(&self, key: &[u8], version: Version) -> Result<bool> {
        let position = key_position(key);
        let gate = self.ranges.gate(position);
        let Some(tombstone) = self.engine.remove_if(key, position, version)? else {
            return Ok(false);
        };
        gate.record(Some((version, tombstone)), None);
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// How many writes (merges and overwrites applied, entries removed) the
    /// store has taken: a background pass that found nothing to do need not
    /// look again while this and the ring stay the same.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Number of keys holding a value (tombstones not counted).
    pub fn len(&self) -> usize {
        self.engine.len()
    }

    /// Whether no key holds a value (tombstones may remain).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values, their bytes and tombstones. See [`Engine::usage`].
    pub fn usage(&self) -> Usage {
        self.engine.usage()
    }

    /// The keys for which `pick` is true, tombstoned keys included, collected
    /// by [`Store::scan`] (so writers are never blocked for long).
    pub fn keys_where(&self, mut pick: impl FnMut(&[u8]) -> bool) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.scan(|key, _, _| {
            if pick(key) {
                keys.push(key.to_vec());
            }
            true
        })?;
        Ok(keys)
    }

    /// Visits every entry (key, version, is_tombstone) until `visit` returns
    /// false. See [`Engine::scan`].
    pub fn scan(&self, mut visit: impl FnMut(&[u8], Version, bool) -> bool) -> Result<()> {
        self.engine.scan(&mut visit)
    }

    /// [`Store::scan`] of the listing groups whose bits are set in `groups`.
    /// See [`Engine::scan_groups`].
    pub fn scan_groups(
        &self,
        groups: u64,
        mut visit: impl FnMut(&[u8], Version, bool) -> bool,
    ) -> Result<()> {
        self.engine.scan_groups(groups, &mut visit)
    }

    /// `(start, digest)` of ranges of ring position, in position order, cut
    /// at least at `cuts` (sorted and deduplicated positions, which must
    /// include every bucket start of [`crate::antientropy`]): each digest is
    /// the XOR of [`crate::antientropy::fingerprint_at`] of the entries from
    /// its start to the next range's, and ranges whose digest is 0 (empty
    /// ones) are left out. Kept up to date by every write; only cuts the
    /// store was never asked for cost a rescan (see `ranges`), and asking
    /// again with the same `Arc` checks nothing.
    pub fn range_digests(&self, cuts: &Arc<Vec<u64>>) -> Result<Vec<(u64, u64)>> {
        self.ranges.digests(&*self.engine, cuts)
    }

    /// Records that a node runs with this store now. See [`Engine::mark_alive`].
    pub fn mark_alive(&self, wall_micros: u64) -> Result<()> {
        self.engine.mark_alive(wall_micros)
    }

    /// When a node last ran with this store. See [`Engine::last_alive`].
    pub fn last_alive(&self) -> Result<Option<u64>> {
        self.engine.last_alive()
    }

    /// See [`Engine::list`].
    pub fn list(&self, from: &[u8], prefix: &[u8], limit: usize, budget: usize) -> Result<Listed> {
        self.engine.list(from, prefix, limit, budget)
    }
}
