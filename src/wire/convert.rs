//! Conversions between the generated Thrift types and the crate's domain types.

use super::idl::diststore::{
    Entry, ErrorKind as WireKind, KeyPage, Lease as WireLease, LeaseOp, ListedKey, Lookup, Replica,
    StoreError, ValueInfo as WireInfo, WriteOptions as WireOptions,
};
use super::idl::locator::{Location, Member, MemberStatus};
use crate::addr::NodeAddr;
use crate::config::MAX_WEIGHT;
use crate::error::{Error, ErrorKind};
use crate::membership::{MemberState, Status};
use crate::store::{Listed, Stored};
use crate::stream::{Manifest, ValueInfo};
use crate::version::Version;

/// A `Location` for an address. The port travels as a signed 16-bit number, so
/// ports above 32767 go out negative, as in the 2009 protocol.
pub fn location(addr: &NodeAddr) -> Location {
    Location::new(addr.host.clone(), addr.port as i16)
}

/// The empty `Location` the protocol uses for "no member".
pub fn no_location() -> Location {
    Location::new(String::new(), 0)
}

/// The address in a `Location`; negative ports are read back as unsigned.
pub fn addr(location: &Location) -> Option<NodeAddr> {
    let host = location.address.clone().filter(|h| !h.is_empty())?;
    Some(NodeAddr::new(host, location.port? as u16))
}

/// An error as the `StoreError` a node answers with: its message and kind.
pub fn store_error(error: &Error) -> StoreError {
    let kind = match error.kind() {
        ErrorKind::Refused | ErrorKind::BadAddress => WireKind::REFUSED,
        ErrorKind::TooLarge => WireKind::TOO_LARGE,
        ErrorKind::TooManyHops => WireKind::TOO_MANY_HOPS,
        ErrorKind::Quorum => WireKind::QUORUM,
        ErrorKind::ReadQuorum => WireKind::READ_QUORUM,
        ErrorKind::Expired => WireKind::EXPIRED,
        ErrorKind::NoOwner => WireKind::NO_OWNER,
        ErrorKind::Joining => WireKind::JOINING,
        ErrorKind::Paused => WireKind::PAUSED,
        ErrorKind::ShuttingDown => WireKind::SHUTTING_DOWN,
        ErrorKind::Storage => WireKind::STORAGE,
        ErrorKind::Unreachable => WireKind::UNREACHABLE,
        ErrorKind::Rpc => WireKind::RPC,
        ErrorKind::Unauthorized => WireKind::UNAUTHORIZED,
        ErrorKind::Streamed => WireKind::STREAMED,
        ErrorKind::Changed => WireKind::CHANGED,
        ErrorKind::NoSuchUpload => WireKind::NO_SUCH_UPLOAD,
        ErrorKind::Exists => WireKind::EXISTS,
        ErrorKind::Held => WireKind::HELD,
        ErrorKind::StaleToken => WireKind::STALE_TOKEN,
        ErrorKind::Full => WireKind::FULL,
        _ => WireKind::OTHER,
    };
    // A remote error passed on keeps its text; ours is the whole message.
    let message = match error {
        Error::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    };
    StoreError::new(message, kind)
}

/// The error `peer` answered with. A `StoreError` without a kind (from a
/// node older than the field) counts as a refusal, as such nodes meant it.
pub fn remote_error(peer: &NodeAddr, error: StoreError) -> Error {
    let kind = match error.kind {
        None | Some(WireKind::REFUSED) => ErrorKind::Refused,
        Some(WireKind::TOO_LARGE) => ErrorKind::TooLarge,
        Some(WireKind::TOO_MANY_HOPS) => ErrorKind::TooManyHops,
        Some(WireKind::QUORUM) => ErrorKind::Quorum,
        Some(WireKind::READ_QUORUM) => ErrorKind::ReadQuorum,
        Some(WireKind::EXPIRED) => ErrorKind::Expired,
        Some(WireKind::NO_OWNER) => ErrorKind::NoOwner,
        Some(WireKind::JOINING) => ErrorKind::Joining,
        Some(WireKind::PAUSED) => ErrorKind::Paused,
        Some(WireKind::SHUTTING_DOWN) => ErrorKind::ShuttingDown,
        Some(WireKind::STORAGE) => ErrorKind::Storage,
        Some(WireKind::UNREACHABLE) => ErrorKind::Unreachable,
        Some(WireKind::RPC) => ErrorKind::Rpc,
        Some(WireKind::UNAUTHORIZED) => ErrorKind::Unauthorized,
        Some(WireKind::STREAMED) => ErrorKind::Streamed,
        Some(WireKind::CHANGED) => ErrorKind::Changed,
        Some(WireKind::NO_SUCH_UPLOAD) => ErrorKind::NoSuchUpload,
        Some(WireKind::EXISTS) => ErrorKind::Exists,
        Some(WireKind::HELD) => ErrorKind::Held,
        Some(WireKind::STALE_TOKEN) => ErrorKind::StaleToken,
        Some(WireKind::FULL) => ErrorKind::Full,
        Some(_) => ErrorKind::Other,
    };
    Error::Remote {
        peer: peer.to_string(),
        kind,
        message: error.message.unwrap_or_default(),
    }
}

/// Write options as the wire carries them.
pub fn write_options_out(options: &crate::value::WriteOptions) -> WireOptions {
    WireOptions::new(
        options.create_only.then_some(true),
        options.meta.content_type.clone(),
        options.meta.description.clone(),
        options.fence,
    )
}

/// A lease for the wire.
pub fn lease_out(lease: crate::lease::Lease) -> WireLease {
    WireLease::new(lease.token, lease.expires_ms)
}

/// A lease from the wire; a missing field reads as 0 (no lease has token 0).
pub fn lease_in(lease: WireLease) -> crate::lease::Lease {
    crate::lease::Lease {
        token: lease.token.unwrap_or(0),
        expires_ms: lease.expires_ms.unwrap_or(0),
    }
}

/// A lease request's fields for `relay_lease`: the op, `ttl_ms`, `token`.
pub fn lease_op_out(op: crate::lease::Op) -> (LeaseOp, i64, i64) {
    use crate::lease::Op;
    match op {
        Op::Lock { ttl_ms } => (LeaseOp::LOCK, ttl_ms, 0),
        Op::Unlock { token } => (LeaseOp::UNLOCK, 0, token),
        Op::Renew { token, ttl_ms } => (LeaseOp::RENEW, ttl_ms, token),
    }
}

/// A lease request from `relay_lease`'s fields; `None` for an op this build
/// does not know.
pub fn lease_op_in(op: LeaseOp, ttl_ms: i64, token: i64) -> Option<crate::lease::Op> {
    use crate::lease::Op;
    match op {
        LeaseOp::LOCK => Some(Op::Lock { ttl_ms }),
        LeaseOp::UNLOCK => Some(Op::Unlock { token }),
        LeaseOp::RENEW => Some(Op::Renew { token, ttl_ms }),
        _ => None,
    }
}

/// Write options from the wire (every field optional).
pub fn write_options_in(options: WireOptions) -> crate::value::WriteOptions {
    crate::value::WriteOptions {
        create_only: options.create_only.unwrap_or(false),
        meta: crate::value::Meta {
            content_type: options.content_type,
            description: options.description,
        },
        fence: options.fence,
    }
}

/// What `describe` answers, for the wire (the manifest raw).
pub fn value_info(info: &ValueInfo) -> WireInfo {
    WireInfo::new(
        info.exists,
        info.size as i64,
        info.streamed_value(),
        info.part_bytes as i64,
        info.parts as i64,
        info.id as i64,
        info.manifest.as_ref().map(Manifest::encode),
        info.meta.content_type.clone(),
        info.meta.description.clone(),
        info.stored_bytes.map(|n| n as i64),
    )
}

/// What a node's `describe` answered. A manifest that does not decode is
/// damage, told as such rather than read as something else.
pub fn value_info_from(key: &[u8], info: WireInfo) -> Result<ValueInfo, Error> {
    let manifest = match info.manifest {
        Some(bytes) => match Manifest::decode(&bytes) {
            Ok(Some(manifest)) => Some(manifest),
            Ok(None) => None,
            Err(reason) => {
                return Err(Error::BadManifest {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason,
                });
            }
        },
        None => None,
    };
    let number = |n: Option<i64>| n.unwrap_or(0) as u64;
    Ok(ValueInfo {
        exists: info.exists.unwrap_or(false),
        size: number(info.size),
        part_bytes: number(info.part_bytes),
        parts: number(info.parts),
        id: number(info.id),
        manifest,
        meta: crate::value::Meta {
            content_type: info.content_type,
            description: info.description,
        },
        stored_bytes: info.stored_bytes.map(|n| n.max(0) as u64),
    })
}

/// A member row for the wire.
pub fn member(state: &MemberState) -> Member {
    let status = match state.status {
        Status::Alive => MemberStatus::ALIVE,
        Status::Suspect => MemberStatus::SUSPECT,
        Status::Leaving => MemberStatus::LEAVING,
        Status::Dead => MemberStatus::DEAD,
        Status::Left => MemberStatus::LEFT,
    };
    // Weight 1 travels as no weight, as older nodes send it.
    let weight = (state.weight > 1).then_some(state.weight as i32);
    Member::new(location(&state.addr), state.incarnation, status, weight)
}

/// A member row from the wire; `None` when a field is missing or unknown,
/// or the weight is outside 1 to [`MAX_WEIGHT`] (a row that would make every
/// node build a ring of billions of points is ignored, not clamped, so no
/// node builds a ring from a weight its member did not set).
pub fn member_state(member: &Member) -> Option<MemberState> {
    let weight = match member.weight {
        None => 1,
        Some(w) => u32::try_from(w)
            .ok()
            .filter(|w| (1..=MAX_WEIGHT).contains(w))?,
    };
    let status = match member.status? {
        MemberStatus::ALIVE => Status::Alive,
        MemberStatus::SUSPECT => Status::Suspect,
        MemberStatus::LEAVING => Status::Leaving,
        MemberStatus::DEAD => Status::Dead,
        MemberStatus::LEFT => Status::Left,
        _ => return None,
    };
    Some(MemberState {
        addr: addr(member.location.as_ref()?)?,
        incarnation: member.incarnation?,
        status,
        weight,
    })
}

/// A coordinator's answer to a forwarded read, with the copy's version: a
/// tombstone travels as a version without a value, an unknown key as neither.
pub fn lookup(found: Option<Stored>) -> Lookup {
    match found {
        Some(stored) => Lookup::new(
            stored.value,
            stored.version.stamp as i64,
            stored.version.origin as i32,
        ),
        None => Lookup::new(None, None, None),
    }
}

/// The copy in a forwarded read's answer (see [`lookup`]). An answer without a
/// version (from a node that does not send one) counts as the value alone at
/// the oldest version, so any copy with a version wins over it.
pub fn found(lookup: Lookup) -> Option<Stored> {
    let version = match (lookup.version, lookup.origin) {
        (Some(stamp), Some(origin)) => Version {
            stamp: stamp as u64,
            origin: origin as u32,
        },
        _ if lookup.value.is_some() => Version::default(),
        _ => return None,
    };
    Some(Stored {
        value: lookup.value,
        version,
    })
}

/// A replica's answer to a quorum read, for the wire.
pub fn replica(copy: Option<Stored>, trusted: bool, ring: u64) -> Replica {
    let (value, version) = match copy {
        Some(stored) => (stored.value, Some(stored.version)),
        None => (None, None),
    };
    Replica::new(
        value,
        version.map(|v| v.stamp as i64),
        version.map(|v| v.origin as i32),
        trusted,
        ring as i64,
    )
}

/// A replica's answer to a quorum read, from the wire.
pub fn replica_reply(replica: Replica) -> crate::peer::Reply {
    let copy = found(Lookup::new(replica.value, replica.version, replica.origin));
    crate::peer::Reply::Replica {
        copy,
        trusted: replica.trusted.unwrap_or(false),
        ring: replica.ring.unwrap_or(0) as u64,
    }
}

/// A version from its wire fields.
pub fn version(stamp: i64, origin: i32) -> Version {
    Version {
        stamp: stamp as u64,
        origin: origin as u32,
    }
}

/// Domain entries for the wire.
pub fn entries_out(entries: Vec<crate::peer::Entry>) -> Vec<Entry> {
    entries
        .into_iter()
        .map(|e| entry(e.key, e.stored))
        .collect()
}

/// Wire entries as domain entries; malformed ones (a required field missing)
/// are dropped.
pub fn entries_in(entries: Vec<Entry>) -> Vec<crate::peer::Entry> {
    entries
        .into_iter()
        .filter_map(from_entry)
        .map(|(key, stored)| crate::peer::Entry::new(key, stored))
        .collect()
}

/// An entry for the wire (a tombstone travels without a value).
pub fn entry(key: Vec<u8>, stored: Stored) -> Entry {
    Entry::new(
        key,
        stored.value,
        stored.version.stamp as i64,
        stored.version.origin as i32,
    )
}

/// A key and its stored copy from the wire; `None` when a required field is
/// missing. A missing value is a tombstone.
pub fn from_entry(entry: Entry) -> Option<(Vec<u8>, Stored)> {
    Some((
        entry.key?,
        Stored {
            value: entry.value,
            version: Version {
                stamp: entry.version? as u64,
                origin: entry.origin? as u32,
            },
        },
    ))
}

/// A page of this node's keys for the wire.
pub fn key_page_out(listed: Listed) -> KeyPage {
    let keys = (listed.entries.into_iter())
        .map(|(key, version, erased)| {
            ListedKey::new(key, version.stamp as i64, version.origin as i32, erased)
        })
        .collect::<Vec<_>>();
    KeyPage::new(keys, listed.next)
}

/// A page of a node's keys from the wire; keys missing a field are dropped.
pub fn key_page_in(page: KeyPage) -> Listed {
    let entries = (page.keys.unwrap_or_default().into_iter())
        .filter_map(|listed| {
            Some((
                listed.key?,
                version(listed.version?, listed.origin?),
                listed.erased?,
            ))
        })
        .collect();
    Listed {
        entries,
        next: page.resume,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_above_32767_travel_negative_and_come_back_unsigned() {
        let a = NodeAddr::new("10.0.0.1", 40000);
        let loc = location(&a);
        assert_eq!(loc.port, Some(-25536));
        assert_eq!(addr(&loc), Some(a));
    }

    #[test]
    fn member_rows_round_trip() {
        let state = MemberState {
            addr: NodeAddr::new("h", 65535),
            incarnation: 42,
            status: Status::Left,
            weight: 1,
        };
        assert_eq!(member(&state).weight, None, "weight 1 travels as none");
        assert_eq!(member_state(&member(&state)), Some(state.clone()));
        let heavy = MemberState {
            weight: 64,
            ..state
        };
        assert_eq!(member(&heavy).weight, Some(64));
        assert_eq!(member_state(&member(&heavy)), Some(heavy.clone()));
        for bad in [0, -1, 65, i32::MAX] {
            let mut row = member(&heavy);
            row.weight = Some(bad);
            assert_eq!(member_state(&row), None, "weight {bad} is refused");
        }
    }

    #[test]
    fn every_error_kind_a_node_answers_with_comes_back_as_that_kind() {
        let peer = NodeAddr::new("n", 1);
        for error in [
            Error::Quorum {
                stored: 1,
                needed: 2,
            },
            Error::ReadQuorum {
                vouched: 1,
                needed: 2,
            },
            Error::TooLarge { size: 2, limit: 1 },
            Error::TooManyHops { hops: 3 },
            Error::Expired,
            Error::NoOwner,
            Error::Joining,
            Error::Paused,
            Error::ShuttingDown,
            Error::Storage("disk".into()),
            Error::Refused {
                peer: "x".into(),
                message: "no".into(),
            },
            Error::Unreachable {
                peer: "x".into(),
                reason: "r".into(),
                refused: true,
            },
            Error::Rpc {
                peer: "x".into(),
                reason: "r".into(),
            },
            Error::Streamed {
                key: "k".into(),
                size: 5 << 30,
            },
            Error::Changed { key: "k".into() },
            Error::NoSuchUpload {
                key: "k".into(),
                upload: 7,
                reason: "expired".into(),
            },
            Error::Full {
                node: "n:1".into(),
                used: 10,
                needed: 5,
                limit: 12,
            },
        ] {
            let back = remote_error(&peer, store_error(&error));
            assert_eq!(back.kind(), error.kind(), "{error}");
            assert_eq!(back.to_string(), format!("n:1: {error}"));
            // Passed on by another node, it keeps kind and text.
            let again = remote_error(&NodeAddr::new("m", 2), store_error(&back));
            assert_eq!(again.kind(), error.kind());
            assert_eq!(again.to_string(), format!("m:2: {error}"));
        }
    }

    #[test]
    fn a_store_error_without_a_kind_is_a_refusal() {
        let old = StoreError {
            message: Some("no".into()),
            kind: None,
        };
        let error = remote_error(&NodeAddr::new("n", 1), old);
        assert_eq!(error.kind(), ErrorKind::Refused);
    }

    #[test]
    fn the_empty_location_is_no_address() {
        assert_eq!(addr(&no_location()), None);
    }
}
