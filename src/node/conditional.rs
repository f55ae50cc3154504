//! Writes with options (`store_with`) and `append`: the writes that read
//! before they write. A create-only write or an append goes to the key's
//! owner (forwarded like any write), which holds the key's [`Exclusive`]
//! lock while it reads the key with a quorum read and then writes through
//! the normal write path under a new version. So of concurrent create-only
//! writes of one key exactly one succeeds, and concurrent appends are each
//! applied once, in some order. A plain `store_with` (metadata only) needs
//! no read and takes the ordinary write path. A fenced write (`fence`,
//! a lease's token) is conditional too: its token is checked against the
//! key's lease under the same lock (`node::lease`).
//!
//! What a ring change can do: the lock is the owner's. If the owner dies or
//! leaves between its read and its write, the request fails (the client
//! sees an error, the key holds the old value or, if the write reached a
//! quorum, the new one) and a retry goes to the new owner. While nodes
//! disagree on the owner (a partition, a join not yet agreed), two nodes
//! may each serialise their own requests: an append may then be lost to a
//! concurrent one (both read the same old value; the newer version wins),
//! and two create-only writes may both succeed. Anti-entropy settles the
//! copies, not the lost append.
//!
//! [`Exclusive`]: super::exclusive::Exclusive

use std::sync::Arc;

use super::Node;
use crate::error::{Error, Result};
use crate::peer::{Reply, Request};
use crate::stream::streamed_manifest;
use crate::transport::unexpected;
use crate::upload::shown;
use crate::value::WriteOptions;

impl Node {
    /// A client's `store_with`: `store` with metadata, and create-only.
    pub async fn store_with(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        options: &WriteOptions,
    ) -> Result<()> {
        self.admit_options(key, value, options)?;
        if !options.create_only && options.fence.is_none() {
            return self
                .write_with_meta(key, Some(value), &options.meta, 0, None, None)
                .await;
        }
        self.conditional(key, value, options, false, 0)
            .await
            .map(drop)
    }

    /// A client's `append`: the value's new size.
    pub async fn append(
        self: &Arc<Self>,
        key: &[u8],
        suffix: &[u8],
        options: &WriteOptions,
    ) -> Result<u64> {
        self.admit_options(key, suffix, options)?;
        self.conditional(key, suffix, options, true, 0).await
    }

    /// A conditional write forwarded by a peer ([`Request::Conditional`]).
    pub async fn relay_conditional(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        options: &WriteOptions,
        append: bool,
        hops: i8,
    ) -> Result<u64> {
        self.conditional(key, value, options, append, hops).await
    }

    fn admit_options(&self, key: &[u8], value: &[u8], options: &WriteOptions) -> Result<()> {
        options.meta.check().map_err(Error::refused_here)?;
        self.check_raw(key, Some(value))
    }

    /// A create-only write (`append` false) or an append, served by the
    /// key's owner (or, when it cannot be reached, the next replica); `hops`
    /// counts forwards so far. Answers the value's size after an append
    /// (0 for a create-only write).
    pub(super) async fn conditional(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        options: &WriteOptions,
        append: bool,
        hops: i8,
    ) -> Result<u64> {
        if !self.ready() {
            return Err(Error::Joining);
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) {
            return self
                .conditional_here(key, value, options, append, hops)
                .await;
        }
        for &target in &replicas {
            if *target == self.me {
                return self
                    .conditional_here(key, value, options, append, hops)
                    .await;
            }
            let request = Request::Conditional {
                key: key.to_vec(),
                value: value.to_vec(),
                options: options.clone(),
                append,
                hops: hops.saturating_add(1),
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                Ok(Reply::Size(size)) => return Ok(size),
                Ok(other) => return Err(unexpected(target, &other)),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// The owner's side: under the key's lock, a quorum read, then the write.
    async fn conditional_here(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        options: &WriteOptions,
        append: bool,
        hops: i8,
    ) -> Result<u64> {
        self.admit_options(key, value, options)?;
        let _held = self.exclusive.lock(key).await;
        if let Some(fence) = options.fence {
            // Under the lock lease requests take too (`node::lease`).
            self.check_fence(key, fence).await?;
        }
        let current = match self.fetch_copy(key, hops.max(super::MAX_HOPS)).await? {
            Some(stored) => match stored.value {
                Some(bytes) => Some(self.open(key, bytes)?),
                None => None,
            },
            None => None,
        };
        if options.create_only && current.is_some() {
            return Err(Error::Exists { key: shown(key) });
        }
        if !append {
            self.write_with_meta(key, Some(value), &options.meta, super::MAX_HOPS, None, None)
                .await?;
            return Ok(0);
        }
        let (mut whole, meta) = match current {
            Some(opened) => {
                if let Some(manifest) = streamed_manifest(key, &opened.value) {
                    return Err(Error::Streamed {
                        key: shown(key),
                        size: manifest.size,
                    });
                }
                (opened.value, opened.meta)
            }
            None => (Vec::new(), options.meta.clone()),
        };
        let size = whole.len().saturating_add(value.len());
        if size > self.config.max_value_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.config.max_value_bytes,
            });
        }
        whole.extend_from_slice(value);
        self.write_with_meta(key, Some(&whole), &meta, super::MAX_HOPS, None, None)
            .await?;
        Ok(size as u64)
    }
}
