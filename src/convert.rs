//! Conversions between the generated Thrift types and the crate's domain types.

use crate::addr::NodeAddr;
use crate::idl::diststore::Entry;
use crate::idl::locator::{Location, Member, MemberStatus};
use crate::membership::{MemberState, Status};
use crate::store::Stored;
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

/// A member row for the wire. The wire has no `SUSPECT` or `LEAVING` yet
/// (`thrift/locator.thrift` is unchanged): both travel as `ALIVE` at the same
/// incarnation, which every receiver ranks at or below the real row, so the
/// merge stays safe; receivers just miss the suspicion or the leaving notice.
pub fn member(state: &MemberState) -> Member {
    let status = match state.status {
        Status::Alive | Status::Suspect | Status::Leaving => MemberStatus::ALIVE,
        Status::Dead => MemberStatus::DEAD,
        Status::Left => MemberStatus::LEFT,
    };
    Member::new(location(&state.addr), state.incarnation, status)
}

/// A member row from the wire; `None` when a field is missing or unknown.
pub fn member_state(member: &Member) -> Option<MemberState> {
    let status = match member.status? {
        MemberStatus::ALIVE => Status::Alive,
        MemberStatus::DEAD => Status::Dead,
        MemberStatus::LEFT => Status::Left,
        _ => return None,
    };
    Some(MemberState {
        addr: addr(member.location.as_ref()?)?,
        incarnation: member.incarnation?,
        status,
    })
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
        };
        assert_eq!(member_state(&member(&state)), Some(state));
    }

    #[test]
    fn the_empty_location_is_no_address() {
        assert_eq!(addr(&no_location()), None);
    }
}
