//! The disk engine: entries in one fjall keyspace under `--data-dir`.
//!
//! fjall writes each insert to its journal and hands it to the OS before
//! returning (the keyspace option `manual_journal_persist(false)`), so a write
//! that returned `Ok` survives `kill -9`; the crash test below fails if that
//! option is flipped. With `sync`, each write also waits for an
//! `fdatasync` of the journal; writers that arrive while one is running share
//! the next one (group commit), so concurrent writers do not pay one flush each.
//!
//! Trade-off of `sync`: without it, an OS crash or power loss can drop the
//! writes the kernel had not yet written back (up to ~30 s of them with
//! Linux defaults), which replication must repair from the other replicas; with it, every
//! write waits for the disk. Measured on the 2-core development VM (release,
//! 100-byte values, `disk_write_figures` below): without `sync` about 3-5 µs
//! per write on one thread and 120-195k writes/s on four; with `sync`
//! 0.15-2.6 ms per write (the VM's fsync latency varies that much) and
//! 700-9,000 writes/s on four threads, which share flushes.
//!
//! fjall's transactional databases would make read-modify-write atomic, but
//! the single-writer one serialises all writers and the optimistic one makes
//! them retry on conflict; instead each key maps to one of a fixed set of
//! stripe locks held across the read and the write. This process
//! is the only writer (fjall locks the directory), so that makes each
//! operation atomic per key while writers to other keys proceed.
//!
//! On-disk layout: the fjall key is `0 | key` (fjall refuses empty keys); the
//! fjall value is `tag (1) | stamp (8, BE) | origin (4, BE) | value`, tag 1 for
//! a value, tag 0 for a tombstone (with no bytes after the header). Keys are
//! limited to 65534 bytes and values to 4 GiB less 13 bytes.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::Mutex;

use super::{Engine, Held, LIST_GROUPS, Listed, Stored, Usage, cursor, split_cursor};
use crate::error::{Error, Result};
use crate::version::Version;

/// Stripe locks: many more than cores, so two writers rarely share one.
const STRIPES: usize = 256;
/// Entries copied out per step of a scan; each step reads a fresh snapshot,
/// so a long scan does not pin old data in the LSM tree.
const SCAN_BATCH: usize = 1024;
const HEADER: usize = 13;
const TAG_VALUE: u8 = 1;
const TAG_TOMBSTONE: u8 = 0;
/// The one keyspace (fjall's name for a table) holding the entries.
const KEYSPACE: &str = "entries";
/// First byte of every fjall key that holds an entry (see [`stored_key`]).
/// Other first bytes are free for other kinds of record later.
const KEY_PREFIX: u8 = 0;
/// The fjall key of the record saying when a node last ran with this
/// directory ([`Engine::mark_alive`]): wall microseconds, 8 bytes BE. Its
/// first byte is not [`KEY_PREFIX`], so scans and listings never see it.
const ALIVE_KEY: &[u8] = &[1, b'a'];
/// fjall's key limit, less the prefix byte.
const MAX_KEY: usize = u16::MAX as usize - 1;
/// fjall's value limit, less the header.
const MAX_VALUE: usize = u32::MAX as usize - HEADER;

/// The disk engine.
pub(super) struct Disk {
    // Field order is drop order: the keyspace handle goes before the database.
    entries: Keyspace,
    db: Database,
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
    /// Entries holding a value: fjall only estimates its length.
    values: AtomicUsize,
    /// Key and value bytes of those entries.
    bytes: AtomicU64,
    /// Entries that are tombstones.
    tombstones: AtomicUsize,
    /// `Some` when every write must be fsynced before it returns.
    sync: Option<GroupSync>,
}

/// Group commit for `sync`: each write takes a ticket once it is in the
/// journal; a flush covers every ticket issued before it started, so a writer
/// whose ticket is covered by a flush that already finished returns at once.
struct GroupSync {
    issued: AtomicU64,
    /// The highest ticket known to be on disk; held while flushing.
    flushed: Mutex<u64>,
}

impl Disk {
    pub(super) fn open(dir: &Path, sync: bool) -> Result<Disk> {
        let db = Database::builder(dir)
            .open()
            .map_err(|e| open_error(dir, &e))?;
        let entries = db
            // Spelled out though it is the default: this is what makes each
            // write reach the OS before `insert` returns.
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().manual_journal_persist(false)
            })
            .map_err(|e| open_error(dir, &e))?;
        let disk = Disk {
            entries,
            db,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            values: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            tombstones: AtomicUsize::new(0),
            sync: sync.then(|| GroupSync {
                issued: AtomicU64::new(0),
                flushed: Mutex::new(0),
            }),
        };
        // Counted once, here; every write keeps the counts from then on.
        let mut usage = Usage::default();
        disk.walk(&mut |key, _, tombstone, value_len| {
            usage.add(if tombstone {
                Usage::of(key, None)
            } else {
                Usage {
                    values: 1,
                    bytes: (key.len() + value_len) as u64,
                    tombstones: 0,
                }
            });
            true
        })?;
        disk.count(usage, true);
        Ok(disk)
    }

    /// Adds (`more`) or takes away `usage` from the counts.
    fn count(&self, usage: Usage, more: bool) {
        let Usage {
            values,
            bytes,
            tombstones,
        } = usage;
        if more {
            self.values.fetch_add(values, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.tombstones.fetch_add(tombstones, Ordering::Relaxed);
        } else {
            self.values.fetch_sub(values, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.tombstones.fetch_sub(tombstones, Ordering::Relaxed);
        }
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    /// The entry under `stored` (a key from [`stored_key`]).
    fn read(&self, stored: &[u8]) -> Result<Option<Stored>> {
        let Some(bytes) = self.entries.get(stored).map_err(storage)? else {
            return Ok(None);
        };
        let (version, tombstone) = decode(stored, &bytes)?;
        Ok(Some(Stored {
            value: (!tombstone).then(|| bytes[HEADER..].to_vec()),
            version,
        }))
    }

    /// Writes the entry; the caller holds the key's stripe and passes what the
    /// key held before, so the value count stays exact.
    fn write(
        &self,
        stored: &[u8],
        value: Option<&[u8]>,
        version: Version,
        old: Option<&Stored>,
    ) -> Result<()> {
        self.entries
            .insert(stored, encode(value, version)?)
            .map_err(storage)?;
        let key = &stored[1..];
        if let Some(old) = old {
            self.count(Usage::of(key, old.value.as_deref()), false);
        }
        self.count(Usage::of(key, value), true);
        Ok(())
    }

    /// Returns once every write this thread finished is on disk, if `sync`.
    /// Called after the stripe is released, so the flush does not hold up
    /// other writers of the same stripe.
    fn flushed(&self) -> Result<()> {
        let Some(sync) = &self.sync else {
            return Ok(());
        };
        let ticket = sync.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = sync.flushed.lock();
        if *flushed >= ticket {
            return Ok(());
        }
        // Every ticket up to `covers` belongs to a write already in the
        // journal, which the flush below therefore includes.
        let covers = sync.issued.load(Ordering::SeqCst);
        self.db.persist(PersistMode::SyncData).map_err(storage)?;
        *flushed = covers;
        Ok(())
    }
}

impl Engine for Disk {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>> {
        match stored_key(key) {
            Ok(stored) => self.read(&stored),
            // Too long to have been stored.
            Err(_) => Ok(None),
        }
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<usize>> {
        let Ok(stored) = stored_key(key) else {
            return Ok(None);
        };
        // A tombstone is a header alone; its length says nothing worth more
        // than the read a precise answer would cost.
        let size = self.entries.size_of(&stored).map_err(storage)?;
        Ok(size.and_then(|size| (size as usize).checked_sub(HEADER)))
    }

    fn merge(
        &self,
        key: &[u8],
        _position: u64,
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<Option<Held>> {
        let stored = stored_key(key)?;
        let held = {
            let _stripe = self.stripe(key).lock();
            let old = self.read(&stored)?;
            if old.as_ref().is_some_and(|old| old.version >= version) {
                return Ok(None);
            }
            self.write(&stored, value, version, old.as_ref())?;
            held(old.as_ref())
        };
        self.flushed()?;
        Ok(Some(held))
    }

    fn overwrite(
        &self,
        key: &[u8],
        _position: u64,
        value: Option<&[u8]>,
        next: &mut dyn FnMut(Option<Version>) -> Version,
    ) -> Result<(Version, Held)> {
        let stored = stored_key(key)?;
        let written = {
            let _stripe = self.stripe(key).lock();
            let old = self.read(&stored)?;
            let version = next(old.as_ref().map(|old| old.version));
            self.write(&stored, value, version, old.as_ref())?;
            (version, held(old.as_ref()))
        };
        self.flushed()?;
        Ok(written)
    }

    fn remove_if(&self, key: &[u8], _position: u64, version: Version) -> Result<Option<bool>> {
        let Ok(stored) = stored_key(key) else {
            return Ok(None);
        };
        let tombstone = {
            let _stripe = self.stripe(key).lock();
            let Some(old) = self.read(&stored)? else {
                return Ok(None);
            };
            if old.version != version {
                return Ok(None);
            }
            self.entries.remove(&stored).map_err(storage)?;
            self.count(Usage::of(&stored[1..], old.value.as_deref()), false);
            old.value.is_none()
        };
        self.flushed()?;
        Ok(Some(tombstone))
    }

    fn len(&self) -> usize {
        self.values.load(Ordering::Relaxed)
    }

    fn mark_alive(&self, wall_micros: u64) -> Result<()> {
        self.entries
            .insert(ALIVE_KEY, wall_micros.to_be_bytes())
            .map_err(storage)?;
        // Not flushed even with `sync`: a mark a few seconds old is as good.
        Ok(())
    }

    fn last_alive(&self) -> Result<Option<u64>> {
        let Some(bytes) = self.entries.get(ALIVE_KEY).map_err(storage)? else {
            return Ok(None);
        };
        let micros: [u8; 8] = bytes[..].try_into().map_err(|_| {
            Error::Storage(
                "the record of when this directory was last used is not in this program's format"
                    .into(),
            )
        })?;
        Ok(Some(u64::from_be_bytes(micros)))
    }

    fn usage(&self) -> Usage {
        Usage {
            values: self.values.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            tombstones: self.tombstones.load(Ordering::Relaxed),
        }
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], Version, bool) -> bool) -> Result<()> {
        self.walk(&mut |key, version, tombstone, _| visit(key, version, tombstone))
    }

    fn list(&self, from: &[u8], prefix: &[u8], limit: usize, budget: usize) -> Result<Listed> {
        // The tree is in key order, not listing order: walk the keys with
        // `prefix` once per group, from the cursor's key in its first group,
        // keeping that group's. Batches from fresh iterators, as `walk` does.
        let (first, floor) = split_cursor(from);
        let mut listed = Listed::default();
        let mut looked = 0;
        // The first stored key past every key with `prefix`.
        let mut end = stored_key(prefix)?;
        let end = match end.iter().rposition(|&b| b != u8::MAX) {
            Some(at) => {
                end.truncate(at + 1);
                end[at] += 1;
                Bound::Excluded(end)
            }
            None => Bound::Unbounded,
        };
        for group in first..LIST_GROUPS {
            let floor = if group == first {
                floor.max(prefix)
            } else {
                prefix
            };
            let mut start = Bound::Included(stored_key(floor)?);
            loop {
                if listed.entries.len() == limit || looked >= budget {
                    // Resume in this group, after the last key looked at.
                    listed.next = Some(match &start {
                        Bound::Excluded(stored) => cursor(group, &stored[1..], true),
                        Bound::Included(stored) => cursor(group, &stored[1..], false),
                        Bound::Unbounded => cursor(group, &[], false),
                    });
                    return Ok(listed);
                }
                let mut batch = Vec::with_capacity(SCAN_BATCH);
                for guard in self
                    .entries
                    .range((start.clone(), end.clone()))
                    .take(SCAN_BATCH)
                {
                    let (stored, bytes) = guard.into_inner().map_err(storage)?;
                    batch.push((stored, bytes));
                }
                let mut last = None;
                for (stored, bytes) in &batch {
                    looked += 1;
                    last = Some(stored);
                    let key = &stored[1..];
                    if usize::from(super::list_group(key)) == group {
                        let (version, tombstone) = decode(stored, bytes)?;
                        listed.entries.push((key.to_vec(), version, tombstone));
                    }
                    if listed.entries.len() == limit || looked >= budget {
                        break;
                    }
                }
                match last {
                    Some(stored) => start = Bound::Excluded(stored.to_vec()),
                    None => break,
                }
                if batch.len() < SCAN_BATCH && listed.entries.len() < limit && looked < budget {
                    break;
                }
            }
        }
        Ok(listed)
    }
}

/// What [`Disk::walk`] calls for each entry: key, version, is_tombstone and
/// the value's length; returns whether to go on.
type Walker<'a> = dyn FnMut(&[u8], Version, bool, usize) -> bool + 'a;

impl Disk {
    /// [`Engine::scan`], also telling each value's length.
    fn walk(&self, visit: &mut Walker<'_>) -> Result<()> {
        // In batches, each from a fresh iterator starting after the last key
        // seen, and visited after the iterator is dropped: fjall iterators
        // never block writers, but a long-lived one pins a snapshot.
        let mut start = Bound::Included(vec![KEY_PREFIX]);
        let end = Bound::Excluded(vec![KEY_PREFIX + 1]);
        let mut batch = Vec::with_capacity(SCAN_BATCH);
        loop {
            batch.clear();
            for guard in self.entries.range((start, end.clone())).take(SCAN_BATCH) {
                let (stored, bytes) = guard.into_inner().map_err(storage)?;
                let (version, tombstone) = decode(&stored, &bytes)?;
                batch.push((stored, version, tombstone, bytes.len() - HEADER));
            }
            for (stored, version, tombstone, value_len) in &batch {
                if !visit(&stored[1..], *version, *tombstone, *value_len) {
                    return Ok(());
                }
            }
            match batch.last() {
                Some((stored, _, _, _)) if batch.len() == SCAN_BATCH => {
                    start = Bound::Excluded(stored.to_vec());
                }
                _ => return Ok(()),
            }
        }
    }
}

/// The fjall key for `key`. fjall refuses empty keys and keys over 65535
/// bytes (it panics), so every key gets a one-byte prefix, and longer keys
/// are refused here.
/// What `old` (an entry read before a write) held, as [`Held`].
fn held(old: Option<&Stored>) -> Held {
    old.map(|old| (old.version, old.value.is_none()))
}

fn stored_key(key: &[u8]) -> Result<Vec<u8>> {
    if key.len() > MAX_KEY {
        return Err(Error::Storage(format!(
            "a key of {} bytes exceeds the disk engine's limit of {MAX_KEY} bytes (nothing was stored)",
            key.len()
        )));
    }
    let mut stored = Vec::with_capacity(1 + key.len());
    stored.push(KEY_PREFIX);
    stored.extend_from_slice(key);
    Ok(stored)
}

fn encode(value: Option<&[u8]>, version: Version) -> Result<Vec<u8>> {
    let body = value.unwrap_or_default();
    if body.len() > MAX_VALUE {
        return Err(Error::Storage(format!(
            "a value of {} bytes exceeds the disk engine's limit of {MAX_VALUE} bytes (nothing was stored)",
            body.len()
        )));
    }
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.push(if value.is_some() {
        TAG_VALUE
    } else {
        TAG_TOMBSTONE
    });
    bytes.extend_from_slice(&version.stamp.to_be_bytes());
    bytes.extend_from_slice(&version.origin.to_be_bytes());
    bytes.extend_from_slice(body);
    Ok(bytes)
}

/// The version and tombstone flag of the entry under `stored`.
fn decode(stored: &[u8], bytes: &[u8]) -> Result<(Version, bool)> {
    let corrupt = || {
        Error::Storage(format!(
            "the entry under {:?} is not in this program's format",
            String::from_utf8_lossy(stored)
        ))
    };
    let header = bytes.get(..HEADER).ok_or_else(corrupt)?;
    let tombstone = match header[0] {
        TAG_VALUE => false,
        TAG_TOMBSTONE if bytes.len() == HEADER => true,
        _ => return Err(corrupt()),
    };
    let mut stamp = [0; 8];
    stamp.copy_from_slice(&header[1..9]);
    let mut origin = [0; 4];
    origin.copy_from_slice(&header[9..13]);
    let version = Version {
        stamp: u64::from_be_bytes(stamp),
        origin: u32::from_be_bytes(origin),
    };
    Ok((version, tombstone))
}

fn storage(error: fjall::Error) -> Error {
    Error::Storage(describe(&error))
}

fn open_error(dir: &Path, error: &fjall::Error) -> Error {
    let dir = dir.display();
    Error::Storage(match error {
        fjall::Error::Locked => {
            format!("{dir} is in use by another process; stop it or choose another directory")
        }
        _ => format!("cannot open {dir}: {}", describe(error)),
    })
}

/// fjall's `Display` is its `Debug`; say I/O errors the usual way.
fn describe(error: &fjall::Error) -> String {
    match error {
        fjall::Error::Io(io) => io.to_string(),
        fjall::Error::Poisoned => {
            "an earlier write to the journal failed, so the engine refuses writes; restart the node"
                .to_string()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use crate::store::Store;
    use crate::version::Version;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 7 }
    }

    #[test]
    fn reopening_keeps_values_tombstones_and_the_count() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            for i in 0..100u32 {
                store.merge(&i.to_be_bytes(), Some(b"x"), v(1)).unwrap();
            }
            store.merge(&0u32.to_be_bytes(), None, v(2)).unwrap();
            store.remove_if(&1u32.to_be_bytes(), v(1)).unwrap();
            store.overwrite(b"empty", Some(b""), |_| v(3)).unwrap();
        }
        let store = Store::open(dir.path(), false).unwrap();
        assert_eq!(store.len(), 99);
        assert_eq!(store.get(&0u32.to_be_bytes()).unwrap().unwrap().value, None);
        assert_eq!(store.get(&1u32.to_be_bytes()).unwrap(), None);
        assert_eq!(
            store.get(&2u32.to_be_bytes()).unwrap().unwrap().version,
            v(1)
        );
        assert_eq!(store.get(b"empty").unwrap().unwrap().value, Some(vec![]));
        assert!(!store.merge(&0u32.to_be_bytes(), Some(b"x"), v(1)).unwrap());
        assert_eq!(store.keys_where(|_| true).unwrap().len(), 100);
    }

    #[test]
    fn when_a_node_last_ran_is_kept_apart_from_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            assert_eq!(store.last_alive().unwrap(), None);
            store.merge(b"k", Some(b"x"), v(1)).unwrap();
            store.mark_alive(1_000).unwrap();
            store.mark_alive(2_000).unwrap();
        }
        let store = Store::open(dir.path(), false).unwrap();
        assert_eq!(store.last_alive().unwrap(), Some(2_000));
        // Not an entry: not counted, scanned or listed.
        assert_eq!(store.len(), 1);
        assert_eq!(store.usage().tombstones, 0);
        assert_eq!(store.keys_where(|_| true).unwrap(), vec![b"k".to_vec()]);
        let listed = store.list(&[], &[], 100, 1000).unwrap();
        assert_eq!(listed.entries.len(), 1);
    }

    #[test]
    fn synced_writes_from_four_threads_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), true).unwrap();
            std::thread::scope(|scope| {
                for thread in 0..4u32 {
                    let store = &store;
                    scope.spawn(move || {
                        for i in 0..25u32 {
                            let key = [thread.to_be_bytes(), i.to_be_bytes()].concat();
                            store.merge(&key, Some(b"x"), v(1)).unwrap();
                        }
                    });
                }
            });
        }
        assert_eq!(Store::open(dir.path(), true).unwrap().len(), 100);
    }

    #[test]
    fn a_directory_in_use_by_another_store_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), false).unwrap();
        let error = Store::open(dir.path(), false).unwrap_err().to_string();
        assert!(error.contains("in use by another process"), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }

    #[test]
    fn an_unusable_directory_is_refused_clearly() {
        // A path below a regular file: unusable even for root, unlike a
        // directory without write permission.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let error = Store::open(&file.join("data"), false)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("storage failed: cannot open"), "{error}");
        assert!(error.contains("a-file"), "{error}");
    }

    #[test]
    fn a_key_too_long_for_fjall_is_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let longest = vec![b'k'; super::MAX_KEY];
        assert!(store.merge(&longest, Some(b"x"), v(1)).unwrap());
        let too_long = vec![b'k'; super::MAX_KEY + 1];
        let error = store.merge(&too_long, Some(b"x"), v(1)).unwrap_err();
        assert!(error.to_string().contains("exceeds"), "{error}");
        assert_eq!(store.get(&too_long).unwrap(), None);
        assert!(!store.remove_if(&too_long, v(1)).unwrap());
        assert_eq!(store.len(), 1);
    }

    /// Tells the child half of the crash test where to write.
    const CRASH_DIR: &str = "THRIFTY_P2P_STORE_CRASH_DIR";

    fn crash_value(i: u64) -> Vec<u8> {
        format!("value of key {i}").into_bytes()
    }

    /// The child half of `every_write_that_returned_survives_sigkill`.
    #[test]
    #[ignore = "run by every_write_that_returned_survives_sigkill, in a child process"]
    fn crash_child_writes_until_killed() {
        let Some(dir) = std::env::var_os(CRASH_DIR) else {
            return;
        };
        let store = Store::open(std::path::Path::new(&dir), false).unwrap();
        // Not `println!`: the test harness may capture that.
        let mut out = std::io::stdout().lock();
        // Bounded, so an orphaned child stops by itself.
        for i in 0..1_000_000u64 {
            let key = i.to_be_bytes();
            store.merge(&key, Some(&crash_value(i)), v(i + 1)).unwrap();
            // Every fifth key is deleted again, through the other write path.
            if i % 5 == 4 {
                store
                    .overwrite(&key, None, |old| v(old.unwrap().stamp + 1))
                    .unwrap();
                writeln!(out, "deleted {i}").unwrap();
            } else {
                writeln!(out, "wrote {i}").unwrap();
            }
            out.flush().unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn every_write_that_returned_survives_sigkill() {
        use std::os::unix::process::ExitStatusExt;

        let dir = tempfile::tempdir().unwrap();
        let (_, module) = module_path!().split_once("::").unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(format!("{module}::crash_child_writes_until_killed"))
            .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let mut record = |line: &str| {
            if let Some(i) = line.strip_prefix("wrote ") {
                printed.push((i.parse::<u64>().unwrap(), false));
            } else if let Some(i) = line.strip_prefix("deleted ") {
                printed.push((i.parse::<u64>().unwrap(), true));
            }
        };
        // Wait for the child to be well into its stream, then kill it while
        // it keeps writing.
        let mut seen = 0;
        while seen < 3000 {
            let line = lines
                .next()
                .expect("the child stopped before it was killed")
                .unwrap();
            seen += usize::from(line.starts_with("wrote ") || line.starts_with("deleted "));
            record(&line);
        }
        child.kill().unwrap(); // SIGKILL on Unix
        // Lines printed before it died count too: their writes had returned.
        for line in lines {
            record(&line.unwrap());
        }
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the child must die by SIGKILL");

        let store = Store::open(dir.path(), false).unwrap();
        for &(i, deleted) in &printed {
            let stored = store.get(&i.to_be_bytes()).unwrap();
            let stored = stored.unwrap_or_else(|| panic!("key {i} was lost"));
            if deleted {
                assert_eq!(stored.value, None, "key {i}");
                assert_eq!(stored.version, v(i + 2), "key {i}");
            } else {
                assert_eq!(stored.value, Some(crash_value(i)), "key {i}");
            }
        }
        assert!(printed.len() >= 3000);
    }

    /// Prints write latency and throughput; run in release:
    /// `cargo test --release --lib disk_write_figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn disk_write_figures() {
        for (sync, single, threaded) in [(false, 200_000u64, 400_000u64), (true, 2_000, 8_000)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), sync).unwrap();
            let value = [7u8; 100];
            let start = Instant::now();
            for i in 0..single {
                store.merge(&i.to_be_bytes(), Some(&value), v(1)).unwrap();
            }
            let each = start.elapsed() / single as u32;
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..4u64 {
                    let store = &store;
                    scope.spawn(move || {
                        for i in 0..threaded / 4 {
                            let key = (1 << 40 | thread << 32 | i).to_be_bytes();
                            store.merge(&key, Some(&value), v(1)).unwrap();
                        }
                    });
                }
            });
            let rate = threaded as f64 / start.elapsed().as_secs_f64();
            println!(
                "sync={sync}: {each:?} per write on one thread; {rate:.0} writes/s on four threads"
            );
        }
    }
}
