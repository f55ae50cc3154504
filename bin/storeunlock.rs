//! `storeunlock KEY TOKEN`: give back the lease `storelock` printed.

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::process::ExitCode;

use clap::Parser;
use ring::RingArgs;
use thrifty_p2p::ErrorKind;

/// Give back the lease on KEY whose fencing token is TOKEN (as `storelock`
/// printed it): the key is free for the next `storelock` at once. Exit code
/// 1 when TOKEN is not the key's current lease (a newer one was granted, or
/// it was given back already; nothing changes), 2 on any other error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// The lease's fencing token.
    token: i64,
    #[command(flatten)]
    ring: RingArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = args
        .ring
        .open()
        .and_then(|mut ring| ring.unlock(args.key.as_bytes(), args.token));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storeunlock: {e}");
            ExitCode::from(if e.kind() == ErrorKind::StaleToken {
                1
            } else {
                2
            })
        }
    }
}
