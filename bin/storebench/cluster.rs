//! Redis Cluster beside our 3-node ring: masters started on free ports of
//! 127.0.0.1, joined with `redis-cli --cluster create` and waited for until
//! every one says `cluster_state:ok`; each key's hash slot (CRC16) and the
//! slot map (`CLUSTER SLOTS`), from which a cluster-aware client sends each
//! request straight to its key's master, as our ring-aware client does.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thrifty_p2p::Result;

use crate::failed;
use crate::redis::{RedisProc, free_ports};
use crate::resp::{Value, command};
use crate::target::Target;
use crate::wire::key;

/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// CRC16/XMODEM (polynomial 0x1021, initial 0, no reflection): the checksum
/// Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: CRC16 of the key mod 16384, or of its hash tag
/// (what is between the first `{` and the next `}`, when not empty).
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// The master of every slot, from a `CLUSTER SLOTS` reply (`[start, end,
/// [ip, port, id, ...], replicas...]` per range). An empty ip means the node
/// asked, at `asked`.
pub fn slot_map(reply: &Value, asked: IpAddr) -> std::result::Result<Vec<SocketAddr>, String> {
    let Value::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS answered {reply:?}"));
    };
    let mut masters: Vec<Option<SocketAddr>> = vec![None; SLOTS];
    for range in ranges {
        let bad =
            || format!("a slot range that is not [start, end, [ip, port, ..], ..]: {range:?}");
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Integer(start)), Some(Value::Integer(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let (Some(Value::Bulk(ip)), Some(&Value::Integer(port))) = (master.first(), master.get(1))
        else {
            return Err(bad());
        };
        let ip = match std::str::from_utf8(ip) {
            Ok("") => asked,
            Ok(text) => text.parse().map_err(|_| format!("master ip {text:?}"))?,
            Err(_) => return Err(bad()),
        };
        let port = u16::try_from(port).map_err(|_| format!("master port {port}"))?;
        if !(0..=*end).contains(start) || *end >= SLOTS as i64 {
            return Err(format!("slot range {start}-{end}"));
        }
        for slot in &mut masters[*start as usize..=*end as usize] {
            *slot = Some(SocketAddr::new(ip, port));
        }
    }
    masters
        .iter()
        .enumerate()
        .map(|(slot, master)| master.ok_or_else(|| format!("slot {slot} has no master")))
        .collect()
}

/// A Redis Cluster of masters only, on free ports of 127.0.0.1; every
/// server is killed on drop (also when starting fails half-way), and their
/// cluster config files removed.
pub struct RedisCluster {
    masters: Vec<RedisProc>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts `n` masters (on `cpus`), logs and config files in `dir`, joins
    /// them into one cluster and waits until each says `cluster_state:ok`.
    pub fn start(n: usize, cpus: Option<&str>, dir: &Path) -> Result<RedisCluster> {
        std::fs::create_dir_all(dir)?;
        // Each master also needs a port for the cluster bus. Redis's default
        // (its port + 10000) may be taken, or above 65535 for an ephemeral
        // port, so both are chosen free.
        let ports = free_ports(2 * n)?;
        let mut cluster = RedisCluster {
            masters: Vec::with_capacity(n),
            dir: dir.to_path_buf(),
        };
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let config = dir.join(format!("nodes-{port}.conf"));
            let extra = [
                "--cluster-enabled".to_string(),
                "yes".into(),
                "--cluster-config-file".into(),
                config.display().to_string(),
                "--cluster-port".into(),
                bus.to_string(),
                "--dir".into(),
                dir.display().to_string(),
            ];
            let log = dir.join(format!("redis-{port}.log"));
            cluster
                .masters
                .push(RedisProc::start_on(port, cpus, &log, &extra)?);
        }
        cluster.create(&dir.join("cluster-create.log"), Duration::from_secs(60))?;
        cluster.wait_until_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis-cli --cluster create` over the masters, within `timeout`.
    fn create(&self, log: &Path, timeout: Duration) -> Result<()> {
        let mut child = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.masters.iter().map(|m| m.addr().to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("cannot run redis-cli: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                return Err(failed(format!(
                    "redis-cli --cluster create exited with {status}; see {}",
                    log.display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "redis-cli --cluster create did not finish within {timeout:?}; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every master's `CLUSTER INFO` says `cluster_state:ok`.
    fn wait_until_ok(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let is_ok = |master: &RedisProc| -> Result<bool> {
            let mut stream = std::net::TcpStream::connect(master.addr())?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(match command(&mut stream, &[b"CLUSTER", b"INFO"])? {
                Value::Bulk(info) => String::from_utf8_lossy(&info)
                    .lines()
                    .any(|l| l.trim() == "cluster_state:ok"),
                _ => false,
            })
        };
        loop {
            let mut all = true;
            for master in &self.masters {
                all &= is_ok(master)?;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "the Redis Cluster did not reach cluster_state:ok within {timeout:?}; \
                     logs in {}",
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.masters.iter().map(|m| m.pid()).collect()
    }

    /// A cluster-aware client of keys `0..keys`: the slot map is fetched once
    /// (`CLUSTER SLOTS`), and each key's master computed up front, as the
    /// ring-aware client computes each key's owner.
    pub fn target(&self, keys: usize) -> Result<Target> {
        let asked = self.masters[0].addr();
        let mut stream = std::net::TcpStream::connect(asked)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reply = command(&mut stream, &[b"CLUSTER", b"SLOTS"])?;
        let masters_of_slots = slot_map(&reply, asked.ip())
            .map_err(|e| failed(format!("cannot read the slot map of {asked}: {e}")))?;
        let mut nodes: Vec<SocketAddr> = masters_of_slots.clone();
        nodes.sort();
        nodes.dedup();
        let owners = (0..keys)
            .map(|i| {
                let master = masters_of_slots[usize::from(slot(&key(i)))];
                nodes.binary_search(&master).unwrap_or(0) as u8
            })
            .collect();
        Ok(Target::routed(nodes, owners))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Dropping each RedisProc kills it; then their config files go.
        let ports: Vec<u16> = self.masters.iter().map(|m| m.addr().port()).collect();
        self.masters.clear();
        for port in ports {
            let _ = std::fs::remove_file(self.dir.join(format!("nodes-{port}.conf")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn keys_hash_to_the_slots_redis_gives_them() {
        // `CLUSTER KEYSLOT foo` is 12182 (and `bar` 5061, `hello` 866).
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"hello"), 866);
        // And one of the benchmark's keys: `CLUSTER KEYSLOT key:000000000042`.
        assert_eq!(slot(&key(42)), 7803);
    }

    #[test]
    fn a_hash_tag_alone_decides_the_slot() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS as u16);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    /// What a 3-master Redis 7.0 answered to `CLUSTER SLOTS`.
    const SLOTS_REPLY: &[u8] = b"*3\r\n\
        *3\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:17001\r\n$40\r\n89515701b9f489b393a0ddfc22f113353127d910\r\n*0\r\n\
        *3\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:17002\r\n$40\r\nc11d5d40adaa0569db0ce77295c64b7fdac4483c\r\n*0\r\n\
        *3\r\n:10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:17003\r\n$40\r\nd2dadac9134fa49ff763109cbef10b7bfdbd0212\r\n*0\r\n";

    #[test]
    fn the_slot_map_names_each_slots_master() {
        let (len, reply) = Value::parse(SLOTS_REPLY).unwrap().unwrap();
        assert_eq!(len, SLOTS_REPLY.len());
        let map = slot_map(&reply, "127.0.0.1".parse().unwrap()).unwrap();
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(map.len(), SLOTS);
        assert_eq!((map[0], map[5460]), (at(17001), at(17001)));
        assert_eq!((map[5461], map[10922]), (at(17002), at(17002)));
        assert_eq!((map[10923], map[16383]), (at(17003), at(17003)));
        // `foo` is in slot 12182: its master is the third.
        assert_eq!(map[usize::from(slot(b"foo"))], at(17003));
    }

    #[test]
    fn a_slot_map_with_a_hole_or_an_error_is_refused() {
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Integer(0),
            Value::Integer(100),
            Value::Array(vec![Value::Bulk(b"".to_vec()), Value::Integer(7000)]),
        ])]);
        let asked = "127.0.0.1".parse().unwrap();
        assert_eq!(
            slot_map(&partial, asked).unwrap_err(),
            "slot 101 has no master"
        );
        let error = Value::Error("ERR This instance has cluster support disabled".into());
        assert!(slot_map(&error, asked).is_err());
    }
}
