//! The value envelope: how a stored value carries its metadata (a content
//! type, a description) and whether it is LZ4-compressed, in band, so that
//! replication, handoff, anti-entropy and both engines move and keep it as
//! the plain bytes they always did. Pure: no node, no I/O.
//!
//! # Format
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic `"\0tp-val\0"` ([`MAGIC`]) |
//! | 8 | flags: 1 LZ4 block, 2 content type, 4 description (others: damage) |
//! | +8 | with LZ4: the raw size, u64 big-endian |
//! | +2+n | with a content type: its length (u16 BE) and UTF-8 bytes |
//! | +2+n | with a description: the same |
//! | rest | the value: raw, or one LZ4 block of the raw size |
//!
//! # Why this shape
//!
//! - **Most values carry no envelope at all**: a value without metadata,
//!   below the compression threshold (or that does not compress) and not
//!   starting with [`MAGIC`] is stored as it is, so the hot paths (`fetch`,
//!   `store`, the 2009 `get`/`put`) pay one 8-byte compare, and the
//!   stored bytes of every value written before this format are read back
//!   unchanged (none of them was enveloped; the magic begins with a zero
//!   byte, which no 2009 string value and few binary ones start with).
//! - **Unambiguous**: a client's value that happens to begin with
//!   [`MAGIC`] is stored enveloped (flags 0, nine bytes more), so reading it
//!   back returns exactly what was written, as [`crate::stream`] does for
//!   its own magic.
//! - **In band, not beside the value**: the version, the replication
//!   messages, the store engines and anti-entropy's digests all stay as they
//!   are, and a replica that never decodes a value (it only stores and
//!   forwards it) cannot get metadata and value out of step: they are one
//!   write with one version.
//! - **Bounded decode**: the raw size is checked against a limit (the
//!   node's `--max-value-bytes`) and against what an LZ4 block of that
//!   length can expand to (at most 255 times, plus a little) before
//!   anything is allocated, and the block must fill exactly that size; a
//!   damaged or hostile value is an error, never a panic or a huge buffer.
//! - **Compression decided on a sample**: a value at or above the threshold
//!   has a slice of [`SAMPLE_BYTES`] compressed first; only if that saves at
//!   least an eighth is the whole value compressed (and kept compressed only
//!   if the whole saves an eighth too). Incompressible values (already
//!   compressed media, random bytes) so cost a few microseconds, not a
//!   compression of the whole value.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

/// The envelope's first bytes.
pub const MAGIC: [u8; 8] = *b"\0tp-val\0";

/// The longest content type stored with a value, in bytes.
pub const MAX_CONTENT_TYPE: usize = 256;

/// The longest description stored with a value, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// How much of a value is compressed first to judge whether it compresses.
pub const SAMPLE_BYTES: usize = 4096;

/// The compression threshold a node uses unless told otherwise
/// (`location --compress-above`): 0, off.
///
/// Off by default because it is a trade a user should choose: the node the
/// client called spends CPU compressing (a 64 KiB compressible value's
/// `put` ran at under half the rate in `storebench` on this project's
/// 2-core machines, and its `get` at two thirds), the blobs this store is
/// for (NumPy arrays of floats, pickles) rarely compress by an eighth, and
/// the in-flight budget charges a read by its stored size, so compressed
/// replies are undercounted by their ratio. For text-like values 4096 is a
/// good threshold: below 4 KiB a value is a few network packets whatever
/// its compression, LZ4's fixed cost (its hash table) is a visible share of
/// the work, and the envelope's 17 bytes are not worth it.
pub const DEFAULT_COMPRESS_ABOVE: usize = 0;

const LZ4: u8 = 1;
const CONTENT_TYPE: u8 = 2;
const DESCRIPTION: u8 = 4;
const KNOWN: u8 = LZ4 | CONTENT_TYPE | DESCRIPTION;

/// What is stored with a value beside its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// A content type, e.g. `text/plain` (at most [`MAX_CONTENT_TYPE`] bytes).
    pub content_type: Option<String>,
    /// A short description (at most [`MAX_DESCRIPTION`] bytes).
    pub description: Option<String>,
}

impl Meta {
    /// Whether there is no metadata.
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none() && self.description.is_none()
    }

    /// Refuses metadata over its limits, saying which and by how much.
    pub fn check(&self) -> Result<(), String> {
        let over = |what: &str, text: &Option<String>, max: usize| match text {
            Some(text) if text.len() > max => Err(format!(
                "the {what} is {} bytes, at most {max} are stored with a value; shorten it",
                text.len()
            )),
            _ => Ok(()),
        };
        over("content type", &self.content_type, MAX_CONTENT_TYPE)?;
        over("description", &self.description, MAX_DESCRIPTION)
    }
}

/// How a write is made beyond its key and value (the IDL's `WriteOptions`;
/// [`crate::Client::put_with`]). The default writes as a plain `put`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write only if the key holds no value (a tombstone does not count);
    /// otherwise fail with [`crate::Error::Exists`], changing nothing.
    pub create_only: bool,
    /// The metadata to store with the value (an append keeps the value's
    /// own, and uses these only when it creates the key).
    pub meta: Meta,
    /// A lease token (`lock`): the write is refused if a newer lease on the
    /// key was granted. Nodes without leases refuse fenced writes.
    pub fence: Option<i64>,
}

impl WriteOptions {
    /// Create-only: fail with [`crate::Error::Exists`] if the key holds a value.
    pub fn create_only(mut self) -> Self {
        self.create_only = true;
        self
    }

    /// With this content type stored with the value.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.meta.content_type = Some(content_type.into());
        self
    }

    /// With this description stored with the value.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = Some(description.into());
        self
    }
}

/// A value as stored: its bytes (borrowed when stored as given) and, if
/// compressed, its raw size.
#[derive(Debug)]
pub struct Sealed<'a> {
    /// The bytes to store.
    pub bytes: Cow<'a, [u8]>,
    /// `Some(raw size)` when the value was compressed.
    pub compressed: Option<usize>,
}

/// The stored form of `value` with `meta`: compressed when it is at least
/// `compress_above` bytes (0: never) and compressing saves an eighth;
/// enveloped when it has metadata, is compressed, or begins with [`MAGIC`];
/// otherwise `value` itself. `meta` must have passed [`Meta::check`].
pub fn seal<'a>(value: &'a [u8], meta: &Meta, compress_above: usize) -> Sealed<'a> {
    let compressed = if compress_above > 0 && value.len() >= compress_above {
        compress(value)
    } else {
        None
    };
    if compressed.is_none() && meta.is_empty() && !value.starts_with(&MAGIC) {
        return Sealed {
            bytes: Cow::Borrowed(value),
            compressed: None,
        };
    }
    let body: &[u8] = compressed.as_deref().unwrap_or(value);
    let mut out = Vec::with_capacity(header_len(meta, compressed.is_some()) + body.len());
    out.extend_from_slice(&MAGIC);
    let mut flags = 0;
    if compressed.is_some() {
        flags |= LZ4;
    }
    if meta.content_type.is_some() {
        flags |= CONTENT_TYPE;
    }
    if meta.description.is_some() {
        flags |= DESCRIPTION;
    }
    out.push(flags);
    if compressed.is_some() {
        out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    }
    for text in [&meta.content_type, &meta.description]
        .into_iter()
        .flatten()
    {
        // Meta::check bounds both far below u16::MAX.
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(body);
    Sealed {
        bytes: Cow::Owned(out),
        compressed: compressed.map(|_| value.len()),
    }
}

fn header_len(meta: &Meta, compressed: bool) -> usize {
    let texts: usize = [&meta.content_type, &meta.description]
        .into_iter()
        .flatten()
        .map(|t| 2 + t.len())
        .sum();
    MAGIC.len() + 1 + if compressed { 8 } else { 0 } + texts
}

/// `value` LZ4-compressed, if a sample and then the whole save an eighth.
fn compress(value: &[u8]) -> Option<Vec<u8>> {
    let saves = |raw: usize, packed: usize| packed <= raw - raw / 8;
    if value.len() > SAMPLE_BYTES {
        // The middle of the value: headers at its start say little of it.
        let start = (value.len() - SAMPLE_BYTES) / 2;
        let sample = &value[start..start + SAMPLE_BYTES];
        let mut out = vec![0; lz4_flex::block::get_maximum_output_size(SAMPLE_BYTES)];
        let packed = lz4_flex::block::compress_into(sample, &mut out).ok()?;
        if !saves(SAMPLE_BYTES, packed) {
            return None;
        }
    }
    let mut out = vec![0; lz4_flex::block::get_maximum_output_size(value.len())];
    let packed = lz4_flex::block::compress_into(value, &mut out).ok()?;
    if !saves(value.len(), packed) {
        return None;
    }
    out.truncate(packed);
    Some(out)
}

/// A stored value's envelope, read without touching its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The metadata.
    pub meta: Meta,
    /// `Some(raw size)` when the body is compressed.
    pub raw_size: Option<usize>,
    /// Where the body starts.
    pub body: usize,
}

/// The envelope of `stored`, `None` when it has none (the value is stored
/// as it is). `Err` says how it is damaged.
pub fn header(stored: &[u8]) -> Result<Option<Header>, String> {
    if !stored.starts_with(&MAGIC) {
        return Ok(None);
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = at
            .checked_add(n)
            .filter(|&end| end <= stored.len())
            .ok_or_else(|| format!("its envelope is cut short at byte {at}"))?;
        let bytes = &stored[*at..end];
        *at = end;
        Ok(bytes)
    };
    let flags = take(&mut at, 1)?[0];
    if flags & !KNOWN != 0 {
        return Err(format!("its envelope has unknown flags {flags:#04x}"));
    }
    let raw_size = if flags & LZ4 != 0 {
        let size = u64::from_be_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
        Some(usize::try_from(size).map_err(|_| format!("its raw size {size} is too large"))?)
    } else {
        None
    };
    let text = |at: &mut usize, present: bool| -> Result<Option<String>, String> {
        if !present {
            return Ok(None);
        }
        let len = u16::from_be_bytes(take(at, 2)?.try_into().expect("2 bytes")) as usize;
        let bytes = take(at, len)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| "its metadata is not UTF-8".to_string())
    };
    let content_type = text(&mut at, flags & CONTENT_TYPE != 0)?;
    let description = text(&mut at, flags & DESCRIPTION != 0)?;
    Ok(Some(Header {
        meta: Meta {
            content_type,
            description,
        },
        raw_size,
        body: at,
    }))
}

/// The size a client sees of the value stored as `stored`, read from the
/// envelope alone.
pub fn raw_len(stored: &[u8]) -> Result<usize, String> {
    Ok(match header(stored)? {
        None => stored.len(),
        Some(Header {
            raw_size: Some(size),
            ..
        }) => size,
        Some(header) => stored.len() - header.body,
    })
}

/// A stored value, opened: what the client wrote, its metadata, and the
/// bytes it occupies in the store when it is compressed.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The value as the client wrote it.
    pub value: Vec<u8>,
    /// Its metadata.
    pub meta: Meta,
    /// `Some(stored bytes)` when stored compressed.
    pub stored_bytes: Option<usize>,
}

/// Opens the value stored as `stored`, whose raw size may be at most
/// `limit` bytes. A value without an envelope is returned as it is (no
/// copy). `Err` says how the stored bytes are damaged.
pub fn open(stored: Vec<u8>, limit: usize) -> Result<Opened, String> {
    let Some(header) = header(&stored)? else {
        return Ok(Opened {
            value: stored,
            meta: Meta::default(),
            stored_bytes: None,
        });
    };
    let body = &stored[header.body..];
    let (value, stored_bytes) = match header.raw_size {
        None => (body.to_vec(), None),
        Some(size) => {
            if size > limit {
                return Err(format!(
                    "its raw size {size} is over the node's limit of {limit} bytes"
                ));
            }
            // One LZ4 block expands at most ~255 times its length.
            if size > body.len().saturating_mul(255).saturating_add(16) {
                return Err(format!(
                    "its raw size {size} is more than {} compressed bytes can hold",
                    body.len()
                ));
            }
            let mut value = vec![0; size];
            match lz4_flex::block::decompress_into(body, &mut value) {
                Ok(n) if n == size => {}
                Ok(n) => return Err(format!("it decompresses to {n} bytes, not {size}")),
                Err(e) => return Err(format!("it does not decompress: {e}")),
            }
            (value, Some(stored.len()))
        }
    };
    Ok(Opened {
        value,
        meta: header.meta,
        stored_bytes,
    })
}

/// What a node compressed since it started, for `stats`: the writes it
/// sealed compressed, their raw bytes and their stored bytes (the ratio is
/// stored / raw). Counted by the node that sealed a write (the node its
/// client called), once per write, not per replica.
#[derive(Debug, Default)]
pub struct Compression {
    writes: AtomicU64,
    raw: AtomicU64,
    stored: AtomicU64,
}

impl Compression {
    /// Counts one value of `raw` bytes stored as `stored` bytes.
    pub fn note(&self, raw: usize, stored: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.raw.fetch_add(raw as u64, Ordering::Relaxed);
        self.stored.fetch_add(stored as u64, Ordering::Relaxed);
    }

    /// `(writes, raw bytes, stored bytes)` so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.raw.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ct: &str, d: &str) -> Meta {
        Meta {
            content_type: Some(ct.into()),
            description: Some(d.into()),
        }
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        // xorshift: incompressible enough for LZ4, and seed-stable.
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn round_trip(value: &[u8], meta: &Meta, above: usize) -> Opened {
        let sealed = seal(value, meta, above);
        let opened = open(sealed.bytes.into_owned(), usize::MAX).unwrap();
        assert_eq!(opened.value, value);
        assert_eq!(&opened.meta, meta);
        opened
    }

    #[test]
    fn a_plain_small_value_is_stored_as_it_is() {
        let sealed = seal(b"hello", &Meta::default(), 4096);
        assert!(matches!(sealed.bytes, Cow::Borrowed(b"hello")));
        assert_eq!(header(b"hello").unwrap(), None);
        assert_eq!(raw_len(b"hello").unwrap(), 5);
    }

    #[test]
    fn a_value_beginning_with_the_magic_is_enveloped_and_read_back_exactly() {
        let mut value = MAGIC.to_vec();
        value.extend_from_slice(&[LZ4, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2]);
        let sealed = seal(&value, &Meta::default(), 0);
        assert_eq!(sealed.bytes.len(), value.len() + 9);
        assert_eq!(raw_len(&sealed.bytes).unwrap(), value.len());
        round_trip(&value, &Meta::default(), 0);
        round_trip(&MAGIC, &Meta::default(), 4096);
    }

    #[test]
    fn metadata_round_trips_with_and_without_compression() {
        let m = meta("text/plain; charset=utf-8", "a note, with ünïcode");
        round_trip(b"short", &m, 4096);
        let long = b"the same line again and again\n".repeat(1000);
        let opened = round_trip(&long, &m, 4096);
        assert!(opened.stored_bytes.unwrap() < long.len() / 4);
        let only_type = Meta {
            content_type: Some("a/b".into()),
            description: None,
        };
        round_trip(b"", &only_type, 0);
    }

    #[test]
    fn compressible_values_at_the_threshold_are_compressed_and_below_it_not() {
        let value = vec![b'a'; 4096];
        assert_eq!(seal(&value, &Meta::default(), 4096).compressed, Some(4096));
        assert_eq!(
            seal(&value[..4095], &Meta::default(), 4096).compressed,
            None
        );
        assert_eq!(seal(&value, &Meta::default(), 0).compressed, None);
    }

    #[test]
    fn incompressible_values_are_stored_plain_without_an_envelope() {
        let value = random(64 * 1024, 7);
        let sealed = seal(&value, &Meta::default(), 4096);
        assert_eq!(sealed.compressed, None);
        assert!(matches!(sealed.bytes, Cow::Borrowed(_)));
    }

    #[test]
    fn a_raw_size_over_the_limit_is_refused_before_allocating() {
        let value = vec![0u8; 100_000];
        let sealed = seal(&value, &Meta::default(), 1).bytes.into_owned();
        let error = open(sealed.clone(), 99_999).unwrap_err();
        assert!(error.contains("over the node's limit"), "{error}");
        // A forged raw size of 2^60 on a short body.
        let mut forged = sealed[..9].to_vec();
        forged.extend_from_slice(&(1u64 << 60).to_be_bytes());
        forged.extend_from_slice(&sealed[17..]);
        assert!(open(forged, usize::MAX).unwrap_err().contains("can hold"));
    }

    #[test]
    fn damaged_envelopes_are_errors_never_panics() {
        let good = seal(&b"abcdefgh".repeat(2000), &meta("t", "d"), 1)
            .bytes
            .into_owned();
        // Every prefix, and every single-byte change of the header and body start.
        for cut in 0..good.len().min(200) {
            let _ = open(good[..cut].to_vec(), 1 << 20);
        }
        for at in 0..good.len().min(200) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let _ = open(bad, 1 << 20);
            }
        }
        let mut unknown = MAGIC.to_vec();
        unknown.push(0x40);
        assert!(open(unknown, 10).unwrap_err().contains("unknown flags"));
        let mut short = good.clone();
        short.truncate(good.len() - 5);
        assert!(open(short, 1 << 20).is_err());
    }

    #[test]
    fn metadata_over_its_limits_is_refused_clearly() {
        let long = Meta {
            content_type: Some("x".repeat(MAX_CONTENT_TYPE + 1)),
            description: None,
        };
        assert!(
            long.check()
                .unwrap_err()
                .contains("content type is 257 bytes")
        );
        let fine = meta(&"x".repeat(MAX_CONTENT_TYPE), &"y".repeat(MAX_DESCRIPTION));
        assert!(fine.check().is_ok());
    }
}
