//! A node under hostile clients, over raw sockets: slow input, pipelined
//! floods, trickling connections, large requests never finished and large
//! replies never read. Each test then shows the node still serving others,
//! and measures what the attack cost it: resident memory (`VmRSS`) and, for
//! the CPU attacks, CPU time (`utime + stime`), bounded with wide margins.
//! Run with `--nocapture` to see the figures.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

use common::raw::{self, bytes_field, call, message};
use common::{NodeProc, wait_until};

const MIB: usize = 1 << 20;

/// How long a test waits for something it expects to happen.
const PATIENCE: Duration = Duration::from_secs(30);

// ---- Building messages ----

fn store(seq: i32, key: &[u8], value: &[u8]) -> Vec<u8> {
    message(true, TMessageType::Call, "store", seq, |o| {
        bytes_field(o, 1, key)?;
        bytes_field(o, 2, value)
    })
}

fn fetch(seq: i32, key: &[u8]) -> Vec<u8> {
    message(true, TMessageType::Call, "fetch", seq, |o| {
        bytes_field(o, 1, key)
    })
}

/// The start of a `store` whose value is declared `len` bytes long: header,
/// key, and the value's field header and length; the value's bytes follow.
fn store_prefix(seq: i32, key: &[u8], len: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut out = TBinaryOutputProtocol::new(&mut buf, true);
    out.write_message_begin(&TMessageIdentifier::new("store", TMessageType::Call, seq))
        .unwrap();
    out.write_struct_begin(&TStructIdentifier::new("args"))
        .unwrap();
    bytes_field(&mut out, 1, key).unwrap();
    out.write_field_begin(&TFieldIdentifier::new("value", TType::String, 2))
        .unwrap();
    out.write_i32(len as i32).unwrap();
    out.flush().unwrap();
    buf
}

// ---- Talking to a node ----

fn connect(node: &NodeProc) -> TcpStream {
    raw::connect(node, PATIENCE)
}

/// Reads one reply, skipping its body; returns its name, type and seq id.
fn read_reply(socket: &mut TcpStream) -> (String, TMessageType, i32) {
    let mut input = TBinaryInputProtocol::new(socket, true);
    let ident = input.read_message_begin().expect("a reply header");
    input.skip(TType::Struct).expect("a reply body");
    input.read_message_end().unwrap();
    (ident.name, ident.message_type, ident.sequence_number)
}

fn assert_reply(socket: &mut TcpStream, name: &str, seq: i32) {
    assert_eq!(
        read_reply(socket),
        (name.to_string(), TMessageType::Reply, seq)
    );
}

/// Shows the node serving a new client: a ping, and a small store read back.
fn assert_serves(node: &NodeProc) {
    let mut socket = connect(node);
    socket.write_all(&call("ping", 1)).unwrap();
    assert_reply(&mut socket, "ping", 1);
    socket.write_all(&store(2, b"small", b"value")).unwrap();
    assert_reply(&mut socket, "store", 2);
    socket.write_all(&fetch(3, b"small")).unwrap();
    assert_reply(&mut socket, "fetch", 3);
}

// ---- Measuring the node ----

/// The node's resident memory now.
fn rss(node: &NodeProc) -> usize {
    node.memory("VmRSS") as usize
}

/// The most the node's resident memory has been since [`reset_peak_rss`].
fn peak_rss(node: &NodeProc) -> usize {
    node.memory("VmHWM") as usize
}

/// Starts the node's peak resident memory afresh, from now.
fn reset_peak_rss(node: &NodeProc) {
    std::fs::write(format!("/proc/{}/clear_refs", node.pid()), "5").unwrap();
}

/// The node's CPU time so far, user and system.
fn cpu(node: &NodeProc) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid())).unwrap();
    // Fields after the command name (which is in parentheses): state is
    // field 3, utime 14 and stime 15, in clock ticks, which Linux reports
    // at USER_HZ = 100 on every architecture.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// The node's open sockets: its listener and one per connection.
fn sockets(node: &NodeProc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Waits until the node is up and idle: its socket count settled.
fn idle_sockets(node: &NodeProc) -> usize {
    assert_serves(node);
    let mut last = usize::MAX;
    assert!(wait_until(PATIENCE, || {
        let now = sockets(node);
        let settled = now == last;
        last = now;
        settled
    }));
    last
}

// ---- CPU ----

#[test]
fn a_4_mb_list_trickled_a_kilobyte_a_millisecond_costs_cpu_linear_in_its_size() {
    let node = NodeProc::start(None);
    assert_serves(&node);
    // 200,000 elements of 16 bytes under an unknown method: the scan walks
    // every element and the node answers with one exception.
    let count = 200_000;
    let list = message(true, TMessageType::Call, "trickle", 7, |o| {
        o.write_field_begin(&TFieldIdentifier::new("f", TType::List, 1))?;
        o.write_list_begin(&TListIdentifier::new(TType::String, count))?;
        for n in 0..count {
            o.write_bytes(format!("element {n:>8}").as_bytes())?;
        }
        o.write_list_end()?;
        o.write_field_end()
    });
    assert!(list.len() > 4_000_000);

    let before = cpu(&node);
    let mut socket = connect(&node);
    let started = Instant::now();
    for piece in list.chunks(1024) {
        socket.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let (name, kind, seq) = read_reply(&mut socket);
    assert_eq!(
        (name.as_str(), kind, seq),
        ("trickle", TMessageType::Exception, 7)
    );
    let spent = cpu(&node) - before;
    eprintln!(
        "trickled {} bytes in {:.1?}: node CPU {spent:?}, RSS {:.0} MiB",
        list.len(),
        started.elapsed(),
        mib(rss(&node))
    );
    // Re-walking the list after every kilobyte cost 3.8 s (debug build);
    // resuming costs the reads and one walk, about 0.15 s.
    assert!(spent < Duration::from_millis(1500), "node CPU {spent:?}");
    socket.write_all(&call("ping", 8)).unwrap();
    assert_reply(&mut socket, "ping", 8);
    assert_serves(&node);
    assert!(rss(&node) < 200 * MIB);
}

#[test]
fn pipelined_oneway_pings_after_a_32_mib_store_cost_cpu_linear_in_their_number() {
    let node = NodeProc::start(None);
    assert_serves(&node);
    let pings = 200_000;
    let mut flood = store(1, b"big", &vec![b'v'; 32 * MIB]);
    let ping = message(true, TMessageType::OneWay, "ping", 0, |_| Ok(()));
    for _ in 0..pings {
        flood.extend_from_slice(&ping);
    }
    flood.extend_from_slice(&call("ping", 2));

    let before = cpu(&node);
    let mut socket = connect(&node);
    let mut sender = socket.try_clone().unwrap();
    let started = Instant::now();
    let send = thread::spawn(move || sender.write_all(&flood).unwrap());
    assert_reply(&mut socket, "store", 1);
    // Oneway pings get no reply: the next one is the final call's.
    assert_reply(&mut socket, "ping", 2);
    send.join().unwrap();
    let spent = cpu(&node) - before;
    eprintln!(
        "32 MiB store + {pings} oneway pings in {:.1?}: node CPU {spent:?}, RSS {:.0} MiB",
        started.elapsed(),
        mib(rss(&node))
    );
    // Shifting the rest of the buffer after every ping cost 4.3 s (debug
    // build); moving an offset, about 0.2 s.
    assert!(spent < Duration::from_secs(2), "node CPU {spent:?}");
    assert_serves(&node);
    assert!(rss(&node) < 300 * MIB);
}

// ---- Time ----

#[test]
fn connections_trickling_a_byte_every_two_seconds_are_closed_at_the_message_deadline() {
    // Every connection slot taken by a trickler; the idle timeout never fires.
    let node = NodeProc::start_with(
        None,
        &[
            "--max-connections",
            "4",
            "--idle-timeout",
            "10",
            "--message-timeout",
            "4",
        ],
    );
    let idle = idle_sockets(&node);
    let header = call("ping", 1);
    let trickling: Vec<TcpStream> = (0..4).map(|_| connect(&node)).collect();
    let mut senders: Vec<TcpStream> = trickling.iter().map(|s| s.try_clone().unwrap()).collect();
    let trickler = thread::spawn(move || {
        // One byte per connection every 2 s until the node closes them all.
        for byte in header.iter().cycle() {
            senders.retain_mut(|s| s.write_all(&[*byte]).is_ok());
            if senders.is_empty() {
                return;
            }
            thread::sleep(Duration::from_secs(2));
        }
    });
    assert!(
        wait_until(PATIENCE, || sockets(&node) == idle + 4),
        "the four tricklers hold every slot"
    );

    let mut next = connect(&node);
    next.write_all(&call("ping", 9)).unwrap();
    // Without a message deadline this waits in the backlog for ever.
    assert_reply(&mut next, "ping", 9);
    trickler.join().unwrap();
    for mut socket in trickling {
        let mut byte = [0u8; 1];
        assert!(matches!(socket.read(&mut byte), Ok(0) | Err(_)), "closed");
    }
    drop(next);
    assert_serves(&node);
    eprintln!("tricklers closed; node RSS {:.0} MiB", mib(rss(&node)));
}

// ---- Memory ----

#[test]
fn forty_slow_64_mib_stores_hold_no_more_than_the_inflight_budget() {
    let budget = 256 * MIB;
    let node = NodeProc::start_with(None, &["--inflight-bytes", &budget.to_string()]);
    let idle = idle_sockets(&node);
    let base = rss(&node);
    reset_peak_rss(&node);
    // Each sends all but the last MiB of a 64 MiB value, then stalls. The
    // node reads what its budget allows; the others wait in their sockets.
    let value_len = 64 * MIB;
    let body = Arc::new(vec![b'v'; value_len - MIB]);
    let senders: Vec<_> = (0..40)
        .map(|n| {
            let mut socket = connect(&node);
            socket
                .set_write_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let body = body.clone();
            thread::spawn(move || {
                let key = format!("slow {n}");
                let sent = socket
                    .write_all(&store_prefix(n, key.as_bytes(), value_len))
                    .and_then(|()| socket.write_all(&body));
                (socket, sent.is_ok())
            })
        })
        .collect();
    // Each sender has sent everything or been held back for 3 s.
    let held: Vec<(TcpStream, bool)> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let whole = held.iter().filter(|(_, sent)| *sent).count();
    assert!(wait_until(PATIENCE, || sockets(&node) == idle + 40));
    let used = peak_rss(&node) - base;
    eprintln!(
        "40 slow 64 MiB stores: {whole} sent all they meant to; node RSS peaked \
         {:.0} MiB above its {:.0} MiB at rest (budget {:.0} MiB)",
        mib(used),
        mib(base),
        mib(budget)
    );
    // Without a budget: 40 × 63 MiB, 2.5 GB.
    assert!(
        used < budget + 128 * MIB,
        "node RSS grew {:.0} MiB",
        mib(used)
    );
    assert_serves(&node);
    drop(held);
}

#[test]
fn twenty_clients_that_never_read_a_32_mib_reply_hold_the_budget_only_until_the_reply_deadline() {
    let budget = 160 * MIB;
    let node = NodeProc::start_with(
        None,
        &[
            "--inflight-bytes",
            &budget.to_string(),
            "--reply-timeout",
            "3",
        ],
    );
    let mut writer = connect(&node);
    writer
        .write_all(&store(1, b"big", &vec![b'v'; 32 * MIB]))
        .unwrap();
    assert_reply(&mut writer, "store", 1);
    drop(writer);
    let idle = idle_sockets(&node);
    let base = rss(&node);
    reset_peak_rss(&node);

    let readers: Vec<TcpStream> = (0..20)
        .map(|n| {
            let mut socket = connect(&node);
            socket.write_all(&fetch(n, b"big")).unwrap();
            socket
        })
        .collect();
    // While the replies are pinned, small calls are still served.
    assert_serves(&node);
    // Each reply not taken within 3 s closes its connection: all twenty go
    // (in waves, as the budget lets replies be made), not after the 300 s
    // idle timeout.
    assert!(
        wait_until(Duration::from_secs(45), || sockets(&node) <= idle),
        "{} connections still open",
        sockets(&node) - idle
    );
    let pinned = peak_rss(&node) - base;
    eprintln!(
        "20 unread 32 MiB replies: node RSS peaked {:.0} MiB above its {:.0} MiB \
         at rest (budget {:.0} MiB)",
        mib(pinned),
        mib(base),
        mib(budget)
    );
    // Without a budget: 20 × 32 MiB for the 300 s idle timeout. With it, the
    // budget: each read reserves room for the node's copy of the value and
    // its encoding before making its reply (the margin is the allocator's
    // and the connections' own, not a reply's).
    assert!(
        pinned < budget + 32 * MIB,
        "node RSS grew {:.0} MiB",
        mib(pinned)
    );
    // The budget is whole again: a client that reads gets the value.
    let mut reader = connect(&node);
    reader.write_all(&fetch(30, b"big")).unwrap();
    assert_reply(&mut reader, "fetch", 30);
    drop(readers);
    eprintln!("after the deadline: node RSS {:.0} MiB", mib(rss(&node)));
}

#[test]
fn concurrent_one_byte_range_reads_across_parts_hold_no_more_than_the_inflight_budget() {
    // Each `read_range` of two bytes across a part boundary makes the node
    // read two whole 8 MiB parts: 16 MiB held for a 2-byte answer.
    let budget = 64 * MIB;
    let node = NodeProc::start_with(
        None,
        &[
            "--inflight-bytes",
            &budget.to_string(),
            "--max-value-bytes",
            &(8 * MIB).to_string(),
        ],
    );
    let addr = node.addr.to_string();
    let mut ring = thrifty_p2p::Client::connect(&addr).unwrap();
    ring.put("parts", vec![b'p'; 32 * MIB]).unwrap();
    let id = ring.describe("parts").unwrap().id;
    drop(ring);
    let base = rss(&node);
    reset_peak_rss(&node);
    let readers: Vec<_> = (0..24)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut ring = thrifty_p2p::Client::connect(&addr).unwrap();
                for _ in 0..4 {
                    let bytes = ring.read_range("parts", 8 * MIB as u64 - 1, 2, id).unwrap();
                    assert_eq!(bytes, b"pp");
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    let used = peak_rss(&node) - base;
    eprintln!(
        "24 readers of 2 bytes across two 8 MiB parts: node RSS peaked {:.0} MiB above its \
         {:.0} MiB at rest (budget {:.0} MiB)",
        mib(used),
        mib(base),
        mib(budget)
    );
    // Without the reservation: up to 24 × 16 MiB at once.
    assert!(
        used < budget + 32 * MIB,
        "node RSS grew {:.0} MiB",
        mib(used)
    );
    assert_serves(&node);
}

#[test]
fn concurrent_read_batches_of_large_values_hold_no_more_than_the_inflight_budget() {
    // A `fetch_many` naming six 6 MiB values is a few dozen bytes that make
    // the node read 36 MiB; each batch is charged its bound (three times
    // --max-value-bytes) before it runs.
    let budget = 64 * MIB;
    let node = NodeProc::start_with(
        None,
        &[
            "--inflight-bytes",
            &budget.to_string(),
            "--max-value-bytes",
            &(8 * MIB).to_string(),
        ],
    );
    let addr = node.addr.to_string();
    let mut ring = thrifty_p2p::Client::connect(&addr).unwrap();
    let keys: Vec<String> = (0..6).map(|i| format!("large{i}")).collect();
    for key in &keys {
        ring.put(key, vec![b'v'; 6 * MIB]).unwrap();
    }
    drop(ring);
    let base = rss(&node);
    reset_peak_rss(&node);
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (addr, keys) = (node.addr.clone(), keys.clone());
            thread::spawn(move || {
                let mut conn = thrifty_p2p::wire::Conn::open(&addr, &Default::default()).unwrap();
                let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                for _ in 0..3 {
                    let answered = conn.fetch_many(&asked).unwrap();
                    // One 6 MiB value fits a batch's 8 MiB of values.
                    assert_eq!(answered.iter().filter(|a| a.is_ok()).count(), 1);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    let used = peak_rss(&node) - base;
    eprintln!(
        "16 readers of 6 × 6 MiB batches: node RSS peaked {:.0} MiB above its {:.0} MiB at \
         rest (budget {:.0} MiB)",
        mib(used),
        mib(base),
        mib(budget)
    );
    // Without the reservation: up to 16 × 36 MiB at once.
    assert!(
        used < budget + 32 * MIB,
        "node RSS grew {:.0} MiB",
        mib(used)
    );
    assert_serves(&node);
}
