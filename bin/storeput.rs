//! `storeput KEY VALUE`: store a value in the ring (`-` reads it from stdin).

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::tools::Session;

/// Store VALUE at KEY in a thrifty-p2p ring. Returns once the key's owner has it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// The value; `-` reads it (any bytes) from standard input.
    value: String,
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let value = if args.value == "-" {
        let mut value = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut value) {
            eprintln!("storeput: cannot read the value from standard input: {e}");
            return ExitCode::FAILURE;
        }
        value
    } else {
        args.value.into_bytes()
    };
    match Session::open(args.peer).and_then(|mut s| s.put(args.key.as_bytes(), &value)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storeput: {e}");
            ExitCode::from(2)
        }
    }
}
