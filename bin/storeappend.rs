//! `storeappend KEY [VALUE]`: append to a value in the ring, atomically at
//! the key's owner.

#[path = "secret.rs"]
mod secret;

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use secret::SecretArgs;
use thrifty_p2p::{Client, NodeAddr};

/// Append VALUE to the value at KEY in a thrifty-p2p ring, atomically at the
/// key's owner: concurrent appends through any nodes each land exactly once.
/// A missing key is created; the value's metadata is kept. Prints the value's
/// new size in bytes.
///
/// Exit code 0 once appended; 2 on any error, which says what failed (a
/// streamed value, a result over the nodes' --max-value-bytes). After an
/// error saying the call broke midway the append may have been applied:
/// read the value (storeget) before appending again.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// The bytes to append; read from standard input when absent (at most
    /// 64 MiB).
    value: Option<String>,
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
    #[command(flatten)]
    secrets: SecretArgs,
}

/// The most standard input read: the nodes' default --max-value-bytes.
const MAX_SUFFIX: u64 = 64 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let options = match args.secrets.options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("storeappend: {e}");
            return ExitCode::from(2);
        }
    };
    let suffix = match args.value {
        Some(value) => value.into_bytes(),
        None => {
            let mut suffix = Vec::new();
            let read = std::io::stdin()
                .lock()
                .take(MAX_SUFFIX + 1)
                .read_to_end(&mut suffix);
            if let Err(e) = read {
                eprintln!("storeappend: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            if suffix.len() as u64 > MAX_SUFFIX {
                eprintln!(
                    "storeappend: standard input is longer than {MAX_SUFFIX} bytes, more than one append takes"
                );
                return ExitCode::from(2);
            }
            suffix
        }
    };
    match Client::open(args.peer, options).and_then(|mut ring| ring.append(&args.key, &suffix)) {
        Ok(size) => {
            println!("{size}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storeappend: {e}");
            ExitCode::from(2)
        }
    }
}
