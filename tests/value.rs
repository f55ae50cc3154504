//! Values with metadata, create-only writes, appends and compression,
//! checked against real three-node rings (replicas 3): through the Rust
//! client, the raw IDL (the 2009 `get` included) and the command line.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{NodeProc, copy_on, local_copy, run_tool, start_ring, stat, wait_until};
use thrifty_p2p::stream::Options as StreamOptions;
use thrifty_p2p::value::MAGIC;
use thrifty_p2p::wire::idl::diststore::{
    Entry, ErrorKind as WireKind, StoreError, TPeerSyncClient, TStoreSyncClient,
    WriteOptions as Wire,
};
use thrifty_p2p::{Client, ClientOptions, ErrorKind, WriteOptions};

fn through(node: &NodeProc) -> Client {
    Client::through(node.addr.clone()).expect("connect")
}

/// Seed-stable bytes LZ4 cannot compress.
fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The kind of a `StoreError` a raw call failed with.
fn wire_kind(error: thrift::Error) -> Option<WireKind> {
    match error {
        thrift::Error::User(e) => e.downcast_ref::<StoreError>().and_then(|e| e.kind),
        _ => None,
    }
}

#[test]
fn metadata_is_stored_with_the_value_and_a_plain_put_drops_it() {
    let nodes = start_ring(3, &["--replicas", "3"]);
    let options = WriteOptions::default()
        .content_type("text/plain; charset=utf-8")
        .description("a greeting, ünïcode");
    through(&nodes[0])
        .put_with("greeting", "hello", &options)
        .unwrap();
    for node in &nodes {
        let mut client = through(node);
        let info = client.describe("greeting").unwrap();
        assert_eq!(info.meta, options.meta, "describe through {}", node.addr);
        assert_eq!(info.size, 5);
        assert_eq!(
            client.get("greeting").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
    }
    // The raw IDL gives it too.
    let info = nodes[2].client().describe(b"greeting".to_vec()).unwrap();
    assert_eq!(
        info.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(info.description.as_deref(), Some("a greeting, ünïcode"));

    through(&nodes[1]).put("greeting", "bye").unwrap();
    let info = through(&nodes[2]).describe("greeting").unwrap();
    assert_eq!(info.meta, Default::default());
    assert_eq!(info.size, 3);

    // Too long a content type is refused, saying so; nothing is stored.
    let long = WriteOptions::default().content_type("x".repeat(257));
    let error = through(&nodes[0]).put_with("long", "v", &long).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(
        error.to_string().contains("content type is 257 bytes"),
        "{error}"
    );
    assert_eq!(through(&nodes[0]).get("long").unwrap(), None);
    // A write fenced with a token no lease was granted with is refused as
    // stale; nothing is stored (tests/lease.rs covers leases).
    let fenced = Wire::new(None::<bool>, None::<String>, None::<String>, 7i64);
    let error = nodes[0]
        .client()
        .store_with(b"fenced".to_vec(), b"v".to_vec(), fenced)
        .unwrap_err();
    assert_eq!(wire_kind(error), Some(WireKind::STALE_TOKEN));
    assert_eq!(through(&nodes[0]).get("fenced").unwrap(), None);

    // The command line: storeput with metadata, storeget --info.
    let peer = nodes[1].addr.to_string();
    let put = [
        "doc",
        "body",
        "--content-type",
        "text/markdown",
        "--description",
        "notes",
        "--peer",
        &peer,
    ];
    assert_eq!(run_tool("storeput", &put, None).0, 0);
    let (code, out, err) = run_tool("storeget", &["doc", "--info", "--peer", &peer], None);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("size: 4\n"), "{out}");
    assert!(out.contains("content-type: text/markdown\n"), "{out}");
    assert!(out.contains("description: notes\n"), "{out}");
    // Create-only on a key that holds a value: exit 1, nothing changed.
    let again = ["doc", "other", "--create-only", "--peer", &peer];
    let (code, _, err) = run_tool("storeput", &again, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds a value"), "{err}");
    let (_, out, _) = run_tool("storeget", &["doc", "--peer", &peer], None);
    assert_eq!(out, b"body");
}

#[test]
fn of_concurrent_create_only_writes_through_every_node_exactly_one_wins() {
    let nodes = start_ring(3, &["--replicas", "3"]);
    for round in 0..5 {
        let key = format!("once-{round}");
        let writers = 9;
        let barrier = Arc::new(Barrier::new(writers));
        let results: Vec<_> = (0..writers)
            .map(|i| {
                let addr = nodes[i % nodes.len()].addr.clone();
                let (barrier, key) = (barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut client = Client::through(addr).unwrap();
                    let options = WriteOptions::default().create_only();
                    barrier.wait();
                    (i, client.put_with(&key, format!("writer {i}"), &options))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, result) in &results {
            if let Err(e) = result {
                assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
            }
        }
        let stored = through(&nodes[round % 3]).get(&key).unwrap();
        assert_eq!(stored, Some(format!("writer {}", winners[0]).into_bytes()));
    }
    // A tombstone does not count as a value.
    let mut client = through(&nodes[0]);
    client.delete("once-0").unwrap();
    let options = WriteOptions::default().create_only();
    client.put_with("once-0", "again", &options).unwrap();
    let error = through(&nodes[1])
        .put_with("once-0", "third", &options)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Exists);
}

#[test]
fn concurrent_appends_through_every_node_each_land_exactly_once() {
    let nodes = start_ring(3, &["--replicas", "3", "--max-value-bytes", "200000"]);
    // Metadata is kept by an append.
    let options = WriteOptions::default().content_type("text/log");
    through(&nodes[0]).put_with("log", "", &options).unwrap();
    let threads = 6;
    let each = 15;
    let barrier = Arc::new(Barrier::new(threads));
    let sizes: Vec<Vec<u64>> = (0..threads)
        .map(|t| {
            let addr = nodes[t % nodes.len()].addr.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = Client::through(addr).unwrap();
                barrier.wait();
                (0..each)
                    .map(|i| client.append("log", format!("<{t}:{i}>")).unwrap())
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let value = String::from_utf8(through(&nodes[1]).get("log").unwrap().unwrap()).unwrap();
    for (t, sizes) in sizes.iter().enumerate() {
        for i in 0..each {
            let piece = format!("<{t}:{i}>");
            assert_eq!(value.matches(&piece).count(), 1, "{piece} in {value}");
        }
        // A thread's appends land in its order, each making the value longer.
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    }
    let total: usize = (0..threads)
        .flat_map(|t| (0..each).map(move |i| format!("<{t}:{i}>").len()))
        .sum();
    assert_eq!(value.len(), total);
    assert_eq!(*sizes.iter().flatten().max().unwrap(), total as u64);
    let info = through(&nodes[2]).describe("log").unwrap();
    assert_eq!(info.meta.content_type.as_deref(), Some("text/log"));

    // A missing key is created; the command line appends from an argument
    // or standard input and prints the new size.
    let peer = nodes[2].addr.to_string();
    let (code, out, err) = run_tool("storeappend", &["fresh", "abc", "--peer", &peer], None);
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (0, "3"),
        "{err}"
    );
    let (code, out, err) = run_tool("storeappend", &["fresh", "--peer", &peer], Some(b"de"));
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (0, "5"),
        "{err}"
    );
    assert_eq!(through(&nodes[0]).get("fresh").unwrap().unwrap(), b"abcde");

    // Past --max-value-bytes: TOO_LARGE, the value unchanged.
    let mut client = through(&nodes[0]);
    client.put("big", vec![b'x'; 150_000]).unwrap();
    let error = client.append("big", vec![b'y'; 60_000]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TooLarge, "{error}");
    assert_eq!(client.get("big").unwrap().unwrap().len(), 150_000);

    // A streamed value: STREAMED.
    let options = ClientOptions {
        stream: StreamOptions {
            chunk_bytes: 1000,
            ..StreamOptions::default()
        },
        ..ClientOptions::default()
    };
    let mut streaming = Client::with_options(nodes[1].addr.clone(), options).unwrap();
    streaming.put("movie", vec![7u8; 5000]).unwrap();
    let error = through(&nodes[2]).append("movie", "more").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Streamed, "{error}");
}

#[test]
fn compression_is_transparent_and_only_for_values_that_compress() {
    let nodes = start_ring(3, &["--replicas", "3", "--compress-above", "4096"]);
    let text: Vec<u8> = (0..1 << 20)
        .map(|i| b"abcdefghij\n"[i % 11])
        .collect::<Vec<_>>();
    let text = {
        // A compressible 1 MiB value that is not one repeated byte.
        let mut v = text;
        for (i, b) in v.iter_mut().enumerate().step_by(97) {
            *b = (i % 251) as u8;
        }
        v
    };
    let before = stat(&nodes[0].addr, "compressed_raw_bytes").unwrap();
    through(&nodes[0]).put("text", &text).unwrap();
    for node in &nodes {
        let mut client = through(node);
        assert_eq!(client.get("text").unwrap().as_deref(), Some(&text[..]));
        let info = client.describe("text").unwrap();
        assert_eq!(info.size, text.len() as u64);
        let stored = info.stored_bytes.expect("stored compressed");
        assert!(stored < text.len() as u64 / 2, "{stored}");
        // A range from the middle, as any Thrift client reads it.
        let range = client.read_range("text", 500_000, 1000, 0).unwrap();
        assert_eq!(range, &text[500_000..501_000]);
    }
    // Every replica holds the compressed bytes (anti-entropy and
    // replication move them as they are).
    for node in &nodes {
        let copy = local_copy(&node.addr, b"text").unwrap().expect("a copy");
        let stored = copy.value.unwrap();
        assert!(stored.starts_with(&MAGIC) && stored.len() < text.len() / 2);
    }
    let raw = stat(&nodes[0].addr, "compressed_raw_bytes").unwrap() - before;
    let stored = stat(&nodes[0].addr, "compressed_stored_bytes").unwrap();
    assert_eq!(raw, text.len() as i64);
    assert!(stored > 0 && stored < raw / 2, "{stored} of {raw}");

    // An incompressible value is stored as it is.
    let noise = random(1 << 20, 11);
    through(&nodes[1]).put("noise", &noise).unwrap();
    let info = through(&nodes[2]).describe("noise").unwrap();
    assert_eq!(info.stored_bytes, None);
    assert_eq!(through(&nodes[2]).get("noise").unwrap().unwrap(), noise);
    assert!(wait_until(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            local_copy(&n.addr, b"noise")
                .flatten()
                .and_then(|e| e.value)
                .is_some_and(|v| v == noise)
        })
    }));

    // The 2009 `get` of a compressed value returns the plain value.
    let words = "the quick brown fox jumps over the lazy dog\n".repeat(400);
    through(&nodes[2]).put("words", &words).unwrap();
    let copy = copy_on(&nodes[0].addr, b"words");
    assert!(copy.value.unwrap().len() < words.len() / 2);
    for node in &nodes {
        assert_eq!(node.client().get("words".into()).unwrap(), words);
    }
}

#[test]
fn a_value_beginning_with_the_envelope_magic_reads_back_exactly() {
    let nodes = start_ring(3, &["--replicas", "3"]);
    let mut value = MAGIC.to_vec();
    value.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 1, 0, b'x']);
    nodes[0]
        .client()
        .store(b"tricky".to_vec(), value.clone())
        .unwrap();
    for node in &nodes {
        let lookup = node.client().fetch(b"tricky".to_vec()).unwrap();
        assert_eq!(lookup.value.as_deref(), Some(&value[..]));
        assert_eq!(
            through(node).describe("tricky").unwrap().size,
            value.len() as u64
        );
        let range = node
            .client()
            .read_range(b"tricky".to_vec(), 0, 100, 0)
            .unwrap();
        assert_eq!(range, value);
    }
    // Stored enveloped: nine bytes more.
    let copy = copy_on(&nodes[1].addr, b"tricky");
    assert_eq!(copy.value.unwrap().len(), value.len() + 9);
}

#[test]
fn damaged_stored_bytes_are_a_storage_error_naming_the_key_not_a_crash() {
    let nodes = start_ring(3, &["--replicas", "3"]);
    // A peer hands every replica a forged envelope: "LZ4, 1000 raw bytes"
    // over a body that is not LZ4.
    let mut forged = MAGIC.to_vec();
    forged.push(1);
    forged.extend_from_slice(&1000u64.to_be_bytes());
    forged.extend_from_slice(&[0xff; 40]);
    for node in &nodes {
        let entry = Entry::new(b"forged".to_vec(), forged.clone(), 1i64, 1i32);
        node.client().absorb(vec![entry]).unwrap();
    }
    // And one that claims a raw size of 2^40 bytes.
    let mut huge = MAGIC.to_vec();
    huge.push(1);
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[0; 40]);
    for node in &nodes {
        let entry = Entry::new(b"huge".to_vec(), huge.clone(), 1i64, 1i32);
        node.client().absorb(vec![entry]).unwrap();
    }
    for key in ["forged", "huge"] {
        let error = nodes[0]
            .client()
            .fetch(key.as_bytes().to_vec())
            .unwrap_err();
        let text = format!("{error:?}");
        assert_eq!(wire_kind(error), Some(WireKind::STORAGE), "{text}");
        assert!(text.contains(&format!("`{key}`")), "{text}");
    }
    // Every node still serves.
    for node in &nodes {
        through(node).put("after", "fine").unwrap();
        assert!(through(node).get("after").unwrap().is_some());
    }
}
