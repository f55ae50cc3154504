//! Large values for any Thrift client (README, "Large values"): what a key
//! holds (`describe`), any byte range of it (`read_range`), and uploads in
//! parts committed all at once (`begin_upload`, `upload_part`,
//! `commit_upload`).
//!
//! The format is the Rust client's ([`crate::stream`]): parts are chunks
//! under [`chunk_key`], a manifest at the key names them. Here the node the
//! client calls does that work, through its ordinary routed and replicated
//! reads and writes (exactly as a client's `fetch` and `store` would), so a
//! client needs nothing but the IDL and a buffer of one range or one part.
//!
//! - A range read reads the key (a quorum read, like `fetch`), then the
//!   chunks covering the range, a few at a time, each checked against its
//!   MD5 in the manifest. With the value's `id`, a key that now holds another
//!   value answers [`Error::Changed`]; a chunk that went missing is told
//!   apart from damage by reading the key again (a replaced value's chunks
//!   are erased after its commit).
//! - A part is stored like any value; the node records its length and MD5
//!   in its [`Uploads`] table. The commit checks the parts, writes the
//!   manifest at the key (the one write that switches readers from the old
//!   value to the new), then erases the previous streamed value's chunks,
//!   best effort, as [`crate::stream::put`] does; what stays behind is
//!   collected (`node::collect`).

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use md5::{Digest, Md5};
use tokio::time::Instant;

use super::Node;
use crate::config::MAX_KEY_BYTES;
use crate::error::{Error, Result};
use crate::stream::{CHUNK_KEY_OVERHEAD, Manifest, ValueInfo, chunk_key, streamed_manifest};
use crate::upload::{self, MAX_RANGE_BYTES, MAX_RANGE_PARTS, shown};

/// Parts a range read fetches at once.
const READ_AHEAD: usize = 4;

/// What a key holds, read once: the value's facts and, for a plain value,
/// its bytes.
struct Held {
    info: ValueInfo,
    plain: Option<Vec<u8>>,
}

impl Node {
    /// The most memory one `read_range` can hold while this node answers
    /// it, whatever it asks: a plain value read whole, or the parts covering
    /// the range (at most two whole parts beyond it), plus the range and its
    /// reply. The server reserves this much of the in-flight budget before
    /// serving one, so many small reads across large parts cannot add up
    /// past the budget.
    pub fn read_range_room(&self) -> usize {
        let part = self.config.max_value_bytes;
        part.saturating_mul(2)
            .saturating_add(self.longest_range().saturating_mul(5))
    }

    /// The longest range `read_range` answers: [`MAX_RANGE_BYTES`], and no
    /// reply larger than the node's largest message either.
    fn longest_range(&self) -> usize {
        MAX_RANGE_BYTES.min(self.config.max_value_bytes)
    }

    /// What the key holds (a read of the key, as a client's `fetch` makes).
    pub async fn describe(self: &Arc<Self>, key: &[u8]) -> Result<ValueInfo> {
        Ok(self.held(key).await?.info)
    }

    async fn held(self: &Arc<Self>, key: &[u8]) -> Result<Held> {
        let copy = self.fetch_copy(key, 0).await?;
        let Some((value, version)) = copy.and_then(|s| s.value.map(|v| (v, s.version))) else {
            return Ok(Held {
                info: ValueInfo::absent(),
                plain: None,
            });
        };
        let opened = self.open(key, value)?;
        let value = opened.value;
        let mut held = match streamed_manifest(key, &value) {
            Some(manifest) => Held {
                info: ValueInfo::streamed(manifest),
                plain: None,
            },
            None => Held {
                info: ValueInfo::plain(value.len() as u64, version.stamp),
                plain: Some(value),
            },
        };
        held.info.meta = opened.meta;
        held.info.stored_bytes = opened.stored_bytes.map(|n| n as u64);
        Ok(held)
    }

    /// Up to `length` bytes of the value at `key` from `offset` on (fewer
    /// only at its end). `id` 0 reads whatever the key holds; otherwise the
    /// key must still hold the value with that id ([`Error::Changed`]).
    pub async fn read_range(
        self: &Arc<Self>,
        key: &[u8],
        offset: i64,
        length: i32,
        id: i64,
    ) -> Result<Vec<u8>> {
        let (Ok(offset), Ok(length)) = (u64::try_from(offset), usize::try_from(length)) else {
            return Err(Error::refused_here(format!(
                "offset {offset} and length {length} must not be negative"
            )));
        };
        let most = self.longest_range();
        if length > most {
            return Err(Error::refused_here(format!(
                "a range of {length} bytes is longer than read_range answers here ({most} bytes); ask for several ranges"
            )));
        }
        let id = id as u64;
        let held = self.held(key).await?;
        let info = &held.info;
        if id != 0 && info.id != id {
            return Err(Error::Changed { key: shown(key) });
        }
        if !info.exists {
            return Err(Error::refused_here(format!(
                "`{}` holds no value",
                shown(key)
            )));
        }
        if offset > info.size {
            return Err(Error::refused_here(format!(
                "offset {offset} is past the end of `{}` ({} bytes)",
                shown(key),
                info.size
            )));
        }
        let end = info.size.min(offset.saturating_add(length as u64));
        if let Some(plain) = held.plain {
            return Ok(plain[offset as usize..end as usize].to_vec());
        }
        let manifest = info.manifest.as_ref().expect("a streamed value has one");
        let Some((first, last, skip)) = upload::parts_of_range(offset, end, manifest.chunk_bytes)
        else {
            return Ok(Vec::new());
        };
        if last - first >= MAX_RANGE_PARTS {
            return Err(Error::refused_here(format!(
                "a range of {length} bytes spans {} parts of {} bytes, and read_range reads at most {MAX_RANGE_PARTS} parts per call; ask for shorter ranges",
                last - first + 1,
                manifest.chunk_bytes
            )));
        }
        // In order, a few at a time: memory stays at a few parts and the
        // range, however small the parts.
        let mut chunks = stream::iter(first..=last)
            .map(|index| self.chunk(key, manifest, index))
            .buffered(READ_AHEAD);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut skip = skip as usize;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(Error::MissingChunk { .. }) if self.held(key).await?.info.id != info.id => {
                    // Replaced while we read: its chunks are erased after the
                    // new manifest is written.
                    return Err(Error::Changed { key: shown(key) });
                }
                Err(e) => return Err(e),
            };
            let wanted = (end - offset) as usize - out.len();
            let take = (chunk.len() - skip).min(wanted);
            out.extend_from_slice(&chunk[skip..skip + take]);
            skip = 0;
        }
        Ok(out)
    }

    /// Chunk `index` of `manifest`'s value, checked against its size and MD5.
    async fn chunk(
        self: &Arc<Self>,
        key: &[u8],
        manifest: &Manifest,
        index: u64,
    ) -> Result<Vec<u8>> {
        let damaged = |reason: String| Error::CorruptChunk {
            key: shown(key),
            index,
            chunks: manifest.chunks(),
            owner: self.me.to_string(),
            reason,
        };
        let Some(chunk) = self.fetch(&manifest.chunk_key(key, index), 0).await? else {
            return Err(Error::MissingChunk {
                key: shown(key),
                index,
                chunks: manifest.chunks(),
                owner: self.me.to_string(),
            });
        };
        if chunk.len() as u64 != manifest.chunk_len(index) {
            return Err(damaged(format!(
                "{} bytes where the manifest says {}",
                chunk.len(),
                manifest.chunk_len(index)
            )));
        }
        let digest: [u8; 16] = Md5::digest(&chunk).into();
        if digest != manifest.chunk_md5s[index as usize] {
            return Err(damaged("its MD5 differs from the manifest's".into()));
        }
        Ok(chunk)
    }

    /// Opens an upload in parts to `key` here and returns its id.
    pub fn begin_upload(&self, key: &[u8]) -> Result<u64> {
        let max = MAX_KEY_BYTES - CHUNK_KEY_OVERHEAD;
        if key.len() > max {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        if !self.ready() {
            return Err(Error::Joining);
        }
        let upload = crate::stream::fresh_upload_id();
        self.uploads.lock().begin(key, upload, Instant::now())?;
        Ok(upload)
    }

    /// Stores part `index` of upload `upload` of `key` (a write quorum of
    /// the chunk's replicas), and records its length and MD5.
    pub async fn upload_part(
        self: &Arc<Self>,
        key: &[u8],
        upload: i64,
        index: i64,
        data: &[u8],
    ) -> Result<()> {
        let (upload, Ok(index)) = (upload as u64, u64::try_from(index)) else {
            return Err(Error::refused_here(format!(
                "part index {index} is negative"
            )));
        };
        let max = self.config.max_value_bytes;
        self.uploads
            .lock()
            .start_part(key, upload, index, data.len(), max, Instant::now())?;
        let digest = upload::digest(data);
        let written = self
            .write(&chunk_key(key, upload, index), Some(data), 0, None, None)
            .await;
        let ok = written.is_ok();
        self.uploads
            .lock()
            .finish_part(upload, index, ok.then_some(digest));
        written
    }

    /// Makes upload `upload` the value at `key`: checks its parts, writes the
    /// manifest at the key, then erases the previous streamed value's chunks.
    pub async fn commit_upload(self: &Arc<Self>, key: &[u8], upload: i64) -> Result<ValueInfo> {
        let upload = upload as u64;
        let manifest = self.uploads.lock().plan(key, upload, Instant::now())?;
        // The value it replaces, to erase its chunks afterwards; one we
        // cannot read now is left to the collector.
        let old = match self.held(key).await {
            Ok(held) => held.info.manifest,
            Err(e) => {
                log::debug!(
                    "commit of `{}`: cannot read the old value ({e})",
                    shown(key)
                );
                None
            }
        };
        // A refused or failed write leaves the upload open: the commit may
        // be retried while the window lasts.
        self.write(key, Some(&manifest.encode()), 0, None, None)
            .await?;
        self.uploads.lock().close(upload);
        if let Some(old) = old.filter(|old| old.upload != upload) {
            self.erase_chunks(key, &old).await;
        }
        Ok(ValueInfo::streamed(manifest))
    }

    /// Erases `manifest`'s chunks, best effort: one that stays behind is
    /// garbage no value names, which the collector erases later.
    async fn erase_chunks(self: &Arc<Self>, key: &[u8], manifest: &Manifest) {
        for index in 0..manifest.chunks() {
            if let Err(e) = self
                .write(&manifest.chunk_key(key, index), None, 0, None, None)
                .await
            {
                log::warn!(
                    "could not erase chunk {index} of upload {:016x} of `{}`: {e}; the collector will",
                    manifest.upload,
                    shown(key)
                );
                return;
            }
        }
    }
}
