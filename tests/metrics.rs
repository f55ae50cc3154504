//! `location --http`: a real ring's `/metrics` move with its work (requests
//! per method, bytes, keys, members by status, keys handed over), and the
//! flag's errors.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::http::{get, sample};
use common::{NodeProc, run_tool, start_ring, wait_until};
use thrifty_p2p::Client;

const HTTP: [&str; 2] = ["--http", "127.0.0.1:0"];

fn http_of(node: &NodeProc) -> SocketAddr {
    node.http.expect("started with --http")
}

/// One scrape of `node`'s `/metrics`, checked to be a whole exposition.
fn scrape(node: &NodeProc) -> String {
    let answer = get(http_of(node), "/metrics").expect("scrape /metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    answer.body
}

/// `series` summed over every node's scrape (0 where absent).
fn total(nodes: &[&NodeProc], series: &str) -> f64 {
    nodes
        .iter()
        .map(|n| sample(&scrape(n), series).unwrap_or(0.0))
        .sum()
}

#[test]
fn a_ring_counts_its_requests_bytes_keys_and_members_in_metrics() {
    let nodes = start_ring(3, &HTTP);
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let mut client = Client::connect(&nodes[0].addr.to_string()).unwrap();
    for i in 0..16 {
        client
            .put(format!("key-{i}"), format!("value-{i}"))
            .unwrap();
    }
    for i in 0..16 {
        assert_eq!(
            client.get(format!("key-{i}")).unwrap(),
            Some(format!("value-{i}").into_bytes())
        );
    }
    // Each key was sent to its owner, so the calls spread over the ring.
    let stores = r#"thrifty_requests_total{method="store"}"#;
    let fetches = r#"thrifty_requests_total{method="fetch"}"#;
    assert!(total(&all, stores) >= 16.0, "{}", scrape(&nodes[0]));
    assert!(total(&all, fetches) >= 16.0);
    let fetch_timings = r#"thrifty_request_duration_seconds_count{method="fetch"}"#;
    assert_eq!(total(&all, fetch_timings), total(&all, fetches));
    // Replication reached the other replicas: 16 keys, 3 copies each.
    assert!(
        wait_until(Duration::from_secs(10), || total(&all, "thrifty_keys")
            == 48.0),
        "keys: {}",
        total(&all, "thrifty_keys")
    );
    for node in &nodes {
        let metrics = scrape(node);
        let alive = r#"thrifty_members_by_status{status="alive"}"#;
        assert_eq!(sample(&metrics, alive), Some(3.0), "{metrics}");
        assert_eq!(
            sample(&metrics, r#"thrifty_members_by_status{status="dead"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&metrics, "thrifty_members"), Some(3.0));
        assert!(sample(&metrics, "thrifty_bytes_in_total").unwrap() > 0.0);
        assert!(sample(&metrics, "thrifty_bytes_out_total").unwrap() > 0.0);
        assert!(sample(&metrics, r#"thrifty_requests_total{method="gossip"}"#).unwrap() > 0.0);
        for series in [
            "thrifty_replication_pending",
            "thrifty_hints",
            r#"thrifty_repaired_keys_total{by="anti_entropy"}"#,
            r#"thrifty_repaired_keys_total{by="read_repair"}"#,
            "thrifty_handed_over_keys_total",
            "thrifty_leave_remaining_keys",
        ] {
            assert!(
                sample(&metrics, series).is_some(),
                "no {series} in\n{metrics}"
            );
        }
    }

    // A fourth member takes a share: the others hand it the keys they no
    // longer replicate, and count them.
    let fourth = NodeProc::start_with(Some(&nodes[0].addr), &HTTP);
    let mut four: Vec<&NodeProc> = nodes.iter().collect();
    four.push(&fourth);
    let handed = "thrifty_handed_over_keys_total";
    assert!(
        wait_until(Duration::from_secs(20), || total(&all, handed) > 0.0),
        "no key handed over to the fourth member"
    );
    assert!(wait_until(Duration::from_secs(20), || {
        four.iter().all(|n| {
            sample(&scrape(n), r#"thrifty_members_by_status{status="alive"}"#) == Some(4.0)
        })
    }));
}

#[test]
fn a_write_through_a_replica_is_coordinated_there_not_relayed_to_the_owner() {
    use thrifty_p2p::wire::idl::diststore::TStoreSyncClient;
    // Three nodes keeping three copies: every node replicates every key, so
    // the node a client calls coordinates each write it takes, owner or not.
    let nodes = start_ring(3, &HTTP);
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let mut raw = nodes[0].client();
    for i in 0..32 {
        raw.store(format!("key-{i}").into_bytes(), b"value".to_vec())
            .unwrap();
    }
    let relayed = r#"thrifty_requests_total{method="relay_store"}"#;
    assert_eq!(total(&all, relayed), 0.0, "{}", scrape(&nodes[1]));
    // Yet each key has its three copies, and reads through another node
    // (forwarded to the owner) see it.
    assert!(
        wait_until(Duration::from_secs(10), || total(&all, "thrifty_keys")
            == 96.0),
        "keys: {}",
        total(&all, "thrifty_keys")
    );
    let mut other = nodes[2].client();
    for i in 0..32 {
        let found = other.fetch(format!("key-{i}").into_bytes()).unwrap();
        assert_eq!(found.value.as_deref(), Some(&b"value"[..]), "key-{i}");
    }
}

#[test]
fn http_answers_only_its_three_paths() {
    let node = NodeProc::start_with(None, &HTTP);
    let http = http_of(&node);
    let missing = get(http, "/nope").unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/metrics"), "{}", missing.body);
    let page = get(http, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("<svg") && page.body.contains("/status.json"));
    let status = get(http, "/status.json").unwrap();
    assert_eq!(status.status, 200);
    assert!(status.body.contains(&format!("\"addr\":\"{}\"", node.addr)));
    assert!(status.body.contains("\"sectors\":["));
}

#[test]
fn a_taken_http_port_stops_the_start_with_an_error_naming_the_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run_tool("location", &["--http", &addr, "0"], None);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("--http") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn a_bad_http_address_is_refused_naming_the_flag() {
    let (code, _, stderr) = run_tool("location", &["--http", "no-port", "0"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--http"), "{stderr}");
}
