//! `storeput KEY VALUE`: store a value in the ring (`-` reads it from stdin,
//! streaming input longer than one chunk straight to the chunks' owners).

#[path = "progress.rs"]
mod progress;
#[path = "secret.rs"]
mod secret;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use progress::Bar;
use secret::SecretArgs;
use thrifty_p2p::stream::{DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, Options};
use thrifty_p2p::{Client, ClientOptions, ErrorKind, Meta, NodeAddr, WriteOptions};

/// Store VALUE at KEY in a thrifty-p2p ring. Returns once a write quorum of
/// the key's replicas has it (2 of 3 with the nodes' defaults).
///
/// A value longer than one chunk (--chunk-bytes) is stored as chunks, each
/// sent straight to the node that owns it, several at a time, then a small
/// manifest at KEY; `storeget` reassembles it. Standard input is streamed:
/// it is never held whole in memory. While a streamed value is sent, a
/// progress bar is drawn on standard error if it is a terminal (never
/// otherwise).
///
/// With --content-type or --description the value is stored with that
/// metadata (`storeget --info` and `describe` show it); with --create-only
/// it is stored only if KEY holds no value. A value with any of these must
/// fit one chunk.
///
/// Exit code 0 once stored; 1 when --create-only found a value at KEY
/// (nothing changed); 2 on any other error, which says what failed (a write
/// that was not acknowledged may still have been stored: storing again is
/// safe).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// The value; `-` reads it (any bytes, any length) from standard input.
    #[arg(required_unless_present = "file")]
    value: Option<String>,
    /// Read the value from the file at PATH (any bytes, any length), streamed
    /// like standard input, instead of giving VALUE.
    #[arg(long, value_name = "PATH", conflicts_with = "value")]
    file: Option<PathBuf>,
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<NodeAddr>,
    #[command(flatten)]
    secrets: SecretArgs,
    /// Bytes per chunk of a streamed value; a value of at most this size is
    /// stored whole. Must not exceed the nodes' --max-value-bytes (64 MiB by
    /// default).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_BYTES,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CHUNK_BYTES as u64))]
    chunk_bytes: usize,
    /// Store only if KEY holds no value (never written, or deleted); exit 1
    /// if it does, changing nothing. Of concurrent create-only writes of one
    /// key, exactly one succeeds.
    #[arg(long)]
    create_only: bool,
    /// A content type stored with the value (at most 256 bytes).
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// A short description stored with the value (at most 1,024 bytes).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let base = match args.secrets.options() {
        Ok(base) => base,
        Err(e) => {
            eprintln!("storeput: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ClientOptions {
        stream: Options {
            chunk_bytes: args.chunk_bytes,
            ..Options::default()
        },
        ..base
    };
    let (input, size): (Box<dyn Read>, Option<u64>) = match (args.file, args.value) {
        (Some(path), _) => match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((size, file)) => (
                Box::new(BufReader::with_capacity(1 << 20, file)),
                Some(size),
            ),
            Err(e) => {
                eprintln!(
                    "storeput: cannot read {}: {e}; check the path",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        (None, Some(value)) if value == "-" => (Box::new(std::io::stdin().lock()), stdin_size()),
        (None, Some(value)) => {
            let size = value.len() as u64;
            (
                Box::new(std::io::Cursor::new(value.into_bytes())),
                Some(size),
            )
        }
        (None, None) => unreachable!("clap requires VALUE unless --file is given"),
    };
    let write = WriteOptions {
        create_only: args.create_only,
        meta: Meta {
            content_type: args.content_type,
            description: args.description,
        },
        fence: None,
    };
    if write != WriteOptions::default() {
        return put_with(args.peer, options, &args.key, input, &write);
    }
    let bar = Bar::on_stderr(true);
    let result = Client::open(args.peer, options).and_then(|mut ring| {
        ring.put_from_with_progress(&args.key, input, |p| bar.update(p, size))
    });
    bar.finish();
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storeput: {e}");
            ExitCode::from(2)
        }
    }
}

/// A value with options: read whole (it must fit one chunk), then one
/// `store_with`.
fn put_with(
    peer: Option<NodeAddr>,
    options: ClientOptions,
    key: &str,
    input: Box<dyn Read>,
    write: &WriteOptions,
) -> ExitCode {
    let most = options.stream.chunk_bytes;
    let mut value = Vec::new();
    if let Err(e) = input.take(most as u64 + 1).read_to_end(&mut value) {
        eprintln!("storeput: cannot read the value: {e}");
        return ExitCode::from(2);
    }
    if value.len() > most {
        eprintln!(
            "storeput: with --create-only, --content-type or --description the value must fit one chunk ({most} bytes, --chunk-bytes); it is longer"
        );
        return ExitCode::from(2);
    }
    match Client::open(peer, options).and_then(|mut ring| ring.put_with(key, &value, write)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == ErrorKind::Exists => {
            eprintln!("storeput: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("storeput: {e}");
            ExitCode::from(2)
        }
    }
}

/// The size of standard input when it is a regular file (`< file`), for the
/// bar's total; `None` for a pipe or a terminal.
fn stdin_size() -> Option<u64> {
    let meta = std::fs::metadata("/dev/stdin").ok()?;
    meta.is_file().then_some(meta.len())
}
