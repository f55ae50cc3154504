//! `storestat`: the ring at a glance (every member, its share of the ring,
//! keys, bytes and backlogs) and whether it is healthy, for people or, with
//! `--json`, for scripts.

#[path = "secret.rs"]
mod secret;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use secret::SecretArgs;
use thrifty_p2p::status::RingStatus;
use thrifty_p2p::{ClientOptions, NodeAddr};

/// Show every member of a thrifty-p2p ring as one node's table has it (address,
/// status, incarnation), with each member's own counters: its share of the
/// ring, keys and bytes stored (every copy counted), writes queued for other
/// replicas (BACKLOG), hinted keys, keys still to hand over, and whether it is
/// catching up (SYNCING); then a total line and the verdict.
///
/// Healthy: every member serves and answers (none suspect, dead, leaving or
/// unreachable), none joining or catching up, no backlog, hints or handoff,
/// the same members in every node's view, and at least as many serving
/// members as the replicas each key should have (the nodes' --replicas).
/// A member that left on purpose does not count; one that died does until
/// it comes back.
///
/// Exit code 0 when healthy, 1 when not, 2 on any other error (no node to
/// ask, a bad argument).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A node of the ring (HOST:PORT), whose member table is shown. Default:
    /// the first node answering on localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
    #[command(flatten)]
    secrets: SecretArgs,
    /// Print JSON (one object: entry, replicas, nodes, total, healthy,
    /// problems) instead of the table.
    #[arg(long)]
    json: bool,
    /// Poll until the ring is healthy, for at most SECS seconds, then print
    /// the last status (and exit 1 if it is still not healthy). A node that
    /// does not answer yet is retried meanwhile.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    wait: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Short timeouts: a member that does not answer at once is reported as
    // unreachable, rather than holding the whole report up.
    let base = match args.secrets.options() {
        Ok(base) => base,
        Err(e) => {
            eprintln!("storestat: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        answer_timeout: Duration::from_secs(2),
        rpc_timeout: Duration::from_secs(2),
        ..base
    };
    let wait = Duration::try_from_secs_f64(args.wait.max(0.0)).unwrap_or(Duration::MAX);
    let status = match RingStatus::wait_healthy(args.peer, options, wait) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("storestat: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("storestat: cannot write JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        println!("{status}");
    }
    if status.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
