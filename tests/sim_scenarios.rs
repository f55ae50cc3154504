//! The issue-7 scenarios, each scripted against a simulated cluster (real
//! nodes, in-memory network, virtual time; see `thrifty_p2p::sim`). The same
//! scenarios run against real processes in `tests/consistency.rs`.

use std::sync::Arc;
use std::time::Duration;

use thrifty_p2p::NodeAddr;
use thrifty_p2p::sim::Status;
use thrifty_p2p::sim::schedule::sim_config;
use thrifty_p2p::sim::{self, Cluster, NetConfig, Outcome, replicas_of};

const SECOND: Duration = Duration::from_secs(1);

/// A settled ring of `n` simulated nodes.
async fn ring(n: usize) -> (Arc<Cluster>, Vec<NodeAddr>) {
    let cluster = Arc::new(Cluster::new(7, sim_config(), NetConfig::default()));
    let addrs: Vec<NodeAddr> = (0..n).map(Cluster::addr).collect();
    cluster.start(&addrs[0], None).await.unwrap();
    for addr in &addrs[1..] {
        cluster.start(addr, Some(&addrs[0])).await.unwrap();
    }
    assert!(cluster.wait_until(30 * SECOND, Cluster::settled).await);
    (cluster, addrs)
}

/// Reads `key` through `via`, retrying refusals (availability is not what
/// these tests are about) for up to ten seconds.
async fn read(cluster: &Cluster, via: &NodeAddr, key: &[u8]) -> Option<Vec<u8>> {
    for _ in 0..100 {
        if let Outcome::Ok(value) = cluster.get(via, key, SECOND).await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no read of {key:?} via {via} succeeded");
}

/// Writes until acknowledged, for up to ten seconds.
async fn write(cluster: &Cluster, via: &NodeAddr, key: &[u8], value: Option<&[u8]>) {
    for _ in 0..100 {
        if cluster.put(via, key, value, SECOND).await == Outcome::Ok(()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no write of {key:?} via {via} was acknowledged");
}

#[test]
fn a_late_forwarded_write_never_overwrites_a_later_acknowledged_one() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        let keys: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
        for key in &keys {
            let owner = replicas_of(&cluster, &addrs[0], key.as_bytes())[0].clone();
            let via = addrs.iter().find(|a| **a != owner).unwrap().clone();
            write(&cluster, &via, key.as_bytes(), Some(b"v1")).await;
            cluster.pause(&owner);
            // v2: the client gives up after a second.
            let v2 = cluster.put(&via, key.as_bytes(), Some(b"v2"), SECOND).await;
            tokio::time::sleep(3 * SECOND).await;
            write(&cluster, &via, key.as_bytes(), Some(b"v3")).await;
            assert_eq!(
                read(&cluster, &via, key.as_bytes()).await.as_deref(),
                Some(&b"v3"[..])
            );
            tokio::time::sleep(2 * SECOND).await;
            cluster.resume(&owner);
            assert!(cluster.wait_until(30 * SECOND, Cluster::settled).await);
            for node in &addrs {
                assert_eq!(
                    read(&cluster, node, key.as_bytes()).await.as_deref(),
                    Some(&b"v3"[..]),
                    "{key} via {node} after repair (v2 was {v2:?})"
                );
            }
        }
    });
}

#[test]
fn an_erased_key_read_at_once_through_another_replica_is_absent() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        for round in 0..200 {
            let key = format!("erased-{}", round % 7);
            let replicas = replicas_of(&cluster, &addrs[0], key.as_bytes());
            write(&cluster, &replicas[0], key.as_bytes(), Some(b"value")).await;
            write(&cluster, &replicas[0], key.as_bytes(), None).await;
            for other in &replicas[1..] {
                assert_eq!(
                    read(&cluster, other, key.as_bytes()).await,
                    None,
                    "round {round}"
                );
            }
        }
    });
}

#[test]
fn a_restarted_node_refuses_or_answers_the_current_value_until_it_has_joined() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        let victim = addrs[3].clone();
        write(&cluster, &addrs[0], b"restart-key", Some(b"old")).await;
        assert!(cluster.wait_until(10 * SECOND, Cluster::settled).await);
        cluster.kill(&victim);
        write(&cluster, &addrs[0], b"restart-key", Some(b"new")).await;
        // Restart from its (stale) store while a client reads through it.
        let starting = {
            let cluster = cluster.clone();
            let (victim, seed) = (victim.clone(), addrs[0].clone());
            tokio::spawn(async move { cluster.start(&victim, Some(&seed)).await })
        };
        let mut answers = 0;
        while !starting.is_finished() {
            if let Outcome::Ok(value) = cluster.get(&victim, b"restart-key", SECOND).await {
                answers += 1;
                assert_eq!(value.as_deref(), Some(&b"new"[..]), "a stale copy served");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starting.await.unwrap().unwrap();
        // A write it acknowledges is on a write quorum: it survives its kill.
        write(&cluster, &victim, b"restart-key", Some(b"newest")).await;
        cluster.kill(&victim);
        assert_eq!(
            read(&cluster, &addrs[0], b"restart-key").await.as_deref(),
            Some(&b"newest"[..]),
            "after {answers} answers while joining"
        );
    });
}

#[test]
fn a_graceful_leave_under_steady_writes_finishes_and_loses_nothing() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        let leaver = addrs[2].clone();
        let writer = {
            let cluster = cluster.clone();
            let via = addrs[0].clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..400 {
                    let key = format!("steady-{}", i % 50);
                    let value = format!("{i}");
                    if cluster
                        .put(&via, key.as_bytes(), Some(value.as_bytes()), SECOND)
                        .await
                        == Outcome::Ok(())
                    {
                        acked.push((key, value));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                acked
            })
        };
        tokio::time::sleep(SECOND / 2).await;
        let started = cluster.now();
        let left_behind = cluster.leave(&leaver).await;
        assert_eq!(left_behind, Some(0), "keys not handed over");
        assert!(
            cluster.now() - started < 20 * SECOND,
            "the leave took too long"
        );
        let acked = writer.await.unwrap();
        let mut last = std::collections::BTreeMap::new();
        for (key, value) in acked {
            last.insert(key, value);
        }
        for (key, value) in last {
            assert_eq!(
                read(&cluster, &addrs[1], key.as_bytes()).await.as_deref(),
                Some(value.as_bytes()),
                "{key} lost"
            );
        }
    });
}

#[test]
fn only_the_paused_node_notices_that_it_was_paused() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        cluster.pause(&addrs[4]);
        tokio::time::sleep(4 * SECOND).await;
        cluster.resume(&addrs[4]);
        tokio::time::sleep(2 * SECOND).await;
        let pauses = |a: &NodeAddr| cluster.node(a).unwrap().stats()["pauses"];
        for addr in &addrs[..4] {
            assert_eq!(pauses(addr), 0, "{addr} thought it was paused");
        }
        assert!(pauses(&addrs[4]) >= 1, "the paused node did not notice");
    });
}

#[test]
fn a_long_leave_is_not_mistaken_for_a_pause() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        let leaver = addrs[2].clone();
        let node = cluster.node(&leaver).unwrap();
        for i in 0..20 {
            let key = format!("long-leave-{i}");
            write(&cluster, &addrs[0], key.as_bytes(), Some(b"v")).await;
        }
        // A peer that does not answer makes the leave wait for it (up to the
        // RPC timeout), far longer than the pause watch's limit.
        cluster.pause(&addrs[4]);
        let leaving = {
            let (cluster, leaver) = (cluster.clone(), leaver.clone());
            tokio::spawn(async move { cluster.leave(&leaver).await })
        };
        let started = cluster.now();
        let mut writes = 0;
        while !leaving.is_finished() {
            // A client writes through the leaving node now and then (each
            // look at the watch resets it, so they must be far apart).
            let _ = cluster
                .put(&leaver, b"during-leave", Some(b"x"), SECOND)
                .await;
            writes += 1;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let took = cluster.now() - started;
        leaving.await.unwrap();
        cluster.resume(&addrs[4]);
        assert!(
            took > 2 * SECOND,
            "the leave was too short to test: {took:?}"
        );
        assert!(writes > 1);
        assert_eq!(
            node.stats()["pauses"],
            0,
            "the leaving node thought it was paused"
        );
    });
}

#[test]
fn sixty_four_members_started_at_once_agree_within_ten_seconds_without_false_deaths() {
    sim::run(async {
        let cluster = Arc::new(Cluster::new(64, sim_config(), NetConfig::default()));
        let addrs: Vec<NodeAddr> = (0..64).map(Cluster::addr).collect();
        cluster.start(&addrs[0], None).await.unwrap();
        let started = cluster.now();
        let joins: Vec<_> = addrs[1..]
            .iter()
            .map(|addr| {
                let (cluster, addr, seed) = (cluster.clone(), addr.clone(), addrs[0].clone());
                tokio::spawn(async move { cluster.start(&addr, Some(&seed)).await })
            })
            .collect();
        for join in joins {
            join.await.unwrap().unwrap();
        }
        let agreed = cluster
            .wait_until(10 * SECOND, |c| {
                addrs
                    .iter()
                    .all(|a| c.node(a).is_some_and(|n| n.members() == addrs))
            })
            .await;
        assert!(agreed, "64 members did not agree within 10 s");
        assert!(cluster.now() - started <= 10 * SECOND);
        for addr in &addrs {
            let table = cluster.node(addr).unwrap().table();
            assert!(
                table.iter().all(|row| row.status != Status::Dead),
                "{addr} saw a false death"
            );
        }
    });
}

#[test]
fn a_paused_member_is_dropped_within_the_failure_timeout_at_every_size() {
    for n in [5, 24, 64] {
        sim::run(async {
            let (cluster, addrs) = ring(n).await;
            let paused = addrs[n / 2].clone();
            let others: Vec<NodeAddr> = addrs.iter().filter(|a| **a != paused).cloned().collect();
            cluster.pause(&paused);
            let started = cluster.now();
            let dropped = cluster
                .wait_until(sim_config().failure_timeout, |c| {
                    others
                        .iter()
                        .all(|a| !c.node(a).unwrap().members().contains(&paused))
                })
                .await;
            assert!(
                dropped,
                "{n} members: the paused member was not dropped everywhere within {:?}",
                sim_config().failure_timeout
            );
            eprintln!(
                "{n} members: paused member dropped everywhere after {:?}",
                cluster.now() - started
            );
            cluster.resume(&paused);
        });
    }
}

/// Seed 30754. A replica that a ring change takes off a key's preference list
/// may hold one of the two copies its latest acknowledged write is on (the
/// third replica missed it). Handing the key to its new owner alone, and
/// deleting it there, left the write on the owner only, and the owner's crash
/// with its disk lost an acknowledged write. The key now goes to every new
/// replica, and the copy is deleted only once a write quorum of them holds it.
#[test]
fn a_handoff_keeps_an_acknowledged_write_on_a_write_quorum() {
    sim::run(async {
        let (cluster, addrs) = ring(4).await;
        let joiner = Cluster::addr(4);
        let mut after: Vec<NodeAddr> = addrs.clone();
        after.push(joiner.clone());
        let after = thrifty_p2p::ring::Ring::new(after);
        // A key whose owner stays, whose third replica makes way for the
        // joiner, and whose second replica stays.
        let (key, before) = (0..1000)
            .map(|i| format!("handoff-{i}"))
            .find_map(|key| {
                let before = replicas_of(&cluster, &addrs[0], key.as_bytes());
                let now: Vec<NodeAddr> = after
                    .owners(key.as_bytes(), 3)
                    .into_iter()
                    .cloned()
                    .collect();
                let fits = now[0] == before[0]
                    && now.contains(&before[1])
                    && now.contains(&joiner)
                    && !now.contains(&before[2]);
                fits.then_some((key, before))
            })
            .expect("some key is placed so");
        let (owner, missing, leaving) = (&before[0], &before[1], &before[2]);
        let seed = addrs.iter().find(|a| !before.contains(a)).unwrap();
        // The owner never reaches the second replica or the joiner: the write
        // is on the owner and the third replica only, and the owner cannot
        // repair the others.
        cluster.cut(owner, missing);
        cluster.cut(owner, &joiner);
        write(&cluster, owner, key.as_bytes(), Some(b"acknowledged")).await;
        let holds = |addr: &NodeAddr| {
            cluster
                .node(addr)
                .is_some_and(|n| n.store().get(key.as_bytes()).unwrap().is_some())
        };
        assert!(holds(leaving) && !holds(missing));
        let joining = {
            let cluster = cluster.clone();
            let (joiner, seed) = (joiner.clone(), seed.clone());
            tokio::spawn(async move { cluster.start(&joiner, Some(&seed)).await })
        };
        // The third replica hands the key over and deletes its copy...
        assert!(
            cluster.wait_until(10 * SECOND, |_| !holds(leaving)).await,
            "{leaving} never handed {key} over"
        );
        // ... and then the owner crashes, its disk lost.
        cluster.kill(owner);
        cluster.heal();
        joining.await.unwrap().unwrap();
        for via in [missing, seed, &joiner] {
            assert_eq!(
                read(&cluster, via, key.as_bytes()).await.as_deref(),
                Some(&b"acknowledged"[..]),
                "{key} via {via}"
            );
        }
    });
}

/// Seed 33210 (a history of this branch). A node paused right after it
/// joined, before its pause watch ever ran, did not notice the pause: a write
/// that waited in it got a version when it resumed, and buried a later
/// acknowledged write.
#[test]
fn a_node_paused_right_after_it_joined_refuses_the_writes_that_waited_in_it() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        let victim = addrs[4].clone();
        cluster.kill(&victim);
        assert!(cluster.wait_until(10 * SECOND, Cluster::settled).await);
        cluster.start(&victim, Some(&addrs[0])).await.unwrap();
        cluster.pause(&victim);
        let late = cluster
            .put(&victim, b"paused-key", Some(b"late"), SECOND)
            .await;
        assert_eq!(late, Outcome::TimedOut);
        write(&cluster, &addrs[0], b"paused-key", Some(b"later")).await;
        tokio::time::sleep(3 * SECOND).await;
        cluster.resume(&victim);
        assert!(cluster.wait_until(30 * SECOND, Cluster::settled).await);
        for via in &addrs {
            assert_eq!(
                read(&cluster, via, b"paused-key").await.as_deref(),
                Some(&b"later"[..]),
                "via {via}"
            );
        }
    });
}

/// Tombstones held over the running nodes (`stats`).
fn tombstones_held(cluster: &Cluster) -> i64 {
    (cluster.running().iter())
        .filter_map(|addr| cluster.node(addr))
        .map(|node| node.stats()["tombstones"])
        .sum()
}

#[test]
fn tombstones_older_than_the_grace_are_removed_from_every_replica() {
    sim::run(async {
        let (cluster, addrs) = ring(5).await;
        for i in 0..20 {
            let key = format!("gone-{i}");
            write(&cluster, &addrs[i % 5], key.as_bytes(), Some(b"value")).await;
            write(&cluster, &addrs[(i + 1) % 5], key.as_bytes(), None).await;
        }
        assert!(cluster.wait_until(10 * SECOND, Cluster::settled).await);
        assert_eq!(tombstones_held(&cluster), 20 * 3, "three replicas each");
        // The grace is 3 s; then every peer must be synced with once more.
        assert!(
            (cluster.wait_until(60 * SECOND, |c| tombstones_held(c) == 0)).await,
            "{} tombstones left",
            tombstones_held(&cluster)
        );
        let collected: i64 = (addrs.iter())
            .map(|addr| cluster.node(addr).unwrap().stats()["tombstones_collected"])
            .sum();
        assert_eq!(collected, 20 * 3);
        for i in 0..20 {
            let key = format!("gone-{i}");
            for via in &addrs {
                assert_eq!(read(&cluster, via, key.as_bytes()).await, None, "{key}");
            }
        }
    });
}

/// Erases a key while one of its replicas is away (cut off, or killed and
/// later restarted with its store) for
/// several times the tombstone grace, brings it back, and checks that its
/// older copy does not come back once the tombstones are collected. Three
/// nodes, each a replica of every key, so no stand-in holds the tombstone
/// while the replica is away.
fn an_erase_survives_a_replica_away_longer_than_the_grace(crash: bool) {
    sim::run(async {
        let (cluster, addrs) = ring(3).await;
        let key = b"erased-while-away";
        write(&cluster, &addrs[0], key, Some(b"old")).await;
        assert!(cluster.wait_until(10 * SECOND, Cluster::settled).await);
        let replicas = replicas_of(&cluster, &addrs[0], key);
        let (gone, others) = replicas.split_first().unwrap();
        if crash {
            cluster.kill(gone);
        } else {
            cluster.isolate(gone);
        }
        write(&cluster, &others[0], key, None).await;
        // Five graces: long past the grace, and the member is declared dead.
        tokio::time::sleep(15 * SECOND).await;
        if crash {
            cluster.start(gone, Some(&others[0])).await.unwrap();
        } else {
            cluster.heal();
        }
        assert!(cluster.wait_until(60 * SECOND, Cluster::settled).await);
        assert!(
            (cluster.wait_until(60 * SECOND, |c| tombstones_held(c) == 0)).await,
            "{} tombstones left",
            tombstones_held(&cluster)
        );
        for via in &addrs {
            assert_eq!(read(&cluster, via, key).await, None, "via {via}");
            let copy = cluster.node(via).unwrap().store().get(key).unwrap();
            assert!(
                copy.as_ref().is_none_or(|copy| copy.value.is_none()),
                "{via} holds {copy:?}"
            );
        }
    });
}

#[test]
fn a_replica_cut_off_longer_than_the_tombstone_grace_brings_no_erased_value_back() {
    an_erase_survives_a_replica_away_longer_than_the_grace(false);
}

#[test]
fn a_replica_restarted_from_its_store_after_longer_than_the_tombstone_grace_brings_no_erased_value_back()
 {
    an_erase_survives_a_replica_away_longer_than_the_grace(true);
}
