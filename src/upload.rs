//! The uploads in parts a node holds open (`begin_upload`, `upload_part`,
//! `commit_upload` in the IDL): a bounded table of plain data, time passed
//! in, so its rules are unit-tested without a ring.
//!
//! Why the state lives on the node a client talks to, not in the ring: the
//! parts themselves are stored like any value (under
//! [`crate::stream::chunk_key`], replicated, routed), so all the table keeps
//! per part is its length and MD5, which the manifest needs at commit. A
//! node that dies takes its open uploads with it; their parts are collected
//! like those of any upload that never committed (`node::collect`), and the
//! client begins again elsewhere. Keeping the table on one node costs a
//! client nothing (any node routes its parts) and needs no agreement.
//!
//! Bounds, since any client may open uploads: [`MAX_OPEN`] uploads,
//! [`MAX_PARTS`] parts each, [`MAX_TABLE_PARTS`] parts recorded in all (a
//! few dozen bytes each), and an upload expires `window` after it began
//! (half the chunk grace: after the grace, a part no manifest names may be
//! collected, so a later commit could point at nothing; the same rule as
//! [`crate::error::Error::UploadTooSlow`] for the Rust client's uploads).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::stream::{Manifest, hash_list};

/// Most uploads open on one node at once.
pub const MAX_OPEN: usize = 256;

/// Most parts in one upload (indices `0..MAX_PARTS`): 512 GiB in parts of
/// 8 MiB, 4 GiB in parts of 64 KiB; the manifest then takes 1 MiB.
pub const MAX_PARTS: u64 = 1 << 16;

/// Most parts recorded across every open upload (about 60 bytes each in
/// the table: 60 MiB at most).
pub const MAX_TABLE_PARTS: usize = 1 << 20;

/// Longest range one `read_range` answers: two parts of the default 8 MiB.
pub const MAX_RANGE_BYTES: usize = 16 << 20;

/// Most parts one `read_range` reads (a range over parts smaller than
/// 16 KiB must be shorter): each part is a quorum read among the replicas,
/// so one call must not fan out into millions of them.
pub const MAX_RANGE_PARTS: u64 = 1024;

/// One part as the table knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Being stored now: another upload of the same index is refused, and
    /// so is a commit.
    Writing,
    /// Stored: its length and MD5, for the manifest.
    Stored { len: u64, md5: [u8; 16] },
}

/// An open upload.
#[derive(Debug)]
struct Open {
    key: Vec<u8>,
    began: Instant,
    parts: BTreeMap<u64, Part>,
}

/// The open uploads of one node.
#[derive(Debug)]
pub struct Uploads {
    open: HashMap<u64, Open>,
    /// How long an upload stays open after it began.
    window: Duration,
    /// Parts recorded in all open uploads.
    parts: usize,
}

/// A key as messages show it.
pub(crate) fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Uploads {
    /// An empty table whose uploads stay open `window` after they began.
    pub fn new(window: Duration) -> Uploads {
        Uploads {
            open: HashMap::new(),
            window,
            parts: 0,
        }
    }

    /// Opens upload `upload` (a fresh random id) of `key`.
    pub fn begin(&mut self, key: &[u8], upload: u64, now: Instant) -> Result<()> {
        self.expire(now);
        if self.open.len() >= MAX_OPEN {
            return Err(Error::refused_here(format!(
                "this node already holds {MAX_OPEN} open uploads, its limit; commit or abandon some (an upload expires {} s after it began), or use another node",
                self.window.as_secs()
            )));
        }
        self.open.insert(
            upload,
            Open {
                key: key.to_vec(),
                began: now,
                parts: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The open upload `upload` of `key`, or why there is none.
    fn find(&mut self, key: &[u8], upload: u64, now: Instant) -> Result<&mut Open> {
        let no_such = |reason: &str| Error::NoSuchUpload {
            key: shown(key),
            upload,
            reason: reason.into(),
        };
        match self.open.get(&upload) {
            None => {
                return Err(no_such("never begun here, already committed, or expired"));
            }
            Some(open) if open.key != key => return Err(no_such("it belongs to another key")),
            Some(open) if now.duration_since(open.began) > self.window => {
                let window = self.window;
                self.close(upload);
                return Err(no_such(&format!(
                    "it expired: an upload must commit within {} s of begin_upload (half of --chunk-grace)",
                    window.as_secs()
                )));
            }
            Some(_) => {}
        }
        Ok(self.open.get_mut(&upload).expect("found above"))
    }

    /// Marks part `index` of `len` bytes as being stored, after checking
    /// it against the bounds (`max_len`: the node's largest value).
    pub fn start_part(
        &mut self,
        key: &[u8],
        upload: u64,
        index: u64,
        len: usize,
        max_len: usize,
        now: Instant,
    ) -> Result<()> {
        if index >= MAX_PARTS {
            return Err(Error::refused_here(format!(
                "part index {index} is out of range: an upload has at most {MAX_PARTS} parts (0 to {}); use larger parts",
                MAX_PARTS - 1
            )));
        }
        if len == 0 {
            return Err(Error::refused_here(format!(
                "part {index} is empty: every part holds at least one byte"
            )));
        }
        if len > max_len {
            return Err(Error::TooLarge {
                size: len,
                limit: max_len,
            });
        }
        let full = self.parts >= MAX_TABLE_PARTS;
        let open = self.find(key, upload, now)?;
        let added = match open.parts.get(&index) {
            Some(Part::Writing) => {
                return Err(Error::refused_here(format!(
                    "part {index} of upload {upload} is being stored by another call; wait for it, then send it again if need be"
                )));
            }
            Some(Part::Stored { .. }) => false,
            None if full => {
                return Err(Error::refused_here(format!(
                    "this node records at most {MAX_TABLE_PARTS} parts across its open uploads; commit some, or use larger parts"
                )));
            }
            None => true,
        };
        open.parts.insert(index, Part::Writing);
        self.parts += usize::from(added);
        Ok(())
    }

    /// Records how storing part `index` ended: its length and MD5
    /// ([`digest`]) when stored, `None` when the write failed (the part is
    /// then missing; send it again).
    pub fn finish_part(&mut self, upload: u64, index: u64, stored: Option<(u64, [u8; 16])>) {
        let Some(open) = self.open.get_mut(&upload) else {
            // Expired (or committed) meanwhile: nothing to record.
            return;
        };
        match stored {
            Some((len, md5)) => {
                open.parts.insert(index, Part::Stored { len, md5 });
            }
            None => {
                if open.parts.remove(&index).is_some() {
                    self.parts -= 1;
                }
            }
        }
    }

    /// The manifest that commits upload `upload` of `key`, if its parts
    /// make a value: parts `0..n` all stored, all but the last of one
    /// length, the last no longer. The upload stays open (see
    /// [`Uploads::close`]), so a commit that fails later can be retried.
    pub fn plan(&mut self, key: &[u8], upload: u64, now: Instant) -> Result<Manifest> {
        let open = self.find(key, upload, now)?;
        let count = open.parts.len() as u64;
        if count == 0 {
            return Err(Error::refused_here(format!(
                "upload {upload} of `{}` has no parts; send them with upload_part (an empty value is stored with `store`)",
                shown(key)
            )));
        }
        let mut chunk_md5s = Vec::with_capacity(open.parts.len());
        let mut size = 0u64;
        let mut part_bytes = 0u64;
        for (expected, (&index, part)) in (0u64..).zip(&open.parts) {
            if index != expected {
                return Err(Error::refused_here(format!(
                    "part {expected} of upload {upload} is missing (the upload has {count} parts, up to index {}); send it, then commit again; the key is unchanged",
                    open.parts.keys().next_back().expect("not empty")
                )));
            }
            let Part::Stored { len, md5 } = *part else {
                return Err(Error::refused_here(format!(
                    "part {index} of upload {upload} is still being stored; commit once every upload_part has answered"
                )));
            };
            if index == 0 {
                part_bytes = len;
            }
            let last = index + 1 == count;
            if (!last && len != part_bytes) || len > part_bytes {
                return Err(Error::refused_here(format!(
                    "part {index} of upload {upload} holds {len} bytes, and part 0 holds {part_bytes}: every part but the last must be as long as part 0, the last no longer; send it again, then commit; the key is unchanged"
                )));
            }
            size += len;
            chunk_md5s.push(md5);
        }
        Ok(Manifest {
            upload,
            size,
            chunk_bytes: part_bytes,
            md5: hash_list(&chunk_md5s),
            chunk_md5s,
        })
    }

    /// Forgets upload `upload` (committed, or expired).
    pub fn close(&mut self, upload: u64) {
        if let Some(open) = self.open.remove(&upload) {
            self.parts -= open.parts.len();
        }
    }

    /// Forgets every upload older than the window. Their parts stay in the
    /// store until collected, as those of any upload that never committed.
    fn expire(&mut self, now: Instant) {
        let window = self.window;
        let expired: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, open)| now.duration_since(open.began) > window)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.close(id);
        }
    }
}

/// A part's length and MD5, as [`Uploads::finish_part`] records them
/// (computed outside the table's lock: MD5 takes ~0.1 s per 64 MiB).
pub fn digest(data: &[u8]) -> (u64, [u8; 16]) {
    (data.len() as u64, Md5::digest(data).into())
}

/// Which parts `first..=last` of a value in parts of `part_bytes` hold the
/// bytes `offset..end`, and where the range starts in the first part. All
/// in `u64`: values of 4 GiB and more are ordinary.
pub fn parts_of_range(offset: u64, end: u64, part_bytes: u64) -> Option<(u64, u64, u64)> {
    if end <= offset || part_bytes == 0 {
        return None;
    }
    let first = offset / part_bytes;
    let last = (end - 1) / part_bytes;
    Some((first, last, offset - first * part_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const WINDOW: Duration = Duration::from_secs(300);
    const MAX: usize = 64 << 20;

    fn stored(table: &mut Uploads, key: &[u8], upload: u64, index: u64, data: &[u8]) {
        let now = Instant::now();
        table
            .start_part(key, upload, index, data.len(), MAX, now)
            .unwrap();
        table.finish_part(upload, index, Some(digest(data)));
    }

    #[test]
    fn parts_in_any_order_commit_to_the_manifest_a_streamed_put_would_write() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        table.begin(b"k", 9, now).unwrap();
        stored(&mut table, b"k", 9, 2, b"ef");
        stored(&mut table, b"k", 9, 0, b"abc");
        stored(&mut table, b"k", 9, 1, b"bcd");
        let manifest = table.plan(b"k", 9, now).unwrap();
        assert_eq!(manifest.size, 8);
        assert_eq!(manifest.chunk_bytes, 3);
        assert_eq!(manifest.chunks(), 3);
        assert_eq!(manifest.chunk_md5s[2], <[u8; 16]>::from(Md5::digest(b"ef")));
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), Some(manifest));
    }

    #[test]
    fn a_commit_with_a_missing_part_is_refused_and_names_it() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        table.begin(b"k", 1, now).unwrap();
        stored(&mut table, b"k", 1, 0, b"ab");
        stored(&mut table, b"k", 1, 2, b"a");
        let error = table.plan(b"k", 1, now).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Refused);
        assert!(
            error.to_string().contains("part 1 of upload 1 is missing"),
            "{error}"
        );
        // Still open: the missing part can be sent and the commit retried.
        stored(&mut table, b"k", 1, 1, b"cd");
        assert_eq!(table.plan(b"k", 1, now).unwrap().size, 5);
    }

    #[test]
    fn parts_of_unequal_length_are_refused_at_commit() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        table.begin(b"k", 1, now).unwrap();
        stored(&mut table, b"k", 1, 0, b"ab");
        stored(&mut table, b"k", 1, 1, b"abc");
        let error = table.plan(b"k", 1, now).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("part 1 of upload 1 holds 3 bytes"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_upload_and_a_part_still_being_stored_cannot_commit() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        table.begin(b"k", 1, now).unwrap();
        assert!(
            table
                .plan(b"k", 1, now)
                .unwrap_err()
                .to_string()
                .contains("no parts")
        );
        table.start_part(b"k", 1, 0, 3, MAX, now).unwrap();
        let error = table.plan(b"k", 1, now).unwrap_err();
        assert!(error.to_string().contains("still being stored"), "{error}");
        let twice = table.start_part(b"k", 1, 0, 3, MAX, now).unwrap_err();
        assert!(
            twice.to_string().contains("being stored by another call"),
            "{twice}"
        );
        // A failed write leaves the part missing, to be sent again.
        table.finish_part(1, 0, None);
        assert_eq!(table.parts, 0);
        stored(&mut table, b"k", 1, 0, b"abc");
        assert_eq!(table.plan(b"k", 1, now).unwrap().size, 3);
    }

    #[test]
    fn hostile_parts_are_refused_before_anything_is_stored() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        table.begin(b"k", 1, now).unwrap();
        let too_far = table
            .start_part(b"k", 1, MAX_PARTS, 1, MAX, now)
            .unwrap_err();
        assert!(too_far.to_string().contains("out of range"), "{too_far}");
        let empty = table.start_part(b"k", 1, 0, 0, MAX, now).unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let big = table.start_part(b"k", 1, 0, MAX + 1, MAX, now).unwrap_err();
        assert_eq!(big.kind(), ErrorKind::TooLarge);
        let other_key = table.start_part(b"j", 1, 0, 1, MAX, now).unwrap_err();
        assert_eq!(other_key.kind(), ErrorKind::NoSuchUpload);
        let unknown = table.start_part(b"k", 2, 0, 1, MAX, now).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NoSuchUpload);
        assert_eq!(table.parts, 0);
    }

    #[test]
    fn no_more_than_the_limit_of_uploads_is_open_at_once() {
        let mut table = Uploads::new(WINDOW);
        let now = Instant::now();
        for id in 0..MAX_OPEN as u64 {
            table.begin(b"k", id + 1, now).unwrap();
        }
        let error = table.begin(b"k", 9999, now).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Refused);
        assert!(error.to_string().contains("256 open uploads"), "{error}");
        table.close(1);
        table.begin(b"k", 9999, now).unwrap();
    }

    #[test]
    fn an_upload_expires_after_the_window_and_makes_room() {
        let mut table = Uploads::new(WINDOW);
        let start = Instant::now();
        table.begin(b"k", 1, start).unwrap();
        stored(&mut table, b"k", 1, 0, b"a");
        let late = start + WINDOW + Duration::from_millis(1);
        let error = table.plan(b"k", 1, late).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NoSuchUpload);
        assert!(error.to_string().contains("expired"), "{error}");
        assert_eq!((table.open.len(), table.parts), (0, 0));
        for id in 0..MAX_OPEN as u64 {
            table.begin(b"k", id + 10, start).unwrap();
        }
        // Every one of those expires before the next begin.
        table.begin(b"k", 5, late).unwrap();
        assert_eq!(table.open.len(), 1);
    }

    #[test]
    fn four_gib_and_more_is_ordinary_arithmetic() {
        // 512 parts of 8 MiB: 4 GiB; the manifest is what a commit writes.
        let part: u64 = 8 << 20;
        let manifest = Manifest {
            upload: 1,
            size: 512 * part + 5,
            chunk_bytes: part,
            md5: hash_list(&vec![[0; 16]; 513]),
            chunk_md5s: vec![[0; 16]; 513],
        };
        assert_eq!(manifest.size, (4u64 << 30) + 5);
        assert_eq!(manifest.chunk_len(512), 5);
        assert_eq!(manifest.chunk_len(511), part);
        assert_eq!(
            Manifest::decode(&manifest.encode()).unwrap(),
            Some(manifest)
        );
        // A range across the 4 GiB mark: the last full part and the short one.
        let four = 4u64 << 30;
        assert_eq!(
            parts_of_range(four - 3, four + 2, part),
            Some((511, 512, part - 3))
        );
        assert_eq!(
            parts_of_range(five_gib(), five_gib() + 1, part),
            Some((640, 640, 0))
        );
        assert_eq!(parts_of_range(10, 10, part), None);
        // The bound on parts still allows 4 GiB in 64 KiB parts.
        assert!(MAX_PARTS * (64 << 10) >= four);
    }

    fn five_gib() -> u64 {
        5 << 30
    }
}
