//! `storelock KEY --ttl SECS [--wait SECS]`: take KEY's lease and print its
//! fencing token (exit code 1 when another holder has it).

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ring::RingArgs;
use thrifty_p2p::ErrorKind;

/// Take the lease on KEY in a thrifty-p2p ring and print its fencing token
/// on standard output, then its expiry (wall-clock milliseconds since the
/// epoch) on a second line. The lease lasts --ttl seconds unless given back
/// with `storeunlock KEY TOKEN`, and survives the node that granted it.
/// Exit code 1 when another holder's lease has not expired (after --wait, if
/// given; the message says until when), 2 on any other error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// How long the lease lasts, in seconds (0.001 to 86400).
    #[arg(long)]
    ttl: f64,
    /// Keep trying this many seconds while another holder has it (default:
    /// fail at once).
    #[arg(long)]
    wait: Option<f64>,
    #[command(flatten)]
    ring: RingArgs,
}

fn seconds(what: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{what} is a number of seconds, 0 or more, not {value}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (ttl, wait) = match (
        seconds("ttl", args.ttl),
        args.wait.map(|w| seconds("wait", w)).transpose(),
    ) {
        (Ok(ttl), Ok(wait)) => (ttl, wait),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("storelock: {e}");
            return ExitCode::from(2);
        }
    };
    let result = args
        .ring
        .open()
        .and_then(|mut ring| ring.lock(args.key.as_bytes(), ttl, wait));
    match result {
        Ok(lease) => {
            println!("{}\n{}", lease.token, lease.expires_ms);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storelock: {e}");
            ExitCode::from(if e.kind() == ErrorKind::Held { 1 } else { 2 })
        }
    }
}
