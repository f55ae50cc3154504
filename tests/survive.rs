//! Surviving crashes, checked against real `location` processes: replicas,
//! failure detection, repair, rejoin after a pause, persistence, and
//! convergence after a partition.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    NodeProc, assert_none_lost, lost, members_of, start_ring, wait_for_members, wait_until, writer,
};
use thrifty_p2p::Client;
use thrifty_p2p::ClientOptions;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::wire::conn::connect;
use thrifty_p2p::wire::convert;
use thrifty_p2p::wire::idl::diststore::{TPeerSyncClient, TStoreSyncClient};
use thrifty_p2p::wire::idl::locator::TLocatorSyncClient;

/// Fast failure detection keeps the suite short; the default is 5 s.
const FAILURE_TIMEOUT: &str = "2";

fn start(n: usize, extra: &[&str]) -> Vec<NodeProc> {
    let mut opts = vec!["--failure-timeout", FAILURE_TIMEOUT];
    opts.extend_from_slice(extra);
    start_ring(n, &opts)
}

fn stat(node: &NodeAddr, name: &str) -> Option<i64> {
    let mut client = connect(node, &ClientOptions::default()).ok()?;
    client.stats().ok()?.get(name).copied()
}

/// For each key, the version each of its replicas holds (None: absent there),
/// asking `via` for placements and each replica once for its copies.
fn replica_versions(via: &NodeAddr, keys: &[String]) -> Option<Vec<Vec<Option<i64>>>> {
    let options = ClientOptions::default();
    let mut client = connect(via, &options).ok()?;
    let mut placements = Vec::new();
    let mut asked: HashMap<NodeAddr, Vec<Vec<u8>>> = HashMap::new();
    for key in keys {
        let replicas: Vec<NodeAddr> = client
            .replicas(key.as_bytes().to_vec(), 3)
            .ok()?
            .iter()
            .filter_map(convert::addr)
            .collect();
        for replica in &replicas {
            asked
                .entry(replica.clone())
                .or_default()
                .push(key.as_bytes().to_vec());
        }
        placements.push(replicas);
    }
    let mut held: HashMap<(NodeAddr, Vec<u8>), i64> = HashMap::new();
    for (replica, keys) in asked {
        let mut client = connect(&replica, &options).ok()?;
        for chunk in keys.chunks(1000) {
            for entry in client.peek(chunk.to_vec()).ok()? {
                held.insert((replica.clone(), entry.key?), entry.version?);
            }
        }
    }
    Some(
        keys.iter()
            .zip(placements)
            .map(|(key, replicas)| {
                replicas
                    .into_iter()
                    .map(|r| held.get(&(r, key.as_bytes().to_vec())).copied())
                    .collect()
            })
            .collect(),
    )
}

/// Whether every key has `copies` replicas holding a copy.
fn replicated(via: &NodeAddr, keys: &[String], copies: usize) -> bool {
    replica_versions(via, keys).is_some_and(|all| {
        all.iter()
            .all(|versions| versions.len() == copies && versions.iter().all(Option::is_some))
    })
}

/// Whether every key has `copies` replicas holding the same version.
fn fully_replicated(via: &NodeAddr, keys: &[String], copies: usize) -> bool {
    replica_versions(via, keys).is_some_and(|all| {
        all.iter().all(|versions| {
            versions.len() == copies
                && versions[0].is_some()
                && versions.iter().all(|v| *v == versions[0])
        })
    })
}

fn wait_until_dropped(nodes: &[&NodeProc], gone: &NodeAddr) -> Duration {
    let started = Instant::now();
    let gone = gone.to_string();
    let dropped = wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|p| members_of(&p.addr).is_some_and(|m| !m.contains(&gone)))
    });
    assert!(dropped, "{gone} was not dropped");
    started.elapsed()
}

#[test]
fn kill_9_of_one_node_then_another_after_repair_loses_no_acknowledged_write() {
    const KEYS: usize = 2_000;
    let mut nodes = start(5, &[]);
    let via = nodes[0].addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writing = {
        let (via, stop, done) = (via.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || writer(via, KEYS, stop, done))
    };
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i:05}")).collect();
    let first_round = wait_until(Duration::from_secs(120), || {
        Client::through(via.clone())
            .and_then(|mut s| s.get(keys[KEYS - 1].as_bytes()))
            .is_ok_and(|v| v.is_some())
    });
    assert!(first_round);

    for victim_index in [4, 3] {
        let victim = nodes.remove(victim_index);
        let gone = victim.addr.clone();
        victim.signal("KILL");
        drop(victim);
        let survivors: Vec<&NodeProc> = nodes.iter().collect();
        let detected = wait_until_dropped(&survivors, &gone);
        let repair_started = Instant::now();
        // The writer keeps overwriting keys, so versions may differ for a moment
        // between replicas; repaired means every key has its three copies again.
        let repaired = wait_until(Duration::from_secs(60), || replicated(&via, &keys, 3));
        eprintln!(
            "kill -9 of {gone}: dropped everywhere after {detected:?}; {KEYS} keys back to 3 replicas after {:?} more",
            repair_started.elapsed()
        );
        assert!(repaired, "keys were not repaired to 3 replicas");
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writing.join().unwrap();
    let converged = wait_until(Duration::from_secs(30), || fully_replicated(&via, &keys, 3));
    assert!(converged, "replicas did not settle on the same versions");
    assert_none_lost("after two kill -9", &lost(&via, &acked));
}

#[test]
fn two_nodes_killed_at_the_same_instant_lose_no_acknowledged_write() {
    const KEYS: usize = 1_000;
    let mut nodes = start(5, &[]);
    let via = nodes[0].addr.clone();
    let mut acked = HashMap::new();
    let mut session = Client::through(via.clone()).unwrap();
    for i in 0..KEYS {
        let (key, value) = (format!("key-{i:05}"), format!("value-{i}"));
        session.put(key.as_bytes(), value.as_bytes()).unwrap();
        acked.insert(key, value);
    }
    // Acknowledged means stored on a majority; the third copy follows at once.
    // Once replication has drained everywhere, any two nodes may die together.
    let drained = wait_until(Duration::from_secs(30), || {
        nodes.iter().all(|p| {
            stat(&p.addr, "replication_pending") == Some(0) && stat(&p.addr, "hints") == Some(0)
        })
    });
    assert!(drained, "replication did not drain");
    let victims = [nodes.remove(4), nodes.remove(3)];
    for victim in &victims {
        victim.signal("KILL");
    }
    let gone: Vec<NodeAddr> = victims.iter().map(|v| v.addr.clone()).collect();
    drop(victims);
    let survivors: Vec<&NodeProc> = nodes.iter().collect();
    for addr in &gone {
        wait_until_dropped(&survivors, addr);
    }
    assert_none_lost("after two simultaneous kill -9", &lost(&via, &acked));
}

#[test]
fn a_paused_node_is_dropped_rejoins_and_no_value_goes_back_in_time() {
    const KEYS: usize = 500;
    let nodes = start(4, &[]);
    let via = nodes[0].addr.clone();
    let paused = &nodes[3];
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writing = {
        let (via, stop, done) = (via.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || writer(via, KEYS, stop, done))
    };
    paused.signal("STOP");
    let others: Vec<&NodeProc> = nodes[..3].iter().collect();
    let detected = wait_until_dropped(&others, &paused.addr);
    eprintln!("a SIGSTOPped node was dropped everywhere after {detected:?}");
    // Keep writing while it is out (a full round), so its copies go stale.
    let before = done.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(60), || {
        done.load(Ordering::Relaxed) >= before + KEYS
    }));
    paused.signal("CONT");
    let back = wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|p| members_of(&p.addr).is_some_and(|m| m.len() == 4))
    });
    assert!(back, "the resumed node did not rejoin");
    stop.store(true, Ordering::Relaxed);
    let acked = writing.join().unwrap();
    // Every read, through the resumed node too, sees the last acknowledged value.
    for node in &nodes {
        let what = format!("(gone back in time) reading via {}", node.addr);
        assert_none_lost(&what, &lost(&node.addr, &acked));
    }
}

#[test]
fn every_node_killed_and_restarted_with_its_data_dir_keeps_every_acknowledged_write() {
    const KEYS: usize = 1_000;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dir = |i: usize| dirs[i].path().to_str().unwrap().to_string();
    let opts = |i: usize| {
        vec![
            "--failure-timeout".to_string(),
            FAILURE_TIMEOUT.into(),
            "--data-dir".into(),
            dir(i),
        ]
    };
    let spawn = |i: usize, seed: Option<&NodeAddr>, port: u16| {
        let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
        args.extend(opts(i));
        if let Some(seed) = seed {
            args.push(seed.to_string());
        }
        args.push(port.to_string());
        NodeProc::spawn(&args)
    };
    let first = spawn(0, None, 0);
    let mut nodes = vec![
        spawn(1, Some(&first.addr), 0),
        spawn(2, Some(&first.addr), 0),
    ];
    nodes.insert(0, first);
    wait_for_members(&nodes, 3);
    let ports: Vec<u16> = nodes.iter().map(|p| p.addr.port).collect();
    let mut acked = HashMap::new();
    let mut session = nodes[0].session();
    for i in 0..KEYS {
        let (key, value) = (format!("key-{i:05}"), format!("value-{i}"));
        session.put(key.as_bytes(), value.as_bytes()).unwrap();
        acked.insert(key, value);
    }
    for node in &nodes {
        node.signal("KILL");
    }
    drop(nodes);

    let first = spawn(0, None, ports[0]);
    let mut nodes = vec![
        spawn(1, Some(&first.addr), ports[1]),
        spawn(2, Some(&first.addr), ports[2]),
    ];
    nodes.insert(0, first);
    wait_for_members(&nodes, 3);
    for node in &nodes {
        let what = format!(
            "after killing and restarting every node, read via {}",
            node.addr
        );
        assert_none_lost(&what, &lost(&node.addr, &acked));
    }
}

#[test]
fn after_a_partition_heals_every_replica_converges() {
    let nodes = start(3, &["--fault-injection"]);
    let (a, c) = (&nodes[0], &nodes[2]);
    let mut session = a.session();
    session.put(b"erased-on-one-side", b"old").unwrap();
    session.put(b"contested", b"before").unwrap();
    let drained = wait_until(Duration::from_secs(30), || {
        fully_replicated(
            &a.addr,
            &["erased-on-one-side".into(), "contested".into()],
            3,
        )
    });
    assert!(drained);

    c.client().isolate(true).unwrap();
    let sides = wait_until(Duration::from_secs(30), || {
        members_of(&a.addr).is_some_and(|m| m.len() == 2)
            && members_of(&c.addr).is_some_and(|m| m.len() == 1)
    });
    assert!(sides, "the partition did not split the ring");

    // Writes on both sides: the majority side acknowledges them; the node cut
    // off alone cannot reach a write quorum, so it refuses every write (none
    // of them is acknowledged, so none can be lost when the sides meet).
    let mut side_a = a.session();
    let mut side_c = c.session();
    let mut keys = vec!["erased-on-one-side".to_string(), "contested".to_string()];
    let mut refused = 0;
    for i in 0..100 {
        let key = format!("side-a-{i}");
        side_a.put(key.as_bytes(), b"a").unwrap();
        keys.push(key);
        let key = format!("side-c-{i}");
        if side_c.put(key.as_bytes(), b"c").is_err() {
            refused += 1;
        }
    }
    side_a.delete(b"erased-on-one-side").unwrap();
    side_a.put(b"contested", b"side a").unwrap();
    assert!(side_c.put(b"contested", b"side c").is_err());
    assert_eq!(refused, 100, "the isolated node acknowledged writes alone");

    c.client().isolate(false).unwrap();
    wait_for_members(&nodes, 3);
    let converged = wait_until(Duration::from_secs(60), || {
        fully_replicated(&a.addr, &keys, 3)
    });
    assert!(
        converged,
        "replicas did not converge after the partition healed"
    );
    let mut contested = Vec::new();
    for node in &nodes {
        let mut s = node.session();
        let read = |s: &mut thrifty_p2p::Client, key: &[u8]| {
            wait_until(Duration::from_secs(30), || s.get(key).is_ok());
            s.get(key).unwrap()
        };
        // The isolated node refused its write; a refused write may still take
        // effect (it is the later one, so it would not bury an acknowledged
        // write), or not: either way every node must answer the same.
        let value = read(&mut s, b"contested");
        assert!(
            value.as_deref() == Some(b"side a".as_slice())
                || value.as_deref() == Some(b"side c".as_slice()),
            "contested reads {value:?}"
        );
        contested.push(value);
        assert_eq!(
            read(&mut s, b"erased-on-one-side"),
            None,
            "an erased key came back"
        );
        assert_eq!(read(&mut s, b"side-a-7").as_deref(), Some(b"a".as_slice()));
    }
}

/// Measurement, not a CI test (it takes a minute): `cargo test --release --test
/// survive -- --ignored --nocapture`. Default failure timeout (5 s).
#[test]
#[ignore]
fn measure_detection_and_repair_of_100_000_keys() {
    const KEYS: usize = 100_000;
    let seed = NodeProc::start(None);
    let mut nodes = vec![seed];
    for _ in 1..5 {
        let joiner = NodeProc::start(Some(&nodes[0].addr));
        nodes.push(joiner);
    }
    wait_for_members(&nodes, 5);
    let via = nodes[0].addr.clone();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i:06}")).collect();
    let loaded = Instant::now();
    std::thread::scope(|s| {
        for part in keys.chunks(KEYS / 8) {
            let via = via.clone();
            s.spawn(move || {
                let mut session = Client::through(via).unwrap();
                for key in part {
                    session.put(key.as_bytes(), [7u8; 100]).unwrap();
                }
            });
        }
    });
    eprintln!("loaded {KEYS} keys of 100 bytes in {:?}", loaded.elapsed());
    assert!(wait_until(Duration::from_secs(60), || replicated(
        &via, &keys, 3
    )));

    // SIGSTOP: nothing refuses connections, so only the probes can tell.
    let stopped = nodes.remove(4);
    stopped.signal("STOP");
    let survivors: Vec<&NodeProc> = nodes.iter().collect();
    let detected = wait_until_dropped(&survivors, &stopped.addr);
    let repair = Instant::now();
    assert!(wait_until(Duration::from_secs(120), || replicated(
        &via, &keys, 3
    )));
    eprintln!(
        "SIGSTOP with the default 5 s failure timeout: dropped everywhere after {detected:?}; \
         {KEYS} keys back to 3 replicas {:?} after that",
        repair.elapsed()
    );

    // kill -9: the port refuses connections, which drops the member at once.
    let killed = nodes.remove(3);
    killed.signal("KILL");
    let gone = killed.addr.clone();
    drop(killed);
    let survivors: Vec<&NodeProc> = nodes.iter().collect();
    let detected = wait_until_dropped(&survivors, &gone);
    let repair = Instant::now();
    assert!(wait_until(Duration::from_secs(120), || replicated(
        &via, &keys, 3
    )));
    eprintln!(
        "kill -9: dropped everywhere after {detected:?}; {KEYS} keys back to 3 replicas {:?} after that",
        repair.elapsed()
    );
    stopped.signal("CONT");
}
