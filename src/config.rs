//! `Config`: every setting a node runs with, documented, with its default.
//! Binaries fill it from the command line; no module reads argv or the environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::wire::Limits;

/// Largest key accepted, in bytes. Keys travel in every handoff batch and live
/// in memory twice over during a handoff, so they are kept far smaller than values.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The largest weight a member may have (see [`Config::weight`]): 64 times
/// the points of a weight-1 member, so a ring's points (64 KiB per weight
/// unit) stay bounded whatever the member table says.
pub const MAX_WEIGHT: u32 = 64;

/// A size in bytes as people write it: a number, optionally followed by a
/// unit `K`, `M`, `G` or `T` (powers of 1024; `KiB`, `MB`, `kb`... are
/// taken alike), e.g. `1048576`, `512M`, `4G`, `1.5G`.
///
/// ```
/// use thrifty_p2p::config::parse_size;
/// assert_eq!(parse_size("512M"), Ok(512 << 20));
/// assert_eq!(parse_size("1.5k"), Ok(1536));
/// assert!(parse_size("12 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` is not a size: {why}; write bytes as a number with an optional unit \
             K, M, G or T (powers of 1024), e.g. 1048576, 512M or 4G"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad(&format!("unknown unit `{}`", unit.trim()))),
    };
    if number.is_empty() {
        return Err(bad("no number"));
    }
    let scale = (1u64 << shift) as f64;
    let bytes = if number.contains('.') {
        let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
        value * scale
    } else {
        let value: u64 = number.parse().map_err(|_| bad("too large"))?;
        return value
            .checked_mul(1 << shift)
            .ok_or_else(|| bad("too large"));
    };
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// How a node runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The secrets that guard the node's methods (see [`crate::auth`]):
    /// none by default, which leaves every method open, as in 2009.
    pub secrets: crate::auth::Secrets,
    /// TLS (see [`crate::tls`]): when set, the node serves TLS only,
    /// requires a client certificate from its CA, and calls its peers over
    /// TLS. None by default: plain TCP.
    pub tls: Option<crate::tls::Tls>,
    /// Address to listen on. Default 127.0.0.1.
    pub bind: IpAddr,
    /// Port to listen on; 0 picks a free one. Default 9900.
    pub port: u16,
    /// Host other members use to reach this node (its name on the ring).
    /// Default: the bind address, which must then not be a wildcard.
    pub advertise: Option<String>,
    /// A member of an existing ring to join; `None` starts a new ring.
    pub seed: Option<NodeAddr>,
    /// Most client connections served at once; further ones wait in the
    /// listen backlog. Default 1024.
    pub max_connections: usize,
    /// A connection idle this long is closed. Default 5 minutes.
    pub idle_timeout: Duration,
    /// A message must arrive whole within this long of its first byte, or its
    /// connection is closed: a sender trickling a byte now and then would
    /// otherwise hold a connection slot (and its buffered bytes) forever, as
    /// the idle timeout restarts at every byte. Default 60 s, which a 64 MiB
    /// value meets at 1.1 MiB/s; large values stream as 8 MiB chunks anyway.
    pub message_timeout: Duration,
    /// A reply must be taken whole by the client within this long, or its
    /// connection is closed, so a client that stops reading cannot pin a
    /// large reply in memory. Default 60 s.
    pub reply_timeout: Duration,
    /// Bytes in flight on the whole node: requests being read plus replies
    /// waiting to be written, over all connections. A connection that needs
    /// more waits (and stops reading) until others give bytes back, so memory
    /// does not grow with connections × the largest message. Default 1 GiB:
    /// 16 values of the default 64 MiB limit at once, 128 streamed 8 MiB
    /// chunks. Raised to two of the largest messages if set lower (see
    /// [`Config::inflight_budget`]). Each connection's first 64 KiB are
    /// outside it, so small calls never wait on it.
    pub inflight_bytes: usize,
    /// Largest value accepted, in bytes (the size a client sees, however
    /// it is stored). Default 64 MiB.
    pub max_value_bytes: usize,
    /// Values of at least this many bytes are stored LZ4-compressed when
    /// that saves an eighth (see [`crate::value`]); 0 turns compression off.
    /// Default [`crate::value::DEFAULT_COMPRESS_ABOVE`] (0: off).
    pub compress_above: usize,
    /// Most elements in one list, set or map of a message. Default 1,000,000.
    pub max_list_len: usize,
    /// Connect timeout for calls to peers. Default 1 s.
    pub connect_timeout: Duration,
    /// Reply timeout for calls to peers. Default 10 s.
    pub rpc_timeout: Duration,
    /// How often to exchange member tables with a random peer. Default 1 s.
    pub gossip_interval: Duration,
    /// Most entries in one handoff batch. Default 2,000.
    pub handoff_batch_entries: usize,
    /// Most value bytes in one handoff batch. Default 4 MiB.
    pub handoff_batch_bytes: usize,
    /// How long a leaving node keeps trying to hand its keys over before it gives
    /// up and exits anyway. Default 60 s.
    pub leave_timeout: Duration,
    /// Copies of each key, on distinct members (capped by the ring's size).
    /// Default 3.
    pub replicas: usize,
    /// Replicas that must store a write before it is acknowledged; `None` means
    /// a majority of the key's replicas.
    pub write_quorum: Option<usize>,
    /// Replicas that must vouch for their copy in every read, at least. A read
    /// always hears from enough replicas to meet every write quorum (R + W >
    /// N: 2 with the defaults), so this only raises it. Default 1.
    pub read_quorum: usize,
    /// A member that stops answering is suspected and declared dead
    /// everywhere within this long (SWIM, see `swim`). Default 5 s.
    pub failure_timeout: Duration,
    /// How often each node compares its data with the next peer in turn
    /// (anti-entropy). Default 2 s; a ring change starts a full round at once.
    pub anti_entropy_interval: Duration,
    /// A chunk of a streamed value that no manifest names any more (the
    /// value was replaced or deleted, or its upload never finished) is
    /// erased once it is this old (see `node::collect`). An upload commits
    /// only within half of it (the Rust client's own, and one opened with
    /// `begin_upload`, which expires then; see `upload`), so it must exceed
    /// twice the longest upload. Default 10 minutes.
    pub chunk_grace: Duration,
    /// The most key and value bytes this node holds (`location
    /// --max-memory`), as the engine counts them exactly
    /// ([`crate::store::Usage::bytes`]): a client write that would take it
    /// over fails with [`crate::Error::Full`], and nothing is evicted.
    /// Handoff, anti-entropy repair and hints are never refused (refusing
    /// them could lose acknowledged data), so they may take it over; writes
    /// are then refused until erases make room. Not the process's memory:
    /// on top come the engine's overhead (about 0.3x the bytes in memory),
    /// tombstones, buffers in flight (`inflight_bytes`) and the ring.
    /// `None` (the default): no cap.
    pub max_memory: Option<u64>,
    /// This node's weight on the ring (`location --weight`, 1 to
    /// [`MAX_WEIGHT`]): its share of the keys grows in proportion (it gets
    /// weight x [`crate::ring::Ring::DEFAULT_POINTS`] points). Default 1.
    pub weight: u32,
    /// A tombstone (what an erase leaves, so that an older copy offered
    /// later loses to it) is removed once it is this old and every replica
    /// has been seen to hold it (see `node::tombstones`). It must exceed the
    /// longest time a member may stay away and come back with its data, or a
    /// handoff may stay pending: an older copy that comes back after its
    /// tombstone is gone would be taken as new. A disk node whose data was
    /// last written longer ago than this refuses to start with it. Default
    /// 1 day.
    pub tombstone_grace: Duration,
    /// Where to keep data on disk; `None` keeps it in memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// With `data_dir`: fsync every write (survives power loss, slower).
    /// Without it, writes survive a crash of the process but not of the machine.
    pub fsync: bool,
    /// Accept the `isolate` call (tests simulate partitions with it).
    pub fault_injection: bool,
    /// Where to serve HTTP: `/metrics` (Prometheus), `/` (the status page)
    /// and `/status.json`. Port 0 picks a free one. Default `None`: no HTTP,
    /// since it shows the ring to whoever can reach the address.
    pub http: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secrets: crate::auth::Secrets::default(),
            tls: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9900,
            advertise: None,
            seed: None,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(60),
            inflight_bytes: 1 << 30,
            max_value_bytes: 64 << 20,
            compress_above: crate::value::DEFAULT_COMPRESS_ABOVE,
            max_list_len: 1_000_000,
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(10),
            gossip_interval: Duration::from_secs(1),
            handoff_batch_entries: 2_000,
            handoff_batch_bytes: 4 << 20,
            leave_timeout: Duration::from_secs(60),
            replicas: 3,
            write_quorum: None,
            read_quorum: 1,
            failure_timeout: Duration::from_secs(5),
            anti_entropy_interval: Duration::from_secs(2),
            chunk_grace: Duration::from_secs(600),
            max_memory: None,
            weight: 1,
            tombstone_grace: Duration::from_secs(24 * 3600),
            data_dir: None,
            fsync: false,
            fault_injection: false,
            http: None,
        }
    }
}

impl Config {
    /// How long after its version was taken a copy may still be delivered
    /// (the replication queue) or a write coordinated: a quarter of the
    /// tombstone grace, so it cannot land after the tombstone that should
    /// beat it was collected (README, "Consistency model").
    pub fn max_copy_age(&self) -> Duration {
        self.tombstone_grace / 4
    }

    /// The write quorum for a key with `n` replicas.
    pub fn write_quorum_of(&self, n: usize) -> usize {
        self.write_quorum.unwrap_or(n / 2 + 1).clamp(1, n.max(1))
    }

    /// The read quorum for a key with `n` replicas.
    pub fn read_quorum_of(&self, n: usize) -> usize {
        self.read_quorum.clamp(1, n.max(1))
    }

    /// The most key and value bytes one reply of a `peek` or `reconcile` may
    /// carry: what a request may (one value or one batch, and a key), so that
    /// whatever asks can read the answer.
    pub fn max_reply_bytes(&self) -> usize {
        self.max_value_bytes
            .max(self.handoff_batch_bytes)
            .saturating_add(MAX_KEY_BYTES)
    }

    /// The node-wide budget of bytes in flight: `inflight_bytes`, but at least
    /// two of the largest messages, so that one of them never waits for the
    /// whole node to be idle.
    pub fn inflight_budget(&self) -> usize {
        self.inflight_bytes
            .max(self.limits().max_message.saturating_mul(2))
    }

    /// Limits for reading one message: a value, a key and room for the envelope.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message: self
                .max_value_bytes
                .max(self.handoff_batch_bytes)
                .saturating_add(MAX_KEY_BYTES)
                .saturating_add(64 * 1024),
            max_container: self.max_list_len,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_plain_bytes_and_binary_units_in_any_spelling() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4gib"), Ok(4 << 30));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("1.5k"), Ok(1536));
    }

    #[test]
    fn a_bad_size_is_refused_with_what_to_write_instead() {
        for bad in [
            "",
            "M",
            "12x",
            "-5",
            "1..5G",
            "99999999999999999999",
            "16777216T",
        ] {
            let error = parse_size(bad).expect_err(bad);
            assert!(error.contains("is not a size"), "{error}");
            assert!(error.contains("e.g. 1048576, 512M or 4G"), "{error}");
        }
    }
}
