//! The ring's promises, checked against real `location` processes: the README
//! walkthrough, command-line errors, membership, routing, and no key lost when
//! nodes join and leave under writes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    NodeProc, lost, members_of, read_via, run_tool, start_ring, wait_for_members, wait_until,
    writer,
};
use thrifty_p2p::NodeAddr;
use thrifty_p2p::wire::PEEK;
use thrifty_p2p::wire::idl::diststore::{ErrorKind, StoreError, TPeerSyncClient, TStoreSyncClient};

fn peer(node: &NodeProc) -> String {
    node.addr.to_string()
}

#[test]
fn the_readme_walkthrough_works() {
    let nodes = start_ring(3, &[]);
    let first = peer(&nodes[0]);
    assert_eq!(
        run_tool("storeput", &["a", "apple", "--peer", &first], None).0,
        0
    );
    assert_eq!(
        run_tool("storeput", &["c", "crayon", "--peer", &first], None).0,
        0
    );
    let (code, out, _) = run_tool("storeget", &["c", "--peer", &peer(&nodes[2])], None);
    assert_eq!((code, out.as_slice()), (0, b"crayon".as_slice()));

    // A fourth node joins through the second; the keys it now owns move to it.
    let fourth = NodeProc::start(Some(&nodes[1].addr));
    let mut all: Vec<&NodeProc> = nodes.iter().collect();
    all.push(&fourth);
    assert!(wait_until(Duration::from_secs(10), || {
        all.iter()
            .all(|p| members_of(&p.addr).is_some_and(|m| m.len() == 4))
    }));
    assert_eq!(run_tool("storeprimer", &["--peer", &first], None).0, 0);

    // The second node leaves on SIGINT, handing its keys over first.
    let mut nodes = nodes;
    let mut second = nodes.remove(1);
    second.signal("INT");
    let status = second
        .wait_exit(Duration::from_secs(30))
        .expect("node exits");
    assert!(status.success(), "leaving node exited with {status:?}");
    let (code, out, _) = run_tool("storeget", &["a", "--peer", &peer(&fourth)], None);
    assert_eq!((code, out.as_slice()), (0, b"apple".as_slice()));
    let (code, out, err) = run_tool("storetest", &["--peer", &first], None);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "storetest: {out} {err}");
    assert!(out.contains("26 of 26 keys came back"), "{out}");
}

#[test]
fn storedel_deletes_a_key_and_says_when_there_was_none() {
    let nodes = start_ring(2, &[]);
    let first = peer(&nodes[0]);
    let second = peer(&nodes[1]);
    assert_eq!(
        run_tool("storeput", &["d", "doomed", "--peer", &first], None).0,
        0
    );
    assert_eq!(
        run_tool("storeput", &["k", "kept", "--peer", &first], None).0,
        0
    );

    let (code, _, err) = run_tool("storedel", &["d", "--peer", &second], None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_tool("storeget", &["d", "--peer", &first], None);
    assert_eq!(code, 1, "the deleted key still reads: {err}");
    let (code, out, _) = run_tool("storeget", &["k", "--peer", &second], None);
    assert_eq!((code, out.as_slice()), (0, b"kept".as_slice()));

    // A second delete finds nothing: exit code 1 and the reason.
    let (code, _, err) = run_tool("storedel", &["d", "--peer", &first], None);
    assert_eq!(code, 1);
    assert!(err.contains("`d` is not stored"), "{err}");
}

#[test]
fn storelist_lists_every_key_once_without_erased_ones_even_with_a_member_killed() {
    let nodes = start_ring(4, &[]);
    let mut ring = thrifty_p2p::Client::connect(&peer(&nodes[0])).unwrap();
    let mut expected = std::collections::BTreeSet::new();
    for i in 0..300 {
        let key = if i < 100 {
            format!("fruit/{i}")
        } else {
            format!("veg/{i}")
        };
        ring.put(&key, "x").unwrap();
        expected.insert(key);
    }
    for i in 0..10 {
        ring.delete(format!("fruit/{i}")).unwrap();
        expected.remove(&format!("fruit/{i}"));
    }
    // Keys no line could hold as they are, and a value that travels as
    // chunks (whose internal keys are never listed).
    ring.put(b"odd\nkey\\\xff", "x").unwrap();
    expected.insert("odd\\nkey\\\\\\xff".to_string());
    ring.put("blob", vec![1u8; 9 << 20]).unwrap();
    expected.insert("blob".to_string());

    let lines = |args: &[&str]| -> Vec<String> {
        let (code, out, err) = run_tool("storelist", args, None);
        assert_eq!(code, 0, "storelist {args:?}: {err}");
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let second = peer(&nodes[1]);
    let listed = lines(&["--peer", &second]);
    assert_eq!(
        listed.len(),
        expected.len(),
        "a key listed twice or missing"
    );
    assert_eq!(
        listed
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    let fruit = lines(&["--prefix", "fruit/", "--peer", &second]);
    assert_eq!(fruit.len(), 90);
    assert!(fruit.iter().all(|k| k.starts_with("fruit/")));
    assert_eq!(lines(&["--count", "--peer", &second]), ["292"]);
    assert_eq!(
        lines(&["--count", "--prefix", "veg/", "--peer", &second]),
        ["200"]
    );

    // Small pages through the client's cursor: the same keys, once each.
    let mut paged = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = ring.list("", cursor.as_deref(), 7).unwrap();
        assert!(page.keys.len() <= 7);
        paged.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged.len(), expected.len());

    // Pages out of bounds are refused, saying what is allowed.
    let mut raw = nodes[0].client();
    for (limit, start) in [(0, vec![]), (10_001, vec![]), (5, vec![0u8; 70_000])] {
        match raw.list_keys(vec![], start, limit) {
            Err(thrift::Error::User(e)) => {
                let e = e.downcast::<StoreError>().expect("a StoreError");
                assert_eq!(e.kind, Some(ErrorKind::REFUSED), "{e:?}");
            }
            other => panic!("limit {limit}: {other:?}"),
        }
    }

    // One member killed: every key has another copy, so nothing is missing.
    nodes[2].signal("KILL");
    let listed = lines(&["--peer", &second]);
    assert_eq!(listed.len(), expected.len(), "listing with a member dead");
    assert_eq!(ring.count("").unwrap(), expected.len() as u64);
}

#[test]
fn storeput_file_and_storeget_out_move_a_large_value_through_files() {
    let nodes = start_ring(2, &[]);
    let (first, second) = (peer(&nodes[0]), peer(&nodes[1]));
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("in.bin");
    let value: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &value).unwrap();
    let source = source.to_str().unwrap();
    let (code, _, err) = run_tool(
        "storeput",
        &["big", "--file", source, "--peer", &first],
        None,
    );
    assert_eq!(code, 0, "{err}");

    let target = dir.path().join("out.bin");
    let target_arg = target.to_str().unwrap();
    let (code, out, err) = run_tool(
        "storeget",
        &["big", "--out", target_arg, "--peer", &second],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "the value went to standard output too");
    assert!(
        std::fs::read(&target).unwrap() == value,
        "the file differs from the value"
    );
    assert!(!dir.path().join("out.bin.partial").exists());

    // A key that is not stored: exit 1, and no file is made.
    let missing = dir.path().join("missing.bin");
    let (code, _, err) = run_tool(
        "storeget",
        &[
            "nothing",
            "--out",
            missing.to_str().unwrap(),
            "--peer",
            &first,
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(!missing.exists() && !dir.path().join("missing.bin.partial").exists());

    // A file that is not there, or a value given twice: exit 2, saying why.
    let (code, _, err) = run_tool(
        "storeput",
        &["k", "--file", "/no/such/file", "--peer", &first],
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("/no/such/file") && err.contains("check the path"),
        "{err}"
    );
    let (code, _, err) = run_tool(
        "storeput",
        &["k", "v", "--file", source, "--peer", &first],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--file"), "{err}");
}

#[test]
fn placement_names_the_holders_of_a_key_and_of_each_part_and_spread_keys_go_round_the_members() {
    let nodes = start_ring(3, &["--replicas", "2"]);
    let mut ring = thrifty_p2p::Client::connect(&peer(&nodes[0])).unwrap();
    let mut members = ring.members().unwrap();
    members.sort();

    // spread_keys: the i-th key's owner is the i-th member, round and round.
    let keys = ring.spread_keys("part-", 30).unwrap();
    assert_eq!(keys.len(), 30);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            ring.owner(key).unwrap().as_ref(),
            Some(&members[i % 3]),
            "{key}"
        );
    }

    // A plain value: its two replicas, owner first, and no parts.
    ring.put("small", "x").unwrap();
    let placement = ring.placement("small").unwrap().expect("stored");
    assert_eq!(placement.replicas, ring.replicas("small").unwrap());
    assert_eq!(placement.replicas.len(), 2);
    assert_eq!(placement.replicas[0], ring.owner("small").unwrap().unwrap());
    assert!(placement.parts.is_empty());

    // A streamed value: two holders for each of its three parts, and each
    // named holder has the part (peek reads a node's own copies).
    ring.put("large", vec![5u8; 17 << 20]).unwrap();
    let placement = ring.placement("large").unwrap().expect("stored");
    assert_eq!(placement.parts.len(), 3);
    let info = ring.describe("large").unwrap();
    let manifest = info.manifest.expect("streamed");
    for (i, holders) in placement.parts.iter().enumerate() {
        assert_eq!(holders.len(), 2);
        let part = manifest.chunk_key(b"large", i as u64);
        for holder in holders {
            let node = nodes.iter().find(|n| &n.addr == holder).expect("a member");
            let mut client = node.client();
            assert!(
                wait_until(Duration::from_secs(10), || {
                    client.peek(vec![part.clone()]).is_ok_and(|e| !e.is_empty())
                }),
                "{holder} does not hold part {i}"
            );
        }
    }
    assert_eq!(ring.placement("nothing").unwrap(), None);
}

#[test]
fn command_line_errors_say_what_went_wrong() {
    let node = NodeProc::start(None);
    let addr = peer(&node);

    let (code, _, err) = run_tool("storeget", &["nothing-here", "--peer", &addr], None);
    assert_eq!(code, 1);
    assert!(err.contains("`nothing-here` is not stored"), "{err}");

    // Find a port with nobody listening: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    let (code, _, err) = run_tool("storeget", &["k", "--peer", &dead], None);
    assert_eq!(code, 2);
    assert!(err.contains(&dead) && err.contains("location"), "{err}");

    // A port that accepts (the kernel completes the handshake for a
    // listener's backlog) but never answers: a clear message in seconds,
    // not "transport error" after the 30 s call timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let (code, _, err) = run_tool("storeget", &["k", "--peer", &silent], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{silent} accepted the connection but did not answer within 5 s"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");

    let (code, _, err) = run_tool("storeput", &["k", "v", "--peer", "no-port"], None);
    assert_ne!(code, 0);
    assert!(err.contains("HOST:PORT"), "{err}");

    let (code, _, err) = run_tool("location", &["--bind", "127.0.0.1", "notaport"], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("not a port") && err.contains("--help"),
        "{err}"
    );

    let (code, _, err) = run_tool("location", &["--bind", "0.0.0.0", "0"], None);
    assert_ne!(code, 0);
    assert!(err.contains("--advertise"), "{err}");

    // Joining itself would silently start a ring of one: refused.
    let own = port.to_string();
    for name in ["localhost", "127.0.0.1"] {
        let seed = format!("{name}:{port}");
        let (code, _, err) = run_tool("location", &["--bind", "127.0.0.1", &seed, &own], None);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("own address") && err.contains("location PORT"),
            "{err}"
        );
    }
}

#[test]
fn the_last_member_with_a_data_dir_leaves_with_exit_code_0_and_says_where_its_keys_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut node = NodeProc::start_with(None, &["--data-dir", path]);
    let addr = peer(&node);
    assert_eq!(
        run_tool("storeput", &["kept", "yes", "--peer", &addr], None).0,
        0
    );
    node.signal("INT");
    let status = node.wait_exit(Duration::from_secs(30)).expect("node exits");
    let log = node.log();
    assert!(status.success(), "exited with {status:?}: {log}");
    assert!(log.contains(path) && log.contains("--data-dir"), "{log}");
    // And the keys are there for the next node on that directory.
    let node = NodeProc::start_with(None, &["--data-dir", path]);
    let (code, out, err) = run_tool("storeget", &["kept", "--peer", &peer(&node)], None);
    assert_eq!((code, out.as_slice()), (0, b"yes".as_slice()), "{err}");
}

#[test]
fn a_data_dir_last_used_longer_ago_than_the_tombstone_grace_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let grace = ["--tombstone-grace", "1s", "--data-dir", path];
    let mut node = NodeProc::start_with(None, &grace);
    let addr = peer(&node);
    assert_eq!(
        run_tool("storeput", &["kept", "yes", "--peer", &addr], None).0,
        0
    );
    node.signal("INT");
    let status = node.wait_exit(Duration::from_secs(30)).expect("node exits");
    assert!(status.success(), "{status:?}: {}", node.log());
    // The data is now older than the grace: wait for wall time to pass it
    // (measured, not assumed).
    let stopped = std::time::Instant::now();
    while stopped.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = NodeProc::try_start_with(None, &grace)
        .map(|_| ())
        .unwrap_err();
    assert!(
        refused.contains("longer than the tombstone grace") && refused.contains("Move"),
        "{refused}"
    );
    // Within a longer grace the same directory is taken, keys and all.
    let node = NodeProc::start_with(None, &["--tombstone-grace", "1h", "--data-dir", path]);
    let (code, out, err) = run_tool("storeget", &["kept", "--peer", &peer(&node)], None);
    assert_eq!((code, out.as_slice()), (0, b"yes".as_slice()), "{err}");
}

#[test]
fn storeput_reads_any_bytes_from_stdin_and_storeget_writes_them_raw() {
    let node = NodeProc::start(None);
    let addr = peer(&node);
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let (code, _, err) = run_tool("storeput", &["blob", "-", "--peer", &addr], Some(&value));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_tool("storeget", &["blob", "--peer", &addr], None);
    assert_eq!(code, 0);
    assert!(out == value, "value came back different");
}

#[test]
fn eight_nodes_joining_at_once_agree_on_the_members() {
    let seed = NodeProc::start(None);
    let seed_addr = seed.addr.clone();
    let joiners: Vec<NodeProc> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| NodeProc::start(Some(&seed_addr))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started = Instant::now();
    let mut all = joiners;
    all.push(seed);
    wait_for_members(&all, 9);
    eprintln!(
        "9 members agreed {:?} after the last start",
        started.elapsed()
    );
}

#[test]
fn an_unreachable_member_is_dropped_everywhere() {
    let mut nodes = start_ring(3, &[]);
    let victim = nodes.pop().unwrap();
    let gone = victim.addr.to_string();
    victim.signal("KILL");
    drop(victim);
    let dropped = wait_until(Duration::from_secs(15), || {
        nodes
            .iter()
            .all(|p| members_of(&p.addr).is_some_and(|m| m.len() == 2 && !m.contains(&gone)))
    });
    assert!(dropped, "the killed member was not dropped");
}

#[test]
fn writes_sent_to_any_node_land_on_the_keys_replicas_only() {
    use thrifty_p2p::wire::idl::locator::TLocatorSyncClient;
    let nodes = start_ring(4, &[]);
    let mut probe = nodes[0].client();
    let holds = |node: &NodeAddr, key: &str| {
        let holder = nodes.iter().find(|p| p.addr == *node).unwrap();
        // PEEK reads only the receiver's own store.
        let local = holder
            .client()
            .relay_fetch(key.as_bytes().to_vec(), PEEK)
            .unwrap();
        local.value.as_deref() == Some(b"v".as_slice())
    };
    for i in 0..100 {
        let key = format!("key-{i}");
        nodes[i % 4].session().put(key.as_bytes(), b"v").unwrap();
        let replicas: Vec<NodeAddr> = probe
            .replicas(key.as_bytes().to_vec(), 3)
            .unwrap()
            .iter()
            .filter_map(thrifty_p2p::wire::convert::addr)
            .collect();
        assert_eq!(replicas.len(), 3);
        // Acknowledged: a majority holds it at once (the coordinator, which is
        // the entry node when that is a replica, else the owner, among them),
        // all three soon.
        let coordinator = if replicas.contains(&nodes[i % 4].addr) {
            &nodes[i % 4].addr
        } else {
            &replicas[0]
        };
        assert!(holds(coordinator, &key), "{key} not on its coordinator");
        assert!(replicas.iter().filter(|r| holds(r, &key)).count() >= 2);
        assert!(wait_until(Duration::from_secs(10), || replicas
            .iter()
            .all(|r| holds(r, &key))));
        for other in nodes.iter().filter(|p| !replicas.contains(&p.addr)) {
            assert!(!holds(&other.addr, &key), "{key} also on {}", other.addr);
        }
    }
}

#[test]
fn join_and_leave_under_writes_lose_no_acknowledged_write() {
    const KEYS: usize = 10_000;
    let nodes = start_ring(3, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let via = nodes[0].addr.clone();
    let writing = {
        let stop = stop.clone();
        std::thread::spawn(move || writer(via, KEYS, stop, Arc::default()))
    };
    // Let the first round land, then change the ring twice while writes go on.
    let seeded = wait_until(Duration::from_secs(120), || {
        nodes[0]
            .session()
            .get(format!("key-{:05}", KEYS - 1).as_bytes())
            .is_ok_and(|v| v.is_some())
    });
    assert!(seeded, "the first round of writes did not finish");
    let joiner = NodeProc::start(Some(&nodes[1].addr));
    let mut nodes = nodes;
    let mut leaver = nodes.remove(2);
    leaver.signal("INT");
    let status = leaver
        .wait_exit(Duration::from_secs(60))
        .expect("leaver exits");
    assert!(status.success(), "leaver exited with {status:?}");
    nodes.push(joiner);
    wait_for_members(&nodes, 3);
    stop.store(true, Ordering::Relaxed);
    let acked = writing.join().unwrap();
    assert_eq!(acked.len(), KEYS);

    // Handoffs may still be in flight: wait until everything reads back, and
    // count what does not by the deadline.
    let mut missing = Vec::new();
    let settled = wait_until(Duration::from_secs(30), || {
        missing = lost(&nodes[1].addr, &acked);
        missing.is_empty()
    });
    eprintln!(
        "keys lost after join + SIGINT leave under writes: {}",
        missing.len()
    );
    assert!(
        settled,
        "{} keys lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Two rings started separately become one on request (`storemerge`): every
/// node serves every member, every key of either ring is readable through
/// any node, and a key both rings hold keeps its newer write.
#[test]
fn two_rings_merge_into_one_keeping_the_newer_copy_of_every_key() {
    let opts = ["--failure-timeout", "2"];
    let left = start_ring(2, &opts);
    let right = start_ring(2, &opts);
    let mut written = Vec::new();
    for i in 0..20 {
        let (key, value) = (format!("left-{i}"), format!("l{i}"));
        assert_eq!(
            run_tool("storeput", &[&key, &value, "--peer", &peer(&left[0])], None).0,
            0
        );
        written.push((key, value));
        let (key, value) = (format!("right-{i}"), format!("r{i}"));
        assert_eq!(
            run_tool(
                "storeput",
                &[&key, &value, "--peer", &peer(&right[0])],
                None
            )
            .0,
            0
        );
        written.push((key, value));
    }
    // Both rings hold `shared`; the right ring's write is the later one.
    assert_eq!(
        run_tool(
            "storeput",
            &["shared", "older", "--peer", &peer(&left[1])],
            None
        )
        .0,
        0
    );
    assert_eq!(
        run_tool(
            "storeput",
            &["shared", "newer", "--peer", &peer(&right[1])],
            None
        )
        .0,
        0
    );
    written.push(("shared".into(), "newer".into()));

    let (code, out, err) = run_tool(
        "storemerge",
        &[&peer(&right[1]), "--peer", &peer(&left[0])],
        None,
    );
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "storemerge: {out} {err}");
    assert!(out.contains("merged: 4 members"), "{out}");
    let nodes: Vec<NodeProc> = left.into_iter().chain(right).collect();
    wait_for_members(&nodes, 4);
    for (key, value) in &written {
        for node in &nodes {
            assert!(
                wait_until(Duration::from_secs(30), || {
                    read_via(&node.addr, key.as_bytes())
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(value.as_bytes())
                }),
                "after the merge {} does not read {key} = {value}",
                node.addr
            );
        }
    }
    // Asking again changes nothing.
    let (code, out, _) = run_tool(
        "storemerge",
        &[&peer(&nodes[3]), "--peer", &peer(&nodes[0])],
        None,
    );
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("merged: 4 members"));
}

#[test]
fn client_replicas_names_the_owner_first_and_as_many_copies_as_the_nodes_keep() {
    let nodes = start_ring(3, &["--replicas", "2"]);
    let mut client = nodes[1].session();
    for i in 0..20 {
        let key = format!("key-{i}");
        let replicas = client.replicas(&key).unwrap();
        assert_eq!(replicas.len(), 2, "{key}: {replicas:?}");
        assert_eq!(Some(&replicas[0]), client.owner(&key).unwrap().as_ref());
        assert_ne!(replicas[0], replicas[1]);
    }
}
