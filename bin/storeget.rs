//! `storeget KEY`: print the value stored at KEY (exit code 1 when absent).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::tools::Session;

/// Print the value stored at KEY in a thrifty-p2p ring, as raw bytes.
/// Exit code 1 when the key is not stored, 2 on any other error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match Session::open(args.peer).and_then(|mut s| s.get(args.key.as_bytes())) {
        Ok(Some(value)) => {
            let mut out = std::io::stdout().lock();
            let mut written = out.write_all(&value);
            // Raw bytes for pipes; a newline only for a person at a terminal.
            if out.is_terminal() {
                written = written.and_then(|()| out.write_all(b"\n"));
            }
            match written.and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("storeget: cannot write the value: {e}");
                    ExitCode::from(2)
                }
            }
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
