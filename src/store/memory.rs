//! The in-memory engine: per shard, an arena of packed records and a hash
//! table of 4-byte handles into it.
//!
//! # Layout
//!
//! Keys are spread over [`SHARDS`] shards by their listing group (the top
//! bits of their ring position, see the parent module's "Listing order"), so a
//! page of a listing reads one shard; each shard is behind a
//! `parking_lot` read-write lock: operations are short and never await, so a
//! blocking lock held for a few hundred nanoseconds is cheaper than an async
//! one, and sharding keeps cores from contending. The lock guards everything in
//! its shard:
//!
//! - an arena of pages, 32 KiB each ([`PAGE`]), into which records are
//!   appended back to back: `flags u8 | origin u8 | stamp u64 | [origin
//!   u32] | [key_len varint] | [value_len varint] | key | value`,
//!   little-endian. The flags hold a dead bit (replaced or removed), a
//!   tombstone bit (no value length follows) and the key's length if under
//!   31 (else 31, and a varint follows). The origin byte numbers the origin
//!   in the shard's list of origins ([`Arena::origins`], at most 255), or is
//!   255 and the origin follows the stamp in full. A dead filler (the rest
//!   of a record rewritten shorter) is a flag byte with its length, and a
//!   `u32` of it from 31 bytes on, so any gap of a byte or more can be
//!   filled. A record over [`LARGE`] gets a page of its own, so no page ends
//!   in much unused space.
//! - a [`Table`] of [`Handle`]s, each a page number and an offset in a
//!   `u32`, with a control byte per slot as in hashbrown. It holds neither
//!   keys nor hashes: a lookup compares the key in the record, and a resize
//!   rehashes keys read from the arena.
//!
//! # Why
//!
//! Memory is the constraint: a node may hold millions of small values. The
//! engine before this one gave each entry its own allocation and kept its
//! 16-byte pointer in a std `HashSet`: 1.64x the raw bytes for a million
//! 10-byte keys with 100-byte values. The arena and a hashbrown table of
//! handles brought that to 1.30x, but still spent a 20-byte header on every
//! record (17% of a 16-byte key with a 100-byte value) and a table that
//! doubles: at a million keys each shard's 15,625 had just passed 7/8 of
//! 16,384 buckets, so every table sat at 48% load, 10.5 bytes per entry.
//! storebench's node held 1,000,000 such entries in 153 MiB, 1.39x.
//!
//! - The header is 11 bytes for such an entry: lengths under 31 and 128 fit
//!   the flags and one varint byte; the version cannot shrink, since a
//!   stamp is wall microseconds shifted 10 bits (61 bits today, and any
//!   value up to `u64::MAX` must round-trip), but the origin, a hash of the
//!   writing node's address, takes one of few values per shard, so a byte
//!   numbers it. The header's length depends only on the lengths and on
//!   whether the origin is numbered, never on the stamp, so an overwrite of
//!   the same size still fits in place; a stamp stored relative to a base
//!   would save a byte or two but grow as time passes, and turn those
//!   overwrites into appends and garbage.
//! - The table has any number of groups of 8 slots rather than a power of
//!   two, and grows by a quarter once 7/8 full, so its load stays between
//!   70% and 87.5% at every size (5.7 to 7.1 bytes per entry), where a
//!   doubling table swings between 44% and 87.5%. The price is rehashing
//!   each key about four times over a table's growth instead of once.
//!
//! Measured with storebench's node (`storebench --only memory
//! --memory-keys N`, 16-byte keys, 100-byte values), resident bytes per
//! entry less the empty node's: 300,000 keys 164 before, 154 after (the
//! node's fixed costs weigh most here); 1,000,000 keys 153, 142 (1.39x to
//! 1.28x raw in all); 3,000,000 keys 146, 139 (1.27x to 1.22x).
//!
//! Nor is it slower (`nanoseconds_per_operation_at_a_million_keys` below): a
//! write copies into a page instead of allocating, an overwrite of the same
//! size rewrites the record in place. The shard is chosen by the key's MD5
//! ring position, which clients can aim at one shard: that only makes them
//! share a lock, since each table hashes with a SipHash key of this
//! process's own.
//!
//! # Garbage
//!
//! An overwrite whose record is no longer than the old one is written over
//! it, the rest of the old record becoming a dead filler. Otherwise the new record is appended and the old one marked dead,
//! as `remove_if` marks it. Pages count their dead bytes, and a shard those of
//! its sealed pages (all but the one taking appends). A page whose records
//! all died is freed at once. Once more than a quarter of the sealed bytes are
//! dead ([`DEAD_SHARE`]), the deadest sealed page is compacted: its live
//! records are copied to the page taking appends, their handles re-pointed
//! (found by rehashing their keys), and the page is freed; again until under
//! a quarter. So a shard's arena holds at most 4/3 of its live bytes plus one
//! page, and one compaction, under the shard's write lock, copies at most
//! three quarters of a page. A shard left with no key drops its arena.
//!
//! # Limits
//!
//! A handle has 17 bits of page number, so a shard holds at most 131,072
//! pages (4 GiB of small records, or as many large ones); past that, writes
//! fail with [`Error::Storage`]. Keys must be under 2 GiB, values under 4 GiB.

use std::hash::{BuildHasher, DefaultHasher, RandomState};

use parking_lot::RwLock;

use super::{Engine, Held, Listed, Stored, Usage, cursor, split_cursor};
use crate::error::{Error, Result};
use crate::ring::key_position;
use crate::version::Version;

/// Enough shards that two cores rarely meet on one lock. Memory per entry
/// does not depend on it: the tables' load factor swings between 70% and
/// 87.5% as keys are added, whatever the number of shards.
const SHARDS: usize = super::LIST_GROUPS;

/// Bits of a [`Handle`] that hold the offset within a page.
const OFFSET_BITS: u32 = 15;

/// Size of a page of small records: big enough that allocator overhead and the
/// unfilled end are small, small enough that compacting one (copying at most
/// half of it) keeps a shard locked for microseconds.
const PAGE: usize = 1 << OFFSET_BITS;

/// The most pages a shard can hold: what the handle's other bits can number.
const MAX_PAGES: usize = 1 << (32 - OFFSET_BITS);

/// The longest key: under 2 GiB, as before records had varint lengths.
const MAX_KEY: usize = (1 << 31) - 1;

/// The longest value: under 4 GiB (a varint of at most five bytes).
const MAX_VALUE: usize = u32::MAX as usize - 1;

/// Origins a shard numbers ([`Arena::origins`]); a record of any other
/// origin carries it in full.
const MAX_ORIGINS: usize = OWN_ORIGIN as usize;

/// Records longer than this get a page of their own, so no page of small
/// records ends in more than this much unused space.
const LARGE: usize = PAGE / 4;

/// The capacity a shard's first page starts with, doubling up to [`PAGE`], so
/// a store holding a few keys stays small.
const FIRST_PAGE: usize = 1024;

/// Compaction keeps the dead bytes of a shard's sealed pages to at most one in
/// this many, so the arena holds at most 4/3 of its live bytes, plus the page
/// taking appends.
///
/// Measured with 3 million overwrites of 50 to 150 bytes at random keys, after
/// `memory_per_million_entries`: with a half the process grew to 2.52x the raw
/// bytes resident, with a third to 2.04x, with a quarter to 1.87x (the engine
/// before this one, an allocation per entry: 1.80x), and overwrites were no
/// slower with a quarter. Compacting the deadest page once the whole shard
/// passes the mark, rather than each page as it passes it, lets pages die
/// further before their survivors are copied: in a simulation of random
/// overwrites, about one record copied per record appended.
const DEAD_SHARE: usize = 4;

/// Bits of a record's first byte, its flags. The low five hold the key's
/// length if under [`LONG`], else [`LONG`], and the length follows as a
/// varint; in a filler, they hold the filler's length the same way, with a
/// `u32` after the flags for [`LONG`] or more.
const DEAD: u8 = 1 << 7;

/// Set in the flags of a tombstone, whose record has no value length.
const TOMBSTONE: u8 = 1 << 6;

/// Set (with [`DEAD`]) in the flags of a dead filler: bytes left over by an
/// in-place rewrite, with no key or version, so a page can still be walked.
const FILLER: u8 = 1 << 5;

/// The flags' length field: [`LONG`] means "the length follows".
const SHORT: u8 = 0x1f;

/// The smallest key (or filler) length not held in the flags.
const LONG: usize = SHORT as usize;

/// The origin byte of a record whose origin follows the stamp in full.
const OWN_ORIGIN: u8 = u8::MAX;

/// Bytes every record starts with: flags (1), origin code (1), stamp (8).
const FIXED: usize = 10;

/// The longest header: [`FIXED`], an origin (4), a key length (5) and a value
/// length (5).
const MAX_HEADER: usize = FIXED + 4 + 5 + 5;

/// Where a record is: page number (high 17 bits) and byte offset in the page
/// (low 15 bits). Four bytes, so the table costs 5 bytes per bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Handle(u32);

impl Handle {
    fn new(page: usize, offset: usize) -> Handle {
        debug_assert!(page < MAX_PAGES && offset < PAGE);
        Handle(((page << OFFSET_BITS) | offset) as u32)
    }

    fn page(self) -> usize {
        (self.0 >> OFFSET_BITS) as usize
    }

    fn offset(self) -> usize {
        self.0 as usize & (PAGE - 1)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Reads the LEB128 varint at `*at` (at most five bytes, a `u32`), moving
/// `*at` past it.
fn varint_at(bytes: &[u8], at: &mut usize) -> usize {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// Writes `value` as a LEB128 varint at `at` in `out`, returning where it
/// ends.
fn put_varint(out: &mut [u8], mut at: usize, mut value: usize) -> usize {
    while value >= 0x80 {
        out[at] = value as u8 | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

fn varint_len(value: usize) -> usize {
    match value {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// Where a record's parts are, read from its header.
#[derive(Clone, Copy)]
struct Layout {
    /// Offset of the key: the header's length.
    key: usize,
    key_len: usize,
    value_len: usize,
}

/// A record read in place: the bytes from its start to the end of its page.
#[derive(Clone, Copy)]
struct Record<'a>(&'a [u8]);

impl<'a> Record<'a> {
    fn flags(self) -> u8 {
        self.0[0]
    }

    /// The header read; a filler reads as a keyless record of its length.
    fn layout(self) -> Layout {
        let flags = self.flags();
        if flags & FILLER != 0 {
            let len = match flags & SHORT {
                SHORT => u32_at(self.0, 1) as usize,
                len => usize::from(len),
            };
            return Layout {
                key: len,
                key_len: 0,
                value_len: 0,
            };
        }
        let mut at = FIXED;
        if self.0[1] == OWN_ORIGIN {
            at += 4;
        }
        let key_len = match flags & SHORT {
            SHORT => varint_at(self.0, &mut at),
            len => usize::from(len),
        };
        let value_len = if flags & TOMBSTONE != 0 {
            0
        } else {
            varint_at(self.0, &mut at)
        };
        Layout {
            key: at,
            key_len,
            value_len,
        }
    }

    /// The record's length, header included.
    fn len(self) -> usize {
        let layout = self.layout();
        layout.key + layout.key_len + layout.value_len
    }

    fn is_dead(self) -> bool {
        self.flags() & DEAD != 0
    }

    fn is_tombstone(self) -> bool {
        self.flags() & (TOMBSTONE | FILLER) == TOMBSTONE
    }

    fn key(self) -> &'a [u8] {
        let layout = self.layout();
        &self.0[layout.key..layout.key + layout.key_len]
    }

    fn value(self) -> Option<&'a [u8]> {
        let layout = self.layout();
        let start = layout.key + layout.key_len;
        (!self.is_tombstone()).then(|| &self.0[start..start + layout.value_len])
    }

    /// The record's version; `origins` is its arena's ([`Arena::origins`]).
    fn version(self, origins: &[u32]) -> Version {
        let mut stamp = [0; 8];
        stamp.copy_from_slice(&self.0[2..FIXED]);
        let origin = match self.0[1] {
            OWN_ORIGIN => u32_at(self.0, FIXED),
            code => origins[usize::from(code)],
        };
        Version {
            stamp: u64::from_le_bytes(stamp),
            origin,
        }
    }

    /// The whole record, to copy it elsewhere.
    fn bytes(self) -> &'a [u8] {
        &self.0[..self.len()]
    }

    fn stored(self, origins: &[u32]) -> Stored {
        Stored {
            value: self.value().map(<[u8]>::to_vec),
            version: self.version(origins),
        }
    }

    /// What this record counts for in [`Usage`].
    fn usage(self) -> Usage {
        Usage::of(self.key(), self.value())
    }
}

/// Checks that `key` and `value` can be stored.
fn check_lengths(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::Storage(format!(
            "key of {} bytes is too long",
            key.len()
        )));
    }
    let value_len = value.map_or(0, <[u8]>::len);
    if value_len > MAX_VALUE {
        return Err(Error::Storage(format!(
            "value of {value_len} bytes is too long"
        )));
    }
    Ok(())
}

/// The length of the record for `key` and `value` (checked by
/// [`check_lengths`]), its origin coded as `code`.
fn record_len(code: u8, key: &[u8], value: Option<&[u8]>) -> usize {
    let mut len = FIXED + key.len();
    if code == OWN_ORIGIN {
        len += 4;
    }
    if key.len() >= LONG {
        len += varint_len(key.len());
    }
    if let Some(value) = value {
        len += varint_len(value.len()) + value.len();
    }
    len
}

/// Sets the dead bit of the record that `record` starts with.
fn mark_dead(record: &mut [u8]) {
    record[0] |= DEAD;
}

/// The header of the record for `key` and `value` (checked by
/// [`check_lengths`]), its origin coded as `code`: a buffer and how much of
/// it is the header ([`record_len`] less the key and value).
fn header(
    code: u8,
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0; MAX_HEADER];
    let tombstone = if value.is_none() { TOMBSTONE } else { 0 };
    header[0] = tombstone | key.len().min(LONG) as u8;
    header[1] = code;
    header[2..FIXED].copy_from_slice(&version.stamp.to_le_bytes());
    let mut at = FIXED;
    if code == OWN_ORIGIN {
        header[at..at + 4].copy_from_slice(&version.origin.to_le_bytes());
        at += 4;
    }
    if key.len() >= LONG {
        at = put_varint(&mut header, at, key.len());
    }
    if let Some(value) = value {
        at = put_varint(&mut header, at, value.len());
    }
    (header, at)
}

/// Writes a dead filler over all of `gap` (at least a byte; at most
/// `u32::MAX`).
fn put_filler(gap: &mut [u8]) {
    let len = gap.len();
    if len < LONG {
        gap[0] = DEAD | FILLER | len as u8;
    } else {
        gap[0] = DEAD | FILLER | SHORT;
        gap[1..5].copy_from_slice(&(len as u32).to_le_bytes());
    }
}

/// One page: records back to back, and how many of its bytes are dead.
#[derive(Default)]
struct Page {
    bytes: Vec<u8>,
    dead: usize,
}

/// A shard's records. Knows nothing of the table: whoever moves a record
/// (compaction, in [`Shard::compact`]) re-points its handle.
#[derive(Default)]
struct Arena {
    /// Indexed by [`Handle::page`]. A released page stays as an empty slot.
    pages: Vec<Page>,
    /// Empty slots in `pages`, reused before `pages` grows.
    free: Vec<usize>,
    /// The page small records are appended to, if any.
    active: Option<usize>,
    /// Total length of the sealed pages (all but the active one).
    sealed: usize,
    /// Dead bytes in the sealed pages.
    sealed_dead: usize,
    /// Bytes of live records (values and tombstones), for accounting.
    live: usize,
    /// The origins of the shard's versions, numbered in the order first
    /// seen, so a record names its origin in a byte ([`Record::version`]).
    /// Never shrinks while the shard holds a key: at most [`MAX_ORIGINS`].
    origins: Vec<u32>,
    /// Records moved by compaction, so tests can tell it ran.
    #[cfg(test)]
    moved: usize,
}

impl Arena {
    fn record(&self, handle: Handle) -> Record<'_> {
        Record(&self.pages[handle.page()].bytes[handle.offset()..])
    }

    /// Appends the record for `key`, `value` and `version` (whose lengths
    /// [`check_lengths`] took). Fails only if the shard is full, and then
    /// stores nothing.
    fn append(&mut self, key: &[u8], value: Option<&[u8]>, version: Version) -> Result<Handle> {
        let code = self.origin_code(version.origin);
        let len = record_len(code, key, value);
        let handle = self.reserve(len)?;
        let (header, header_len) = header(code, key, value, version);
        let bytes = &mut self.pages[handle.page()].bytes;
        bytes.extend_from_slice(&header[..header_len]);
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value.unwrap_or_default());
        self.live += len;
        Ok(handle)
    }

    /// How a record names `origin`: its number in [`Arena::origins`],
    /// numbered now if new and there is room, else [`OWN_ORIGIN`].
    fn origin_code(&mut self, origin: u32) -> u8 {
        if let Some(code) = self.origins.iter().position(|&o| o == origin) {
            return code as u8;
        }
        if self.origins.len() == MAX_ORIGINS {
            return OWN_ORIGIN;
        }
        self.origins.push(origin);
        (self.origins.len() - 1) as u8
    }

    /// Writes the record for `key`, `value` and `version` over the live one
    /// at `handle` if it is no longer, the rest of the old record becoming a
    /// dead filler. Returns whether it did. Most overwrites keep the value's
    /// size, and then leave no garbage and need no new handle.
    fn rewrite(
        &mut self,
        handle: Handle,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> bool {
        let code = self.origin_code(version.origin);
        let len = record_len(code, key, value);
        let (index, offset) = (handle.page(), handle.offset());
        let page = &mut self.pages[index];
        let old_len = Record(&page.bytes[offset..]).len();
        let Some(gap) = old_len.checked_sub(len) else {
            return false;
        };
        if u32::try_from(gap).is_err() {
            return false;
        }
        let (header, header_len) = header(code, key, value, version);
        let bytes = &mut page.bytes[offset..offset + old_len];
        bytes[..header_len].copy_from_slice(&header[..header_len]);
        let value_at = header_len + key.len();
        bytes[header_len..value_at].copy_from_slice(key);
        bytes[value_at..len].copy_from_slice(value.unwrap_or_default());
        if gap != 0 {
            put_filler(&mut bytes[len..]);
            page.dead += gap;
            if self.active != Some(index) {
                self.sealed_dead += gap;
            }
        }
        self.live -= gap;
        true
    }

    /// Makes room for `len` bytes at the end of a page and returns the handle
    /// the record appended there will have. The caller appends exactly `len`
    /// bytes.
    fn reserve(&mut self, len: usize) -> Result<Handle> {
        if len > LARGE {
            let page = self.new_page(Vec::with_capacity(len))?;
            // A large record's page is sealed from the start.
            self.sealed += len;
            return Ok(Handle::new(page, 0));
        }
        let page = match self.active {
            Some(page) if self.pages[page].bytes.len() + len <= PAGE => page,
            _ => {
                let holds_none = self.pages.len() == self.free.len();
                let capacity = if holds_none { FIRST_PAGE } else { PAGE };
                let page = self.new_page(Vec::with_capacity(capacity))?;
                self.seal();
                self.active = Some(page);
                page
            }
        };
        let bytes = &mut self.pages[page].bytes;
        let offset = bytes.len();
        if bytes.capacity() - offset < len {
            // Only a shard's first page grows; by doubling, as a `Vec` would,
            // but never past a page. Records are addressed by offset, so the
            // move does not disturb them.
            let capacity = (bytes.capacity() * 2).max(offset + len).min(PAGE);
            bytes.reserve_exact(capacity - offset);
        }
        Ok(Handle::new(page, offset))
    }

    fn new_page(&mut self, bytes: Vec<u8>) -> Result<usize> {
        let page = Page { bytes, dead: 0 };
        if let Some(index) = self.free.pop() {
            self.pages[index] = page;
            return Ok(index);
        }
        if self.pages.len() == MAX_PAGES {
            return Err(Error::Storage(format!(
                "a memory shard is full ({MAX_PAGES} pages); \
                 the node holds more than this engine can address"
            )));
        }
        self.pages.push(page);
        Ok(self.pages.len() - 1)
    }

    /// Stops appending to the active page, giving back its unfilled end.
    fn seal(&mut self) {
        if let Some(index) = self.active.take() {
            let page = &mut self.pages[index];
            page.bytes.shrink_to_fit();
            self.sealed += page.bytes.len();
            self.sealed_dead += page.dead;
        }
    }

    /// Marks a live record dead: it was replaced or removed.
    fn kill(&mut self, handle: Handle) {
        let (index, offset) = (handle.page(), handle.offset());
        let page = &mut self.pages[index];
        let len = Record(&page.bytes[offset..]).len();
        mark_dead(&mut page.bytes[offset..]);
        page.dead += len;
        self.live -= len;
        let all_dead = page.dead == page.bytes.len();
        if self.active == Some(index) {
            // Nothing in it points anywhere: start it over (kept, so a key
            // written and removed in turn does not allocate each time).
            if all_dead {
                page.bytes.clear();
                page.dead = 0;
            }
        } else {
            self.sealed_dead += len;
            if all_dead {
                // Freed at once, with nothing to copy: a large record's
                // page, or one whose records were all overwritten.
                self.release(index);
            }
        }
    }

    /// Panics unless the counters agree with the pages. Returns how many live
    /// records there are.
    #[cfg(test)]
    fn check(&self) -> usize {
        let (mut sealed, mut sealed_dead, mut live, mut records) = (0, 0, 0, 0);
        for (index, page) in self.pages.iter().enumerate() {
            let mut dead = 0;
            let mut offset = 0;
            while offset < page.bytes.len() {
                let record = Record(&page.bytes[offset..]);
                if record.is_dead() {
                    dead += record.len();
                } else {
                    live += record.len();
                    records += 1;
                }
                offset += record.len();
            }
            assert_eq!(
                (offset, dead),
                (page.bytes.len(), page.dead),
                "page {index}"
            );
            if Some(index) != self.active {
                sealed += page.bytes.len();
                sealed_dead += dead;
            }
        }
        assert_eq!(
            (sealed, sealed_dead, live),
            (self.sealed, self.sealed_dead, self.live)
        );
        records
    }

    /// Frees a sealed page.
    fn release(&mut self, index: usize) {
        let page = std::mem::take(&mut self.pages[index]);
        self.sealed -= page.bytes.len();
        self.sealed_dead -= page.dead;
        self.free.push(index);
    }

    /// The page to compact next, if more than one byte in [`DEAD_SHARE`] of
    /// the sealed pages is dead: the deadest, which is then at least as dead.
    fn victim(&self) -> Option<usize> {
        if self.sealed_dead * DEAD_SHARE <= self.sealed {
            return None;
        }
        let index = (0..self.pages.len())
            .filter(|&index| Some(index) != self.active)
            .max_by_key(|&index| self.pages[index].dead)?;
        // Always so while the counters are right; checked anyway, so that a
        // miscount cannot make compaction copy live pages round forever.
        let page = &self.pages[index];
        (page.dead * DEAD_SHARE > page.bytes.len()).then_some(index)
    }
}

/// How keys are hashed: with a per-process random key (hash flooding cannot
/// be aimed at a node), or with a fixed one, for the simulation's replays.
enum KeyHasher {
    Random(RandomState),
    Fixed,
}

impl BuildHasher for KeyHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        match self {
            KeyHasher::Random(state) => state.build_hasher(),
            KeyHasher::Fixed => DefaultHasher::new(),
        }
    }
}

/// The hash of a key, for both the shard choice and the shard's table.
fn hash_of(hasher: &KeyHasher, key: &[u8]) -> u64 {
    hasher.hash_one(key)
}

/// Slots in a group of the [`Table`]: as many control bytes as a `u64` reads.
const GROUP: usize = 8;

/// A [`Table`] grows once more than 7 slots in 8 are taken (by handles or
/// by deleted marks).
const MAX_LOAD: (usize, usize) = (7, 8);

/// ...and then to where 7 slots in 10 are taken: 1.25 times larger.
const GROWN_LOAD: (usize, usize) = (7, 10);

/// A control byte: a free slot that no probe ever passed.
const EMPTY: u8 = 0xff;

/// A control byte: a slot whose handle was removed, which probes pass.
const DELETED: u8 = 0x80;

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// A hash table of handles, open addressing with a control byte per slot
/// as in hashbrown (7 bits of the hash, or [`EMPTY`], or [`DELETED`]), read
/// 8 at a time, but with any number of groups of 8 slots, not a power of
/// two: a key's first group is its hash scaled to the group count, probing
/// goes on group by group, and growth is by a quarter, not by doubling.
#[derive(Default)]
struct Table {
    ctrl: Vec<u8>,
    slots: Vec<Handle>,
    items: usize,
    /// Empty slots that may still be taken before the table must grow.
    growth_left: usize,
}

/// The bit set of the bytes of `word` that have their top bit set, one
/// per byte, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize / 8;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// Bytes of `word` that may equal `tag`: every one that does, and perhaps a
/// few above one that does (checked against the control byte after).
fn matching(word: u64, tag: u8) -> Bits {
    let x = word ^ (LOW_BITS * u64::from(tag));
    Bits(x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS)
}

/// Bytes of `word` that are [`EMPTY`] (the only control byte with its top
/// two bits set).
fn empty(word: u64) -> Bits {
    Bits(word & (word << 1) & HIGH_BITS)
}

/// Bytes of `word` that are [`EMPTY`] or [`DELETED`].
fn free(word: u64) -> Bits {
    Bits(word & HIGH_BITS)
}

fn tag_of(hash: u64) -> u8 {
    (hash & 0x7f) as u8
}

/// Slots taken at most in a table of `slots` slots.
fn most_items(slots: usize) -> usize {
    slots / MAX_LOAD.1 * MAX_LOAD.0
}

impl Table {
    fn len(&self) -> usize {
        self.items
    }

    fn is_empty(&self) -> bool {
        self.items == 0
    }

    fn groups(&self) -> usize {
        self.ctrl.len() / GROUP
    }

    /// Slots, taken or not.
    fn capacity(&self) -> usize {
        self.ctrl.len()
    }

    #[cfg(test)]
    fn allocation_size(&self) -> usize {
        self.ctrl.capacity() + self.slots.capacity() * size_of::<Handle>()
    }

    fn word(&self, group: usize) -> u64 {
        let mut word = [0; GROUP];
        word.copy_from_slice(&self.ctrl[group * GROUP..(group + 1) * GROUP]);
        u64::from_le_bytes(word)
    }

    /// The groups a probe for `hash` visits, in order: all of them, from
    /// the hash scaled to the group count.
    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> {
        let groups = self.groups();
        let first = ((u128::from(hash) * groups as u128) >> 64) as usize;
        (first..groups).chain(0..first)
    }

    /// The slot holding a handle of `hash` for which `eq` is true.
    fn find(&self, hash: u64, mut eq: impl FnMut(Handle) -> bool) -> Option<usize> {
        let tag = tag_of(hash);
        for group in self.probe(hash) {
            let word = self.word(group);
            for bit in matching(word, tag) {
                let slot = group * GROUP + bit;
                if self.ctrl[slot] == tag && eq(self.slots[slot]) {
                    return Some(slot);
                }
            }
            if empty(word).0 != 0 {
                return None;
            }
        }
        None
    }

    fn get(&self, slot: usize) -> Handle {
        self.slots[slot]
    }

    fn set(&mut self, slot: usize, handle: Handle) {
        self.slots[slot] = handle;
    }

    /// The first free slot on the probe for `hash`. The table has one.
    fn free_slot(&self, hash: u64) -> usize {
        for group in self.probe(hash) {
            if let Some(bit) = free(self.word(group)).next() {
                return group * GROUP + bit;
            }
        }
        unreachable!("a table always has an empty slot")
    }

    /// Adds `handle`, of `hash`, which the table lacks. `rehash` gives the
    /// hash of a handle already in the table, should it have to grow.
    fn insert(&mut self, hash: u64, handle: Handle, rehash: impl Fn(Handle) -> u64) {
        let mut slot = self.free_slot_or_none(hash);
        if slot.is_none_or(|slot| self.ctrl[slot] == EMPTY && self.growth_left == 0) {
            self.resize(self.items + 1, rehash);
            slot = Some(self.free_slot(hash));
        }
        let slot = slot.expect("a free slot");
        if self.ctrl[slot] == EMPTY {
            self.growth_left -= 1;
        }
        self.ctrl[slot] = tag_of(hash);
        self.slots[slot] = handle;
        self.items += 1;
    }

    fn free_slot_or_none(&self, hash: u64) -> Option<usize> {
        (self.groups() > 0).then(|| self.free_slot(hash))
    }

    /// Removes the handle in `slot`, returning it.
    fn remove(&mut self, slot: usize) -> Handle {
        // No probe ever passed a group that has an empty slot (it would have
        // stopped there), so the slot can be empty again; otherwise a probe
        // may have passed it, and must go on passing it.
        if empty(self.word(slot / GROUP)).0 != 0 {
            self.ctrl[slot] = EMPTY;
            self.growth_left += 1;
        } else {
            self.ctrl[slot] = DELETED;
        }
        self.items -= 1;
        self.slots[slot]
    }

    /// Rebuilds the table for `items` handles at [`GROWN_LOAD`], dropping
    /// its deleted marks.
    fn resize(&mut self, items: usize, rehash: impl Fn(Handle) -> u64) {
        let slots = (items * GROWN_LOAD.1).div_ceil(GROWN_LOAD.0).max(1);
        let groups = slots.div_ceil(GROUP);
        let old = std::mem::replace(
            self,
            Table {
                ctrl: vec![EMPTY; groups * GROUP],
                slots: vec![Handle(0); groups * GROUP],
                items: 0,
                growth_left: most_items(groups * GROUP),
            },
        );
        for handle in old.iter() {
            let hash = rehash(handle);
            let slot = self.free_slot(hash);
            self.ctrl[slot] = tag_of(hash);
            self.slots[slot] = handle;
        }
        self.items = old.items;
        self.growth_left -= old.items;
    }

    /// Every handle, in slot order.
    fn iter(&self) -> impl Iterator<Item = Handle> + '_ {
        (self.ctrl.iter().zip(&self.slots))
            .filter(|(ctrl, _)| **ctrl & DELETED == 0)
            .map(|(_, handle)| *handle)
    }
}

/// One lock's worth of the store.
#[derive(Default)]
struct Shard {
    table: Table,
    arena: Arena,
    /// Values, their bytes and tombstones, so `len` and `usage` need not walk
    /// the tables. Plain counters, not atomics: every write already holds
    /// the shard's write lock, and a reader takes the read lock for an
    /// instant, as `len` always did.
    usage: Usage,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<Record<'_>> {
        let slot = self
            .table
            .find(hash, |handle| self.arena.record(handle).key() == key)?;
        Some(self.arena.record(self.table.get(slot)))
    }

    /// Writes `value` at `key` with the version `decide` makes from the
    /// current one, unless `decide` returns `None`. Returns the version written
    /// and what the key held.
    fn put(
        &mut self,
        hasher: &KeyHasher,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        decide: impl FnOnce(Option<Version>) -> Option<Version>,
    ) -> Result<Option<(Version, Held)>> {
        // Checked before `decide` runs, so a bad key costs no version.
        check_lengths(key, value)?;
        let arena = &self.arena;
        let found = self
            .table
            .find(hash, |handle| arena.record(handle).key() == key);
        let (version, held) = match found {
            Some(slot) => {
                let handle = self.table.get(slot);
                let old = self.arena.record(handle);
                let old_version = old.version(&self.arena.origins);
                let Some(version) = decide(Some(old_version)) else {
                    return Ok(None);
                };
                let held = Some((old_version, old.is_tombstone()));
                let old_usage = old.usage();
                if !self.arena.rewrite(handle, key, value, version) {
                    let moved = self.arena.append(key, value, version)?;
                    self.table.set(slot, moved);
                    self.arena.kill(handle);
                }
                self.usage.sub(old_usage);
                (version, held)
            }
            None => {
                let Some(version) = decide(None) else {
                    return Ok(None);
                };
                let handle = self.arena.append(key, value, version)?;
                let arena = &self.arena;
                self.table.insert(hash, handle, |handle| {
                    hash_of(hasher, arena.record(handle).key())
                });
                (version, None)
            }
        };
        self.usage.add(Usage::of(key, value));
        self.compact(hasher);
        Ok(Some((version, held)))
    }

    /// Forgets `key` if it holds exactly `version`. Returns whether what it
    /// forgot was a tombstone, `None` if it forgot nothing.
    fn remove_if(
        &mut self,
        hasher: &KeyHasher,
        hash: u64,
        key: &[u8],
        version: Version,
    ) -> Option<bool> {
        let arena = &self.arena;
        let slot = self
            .table
            .find(hash, |handle| arena.record(handle).key() == key)?;
        let record = self.arena.record(self.table.get(slot));
        if record.version(&self.arena.origins) != version {
            return None;
        }
        let tombstone = record.is_tombstone();
        let held = record.usage();
        let handle = self.table.remove(slot);
        self.usage.sub(held);
        if self.table.is_empty() {
            // A handoff may empty a shard: give everything back.
            *self = Shard::default();
            return Some(tombstone);
        }
        self.arena.kill(handle);
        self.compact(hasher);
        // Give back most of a table that emptied, with room to spare so a
        // shard that refills does not resize at once.
        let len = self.table.len();
        if self.table.capacity() > 1024 && len * 4 < self.table.capacity() {
            let arena = &self.arena;
            self.table.resize(len * 2, |handle| {
                hash_of(hasher, arena.record(handle).key())
            });
        }
        Some(tombstone)
    }

    /// Compacts while the sealed pages are too dead ([`DEAD_SHARE`]): copies the
    /// live records of the deadest page to the active page, re-points their
    /// handles, and frees it.
    fn compact(&mut self, hasher: &KeyHasher) {
        while let Some(index) = self.arena.victim() {
            // Taken out to read it while appending; its slot is not free, so
            // nothing is appended to it meanwhile.
            let mut page = std::mem::take(&mut self.arena.pages[index]);
            let mut offset = 0;
            let mut full = false;
            // Stops as soon as what is left is all dead.
            while page.dead < page.bytes.len() {
                let record = Record(&page.bytes[offset..]);
                let len = record.len();
                if !record.is_dead() {
                    let Ok(moved) = self.arena.reserve(len) else {
                        // The shard is full. Keep the page as it is now (what
                        // was moved is marked dead in it) and try no further.
                        full = true;
                        break;
                    };
                    self.arena.pages[moved.page()]
                        .bytes
                        .extend_from_slice(record.bytes());
                    let old = Handle::new(index, offset);
                    let slot = self
                        .table
                        .find(hash_of(hasher, record.key()), |handle| handle == old)
                        .expect("every live record has a handle in the table");
                    self.table.set(slot, moved);
                    mark_dead(&mut page.bytes[offset..]);
                    page.dead += len;
                    self.arena.sealed_dead += len;
                    #[cfg(test)]
                    {
                        self.arena.moved += 1;
                    }
                }
                offset += len;
            }
            let emptied = page.dead == page.bytes.len();
            self.arena.pages[index] = page;
            if emptied {
                self.arena.release(index);
            }
            if full {
                return;
            }
        }
    }
}

/// The in-memory engine.
pub(super) struct Memory {
    shards: Vec<RwLock<Shard>>,
    /// Hashes keys for the tables with a key of this process's own
    /// (SipHash), since clients choose the keys.
    hasher: KeyHasher,
}

impl Memory {
    /// An empty engine.
    pub(super) fn new() -> Memory {
        Self::with_hasher(KeyHasher::Random(RandomState::new()))
    }

    /// An engine whose key order (shards, scans) is the same in every run:
    /// the simulation replays a seed's history exactly. Keys can be chosen to
    /// collide, so it is for tests, never for a node that faces clients.
    pub(super) fn deterministic() -> Memory {
        Self::with_hasher(KeyHasher::Fixed)
    }

    fn with_hasher(hasher: KeyHasher) -> Memory {
        Memory {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher,
        }
    }

    /// The key's hash and the shard that holds it (its listing group).
    fn locate(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        self.locate_at(key, key_position(key))
    }

    /// [`Memory::locate`] of a key whose ring position is known.
    fn locate_at(&self, key: &[u8], position: u64) -> (u64, &RwLock<Shard>) {
        let hash = hash_of(&self.hasher, key);
        (hash, &self.shards[super::group_at(position)])
    }

    /// What the arenas and tables hold, for tests of the accounting.
    #[cfg(test)]
    fn footprint(&self) -> Footprint {
        let mut footprint = Footprint::default();
        for shard in &self.shards {
            let shard = shard.read();
            // Every test that looks at the accounting checks it too.
            let records = shard.arena.check();
            assert_eq!(records, shard.table.len());
            for handle in shard.table.iter() {
                assert!(!shard.arena.record(handle).is_dead());
            }
            footprint.live += shard.arena.live;
            footprint.moved += shard.arena.moved;
            footprint.arena += (shard.arena.pages.iter())
                .map(|page| page.bytes.capacity())
                .sum::<usize>();
            footprint.arena += shard.arena.pages.capacity() * size_of::<Page>();
            footprint.table += shard.table.allocation_size();
        }
        footprint
    }
}

/// Bytes the engine holds, by its own accounting.
#[cfg(test)]
#[derive(Debug, Default)]
struct Footprint {
    /// Bytes of live records: values and tombstones, headers included.
    live: usize,
    /// Capacity of every page, live, dead and unfilled bytes alike, and of
    /// the page lists.
    arena: usize,
    /// The hash tables' allocations.
    table: usize,
    /// Records compaction moved.
    moved: usize,
}

impl Engine for Memory {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>> {
        let (hash, shard) = self.locate(key);
        let shard = shard.read();
        Ok(shard
            .find(hash, key)
            .map(|record| record.stored(&shard.arena.origins)))
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<usize>> {
        let (hash, shard) = self.locate(key);
        Ok(shard
            .read()
            .find(hash, key)
            .and_then(|record| record.value().map(<[u8]>::len)))
    }

    fn merge(
        &self,
        key: &[u8],
        position: u64,
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<Option<Held>> {
        let (hash, shard) = self.locate_at(key, position);
        let applied = shard.write().put(&self.hasher, hash, key, value, |old| {
            old.is_none_or(|old| old < version).then_some(version)
        })?;
        Ok(applied.map(|(_, held)| held))
    }

    fn overwrite(
        &self,
        key: &[u8],
        position: u64,
        value: Option<&[u8]>,
        next: &mut dyn FnMut(Option<Version>) -> Version,
    ) -> Result<(Version, Held)> {
        let (hash, shard) = self.locate_at(key, position);
        let written = shard
            .write()
            .put(&self.hasher, hash, key, value, |old| Some(next(old)))?;
        Ok(written.expect("an overwrite always writes"))
    }

    fn remove_if(&self, key: &[u8], position: u64, version: Version) -> Result<Option<bool>> {
        let (hash, shard) = self.locate_at(key, position);
        Ok(shard.write().remove_if(&self.hasher, hash, key, version))
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().usage.values)
            .sum()
    }

    fn usage(&self) -> Usage {
        let mut total = Usage::default();
        for shard in &self.shards {
            total.add(shard.read().usage);
        }
        total
    }

    fn list(&self, from: &[u8], prefix: &[u8], limit: usize, budget: usize) -> Result<Listed> {
        // A shard is a listing group: pick the page's keys of one group under
        // its read lock (only the page's own records are copied), in order,
        // then the next group's, until the page is full or the budget spent.
        let (first, floor) = split_cursor(from);
        let mut listed = Listed::default();
        let mut looked = 0;
        for group in first..SHARDS {
            let want = limit - listed.entries.len();
            if want == 0 || (looked >= budget && group > first) {
                listed.next = Some(cursor(group, &[], false));
                return Ok(listed);
            }
            let floor = if group == first { floor } else { &[] };
            let shard = self.shards[group].read();
            looked += shard.table.len();
            let mut picked: Vec<Record<'_>> = (shard.table.iter())
                .map(|handle| shard.arena.record(handle))
                .filter(|record| record.key() >= floor && record.key().starts_with(prefix))
                .collect();
            let full = picked.len() > want;
            if full {
                picked.select_nth_unstable_by(want, |a, b| a.key().cmp(b.key()));
                picked.truncate(want);
            }
            picked.sort_unstable_by(|a, b| a.key().cmp(b.key()));
            listed.entries.extend((picked.iter()).map(|r| {
                let version = r.version(&shard.arena.origins);
                (r.key().to_vec(), version, r.is_tombstone())
            }));
            if full {
                let last = &listed.entries.last().expect("a full page").0;
                listed.next = Some(cursor(group, last, true));
                return Ok(listed);
            }
        }
        Ok(listed)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], Version, bool) -> bool) -> Result<()> {
        self.scan_groups(u64::MAX, visit)
    }

    fn scans_groups_apart(&self) -> bool {
        true
    }

    fn scan_groups(
        &self,
        groups: u64,
        visit: &mut dyn FnMut(&[u8], Version, bool) -> bool,
    ) -> Result<()> {
        // One shard (a listing group) at a time, copied out under its read
        // lock and visited with no lock held: writers wait for one copy at
        // most, and `visit` may call back into the store. Keys are packed into
        // one buffer to avoid an allocation per key.
        let mut keys = Vec::new();
        let mut entries = Vec::new();
        let picked = (self.shards.iter().enumerate()).filter(|(group, _)| groups >> group & 1 == 1);
        for (_, shard) in picked {
            keys.clear();
            entries.clear();
            let shard = shard.read();
            for handle in shard.table.iter() {
                let record = shard.arena.record(handle);
                keys.extend_from_slice(record.key());
                let version = record.version(&shard.arena.origins);
                entries.push((keys.len(), version, record.is_tombstone()));
            }
            drop(shard);
            let mut start = 0;
            for &(end, version, tombstone) in &entries {
                if !visit(&keys[start..end], version, tombstone) {
                    return Ok(());
                }
                start = end;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 0 }
    }

    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The numbers below `n`, shuffled by a xorshift generator seeded with
    /// `seed`: an order of access unrelated to the order keys were written
    /// in, as a server's clients would have it.
    fn shuffled(n: u32, seed: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..n).collect();
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        order
    }

    /// A 10-byte decimal key, written without allocating so that timings
    /// measure the engine.
    fn decimal_key(mut n: u32) -> [u8; 10] {
        let mut key = [b'0'; 10];
        for digit in key.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        key
    }

    /// Prints resident memory per million 10-byte keys with 100-byte values,
    /// and its ratio to the raw bytes (issue 4 asks for at most 1.5x), then
    /// again after three million overwrites of random keys; run alone, in
    /// release:
    /// `cargo test --release --lib memory_per_million -- --ignored --nocapture --test-threads 1`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn memory_per_million_entries() {
        const KEYS: u32 = 1_000_000;
        let memory = Memory::new();
        let value = [7u8; 100];
        let raw = KEYS as usize * 110 / 1024;
        let before = rss_kib();
        let report = |when: &str| {
            let resident = rss_kib() - before;
            println!(
                "{when}: {} MiB resident for {} MiB of keys and values: {:.2}x",
                resident / 1024,
                raw / 1024,
                resident as f64 / raw as f64
            );
        };
        for i in 0..KEYS {
            memory
                .merge(
                    &decimal_key(i),
                    key_position(&decimal_key(i)),
                    Some(&value),
                    Version::default(),
                )
                .unwrap();
        }
        report("written");
        let mut state = 1u64;
        for _ in 0..3 * KEYS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = decimal_key((state % u64::from(KEYS)) as u32);
            memory
                .overwrite(&key, key_position(&key), Some(&value), &mut |old| {
                    v(old.map_or(0, |old| old.stamp) + 1)
                })
                .unwrap();
        }
        report("after 3M random overwrites");
        let sizes = [7u8; 150];
        for n in 0..3 * KEYS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = decimal_key((state % u64::from(KEYS)) as u32);
            let value = &sizes[..50 + (n % 101) as usize];
            memory
                .overwrite(&key, key_position(&key), Some(value), &mut |old| {
                    v(old.map_or(0, |old| old.stamp) + 1)
                })
                .unwrap();
        }
        report("after 3M more, of 50 to 150 bytes");
        assert_eq!(memory.len(), KEYS as usize);
    }

    /// Prints single-thread nanoseconds per operation on a million 10-byte
    /// keys with 100-byte values, each pass visiting every key once in its
    /// own random order; run alone, in release:
    /// `cargo test --release --lib nanoseconds_per_operation -- --ignored --nocapture --test-threads 1`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn nanoseconds_per_operation_at_a_million_keys() {
        const KEYS: u32 = 1_000_000;
        let memory = Memory::new();
        let value = [7u8; 150];
        let mut seed = 0;
        let mut time = |name: &str, op: &mut dyn FnMut(&[u8; 10], u32)| {
            seed += 1;
            let order = shuffled(KEYS, seed);
            let start = Instant::now();
            for (n, &i) in order.iter().enumerate() {
                op(&decimal_key(i), n as u32);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(KEYS);
            println!("{name:<32} {ns:>6.0} ns/op");
        };
        let overwrite = |key: &[u8; 10], len: usize| {
            memory
                .overwrite(key, key_position(key), Some(&value[..len]), &mut |old| {
                    v(old.map_or(0, |old| old.stamp) + 1)
                })
                .unwrap();
        };
        time("merge, new key", &mut |key, _| {
            memory
                .merge(key, key_position(key), Some(&value[..100]), v(1))
                .unwrap();
        });
        time("get", &mut |key, _| {
            std::hint::black_box(memory.get(key).unwrap());
        });
        time("merge, newer version", &mut |key, _| {
            memory
                .merge(key, key_position(key), Some(&value[..100]), v(2))
                .unwrap();
        });
        time("merge, older version (refused)", &mut |key, _| {
            memory
                .merge(key, key_position(key), Some(&value[..100]), v(1))
                .unwrap();
        });
        for pass in 0..3 {
            time(&format!("overwrite, pass {pass}"), &mut |key, _| {
                overwrite(key, 100)
            });
        }
        time("overwrite, 50 to 150 bytes", &mut |key, n| {
            overwrite(key, 50 + (n % 101) as usize)
        });
        time("get, after overwrites", &mut |key, _| {
            std::hint::black_box(memory.get(key).unwrap());
        });
        assert_eq!(memory.len(), KEYS as usize);
    }

    #[test]
    fn a_record_packs_header_key_and_value() {
        let mut arena = Arena::default();
        let version = Version {
            stamp: u64::MAX - 1,
            origin: 9,
        };
        let handle = arena.append(b"key", Some(b"value"), version).unwrap();
        // Flags with the key's length, origin code, stamp, value length.
        let len = 1 + 1 + 8 + 1 + 3 + 5;
        assert_eq!(record_len(0, b"key", Some(b"value")), len);
        let tombstone = arena.append(b"key", None, Version::default()).unwrap();
        let record = arena.record(handle);
        assert_eq!(
            (
                record.key(),
                record.value(),
                record.version(&arena.origins),
                record.len()
            ),
            (&b"key"[..], Some(&b"value"[..]), version, len)
        );
        assert_eq!(tombstone.offset(), len, "records are back to back");
        let record = arena.record(tombstone);
        assert_eq!((record.key(), record.value()), (&b"key"[..], None));
        assert_eq!(record.len(), FIXED + 3, "a tombstone has no value length");
        assert_eq!(record.version(&arena.origins), Version::default());
        assert!(!record.is_dead());
        arena.kill(tombstone);
        assert!(arena.record(tombstone).is_dead());
        assert!(arena.record(tombstone).is_tombstone());
        assert_eq!(arena.record(tombstone).key(), b"key");
        assert_eq!(arena.live, len);
        assert_eq!(arena.origins, [9, 0]);
    }

    #[test]
    fn records_of_extreme_lengths_and_versions_read_back_exactly() {
        let mut arena = Arena::default();
        let lengths = [0, 1, 30, 31, 32, 127, 128, 129, 16_383, 16_384, 70_000];
        let versions = [
            Version::default(),
            Version {
                stamp: u64::MAX,
                origin: u32::MAX,
            },
            Version {
                stamp: crate::version::MAX_STAMP,
                origin: 1,
            },
            Version {
                stamp: 1 << 63,
                origin: 0x8000_0000,
            },
        ];
        let mut written = Vec::new();
        for (n, &key_len) in lengths.iter().enumerate() {
            for (m, &value_len) in lengths.iter().enumerate() {
                let key = vec![n as u8; key_len];
                let value = (m % 3 != 2).then(|| vec![m as u8; value_len]);
                let version = versions[(n + m) % versions.len()];
                let handle = arena.append(&key, value.as_deref(), version).unwrap();
                written.push((handle, key, value, version));
            }
        }
        for (handle, key, value, version) in &written {
            let record = arena.record(*handle);
            assert_eq!(record.key(), &key[..]);
            assert_eq!(record.value(), value.as_deref());
            assert_eq!(record.is_tombstone(), value.is_none());
            assert_eq!(record.version(&arena.origins), *version);
            let code = arena
                .origins
                .iter()
                .position(|&o| o == version.origin)
                .unwrap();
            assert_eq!(record.len(), record_len(code as u8, key, value.as_deref()));
        }
        assert_eq!(arena.check(), written.len());
    }

    #[test]
    fn origins_past_the_numbered_ones_are_carried_in_full() {
        let mut arena = Arena::default();
        let origins = MAX_ORIGINS as u32 + 10;
        let handles: Vec<_> = (0..origins)
            .map(|origin| {
                let version = Version { stamp: 7, origin };
                (arena.append(b"k", Some(b"v"), version).unwrap(), version)
            })
            .collect();
        assert_eq!(arena.origins.len(), MAX_ORIGINS);
        for (handle, version) in &handles {
            let record = arena.record(*handle);
            assert_eq!(record.version(&arena.origins), *version);
            let full = version.origin as usize >= MAX_ORIGINS;
            assert_eq!(record.len(), FIXED + 1 + 1 + 1 + if full { 4 } else { 0 });
        }
        // A numbered origin keeps its short form after the list filled.
        let again = arena
            .append(
                b"k",
                Some(b"v"),
                Version {
                    stamp: 8,
                    origin: 3,
                },
            )
            .unwrap();
        assert_eq!(arena.record(again).len(), FIXED + 3);
    }

    #[test]
    fn a_filler_of_any_length_walks_as_one_dead_record() {
        for gap in (1..70).chain([255, 256, 4096, 20_000]) {
            let mut page = Page {
                bytes: vec![0xaa; gap],
                dead: gap,
            };
            put_filler(&mut page.bytes);
            // A live record after it.
            let (header, header_len) = header(0, b"ab", None, v(1));
            page.bytes.extend_from_slice(&header[..header_len]);
            page.bytes.extend_from_slice(b"ab");
            assert_eq!(
                walk(&page),
                [(Vec::new(), true, gap), (b"ab".to_vec(), false, FIXED + 2)],
                "gap {gap}"
            );
            assert!(
                !Record(&page.bytes).is_tombstone(),
                "a filler is no tombstone"
            );
        }
    }

    #[test]
    fn the_table_finds_what_it_holds_through_growth_removals_and_shrinking() {
        // Handles stand for themselves; a poor hash (many equal tags, runs
        // of neighbours) so probes cross groups and deleted marks pile up.
        let hash = |handle: Handle| u64::from(handle.0 / 3).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut table = Table::default();
        let mut model = std::collections::HashSet::new();
        let mut state = 7u64;
        for step in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let handle = Handle((state % 5000) as u32);
            // Mostly inserts at first, mostly removals at the end.
            let insert = (state >> 32) % 200_000 > u64::from(step);
            match table.find(hash(handle), |h| h == handle) {
                Some(slot) if !insert => {
                    assert_eq!(table.remove(slot), handle);
                    assert!(model.remove(&handle.0));
                }
                Some(_) => assert!(model.contains(&handle.0)),
                None => {
                    assert!(!model.contains(&handle.0), "step {step}: {handle:?} lost");
                    if insert {
                        table.insert(hash(handle), handle, hash);
                        model.insert(handle.0);
                    }
                }
            }
            if table.capacity() > 1024 && table.len() * 4 < table.capacity() {
                table.resize(table.len() * 2, hash);
            }
            assert_eq!(table.len(), model.len());
            let load = table.len() as f64 / table.capacity().max(1) as f64;
            assert!(load <= 0.875, "step {step}: load {load}");
        }
        let mut held: Vec<u32> = table.iter().map(|h| h.0).collect();
        held.sort_unstable();
        let mut expected: Vec<u32> = model.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(held, expected);
    }

    #[test]
    fn a_growing_table_stays_between_seventy_and_eighty_seven_percent_full() {
        let hash = |handle: Handle| u64::from(handle.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut table = Table::default();
        for n in 0..100_000u32 {
            table.insert(hash(Handle(n)), Handle(n), hash);
            let load = table.len() as f64 / table.capacity() as f64;
            if n > 1000 {
                assert!((0.69..=0.875).contains(&load), "{n} keys: load {load}");
            }
        }
    }

    /// Every record of a page, walked as compaction walks it: (key, dead, length).
    fn walk(page: &Page) -> Vec<(Vec<u8>, bool, usize)> {
        let mut records = Vec::new();
        let mut offset = 0;
        while offset < page.bytes.len() {
            let record = Record(&page.bytes[offset..]);
            records.push((record.key().to_vec(), record.is_dead(), record.len()));
            offset += record.len();
        }
        records
    }

    #[test]
    fn a_value_of_the_same_size_is_written_in_place() {
        let memory = Memory::new();
        memory
            .merge(b"k", key_position(b"k"), Some(&[1; 100]), v(1))
            .unwrap();
        let before = memory.footprint();
        for stamp in 2..1000 {
            memory
                .merge(
                    b"k",
                    key_position(b"k"),
                    Some(&[stamp as u8; 100]),
                    v(stamp),
                )
                .unwrap();
        }
        let after = memory.footprint();
        assert_eq!((after.live, after.arena), (before.live, before.arena));
        assert_eq!(
            memory.get(b"k").unwrap().unwrap(),
            Stored {
                value: Some(vec![999u64 as u8; 100]),
                version: v(999)
            }
        );
    }

    #[test]
    fn a_shorter_value_is_written_in_place_before_a_dead_filler() {
        let mut arena = Arena::default();
        let a = arena.append(b"a", Some(&[1; 100]), v(1)).unwrap();
        let long = arena.record(a).len();
        let b = arena.append(b"b", Some(&[1; 10]), v(1)).unwrap();
        let b_len = arena.record(b).len();
        // 100 bytes and a length shorter: in place, with a filler.
        assert!(arena.rewrite(a, b"a", None, v(2)));
        let short = arena.record(a).len();
        assert_eq!(short, FIXED + 1);
        // Longer: no.
        assert!(!arena.rewrite(a, b"a", Some(&[2]), v(3)));
        // One byte shorter (a tombstone has no value length): in place,
        // before a one-byte filler.
        assert!(arena.rewrite(b, b"b", Some(&[]), v(2)));
        assert!(arena.rewrite(b, b"b", None, v(3)));
        let record = arena.record(a);
        assert_eq!(
            (record.value(), record.version(&arena.origins)),
            (None, v(2))
        );
        assert_eq!(
            walk(&arena.pages[a.page()]),
            [
                (b"a".to_vec(), false, short),
                (Vec::new(), true, long - short),
                (b"b".to_vec(), false, FIXED + 1),
                (Vec::new(), true, 1),
                (Vec::new(), true, b_len - FIXED - 2),
            ]
        );
        assert_eq!(arena.live, short + FIXED + 1);
        assert_eq!(arena.pages[a.page()].dead, long - short + b_len - FIXED - 1);
        arena.check();
    }

    #[test]
    fn a_record_larger_than_a_quarter_page_gets_a_page_of_its_own() {
        let mut arena = Arena::default();
        let value = vec![1; LARGE];
        let large = arena.append(b"k", Some(&value), v(1)).unwrap();
        let len = arena.record(large).len();
        let small = arena.append(b"k", None, v(1)).unwrap();
        assert_eq!(
            (large.offset(), arena.pages[large.page()].bytes.len()),
            (0, len)
        );
        assert_ne!(small.page(), large.page());
    }

    /// A value of `len` bytes that says which key it belongs to.
    fn value_for(key: &[u8], len: usize) -> Vec<u8> {
        let mut value = key.repeat(len.div_ceil(key.len()));
        value.truncate(len);
        value
    }

    #[test]
    fn overwriting_the_same_keys_with_varying_sizes_keeps_garbage_bounded() {
        const KEYS: u64 = 10_000;
        let memory = Memory::new();
        let mut expected = vec![None; KEYS as usize];
        let mut peak: f64 = 0.0;
        for round in 0..100u64 {
            for i in 0..KEYS {
                let key = i.to_be_bytes();
                // Sizes from 0 to 3,000 bytes, a large record now and then,
                // and a tombstone in every seventh write.
                let mix = (i * 7919 + round * 104_729) % 1000;
                let len = if mix == 0 { 20_000 } else { mix as usize * 3 };
                let value = (mix % 7 != 3).then(|| value_for(&key, len));
                if round % 2 == 0 {
                    memory
                        .overwrite(&key, key_position(&key), value.as_deref(), &mut |_| {
                            v(round + 1)
                        })
                        .unwrap();
                } else {
                    assert!(
                        memory
                            .merge(&key, key_position(&key), value.as_deref(), v(round + 1))
                            .unwrap()
                            .is_some()
                    );
                }
                expected[i as usize] = value;
            }
            let footprint = memory.footprint();
            let ratio = footprint.arena as f64 / footprint.live as f64;
            assert!(ratio < 3.0, "round {round}: {footprint:?}, {ratio:.2}x");
            // What the design promises: 4/3 of the live bytes, plus a page
            // taking appends per shard (and the page lists).
            assert!(
                footprint.arena < footprint.live * 4 / 3 + SHARDS * (PAGE + 4096),
                "round {round}: {footprint:?}"
            );
            peak = peak.max(ratio);
        }
        let footprint = memory.footprint();
        assert!(footprint.moved > 0, "compaction ran: {footprint:?}");
        println!("arena peaked at {peak:.2}x the live bytes; {footprint:?}");
        for (i, value) in expected.iter().enumerate() {
            let stored = memory.get(&(i as u64).to_be_bytes()).unwrap().unwrap();
            assert_eq!((&stored.value, stored.version), (value, v(100)), "key {i}");
        }
        let values = expected.iter().filter(|value| value.is_some()).count();
        assert_eq!(memory.len(), values);
        let mut scanned = 0;
        memory
            .scan(&mut |_, version, _| {
                assert_eq!(version, v(100));
                scanned += 1;
                true
            })
            .unwrap();
        assert_eq!(scanned, KEYS);
    }

    #[test]
    fn removing_every_key_gives_all_the_memory_back() {
        let memory = Memory::new();
        for i in 0..10_000u64 {
            let key = i.to_be_bytes();
            let value = (i % 5 != 0).then(|| value_for(&key, (i % 300) as usize));
            memory
                .merge(&key, key_position(&key), value.as_deref(), v(1))
                .unwrap();
            // Some garbage too, and a few large records.
            let len = if i % 1000 == 0 { 10_000 } else { 100 };
            memory
                .merge(&key, key_position(&key), Some(&value_for(&key, len)), v(2))
                .unwrap();
        }
        assert!(memory.footprint().live > 10_000 * 100);
        for i in 0..10_000u64 {
            assert!(
                memory
                    .remove_if(&i.to_be_bytes(), key_position(&i.to_be_bytes()), v(2))
                    .unwrap()
                    .is_some()
            );
        }
        let footprint = memory.footprint();
        assert_eq!(
            (footprint.live, footprint.arena, footprint.table),
            (0, 0, 0)
        );
        assert_eq!(memory.len(), 0);
        // And the engine still works.
        assert!(
            memory
                .merge(b"again", key_position(b"again"), Some(b"x"), v(1))
                .unwrap()
                .is_some()
        );
        assert_eq!(memory.get(b"again").unwrap().unwrap().value.unwrap(), b"x");
    }

    #[test]
    fn removing_most_keys_compacts_the_rest() {
        // Enough that, uncompacted, the pages would break the bound below.
        const KEYS: u64 = 100_000;
        let memory = Memory::new();
        for i in 0..KEYS {
            memory
                .merge(
                    &i.to_be_bytes(),
                    key_position(&i.to_be_bytes()),
                    Some(&[1; 100]),
                    v(1),
                )
                .unwrap();
        }
        for i in (0..KEYS).filter(|i| i % 10 != 0) {
            assert!(
                memory
                    .remove_if(&i.to_be_bytes(), key_position(&i.to_be_bytes()), v(1))
                    .unwrap()
                    .is_some()
            );
        }
        let footprint = memory.footprint();
        assert!(footprint.moved > 0, "{footprint:?}");
        assert!(
            footprint.arena < footprint.live * 4 / 3 + SHARDS * (PAGE + 4096),
            "{footprint:?}"
        );
        for i in 0..KEYS {
            let stored = memory.get(&i.to_be_bytes()).unwrap();
            assert_eq!(stored.is_some(), i % 10 == 0, "key {i}");
        }
    }

    #[test]
    fn a_large_value_that_shrinks_in_place_is_later_moved_and_freed() {
        let memory = Memory::new();
        // Small keys everywhere, so that no shard empties (and starts over)
        // when the large ones go.
        for i in 0..10_000u64 {
            memory
                .merge(
                    &i.to_be_bytes(),
                    key_position(&i.to_be_bytes()),
                    Some(&[0; 10]),
                    v(1),
                )
                .unwrap();
        }
        for i in 0..200u64 {
            let key = format!("large {i}");
            memory
                .merge(
                    key.as_bytes(),
                    key_position(key.as_bytes()),
                    Some(&[1; 20_000]),
                    v(1),
                )
                .unwrap();
            // Still large, half as long: written in place before a filler,
            // and its page, half dead, is the next compacted.
            memory
                .merge(
                    key.as_bytes(),
                    key_position(key.as_bytes()),
                    Some(&[2; 10_000]),
                    v(2),
                )
                .unwrap();
        }
        let footprint = memory.footprint();
        assert!(footprint.moved > 0, "{footprint:?}");
        for i in 0..200u64 {
            let key = format!("large {i}");
            let stored = memory.get(key.as_bytes()).unwrap().unwrap();
            assert_eq!(stored.value, Some(vec![2; 10_000]));
            assert!(
                memory
                    .remove_if(key.as_bytes(), key_position(key.as_bytes()), v(2))
                    .unwrap()
                    .is_some()
            );
        }
        let footprint = memory.footprint();
        assert!(
            footprint.arena < footprint.live * 4 / 3 + SHARDS * (PAGE + 4096),
            "{footprint:?}"
        );
    }

    #[test]
    fn readers_see_whole_values_while_writers_overwrite_and_compact() {
        // Writers overwrite keys with values of varying size (so pages die
        // and are compacted) while a reader checks that every key is found
        // and holds a value made for it.
        const KEYS: u64 = 2000;
        const WRITERS: u64 = 3;
        const WRITES: u64 = 20_000;
        let memory = Memory::new();
        for i in 0..KEYS {
            memory
                .merge(&i.to_be_bytes(), key_position(&i.to_be_bytes()), None, v(0))
                .unwrap();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let memory = &memory;
                    scope.spawn(move || {
                        for n in 0..WRITES {
                            let key = ((n * 7 + writer * 13) % KEYS).to_be_bytes();
                            let len = ((n * 31 + writer) % 3000) as usize;
                            let len = if n % 500 == 0 { 12_000 } else { len };
                            let value = (n % 11 != 0).then(|| value_for(&key, len));
                            memory
                                .overwrite(&key, key_position(&key), value.as_deref(), &mut |old| {
                                    v(old.unwrap().stamp + 1)
                                })
                                .unwrap();
                        }
                    })
                })
                .collect();
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for i in 0..KEYS {
                        let key = i.to_be_bytes();
                        let stored = memory.get(&key).unwrap().expect("every key stays");
                        if let Some(value) = stored.value {
                            assert_eq!(value, value_for(&key, value.len()), "key {i}");
                        }
                    }
                }
            });
            // Joined before unwrapping, so a failing writer cannot leave the
            // reader spinning.
            let joined: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            for writer in joined {
                writer.unwrap();
            }
        });
        let total: u64 = (0..KEYS)
            .map(|i| memory.get(&i.to_be_bytes()).unwrap().unwrap().version.stamp)
            .sum();
        assert_eq!(total, WRITERS * WRITES, "no overwrite was lost");
        let footprint = memory.footprint();
        assert!(footprint.arena < 3 * footprint.live, "{footprint:?}");
        assert!(footprint.moved > 0, "compaction ran: {footprint:?}");
    }
}
