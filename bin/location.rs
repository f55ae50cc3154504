//! `location`: run a ring node. With no arguments, join the local ring found on
//! ports 9900 and up (or start one) and listen on the first free port from 9900.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use thrifty_p2p::auth::{Secret, Secrets};
use thrifty_p2p::config::{MAX_WEIGHT, parse_size};
use thrifty_p2p::tls::Tls;
use thrifty_p2p::{Config, NodeAddr, discover, launch};

/// Run a thrifty-p2p node: a member of a peer-to-peer key-value ring.
///
/// Examples:
///   location 9900                   start a new ring on port 9900
///   location localhost:9900 9901    join the ring of localhost:9900, listen on 9901
///   location                        join the local ring on 9900.. or start one
///
/// The node serves the whole Store service (Base, Locator, Store) over Thrift's
/// binary protocol; with --http ADDR also a status page and Prometheus metrics
/// over HTTP. Stop it with Ctrl-C (SIGINT) or SIGTERM: it hands its keys to
/// their new owners before it exits.
///
/// Exit code: 0 after a clean leave (the last member with --data-dir keeps its
/// keys there); 1 when the node could not start or join, or some keys could
/// not be handed over; 2 for a usage error.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// A member of the ring to join (HOST:PORT), then the port to listen on.
    /// With one argument it is the port (a new ring); with none, probe 9900 and up.
    #[arg(value_name = "[PEER] [PORT]", num_args = 0..=2)]
    positional: Vec<String>,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// Host name or IP other members use to reach this node (its name on the
    /// ring). Defaults to the --bind address; required when binding 0.0.0.0.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,

    /// Largest value accepted in one message, in bytes (also the largest
    /// part of an upload in parts; larger values are streamed in parts).
    #[arg(long, default_value_t = Config::default().max_value_bytes)]
    max_value_bytes: usize,

    /// Values of at least this many bytes are stored LZ4-compressed when a
    /// sample of them, and then the whole, compress by at least an eighth
    /// (stored bytes and the ratio: `stats`, `storestat`); 0, the default,
    /// turns compression off (4096 is a good threshold for text-like
    /// values). Reads return the value as written either way.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().compress_above)]
    compress_above: usize,

    /// Most client connections served at once.
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,

    /// Seconds an idle connection stays open.
    #[arg(long, default_value_t = Config::default().idle_timeout.as_secs())]
    idle_timeout: u64,

    /// Seconds within which a message must arrive whole once its first byte
    /// has (a sender trickling bytes cannot hold a connection for ever).
    #[arg(long, value_name = "SECS", default_value_t = Config::default().message_timeout.as_secs())]
    message_timeout: u64,

    /// Seconds within which a client must take a whole reply.
    #[arg(long, value_name = "SECS", default_value_t = Config::default().reply_timeout.as_secs())]
    reply_timeout: u64,

    /// Bytes in flight on the whole node (requests being read, replies being
    /// written); connections wait beyond it. At least twice the largest
    /// message (--max-value-bytes plus room for the key).
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().inflight_bytes)]
    inflight_bytes: usize,

    /// Seconds a leaving node keeps trying to hand its keys over.
    #[arg(long, default_value_t = Config::default().leave_timeout.as_secs())]
    leave_timeout: u64,

    /// Copies of each key, on distinct members (capped by the ring's size).
    #[arg(long, default_value_t = Config::default().replicas)]
    replicas: usize,

    /// Replicas that must store a write before it is acknowledged
    /// [default: a majority of the key's replicas].
    #[arg(long, value_name = "W")]
    write_quorum: Option<usize>,

    /// Replicas that must vouch for their copy in every read, at least (a
    /// read always asks enough to meet every write quorum: 2 with the
    /// defaults; 1 only where one copy does, e.g. --replicas 1).
    #[arg(long, value_name = "R", default_value_t = Config::default().read_quorum)]
    read_quorum: usize,

    /// Seconds within which a member that stopped answering is suspected and
    /// declared dead everywhere (decimals allowed, e.g. 2.5).
    #[arg(long, value_name = "SECS", default_value_t = Config::default().failure_timeout.as_secs_f64())]
    failure_timeout: f64,

    /// Seconds after which a chunk of a large value that no value points at
    /// any more (replaced, deleted, or an upload that never finished) is
    /// erased, giving its memory back. An upload must commit within half of
    /// this (one opened with begin_upload expires then), so keep it above
    /// twice the longest upload.
    #[arg(long, value_name = "SECS", default_value_t = Config::default().chunk_grace.as_secs())]
    chunk_grace: u64,

    /// The most key and value bytes this node holds, e.g. 512M, 4G or
    /// 1048576 (K, M, G, T are powers of 1024). A write that would take it
    /// over fails with FULL (erases always work; nothing is evicted).
    /// Counted as the engine counts its keys and values (stats `bytes`),
    /// not the process's memory: the engine's overhead (about 0.3x in
    /// memory), tombstones and buffers come on top. Handoff and repair are
    /// never refused, so they may go over it. [default: no cap]
    #[arg(long, value_name = "BYTES", value_parser = parse_max_memory)]
    max_memory: Option<u64>,

    /// This node's weight on the ring, 1 to 64: its share of the keys is
    /// its weight over the sum of all members' weights (give a node with
    /// twice the room weight 2).
    #[arg(long, value_name = "N", default_value_t = Config::default().weight,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WEIGHT)))]
    weight: u32,

    /// How old a tombstone (what an erase leaves behind) must be before it
    /// is removed, once every replica holds it: a number with a unit, s, m,
    /// h or d (e.g. 90s, 30m, 12h, 2d; a bare number is seconds). It must
    /// exceed the longest time a member may be away and come back with its
    /// data; a --data-dir node whose data was last used longer ago than this
    /// refuses to start with it.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = duration)]
    tombstone_grace: Duration,

    /// Keep data on disk in DIR (crash-safe); without it, data lives in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,

    /// With --data-dir: fsync every write, so it survives power loss too (slower).
    #[arg(long, requires = "data_dir")]
    fsync: bool,

    /// A file holding the cluster secret: every member must hold the same
    /// one. Node-to-node and ring-changing calls (join, gossip, replication,
    /// die, remove...) are then refused unless the caller proves it, so a
    /// node without it cannot join. Without it the node is open to anyone who
    /// can reach its port (it warns at start).
    #[arg(long, value_name = "FILE", env = "THRIFTY_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,

    /// A file holding the client secret: data calls (get, put, fetch, store,
    /// erase, stats...) are then refused unless the caller proves it (or the
    /// cluster secret). Clients take the same option.
    #[arg(long, value_name = "FILE", env = "THRIFTY_CLIENT_SECRET_FILE")]
    client_secret_file: Option<std::path::PathBuf>,

    /// Serve TLS only and call peers over TLS, presenting this certificate
    /// (PEM; its SANs must hold the host the ring knows this node by).
    /// Needs --tls-key and --tls-ca: every connecting peer and client must
    /// then present a certificate signed by that CA. Clients take the same
    /// options. The --http status server stays plain HTTP.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<std::path::PathBuf>,
    /// The ring's CA certificate (PEM): peers' and clients' certificates
    /// must be signed by it.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<std::path::PathBuf>,
    /// Serve HTTP on ADDR (e.g. 127.0.0.1:9980; port 0 picks one): `/` a
    /// status page (the ring, every member's health and keys), `/metrics`
    /// for Prometheus, `/status.json`. Off by default. The line after
    /// `listening on ...` on standard output is then `http on http://IP:PORT`.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,

    /// Accept the `isolate` call, which cuts the node off from its peers
    /// (for partition tests; never in production).
    #[arg(long, hide = true)]
    fault_injection: bool,
}

/// `--max-memory`: a size (see [`parse_size`]) of at least one byte.
fn parse_max_memory(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(
            "a cap of 0 bytes would refuse every write; leave --max-memory out for no cap".into(),
        ),
        bytes => Ok(bytes),
    }
}

/// A duration as `--tombstone-grace` takes it: a number (decimals allowed)
/// and a unit, s, m, h or d; a bare number is seconds. At least 0.1 s.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "`{text}`: the unit must be s, m, h or d (e.g. 90s, 30m, 12h, 2d)"
            ));
        }
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| {
            format!("`{text}` is not a duration of at least 0.1 s (e.g. 90s, 30m, 12h, 2d)")
        })
}

fn config(args: Args) -> Result<Config, String> {
    let secret = |path: &Option<std::path::PathBuf>| {
        path.as_deref()
            .map(Secret::from_file)
            .transpose()
            .map_err(|e| e.to_string())
    };
    let secrets = Secrets {
        cluster: secret(&args.cluster_secret_file)?,
        client: secret(&args.client_secret_file)?,
    };
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(Tls::from_files(cert, key, ca).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let mut config = Config {
        secrets,
        tls,
        bind: args.bind,
        advertise: args.advertise,
        max_value_bytes: args.max_value_bytes,
        compress_above: args.compress_above,
        max_connections: args.max_connections.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        message_timeout: Duration::from_secs(args.message_timeout.max(1)),
        reply_timeout: Duration::from_secs(args.reply_timeout.max(1)),
        inflight_bytes: args.inflight_bytes,
        leave_timeout: Duration::from_secs(args.leave_timeout),
        replicas: args.replicas,
        write_quorum: args.write_quorum,
        read_quorum: args.read_quorum,
        failure_timeout: Duration::try_from_secs_f64(args.failure_timeout)
            .ok()
            .filter(|t| *t >= Duration::from_millis(100))
            .ok_or("--failure-timeout must be at least 0.1 seconds")?,
        chunk_grace: Duration::from_secs(args.chunk_grace.max(1)),
        max_memory: args.max_memory,
        weight: args.weight,
        tombstone_grace: args.tombstone_grace,
        data_dir: args.data_dir,
        fsync: args.fsync,
        fault_injection: args.fault_injection,
        http: args.http,
        ..Config::default()
    };
    if config.replicas == 0 {
        return Err("--replicas must be at least 1".into());
    }
    if config
        .write_quorum
        .is_some_and(|w| w == 0 || w > config.replicas)
    {
        return Err(format!(
            "--write-quorum must be between 1 and --replicas ({})",
            config.replicas
        ));
    }
    if config.read_quorum == 0 || config.read_quorum > config.replicas {
        return Err(format!(
            "--read-quorum must be between 1 and --replicas ({})",
            config.replicas
        ));
    }
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| format!("`{text}` is not a port (0-65535); see `location --help`"))
    };
    match args.positional.as_slice() {
        [] => {
            config.seed = discover::find_node("localhost").ok();
            config.port = discover::free_port(config.bind).map_err(|e| e.to_string())?;
        }
        [only] => config.port = port(only)?,
        [peer, own] => {
            config.seed = Some(peer.parse::<NodeAddr>().map_err(|e| e.to_string())?);
            config.port = port(own)?;
        }
        _ => return Err("too many arguments; see `location --help`".into()),
    }
    Ok(config)
}

/// Makes every block of a MiB or more its own mapping, given back to the
/// system when freed. By default glibc raises this threshold to the size of
/// the largest block freed so far (up to 32 MiB), so the node's 8 MiB chunks
/// and large buffers end up in its heaps, and their space stays resident
/// after they are freed. Measured in `tests/stream.rs` (3 nodes, 300 MiB of
/// replaced chunks collected, 60 MiB live): 394 MiB over rest by default,
/// 62 MiB with this (and a peak of 376 MiB instead of 556).
fn give_large_blocks_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    give_large_blocks_back();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("location: {message}");
            return ExitCode::from(2);
        }
    };
    // The handler goes in first, so that Ctrl-C while the node starts (or
    // joins) still ends in a graceful leave once it runs.
    let stopper = launch::Stopper::default();
    let on_signal = stopper.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.stop()) {
        eprintln!("location: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    let running = match launch::start(config) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("location: {e}");
            return ExitCode::FAILURE;
        }
    };
    stopper.attach(running.node().clone());
    // Tests and scripts read this line to learn the port when started with 0.
    println!(
        "listening on {} as {}",
        running.local_addr(),
        running.addr()
    );
    if let Some(http) = running.http_addr() {
        println!("http on http://{http}");
    }
    let left_behind = running.run_until_stopped();
    if left_behind > 0 {
        eprintln!("location: {left_behind} keys could not be handed over");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
