//! `storedel KEY`: delete the value stored at KEY (exit code 1 when there was
//! none), large values included.

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::process::ExitCode;

use clap::Parser;
use ring::RingArgs;

/// Delete the value stored at KEY in a thrifty-p2p ring. The delete is a
/// tombstone written to the key's replicas; it returns once the write quorum
/// holds it, like `storeput`. A large value's chunks are erased later by the
/// nodes that own them (after `location --chunk-grace`).
/// Exit code 1 when the key was not stored (nothing is changed), 2 on any
/// other error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    #[command(flatten)]
    ring: RingArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let key = args.key.as_bytes();
    let result = args.ring.open().and_then(|mut ring| {
        if !ring.contains(key)? {
            return Ok(false);
        }
        ring.delete(key).map(|()| true)
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("storedel: key `{}` is not stored", args.key);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("storedel: {e}");
            ExitCode::from(2)
        }
    }
}
