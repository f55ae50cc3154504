//! Large values, streamed: a value too big for one message is stored as chunks
//! that travel straight between the client and each chunk's owner, several at
//! a time, behind a small manifest stored at the value's own key.
//!
//! Nodes take one value per message, up to `--max-value-bytes`. Sending every
//! chunk to one node would make it forward each one to its owner (twice the
//! network traffic, and one node's CPU doing everyone's copying), so the client
//! builds the ring itself (from `get_all` and [`Ring`], exactly as the nodes
//! do) and sends chunk `i` to the owner of its key, which stores it and
//! replicates it like any other value. If the ring changed meanwhile, the
//! receiving node routes the chunk to the right owner; if the owner cannot be
//! reached, the next member of the chunk's preference list takes it.
//!
//! Other clients get the same values through the node they call, with the
//! IDL's large-value methods (`describe`, `read_range`, `begin_upload`,
//! `upload_part`, `commit_upload`; `node::large`), which read and write this
//! format. A node answers a client's `fetch` of a manifest with
//! [`ErrorKind::Streamed`] rather than the manifest (see
//! [`streamed_manifest`]), so this module reads a streamed value's manifest
//! with `describe` ([`read_key`]).
//!
//! # Formats
//!
//! Chunk `i` of an upload is stored under the key
//! `"\0thrifty-chunk\0"` (15 bytes) ++ key ++ upload id (u64, big-endian) ++
//! `i` (u64, big-endian). The fixed-width tail makes the layout unambiguous
//! whatever bytes the key holds; the leading NUL keeps chunk keys out of the
//! way of keys people type.
//!
//! The manifest stored at the key itself is, with integers big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..16 | magic `"\0thrifty-stream\0"` ([`MAGIC`]) |
//! | 16..20 | format version, u32 ([`FORMAT_VERSION`] = 1) |
//! | 20..28 | upload id, u64 (random, fresh for every upload) |
//! | 28..36 | value size in bytes, u64 |
//! | 36..44 | chunk size in bytes, u64 (every chunk but the last is this long) |
//! | 44..52 | chunk count, u64 (= size / chunk size, rounded up) |
//! | 52..68 | MD5 of the chunk digests below, concatenated (a hash list) |
//! | 68.. | MD5 of each chunk, 16 bytes per chunk, in order |
//!
//! Every digest is computed per chunk, in parallel: one MD5 over the whole
//! value would have to see the bytes in order on one core, and MD5 runs at
//! about 0.55 GB/s per core here, which capped uploads there (measured: 0.40
//! GB/s with it, 0.62 GB/s without, one replica). Readers check each chunk
//! against its digest before writing it out, which also names a damaged
//! chunk; the hash list ties the digests to the manifest.
//!
//! # Consistency
//!
//! - The manifest is written after every chunk is stored, so a reader sees
//!   either the old value or the whole new one, never a mix.
//! - A value of at most one chunk is stored plain, unless it begins with
//!   [`MAGIC`]: such a value is streamed as one chunk, so that reading it back
//!   cannot mistake it for a manifest.
//! - After the new manifest is written, the previous upload's chunks are
//!   erased (best effort). A read that fetched the old manifest just before
//!   can then fail with a missing chunk: retrying reads the new value.
//! - Chunks of an upload that failed, or that lost a race with a concurrent
//!   upload to the same key, and those of a value replaced by a plain
//!   `store` or deleted by a plain `erase`, are left to the nodes: each
//!   erases the chunks it owns that no manifest names once they are older
//!   than its `--chunk-grace` (see `node::collect`). So an upload commits
//!   its manifest only within half that grace (the node reports it in
//!   `stats` as `chunk_grace_ms`), or fails with
//!   [`Error::UploadTooSlow`] leaving the key as it was. Each erased chunk
//!   leaves a tombstone, like any erased key.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex};

use crate::addr::NodeAddr;
use crate::auth::{Role, Secret};
use crate::client::ClientOptions;
use crate::config::MAX_KEY_BYTES;
use crate::error::{Error, ErrorKind, Result};
use crate::ring::Ring;
use crate::wire::Conn;

/// The first 16 bytes of every manifest.
pub const MAGIC: [u8; 16] = *b"\0thrifty-stream\0";

/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What every chunk key starts with.
pub const CHUNK_PREFIX: &[u8] = b"\0thrifty-chunk\0";

/// Default bytes per chunk: big enough that per-message costs (a round trip,
/// a routing decision, a replication batch) are small next to copying the
/// bytes, small enough that several chunks in flight stay well under the
/// nodes' 64 MiB message limit and the client's memory stays modest.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// Default chunks in flight at once.
pub const DEFAULT_WORKERS: usize = 4;

/// Largest chunk accepted, in either direction. Nodes refuse values above
/// their `--max-value-bytes` (64 MiB by default) anyway; this bound keeps a
/// damaged manifest from making a reader accept gigantic replies.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// Manifest bytes before the per-chunk digests.
const HEADER_BYTES: usize = 68;

/// Bytes a chunk key adds to the value's key.
pub(crate) const CHUNK_KEY_OVERHEAD: usize = CHUNK_PREFIX.len() + 16;

/// Room in a reply for a chunk's key and the message envelope.
const REPLY_OVERHEAD: usize = 64 * 1024 + MAX_KEY_BYTES;

/// How values are streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Bytes per chunk (default [`DEFAULT_CHUNK_BYTES`]). Must not exceed the
    /// nodes' `--max-value-bytes`. Reads take the size from the manifest.
    pub chunk_bytes: usize,
    /// Chunks in flight at once, each on its own thread with its own
    /// connection to each node (default [`DEFAULT_WORKERS`]). A put holds at
    /// most `workers + 2` chunks in memory, a get at most `workers` (plus, in
    /// each connection, a reply buffer that grows to twice a chunk).
    pub workers: usize,
    /// The secret each connection proves (see [`ClientOptions::secret`];
    /// a [`crate::Client`] passes its own).
    pub secret: Option<(Role, Secret)>,
    /// TLS for each connection (see [`ClientOptions::tls`]; a
    /// [`crate::Client`] passes its own).
    pub tls: Option<crate::tls::Tls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            workers: DEFAULT_WORKERS,
            secret: None,
            tls: None,
        }
    }
}

impl Options {
    /// How each of the stream's connections is opened.
    fn client(&self) -> ClientOptions {
        ClientOptions {
            secret: self.secret.clone(),
            tls: self.tls.clone(),
            ..ClientOptions::default()
        }
    }

    fn check(&self) -> Result<()> {
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_CHUNK_BYTES || self.workers == 0 {
            return Err(Error::BadOptions {
                max: MAX_CHUNK_BYTES,
                chunk_bytes: self.chunk_bytes,
                workers: self.workers,
            });
        }
        Ok(())
    }
}

/// A streamed value's manifest: where its chunks are and how to check them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The upload's random id, part of every chunk key.
    pub upload: u64,
    /// The value's size in bytes.
    pub size: u64,
    /// Bytes per chunk; the last chunk may be shorter.
    pub chunk_bytes: u64,
    /// MD5 of the chunk digests, in order ([`hash_list`]).
    pub md5: [u8; 16],
    /// MD5 of each chunk, in order; its length is the chunk count.
    pub chunk_md5s: Vec<[u8; 16]>,
}

impl Manifest {
    /// How many chunks the value has.
    pub fn chunks(&self) -> u64 {
        self.chunk_md5s.len() as u64
    }

    /// The key of chunk `index` of this upload of `key`.
    pub fn chunk_key(&self, key: &[u8], index: u64) -> Vec<u8> {
        chunk_key(key, self.upload, index)
    }

    /// How many bytes chunk `index` holds.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index * self.chunk_bytes;
        self.size.saturating_sub(start).min(self.chunk_bytes)
    }

    /// The manifest's bytes (see the module doc for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 16 * self.chunk_md5s.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.upload.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_be_bytes());
        out.extend_from_slice(&self.chunks().to_be_bytes());
        out.extend_from_slice(&self.md5);
        for digest in &self.chunk_md5s {
            out.extend_from_slice(digest);
        }
        out
    }

    /// Reads a stored value: `Ok(None)` when it is not a manifest (it does
    /// not start with [`MAGIC`]), `Err` with the reason when it starts like
    /// one but is not a valid version-1 manifest.
    pub fn decode(bytes: &[u8]) -> Result<Option<Manifest>, String> {
        if !bytes.starts_with(&MAGIC) {
            return Ok(None);
        }
        if bytes.len() < HEADER_BYTES {
            return Err(format!("it is only {} bytes long", bytes.len()));
        }
        let u64_at = |at: usize| {
            u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes within header"))
        };
        let version = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(format!(
                "has format version {version}, and this client reads only version {FORMAT_VERSION}; upgrade it"
            ));
        }
        let (upload, size, chunk_bytes, chunks) = (u64_at(20), u64_at(28), u64_at(36), u64_at(44));
        if chunk_bytes == 0 || chunk_bytes > MAX_CHUNK_BYTES as u64 {
            return Err(format!("has a chunk size of {chunk_bytes} bytes"));
        }
        if chunks != size.div_ceil(chunk_bytes) {
            return Err(format!(
                "counts {chunks} chunks for {size} bytes in chunks of {chunk_bytes}"
            ));
        }
        let digests = &bytes[HEADER_BYTES..];
        if digests.len() as u64 != chunks.saturating_mul(16) {
            return Err(format!(
                "has {} bytes of chunk digests for {chunks} chunks",
                digests.len()
            ));
        }
        let manifest = Manifest {
            upload,
            size,
            chunk_bytes,
            md5: bytes[52..68].try_into().expect("16 bytes"),
            chunk_md5s: digests
                .chunks_exact(16)
                .map(|d| d.try_into().expect("16 bytes"))
                .collect(),
        };
        if hash_list(&manifest.chunk_md5s) != manifest.md5 {
            return Err("has chunk digests that do not match its hash list".into());
        }
        Ok(Some(manifest))
    }
}

/// The manifest of the streamed value `value` stored at `key`, if it is one:
/// `None` for a chunk (an internal key, whose bytes may begin like a
/// manifest), for bytes that do not start with [`MAGIC`] (a 16-byte compare,
/// cheap enough for every `fetch`), and for bytes that start with it but do
/// not decode (no client writes such a value plain: [`put`] streams a value
/// that begins with [`MAGIC`], so the check is exact for values it wrote).
pub fn streamed_manifest(key: &[u8], value: &[u8]) -> Option<Manifest> {
    if !value.starts_with(&MAGIC) || key.starts_with(CHUNK_PREFIX) {
        return None;
    }
    Manifest::decode(value).ok().flatten()
}

/// What a key holds, as `describe` tells it (see the IDL's `ValueInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    /// Whether the key holds a value (false: never written, or erased).
    pub exists: bool,
    /// The value's size in bytes (0 when it does not exist).
    pub size: u64,
    /// Bytes per part: every part but the last is this long (a plain
    /// value: its size).
    pub part_bytes: u64,
    /// How many parts (a plain value: 1, or 0 when empty).
    pub parts: u64,
    /// The value's identity for [`crate::Client::read_range`]: its upload id
    /// when streamed, its version when plain; never 0.
    pub id: u64,
    /// The manifest of a streamed value; `None` for a plain one.
    pub manifest: Option<Manifest>,
    /// The content type and description stored with the value
    /// ([`crate::Client::put_with`]).
    pub meta: crate::value::Meta,
    /// The bytes the value occupies in each replica's store when the node
    /// stored it compressed; `None` when stored as it is.
    pub stored_bytes: Option<u64>,
}

impl ValueInfo {
    /// What a key that holds nothing is.
    pub fn absent() -> ValueInfo {
        ValueInfo {
            exists: false,
            size: 0,
            part_bytes: 0,
            parts: 0,
            id: 0,
            manifest: None,
            meta: crate::value::Meta::default(),
            stored_bytes: None,
        }
    }

    /// A plain value of `size` bytes written with version stamp `stamp`.
    pub fn plain(size: u64, stamp: u64) -> ValueInfo {
        ValueInfo {
            exists: true,
            size,
            part_bytes: size,
            parts: u64::from(size > 0),
            id: stamp.max(1),
            manifest: None,
            meta: crate::value::Meta::default(),
            stored_bytes: None,
        }
    }

    /// A streamed value behind `manifest`.
    pub fn streamed(manifest: Manifest) -> ValueInfo {
        ValueInfo {
            exists: true,
            size: manifest.size,
            part_bytes: manifest.chunk_bytes,
            parts: manifest.chunks(),
            id: manifest.upload.max(1),
            manifest: Some(manifest),
            meta: crate::value::Meta::default(),
            stored_bytes: None,
        }
    }

    /// Whether the value is streamed (held as parts behind a manifest).
    pub fn streamed_value(&self) -> bool {
        self.manifest.is_some()
    }
}

/// The key of chunk `index` of upload `upload` of `key` (layout in the
/// module doc).
pub fn chunk_key(key: &[u8], upload: u64, index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + CHUNK_KEY_OVERHEAD);
    out.extend_from_slice(CHUNK_PREFIX);
    out.extend_from_slice(key);
    out.extend_from_slice(&upload.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// How far a streamed value got, as told to a progress callback (see
/// [`put_with_progress`], [`get_with_progress`]): after each chunk stored,
/// or written out, in order. The library never prints; a command-line tool
/// draws a bar from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes stored (a put) or written out (a get) so far.
    pub bytes: u64,
    /// The value's size when known: always for a get (the manifest says),
    /// never for a put (its input is read as it comes).
    pub total: Option<u64>,
}

/// A progress callback. It is called from the transfer's threads, one call
/// at a time and with `bytes` never going down, so it must be quick.
pub type OnProgress<'a> = &'a (dyn Fn(Progress) + Sync);

/// The callback of the functions without one.
fn unobserved(_: Progress) {}

/// How a value was stored by [`put`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// As one plain value of this many bytes.
    Plain(u64),
    /// As chunks behind this manifest.
    Chunked(Manifest),
}

/// Stores everything `reader` yields at `key`, through the ring `source`
/// belongs to. Reads at most one chunk first: input that ends within it is
/// stored as a plain value, as `store` would; longer input is streamed with
/// [`put_large`] without ever being held whole in memory.
pub fn put(source: &NodeAddr, key: &[u8], reader: impl Read, options: &Options) -> Result<Written> {
    put_with_progress(source, key, reader, options, &unobserved)
}

/// [`put`], telling `progress` after each chunk of a streamed value is
/// stored (a plain value, stored in one call, is not told).
pub fn put_with_progress(
    source: &NodeAddr,
    key: &[u8],
    mut reader: impl Read,
    options: &Options,
    progress: OnProgress<'_>,
) -> Result<Written> {
    options.check()?;
    let mut first = Vec::new();
    // One byte past a chunk tells "exactly one chunk" from "more to come".
    (&mut reader)
        .take(options.chunk_bytes as u64 + 1)
        .read_to_end(&mut first)
        .map_err(Error::Input)?;
    if first.len() > options.chunk_bytes || first.starts_with(&MAGIC) {
        let input = io::Cursor::new(first).chain(reader);
        let manifest = put_large_with_progress(source, key, input, options, progress)?;
        return Ok(Written::Chunked(manifest));
    }
    let mut control = Conn::open(source, &options.client())?;
    let old = previous_manifest(&mut control, key)?;
    let size = first.len() as u64;
    control.store(key, &first)?;
    if let Some(old) = old {
        erase_chunks(&mut control, key, old.upload, old.chunks());
    }
    Ok(Written::Plain(size))
}

/// Stores everything `reader` yields at `key` as chunks of
/// `options.chunk_bytes`, each sent straight to its owner, `options.workers`
/// at a time, then the manifest at `key` (see the module doc). The ring's
/// members come from `source`. Afterwards the chunks of the value `key` held
/// before, if it was streamed too, are erased (best effort).
pub fn put_large(
    source: &NodeAddr,
    key: &[u8],
    reader: impl Read,
    options: &Options,
) -> Result<Manifest> {
    put_large_with_progress(source, key, reader, options, &unobserved)
}

/// [`put_large`], telling `progress` after each chunk is stored.
pub fn put_large_with_progress(
    source: &NodeAddr,
    key: &[u8],
    reader: impl Read,
    options: &Options,
    progress: OnProgress<'_>,
) -> Result<Manifest> {
    options.check()?;
    let max = MAX_KEY_BYTES - CHUNK_KEY_OVERHEAD;
    if key.len() > max {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max,
        });
    }
    let mut control = Conn::open(source, &options.client())?;
    let ring = ring_of(&mut control)?;
    let old = previous_manifest(&mut control, key)?;
    let window = commit_window(&mut control)?;
    let started = std::time::Instant::now();
    let upload = fresh_upload_id();
    let manifest = match send_chunks(&ring, key, upload, reader, options, progress) {
        Ok(manifest) => manifest,
        Err((error, sent)) => {
            // Nothing points at these chunks; erasing them only saves space.
            erase_chunks(&mut control, key, upload, sent);
            return Err(error);
        }
    };
    let took = started.elapsed();
    if let Some(window) = window.filter(|window| took > *window) {
        // Its first chunks may be gone already (`node::collect`): a manifest
        // naming them now could point at nothing.
        erase_chunks(&mut control, key, upload, manifest.chunks());
        return Err(Error::UploadTooSlow {
            key: shown(key),
            took,
            window,
        });
    }
    if let Err(error) = control.store(key, &manifest.encode()) {
        // Only a refusal says the manifest was not stored; after a broken
        // call it may have been, and then its chunks are the value.
        if nothing_stored(&error) {
            erase_chunks(&mut control, key, upload, manifest.chunks());
        }
        return Err(error);
    }
    if let Some(old) = old.filter(|old| old.upload != upload) {
        erase_chunks(&mut control, key, old.upload, old.chunks());
    }
    Ok(manifest)
}

/// Writes the value at `key` to `writer`, through the ring `source` belongs
/// to, and returns its size; `None` when the key is not stored. A streamed
/// value's chunks are fetched straight from their owners, `options.workers`
/// at a time and never more than that many ahead of the writer, checked
/// against the manifest's sizes and digests, and written in order; a plain
/// value is written as is.
pub fn get_large(
    source: &NodeAddr,
    key: &[u8],
    writer: impl Write,
    options: &Options,
) -> Result<Option<u64>> {
    get_with_progress(source, key, writer, options, &unobserved)
}

/// [`get_large`], telling `progress` after each chunk of a streamed value
/// is written out (a plain value, written at once, is not told).
pub fn get_with_progress(
    source: &NodeAddr,
    key: &[u8],
    mut writer: impl Write,
    options: &Options,
    progress: OnProgress<'_>,
) -> Result<Option<u64>> {
    options.check()?;
    let mut control = Conn::open(source, &options.client())?;
    let manifest = match read_key(&mut control, key)? {
        None => return Ok(None),
        Some(Held::Streamed(manifest)) => manifest,
        Some(Held::Plain(value)) => {
            writer.write_all(&value).map_err(Error::Output)?;
            writer.flush().map_err(Error::Output)?;
            return Ok(Some(value.len() as u64));
        }
    };
    let ring = ring_of(&mut control)?;
    receive_chunks(&ring, key, &manifest, &mut writer, options, progress)?;
    writer.flush().map_err(Error::Output)?;
    Ok(Some(manifest.size))
}

// ---- putting ----

/// Streams `reader` to the chunks' owners as a pipeline, so that no stage
/// waits for another's work: this thread reads chunks, and `options.workers`
/// threads each hash a chunk (its own digest, in parallel) and send it. Chunk
/// buffers travel reader → worker and back to the reader for reuse, so at most
/// `workers + 2` exist and a long upload does not fault in fresh pages for
/// every chunk. On failure, returns
/// the error and how many chunks were read (chunks that may exist).
fn send_chunks(
    ring: &Ring<NodeAddr>,
    key: &[u8],
    upload: u64,
    mut reader: impl Read,
    options: &Options,
    progress: OnProgress<'_>,
) -> std::result::Result<Manifest, (Error, u64)> {
    let chunk_bytes = options.chunk_bytes;
    // Rendezvous channels: a chunk moves on only when the next stage is free
    // to take it, which is what bounds memory.
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(0);
    let work_rx = Mutex::new(work_rx);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let digests: Mutex<BTreeMap<u64, [u8; 16]>> = Mutex::new(BTreeMap::new());
    // Bytes stored so far; held while `progress` is told, so that it hears
    // one call at a time, never going down.
    let stored: Mutex<u64> = Mutex::new(0);

    let mut size = 0u64;
    let mut read = 0u64;
    let read_result = std::thread::scope(|s| {
        for _ in 0..options.workers {
            let free_tx = free_tx.clone();
            let (work_rx, failure, digests, stored) = (&work_rx, &failure, &digests, &stored);
            s.spawn(move || {
                let mut conns = Conns::new(options.client());
                loop {
                    // Holding the lock while waiting is the point: one idle
                    // worker waits on the channel, the others on the lock.
                    let next = work_rx.lock().recv();
                    let Ok((index, chunk)) = next else { break };
                    // After a failure, chunks are only drained, not sent.
                    if failure.lock().is_none() {
                        let digest: [u8; 16] = Md5::digest(&chunk).into();
                        match store_chunk(&mut conns, ring, key, upload, index, &chunk) {
                            Ok(()) => {
                                digests.lock().insert(index, digest);
                                let mut stored = stored.lock();
                                *stored += chunk.len() as u64;
                                progress(Progress {
                                    bytes: *stored,
                                    total: None,
                                });
                            }
                            Err(e) => {
                                failure.lock().get_or_insert(e);
                            }
                        }
                    }
                    // The reader may have gone; then the buffer is just freed.
                    let _ = free_tx.send(chunk);
                }
            });
        }
        drop(free_tx);
        let mut buffers = 0;
        let result = loop {
            if failure.lock().is_some() {
                break Ok(());
            }
            let mut buf = match free_rx.try_recv() {
                Ok(buf) => buf,
                Err(_) if buffers < options.workers + 2 => {
                    buffers += 1;
                    Vec::with_capacity(chunk_bytes)
                }
                Err(_) => match free_rx.recv() {
                    Ok(buf) => buf,
                    // Every worker is gone: only a failure does that.
                    Err(_) => break Ok(()),
                },
            };
            buf.clear();
            let n = match (&mut reader).take(chunk_bytes as u64).read_to_end(&mut buf) {
                Ok(n) => n,
                Err(e) => break Err(Error::Input(e)),
            };
            if n == 0 {
                break Ok(());
            }
            size += n as u64;
            if work_tx.send((read, buf)).is_err() {
                break Ok(());
            }
            read += 1;
            if n < chunk_bytes {
                // `take` stops short only at the end of the input.
                break Ok(());
            }
        };
        // Closing the pipeline lets every worker finish; the scope waits.
        drop(work_tx);
        result
    });
    let failed = read_result.err().or_else(|| failure.into_inner());
    if let Some(error) = failed {
        return Err((error, read));
    }
    let digests = digests.into_inner();
    debug_assert_eq!(digests.len() as u64, read);
    let chunk_md5s: Vec<[u8; 16]> = digests.into_values().collect();
    Ok(Manifest {
        upload,
        size,
        chunk_bytes: chunk_bytes as u64,
        md5: hash_list(&chunk_md5s),
        chunk_md5s,
    })
}

/// Stores one chunk at its owner; when the owner cannot be reached (or the
/// call breaks), at the next member of the chunk's preference list, which
/// routes it. A node that answers with an error decides: another would say
/// the same (a size limit, a missing quorum).
fn store_chunk(
    conns: &mut Conns,
    ring: &Ring<NodeAddr>,
    key: &[u8],
    upload: u64,
    index: u64,
    chunk: &[u8],
) -> Result<()> {
    let chunk_key = chunk_key(key, upload, index);
    let candidates = ring.owners(&chunk_key, ring.len());
    let Err(failures) = conns.call_first(&candidates, index, |c| c.store(&chunk_key, chunk)) else {
        return Ok(());
    };
    Err(Error::ChunkNotStored {
        key: shown(key),
        index,
        owner: candidates
            .first()
            .map_or_else(|| "(no member)".into(), ToString::to_string),
        reason: failures.join("; then "),
    })
}

/// Erases chunks `0..count` of upload `upload` of `key`, best effort: chunks
/// that stay behind are garbage nothing reads, so failures are only logged.
fn erase_chunks(control: &mut Conn, key: &[u8], upload: u64, count: u64) {
    for index in 0..count {
        if let Err(e) = control.erase(&chunk_key(key, upload, index)) {
            log::warn!(
                "could not erase chunk {index} of upload {upload:016x} of `{}`: {e}; it and later ones stay as garbage",
                shown(key)
            );
            return;
        }
    }
}

/// How long an upload may take from its first chunk to its manifest: half
/// the chunk grace the node reports in `stats` (after which a chunk no
/// manifest names may be collected). `None` for a node that reports none
/// (it predates collection, so nothing limits the upload).
fn commit_window(control: &mut Conn) -> Result<Option<std::time::Duration>> {
    let stats = control.stats()?;
    Ok(stats
        .get(crate::node::GRACE_STAT)
        .and_then(|&ms| u64::try_from(ms).ok())
        .map(|ms| std::time::Duration::from_millis(ms / 2)))
}

/// The manifest `key` holds now, if it holds one (read before overwriting, so
/// that the old chunks can be erased afterwards).
fn previous_manifest(control: &mut Conn, key: &[u8]) -> Result<Option<Manifest>> {
    match read_key(control, key) {
        Ok(Some(Held::Streamed(manifest))) => Ok(Some(manifest)),
        Ok(_) => Ok(None),
        // Something unreadable is not ours to clean up; overwriting it is fine.
        Err(e) if e.kind() == ErrorKind::Damaged => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a key holds, as [`read_key`] finds it.
pub(crate) enum Held {
    /// A plain value, whole.
    Plain(Vec<u8>),
    /// A streamed value's manifest.
    Streamed(Manifest),
}

/// Reads what `key` holds: `fetch` answers a plain value whole and refuses
/// a streamed one (`ErrorKind::Streamed`), whose manifest `describe` then
/// gives. (A node older than `describe` answered `fetch` with the manifest
/// itself, which is decoded as before.) A value replaced between the two
/// calls is read again.
pub(crate) fn read_key(control: &mut Conn, key: &[u8]) -> Result<Option<Held>> {
    let mut tries = 0;
    loop {
        tries += 1;
        let value = match control.fetch(key) {
            Ok(value) => value,
            Err(e) if e.kind() == ErrorKind::Streamed => match control.describe(key)? {
                crate::stream::ValueInfo {
                    manifest: Some(manifest),
                    ..
                } => return Ok(Some(Held::Streamed(manifest))),
                // Replaced by a plain value (or erased) in between.
                _ if tries < 3 => continue,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let Some(value) = value else {
            return Ok(None);
        };
        return match Manifest::decode(&value) {
            Ok(Some(manifest)) if !key.starts_with(CHUNK_PREFIX) => {
                Ok(Some(Held::Streamed(manifest)))
            }
            Ok(_) => Ok(Some(Held::Plain(value))),
            Err(reason) => Err(Error::BadManifest {
                key: shown(key),
                reason,
            }),
        };
    }
}

// ---- getting ----

/// Fetches the chunks with `workers` threads, at most `workers` chunks ahead
/// of the writer, and writes them in order on this thread.
///
/// Each chunk is checked against its own size and MD5 by the worker that
/// fetched it, in parallel (the manifest's digests were checked against its
/// hash list when it was read).
fn receive_chunks(
    ring: &Ring<NodeAddr>,
    key: &[u8],
    manifest: &Manifest,
    writer: &mut impl Write,
    stream: &Options,
    progress: OnProgress<'_>,
) -> Result<()> {
    let workers = stream.workers;
    let window = Window::new(manifest.chunks(), workers as u64);
    let mut options = stream.client();
    options.limits.max_message = options
        .limits
        .max_message
        .max(manifest.chunk_bytes as usize + REPLY_OVERHEAD);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(u64, Result<Vec<u8>>)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let window = &window;
            let options = options.clone();
            s.spawn(move || {
                let mut conns = Conns::new(options);
                while let Some(index) = window.claim() {
                    let chunk = fetch_chunk(&mut conns, ring, key, manifest, index);
                    if tx.send((index, chunk)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let written = write_in_order(&rx, manifest, writer, &window, progress);
        // Wake any worker waiting for room, so the scope can end.
        window.stop();
        written
    })
}

/// Writes chunks `0..chunks` as they arrive on `rx`, in order; stops at the
/// first chunk that failed.
fn write_in_order(
    rx: &mpsc::Receiver<(u64, Result<Vec<u8>>)>,
    manifest: &Manifest,
    writer: &mut impl Write,
    window: &Window,
    progress: OnProgress<'_>,
) -> Result<()> {
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut written = 0;
    for next in 0..manifest.chunks() {
        let chunk = loop {
            if let Some(chunk) = pending.remove(&next) {
                break chunk;
            }
            // Workers send every index they claim, and claim every index
            // while the window is open.
            let (index, chunk) = rx.recv().expect("a worker sends every claimed chunk");
            pending.insert(index, chunk?);
        };
        writer.write_all(&chunk).map_err(Error::Output)?;
        window.advance();
        written += chunk.len() as u64;
        progress(Progress {
            bytes: written,
            total: Some(manifest.size),
        });
    }
    Ok(())
}

/// Fetches one chunk from its owner, or, when the owner cannot be reached,
/// from the next member of its preference list (which routes the read), and
/// checks it against the manifest.
fn fetch_chunk(
    conns: &mut Conns,
    ring: &Ring<NodeAddr>,
    key: &[u8],
    manifest: &Manifest,
    index: u64,
) -> Result<Vec<u8>> {
    let chunk_key = manifest.chunk_key(key, index);
    let candidates = ring.owners(&chunk_key, ring.len());
    let (lookup, peer) = match conns.call_first(&candidates, index, |c| c.fetch(&chunk_key)) {
        Ok(answer) => answer,
        Err(failures) => {
            return Err(Error::ChunkNotFetched {
                key: shown(key),
                index,
                chunks: manifest.chunks(),
                owner: candidates
                    .first()
                    .map_or_else(|| "(no member)".into(), ToString::to_string),
                reason: failures.join("; then "),
            });
        }
    };
    // The owner consults the other replicas before answering "absent".
    let Some(chunk) = lookup else {
        return Err(Error::MissingChunk {
            key: shown(key),
            index,
            chunks: manifest.chunks(),
            owner: peer.to_string(),
        });
    };
    let corrupt = |reason: String| Error::CorruptChunk {
        key: shown(key),
        index,
        chunks: manifest.chunks(),
        owner: peer.to_string(),
        reason,
    };
    let want = manifest.chunk_len(index);
    if chunk.len() as u64 != want {
        return Err(corrupt(format!("{} bytes, expected {want}", chunk.len())));
    }
    let digest: [u8; 16] = Md5::digest(&chunk).into();
    if digest != manifest.chunk_md5s[index as usize] {
        return Err(corrupt(format!(
            "MD5 {}, expected {}",
            hex(&digest),
            hex(&manifest.chunk_md5s[index as usize])
        )));
    }
    Ok(chunk)
}

/// Hands out chunk indices in order, never more than `ahead` past the last
/// one written: the bounded read-ahead of a get.
struct Window {
    /// (next index to hand out, chunks written, stopped)
    state: Mutex<(u64, u64, bool)>,
    changed: Condvar,
    chunks: u64,
    ahead: u64,
}

impl Window {
    fn new(chunks: u64, ahead: u64) -> Self {
        Window {
            state: Mutex::new((0, 0, false)),
            changed: Condvar::new(),
            chunks,
            ahead: ahead.max(1),
        }
    }

    /// The next index to fetch, once it is within reach of the writer; `None`
    /// when every index was handed out or the get stopped.
    fn claim(&self) -> Option<u64> {
        let mut state = self.state.lock();
        loop {
            let (next, written, stopped) = *state;
            if stopped || next >= self.chunks {
                return None;
            }
            if next - written < self.ahead {
                state.0 += 1;
                return Some(next);
            }
            self.changed.wait(&mut state);
        }
    }

    /// One more chunk was written.
    fn advance(&self) {
        self.state.lock().1 += 1;
        self.changed.notify_one();
    }

    /// No more chunks are wanted.
    fn stop(&self) {
        self.state.lock().2 = true;
        self.changed.notify_all();
    }
}

// ---- shared ----

/// One worker's connections, one per node, opened on first use. A connection
/// whose call failed is dropped (it may be out of step with its node).
struct Conns {
    options: ClientOptions,
    open: HashMap<NodeAddr, Conn>,
}

impl Conns {
    fn new(options: ClientOptions) -> Self {
        Conns {
            options,
            open: HashMap::new(),
        }
    }

    /// Makes `call` on the first of `members` that answers, returning the
    /// answer and who gave it. A connection that fails moves on to the next
    /// member (which routes the call); a node that answers with an error
    /// decides, since another would say the same. On failure, every reason,
    /// in order.
    fn call_first<'m, R>(
        &mut self,
        members: &[&'m NodeAddr],
        index: u64,
        mut call: impl FnMut(&mut Conn) -> Result<R>,
    ) -> std::result::Result<(R, &'m NodeAddr), Vec<String>> {
        let mut failures = Vec::new();
        for &peer in members {
            match self.call(peer, &mut call) {
                Ok(answer) => return Ok((answer, peer)),
                // Another member would answer the same.
                Err(e @ Error::Remote { .. }) => {
                    failures.push(e.to_string());
                    break;
                }
                Err(e) => {
                    log::warn!("chunk {index}: {e}; trying the next member");
                    failures.push(e.to_string());
                }
            }
        }
        Err(failures)
    }

    fn call<R>(&mut self, peer: &NodeAddr, call: impl FnOnce(&mut Conn) -> Result<R>) -> Result<R> {
        let client = match self.open.entry(peer.clone()) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Conn::open(peer, &self.options)?)
            }
        };
        call(client).inspect_err(|_| {
            self.open.remove(peer);
        })
    }
}

/// The ring's members as `source` sees them.
/// The ring `control` routes with (weights included), refused if empty.
fn ring_of(control: &mut Conn) -> Result<Ring<NodeAddr>> {
    let ring = control.ring()?;
    if ring.is_empty() {
        return Err(Error::NoMembers {
            peer: control.peer().to_string(),
        });
    }
    Ok(ring)
}

/// A random 64-bit id. `RandomState` is seeded from the OS's randomness;
/// the clock and process id only add insurance against a weak seed.
/// MD5 over the chunk digests, in order: the manifest's summary of the value.
pub fn hash_list(chunk_md5s: &[[u8; 16]]) -> [u8; 16] {
    let mut list = Md5::new();
    for digest in chunk_md5s {
        list.update(digest);
    }
    list.finalize().into()
}

/// A random upload id, never 0 (`read_range` takes 0 for "no id").
pub(crate) fn fresh_upload_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// A key for messages: lossy UTF-8, since keys may be any bytes.
fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a node answered `error` deciding that nothing was stored (a
/// refusal, a size limit, a ring in flux), as opposed to a write that may
/// have been applied (a broken call, too few replicas, a failing disk).
fn nothing_stored(error: &Error) -> bool {
    matches!(error, Error::Remote { .. })
        && matches!(
            error.kind(),
            ErrorKind::Refused
                | ErrorKind::TooLarge
                | ErrorKind::TooManyHops
                | ErrorKind::Expired
                | ErrorKind::NoOwner
                | ErrorKind::Joining
                | ErrorKind::Paused
                | ErrorKind::ShuttingDown
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(size: u64, chunk_bytes: u64) -> Manifest {
        let chunks = size.div_ceil(chunk_bytes);
        let chunk_md5s: Vec<[u8; 16]> = (0..chunks).map(|i| [i as u8; 16]).collect();
        Manifest {
            upload: 0x0123_4567_89ab_cdef,
            size,
            chunk_bytes,
            md5: hash_list(&chunk_md5s),
            chunk_md5s,
        }
    }

    #[test]
    fn a_manifest_whose_digests_do_not_match_its_hash_list_is_refused() {
        let mut bytes = sample(20, 8).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(Manifest::decode(&bytes).unwrap_err().contains("hash list"));
    }

    #[test]
    fn a_manifest_decodes_to_what_was_encoded() {
        for (size, chunk) in [(0, 8), (1, 8), (8, 8), (9, 8), (100, 7)] {
            let manifest = sample(size, chunk);
            let bytes = manifest.encode();
            assert_eq!(bytes.len(), HEADER_BYTES + 16 * manifest.chunk_md5s.len());
            assert_eq!(Manifest::decode(&bytes), Ok(Some(manifest)));
        }
    }

    #[test]
    fn the_manifest_layout_is_as_documented() {
        let bytes = sample(20, 8).encode();
        assert_eq!(&bytes[..16], b"\0thrifty-stream\0");
        assert_eq!(bytes[16..20], [0, 0, 0, 1]);
        assert_eq!(bytes[20..28], 0x0123_4567_89ab_cdef_u64.to_be_bytes());
        assert_eq!(bytes[28..36], 20u64.to_be_bytes());
        assert_eq!(bytes[36..44], 8u64.to_be_bytes());
        assert_eq!(bytes[44..52], 3u64.to_be_bytes());
        assert_eq!(bytes[52..68], hash_list(&[[0; 16], [1; 16], [2; 16]]));
        assert_eq!(bytes[68 + 16..68 + 32], [1; 16]);
    }

    #[test]
    fn a_value_without_the_magic_is_not_a_manifest() {
        assert_eq!(Manifest::decode(b"hello"), Ok(None));
        assert_eq!(Manifest::decode(b""), Ok(None));
    }

    #[test]
    fn a_damaged_or_newer_manifest_is_refused_with_a_reason() {
        let good = sample(20, 8).encode();
        assert!(Manifest::decode(&good[..40]).is_err());
        assert!(Manifest::decode(&good[..good.len() - 1]).is_err());
        let mut newer = good.clone();
        newer[19] = 2;
        assert!(Manifest::decode(&newer).unwrap_err().contains("version 2"));
        let mut miscounted = good.clone();
        miscounted[51] = 4;
        assert!(Manifest::decode(&miscounted).is_err());
        let mut no_chunk_size = good;
        no_chunk_size[36..44].fill(0);
        assert!(Manifest::decode(&no_chunk_size).is_err());
    }

    #[test]
    fn chunk_keys_are_prefix_key_upload_and_index() {
        let key = chunk_key(b"big", 0x0102_0304_0506_0708, 9);
        let mut want = b"\0thrifty-chunk\0big".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(key, want);
        assert_eq!(key.len(), 3 + CHUNK_KEY_OVERHEAD);
    }

    #[test]
    fn the_last_chunk_holds_the_remainder() {
        let manifest = sample(20, 8);
        let lens: Vec<u64> = (0..manifest.chunks())
            .map(|i| manifest.chunk_len(i))
            .collect();
        assert_eq!(lens, [8, 8, 4]);
    }

    #[test]
    fn upload_ids_differ() {
        assert_ne!(fresh_upload_id(), fresh_upload_id());
    }

    #[test]
    fn bad_options_are_refused() {
        for (chunk_bytes, workers) in [(0, 4), (MAX_CHUNK_BYTES + 1, 4), (8, 0)] {
            let options = Options {
                chunk_bytes,
                workers,
                secret: None,
                tls: None,
            };
            assert!(matches!(options.check(), Err(Error::BadOptions { .. })));
        }
        assert!(Options::default().check().is_ok());
    }

    #[test]
    fn the_read_ahead_window_never_runs_more_than_its_width_ahead() {
        let window = Window::new(5, 2);
        assert_eq!(window.claim(), Some(0));
        assert_eq!(window.claim(), Some(1));
        std::thread::scope(|s| {
            let third = s.spawn(|| window.claim());
            // The claim waits for the writer; advancing releases exactly one.
            window.advance();
            assert_eq!(third.join().unwrap(), Some(2));
        });
        window.stop();
        assert_eq!(window.claim(), None);
    }
}
