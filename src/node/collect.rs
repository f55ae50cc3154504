//! Collecting the chunks no value points at: those of a streamed value that
//! was replaced or deleted, and those of an upload that never finished.
//!
//! A streamed value (see [`crate::stream`]) is a manifest at its key and
//! chunks under keys of their own. A client that replaces a streamed value
//! with another erases the old chunks itself, but nothing else does: not a
//! `store` of a small value over it, not an `erase`, not a client that died
//! half-way through an upload, and not a client in another language. Left
//! alone, those chunks would hold their memory for good (a 1 GiB value
//! overwritten with "small" kept 1.5–2.1 GB resident on each node).
//!
//! So each node looks, every [`Config::chunk_grace`] / 4 (at most a minute),
//! at the chunks it owns (it is the first of their replicas in its view, so
//! one node per chunk does the work) and erases, as a client's erase would,
//! each chunk that
//!
//! 1. no longer belongs to the value at its key: a read of that key (the
//!    quorum read a client's `fetch` makes) finds no manifest naming the
//!    chunk's upload, and
//! 2. was written more than `chunk_grace` ago.
//!
//! The second rule keeps an upload in progress safe: its chunks exist before
//! its manifest does. A client commits a manifest only while its upload is
//! younger than half the grace (the node tells it the grace in `stats`,
//! [`GRACE_STAT`]), so every chunk older than the grace either belongs to a
//! manifest already written, which rule 1 sees, or to one that will never be.
//! The erased chunks leave tombstones, like any erase, removed in turn after
//! the tombstone grace (see `node::tombstones`).
//!
//! The work per pass is bounded ([`MAX_UPLOADS_PER_PASS`] uploads read back),
//! and the scan copies one shard at a time, so writers are never held up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Node;
use crate::stream::{CHUNK_PREFIX, Manifest};
use crate::version::Version;

/// The `stats` key that tells clients the node's chunk grace, in
/// milliseconds (see the module docs).
pub const GRACE_STAT: &str = "chunk_grace_ms";

/// Most uploads whose key is read back in one pass; the rest wait for the
/// next one.
const MAX_UPLOADS_PER_PASS: usize = 1_000;

/// A value's key and the id of one upload to it.
type Upload = (Vec<u8>, u64);

/// The key and upload id a chunk key names, if it is one.
fn parse_chunk_key(chunk: &[u8]) -> Option<(&[u8], u64)> {
    let rest = chunk.strip_prefix(CHUNK_PREFIX)?;
    let key_len = rest.len().checked_sub(16)?;
    let upload = u64::from_be_bytes(rest[key_len..key_len + 8].try_into().ok()?);
    Some((&rest[..key_len], upload))
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Collected {
    /// Chunks erased.
    pub chunks: usize,
    /// Uploads whose key was read back to decide.
    pub uploads: usize,
}

impl Node {
    /// Runs a collection pass every quarter of the grace (at most a minute
    /// apart, at least a second) until the node stops.
    pub(super) async fn chunk_collector(self: Arc<Self>) {
        let every =
            (self.config.chunk_grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        while !self.stop_requested() {
            // A ring change is no reason to hurry: wait the full period.
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(every) => {}
            }
            if !self.ready() || self.leaving() {
                continue;
            }
            let collected = self.collect_chunks().await;
            if collected.chunks > 0 {
                log::info!(
                    "collected {} chunks of {} replaced, deleted or unfinished uploads",
                    collected.chunks,
                    collected.uploads
                );
            }
        }
    }

    /// One pass (see the module docs).
    pub(crate) async fn collect_chunks(self: &Arc<Self>) -> Collected {
        let now = self.clock.wall_micros();
        let ring = self.placement();
        // Old enough chunks this node owns, grouped by (key, upload).
        let mut uploads: BTreeMap<Upload, Vec<(Vec<u8>, Version)>> = BTreeMap::new();
        let scanned = self.store.scan(|chunk, version, tombstone| {
            if tombstone || !chunk.starts_with(CHUNK_PREFIX) {
                return true;
            }
            let Some((key, upload)) = parse_chunk_key(chunk) else {
                return true;
            };
            let old = version.age(now) > self.config.chunk_grace;
            let owned = ring.owner(chunk) == Some(&self.me);
            if old && owned {
                let group = (key.to_vec(), upload);
                if uploads.len() < MAX_UPLOADS_PER_PASS || uploads.contains_key(&group) {
                    uploads
                        .entry(group)
                        .or_default()
                        .push((chunk.to_vec(), version));
                }
            }
            true
        });
        if let Err(e) = scanned {
            log::warn!("collecting chunks: scanning the store failed: {e}");
            return Collected::default();
        }
        let mut collected = Collected::default();
        for ((key, upload), chunks) in uploads {
            if self.stop_requested() {
                break;
            }
            collected.uploads += 1;
            // The value now at the key, read as a client reads it: a miss
            // on one replica does not pass for "no manifest".
            let value = match self.fetch(&key, 0).await {
                Ok(value) => value,
                Err(e) => {
                    log::debug!("collecting chunks: reading their key failed, kept: {e}");
                    continue;
                }
            };
            let referenced = value
                .as_deref()
                .and_then(|value| Manifest::decode(value).ok().flatten())
                .is_some_and(|manifest| manifest.upload == upload);
            if referenced {
                continue;
            }
            for (chunk, version) in chunks {
                // Erased only if it is still the copy we judged: a chunk
                // key is written once per upload, so this is the normal case.
                if self.store.get(&chunk).ok().flatten().map(|s| s.version) != Some(version) {
                    continue;
                }
                match self.write(&chunk, None, 0, None, None).await {
                    Ok(()) => collected.chunks += 1,
                    Err(e) => {
                        log::debug!("collecting chunks: erasing one failed, kept: {e}");
                        break;
                    }
                }
            }
        }
        collected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::chunk_key;

    #[test]
    fn a_chunk_key_names_its_key_and_upload_whatever_bytes_the_key_holds() {
        for key in [&b""[..], b"k", b"\0thrifty-chunk\0k", &[0xff; 40]] {
            let chunk = chunk_key(key, 0x0123_4567_89ab_cdef, 7);
            assert_eq!(parse_chunk_key(&chunk), Some((key, 0x0123_4567_89ab_cdef)));
        }
        assert_eq!(parse_chunk_key(b"plain"), None);
        assert_eq!(parse_chunk_key(b"\0thrifty-chunk\0short"), None);
    }
}
