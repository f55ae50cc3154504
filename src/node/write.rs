//! A client's write (or erase): admitted, given its one version, coordinated
//! where the client called if that node is a replica, else forwarded to the
//! key's owner (or the next replica) and coordinated there: stored,
//! sent to the other replicas ([`crate::replicate`]), acknowledged once a
//! write quorum holds it.
//!
//! A client's value is sealed ([`crate::value`]: compressed, enveloped with
//! its metadata) once, by the node the client called; from there on, every
//! forward, replica and repair moves the stored bytes as they are.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Node;
use crate::addr::NodeAddr;
use crate::capacity;
use crate::config::MAX_KEY_BYTES;
use crate::error::{Error, Result};
use crate::handoff;
use crate::peer::{Entry, Request};
use crate::replicate::Ack;
use crate::store::Stored;
use crate::version::Version;

impl Node {
    /// Refuses a key or a stored value over the limits; a value's size is
    /// the one its client sees (the envelope's raw size).
    pub(super) fn check_sizes(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::TooLarge {
                size: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        let size = match value {
            None => 0,
            Some(value) => crate::value::raw_len(value).map_err(|reason| {
                Error::refused_here(format!(
                    "the value of `{}` is a damaged envelope: {reason}",
                    String::from_utf8_lossy(key)
                ))
            })?,
        };
        if size > self.config.max_value_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a write before anything is stored. `relayed`: it carries the
    /// version its entry node took.
    pub(super) fn admit_write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        expires: Option<i64>,
        relayed: bool,
    ) -> Result<()> {
        if !self.ready() {
            return Err(Error::Joining);
        }
        if !relayed && crate::lease::is_record_key(key) {
            // Only the key's owner writes a lease record (`node::lease`), and
            // it gives the write its version itself: a client's write here
            // could forge or erase a lease.
            return Err(Error::refused_here(
                "keys starting with \"\\0thrifty-lease\\0\" hold leases and are written only by lock, unlock and renew; use another key (nothing was stored)",
            ));
        }
        if !relayed && (self.noticed_pause() || self.just_resumed()) {
            // A client's write that waited in a paused node: a version taken
            // now could bury a later write the client made elsewhere.
            return Err(Error::Paused);
        }
        if let Some(expires) = expires
            && self.clock.wall_micros() as i64 > expires
        {
            // The sender gave up on us (we were paused or swamped) and has
            // moved on; the client may have too.
            return Err(Error::Expired);
        }
        self.check_sizes(key, value)
    }

    /// Serves a client's write at once if nothing needs waiting for: this
    /// node coordinates it and no other replica must acknowledge it (one
    /// replica). `None` means the write needs [`Node::write`].
    pub fn write_now(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        expires: Option<i64>,
    ) -> Option<Result<()>> {
        if hops == 0
            && let Err(e) = self.check_raw(key, value)
        {
            return Some(Err(e));
        }
        if let Err(e) = self.admit_write(key, value, expires, hops != 0) {
            return Some(Err(e));
        }
        if hops != 0 {
            // A relayed write carries the version its entry node took.
            return None;
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        let alone = self.coordinates(&replicas, hops)
            && replicas.iter().all(|r| **r == self.me)
            && self.write_quorum() <= 1;
        if !alone || replicas.is_empty() {
            return None;
        }
        let version = self.clock.tick();
        let sealed = value.map(|v| self.seal(v, &crate::value::Meta::default()));
        Some(self.store_capped(key, sealed.as_deref(), version).map(drop))
    }

    /// Stores a client's write here (see [`crate::store::Store::merge`]) if it fits under
    /// the node's `--max-memory` ([`crate::capacity`]); otherwise
    /// [`Error::Full`], and nothing changes. Returns whether applied.
    pub(super) fn store_capped(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<bool> {
        if value.is_none() {
            // A coordinator's erase, or a repair's tombstone (see
            // `merge_copy`).
            return self.merge_copy(key, value, version);
        }
        if self.capacity.limit().is_none() {
            return self.keep(key, value, version);
        }
        let old = match self.store.value_len(key)? {
            // The disk engine reports a tombstone as 0 bytes; a tombstone
            // holds no bytes, its key included, so look (an empty value or
            // a tombstone: nothing to copy).
            Some(0) => self.store.get(key)?.and_then(|s| s.value).map(|v| v.len()),
            other => other,
        };
        let growth = capacity::growth(key, value, old);
        let _room = self
            .capacity
            .admit(&self.me.to_string(), self.store.usage().bytes, growth)?;
        self.keep(key, value, version)
    }

    /// Merges a copy into the store ([`crate::store::Store::merge`]); every
    /// copy a node keeps comes through here. A copy of a key this node does
    /// not replicate in its ring (a peer routed with another view, a handoff
    /// or a repair sent it) is counted, once stored, as a stray: the handoff
    /// worker lists the keys again only when that count or the ring changed
    /// (a pass that reads the count before it lists finds the copy, or the
    /// next one does), not after every write.
    pub(super) fn keep(&self, key: &[u8], value: Option<&[u8]>, version: Version) -> Result<bool> {
        let applied = self.store.merge(key, value, version)?;
        if handoff::moves(&self.placement(), self.config.replicas, &self.me, key) {
            self.strays.fetch_add(1, Ordering::Release);
        }
        Ok(applied)
    }

    /// A client's value as the store keeps it ([`crate::value::seal`]),
    /// counted for `stats` when compressed.
    pub(super) fn seal<'a>(
        &self,
        value: &'a [u8],
        meta: &crate::value::Meta,
    ) -> std::borrow::Cow<'a, [u8]> {
        let sealed = crate::value::seal(value, meta, self.config.compress_above);
        if let Some(raw) = sealed.compressed {
            self.compression.note(raw, sealed.bytes.len());
        }
        sealed.bytes
    }

    /// Refuses a client's (raw) value over `--max-value-bytes` before it is
    /// sealed: the limit is the size a client sees.
    pub(super) fn check_raw(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let size = value.map_or(0, <[u8]>::len);
        if size > self.config.max_value_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.config.max_value_bytes,
            });
        }
        self.check_sizes(key, None)
    }

    /// Writes a client's `value` at `key` (`None`: erases it): sealed here,
    /// then as [`Node::write_stored`].
    pub async fn write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        version: Option<Version>,
        expires: Option<i64>,
    ) -> Result<()> {
        self.write_with_meta(
            key,
            value,
            &crate::value::Meta::default(),
            hops,
            version,
            expires,
        )
        .await
    }

    /// [`Node::write`] with the metadata to store with the value.
    pub(super) async fn write_with_meta(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        meta: &crate::value::Meta,
        hops: i8,
        version: Option<Version>,
        expires: Option<i64>,
    ) -> Result<()> {
        self.check_raw(key, value)?;
        let sealed = value.map(|v| self.seal(v, meta));
        self.write_stored(key, sealed.as_deref(), hops, version, expires)
            .await
    }

    /// Writes `key` (a stored value, sealed by the node the client called,
    /// or `None` to erase it): coordinated here if this node is a replica,
    /// else by its owner (or, when the owner cannot be reached, the next
    /// replica), acknowledged
    /// once a write quorum of replicas stored it. `hops` counts forwards so
    /// far. `version` is the write's version when relayed (a client's own call
    /// gets one here, once, whatever path it then takes); `expires` is when
    /// the node that relayed it stops waiting (wall microseconds).
    pub async fn write_stored(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        version: Option<Version>,
        expires: Option<i64>,
    ) -> Result<()> {
        self.admit_write(key, value, expires, version.is_some())?;
        let version = version.unwrap_or_else(|| self.clock.tick());
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) || self.coordinates_as_replica(&replicas) {
            return self.coordinate_write(key, value, version, &replicas).await;
        }
        // Give up on the relay a little before our own call times out.
        let ours =
            self.clock.wall_micros() as i64 + (self.config.rpc_timeout * 9 / 10).as_micros() as i64;
        let expires = expires.map_or(ours, |e| e.min(ours));
        for &target in &replicas {
            if *target == self.me {
                return self.coordinate_write(key, value, version, &replicas).await;
            }
            let request = Request::Write {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                hops: hops.saturating_add(1),
                version,
                expires,
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                Ok(_) => return Ok(()),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// Stores the write here (unless a newer copy is already here: then the
    /// write is simply older, and superseded) and sends it to the other
    /// replicas; returns once the write quorum holds it.
    pub(super) async fn coordinate_write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        replicas: &[&NodeAddr],
    ) -> Result<()> {
        // A relayed write's version was taken elsewhere: refused if forged.
        self.clock.observe(version)?;
        // A write whose version was taken longer ago than a quarter of the
        // tombstone grace (it waited behind relays that timed out one after
        // another, or in a paused node) could land after the tombstone that
        // should beat it was collected, and bring an erased value back:
        // refused, nothing stored, as the replication queue refuses to
        // deliver such copies (found by the simulation, seed 294507475012:
        // a write taken by a node while it was cut off was coordinated at
        // 27 s, after its key's erase of 11.2 s had been collected).
        if version.age(self.clock.wall_micros()) > self.config.max_copy_age() {
            return Err(Error::Expired);
        }
        // However few replicas this ring has, never fewer acknowledgements
        // than a write needs of them.
        let quorum = self.write_quorum();
        if !self.majority_view() {
            return Err(Error::Quorum {
                stored: 0,
                needed: quorum,
            });
        }
        let here = replicas.contains(&&self.me);
        if here {
            self.store_capped(key, value, version)?;
        }
        let here = usize::from(here);
        let others: Vec<&NodeAddr> = replicas
            .iter()
            .copied()
            .filter(|p| **p != self.me)
            .collect();
        let needed = quorum.saturating_sub(here);
        if others.is_empty() && needed == 0 {
            return Ok(());
        }
        let ack = Ack::new();
        let entry = Entry::new(
            key.to_vec(),
            Stored {
                value: value.map(<[u8]>::to_vec),
                version,
            },
        );
        let ring = self.ring_id();
        for peer in &others {
            self.replicator
                .send(peer, entry.clone(), Some((ack.clone(), ring)));
        }
        if needed == 0 {
            return Ok(());
        }
        let acked = if others.len() < needed {
            0
        } else {
            ack.wait(needed, others.len(), self.config.rpc_timeout)
                .await
        };
        log::trace!(
            "write {} {:?} to {:?}: {} acks of {needed} needed",
            String::from_utf8_lossy(key),
            version,
            replicas,
            acked
        );
        if acked >= needed {
            Ok(())
        } else if let Some(full) = ack.refusal() {
            // A replica is over its --max-memory: say so rather than blame
            // the ring's health.
            Err(full)
        } else {
            Err(Error::Quorum {
                stored: acked + here,
                needed: quorum,
            })
        }
    }
}
