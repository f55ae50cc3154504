//! `storetest`: read back the NATO alphabet loaded by `storeprimer`.

use std::process::ExitCode;

use clap::Parser;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::tools::{NATO, Session, check_nato};

/// Read back the NATO alphabet that `storeprimer` loaded, and report every key
/// that did not come back and which node was expected to hold it.
/// Exit code 1 when any key is missing.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let missing = match Session::open(args.peer).and_then(|mut s| check_nato(&mut s)) {
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
