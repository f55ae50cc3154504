//! Leases with fencing tokens (README, Leases), against real `location`
//! processes: a lease outlives the node that granted it, racing clients
//! through different nodes hold it one at a time, unlock frees it at once,
//! and hostile requests get clear errors from a node that keeps serving.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{NodeProc, run_tool, start_ring, wait_until};
use thrifty_p2p::wire::idl::diststore::{
    ErrorKind as WireKind, LeaseOp, StoreError, TPeerSyncClient, TStoreSyncClient,
};
use thrifty_p2p::wire::idl::locator::TBaseSyncClient;
use thrifty_p2p::{Client, ErrorKind};

/// Fast failure detection keeps the suite short; the default is 5 s.
const FAILURE_TIMEOUT: &str = "2";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `StoreError` a raw call failed with.
fn store_error<T: std::fmt::Debug>(result: thrift::Result<T>) -> StoreError {
    match result {
        Err(thrift::Error::User(error)) => *error
            .downcast::<StoreError>()
            .unwrap_or_else(|other| panic!("not a StoreError: {other}")),
        other => panic!("expected a StoreError, got {other:?}"),
    }
}

#[test]
fn a_lease_outlives_its_holders_node_and_fences_its_old_token() {
    let mut nodes = start_ring(3, &["--failure-timeout", FAILURE_TIMEOUT]);
    let key = "job";
    let owner = Client::through(nodes[0].addr.clone())
        .unwrap()
        .owner(key)
        .unwrap()
        .expect("the ring owns the key");
    let at = nodes.iter().position(|n| n.addr == owner).unwrap();
    // Long enough to outlast failure detection on a loaded machine, so a
    // lock after the kill meets the lease while it is still held.
    let ttl = Duration::from_secs(10);
    let mut holder = Client::through(owner.clone()).unwrap();
    let old = holder.lock(key, ttl, None).unwrap();
    holder
        .put_fenced(key, "by the first holder", old.token)
        .unwrap();

    let killed = nodes.remove(at);
    killed.signal("KILL");
    drop(killed);

    let mut other = Client::through(nodes[0].addr.clone()).unwrap();
    let mut held = 0;
    let deadline = Instant::now() + ttl + Duration::from_secs(30);
    let new = loop {
        assert!(
            Instant::now() < deadline,
            "no lease after the first expired"
        );
        match other.lock(key, ttl, None) {
            Ok(lease) => break lease,
            Err(e) if e.kind() == ErrorKind::Held => {
                assert!(
                    e.to_string().contains(&format!("until {}", old.expires_ms)),
                    "{e}"
                );
                held += 1;
            }
            Err(e) if e.is_transient() => {}
            Err(e) => panic!("lock after the owner's kill: {e}"),
        }
        // Polling for the lease to come free, with a deadline.
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(held > 0, "the lease was never seen held after the kill");
    assert!(
        now_ms() >= old.expires_ms,
        "a new lease was granted at {} before the old one expired at {}",
        now_ms(),
        old.expires_ms
    );
    assert!(new.token > old.token, "{new:?} after {old:?}");

    let stale = other
        .put_fenced(key, "by the first holder, late", old.token)
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::StaleToken, "{stale}");
    other
        .put_fenced(key, "by the second holder", new.token)
        .unwrap();
    assert_eq!(
        other.get(key).unwrap().as_deref(),
        Some(&b"by the second holder"[..])
    );
}

#[test]
fn racing_clients_through_different_nodes_hold_a_lease_one_at_a_time() {
    let nodes = start_ring(3, &["--failure-timeout", FAILURE_TIMEOUT]);
    let key = "shared";
    let holding = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(Mutex::new(Vec::new()));
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let via = nodes[i % nodes.len()].addr.clone();
            let (holding, granted) = (holding.clone(), granted.clone());
            std::thread::spawn(move || {
                let mut ring = Client::through(via).unwrap();
                for round in 0..4 {
                    let lease = ring
                        .lock(key, Duration::from_secs(60), Some(Duration::from_secs(120)))
                        .unwrap_or_else(|e| panic!("racer {i} round {round}: {e}"));
                    assert!(
                        !holding.swap(true, Ordering::SeqCst),
                        "racer {i} got a lease while another held it"
                    );
                    granted.lock().unwrap().push(lease.token);
                    ring.put_fenced(key, format!("{i}/{round}"), lease.token)
                        .unwrap();
                    holding.store(false, Ordering::SeqCst);
                    ring.unlock(key, lease.token).unwrap();
                }
            })
        })
        .collect();
    for racer in racers {
        racer.join().unwrap();
    }
    let granted = granted.lock().unwrap();
    assert_eq!(granted.len(), 24);
    assert!(
        granted.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing: {granted:?}"
    );
}

#[test]
fn unlock_by_the_holder_frees_the_lease_at_once_and_a_wrong_token_is_refused() {
    let node = NodeProc::start(None);
    let mut ring = node.session();
    let lease = ring.lock("k", Duration::from_secs(60), None).unwrap();
    for wrong in [lease.token - 1, lease.token + 1] {
        let refused = ring.unlock("k", wrong).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::StaleToken, "{refused}");
    }
    let held = ring.lock("k", Duration::from_secs(60), None).unwrap_err();
    assert_eq!(held.kind(), ErrorKind::Held, "{held}");
    let renewed = ring
        .renew("k", lease.token, Duration::from_secs(120))
        .unwrap();
    assert_eq!(renewed.token, lease.token);
    assert!(renewed.expires_ms > lease.expires_ms);

    ring.unlock("k", lease.token).unwrap();
    let next = ring.lock("k", Duration::from_secs(60), None).unwrap();
    assert!(next.token > lease.token);
    let again = ring.unlock("k", lease.token).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::StaleToken, "{again}");
    // An unlocked lease no longer fences.
    ring.unlock("k", next.token).unwrap();
    let after = ring.put_fenced("k", "v", next.token).unwrap_err();
    assert!(after.to_string().contains("unlocked"), "{after}");
    // A lease that expired by itself frees the key with no unlock.
    let short = ring.lock("k", Duration::from_millis(200), None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        ring.lock("k", Duration::from_secs(60), None)
            .is_ok_and(|l| l.token > short.token)
    }));
    // The lease records stay out of listings.
    assert_eq!(ring.count("").unwrap(), 0, "lease records listed");
}

#[test]
fn hostile_lease_requests_get_clear_errors_and_leave_the_node_serving() {
    let node = NodeProc::start(None);
    let mut raw = node.client();
    for ttl in [0, -1, i64::MIN, 86_400_001, i64::MAX] {
        let error = store_error(raw.lock(b"k".to_vec(), ttl));
        assert_eq!(error.kind, Some(WireKind::REFUSED), "{error:?}");
        let message = error.message.unwrap();
        assert!(message.contains("1 to 86400000 ms"), "{message}");
    }
    let error = store_error(raw.lock(vec![b'x'; 64 * 1024], 1000));
    assert_eq!(error.kind, Some(WireKind::TOO_LARGE), "{error:?}");
    let error = store_error(raw.relay_lease(b"k".to_vec(), LeaseOp(99), 1000, 0, 0));
    assert!(error.message.unwrap().contains("unknown op 99"));
    let error = store_error(raw.unlock(b"never".to_vec(), 7));
    assert_eq!(error.kind, Some(WireKind::STALE_TOKEN), "{error:?}");
    // A client cannot forge a lease by writing its record.
    let error = store_error(raw.store(b"\0thrifty-lease\0k".to_vec(), b"TPL1".to_vec()));
    assert_eq!(error.kind, Some(WireKind::REFUSED), "{error:?}");
    assert!(error.message.unwrap().contains("hold leases"));

    // Unharmed: it still grants and serves.
    let lease = raw.lock(b"k".to_vec(), 1000).unwrap();
    assert!(lease.token.unwrap() > 0);
    raw.ping().unwrap();
    let mut ring = node.session();
    ring.put("k", "v").unwrap();
    assert_eq!(ring.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn storelock_prints_a_token_and_storeunlock_gives_it_back() {
    let node = NodeProc::start(None);
    let peer = node.addr.to_string();
    let (code, out, err) = run_tool("storelock", &["job", "--ttl", "60", "--peer", &peer], None);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    let mut lines = out.lines();
    let token: i64 = lines.next().unwrap().parse().unwrap();
    let expires: i64 = lines.next().unwrap().parse().unwrap();
    assert!(expires > now_ms());
    let (code, _, err) = run_tool("storelock", &["job", "--ttl", "60", "--peer", &peer], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("leased by another holder until"), "{err}");
    let wrong = (token + 1).to_string();
    let (code, _, err) = run_tool("storeunlock", &["job", &wrong, "--peer", &peer], None);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run_tool(
        "storeunlock",
        &["job", &token.to_string(), "--peer", &peer],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_tool("storelock", &["job", "--ttl", "0", "--peer", &peer], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1 to 86400000 ms"), "{err}");
}
