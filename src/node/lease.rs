//! Leases at the node: `lock`, `unlock` and `renew` forwarded to the key's
//! owner (as writes are), which decides them under the key's stripe of
//! [`super::exclusive`]: a quorum read of the key's lease record, a decision
//! by [`crate::lease::decide`], a quorum write of the new record, then the
//! answer. The fence check of a fenced write ([`Node::check_fence`]) runs
//! at the owner under the same stripe, between the conditional write's read
//! and its write (`node::conditional`). Why it is built this way:
//! [`crate::lease`].

use std::sync::Arc;

use super::Node;
use crate::config::MAX_KEY_BYTES;
use crate::error::{Error, Result};
use crate::lease::{self, LEASE_PREFIX, Lease, Op, Record};
use crate::peer::{Reply, Request};
use crate::transport::unexpected;
use crate::upload::shown;

/// The longest key a lease can be taken on: its record's key must fit the
/// key limit too.
pub const MAX_LEASE_KEY_BYTES: usize = MAX_KEY_BYTES - LEASE_PREFIX.len();

impl Node {
    /// Serves a lease request for `key`: decided by the key's owner (or,
    /// when it cannot be reached, the next replica); `hops` counts forwards
    /// so far.
    pub async fn lease_op(self: &Arc<Self>, key: &[u8], op: Op, hops: i8) -> Result<Lease> {
        admit_lease(key, op)?;
        if !self.ready() {
            return Err(Error::Joining);
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) {
            return self.lease_here(key, op).await;
        }
        for &target in &replicas {
            if *target == self.me {
                return self.lease_here(key, op).await;
            }
            let request = Request::Lease {
                key: key.to_vec(),
                op,
                hops: hops.saturating_add(1),
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                Ok(Reply::Lease(lease)) => return Ok(lease),
                Ok(other) => return Err(unexpected(target, &other)),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// The owner's side: under the key's lock, read the record, decide,
    /// write the new record, answer.
    async fn lease_here(self: &Arc<Self>, key: &[u8], op: Op) -> Result<Lease> {
        if self.noticed_pause() || self.just_resumed() {
            // A decision taken with a clock read before a pause could
            // grant a lease that already expired, or refuse a free one.
            return Err(Error::Paused);
        }
        let _held = self.exclusive.lock(key).await;
        let record_key = lease::record_key(key);
        let current = self.lease_record(key, &record_key).await?;
        // The new record's version, and through it the token, must be
        // above the current record's, whichever node wrote it.
        let version = self.clock.tick();
        let now_ms = (self.clock.wall_micros() / 1000) as i64;
        let (record, lease) = lease::decide(key, current, op, now_ms, version.stamp as i64)?;
        self.write_stored(&record_key, Some(&record.encode()), 0, Some(version), None)
            .await?;
        log::debug!("lease {}: {op:?} -> {lease:?}", shown(key));
        Ok(lease)
    }

    /// The current lease record of `key` (stored at `record_key`), by a
    /// quorum read; the clock has observed its version when this returns.
    async fn lease_record(
        self: &Arc<Self>,
        key: &[u8],
        record_key: &[u8],
    ) -> Result<Option<Record>> {
        let Some(stored) = self.fetch_copy(record_key, 0).await? else {
            return Ok(None);
        };
        self.clock.observe(stored.version)?;
        match stored.value {
            None => Ok(None),
            Some(bytes) => Record::decode(&bytes).map(Some).map_err(|reason| {
                Error::Storage(format!(
                    "the lease record of `{}` cannot be read: {reason}",
                    shown(key)
                ))
            }),
        }
    }

    /// Refuses a write on `key` fenced with `fence` unless `fence` is the
    /// key's current lease (the fencing rule of [`crate::lease`]). The
    /// caller is the key's owner and holds the key's [`super::exclusive`]
    /// stripe until its write is done, so no lease is granted in between.
    pub(super) async fn check_fence(self: &Arc<Self>, key: &[u8], fence: i64) -> Result<()> {
        let current = self.lease_record(key, &lease::record_key(key)).await?;
        lease::check_fence(key, current, fence)
    }
}

/// Refuses a lease request that can never succeed: a key too long for its
/// record, a TTL out of bounds.
fn admit_lease(key: &[u8], op: Op) -> Result<()> {
    if key.len() > MAX_LEASE_KEY_BYTES {
        return Err(Error::TooLarge {
            size: key.len(),
            limit: MAX_LEASE_KEY_BYTES,
        });
    }
    op.check()
}
