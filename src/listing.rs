//! Listing a ring's keys: every member is asked for a page from the same
//! position of the listing order all nodes share (`store`'s module doc), and
//! the pages are merged here. Pure; [`crate::Client::list`] does the calls.
//!
//! Each member lists its own copies, so a key is found as long as one member
//! holding it answers: a listing is complete with up to one member fewer than
//! the write quorum silent. Copies carry versions, so the newest copy of each
//! key decides, and a key erased on any answering replica (a newer
//! tombstone) is left out. A member's page ends at its `next` position, past
//! which it has not looked yet: the merged page ends at the smallest of them,
//! where every member has told all it holds.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::store::{Listed, list_position, list_position_after};
use crate::version::Version;

/// The most keys one page of a listing holds.
pub const MAX_PAGE_KEYS: u32 = 10_000;

/// A page of a ring-wide listing ([`crate::Client::list`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys holding a value, in the listing order (grouped by the top bits
    /// of their ring position, then by their bytes: not sorted by key).
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts: pass it to the next call. `None` once the
    /// listing is complete. A page may be empty with a cursor set.
    pub cursor: Option<Vec<u8>>,
}

/// Merges the pages the members returned, all asked from the same start, into
/// at most `limit` keys and the cursor after them.
pub(crate) fn merge(pages: Vec<Listed>, limit: usize) -> KeyPage {
    let frontier = pages.iter().filter_map(|page| page.next.clone()).min();
    let mut newest: BTreeMap<Vec<u8>, (Vec<u8>, Version, bool)> = BTreeMap::new();
    for (key, version, erased) in pages.into_iter().flat_map(|page| page.entries) {
        let position = list_position(&key);
        if frontier
            .as_ref()
            .is_some_and(|frontier| &position >= frontier)
        {
            continue;
        }
        match newest.entry(position) {
            Entry::Vacant(slot) => {
                slot.insert((key, version, erased));
            }
            Entry::Occupied(mut slot) => {
                if slot.get().1 < version {
                    slot.insert((key, version, erased));
                }
            }
        }
    }
    let mut page = KeyPage {
        keys: Vec::new(),
        cursor: frontier,
    };
    for (key, _, erased) in newest.into_values() {
        if erased {
            continue;
        }
        if page.keys.len() == limit {
            page.cursor = page.keys.last().map(|last| list_position_after(last));
            break;
        }
        page.keys.push(key);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 1 }
    }

    fn live(key: &str, stamp: u64) -> (Vec<u8>, Version, bool) {
        (key.as_bytes().to_vec(), v(stamp), false)
    }

    fn erased(key: &str, stamp: u64) -> (Vec<u8>, Version, bool) {
        (key.as_bytes().to_vec(), v(stamp), true)
    }

    fn sorted(entries: Vec<(Vec<u8>, Version, bool)>) -> Vec<(Vec<u8>, Version, bool)> {
        let mut entries = entries;
        entries.sort_by_key(|(key, _, _)| list_position(key));
        entries
    }

    fn keys(page: &KeyPage) -> Vec<&str> {
        let mut keys: Vec<&str> = page
            .keys
            .iter()
            .map(|k| std::str::from_utf8(k).unwrap())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn copies_on_several_members_are_listed_once_and_the_newest_copy_decides() {
        let a = Listed {
            entries: sorted(vec![live("x", 1), live("y", 5), erased("z", 3)]),
            next: None,
        };
        let b = Listed {
            entries: sorted(vec![
                live("x", 1),
                erased("y", 4),
                live("z", 2),
                live("w", 1),
            ]),
            next: None,
        };
        let page = merge(vec![a, b], 100);
        // y's value is newer than its tombstone elsewhere; z's tombstone is newer.
        assert_eq!(keys(&page), ["w", "x", "y"]);
        assert_eq!(page.cursor, None);
    }

    #[test]
    fn a_page_ends_where_the_member_that_looked_least_far_stopped() {
        let all = sorted((0..40).map(|i| live(&format!("k{i}"), 1)).collect());
        let stop = list_position(&all[9].0);
        let short = Listed {
            entries: all[..9].to_vec(),
            next: Some(stop.clone()),
        };
        let whole = Listed {
            entries: all.clone(),
            next: None,
        };
        let page = merge(vec![short, whole], 100);
        let expected: Vec<Vec<u8>> = all[..9].iter().map(|(k, _, _)| k.clone()).collect();
        assert_eq!(page.keys, expected);
        assert_eq!(page.cursor, Some(stop));
    }

    #[test]
    fn a_full_page_resumes_after_its_last_key_and_erased_keys_do_not_count() {
        let mut entries: Vec<_> = (0..10).map(|i| live(&format!("k{i}"), 1)).collect();
        entries.push(erased("gone", 1));
        let entries = sorted(entries);
        let page = merge(
            vec![Listed {
                entries: entries.clone(),
                next: None,
            }],
            4,
        );
        let expected: Vec<Vec<u8>> = (entries.iter())
            .filter(|(_, _, dead)| !dead)
            .take(4)
            .map(|(k, _, _)| k.clone())
            .collect();
        assert_eq!(page.keys, expected);
        assert_eq!(page.cursor, Some(list_position_after(&expected[3])));
    }
}
