//! Shared by the integration tests: real `location` processes on ephemeral
//! ports (killed on drop), clients to them, and waiting for a condition with a
//! deadline instead of sleeping.

#![allow(dead_code)]

pub mod http;
pub mod raw;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thrifty_p2p::Client;
use thrifty_p2p::ClientOptions;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::wire::conn::{RawClient, connect};

/// A running `location` process.
pub struct NodeProc {
    child: Child,
    /// The node's name on the ring, `127.0.0.1:PORT`.
    pub addr: NodeAddr,
    /// Where it serves HTTP, when started with `--http`.
    pub http: Option<std::net::SocketAddr>,
    log: PathBuf,
}

static NEXT_LOG: AtomicUsize = AtomicUsize::new(0);

fn log_path(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{test}-{}-{n}.log", std::process::id()))
}

impl NodeProc {
    /// A memory figure of the node's process from `/proc/PID/status`
    /// (`VmRSS`, `VmHWM`, `VmPeak`), in bytes.
    pub fn memory(&self, figure: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(figure)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {figure} in /proc/PID/status"));
        kib * 1024
    }

    /// Starts a node on an ephemeral port of 127.0.0.1, joining `seed` if given.
    pub fn start(seed: Option<&NodeAddr>) -> NodeProc {
        Self::start_with(seed, &[])
    }

    /// Like `start`, with extra command-line options.
    pub fn start_with(seed: Option<&NodeAddr>, extra: &[&str]) -> NodeProc {
        let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(seed) = seed {
            args.push(seed.to_string());
        }
        args.push("0".into());
        Self::spawn(&args)
    }

    /// Starts `location` with exactly `args`; it must print its listening line.
    pub fn spawn(args: &[String]) -> NodeProc {
        Self::spawn_in(None, args)
    }

    /// Like `spawn`, inside network namespace `netns` when given (`ip netns
    /// exec` execs the program, so the child is `location` itself).
    pub fn spawn_in(netns: Option<&str>, args: &[String]) -> NodeProc {
        let log = log_path("node");
        let mut child = command_in(netns, env!("CARGO_BIN_EXE_location"))
            .args(args)
            .env("RUST_LOG", "thrifty_p2p=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start location");
        let stdout = child.stdout.take().unwrap();
        // With --http a second line names the HTTP address; it is read
        // before the pipe closes, or the node's print would fail.
        let lines = if args.iter().any(|a| a == "--http") {
            2
        } else {
            1
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let http = (lines == 2).then(|| {
            let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
            line.trim()
                .strip_prefix("http on http://")
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("location {args:?} printed no http line: {line:?}"))
        });
        let Some(name) = line
            .trim()
            .rsplit(" as ")
            .next()
            .filter(|_| line.starts_with("listening on"))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "location {args:?} did not start: stdout {line:?}, log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        NodeProc {
            child,
            addr: name.parse().unwrap(),
            http,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`INT`, `TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A Thrift client connected to this node.
    pub fn client(&self) -> RawClient {
        connect(&self.addr, &ClientOptions::default()).expect("connect to node")
    }

    /// A session for the command-line operations.
    pub fn session(&self) -> Client {
        Client::through(self.addr.clone()).expect("open session")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last lines of {} ({}):", self.addr, self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The members a node reports through `get_all`, as sorted `host:port` strings.
pub fn members_of(node: &NodeAddr) -> Option<Vec<String>> {
    use thrifty_p2p::wire::idl::locator::TLocatorSyncClient;
    let mut client = connect(node, &ClientOptions::default()).ok()?;
    let mut members: Vec<String> = client
        .get_all()
        .ok()?
        .iter()
        .filter_map(thrifty_p2p::wire::convert::addr)
        .map(|a| a.to_string())
        .collect();
    members.sort();
    Some(members)
}

/// A command running `program`, inside network namespace `netns` if given.
pub fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, program]);
            command
        }
    }
}

/// Runs one of the crate's command-line tools; returns (exit code, stdout, stderr).
pub fn run_tool(tool: &str, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    run_tool_in(None, tool, args, stdin)
}

/// Like `run_tool`, inside network namespace `netns` when given.
pub fn run_tool_in(
    netns: Option<&str>,
    tool: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let path = match tool {
        "storeput" => env!("CARGO_BIN_EXE_storeput"),
        "storeget" => env!("CARGO_BIN_EXE_storeget"),
        "storeappend" => env!("CARGO_BIN_EXE_storeappend"),
        "storedel" => env!("CARGO_BIN_EXE_storedel"),
        "storelock" => env!("CARGO_BIN_EXE_storelock"),
        "storeunlock" => env!("CARGO_BIN_EXE_storeunlock"),
        "storelist" => env!("CARGO_BIN_EXE_storelist"),
        "storeprimer" => env!("CARGO_BIN_EXE_storeprimer"),
        "storetest" => env!("CARGO_BIN_EXE_storetest"),
        "storemerge" => env!("CARGO_BIN_EXE_storemerge"),
        "storestat" => env!("CARGO_BIN_EXE_storestat"),
        "location" => env!("CARGO_BIN_EXE_location"),
        other => panic!("unknown tool {other}"),
    };
    let mut child = command_in(netns, path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a seed and `n - 1` nodes joining it, all with `opts`, and waits
/// until every node reports the same `n` members.
pub fn start_ring(n: usize, opts: &[&str]) -> Vec<NodeProc> {
    let mut nodes = vec![NodeProc::start_with(None, opts)];
    for _ in 1..n {
        let joiner = NodeProc::start_with(Some(&nodes[0].addr), opts);
        nodes.push(joiner);
    }
    wait_for_members(&nodes, n);
    nodes
}

/// Waits until every node reports the same `n` members.
pub fn wait_for_members(nodes: &[NodeProc], n: usize) {
    let agreed = wait_until(Duration::from_secs(20), || {
        let views: Vec<_> = nodes.iter().map(|p| members_of(&p.addr)).collect();
        views
            .iter()
            .all(|v| v.as_ref().is_some_and(|m| m.len() == n))
            && views.windows(2).all(|w| w[0] == w[1])
    });
    assert!(agreed, "nodes did not agree on {n} members");
}

/// Writes keys round-robin through `via` until `stop`, retrying each write
/// until acknowledged, counting acknowledgements in `done`; returns the last
/// acknowledged value of every key.
pub fn writer(
    via: NodeAddr,
    keys: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> HashMap<String, String> {
    let mut acked = HashMap::new();
    let mut session: Option<Client> = None;
    let mut round = 0;
    'rounds: loop {
        for i in 0..keys {
            if stop.load(Ordering::Relaxed) && round > 0 {
                break 'rounds;
            }
            let key = format!("key-{i:05}");
            let value = format!("{key}-round-{round}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let s = session.get_or_insert_with(|| Client::through(via.clone()).unwrap());
                match s.put(key.as_bytes(), value.as_bytes()) {
                    Ok(()) => break,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "write of {key} kept failing: {e}"
                        );
                        session = None;
                    }
                }
            }
            acked.insert(key, value);
            done.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
    }
    acked
}

/// Keys whose value read through `via` is not the last acknowledged one.
pub fn lost(via: &NodeAddr, acked: &HashMap<String, String>) -> Vec<String> {
    let mut session = Client::through(via.clone()).unwrap();
    let mut lost: Vec<String> = acked
        .iter()
        .filter(|(k, v)| session.get(k.as_bytes()).ok().flatten().as_deref() != Some(v.as_bytes()))
        .map(|(k, _)| k.clone())
        .collect();
    lost.sort();
    lost
}

/// Prints how many acknowledged writes were lost `what` (a phrase such as
/// "after two kill -9") and fails, naming a few, if any were.
pub fn assert_none_lost(what: &str, lost: &[String]) {
    eprintln!("acknowledged writes lost {what}: {}", lost.len());
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost {what}, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// The arguments `NodeProc::start_with` passes to `location`, with the port
/// chosen by the caller: for restarting a node on the port it had.
pub fn node_args(seed: Option<&NodeAddr>, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Some(seed) = seed {
        args.push(seed.to_string());
    }
    args.push(port.to_string());
    args
}

impl NodeProc {
    /// Starts `location` with exactly `args`, naming it `addr` (the port the
    /// args ask for), and returns at once: the node may not listen yet, let
    /// alone have joined. For tests that talk to a node from the moment its
    /// port accepts connections.
    pub fn spawn_at(args: &[String], addr: NodeAddr) -> NodeProc {
        let log = log_path("node");
        let child = Command::new(env!("CARGO_BIN_EXE_location"))
            .args(args)
            .env("RUST_LOG", "thrifty_p2p=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start location");
        NodeProc {
            child,
            addr,
            http: None,
            log,
        }
    }

    /// Stops the process with SIGSTOP until the returned guard is resumed or
    /// dropped (then SIGCONT), so a failing test leaves no stopped process.
    pub fn pause(&self) -> Paused<'_> {
        self.signal("STOP");
        Paused {
            node: self,
            resumed: false,
        }
    }
}

/// A node stopped by [`NodeProc::pause`]; SIGCONT when resumed or dropped.
pub struct Paused<'a> {
    node: &'a NodeProc,
    resumed: bool,
}

impl Paused<'_> {
    /// Sends SIGCONT.
    pub fn resume(mut self) {
        self.node.signal("CONT");
        self.resumed = true;
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if !self.resumed {
            // No assertion here: this may run while a test is failing.
            let _ = Command::new("kill")
                .args(["-CONT".to_string(), self.node.pid().to_string()])
                .status();
        }
    }
}

/// One counter from a node's `stats`, if it answers.
pub fn stat(node: &NodeAddr, name: &str) -> Option<i64> {
    use thrifty_p2p::wire::idl::diststore::TStoreSyncClient;
    let mut client = connect(node, &ClientOptions::default()).ok()?;
    client.stats().ok()?.get(name).copied()
}

/// Whether every node has no replication queued and no hints kept.
pub fn drained<'a>(nodes: impl IntoIterator<Item = &'a NodeAddr>) -> bool {
    nodes
        .into_iter()
        .all(|n| stat(n, "replication_pending") == Some(0) && stat(n, "hints") == Some(0))
}

/// The preference list of `key` in `via`'s view, owner first.
pub fn replicas_of(via: &NodeAddr, key: &[u8]) -> Option<Vec<NodeAddr>> {
    use thrifty_p2p::wire::idl::locator::TLocatorSyncClient;
    let mut client = connect(via, &ClientOptions::default()).ok()?;
    Some(
        client
            .replicas(key.to_vec(), 3)
            .ok()?
            .iter()
            .filter_map(thrifty_p2p::wire::convert::addr)
            .collect(),
    )
}

/// `node`'s own copy of `key` (`peek`): `None` if the node does not answer,
/// `Some(None)` if it holds nothing, else the entry (a tombstone has no value).
pub fn local_copy(
    node: &NodeAddr,
    key: &[u8],
) -> Option<Option<thrifty_p2p::wire::idl::diststore::Entry>> {
    use thrifty_p2p::wire::idl::diststore::TPeerSyncClient;
    let mut client = connect(node, &ClientOptions::default()).ok()?;
    Some(client.peek(vec![key.to_vec()]).ok()?.into_iter().next())
}

/// `node`'s own copy of `key` once it has one, within 10 s: a write is
/// acknowledged by a majority of its replicas, so the one asked may trail.
pub fn copy_on(node: &NodeAddr, key: &[u8]) -> thrifty_p2p::wire::idl::diststore::Entry {
    let mut copy = None;
    let held = wait_until(Duration::from_secs(10), || {
        copy = local_copy(node, key).flatten();
        copy.is_some()
    });
    assert!(held, "{node} holds no copy of {key:?}");
    copy.expect("held")
}

/// Reads `key` through `via` on a fresh connection.
pub fn read_via(via: &NodeAddr, key: &[u8]) -> thrifty_p2p::Result<Option<Vec<u8>>> {
    Client::through(via.clone())?.get(key)
}

impl NodeProc {
    /// Like `start_with`, but a node that does not start (no listening line
    /// within 30 s) is an error carrying its output, not a panic: for tests
    /// that count failed starts.
    pub fn try_start_with(seed: Option<&NodeAddr>, extra: &[&str]) -> Result<NodeProc, String> {
        let args = node_args(seed, 0, extra);
        let log = log_path("node");
        let mut child = Command::new(env!("CARGO_BIN_EXE_location"))
            .args(&args)
            .env("RUST_LOG", "thrifty_p2p=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start location");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        match line.trim().strip_prefix("listening on ") {
            Some(rest) => Ok(NodeProc {
                child,
                addr: rest.rsplit(" as ").next().unwrap().parse().unwrap(),
                http: None,
                log,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                let last = output.lines().last().unwrap_or_default().to_string();
                Err(format!("location {args:?} did not start: {last}"))
            }
        }
    }
}
