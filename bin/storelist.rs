//! `storelist [--prefix P] [--count]`: the keys of a ring, one a line.

#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;
use ring::RingArgs;

/// List the keys stored in a thrifty-p2p ring, one a line, in the ring's
/// listing order (not sorted). Every member is asked for its copies, so each
/// key is listed once and an erased key not at all; the listing completes
/// with fewer members than the write quorum unreachable. A key is printed as
/// UTF-8, with a backslash, control characters and bytes that are not UTF-8
/// written as escapes (`\\`, `\n`, `\x00`), so one line is always one key.
/// Exit code 2 on any error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Only the keys that start with PREFIX.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    prefix: String,
    /// Print how many keys there are (with --prefix, how many start with
    /// it) instead of the keys.
    #[arg(long)]
    count: bool,
    #[command(flatten)]
    ring: RingArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let prefix = args.prefix.as_bytes();
    let result = args.ring.open().and_then(|mut ring| {
        let mut out = BufWriter::new(io::stdout().lock());
        if args.count {
            let count = ring.count(prefix)?;
            writeln!(out, "{count}").map_err(thrifty_p2p::Error::from)?;
        } else {
            for key in ring.keys(prefix) {
                writeln!(out, "{}", printable(&key?)).map_err(thrifty_p2p::Error::from)?;
            }
        }
        out.flush().map_err(thrifty_p2p::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`storelist | head`) is not an error.
        Err(thrifty_p2p::Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storelist: {e}");
            ExitCode::from(2)
        }
    }
}

/// `key` as one line: UTF-8 as it is, but for escapes of backslashes,
/// control characters and bytes that are not UTF-8.
fn printable(key: &[u8]) -> String {
    let mut line = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                '\t' => line.push_str("\\t"),
                '\r' => line.push_str("\\r"),
                c if c.is_control() && u32::from(c) < 0x80 => {
                    line.push_str(&format!("\\x{:02x}", u32::from(c)));
                }
                c if c.is_control() => line.extend(c.escape_unicode()),
                c => line.push(c),
            }
        }
        for byte in chunk.invalid() {
            line.push_str(&format!("\\x{byte:02x}"));
        }
    }
    line
}
