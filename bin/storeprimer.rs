//! `storeprimer`: load the NATO alphabet (A -> Alpha ... Z -> Zulu) into a ring.

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

#[path = "nato.rs"]
mod nato;

use std::process::ExitCode;

use clap::Parser;
use ring::RingArgs;

use crate::nato::NATO;

/// Load the NATO alphabet (A -> Alpha ... Z -> Zulu) into a thrifty-p2p ring;
/// `storetest` reads it back. Exit code 0 once all 26 keys are stored, 2 on
/// any error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ring: RingArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = args.ring.open().and_then(|mut session| {
        for (key, value) in NATO {
            session.put(key, value)?;
            println!("{key} -> {value}");
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storeprimer: {e}");
            ExitCode::from(2)
        }
    }
}
