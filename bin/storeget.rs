//! `storeget KEY`: print the value stored at KEY (exit code 1 when absent),
//! streaming a chunked value from its chunks' owners.

#[path = "progress.rs"]
mod progress;
#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use progress::Bar;
use ring::RingArgs;

/// Print the value stored at KEY in a thrifty-p2p ring, as raw bytes.
/// A value stored as chunks is fetched chunk by chunk, checked, and written
/// as it arrives (never held whole in memory). Meanwhile a progress bar is
/// drawn on standard error if it is a terminal and standard output is not
/// (a bar amid the value's bytes on one screen would garble both).
/// Exit code 1 when the key is not stored, 2 on any other error.
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
    let mut out = std::io::stdout().lock();
    let bar = Bar::on_stderr(!out.is_terminal());
    let result = args.ring.open().and_then(|mut ring| {
        ring.get_to_with_progress(&args.key, &mut out, |p| bar.update(p, None))
    });
    bar.finish();
    match result {
        Ok(Some(_)) => {
            // Raw bytes for pipes; a newline only for a person at a terminal.
            if out.is_terminal()
                && let Err(e) = out.write_all(b"\n").and_then(|()| out.flush())
            {
                eprintln!("storeget: cannot write the value: {e}");
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("storeget: key `{}` is not stored", args.key);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("storeget: {e}");
            ExitCode::from(2)
        }
    }
}
