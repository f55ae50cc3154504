//! Access control with real processes: a node started with a cluster secret
//! refuses every node-to-node and ring-changing call from a caller that has
//! not proved it (and changes nothing), a node without the secret cannot
//! join, and a client secret guards the data calls of the command-line tools.
//! Also from Python: `tests/python/auth.py` proves a secret with nothing but
//! `hmac` and a client generated from the IDL.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{NodeProc, members_of, run_tool, wait_until};
use thrifty_p2p::wire::idl::diststore::{Entry, StoreError, TPeerSyncClient, TStoreSyncClient};
use thrifty_p2p::wire::idl::locator::{
    Location, Member, MemberStatus, TBaseSyncClient, TLocatorSyncClient,
};

/// Writes `secret` to a file in `dir` and returns its path.
fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts that `result` is a refusal for want of the cluster secret.
fn refused<T: std::fmt::Debug>(method: &str, result: thrift::Result<T>) {
    let error = result.expect_err(method);
    let text = match &error {
        thrift::Error::User(user) => {
            let store = user
                .downcast_ref::<StoreError>()
                .unwrap_or_else(|| panic!("{method}: {error:?}"));
            assert_eq!(
                store.kind,
                Some(thrifty_p2p::wire::idl::diststore::ErrorKind::UNAUTHORIZED),
                "{method}"
            );
            store.message.clone().unwrap_or_default()
        }
        thrift::Error::Application(app) => app.message.clone(),
        other => panic!("{method}: not a Thrift exception: {other:?}"),
    };
    assert!(
        text.contains(&format!("`{method}` needs the cluster secret"))
            && text.contains("--cluster-secret-file"),
        "{method}: {text}"
    );
}

fn location(node: &NodeProc) -> Location {
    Location::new(node.addr.host.clone(), node.addr.port as i16)
}

#[test]
fn a_cluster_secret_refuses_every_peer_and_ring_call_without_proof_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "cluster", "a cluster secret for the tests");
    let node = NodeProc::start_with(None, &["--cluster-secret-file", path(&secret)]);
    let me = location(&node);
    let stranger = Location::new("127.0.0.1".to_string(), 1);
    let row = Member::new(
        stranger.clone(),
        1_700_000_000_000,
        MemberStatus::ALIVE,
        None,
    );
    let entry = Entry::new(b"k".to_vec(), b"forged".to_vec(), 1, 1);
    let mut c = node.client();

    refused("enter", c.enter(row.clone()));
    refused("gossip", c.gossip(vec![row.clone()]));
    refused("probe", c.probe(stranger.clone()));
    refused("isolate", c.isolate(true));
    refused("relay_fetch", c.relay_fetch(b"k".to_vec(), 0));
    refused(
        "relay_store",
        c.relay_store(b"k".to_vec(), b"v".to_vec(), 0, i64::MAX, 1, 1),
    );
    refused(
        "relay_erase",
        c.relay_erase(b"k".to_vec(), 0, i64::MAX, 1, 1),
    );
    refused("peek", c.peek(vec![b"k".to_vec()]));
    refused("diff_buckets", c.diff_buckets(me.clone(), vec![0; 4096]));
    refused(
        "reconcile",
        c.reconcile(me.clone(), vec![0], vec![entry.clone()]),
    );
    refused("heartbeat", c.heartbeat(0, me.clone()));
    refused("replica_read", c.replica_read(b"k".to_vec(), 0));
    refused("replicate", c.replicate(vec![entry.clone()], 0));
    refused("absorb", c.absorb(vec![entry]));
    // The oneway ones cannot be answered: they are dropped.
    c.join(stranger.clone()).unwrap();
    c.add(stranger.clone(), vec![]).unwrap();
    c.remove(me.clone(), vec![]).unwrap();
    c.debug().unwrap();
    c.die().unwrap();

    // Nothing changed: the node serves, alone, and holds no forged value.
    let mut c = node.client();
    c.ping().unwrap();
    assert_eq!(members_of(&node.addr), Some(vec![node.addr.to_string()]));
    assert_eq!(c.fetch(b"k".to_vec()).unwrap().value, None);
    // Data calls need no cluster secret.
    c.store(b"k".to_vec(), b"v".to_vec()).unwrap();
    assert_eq!(c.fetch(b"k".to_vec()).unwrap().value, Some(b"v".to_vec()));
    let log = node.log();
    assert!(log.contains("dropped a oneway `die`"), "{log}");
    assert!(!log.contains("no cluster secret"), "{log}");
}

#[test]
fn a_node_without_the_cluster_secret_cannot_join_and_one_with_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "cluster", "a cluster secret for the tests");
    let wrong = secret_file(dir.path(), "wrong", "another secret, not the ring's");
    let first = NodeProc::start_with(None, &["--cluster-secret-file", path(&secret)]);
    let seed = first.addr.to_string();

    for extra in [vec![], vec!["--cluster-secret-file", path(&wrong)]] {
        let mut args = vec!["--bind", "127.0.0.1"];
        args.extend(&extra);
        args.extend([seed.as_str(), "0"]);
        let (code, _, err) = run_tool("location", &args, None);
        assert_eq!(code, 1, "a node {extra:?} must not join: {err}");
        assert!(err.contains("not authorized"), "{extra:?}: {err}");
    }
    assert_eq!(members_of(&first.addr), Some(vec![seed.clone()]));

    let second = NodeProc::start_with(Some(&first.addr), &["--cluster-secret-file", path(&secret)]);
    let both = wait_until(Duration::from_secs(20), || {
        [&first, &second]
            .iter()
            .all(|n| members_of(&n.addr).is_some_and(|m| m.len() == 2))
    });
    assert!(both, "the node with the secret did not join");
    // And replication between them works over authenticated connections.
    assert_eq!(
        run_tool("storeput", &["k", "v", "--peer", &seed], None).0,
        0
    );
    let copies = wait_until(Duration::from_secs(20), || {
        [&first, &second].iter().all(|n| {
            n.client().fetch(b"k".to_vec()).ok().and_then(|l| l.value) == Some(b"v".to_vec())
        })
    });
    assert!(copies, "the write did not reach both members");
}

#[test]
fn a_client_secret_guards_data_calls_and_the_command_line_tools_prove_it() {
    let dir = tempfile::tempdir().unwrap();
    let client = secret_file(dir.path(), "client", "a client secret for the tests");
    let wrong = secret_file(dir.path(), "wrong", "another secret, not the ring's");
    let node = NodeProc::start_with(None, &["--client-secret-file", path(&client)]);
    let peer = node.addr.to_string();

    let (code, _, err) = run_tool("storeput", &["k", "v", "--peer", &peer], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs the client secret") && err.contains("--client-secret-file"),
        "{err}"
    );
    let (code, _, err) = run_tool(
        "storeput",
        &[
            "k",
            "v",
            "--peer",
            &peer,
            "--client-secret-file",
            path(&wrong),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wrong proof of the client secret"), "{err}");

    let with = ["--peer", &peer, "--client-secret-file", path(&client)];
    let put: Vec<&str> = ["k", "v"].iter().chain(&with).copied().collect();
    let (code, _, err) = run_tool("storeput", &put, None);
    assert_eq!(code, 0, "{err}");
    let get: Vec<&str> = ["k"].iter().chain(&with).copied().collect();
    let (code, out, err) = run_tool("storeget", &get, None);
    assert_eq!((code, out.as_slice()), (0, b"v".as_slice()), "{err}");
    // A large value streams its chunks over connections that prove it too.
    let large: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let put: Vec<&str> = ["big", "-", "--chunk-bytes", "1000"]
        .iter()
        .chain(&with)
        .copied()
        .collect();
    let (code, _, err) = run_tool("storeput", &put, Some(&large));
    assert_eq!(code, 0, "{err}");
    let get: Vec<&str> = ["big"].iter().chain(&with).copied().collect();
    let (code, out, err) = run_tool("storeget", &get, None);
    assert_eq!((code, out), (0, large), "{err}");
    // The environment variable names the file as well.
    let out = Command::new(env!("CARGO_BIN_EXE_storeget"))
        .args(["k", "--peer", &peer])
        .env("THRIFTY_CLIENT_SECRET_FILE", &client)
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"v", "{}", String::from_utf8_lossy(&out.stderr));
    // Without a cluster secret the node warned that it is open to peers.
    assert!(node.log().contains("no cluster secret"), "{}", node.log());
}

#[test]
fn a_python_client_proves_the_client_secret_with_hmac_alone() {
    let dir = tempfile::tempdir().unwrap();
    let client = secret_file(dir.path(), "client", "a client secret for the tests");
    let node = NodeProc::start_with(None, &["--client-secret-file", path(&client)]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/auth.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(node.addr.to_string())
        .arg(&client)
        .output()
        .expect("run python3 (pip install -r tests/python/requirements.txt)");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
