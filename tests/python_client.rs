//! A Thrift client written by others, Python's thriftpy2, against a 3-node
//! ring. `tests/python/compat.py` builds its client from the IDL files in
//! `thrift/` alone and checks the 2009 methods and the thrifty-p2p additions;
//! `tests/python/large.py` streams large values in and out through the
//! large-value methods alone, with a bounded buffer.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{NodeProc, members_of, wait_until};

/// Fails, saying what to install, unless python3 can import thriftpy2.
fn require_thriftpy2() {
    const INSTALL: &str = "run `pip install -r tests/python/requirements.txt`";
    match Command::new("python3")
        .args(["-c", "import thriftpy2"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import thriftpy2: {INSTALL}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then {INSTALL}"),
    }
}

#[test]
fn a_python_thriftpy2_client_built_from_our_idl_works_against_a_three_node_ring() {
    require_thriftpy2();
    let first = NodeProc::start(None);
    let second = NodeProc::start(Some(&first.addr));
    let third = NodeProc::start(Some(&first.addr));
    let nodes = [&first, &second, &third];
    let settled = wait_until(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| members_of(&n.addr).is_some_and(|m| m.len() == 3))
    });
    assert!(
        settled,
        "the ring did not settle at 3 members: {:?}",
        nodes.map(|n| members_of(&n.addr))
    );

    run_script("compat.py", nodes.map(|n| n.addr.to_string()));
}

/// Runs `tests/python/NAME` with `args`, failing with its output unless it
/// succeeds; prints what it printed (seen with `--nocapture`).
fn run_script(name: &str, args: impl IntoIterator<Item = String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n---- stdout\n{stdout}---- stderr\n{stderr}",
        script.display(),
        out.status
    );
    println!("{stdout}");
}

/// MiB piped into `storeput` and read back by `tests/python/large.py` (a
/// quarter of it uploaded in parts). 300 MiB takes about 11 s here with the
/// debug builds tests use (the script prints MiB/s with `--nocapture`).
const LARGE_MIB: usize = 300;

#[test]
fn a_python_client_streams_large_values_in_and_out_through_the_idl_alone() {
    require_thriftpy2();
    let nodes = common::start_ring(3, &[]);
    let tools = [
        env!("CARGO_BIN_EXE_storeput").to_string(),
        env!("CARGO_BIN_EXE_storeget").to_string(),
        LARGE_MIB.to_string(),
    ];
    run_script(
        "large.py",
        tools
            .into_iter()
            .chain(nodes.iter().map(|n| n.addr.to_string())),
    );
}
