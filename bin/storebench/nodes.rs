//! The `location` processes under test (on ephemeral ports, killed on drop),
//! the cores servers and client are pinned to, and waiting for a ring to agree.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thrifty_p2p::wire::Conn;
use thrifty_p2p::{ClientOptions, Error, NodeAddr, Result};

use crate::failed;

/// A `location` process on an ephemeral port of 127.0.0.1, killed on drop.
pub struct NodeProc {
    pub child: Child,
    pub addr: NodeAddr,
    pub socket: SocketAddr,
    /// Its HTTP server (`/metrics`), when started with one.
    pub http: Option<SocketAddr>,
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts a node, joining `seed` if given, and reads its first stdout line,
    /// `listening on ADDR as NAME`; with `http`, it also serves HTTP on an
    /// ephemeral port, read from the second line, `http on http://ADDR`.
    pub fn start(
        location: &Path,
        seed: Option<&NodeAddr>,
        replicas: usize,
        cpus: Option<&str>,
        http: bool,
        log: &Path,
    ) -> Result<NodeProc> {
        let mut command = on_cpus(cpus, location.as_os_str());
        command.args(["--bind", "127.0.0.1", "--replicas", &replicas.to_string()]);
        if http {
            command.args(["--http", "127.0.0.1:0"]);
        }
        if let Some(seed) = seed {
            command.arg(seed.to_string());
        }
        let mut child = command
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", location.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let lines = 1 + usize::from(http);
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // At EOF (the node exited) the thread sends empty lines at once.
        let said: Vec<String> = (0..lines)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default())
            .collect();
        let listening = said[0]
            .trim()
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_once(" as "))
            .and_then(|(socket, name)| Some((socket.parse().ok()?, name.parse().ok()?)));
        let http = match said.get(1) {
            None => Some(None),
            Some(line) => line
                .trim()
                .strip_prefix("http on http://")
                .and_then(|a| a.parse().ok())
                .map(Some),
        };
        let (Some((socket, addr)), Some(http)) = (listening, http) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "{} did not start: it printed {said:?}; see {}",
                location.display(),
                log.display()
            )));
        };
        Ok(NodeProc {
            child,
            addr,
            socket,
            http,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!("kill -{name} {} failed", self.pid())))
        }
    }

    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// The node's `/metrics` (Prometheus text), over one short HTTP/1.1
    /// connection; the node must have been started with `http`.
    pub fn metrics(&self) -> Result<Metrics> {
        let Some(http) = self.http else {
            return Err(failed(format!("{} serves no HTTP", self.addr)));
        };
        let mut stream = TcpStream::connect_timeout(&http, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: storebench\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        if !text.starts_with("HTTP/1.1 200") {
            let status = text.lines().next().unwrap_or_default();
            return Err(failed(format!("{http}/metrics answered {status:?}")));
        }
        Ok(Metrics(text))
    }
}

/// A node's `/metrics` as scraped.
pub struct Metrics(String);

impl Metrics {
    /// The value of `series` (name and labels, exactly as the node writes
    /// them, e.g. `thrifty_requests_total{method="fetch"}`); 0 when absent
    /// (a counter not yet counted).
    pub fn sample(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which cores the servers and the client run on (see
/// [`crate::settings::BenchConfig::pin`]).
#[derive(Clone, Debug)]
pub struct Placement {
    pub cores: usize,
    /// `taskset` CPU list of the servers, e.g. `0`.
    pub servers: String,
    /// `taskset` CPU list of the client, e.g. `1`.
    pub client: String,
}

impl Placement {
    /// Pins this process (the client, and the children it starts, unless they
    /// are started elsewhere) to the second half of `cores`. `None` when
    /// there is one core or `taskset` is missing.
    pub fn pin(cores: usize) -> Option<Placement> {
        if cores < 2 {
            return None;
        }
        let half = cores / 2;
        let list = |from: usize, to: usize| {
            if to - from == 1 {
                from.to_string()
            } else {
                format!("{from}-{}", to - 1)
            }
        };
        let placement = Placement {
            cores,
            servers: list(0, half),
            client: list(half, cores),
        };
        let pinned = Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &placement.client,
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        pinned.then_some(placement)
    }
}

/// A command running `program` on `cpus` (through `taskset`, which then
/// replaces itself with the program, keeping the process id), or anywhere.
pub fn on_cpus(cpus: Option<&str>, program: &std::ffi::OsStr) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Waits until every node reports all of them through `get_all`.
pub fn wait_for_ring(nodes: &[&NodeProc], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want: Vec<&NodeAddr> = nodes.iter().map(|n| &n.addr).collect();
    loop {
        let agreed = nodes.iter().all(|node| {
            let Ok(mut conn) = Conn::open(&node.addr, &ClientOptions::default()) else {
                return false;
            };
            let Ok(members) = conn.members() else {
                return false;
            };
            members.len() == want.len() && want.iter().all(|w| members.contains(w))
        });
        if agreed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One admin connection to each of `nodes`, in order.
pub fn connect_all<'a>(nodes: impl IntoIterator<Item = &'a NodeProc>) -> Result<Vec<Conn>> {
    let options = ClientOptions::default();
    (nodes.into_iter())
        .map(|node| Conn::open(&node.addr, &options))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_sample_is_found_by_its_whole_series_name() {
        let metrics = Metrics(
            "HTTP/1.1 200 OK\r\n\r\n\
             thrifty_repaired_keys_total{by=\"read_repair\"} 2\n\
             thrifty_repaired_keys_total{by=\"anti_entropy\"} 3\n\
             thrifty_requests_total{method=\"diff_buckets\"} 17\n"
                .into(),
        );
        assert_eq!(
            metrics.sample(r#"thrifty_repaired_keys_total{by="anti_entropy"}"#),
            3.0
        );
        assert_eq!(
            metrics.sample(r#"thrifty_requests_total{method="diff_buckets"}"#),
            17.0
        );
        assert_eq!(
            metrics.sample(r#"thrifty_requests_total{method="reconcile"}"#),
            0.0
        );
    }
}
