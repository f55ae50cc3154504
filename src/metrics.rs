//! `Metrics`: the node's Prometheus registry (`prometheus-client`), one per
//! [`crate::node::Node`]. Counters and histograms are counted where the work
//! happens (the server's connections, anti-entropy, read repair, handoff,
//! leave); gauges that describe state (every entry of `Node::stats()`,
//! members by status) are read when `/metrics` is scraped, so they cost
//! nothing in between and a counter added to `stats()` shows up by itself.
//!
//! The simulation builds nodes too: they count, but nothing serves them.
//!
//! The request path stays cheap: each method's counter and histogram are
//! created once, here, and found by a binary search of a sorted table of
//! names ([`Metrics::method`]); counting a request is then two atomic adds
//! and one uncontended histogram lock, with no allocation and no lookup in
//! the label map.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::membership::Status;

/// Every method of the IDL (`thrift/*.thrift`), sorted, so a name is found
/// by binary search; anything else counts as [`OTHER`].
const METHODS: [&str; 50] = [
    "absorb",
    "add",
    "append",
    "authenticate",
    "begin_upload",
    "commit_upload",
    "debug",
    "describe",
    "die",
    "diff_buckets",
    "enter",
    "erase",
    "fetch",
    "fetch_many",
    "get",
    "get_all",
    "get_node",
    "gossip",
    "heartbeat",
    "hello",
    "isolate",
    "join",
    "list_keys",
    "locate",
    "lock",
    "members",
    "peek",
    "ping",
    "probe",
    "put",
    "read_range",
    "reconcile",
    "relay_erase",
    "relay_fetch",
    "relay_lease",
    "relay_store",
    "relay_write_with",
    "remove",
    "renew",
    "replica_read",
    "replicas",
    "replicate",
    "service_type",
    "service_types",
    "stats",
    "store",
    "store_many",
    "store_with",
    "unlock",
    "upload_part",
];

/// The label of a method not in the IDL: unknown names are folded into one
/// series, so a client sending random names cannot grow the registry.
const OTHER: &str = "other";

/// Upper bounds of the latency buckets, in seconds: from 100 µs (a read its
/// owner answers alone) to 10 s (the default RPC timeout; a quorum write
/// waiting on a dead replica).
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The series this module registers (without the `thrifty_` prefix), which
/// no gauge from `stats` may take.
const COUNTED: [&str; 8] = [
    "requests",
    "request_duration_seconds",
    "bytes_in",
    "bytes_out",
    "repaired_keys",
    "handed_over_keys",
    "leave_remaining_keys",
    "members_by_status",
];

type Labels = [(&'static str, &'static str); 1];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One method's handles, shared with the registry's families.
#[derive(Clone)]
pub(crate) struct MethodMetrics {
    requests: Counter,
    latency: Histogram,
}

impl MethodMetrics {
    /// Counts one message handled in `took` (from the whole message read to
    /// its reply ready).
    pub(crate) fn observe(&self, took: Duration) {
        self.requests.inc();
        self.latency.observe(took.as_secs_f64());
    }
}

/// The registry and the handles the node counts with.
pub(crate) struct Metrics {
    registry: Registry,
    /// One per [`METHODS`] entry, then [`OTHER`].
    methods: Box<[MethodMetrics]>,
    bytes_in: Counter,
    bytes_out: Counter,
    anti_entropy_repairs: Counter,
    read_repairs: Counter,
    handed_over: Counter,
    leave_remaining: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series this node counts, all at zero.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        // Created up front: the request path never touches the families' maps.
        let methods = METHODS
            .iter()
            .chain([&OTHER])
            .map(|&method| {
                let labels = [("method", method)];
                MethodMetrics {
                    requests: requests.get_or_create_owned(&labels),
                    latency: latency.get_or_create_owned(&labels),
                }
            })
            .collect();
        registry.register(
            "thrifty_requests",
            "Thrift messages handled by this node's server, by method (clients' and peers')",
            requests,
        );
        registry.register(
            "thrifty_request_duration_seconds",
            "Time from a whole message read to its reply ready, by method",
            latency,
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let bytes_in = counter(
            &mut registry,
            "thrifty_bytes_in",
            "Bytes read from the connections this node's Thrift server accepted",
        );
        let bytes_out = counter(
            &mut registry,
            "thrifty_bytes_out",
            "Bytes written to the connections this node's Thrift server accepted",
        );
        let repairs = Family::<Labels, Counter>::default();
        let anti_entropy_repairs = repairs.get_or_create_owned(&[("by", "anti_entropy")]);
        let read_repairs = repairs.get_or_create_owned(&[("by", "read_repair")]);
        registry.register(
            "thrifty_repaired_keys",
            "Stale copies brought up to date: here by anti-entropy, or sent to \
             replicas by a read that found them behind",
            repairs,
        );
        let handed_over = counter(
            &mut registry,
            "thrifty_handed_over_keys",
            "Keys handed to their new replicas (acknowledged by a write quorum) and deleted here",
        );
        let leave_remaining = Gauge::default();
        registry.register(
            "thrifty_leave_remaining_keys",
            "Keys still to hand over while this node leaves (0 otherwise)",
            leave_remaining.clone(),
        );
        Metrics {
            registry,
            methods,
            bytes_in,
            bytes_out,
            anti_entropy_repairs,
            read_repairs,
            handed_over,
            leave_remaining,
        }
    }

    /// The handles of the method named `name` (an unknown name: `other`).
    pub(crate) fn method(&self, name: &str) -> &MethodMetrics {
        let index = METHODS.binary_search(&name).unwrap_or(METHODS.len());
        &self.methods[index]
    }

    /// Counts bytes read from a served connection.
    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Counts bytes written to a served connection.
    pub(crate) fn written(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }

    /// Counts copies made newer here by anti-entropy.
    pub(crate) fn repaired_by_anti_entropy(&self, keys: usize) {
        self.anti_entropy_repairs.inc_by(keys as u64);
    }

    /// Counts stale copies a read repaired (here or on other replicas).
    pub(crate) fn repaired_by_read(&self, keys: usize) {
        self.read_repairs.inc_by(keys as u64);
    }

    /// Counts keys handed over and deleted here.
    pub(crate) fn handed_over(&self, keys: usize) {
        self.handed_over.inc_by(keys as u64);
    }

    /// Sets the keys a leaving node still has to hand over.
    pub(crate) fn set_leave_remaining(&self, keys: usize) {
        self.leave_remaining
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// The text exposition (OpenMetrics, which Prometheus reads): the counted
    /// series, then, read now, one gauge `thrifty_<name>` per entry of
    /// `stats` (the node's `stats()`) and `thrifty_members_by_status`
    /// counted over `statuses` (the member table, this node included).
    pub(crate) fn render(
        &self,
        stats: &BTreeMap<String, i64>,
        statuses: impl IntoIterator<Item = Status>,
    ) -> String {
        let mut now = Registry::default();
        for (name, value) in stats {
            let name = metric_name(name);
            // A stat named like a counted series would make two families
            // of one name, which a scraper refuses whole.
            if COUNTED.contains(&name.as_str()) {
                continue;
            }
            let gauge = Gauge::<i64>::default();
            gauge.set(*value);
            now.register(
                format!("thrifty_{name}"),
                format!("`{name}` from this node's stats"),
                gauge,
            );
        }
        let members = Family::<Labels, Gauge>::default();
        for status in Status::ALL {
            let _ = members.get_or_create(&[("status", status.name())]);
        }
        for status in statuses {
            members.get_or_create(&[("status", status.name())]).inc();
        }
        now.register(
            "thrifty_members_by_status",
            "Rows of this node's member table (itself included), by status",
            members,
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &now))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

/// A `stats` name as a metric name: anything but ASCII letters, digits and
/// `_` becomes `_`.
fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let _ = out.write_char(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::Method;
    use crate::wire::handler::{ONEWAY_METHODS, PEER_METHODS};

    #[test]
    fn the_method_table_is_sorted_so_binary_search_finds_every_name() {
        assert!(METHODS.windows(2).all(|w| w[0] < w[1]), "{METHODS:?}");
        let known = ONEWAY_METHODS
            .iter()
            .chain(PEER_METHODS.iter())
            .chain(["stats", "store", "fetch", "erase", "absorb", "locate"].iter());
        for name in known {
            assert!(METHODS.contains(name), "{name} is missing");
        }
        for hot in [
            "get",
            "put",
            "relay_fetch",
            "relay_store",
            "relay_erase",
            "probe",
        ] {
            assert!(Method::named(hot).is_some() && METHODS.contains(&hot));
        }
    }

    #[test]
    fn requests_are_counted_per_method_and_unknown_names_share_one_series() {
        let metrics = Metrics::new();
        metrics.method("fetch").observe(Duration::from_micros(300));
        metrics.method("fetch").observe(Duration::from_millis(3));
        metrics.method("bogus").observe(Duration::from_millis(1));
        metrics
            .method("also bogus")
            .observe(Duration::from_millis(1));
        let text = metrics.render(&BTreeMap::new(), []);
        assert!(
            text.contains("thrifty_requests_total{method=\"fetch\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("thrifty_requests_total{method=\"other\"} 2\n"));
        assert!(text.contains("thrifty_requests_total{method=\"store\"} 0\n"));
        assert!(
            text.contains(
                "thrifty_request_duration_seconds_bucket{le=\"0.0005\",method=\"fetch\"} 1\n"
            ) || text.contains(
                "thrifty_request_duration_seconds_bucket{method=\"fetch\",le=\"0.0005\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn every_stat_is_a_gauge_and_members_are_counted_by_status() {
        let metrics = Metrics::new();
        let stats = BTreeMap::from([
            ("keys".to_string(), 7),
            ("bytes".to_string(), 700),
            ("odd-name".to_string(), -1),
            ("bytes_in".to_string(), 5),
        ]);
        let text = metrics.render(
            &stats,
            [Status::Alive, Status::Alive, Status::Suspect, Status::Left],
        );
        assert!(text.contains("# TYPE thrifty_keys gauge\n"), "{text}");
        assert!(text.contains("thrifty_keys 7\n"));
        assert!(text.contains("thrifty_bytes 700\n"));
        assert!(text.contains("thrifty_odd_name -1\n"));
        assert_eq!(
            text.matches("# TYPE thrifty_bytes_in ").count(),
            1,
            "{text}"
        );
        assert!(text.contains("thrifty_members_by_status{status=\"alive\"} 2\n"));
        assert!(text.contains("thrifty_members_by_status{status=\"suspect\"} 1\n"));
        assert!(text.contains("thrifty_members_by_status{status=\"dead\"} 0\n"));
        assert!(text.contains("thrifty_members_by_status{status=\"left\"} 1\n"));
    }

    #[test]
    fn bytes_repairs_and_handoff_are_counted() {
        let metrics = Metrics::new();
        metrics.read(100);
        metrics.written(40);
        metrics.repaired_by_anti_entropy(3);
        metrics.repaired_by_read(2);
        metrics.handed_over(5);
        metrics.set_leave_remaining(9);
        let text = metrics.render(&BTreeMap::new(), []);
        for line in [
            "thrifty_bytes_in_total 100\n",
            "thrifty_bytes_out_total 40\n",
            "thrifty_repaired_keys_total{by=\"anti_entropy\"} 3\n",
            "thrifty_repaired_keys_total{by=\"read_repair\"} 2\n",
            "thrifty_handed_over_keys_total 5\n",
            "thrifty_leave_remaining_keys 9\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}

/// What a node counts as it works, in the simulation (real nodes, virtual
/// time): the counters are bumped where the work happens, not only here.
#[cfg(test)]
mod counted_by_the_node {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::addr::NodeAddr;
    use crate::node::Node;
    use crate::sim::schedule::sim_config;
    use crate::sim::{self, Cluster, NetConfig, Outcome};

    const SECOND: Duration = Duration::from_secs(1);
    const KEYS: usize = 30;

    /// The value of `series` in `node`'s exposition now.
    fn sample(node: &Node, series: &str) -> f64 {
        let text = node
            .metrics()
            .render(&node.stats(), node.table().into_iter().map(|r| r.status));
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// A settled ring of three holding `KEYS` keys.
    async fn ring_with_keys() -> (Arc<Cluster>, Vec<NodeAddr>) {
        let cluster = Arc::new(Cluster::new(11, sim_config(), NetConfig::default()));
        let addrs: Vec<NodeAddr> = (0..3).map(Cluster::addr).collect();
        cluster.start(&addrs[0], None).await.unwrap();
        for addr in &addrs[1..] {
            cluster.start(addr, Some(&addrs[0])).await.unwrap();
        }
        assert!(cluster.wait_until(30 * SECOND, Cluster::settled).await);
        for i in 0..KEYS {
            let key = format!("counted-{i}");
            let mut stored = false;
            for _ in 0..100 {
                if cluster
                    .put(&addrs[0], key.as_bytes(), Some(b"v"), SECOND)
                    .await
                    == Outcome::Ok(())
                {
                    stored = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(stored, "{key} was never acknowledged");
        }
        assert!(cluster.wait_until(10 * SECOND, Cluster::settled).await);
        (cluster, addrs)
    }

    #[test]
    fn a_leaving_node_counts_every_key_it_hands_over_and_ends_with_none_left() {
        sim::run(async {
            let (cluster, addrs) = ring_with_keys().await;
            let leaver = cluster.node(&addrs[2]).unwrap();
            let held = leaver.store().len();
            assert_eq!(held, KEYS, "three replicas on three members");
            assert_eq!(sample(&leaver, "thrifty_handed_over_keys_total"), 0.0);
            assert_eq!(cluster.leave(&addrs[2]).await, Some(0));
            assert_eq!(
                sample(&leaver, "thrifty_handed_over_keys_total"),
                held as f64
            );
            assert_eq!(sample(&leaver, "thrifty_leave_remaining_keys"), 0.0);
        });
    }

    #[test]
    fn a_member_back_with_an_empty_store_counts_the_keys_anti_entropy_restored() {
        sim::run(async {
            let (cluster, addrs) = ring_with_keys().await;
            cluster.kill(&addrs[2]);
            cluster
                .start_empty(&addrs[2], Some(&addrs[0]))
                .await
                .unwrap();
            let back = cluster.node(&addrs[2]).unwrap();
            assert!(
                cluster
                    .wait_until(30 * SECOND, |_| back.store().len() == KEYS)
                    .await,
                "{} of {KEYS} keys back",
                back.store().len()
            );
            let repaired = r#"thrifty_repaired_keys_total{by="anti_entropy"}"#;
            assert!(
                sample(&back, repaired) >= KEYS as f64,
                "{}",
                sample(&back, repaired)
            );
        });
    }
}
