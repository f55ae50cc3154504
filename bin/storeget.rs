//! `storeget KEY`: print the value stored at KEY (exit code 1 when absent),
//! streaming a chunked value from its chunks' owners.

#[path = "progress.rs"]
mod progress;
#[path = "ring.rs"]
mod ring;
#[path = "secret.rs"]
mod secret;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use progress::Bar;
use ring::RingArgs;

/// Print the value stored at KEY in a thrifty-p2p ring, as raw bytes.
/// A value stored as chunks is fetched chunk by chunk, checked, and written
/// as it arrives (never held whole in memory). Meanwhile a progress bar is
/// drawn on standard error if it is a terminal and standard output is not
/// (a bar amid the value's bytes on one screen would garble both).
/// With --out the value goes to a file instead, which appears only once the
/// whole value arrived and was checked.
/// With --info it prints what KEY holds instead of its bytes: size, whether
/// streamed, the content type and description stored with it, and its
/// stored size when the nodes keep it compressed.
/// Exit code 1 when the key is not stored, 2 on any other error.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The key.
    key: String,
    /// Write the value to PATH (replacing it) rather than standard output:
    /// into PATH.partial first, renamed to PATH once complete, so PATH never
    /// holds half a value (nor is created for a key that is not stored).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Print what KEY holds (size, streamed, content type, description,
    /// stored size) as `name: value` lines, not the value itself.
    #[arg(long, conflicts_with = "out")]
    info: bool,
    #[command(flatten)]
    ring: RingArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=debug shows each call and retry.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if args.info {
        return info(args);
    }
    if let Some(path) = args.out.clone() {
        return to_file(args, &path);
    }
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
        failed => failure(failed, &args.key),
    }
}

/// `storeget KEY --info`: what `describe` says of KEY.
fn info(args: Args) -> ExitCode {
    match args
        .ring
        .open()
        .and_then(|mut ring| ring.describe(&args.key))
    {
        Ok(info) if info.exists => {
            println!("size: {}", info.size);
            println!("streamed: {}", info.streamed_value());
            if let Some(content_type) = &info.meta.content_type {
                println!("content-type: {content_type}");
            }
            if let Some(description) = &info.meta.description {
                println!("description: {description}");
            }
            if let Some(stored) = info.stored_bytes {
                println!("stored-bytes: {stored}");
            }
            ExitCode::SUCCESS
        }
        Ok(_) => failure(Ok(None), &args.key),
        Err(e) => failure(Err(e), &args.key),
    }
}

/// Says why a get that found no value failed: exit code 1 when the key is
/// not stored, 2 for an error.
fn failure(result: thrifty_p2p::Result<Option<u64>>, key: &str) -> ExitCode {
    match result {
        Ok(Some(_)) => ExitCode::SUCCESS,
        Ok(None) => {
            eprintln!("storeget: key `{key}` is not stored");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("storeget: {e}");
            ExitCode::from(2)
        }
    }
}

/// `storeget KEY --out PATH`: the value into PATH.partial, renamed to PATH
/// once whole; the partial file is removed on any failure.
fn to_file(args: Args, path: &Path) -> ExitCode {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = match File::create(&partial) {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "storeget: cannot create {}: {e}; check that its folder exists and is writable",
                partial.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut out = BufWriter::new(file);
    let bar = Bar::on_stderr(true);
    let result = args.ring.open().and_then(|mut ring| {
        let got = ring.get_to_with_progress(&args.key, &mut out, |p| bar.update(p, None))?;
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(got)
    });
    bar.finish();
    let code = match result {
        Ok(Some(_)) => match std::fs::rename(&partial, path) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "storeget: cannot rename {} to {}: {e}",
                    partial.display(),
                    path.display()
                );
                ExitCode::from(2)
            }
        },
        failed => failure(failed, &args.key),
    };
    drop(out);
    let _ = std::fs::remove_file(&partial);
    code
}
