//! `storetest`: read back the NATO alphabet loaded by `storeprimer`.

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

#[path = "nato.rs"]
mod nato;

use std::process::ExitCode;

use clap::Parser;
use ring::RingArgs;
use thrifty_p2p::{Client, NodeAddr, Result};

use crate::nato::NATO;

/// Read back the NATO alphabet that `storeprimer` loaded, and report every key
/// that did not come back and which node was expected to hold it.
/// Exit code 1 when any key is missing.
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
    let missing = match args.ring.open().and_then(|mut s| check_nato(&mut s)) {
        Ok(missing) => missing,
        Err(e) => {
            eprintln!("storetest: {e}");
            return ExitCode::from(2);
        }
    };
    for m in &missing {
        let owner = m
            .owner
            .as_ref()
            .map_or("no member".into(), ToString::to_string);
        match &m.got {
            None => println!("missing: {} (expected on {owner})", m.key),
            Some(got) => println!("wrong: {} = {got:?} (expected on {owner})", m.key),
        }
    }
    println!(
        "{} of {} keys came back",
        NATO.len() - missing.len(),
        NATO.len()
    );
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One key `storetest` did not get back as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Missing {
    /// The key.
    key: String,
    /// What came back instead (None: absent).
    got: Option<String>,
    /// The member expected to hold it.
    owner: Option<NodeAddr>,
}

/// Reads the NATO alphabet back; returns every key that did not come back.
fn check_nato(session: &mut Client) -> Result<Vec<Missing>> {
    let mut missing = Vec::new();
    for (key, want) in NATO {
        let got = session.get(key)?;
        if got.as_deref() != Some(want.as_bytes()) {
            missing.push(Missing {
                key: key.to_string(),
                got: got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                owner: session.owner(key)?,
            });
        }
    }
    Ok(missing)
}
