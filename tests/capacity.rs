//! Capacity against real `location` processes: `--max-memory` (a write that
//! would go over fails with FULL, nothing is evicted, an erase makes room)
//! and `--weight` (a heavier member owns a larger share, and clients route
//! as the nodes do).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{NodeProc, drained, run_tool, start_ring, stat, wait_until};
use serde_json::Value;
use thrifty_p2p::wire::Conn;
use thrifty_p2p::wire::idl::diststore::{ErrorKind as WireKind, StoreError, TStoreSyncClient};
use thrifty_p2p::{Client, ClientOptions, ErrorKind};

/// The `StoreError` a raw Thrift call failed with.
fn store_error<T: std::fmt::Debug>(result: thrift::Result<T>) -> StoreError {
    match result {
        Err(thrift::Error::User(e)) => *e.downcast::<StoreError>().expect("a StoreError"),
        other => panic!("expected a StoreError, got {other:?}"),
    }
}

#[test]
fn one_node_takes_writes_up_to_its_cap_to_the_byte_and_refuses_the_next() {
    let node = NodeProc::start_with(None, &["--max-memory", "1000"]);
    exact_boundary(&node);
}

#[test]
fn the_cap_counts_alike_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let node = NodeProc::start_with(None, &["--max-memory", "1000", "--data-dir", data]);
    exact_boundary(&node);
}

/// The boundary of a 1000-byte cap on a fresh node, to the byte.
fn exact_boundary(node: &NodeProc) {
    let mut raw = node.client();
    assert_eq!(stat(&node.addr, "max_memory_bytes"), Some(1000));

    // Key and value bytes count: 2 + 998 is exactly the cap.
    raw.store(b"k1".to_vec(), vec![b'a'; 998])
        .expect("fits exactly");
    assert_eq!(stat(&node.addr, "bytes"), Some(1000));
    let full = store_error(raw.store(b"k2".to_vec(), b"x".to_vec()));
    assert_eq!(full.kind, Some(WireKind::FULL), "{full:?}");
    let message = full.message.unwrap();
    for part in [
        &format!("{} is full", node.addr),
        "holds 1000 bytes",
        "needs 3 more",
        "--max-memory of 1000 bytes",
        "nothing is evicted",
        "erase keys, raise --max-memory, or add nodes",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    // Nothing was stored, nothing evicted.
    assert_eq!(raw.fetch(b"k2".to_vec()).unwrap().value, None);
    assert_eq!(
        raw.fetch(b"k1".to_vec()).unwrap().value,
        Some(vec![b'a'; 998])
    );

    // An overwrite counts only what it adds: the same size fits, one more
    // byte does not.
    raw.store(b"k1".to_vec(), vec![b'b'; 998])
        .expect("same size");
    let full = store_error(raw.store(b"k1".to_vec(), vec![b'c'; 999]));
    assert_eq!(full.kind, Some(WireKind::FULL));
    assert!(full.message.unwrap().contains("needs 1 more"));

    // Uploads in parts are client writes too.
    let upload = raw.begin_upload(b"big".to_vec()).unwrap();
    let full = store_error(raw.upload_part(b"big".to_vec(), upload, 0, vec![0; 100]));
    assert_eq!(full.kind, Some(WireKind::FULL), "{full:?}");

    // An erase is always taken, and makes room.
    raw.erase(b"k1".to_vec()).expect("erases are always taken");
    assert_eq!(stat(&node.addr, "bytes"), Some(0));
    raw.store(b"k2".to_vec(), b"x".to_vec())
        .expect("room again");
    assert_eq!(stat(&node.addr, "bytes"), Some(3));
    // A key that holds a tombstone holds no bytes: writing it again counts
    // its key too (3 + 2 + 995 is the cap, 996 one over).
    let full = store_error(raw.store(b"k1".to_vec(), vec![b'd'; 996]));
    assert_eq!(full.kind, Some(WireKind::FULL), "{full:?}");
    raw.store(b"k1".to_vec(), vec![b'd'; 995])
        .expect("exactly the cap");
    assert_eq!(stat(&node.addr, "bytes"), Some(1000));
    raw.erase(b"k1".to_vec()).unwrap();

    // The Rust library names the kind.
    let mut client = Client::through(node.addr.clone()).unwrap();
    let error = client.put("k3", vec![0u8; 1000]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Full, "{error}");
    assert!(!error.is_transient());
}

#[test]
fn a_full_ring_refuses_writes_clearly_keeps_every_acknowledged_one_and_takes_erases() {
    const CAP: i64 = 8 * 1024;
    let cap = CAP.to_string();
    let nodes = start_ring(3, &["--max-memory", &cap]);
    for node in &nodes {
        assert_eq!(stat(&node.addr, "max_memory_bytes"), Some(CAP));
    }
    let mut client = Client::connect(&nodes[0].addr.to_string()).unwrap();
    let value = vec![b'v'; 250];
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut acked = Vec::new();
    let full = loop {
        let key = format!("key-{:04}", acked.len());
        match client.put(&key, &value) {
            Ok(()) => acked.push(key),
            Err(e) => break e,
        }
        // One write at a time everywhere, so every replica holds the same
        // bytes when the next comes (see `capacity`: a write refused by a
        // replica but stored by its coordinator may still spread).
        assert!(wait_until(Duration::from_secs(20), || drained(&addrs)));
        assert!(acked.len() < 100, "8 KiB took 100 writes of 258 bytes");
    };
    assert_eq!(full.kind(), ErrorKind::Full, "{full}");
    let text = full.to_string();
    assert!(text.contains("is full"), "{text}");
    assert!(
        text.contains(&format!("--max-memory of {CAP} bytes")),
        "{text}"
    );
    assert!(text.contains("erase keys"), "{text}");
    // Three replicas of every key: each node holds them all, so the ring is
    // full when one node is, after 8 KiB / 258 bytes = 31 keys.
    assert_eq!(acked.len(), (CAP / 258) as usize, "{acked:?}");

    // Every acknowledged write is readable through every node, and no node
    // holds more than its cap.
    let everywhere = wait_until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|n| stat(&n.addr, "keys") == Some(acked.len() as i64))
    });
    assert!(everywhere, "the replicas did not converge");
    for node in &nodes {
        assert!(stat(&node.addr, "bytes").unwrap() <= CAP);
        let mut reader = Client::through(node.addr.clone()).unwrap();
        for key in &acked {
            assert_eq!(
                reader.get(key).unwrap().as_deref(),
                Some(&value[..]),
                "{key}"
            );
        }
    }
    // storestat says so.
    let (_, out, _) = run_tool(
        "storestat",
        &["--json", "--peer", &nodes[1].addr.to_string()],
        None,
    );
    let report: Value = serde_json::from_slice(&out).unwrap();
    for row in report["nodes"].as_array().unwrap() {
        assert_eq!(row["max_memory"], CAP, "{row}");
        assert_eq!(row["bytes"], acked.len() * 258, "{row}");
    }

    // An erase frees room on every replica; the next write fits again.
    client.delete(&acked[0]).unwrap();
    let freed = wait_until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|n| stat(&n.addr, "bytes").is_some_and(|b| b <= CAP - 258))
    });
    assert!(freed, "the erase did not reach every replica");
    client.put("one-more", &value).expect("room after an erase");
    assert_eq!(client.get("one-more").unwrap(), Some(value.clone()));
    assert_eq!(client.get(&acked[0]).unwrap(), None);
}

#[test]
fn a_full_replica_refuses_the_replicated_write_and_the_client_is_told() {
    // The seed has room to spare, the other two a small cap: a write the
    // seed coordinates reaches its quorum only if a small replica takes it.
    let seed = NodeProc::start_with(None, &["--max-memory", "1M"]);
    let small: Vec<NodeProc> = (0..2)
        .map(|_| NodeProc::start_with(Some(&seed.addr), &["--max-memory", "2K"]))
        .collect();
    let all = [&seed, &small[0], &small[1]];
    let agreed = wait_until(Duration::from_secs(20), || {
        all.iter().all(|n| stat(&n.addr, "members") == Some(3))
    });
    assert!(agreed, "the ring did not form");
    // Keys the seed owns, so it coordinates every write and is never the
    // one that is full: the refusal comes from a replica's `replicate`.
    let ring = Conn::open(&seed.addr, &ClientOptions::default())
        .unwrap()
        .ring()
        .unwrap();
    let mut keys = (0..)
        .map(|i| format!("key-{i}"))
        .filter(|k| ring.owner(k.as_bytes()) == Some(&seed.addr));
    let mut client = Client::through(seed.addr.clone()).unwrap();
    let value = vec![b'v'; 500];
    let addrs: Vec<_> = all.iter().map(|n| n.addr.clone()).collect();
    let mut acked = Vec::new();
    let (refused, error) = loop {
        let key = keys.next().unwrap();
        match client.put(&key, &value) {
            Ok(()) => acked.push(key),
            Err(e) => break (key, e),
        }
        assert!(wait_until(Duration::from_secs(20), || drained(&addrs)));
        assert!(
            acked.len() < 50,
            "2 KiB replicas took 50 writes of 500 bytes"
        );
    };
    assert_eq!(error.kind(), ErrorKind::Full, "{error}");
    let text = error.to_string();
    let named = small
        .iter()
        .any(|n| text.contains(&format!("{} is full", n.addr)));
    assert!(named, "the message names a small node: {text}");
    assert!(
        text.contains("is full") && text.contains("--max-memory of 2048"),
        "{text}"
    );
    // The small nodes took as many as fit (keys are 5 or 6 bytes).
    assert!((3..=4).contains(&acked.len()), "{acked:?}");
    for key in &acked {
        assert_eq!(
            client.get(key).unwrap().as_deref(),
            Some(&value[..]),
            "{key}"
        );
    }
    // The refused write stays on its coordinator, which had room (as after
    // QUORUM; anti-entropy may still spread it).
    let kept = common::local_copy(&seed.addr, refused.as_bytes()).unwrap();
    assert!(kept.is_some_and(|e| e.value.is_some()), "{refused}");
}

#[test]
fn bad_max_memory_and_weight_values_exit_with_a_clear_message() {
    for (flag, value, says) in [
        ("--max-memory", "12x", "is not a size: unknown unit `x`"),
        ("--max-memory", "lots", "is not a size"),
        (
            "--max-memory",
            "0",
            "a cap of 0 bytes would refuse every write",
        ),
        ("--max-memory=-5", "", "is not a size"),
        ("--weight", "0", "0 is not in 1..=64"),
        ("--weight", "65", "65 is not in 1..=64"),
        ("--weight", "two", "invalid digit"),
    ] {
        let mut args = vec![flag, value, "0"];
        args.retain(|a| !a.is_empty());
        let (code, _, err) = run_tool("location", &args, None);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    let (code, out, _) = run_tool("location", &["--help"], None);
    let help = String::from_utf8_lossy(&out);
    assert_eq!(code, 0);
    assert!(help.contains("--max-memory <BYTES>") && help.contains("--weight <N>"));
}

#[test]
fn a_member_of_weight_two_owns_half_a_ring_of_weights_one_one_two() {
    let heavy = NodeProc::start_with(None, &["--weight", "2"]);
    let light: Vec<NodeProc> = (0..2).map(|_| NodeProc::start(Some(&heavy.addr))).collect();
    let nodes = [&heavy, &light[0], &light[1]];
    // Every node sees the weight: their shares add up to the circle.
    let settled = wait_until(Duration::from_secs(30), || {
        let shares: Option<Vec<i64>> = nodes.iter().map(|n| stat(&n.addr, "share_ppm")).collect();
        shares.is_some_and(|s| (999_000..=1_000_000).contains(&s.iter().sum::<i64>()))
            && nodes.iter().all(|n| stat(&n.addr, "members") == Some(3))
    });
    assert!(settled, "the ring did not settle");
    let share = stat(&heavy.addr, "share_ppm").unwrap();
    assert!(
        (470_000..530_000).contains(&share),
        "weight 2 of 4: {share}"
    );
    assert_eq!(stat(&heavy.addr, "weight"), Some(2));
    for node in &light {
        let share = stat(&node.addr, "share_ppm").unwrap();
        assert!(
            (220_000..280_000).contains(&share),
            "weight 1 of 4: {share}"
        );
    }

    // A client builds the ring the nodes route with: same owner for every key.
    let mut conn = Conn::open(&light[0].addr, &ClientOptions::default()).unwrap();
    let ring = conn.ring().unwrap();
    assert_eq!(ring.weight(&heavy.addr), 2);
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("key-{i}");
        let theirs = conn.locate(key.as_bytes()).unwrap();
        assert_eq!(ring.owner(key.as_bytes()), theirs.as_ref(), "{key}");
        *owners.entry(theirs.unwrap().to_string()).or_default() += 1;
    }
    let heavy_keys = owners[&heavy.addr.to_string()];
    assert!((70..130).contains(&heavy_keys), "{owners:?}");

    // Keys written through a ring-aware client and through a forwarding
    // node are all readable from every node.
    let mut aware = Client::connect(&light[1].addr.to_string()).unwrap();
    let mut forwarded = Client::through(light[0].addr.clone()).unwrap();
    for i in 0..100 {
        aware.put(format!("aware-{i}"), format!("a{i}")).unwrap();
        forwarded
            .put(format!("forwarded-{i}"), format!("f{i}"))
            .unwrap();
    }
    for node in nodes {
        let mut reader = Client::through(node.addr.clone()).unwrap();
        for i in 0..100 {
            let a = reader.get(format!("aware-{i}")).unwrap();
            assert_eq!(a, Some(format!("a{i}").into_bytes()));
            let f = reader.get(format!("forwarded-{i}")).unwrap();
            assert_eq!(f, Some(format!("f{i}").into_bytes()));
        }
    }

    // storestat shows each member's weight and share.
    let (_, out, _) = run_tool(
        "storestat",
        &["--json", "--peer", &light[1].addr.to_string()],
        None,
    );
    let report: Value = serde_json::from_slice(&out).unwrap();
    for row in report["nodes"].as_array().unwrap() {
        let weight = if row["addr"] == heavy.addr.to_string() {
            2
        } else {
            1
        };
        assert_eq!(row["weight"], weight, "{row}");
    }
    let (code, out, _) = run_tool("storestat", &["--peer", &light[1].addr.to_string()], None);
    let table = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{table}");
    assert!(table.lines().next().unwrap().contains("WEIGHT"), "{table}");
    let heavy_line = table
        .lines()
        .find(|l| l.starts_with(&heavy.addr.to_string()))
        .unwrap();
    assert!(heavy_line.split_whitespace().any(|w| w == "2"), "{table}");
}
