//! Batches (`fetch_many`, `store_many`, `Client::get_many`,
//! `Client::put_many`) against real rings: one outcome per key, the same as
//! a loop over the keys would give, a member killed included.

mod common;

use common::{NodeProc, start_ring};
use thrifty_p2p::stream::MAGIC;
use thrifty_p2p::wire::Conn;
use thrifty_p2p::{Client, ErrorKind};

fn client(node: &NodeProc) -> Client {
    Client::connect(&node.addr.to_string()).unwrap()
}

fn conn(node: &NodeProc) -> Conn {
    Conn::open(&node.addr, &Default::default()).unwrap()
}

fn value_of(i: usize) -> Vec<u8> {
    format!("value {i} ").repeat(1 + i % 7).into_bytes()
}

#[test]
fn put_many_and_get_many_give_one_outcome_per_key_across_a_ring_even_with_a_member_killed() {
    let mut nodes = start_ring(4, &[]);
    let mut ring = client(&nodes[0]);

    let mut items: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
        .map(|i| (format!("k{i}").into_bytes(), value_of(i)))
        .collect();
    // A binary key, an empty value, a value that begins like a manifest
    // and one larger than a chunk: each as `put` would store it.
    items.push((b"\x00\xffbinary".to_vec(), b"b".to_vec()));
    items.push((b"empty".to_vec(), Vec::new()));
    let mut magic = MAGIC.to_vec();
    magic.extend_from_slice(b" not a manifest");
    items.push((b"magic".to_vec(), magic));
    items.push((b"big".to_vec(), vec![5u8; 9 << 20]));
    // Two items for one key: the later one wins.
    items.push((b"twice".to_vec(), b"first".to_vec()));
    items.push((b"twice".to_vec(), b"second".to_vec()));

    let outcomes = ring.put_many(&items);
    assert_eq!(outcomes.len(), items.len());
    for (outcome, (key, _)) in outcomes.iter().zip(&items) {
        assert!(
            outcome.is_ok(),
            "{}: {outcome:?}",
            String::from_utf8_lossy(key)
        );
    }

    let mut keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.clone()).collect();
    keys.push(b"never written".to_vec());
    let check = |ring: &mut Client| {
        let values = ring.get_many(&keys);
        assert_eq!(values.len(), keys.len());
        for (i, (key, value)) in keys.iter().zip(values).enumerate() {
            let value = value.unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(key)));
            let expected = match key.as_slice() {
                b"never written" => None,
                b"twice" => Some(b"second".to_vec()),
                _ => Some(items[i].1.clone()),
            };
            assert!(
                value == expected,
                "{} read back wrong",
                String::from_utf8_lossy(key)
            );
        }
    };
    check(&mut ring);

    // Through the 2009-style path too: every key as `fetch` reads it.
    let mut direct = conn(&nodes[1]);
    for (key, value) in items.iter().take(50) {
        assert_eq!(direct.fetch(key).unwrap().as_ref(), Some(value));
    }

    // A member killed: its keys are read from their other replicas.
    let victim = nodes.remove(2);
    drop(victim);
    let mut ring = client(&nodes[0]);
    check(&mut ring);
}

#[test]
fn a_read_batch_carries_at_most_max_value_bytes_and_the_client_reads_the_rest_alone() {
    // Replies of one batch hold at most 1 MiB of values here.
    let nodes = start_ring(1, &["--max-value-bytes", "1048576"]);
    let mut ring = client(&nodes[0]);
    let keys: Vec<String> = (0..6).map(|i| format!("third{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        ring.put(key, vec![i as u8; 400 << 10]).unwrap();
    }

    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let answered = conn(&nodes[0]).fetch_many(&asked).unwrap();
    let (fitted, full): (Vec<_>, Vec<_>) = answered.iter().partition(|a| a.is_ok());
    assert_eq!(
        fitted.len(),
        2,
        "two 400 KiB values fit in 1 MiB: {answered:?}"
    );
    for refused in full {
        let error = refused.as_ref().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TooLarge);
        assert!(error.to_string().contains("later batch"), "{error}");
    }

    // The client asks again, key by key, for what did not fit.
    for (i, value) in ring.get_many(&keys).into_iter().enumerate() {
        assert_eq!(value.unwrap(), Some(vec![i as u8; 400 << 10]));
    }
}

#[test]
fn batches_over_ten_thousand_keys_are_refused_whole_and_the_node_serves_the_next_call() {
    let nodes = start_ring(1, &[]);
    let mut raw = conn(&nodes[0]);
    let keys: Vec<Vec<u8>> = (0..10_001).map(|i| format!("k{i}").into_bytes()).collect();
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let error = raw.fetch_many(&asked).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(error.to_string().contains("split it"), "{error}");
    let items: Vec<(&[u8], &[u8])> = asked.iter().map(|k| (*k, &b"v"[..])).collect();
    let error = raw.store_many(&items).unwrap_err();
    assert!(error.to_string().contains("split it"), "{error}");
    // Exactly the limit is served.
    let outcomes = raw.store_many(&items[..10_000]).unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(raw.fetch_many(&asked[..10_000]).unwrap().len(), 10_000);

    // The node is unharmed.
    assert_eq!(raw.fetch(b"k7").unwrap().as_deref(), Some(&b"v"[..]));
}
