//! Hostile messages against real `location` processes (issue 8, "bounded work
//! per request"): forged versions and incarnations, fake members, and requests
//! that ask for far more than they should. Each test sends the bad message
//! with the generated client, checks it was refused (or did no harm), and then
//! shows the node still serving correct data.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{NodeProc, local_copy, members_of, read_via, start_ring, wait_until};
use thrifty_p2p::NodeAddr;
use thrifty_p2p::wire::convert;
use thrifty_p2p::wire::idl::diststore::{Entry, StoreError, TPeerSyncClient, TStoreSyncClient};
use thrifty_p2p::wire::idl::locator::{Member, MemberStatus};

/// A failure timeout short enough that dead fakes go quickly.
const FAST: &[&str] = &["--failure-timeout", "2"];

fn wall_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The error text of a refused call (a `StoreError`'s message, or the
/// application error's).
fn refusal<T: std::fmt::Debug>(result: thrift::Result<T>) -> String {
    match result {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(thrift::Error::User(e)) => match e.downcast_ref::<StoreError>() {
            Some(e) => e.message.clone().unwrap_or_default(),
            None => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

fn rss_kib(node: &NodeProc) -> u64 {
    node.memory("VmRSS") / 1024
}

/// Writes `key` through `via`, retrying briefly (the ring may be settling).
fn store(via: &NodeProc, key: &[u8], value: &[u8]) {
    let ok = wait_until(Duration::from_secs(10), || {
        via.client().store(key.to_vec(), value.to_vec()).is_ok()
    });
    assert!(ok, "store through {} failed", via.addr);
}

#[test]
fn forged_versions_minus_one_and_i64_max_are_refused_and_never_poison_a_key() {
    let nodes = start_ring(3, &[]);
    let key = b"poisoned".to_vec();
    store(&nodes[0], &key, b"honest");
    let ring = nodes[0]
        .client()
        .heartbeat(0, convert::location(&nodes[0].addr));
    let ring = ring.unwrap();
    for forged in [-1i64, i64::MAX] {
        let entry = Entry::new(key.clone(), b"forged".to_vec(), forged, 7);
        for node in &nodes {
            let mut c = node.client();
            let why = refusal(c.absorb(vec![entry.clone()]));
            assert!(why.contains("version stamp"), "{why}");
            let why = refusal(c.replicate(vec![entry.clone()], ring));
            assert!(why.contains("version stamp"), "{why}");
            let why = refusal(c.reconcile(
                convert::location(&nodes[1].addr),
                vec![0],
                vec![entry.clone()],
            ));
            assert!(why.contains("version stamp"), "{why}");
            let expires = wall_millis() * 1000 + 5_000_000;
            let why =
                refusal(c.relay_store(key.clone(), b"forged".to_vec(), 1, expires, forged, 7));
            assert!(why.contains("version stamp"), "{why}");
        }
        println!("version {forged}: refused by absorb, replicate, reconcile and relay_store");
    }
    // An honest batch with one forged entry is refused whole: nothing changes.
    let mixed = vec![
        Entry::new(b"innocent".to_vec(), b"x".to_vec(), 1 << 20, 7),
        Entry::new(key.clone(), b"forged".to_vec(), -1, 7),
    ];
    refusal(nodes[1].client().absorb(mixed));
    assert_eq!(local_copy(&nodes[1].addr, b"innocent"), Some(None));
    // The key is still writable and erasable, and stays so on every replica.
    store(&nodes[1], &key, b"after");
    let horizon = ((wall_millis() + 3_600_000) * 1000) << 10;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        for node in &nodes {
            let value = read_via(&node.addr, &key).unwrap();
            assert_eq!(value.as_deref(), Some(&b"after"[..]), "via {}", node.addr);
            if let Some(Some(copy)) = local_copy(&node.addr, &key) {
                let stamp = copy.version.unwrap();
                assert!((0..horizon).contains(&stamp), "stamp {stamp}");
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    nodes[2].client().erase(key.clone()).unwrap();
    assert_eq!(read_via(&nodes[0].addr, &key).unwrap(), None);
}

fn member(addr: &NodeAddr, incarnation: i64, status: MemberStatus) -> Member {
    Member::new(convert::location(addr), incarnation, status, None)
}

/// `of`'s row in `at`'s table.
fn row(at: &NodeProc, of: &NodeAddr) -> Option<(i64, MemberStatus)> {
    let table = at.client().gossip(vec![]).ok()?;
    table
        .iter()
        .find(|m| m.location.as_ref().and_then(convert::addr).as_ref() == Some(of))
        .map(|m| (m.incarnation.unwrap(), m.status.unwrap()))
}

#[test]
fn a_death_forged_at_i64_max_is_refused_and_one_at_the_horizon_is_refuted() {
    let nodes = start_ring(3, FAST);
    let (a, b) = (&nodes[0], &nodes[1]);
    store(a, b"k", b"v");
    // i64::MAX, or 2^62 (beyond which no refutation could go): refused; A
    // keeps B.
    for forged in [i64::MAX, 1 << 62] {
        a.client()
            .gossip(vec![member(&b.addr, forged, MemberStatus::DEAD)])
            .unwrap();
    }
    let (incarnation, status) = row(a, &b.addr).unwrap();
    assert_eq!(status, MemberStatus::ALIVE);
    assert!(incarnation < wall_millis() + 3_600_000);
    assert_eq!(members_of(&a.addr).unwrap().len(), 3);
    // Just under the hour A accepts: A drops B, B refutes one higher and is
    // back everywhere within seconds.
    let forged = wall_millis() + 3_600_000 - 5_000;
    a.client()
        .gossip(vec![member(&b.addr, forged, MemberStatus::DEAD)])
        .unwrap();
    let started = Instant::now();
    let back = wait_until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|n| members_of(&n.addr).is_some_and(|m| m.len() == 3))
            && row(a, &b.addr).is_some_and(|(i, s)| i > forged && s == MemberStatus::ALIVE)
    });
    assert!(back, "B did not come back: {:?}", row(a, &b.addr));
    let (incarnation, _) = row(a, &b.addr).unwrap();
    println!(
        "B back everywhere {:?} after a death forged at {forged}; its incarnation {incarnation}",
        started.elapsed()
    );
    assert!(incarnation > 0 && incarnation <= forged + 10);
    assert_eq!(read_via(&b.addr, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Eight ports that accept connections and never answer; what they were sent.
struct BlackHoles {
    addrs: Vec<NodeAddr>,
    received: Arc<Mutex<Vec<u8>>>,
}

fn black_holes(n: usize) -> BlackHoles {
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut addrs = Vec::new();
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(NodeAddr::new(
            "127.0.0.1",
            listener.local_addr().unwrap().port(),
        ));
        let received = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let received = received.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        received.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
    }
    BlackHoles { addrs, received }
}

#[test]
fn gossiped_members_that_never_answer_get_no_share_of_the_ring() {
    let nodes = start_ring(3, FAST);
    let holes = black_holes(8);
    let rows: Vec<Member> = holes
        .addrs
        .iter()
        .map(|a| member(a, wall_millis(), MemberStatus::ALIVE))
        .collect();
    nodes[0].client().gossip(rows).unwrap();
    // Writes and reads through the node told, all answered promptly, while
    // no view ever holds a fake.
    let started = Instant::now();
    let mut expected = HashMap::new();
    for i in 0..12 {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        store(&nodes[0], key.as_bytes(), value.as_bytes());
        expected.insert(key, value);
        for node in &nodes {
            let members = members_of(&node.addr).unwrap();
            assert_eq!(members.len(), 3, "{} holds {members:?}", node.addr);
        }
    }
    for (key, value) in &expected {
        let got = read_via(&nodes[0].addr, key.as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()));
    }
    let took = started.elapsed();
    println!("12 stores and 12 fetches with 8 fake members gossiped: {took:?}");
    assert!(took < Duration::from_secs(12), "{took:?}");
    // The fakes are found dead; they were only ever sent membership traffic.
    let dead = wait_until(Duration::from_secs(15), || {
        holes.addrs.iter().all(|f| {
            nodes
                .iter()
                .all(|n| row(n, f).is_none_or(|(_, s)| s == MemberStatus::DEAD))
        })
    });
    assert!(dead, "fakes still up");
    let received = holes.received.lock().unwrap().clone();
    for method in ["absorb", "replicate", "relay_", "replica_read", "reconcile"] {
        assert!(
            !received
                .windows(method.len())
                .any(|w| w == method.as_bytes()),
            "a fake was sent {method}"
        );
    }
    assert_eq!(members_of(&nodes[1].addr).unwrap().len(), 3);
}

#[test]
fn a_peek_repeating_one_large_key_is_served_once_and_memory_stays_bounded() {
    let node = NodeProc::start(None);
    let big = vec![0x5a; 32 << 20];
    node.client().store(b"big".to_vec(), big.clone()).unwrap();
    let before = rss_kib(&node);
    let repeated = vec![b"big".to_vec(); 200];
    let answer = node.client().peek(repeated).unwrap();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].value.as_ref().map(Vec::len), Some(big.len()));
    let after = rss_kib(&node);
    println!("peek of one 32 MiB key x200: RSS {before} KiB before, {after} KiB after");
    // 200 copies would be 6.4 GB; allow a few copies of the value.
    assert!(after < before + 256 * 1024, "{before} -> {after} KiB");
    // Three distinct 32 MiB values do not fit in one reply: a clear refusal.
    node.client().store(b"big2".to_vec(), big.clone()).unwrap();
    node.client().store(b"big3".to_vec(), big.clone()).unwrap();
    let three = vec![b"big".to_vec(), b"big2".to_vec(), b"big3".to_vec()];
    let why = refusal(node.client().peek(three));
    assert!(why.contains("reply"), "{why}");
    let peak = rss_kib(&node);
    println!("peek of three 32 MiB keys refused ({why}); RSS {peak} KiB");
    assert!(peak < before + 512 * 1024, "{before} -> {peak} KiB");
    // Lists over the caps are refused whole.
    let many_keys: Vec<Vec<u8>> = (0..100_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let why = refusal(node.client().peek(many_keys));
    assert!(why.contains("at most"), "{why}");
    let many: Vec<Entry> = (0..100_000u32)
        .map(|i| Entry::new(i.to_be_bytes().to_vec(), vec![1], 1 << 20, 1))
        .collect();
    let why = refusal(node.client().absorb(many));
    assert!(why.contains("at most"), "{why}");
    assert_eq!(local_copy(&node.addr, &0u32.to_be_bytes()), Some(None));
    let rows: Vec<Member> = (0..100_000u32)
        .map(|i| {
            let fake = NodeAddr::new("10.9.9.9", (i % 60000) as u16 + 1);
            member(&fake, i as i64, MemberStatus::DEAD)
        })
        .collect();
    refusal(node.client().gossip(rows));
    assert_eq!(node.client().gossip(vec![]).unwrap().len(), 1);
    // Still serving the right data.
    let got = node.client().fetch(b"big".to_vec()).unwrap();
    assert_eq!(got.value.as_deref(), Some(&big[..]));
    let end = rss_kib(&node);
    println!("after the oversized lists: RSS {end} KiB");
    assert!(end < before + 512 * 1024, "{before} -> {end} KiB");
}
