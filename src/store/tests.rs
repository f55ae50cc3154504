//! The engine contract, written once over the `Store` facade and run against every
//! engine (the disk engine in a fresh temporary directory per test).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Listed, Store, Stored, Usage, list_position, list_position_after};
use crate::addr::NodeAddr;
use crate::antientropy::{self, Digests, fingerprint_at};
use crate::ring::{Ring, key_position};
use crate::version::Version;

fn v(stamp: u64) -> Version {
    Version { stamp, origin: 0 }
}

fn value_of(engine: &Store, key: &[u8]) -> Option<Vec<u8>> {
    engine.get(key).unwrap().and_then(|stored| stored.value)
}

/// Every entry the scan visits, asserting none is visited twice.
fn scanned(engine: &Store) -> HashMap<Vec<u8>, (Version, bool)> {
    let mut seen = HashMap::new();
    engine
        .scan(|key, version, tombstone| {
            let first = seen.insert(key.to_vec(), (version, tombstone)).is_none();
            assert!(first, "scan visited {key:?} twice");
            true
        })
        .unwrap();
    seen
}

/// The usage a scan finds, values' lengths read back one by one: what the
/// engines' own counts must always equal.
fn recounted(engine: &Store) -> Usage {
    let mut usage = Usage::default();
    for key in scanned(engine).into_keys() {
        let value = value_of(engine, &key);
        usage.add(Usage::of(&key, value.as_deref()));
    }
    usage
}

fn usage(values: usize, bytes: u64, tombstones: usize) -> Usage {
    Usage {
        values,
        bytes,
        tombstones,
    }
}

/// Declares each contract test once per engine: `memory::NAME` and `disk::NAME`.
macro_rules! for_every_engine {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::$name(&Store::memory());
                }
            )*
            use super::Store;
        }
        mod disk {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(&Store::open(dir.path(), false).unwrap());
                }
            )*
            use super::Store;
        }
    };
}

for_every_engine!(
    a_newer_version_wins,
    an_equal_or_older_version_is_ignored,
    a_tombstone_hides_the_value_and_blocks_an_older_resurrection,
    overwrite_sees_the_previous_version_even_of_a_tombstone,
    remove_if_spares_a_newer_write,
    remove_if_forgets_a_tombstone_too,
    scan_sees_every_entry_exactly_once_with_its_tombstone_flag,
    scan_stops_when_visit_says_so,
    scan_lets_visit_write_to_the_store,
    len_ignores_tombstones,
    concurrent_overwrites_from_four_threads_end_with_the_max_version,
    binary_keys_and_values_round_trip_and_an_empty_value_is_not_a_tombstone,
    usage_counts_values_bytes_and_tombstones_exactly_through_every_kind_of_write,
    usage_stays_exact_under_concurrent_overwrites_and_removes,
    value_len_is_the_length_of_the_value_and_nothing_for_an_absent_key,
    pages_list_every_entry_once_in_listing_order_whatever_the_limit_and_budget,
    a_prefix_lists_only_its_keys_and_a_cursor_past_a_deleted_key_resumes_after_it,
    range_digests_equal_a_rescan_through_every_kind_of_write_and_new_cuts,
    range_digests_stay_exact_while_writers_race_with_recuts,
    pair_digests_from_ranges_equal_digests_of_the_shared_keys,
);

fn value_len_is_the_length_of_the_value_and_nothing_for_an_absent_key(engine: &Store) {
    assert_eq!(engine.value_len(b"k").unwrap(), None);
    engine.merge(b"k", Some(&[7; 5000]), v(1)).unwrap();
    assert_eq!(engine.value_len(b"k").unwrap(), Some(5000));
    engine.merge(b"e", Some(b""), v(1)).unwrap();
    assert_eq!(engine.value_len(b"e").unwrap(), Some(0));
    engine.merge(b"k", None, v(2)).unwrap();
    // A tombstone carries no value: nothing, or nothing's length.
    assert!(matches!(engine.value_len(b"k").unwrap(), None | Some(0)));
    // A key too long to store was never stored.
    assert_eq!(engine.value_len(&vec![b'x'; 1 << 20]).unwrap(), None);
}

fn a_newer_version_wins(engine: &Store) {
    assert!(engine.merge(b"k", Some(b"old"), v(1)).unwrap());
    assert!(engine.merge(b"k", Some(b"new"), v(2)).unwrap());
    assert_eq!(
        engine.get(b"k").unwrap(),
        Some(Stored {
            value: Some(b"new".to_vec()),
            version: v(2)
        })
    );
    // The origin breaks ties between equal stamps.
    let tie = Version {
        stamp: 2,
        origin: 1,
    };
    assert!(engine.merge(b"k", Some(b"tie"), tie).unwrap());
    assert_eq!(value_of(engine, b"k").unwrap(), b"tie");
}

fn an_equal_or_older_version_is_ignored(engine: &Store) {
    assert!(engine.merge(b"k", Some(b"new"), v(2)).unwrap());
    assert!(!engine.merge(b"k", Some(b"same"), v(2)).unwrap());
    assert!(!engine.merge(b"k", Some(b"old"), v(1)).unwrap());
    assert!(!engine.merge(b"k", None, v(1)).unwrap());
    assert_eq!(value_of(engine, b"k").unwrap(), b"new");
    assert_eq!(engine.get(b"k").unwrap().unwrap().version, v(2));
}

fn a_tombstone_hides_the_value_and_blocks_an_older_resurrection(engine: &Store) {
    engine.merge(b"k", Some(b"a"), v(1)).unwrap();
    assert!(engine.merge(b"k", None, v(2)).unwrap());
    assert_eq!(
        engine.get(b"k").unwrap(),
        Some(Stored {
            value: None,
            version: v(2)
        })
    );
    // A replica that was down offers the value it still has.
    assert!(!engine.merge(b"k", Some(b"a"), v(1)).unwrap());
    assert_eq!(value_of(engine, b"k"), None);
    // A write made after the delete does bring the key back.
    assert!(engine.merge(b"k", Some(b"b"), v(3)).unwrap());
    assert_eq!(value_of(engine, b"k").unwrap(), b"b");
    // A tombstone for a key never seen is kept too.
    assert!(engine.merge(b"never", None, v(5)).unwrap());
    assert!(!engine.merge(b"never", Some(b"x"), v(4)).unwrap());
}

fn overwrite_sees_the_previous_version_even_of_a_tombstone(engine: &Store) {
    let mut seen = Vec::new();
    let mut next = |old: Option<Version>| {
        seen.push(old);
        v(old.map_or(10, |old| old.stamp + 1))
    };
    assert_eq!(
        engine.overwrite(b"k", Some(b"a"), &mut next).unwrap(),
        v(10)
    );
    assert_eq!(engine.overwrite(b"k", None, &mut next).unwrap(), v(11));
    assert_eq!(
        engine.overwrite(b"k", Some(b"b"), &mut next).unwrap(),
        v(12)
    );
    assert_eq!(seen, [None, Some(v(10)), Some(v(11))]);
    assert_eq!(
        engine.get(b"k").unwrap(),
        Some(Stored {
            value: Some(b"b".to_vec()),
            version: v(12)
        })
    );
}

fn remove_if_spares_a_newer_write(engine: &Store) {
    engine.merge(b"k", Some(b"a"), v(1)).unwrap();
    engine.merge(b"k", Some(b"b"), v(2)).unwrap();
    assert!(!engine.remove_if(b"k", v(1)).unwrap());
    assert!(!engine.remove_if(b"k", v(3)).unwrap());
    assert_eq!(value_of(engine, b"k").unwrap(), b"b");
    assert!(engine.remove_if(b"k", v(2)).unwrap());
    assert_eq!(engine.get(b"k").unwrap(), None);
    assert!(!engine.remove_if(b"k", v(2)).unwrap());
    assert!(!engine.remove_if(b"absent", v(2)).unwrap());
}

fn remove_if_forgets_a_tombstone_too(engine: &Store) {
    engine.merge(b"k", None, v(4)).unwrap();
    assert!(engine.remove_if(b"k", v(4)).unwrap());
    assert_eq!(engine.get(b"k").unwrap(), None);
    // Forgotten: an older copy is now accepted, which is why callers remove a
    // tombstone only once no older copy can come back.
    assert!(engine.merge(b"k", Some(b"a"), v(1)).unwrap());
}

fn scan_sees_every_entry_exactly_once_with_its_tombstone_flag(engine: &Store) {
    // More keys than one scan batch of the disk engine, across every shard.
    let count = 3000u32;
    for i in 0..count {
        let value = (i % 3 != 0).then_some(&b"x"[..]);
        engine
            .merge(&i.to_be_bytes(), value, v(u64::from(i) + 1))
            .unwrap();
    }
    let seen = scanned(engine);
    assert_eq!(seen.len(), count as usize);
    for i in 0..count {
        assert_eq!(
            seen[&i.to_be_bytes().to_vec()],
            (v(u64::from(i) + 1), i % 3 == 0),
            "key {i}"
        );
    }
}

fn scan_stops_when_visit_says_so(engine: &Store) {
    for i in 0..2000u32 {
        engine.merge(&i.to_be_bytes(), Some(b"x"), v(1)).unwrap();
    }
    let mut visits = 0;
    engine
        .scan(|_, _, _| {
            visits += 1;
            visits < 10
        })
        .unwrap();
    assert_eq!(visits, 10);
}

fn scan_lets_visit_write_to_the_store(engine: &Store) {
    for i in 0..100u32 {
        engine.merge(&i.to_be_bytes(), Some(b"x"), v(1)).unwrap();
    }
    // Anti-entropy may repair or delete what it visits: no lock may be held.
    engine
        .scan(|key, version, _| {
            engine.get(key).unwrap();
            engine.merge(key, None, v(version.stamp + 1)).unwrap();
            true
        })
        .unwrap();
    assert!(scanned(engine).values().all(|&(_, tombstone)| tombstone));
    assert_eq!(engine.len(), 0);
}

fn len_ignores_tombstones(engine: &Store) {
    assert_eq!(engine.len(), 0);
    engine.merge(b"a", Some(b"1"), v(1)).unwrap();
    engine.merge(b"b", Some(b"2"), v(1)).unwrap();
    engine.merge(b"c", None, v(1)).unwrap();
    assert_eq!(engine.len(), 2);
    engine.merge(b"a", None, v(2)).unwrap();
    assert_eq!(engine.len(), 1);
    engine.overwrite(b"a", Some(b"3"), |_| v(3)).unwrap();
    assert_eq!(engine.len(), 2);
    engine.overwrite(b"b", Some(b"4"), |_| v(3)).unwrap();
    assert_eq!(engine.len(), 2);
    engine.remove_if(b"c", v(1)).unwrap();
    assert_eq!(engine.len(), 2);
    engine.remove_if(b"b", v(3)).unwrap();
    assert_eq!(engine.len(), 1);
}

fn concurrent_overwrites_from_four_threads_end_with_the_max_version(engine: &Store) {
    // Each overwrite adds one to the version it replaces, so the final stamp
    // counts the overwrites that were applied: any lost update shows.
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 256;
    const KEYS: u64 = 8;
    let maxima: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    let mut max = vec![0; KEYS as usize];
                    for round in 0..ROUNDS {
                        let key = round % KEYS;
                        let value = (thread % 2 == 0).then_some(&b"v"[..]);
                        let got = engine
                            .overwrite(&key.to_be_bytes(), value, |old| {
                                v(old.map_or(0, |old| old.stamp) + 1)
                            })
                            .unwrap();
                        max[key as usize] = max[key as usize].max(got.stamp);
                    }
                    max
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for key in 0..KEYS {
        let stored = engine.get(&key.to_be_bytes()).unwrap().unwrap();
        let returned = maxima.iter().map(|m| m[key as usize]).max().unwrap();
        assert_eq!(stored.version, v(THREADS * ROUNDS / KEYS));
        assert_eq!(stored.version.stamp, returned);
    }
    let values = scanned(engine).values().filter(|(_, t)| !t).count();
    assert_eq!(engine.len(), values);
}

fn binary_keys_and_values_round_trip_and_an_empty_value_is_not_a_tombstone(engine: &Store) {
    let key: Vec<u8> = (0..=255).collect();
    let value: Vec<u8> = (0..=255).rev().cycle().take(1000).collect();
    engine.merge(&key, Some(&value), v(1)).unwrap();
    assert_eq!(value_of(engine, &key).unwrap(), value);

    engine.merge(b"\0", Some(b""), v(1)).unwrap();
    engine.merge(b"", Some(b"\xff\0"), v(1)).unwrap();
    engine.merge(b"gone", None, v(1)).unwrap();
    assert_eq!(
        engine.get(b"\0").unwrap(),
        Some(Stored {
            value: Some(Vec::new()),
            version: v(1)
        })
    );
    assert_eq!(value_of(engine, b"").unwrap(), b"\xff\0");
    assert_eq!(engine.get(b"gone").unwrap().unwrap().value, None);
    assert_eq!(engine.len(), 3);
    let seen = scanned(engine);
    assert_eq!(seen[&b"\0".to_vec()], (v(1), false));
    assert_eq!(seen[&b"gone".to_vec()], (v(1), true));
}

#[test]
fn keys_where_includes_tombstoned_keys() {
    let store = Store::memory();
    for i in 0..1000u32 {
        let value = (i % 2 == 0).then_some(&b"x"[..]);
        store.merge(&i.to_be_bytes(), value, v(1)).unwrap();
    }
    assert_eq!(store.keys_where(|k| k[3] % 4 == 1).unwrap().len(), 250);
    assert_eq!(store.keys_where(|_| true).unwrap().len(), 1000);
    assert_eq!(store.len(), 500);
    assert!(!store.is_empty());
}

#[test]
fn store_overwrite_takes_a_one_shot_closure() {
    let store = Store::memory();
    let base = vec![1u64];
    let version = store
        .overwrite(b"k", Some(b"v"), move |old| {
            // `base` is moved in and consumed: only an `FnOnce` can do this.
            let base = base.into_iter().sum::<u64>();
            v(old.map_or(base, |old| old.stamp + 1))
        })
        .unwrap();
    assert_eq!(version, v(1));
}

fn usage_counts_values_bytes_and_tombstones_exactly_through_every_kind_of_write(engine: &Store) {
    assert_eq!(engine.usage(), Usage::default());
    // New keys: 2+3, 1+0 (an empty value is a value), and a tombstone.
    engine.merge(b"ab", Some(b"123"), v(1)).unwrap();
    engine.merge(b"e", Some(b""), v(1)).unwrap();
    engine.merge(b"gone", None, v(1)).unwrap();
    assert_eq!(engine.usage(), usage(2, 6, 1));
    // A longer, then a shorter value at the same key.
    engine.merge(b"ab", Some(b"123456789"), v(2)).unwrap();
    assert_eq!(engine.usage(), usage(2, 12, 1));
    engine
        .overwrite(b"ab", Some(b"1"), |old| v(old.unwrap().stamp + 1))
        .unwrap();
    assert_eq!(engine.usage(), usage(2, 4, 1));
    // A refused (older) write changes nothing.
    assert!(!engine.merge(b"ab", Some(b"old and long"), v(1)).unwrap());
    assert_eq!(engine.usage(), usage(2, 4, 1));
    // Erase: the value's bytes go, a tombstone comes.
    engine.overwrite(b"ab", None, |_| v(10)).unwrap();
    assert_eq!(engine.usage(), usage(1, 1, 2));
    // A tombstone over a tombstone is still one.
    engine.merge(b"ab", None, v(11)).unwrap();
    assert_eq!(engine.usage(), usage(1, 1, 2));
    // A value written over a tombstone.
    engine.merge(b"gone", Some(b"back"), v(2)).unwrap();
    assert_eq!(engine.usage(), usage(2, 9, 1));
    // remove_if of the wrong version changes nothing; of the right one,
    // forgets a value or a tombstone.
    assert!(!engine.remove_if(b"gone", v(1)).unwrap());
    assert_eq!(engine.usage(), usage(2, 9, 1));
    assert!(engine.remove_if(b"gone", v(2)).unwrap());
    assert_eq!(engine.usage(), usage(1, 1, 1));
    assert!(engine.remove_if(b"ab", v(11)).unwrap());
    assert_eq!(engine.usage(), usage(1, 1, 0));
    assert!(engine.remove_if(b"e", v(1)).unwrap());
    assert_eq!(engine.usage(), Usage::default());
    assert_eq!(engine.len(), 0);
}

fn usage_stays_exact_under_concurrent_overwrites_and_removes(engine: &Store) {
    // Four threads overwrite, erase and remove the same keys with values of
    // varying size; whatever interleaving, the counts match a recount.
    const KEYS: u64 = 16;
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            scope.spawn(move || {
                for round in 0..300u64 {
                    let key = ((round * 7 + thread) % KEYS).to_be_bytes();
                    let len = ((round * 31 + thread * 17) % 200) as usize;
                    let value = vec![thread as u8; len];
                    let value = (round % 5 != 0).then_some(&value[..]);
                    let version = engine
                        .overwrite(&key, value, |old| v(old.map_or(0, |old| old.stamp) + 1))
                        .unwrap();
                    if round % 7 == 3 {
                        engine.remove_if(&key, version).unwrap();
                    }
                }
            });
        }
    });
    let counted = engine.usage();
    assert_eq!(counted, recounted(engine));
    assert_eq!(counted.values, engine.len());
}

#[test]
fn the_disk_engine_recounts_usage_exactly_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = Store::open(dir.path(), false).unwrap();
        for i in 0..3000u32 {
            let value = vec![7u8; (i % 50) as usize];
            let value = (i % 4 != 0).then_some(&value[..]);
            store.merge(&i.to_be_bytes(), value, v(1)).unwrap();
        }
        // Overwrites, erases and removals after the first writes.
        for i in (0..3000u32).step_by(3) {
            store
                .overwrite(&i.to_be_bytes(), Some(b"xyz"), |old| {
                    v(old.unwrap().stamp + 1)
                })
                .unwrap();
        }
        for i in (0..3000u32).step_by(5) {
            store.overwrite(&i.to_be_bytes(), None, |_| v(9)).unwrap();
        }
        for i in (0..3000u32).step_by(10) {
            assert!(store.remove_if(&i.to_be_bytes(), v(9)).unwrap());
        }
        let usage = store.usage();
        assert_eq!(usage, recounted(&store));
        usage
    };
    let store = Store::open(dir.path(), false).unwrap();
    assert_eq!(store.usage(), before);
    assert!(before.values > 0 && before.tombstones > 0 && before.bytes > 0);
}

/// Every page from the start, following `next`, asserting each page is in
/// listing order and starts where the previous one said.
fn list_all(engine: &Store, prefix: &[u8], limit: usize, budget: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut from = Vec::new();
    for _ in 0..100_000 {
        let Listed { entries, next } = engine.list(&from, prefix, limit, budget).unwrap();
        assert!(entries.len() <= limit);
        for (key, _, _) in entries {
            assert!(list_position(&key) >= from, "{key:?} is before the cursor");
            if let Some(last) = keys.last() {
                assert!(list_position(last) < list_position(&key), "out of order");
            }
            keys.push(key);
        }
        match next {
            Some(next) => {
                assert!(next >= from, "the cursor went back");
                from = next;
            }
            None => return keys,
        }
    }
    panic!("the listing never ended");
}

fn pages_list_every_entry_once_in_listing_order_whatever_the_limit_and_budget(engine: &Store) {
    let mut expected: Vec<Vec<u8>> = (0..600u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    for (i, key) in expected.iter().enumerate() {
        let value = (i % 5 != 0).then_some(&b"v"[..]);
        engine.merge(key, value, v(1)).unwrap();
    }
    expected.sort_by_key(|key| list_position(key));
    for (limit, budget) in [
        (1, usize::MAX),
        (7, usize::MAX),
        (1000, usize::MAX),
        (50, 1),
        (3, 40),
    ] {
        assert_eq!(
            list_all(engine, b"", limit, budget),
            expected,
            "limit {limit}, budget {budget}"
        );
    }
    // Tombstones are listed, flagged, with their versions.
    let page = engine.list(&[], b"", 1000, usize::MAX).unwrap();
    assert_eq!(page.next, None);
    let tombstones = page.entries.iter().filter(|(_, _, dead)| *dead).count();
    assert_eq!(tombstones, 120);
    assert!(page.entries.iter().all(|(_, version, _)| *version == v(1)));
}

fn a_prefix_lists_only_its_keys_and_a_cursor_past_a_deleted_key_resumes_after_it(engine: &Store) {
    for i in 0..300u32 {
        let prefix = if i % 3 == 0 { "p/" } else { "q/" };
        engine
            .merge(format!("{prefix}{i}").as_bytes(), Some(b"v"), v(1))
            .unwrap();
    }
    engine.merge(b"p", Some(b"v"), v(1)).unwrap();
    engine.merge(b"p/\xff\xff", Some(b"v"), v(1)).unwrap();
    let mut expected: Vec<Vec<u8>> = (0..300u32)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("p/{i}").into_bytes())
        .collect();
    expected.push(b"p/\xff\xff".to_vec());
    expected.sort_by_key(|key| list_position(key));
    assert_eq!(list_all(engine, b"p/", 9, usize::MAX), expected);
    assert_eq!(list_all(engine, b"p/", 4, 10), expected);
    assert_eq!(
        list_all(engine, b"nothing", 4, usize::MAX),
        Vec::<Vec<u8>>::new()
    );

    // Resuming after a key that was forgotten meanwhile lists the keys after it.
    let gone = &expected[10];
    let version = engine.get(gone).unwrap().unwrap().version;
    assert!(engine.remove_if(gone, version).unwrap());
    let page = engine
        .list(&list_position_after(gone), b"p/", 5, usize::MAX)
        .unwrap();
    let keys: Vec<&Vec<u8>> = page.entries.iter().map(|(key, _, _)| key).collect();
    assert_eq!(keys, expected[11..16].iter().collect::<Vec<_>>());
    let page = engine
        .list(&list_position(gone), b"p/", 5, usize::MAX)
        .unwrap();
    let keys: Vec<&Vec<u8>> = page.entries.iter().map(|(key, _, _)| key).collect();
    assert_eq!(keys, expected[11..16].iter().collect::<Vec<_>>());
}

/// What [`Store::range_digests`] must equal: the fingerprints of a scan,
/// added up per range of `cuts`. The store's ranges may be cut finer, so
/// they are added up onto `cuts` too before comparing.
fn assert_ranges_exact(engine: &Store, cuts: &Arc<Vec<u64>>) {
    let onto = |ranges: &mut Vec<u64>, position: u64, digest: u64| {
        ranges[cuts.partition_point(|&c| c <= position) - 1] ^= digest;
    };
    let mut expected = vec![0; cuts.len()];
    engine
        .scan(|key, version, tombstone| {
            let position = key_position(key);
            onto(
                &mut expected,
                position,
                fingerprint_at(position, version, tombstone),
            );
            true
        })
        .unwrap();
    let mut kept = vec![0; cuts.len()];
    let ranges = engine.range_digests(cuts).unwrap();
    assert!(ranges.is_sorted_by_key(|&(start, _)| start));
    for (start, digest) in ranges {
        onto(&mut kept, start, digest);
    }
    assert!(expected.iter().any(|&d| d != 0) || engine.usage() == Usage::default());
    assert_eq!(kept, expected);
}

fn ring_of(members: &[&str]) -> Ring<String> {
    Ring::with_points(members.iter().map(|m| m.to_string()), 16)
}

/// Merges, overwrites, tombstones and removes of 600 keys, `round` making
/// each pass's versions newer.
fn churn(engine: &Store, round: u64) {
    for i in 0..600u64 {
        let key = format!("key-{i}");
        let version = v(round * 10 + 1);
        match i % 5 {
            0 | 1 => {
                engine
                    .merge(key.as_bytes(), Some(b"value"), version)
                    .unwrap();
            }
            2 => {
                engine.overwrite(key.as_bytes(), None, |_| version).unwrap();
            }
            3 => {
                engine.merge(key.as_bytes(), Some(b"v"), version).unwrap();
                engine.remove_if(key.as_bytes(), version).unwrap();
            }
            _ => {
                // Older than what round - 1 wrote: refused, so nothing changes.
                engine.merge(key.as_bytes(), Some(b"stale"), v(1)).unwrap();
            }
        }
    }
}

fn range_digests_equal_a_rescan_through_every_kind_of_write_and_new_cuts(engine: &Store) {
    let two = Arc::new(antientropy::cuts(&ring_of(&["a", "b"])));
    let three = Arc::new(antientropy::cuts(&ring_of(&["a", "b", "c"])));
    assert_ranges_exact(engine, &two);
    // Written before the store was asked for ranges, then cut from a scan.
    churn(engine, 1);
    assert_ranges_exact(engine, &two);
    // Kept up to date by the writes themselves.
    churn(engine, 2);
    assert_ranges_exact(engine, &two);
    // A member joins: new cuts, groups rescanned.
    assert_ranges_exact(engine, &three);
    churn(engine, 3);
    assert_ranges_exact(engine, &three);
    // It leaves again: the finer cuts still serve.
    assert_ranges_exact(engine, &two);
    churn(engine, 4);
    assert_ranges_exact(engine, &two);
    assert_ranges_exact(engine, &three);
}

fn range_digests_stay_exact_while_writers_race_with_recuts(engine: &Store) {
    let rings: Vec<Arc<Vec<u64>>> = [&["a", "b"][..], &["a", "c"], &["b", "c", "d"]]
        .iter()
        .map(|members| Arc::new(antientropy::cuts(&ring_of(members))))
        .collect();
    std::thread::scope(|scope| {
        for writer in 0..3u64 {
            scope.spawn(move || {
                for i in 0..2000u64 {
                    let key = format!("k{}", i % 500);
                    let value = (i % 7 == 0).then_some(&b"x"[..]);
                    engine
                        .overwrite(key.as_bytes(), value, |old| {
                            v(old.map_or(0, |old| old.stamp) + 1 + writer)
                        })
                        .unwrap();
                    if i % 11 == 0 {
                        let version = engine.get(key.as_bytes()).unwrap().unwrap().version;
                        engine.remove_if(key.as_bytes(), version).unwrap();
                    }
                }
            });
        }
        scope.spawn(|| {
            for round in 0..30 {
                engine.range_digests(&rings[round % rings.len()]).unwrap();
            }
        });
    });
    for cuts in &rings {
        assert_ranges_exact(engine, cuts);
    }
}

fn pair_digests_from_ranges_equal_digests_of_the_shared_keys(engine: &Store) {
    let nodes: Vec<NodeAddr> = (1..=4)
        .map(|port| NodeAddr::new("127.0.0.1", port))
        .collect();
    let ring = Ring::with_points(nodes.clone(), 16);
    churn(engine, 1);
    let ranges = engine
        .range_digests(&Arc::new(antientropy::cuts(&ring)))
        .unwrap();
    for peer in &nodes[1..] {
        let mut expected = Digests::new();
        engine
            .scan(|key, version, tombstone| {
                if antientropy::shares(&ring, 2, key, &nodes[0], peer) {
                    expected.add(key, version, tombstone);
                }
                true
            })
            .unwrap();
        let kept = antientropy::pair_digests(&ring, 2, &nodes[0], peer, &ranges);
        assert_eq!(kept, expected);
        assert_ne!(kept, Digests::new(), "some keys are shared with {peer}");
    }
}
