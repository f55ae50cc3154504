//! What `/proc` says: CPU time used by the servers, the client and every
//! other process, and a process's resident memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use thrifty_p2p::Result;

use crate::failed;

/// CPU ticks (1/100 s, Linux's fixed `USER_HZ`) as a duration.
pub fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// CPU time used so far by the servers under test, and by every other
/// process on the machine that is neither this program nor its child (kernel
/// threads aside), to tell how much other work skewed a measurement.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    pub servers: u64,
    /// This program and its finished children (redis-benchmark runs).
    pub client: u64,
    others: HashMap<u32, u64>,
}

impl CpuSnapshot {
    pub fn take(servers: &[u32]) -> CpuSnapshot {
        let me = std::process::id();
        let mut others = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some((ppid, ticks)) = process_ticks(pid)
                    && pid != me
                    && ppid != me
                    && pid != 2
                    && ppid != 2
                    && !servers.contains(&pid)
                {
                    others.insert(pid, ticks);
                }
            }
        }
        let client = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let rest = stat.get(stat.rfind(')')? + 2..)?.to_string();
                // utime, stime, cutime, cstime: fields 14 to 17.
                Some(
                    rest.split_whitespace()
                        .skip(11)
                        .take(4)
                        .filter_map(|f| f.parse::<u64>().ok())
                        .sum(),
                )
            })
            .unwrap_or(0);
        CpuSnapshot {
            at: Instant::now(),
            client,
            servers: servers
                .iter()
                .filter_map(|&pid| process_ticks(pid))
                .map(|(_, ticks)| ticks)
                .sum(),
            others,
        }
    }

    /// Share of the machine's CPU that other processes used between `self`
    /// and `later` (processes that ended meanwhile are missed).
    pub fn elsewhere(&self, later: &CpuSnapshot) -> f64 {
        let used: u64 = later
            .others
            .iter()
            .map(|(pid, &ticks)| ticks.saturating_sub(self.others.get(pid).copied().unwrap_or(0)))
            .sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = later.at.duration_since(self.at).as_secs_f64() * cores;
        if wall > 0.0 {
            (ticks(used).as_secs_f64() / wall).min(1.0)
        } else {
            0.0
        }
    }
}

/// User plus system CPU ticks (see [`ticks`]) process `pid` has used so far.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    process_ticks(pid)
        .map(|(_, ticks)| ticks)
        .ok_or_else(|| failed(format!("cannot read /proc/{pid}/stat")))
}

/// The parent and the user plus system CPU ticks of process `pid`.
fn process_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // ppid 4, utime 14 and stime 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// Resident memory (`VmRSS`) of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| failed(format!("no VmRSS in /proc/{pid}/status")))
}
