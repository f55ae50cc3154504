//! A ring across hosts: every node in a network namespace of its own, with
//! its own address and `--advertise`, joined by veth links to two bridges
//! (hosts a, b, c on one, d, e on the other) and a trunk link between the
//! bridges. The test runs the README walkthrough through that network, cuts
//! the trunk (a partition of {a, b, c} from {d, e}), writes on both sides,
//! restores the trunk and checks that every node converges on every
//! acknowledged write.
//!
//! It creates and deletes its own namespaces (`ip netns`, from iproute2), so
//! it needs root, as CI has. Every address it uses is inside those
//! namespaces (10.231.0.0/24); nothing reaches the host's own network. Set
//! `THRIFTY_SKIP_NETNS=1` to skip it where you cannot be root.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{NodeProc, run_tool_in, wait_until};

/// The hosts: namespace suffix and the bridge each hangs off.
const HOSTS: [(&str, usize); 5] = [("a", 0), ("b", 0), ("c", 0), ("d", 1), ("e", 1)];

/// Namespaces made for one test run, deleted on drop (after the nodes in
/// them, which are declared later and so dropped first).
struct Net {
    switch: String,
    hosts: Vec<Host>,
}

#[derive(Clone)]
struct Host {
    netns: String,
    ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    fn build() -> Net {
        let tag = std::process::id();
        let switch = format!("tp{tag}-sw");
        let mut net = Net {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        for bridge in ["br0", "br1"] {
            ip(&["-n", &switch, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &switch, "link", "set", bridge, "up"]);
        }
        // The trunk: one veth pair inside the switch, an end on each bridge.
        ip(&[
            "-n", &switch, "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk1",
        ]);
        for (end, bridge) in [("trunk0", "br0"), ("trunk1", "br1")] {
            ip(&["-n", &switch, "link", "set", end, "master", bridge]);
            ip(&["-n", &switch, "link", "set", end, "up"]);
        }
        for (i, (name, bridge)) in HOSTS.iter().enumerate() {
            let netns = format!("tp{tag}-{name}");
            let addr = format!("10.231.0.{}", i + 1);
            ip(&["netns", "add", &netns]);
            net.hosts.push(Host {
                netns: netns.clone(),
                ip: addr.clone(),
            });
            let port = format!("port-{name}");
            ip(&[
                "link", "add", "eth0", "netns", &netns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            let bridge = format!("br{bridge}");
            ip(&["-n", &switch, "link", "set", &port, "master", &bridge]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
        }
        net
    }

    /// Cuts (`false`) or restores (`true`) the trunk between the bridges.
    fn trunk(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        for end in ["trunk0", "trunk1"] {
            ip(&["-n", &self.switch, "link", "set", end, state]);
        }
    }

    /// Starts a node on host `i`, joining `seed` if given, on a free port.
    fn node(&self, i: usize, seed: Option<&NodeProc>) -> NodeProc {
        let host = &self.hosts[i];
        let mut args: Vec<String> = [
            "--bind",
            &host.ip,
            "--advertise",
            &host.ip,
            "--failure-timeout",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(seed) = seed {
            args.push(seed.addr.to_string());
        }
        args.push("0".into());
        NodeProc::spawn_in(Some(&host.netns), &args)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for netns in self.hosts.iter().map(|h| &h.netns).chain([&self.switch]) {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

/// Runs a client tool on host `i` against `node`.
fn tool(net: &Net, i: usize, node: &NodeProc, name: &str, args: &[&str]) -> (i32, String, String) {
    let peer = node.addr.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--peer", &peer]);
    let (code, out, err) = run_tool_in(Some(&net.hosts[i].netns), name, &all, None);
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// Stores `key = value` from host `i` through `node`, retrying until it is
/// acknowledged or `within` has passed; whether it was.
fn put_until(
    net: &Net,
    i: usize,
    node: &NodeProc,
    key: &str,
    value: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if tool(net, i, node, "storeput", &[key, value]).0 == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `storeget key` prints from host `i` through `node`, if it succeeds.
fn get(net: &Net, i: usize, node: &NodeProc, key: &str) -> Option<String> {
    let (code, out, _) = tool(net, i, node, "storeget", &[key]);
    (code == 0).then_some(out)
}

fn skip() -> bool {
    if std::env::var_os("THRIFTY_SKIP_NETNS").is_some() {
        eprintln!("THRIFTY_SKIP_NETNS is set: the multi-host test did not run");
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    assert!(
        root && Command::new("ip").arg("-V").output().is_ok(),
        "the multi-host test makes network namespaces: run it as root with iproute2 \
         installed (CI does), or set THRIFTY_SKIP_NETNS=1 to skip it"
    );
    false
}

#[test]
fn a_ring_across_namespaces_runs_the_walkthrough_survives_a_partition_and_converges() {
    if skip() {
        return;
    }
    let net = Net::build();
    let (a, b, c, d, e) = (0, 1, 2, 3, 4);

    // The walkthrough, each step from a different host.
    let mut nodes: Vec<NodeProc> = vec![net.node(a, None)];
    for host in [b, c, d] {
        let joiner = net.node(host, Some(&nodes[0]));
        nodes.push(joiner);
    }
    let within = Duration::from_secs(30);
    assert!(put_until(&net, b, &nodes[b], "a", "apple", within));
    assert!(put_until(&net, c, &nodes[a], "c", "crayon", within));
    assert_eq!(get(&net, d, &nodes[c], "c").as_deref(), Some("crayon"));
    // A fifth node joins from the other bridge; the keys it now owns move to it.
    let fifth = net.node(e, Some(&nodes[b]));
    nodes.push(fifth);
    assert!(
        wait_until(within, || get(&net, e, &nodes[e], "a").as_deref()
            == Some("apple")),
        "the joiner on host e does not serve `a`"
    );
    // d leaves on SIGINT, handing its keys over, and comes back.
    nodes[d].signal("INT");
    let status = nodes[d].wait_exit(within).expect("d leaves");
    assert!(status.success(), "d's leave failed: {}", nodes[d].log());
    assert_eq!(get(&net, e, &nodes[a], "a").as_deref(), Some("apple"));
    nodes[d] = net.node(d, Some(&nodes[a]));
    assert!(
        wait_until(within, || get(&net, d, &nodes[d], "c").as_deref()
            == Some("crayon")),
        "d does not serve again after rejoining"
    );

    // Partition {a, b, c} | {d, e} and write on both sides.
    net.trunk(false);
    let mut acknowledged = vec![("c".to_string(), "crayon".to_string())];
    // The majority goes on (once it has dropped d and e, after the failure
    // timeout): every write there must be acknowledged in time.
    assert!(
        put_until(&net, a, &nodes[a], "a", "apricot", within),
        "the majority refused writes"
    );
    acknowledged.push(("a".into(), "apricot".into()));
    for i in 0..10 {
        let (key, value) = (format!("major-{i}"), format!("m{i}"));
        assert!(put_until(&net, b, &nodes[b], &key, &value, within));
        acknowledged.push((key, value));
    }
    // The minority (two of five) cannot make a write quorum on every key,
    // so some of its writes are refused; whatever it does acknowledge must
    // survive the heal like any other acknowledged write.
    let mut refused = 0;
    for i in 0..10 {
        let (key, value) = (format!("minor-{i}"), format!("n{i}"));
        if tool(&net, d, &nodes[e], "storeput", &[&key, &value]).0 == 0 {
            acknowledged.push((key, value));
        } else {
            refused += 1;
        }
    }
    eprintln!("the minority refused {refused} of 10 writes");
    assert!(refused > 0, "a minority of two acknowledged every write");

    // Heal: every node converges on every acknowledged write.
    net.trunk(true);
    for (key, value) in &acknowledged {
        for host in [a, b, c, d, e] {
            assert!(
                wait_until(Duration::from_secs(60), || {
                    get(&net, host, &nodes[host], key).as_deref() == Some(value)
                }),
                "after the heal, host {host} does not read {key} = {value}; logs:\n{}",
                nodes[host].log()
            );
        }
    }
}
