//! The Redis side: finding `redis-server`, `redis-cli` and `redis-benchmark`,
//! starting a server on a free port, loading it over RESP, and running and
//! reading redis-benchmark (the secondary Redis column; the primary one is
//! storebench's own RESP client, [`crate::resp`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thrifty_p2p::Result;

use crate::cells::median_figures;
use crate::failed;
use crate::nodes::on_cpus;
use crate::procfs::{CpuSnapshot, ticks};
use crate::results::{Figures, Op};
use crate::settings::BenchConfig;
use crate::wire::{KEY_LEN, key, value_bytes};

/// Why Redis cannot run here, if it cannot.
pub fn redis_missing() -> Option<String> {
    for tool in ["redis-server", "redis-cli", "redis-benchmark"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` was not found"));
        }
    }
    None
}

/// The version `redis-server --version` names, e.g. `7.0.15`.
pub fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
            Some(v.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `n` distinct ports of 127.0.0.1 that were free a moment ago (each bound
/// at once, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?)
}

/// A `redis-server` without persistence on a port of 127.0.0.1, killed on
/// drop.
pub struct RedisProc {
    pub child: Child,
    port: u16,
}

impl RedisProc {
    /// Starts a server on a free port.
    pub fn start(cpus: Option<&str>, log: &Path) -> Result<RedisProc> {
        RedisProc::start_on(free_ports(1)?[0], cpus, log, &[])
    }

    /// Starts a server on `port` with the `extra` arguments, and waits until
    /// it answers `PING`.
    pub fn start_on(
        port: u16,
        cpus: Option<&str>,
        log: &Path,
        extra: &[String],
    ) -> Result<RedisProc> {
        let child = on_cpus(cpus, "redis-server".as_ref())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("cannot start redis-server: {e}")))?;
        let redis = RedisProc { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut pong = [0; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return Ok(redis);
                }
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "redis-server did not answer on port {port}; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `SET key:NNNNNNNNNNNN value` for keys `0..keys`, pipelined (loading only).
    pub fn fill(&self, keys: usize, value: usize) -> Result<()> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let value = value_bytes(value);
        let per_batch = ((4 << 20) / (value.len() + 64)).clamp(1, 1000);
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        for first in (0..keys).step_by(per_batch) {
            let n = per_batch.min(keys - first);
            commands.clear();
            for i in first..first + n {
                let _ = write!(commands, "*3\r\n$3\r\nSET\r\n${KEY_LEN}\r\n");
                commands.extend_from_slice(&key(i));
                let _ = write!(commands, "\r\n${}\r\n", value.len());
                commands.extend_from_slice(&value);
                commands.extend_from_slice(b"\r\n");
            }
            stream.write_all(&commands)?;
            replies.resize(5 * n, 0);
            stream.read_exact(&mut replies)?;
            if replies.chunks(5).any(|r| r != b"+OK\r\n") {
                return Err(failed(format!(
                    "redis-server refused a SET: {}",
                    String::from_utf8_lossy(&replies).trim()
                )));
            }
        }
        Ok(())
    }

    /// One cell with redis-benchmark: a short calibration run sizes `-n` to
    /// last `duration`, then `repeat` runs; the median of each figure. A
    /// `depth` above 1 is its `-P`: it sends that many commands, waits for
    /// all their replies, then sends the next batch (storebench's client
    /// instead refills each slot as its reply comes).
    pub fn cell(
        &self,
        op: Op,
        conns: usize,
        depth: usize,
        value: usize,
        keys: usize,
        config: &BenchConfig,
    ) -> Result<Figures> {
        let load = Load {
            op,
            conns,
            depth,
            value,
            keys,
        };
        let calibration = self.benchmark(&load, if conns * depth == 1 { 2_000 } else { 10_000 })?;
        let n = ((calibration.ops * config.duration.as_secs_f64()) as usize).max(1_000);
        let runs = (0..config.repeat.max(1))
            .map(|_| self.benchmark(&load, n))
            .collect::<Result<Vec<_>>>()?;
        Ok(median_figures(&runs))
    }

    /// One redis-benchmark run, tried again once if it fails (it now and
    /// then aborts a pipelined run with "All clients disconnected").
    fn benchmark(&self, load: &Load, n: usize) -> Result<Figures> {
        self.benchmark_once(load, n)
            .or_else(|_| self.benchmark_once(load, n))
    }

    fn benchmark_once(&self, load: &Load, n: usize) -> Result<Figures> {
        let Load {
            op,
            conns,
            depth,
            value,
            keys,
        } = *load;
        let pid = [self.child.id()];
        let before = CpuSnapshot::take(&pid);
        let output = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-t",
                op.redis_test(),
                "-n",
                &n.to_string(),
                "-c",
                &conns.to_string(),
            ])
            .args([
                "-d",
                &value.to_string(),
                "-r",
                &keys.to_string(),
                "--precision",
                "3",
                "-P",
                &depth.max(1).to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot run redis-benchmark: {e}")))?;
        let after = CpuSnapshot::take(&pid);
        let text = String::from_utf8_lossy(&output.stdout);
        let mut figures = parse_redis_benchmark(&text).ok_or_else(|| {
            failed(format!(
                "could not read redis-benchmark's output ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })?;
        figures.cpu_per_op = Some(ticks(after.servers.saturating_sub(before.servers)) / n as u32);
        figures.client_cpu_per_op =
            Some(ticks(after.client.saturating_sub(before.client)) / n as u32);
        figures.elsewhere = Some(before.elsewhere(&after));
        Ok(figures)
    }
}

/// What one redis-benchmark run does.
struct Load {
    op: Op,
    conns: usize,
    depth: usize,
    value: usize,
    keys: usize,
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the figures of one test from redis-benchmark's default (not `-q`,
/// not `--csv`) output: throughput and p50/p99 from its summary, and p99.9 as
/// the first rung of its percentile ladder at or above 99.9 % (the CSV output
/// has no p99.9).
fn parse_redis_benchmark(text: &str) -> Option<Figures> {
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).collect();
    let ops = lines.iter().find_map(|l| {
        l.strip_prefix("throughput summary: ")?
            .strip_suffix(" requests per second")?
            .parse::<f64>()
            .ok()
    })?;
    let header = lines
        .iter()
        .position(|l| l.starts_with("avg") && l.contains("p50"))?;
    let names: Vec<&str> = lines[header].split_whitespace().collect();
    let values: Vec<f64> = lines[header + 1..]
        .iter()
        .find(|l| !l.is_empty())?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |name: &str| {
        let i = names.iter().position(|n| *n == name)?;
        Some(Duration::from_secs_f64(values.get(i)? / 1e3))
    };
    let p999 = lines.iter().find_map(|l| {
        let (pct, rest) = l.split_once("% <= ")?;
        let pct: f64 = pct.parse().ok()?;
        let ms: f64 = rest.split_whitespace().next()?.parse().ok()?;
        (pct >= 99.9).then(|| Duration::from_secs_f64(ms / 1e3))
    });
    Some(Figures {
        ops,
        p50: at("p50")?,
        p99: at("p99")?,
        p999,
        cpu_per_op: None,
        client_cpu_per_op: None,
        elsewhere: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_output_gives_throughput_and_percentiles() {
        let text = "====== GET ======\r  20000 requests completed in 0.45 seconds\n\
            Latency by percentile distribution:\n\
            0.000% <= 0.151 milliseconds (cumulative count 1)\n\
            50.000% <= 0.567 milliseconds (cumulative count 10015)\n\
            99.805% <= 8.591 milliseconds (cumulative count 19961)\n\
            99.902% <= 8.879 milliseconds (cumulative count 19981)\n\
            100.000% <= 9.183 milliseconds (cumulative count 20000)\n\
            Summary:\n  throughput summary: 30349.01 requests per second\n\
            latency summary (msec):\n\
            avg       min       p50       p95       p99       max\n\
            1.135     0.160     0.383     4.847     7.783     9.599\n";
        let f = parse_redis_benchmark(text).unwrap();
        assert_eq!(f.ops, 30349.01);
        assert_eq!(f.p50, Duration::from_micros(383));
        assert_eq!(f.p99, Duration::from_micros(7783));
        assert_eq!(f.p999, Some(Duration::from_micros(8879)));
    }
}
