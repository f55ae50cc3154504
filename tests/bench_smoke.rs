//! `storebench` end to end on tiny settings: it starts its nodes, runs every
//! part and prints a complete report. It checks only that the figures exist,
//! never their values: benchmarks are programs that print figures, not timed
//! assertions.

use std::process::Command;

#[test]
fn storebench_runs_every_part_and_prints_the_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_storebench"))
        .args(["--duration", "0.05", "--warmup", "0.02", "--repeat", "1"])
        .args(["--keys", "200", "--large-keys", "8", "--bulk-mib", "4"])
        .args(["--join-mib", "2", "--memory-keys", "2000"])
        .args(["--no-redis", "--no-results"])
        .output()
        .expect("run storebench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "storebench failed:\n{stderr}");
    for row in [
        "| 1 node | get | 1 | 100 B |",
        "| 1 node | put | 50 | 64 KiB |",
        "| 3 nodes, ring-aware client | get | 50 | 100 B |",
        "| 3 nodes, all via 1 (forwarding) | put | 1 | 64 KiB |",
        "| one 4 MiB value in, streamed as",
        "| one 4 MiB value out, streamed as",
        "| join |",
        "| handoff (SIGINT until exit) |",
        "| memory: 2,000 keys of 100 B |",
        "Targets met: ",
    ] {
        assert!(stdout.contains(row), "no `{row}` in the report:\n{stdout}");
    }
}
