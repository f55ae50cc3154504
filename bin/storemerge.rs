//! `storemerge OTHER`: merge the local ring (or `--peer`'s) with the ring
//! that OTHER belongs to.

#[path = "secret.rs"]
mod secret;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use secret::SecretArgs;
use thrifty_p2p::{Client, NodeAddr};

/// Merge two thrifty-p2p rings into one: the ring of --peer (default: the
/// local ring) and the ring that OTHER is a member of.
///
/// Each side learns the other's members; every new member is checked (it must
/// answer with its own identity) before it serves. Keys then move to their
/// owners in the merged ring, as after a join; where both rings hold a key, the
/// newer write wins. Returns once --peer serves every member of both rings,
/// and prints them. The data moves on in the background: `storestat --wait`
/// says when every copy is in place.
///
/// Exit code 0 once merged; 2 on any error (nothing is undone: a merge that
/// timed out may still complete).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A member of the other ring (HOST:PORT).
    other: NodeAddr,
    /// A node of this ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
    #[command(flatten)]
    secrets: SecretArgs,
    /// How long to wait for the merged ring to form, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = args
        .secrets
        .options()
        .and_then(|base| Client::open(args.peer, base))
        .and_then(|mut ring| ring.merge(&args.other, Duration::from_secs(args.timeout)));
    match result {
        Ok(members) => {
            println!("merged: {} members", members.len());
            for member in members {
                println!("  {member}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storemerge: {e}");
            ExitCode::from(2)
        }
    }
}
