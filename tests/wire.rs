//! The server's promises on the wire, checked with hand-built Thrift messages
//! over plain TCP sockets: both header forms, oneway calls never answered,
//! exceptions that keep the connection in sync, hostile messages that cost only
//! their own connection, the value limit, the idle timeout, the connection cap,
//! negative ports and binary values.
//!
//! Replies are read one byte at a time through an unbuffered protocol, so after
//! a reply the socket is positioned exactly at the next message.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TType,
};
use thrifty_p2p::wire::idl::diststore::{Lookup, TStoreSyncClient};
use thrifty_p2p::wire::idl::locator::TBaseSyncClient;

use common::NodeProc;
use common::raw::{self, bytes_field, call, message};

/// How long a test waits for something it expects to happen.
const PATIENCE: Duration = Duration::from_secs(5);

/// RSS a node may reach while fending off hostile messages.
const RSS_LIMIT: u64 = 200 << 20;

// ---- Building messages ----

/// A strict header for `name`, with nothing after it.
fn header(name: &str, seq: i32) -> Vec<u8> {
    let mut buf = Vec::new();
    TBinaryOutputProtocol::new(&mut buf, true)
        .write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))
        .unwrap();
    buf
}

// ---- Reading replies ----

/// A decoded value, enough for the replies of our IDL.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    I16(i16),
    I32(i32),
    I64(i64),
    Bytes(Vec<u8>),
    Struct(Vec<(i16, Value)>),
    List(Vec<Value>),
}

impl Value {
    fn field(&self, id: i16) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(i, _)| *i == id).map(|(_, v)| v),
            other => panic!("not a struct: {other:?}"),
        }
    }
}

fn read_value(input: &mut dyn TInputProtocol, ty: TType) -> thrift::Result<Value> {
    Ok(match ty {
        TType::I16 => Value::I16(input.read_i16()?),
        TType::I32 => Value::I32(input.read_i32()?),
        TType::I64 => Value::I64(input.read_i64()?),
        TType::String => Value::Bytes(input.read_bytes()?),
        TType::Struct => {
            input.read_struct_begin()?;
            let mut fields = Vec::new();
            loop {
                let field = input.read_field_begin()?;
                if field.field_type == TType::Stop {
                    break;
                }
                let id = field.id.expect("a field id");
                fields.push((id, read_value(input, field.field_type)?));
                input.read_field_end()?;
            }
            input.read_struct_end()?;
            Value::Struct(fields)
        }
        TType::List => {
            let list = input.read_list_begin()?;
            let items = (0..list.size)
                .map(|_| read_value(input, list.element_type))
                .collect::<thrift::Result<_>>()?;
            input.read_list_end()?;
            Value::List(items)
        }
        other => panic!("no reply of our IDL holds a {other:?}"),
    })
}

/// A reply as it came off the wire.
#[derive(Debug)]
struct Reply {
    ident: TMessageIdentifier,
    /// The result struct, or for an exception the TApplicationException.
    body: Value,
    /// Whether the header was strict (versioned).
    strict: bool,
}

/// Remembers the first byte read through it.
struct FirstByte<'a> {
    inner: &'a mut TcpStream,
    first: Option<u8>,
}

impl Read for FirstByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.first.is_none() && n > 0 {
            self.first = Some(buf[0]);
        }
        Ok(n)
    }
}

/// Reads exactly one reply (unbuffered, so nothing after it is consumed).
fn read_reply(socket: &mut TcpStream) -> Reply {
    let mut reader = FirstByte {
        inner: socket,
        first: None,
    };
    let mut input = TBinaryInputProtocol::new(&mut reader, false);
    let ident = input.read_message_begin().expect("a reply header");
    let body = read_value(&mut input, TType::Struct).expect("a reply body");
    input.read_message_end().unwrap();
    let strict = reader.first.expect("a first byte") & 0x80 != 0;
    Reply {
        ident,
        body,
        strict,
    }
}

/// What a socket does next, within a time limit.
#[derive(Debug, PartialEq)]
enum Next {
    /// Bytes arrived.
    Data,
    /// The server closed the connection (end of stream or reset).
    Closed,
    /// Nothing happened before the time limit.
    Silence,
}

fn next_event(socket: &TcpStream, within: Duration) -> Next {
    socket.set_read_timeout(Some(within)).unwrap();
    let next = match socket.peek(&mut [0u8; 1]) {
        Ok(0) => Next::Closed,
        Ok(_) => Next::Data,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Next::Silence
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Next::Closed,
        Err(e) => panic!("reading the socket failed: {e}"),
    };
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    next
}

// ---- Talking to a node ----

fn connect(node: &NodeProc) -> TcpStream {
    raw::connect(node, PATIENCE)
}

fn send(socket: &mut TcpStream, bytes: &[u8]) {
    socket.write_all(bytes).expect("send");
}

/// Asserts that `reply` is a successful reply to call `seq` of `name`.
fn assert_reply(reply: &Reply, name: &str, seq: i32) {
    assert_eq!(
        (
            reply.ident.name.as_str(),
            reply.ident.message_type,
            reply.ident.sequence_number
        ),
        (name, TMessageType::Reply, seq),
        "unexpected reply {reply:?}"
    );
}

/// Pings over `socket` and checks that the very next reply is the ping's.
fn ping(socket: &mut TcpStream, seq: i32) {
    send(socket, &call("ping", seq));
    let reply = read_reply(socket);
    assert_reply(&reply, "ping", seq);
    assert_eq!(reply.body, Value::Struct(vec![]), "a void result is empty");
}

/// Pings the node over a fresh connection.
fn assert_serves(node: &NodeProc) {
    ping(&mut connect(node), 1);
}

// ---- Message forms ----

#[test]
fn strict_and_unversioned_pings_both_get_a_reply_in_their_own_form() {
    let node = NodeProc::start(None);
    let mut socket = connect(&node);

    send(&mut socket, &call("ping", 1));
    let strict = read_reply(&mut socket);
    assert_reply(&strict, "ping", 1);
    assert!(strict.strict);

    send(
        &mut socket,
        &message(false, TMessageType::Call, "ping", 2, |_| Ok(())),
    );
    let old = read_reply(&mut socket);
    assert_reply(&old, "ping", 2);
    assert!(!old.strict, "an unversioned call gets an unversioned reply");
}

#[test]
fn pipelined_calls_are_answered_in_order() {
    let node = NodeProc::start(None);
    let mut socket = connect(&node);
    let mut burst = call("ping", 10);
    burst.extend(message(false, TMessageType::Call, "ping", 11, |_| Ok(())));
    burst.extend(call("service_type", 12));
    send(&mut socket, &burst);
    assert_reply(&read_reply(&mut socket), "ping", 10);
    assert_reply(&read_reply(&mut socket), "ping", 11);
    let reply = read_reply(&mut socket);
    assert_reply(&reply, "service_type", 12);
    assert_eq!(
        reply.body.field(0),
        Some(&Value::Bytes(b"diststore.Store".to_vec()))
    );
}

#[test]
fn oneway_methods_get_no_reply_even_when_sent_as_calls() {
    let node = NodeProc::start(None);
    let put = |kind, value: &'static [u8]| {
        message(true, kind, "put", 3, move |o| {
            bytes_field(o, 1, b"oneway-key")?;
            bytes_field(o, 2, value)
        })
    };
    let cases = [
        (
            "debug sent as oneway",
            message(true, TMessageType::OneWay, "debug", 3, |_| Ok(())),
            None,
        ),
        (
            "debug sent as a call",
            message(true, TMessageType::Call, "debug", 3, |_| Ok(())),
            None,
        ),
        (
            "put sent as oneway",
            put(TMessageType::OneWay, b"first"),
            Some(b"first".as_slice()),
        ),
        (
            "put sent as a call",
            put(TMessageType::Call, b"second"),
            Some(b"second".as_slice()),
        ),
        (
            "unversioned put sent as a call",
            message(false, TMessageType::Call, "put", 3, |o| {
                bytes_field(o, 1, b"oneway-key")?;
                bytes_field(o, 2, b"third")
            }),
            Some(b"third".as_slice()),
        ),
        // The generated code answers a oneway method's bad arguments with an
        // exception; the server must hold it back.
        (
            "put with a malformed key sent as a call",
            message(true, TMessageType::Call, "put", 3, |o| {
                o.write_field_begin(&TFieldIdentifier::new("key", TType::I32, 1))?;
                o.write_i32(5)?;
                o.write_field_end()
            }),
            None,
        ),
        (
            "put without arguments sent as oneway",
            message(true, TMessageType::OneWay, "put", 3, |_| Ok(())),
            None,
        ),
        (
            "store sent as oneway",
            message(true, TMessageType::OneWay, "store", 3, |o| {
                bytes_field(o, 1, b"oneway-key")?;
                bytes_field(o, 2, b"fourth")
            }),
            Some(b"fourth".as_slice()),
        ),
        (
            "an unknown method sent as oneway",
            message(true, TMessageType::OneWay, "no_such_method", 3, |_| Ok(())),
            None,
        ),
    ];
    for (case, oneway, stored) in cases {
        eprintln!("case: {case}");
        let mut socket = connect(&node);
        send(&mut socket, &oneway);
        send(&mut socket, &call("ping", 77));
        let reply = read_reply(&mut socket);
        assert_reply(&reply, "ping", 77);
        // Calls on one connection are handled in order, so a put is applied
        // by the time the ping after it is answered.
        if let Some(value) = stored {
            send(
                &mut socket,
                &message(true, TMessageType::Call, "get", 78, |o| {
                    bytes_field(o, 1, b"oneway-key")
                }),
            );
            let reply = read_reply(&mut socket);
            assert_reply(&reply, "get", 78);
            assert_eq!(
                reply.body.field(0),
                Some(&Value::Bytes(value.to_vec())),
                "{case}"
            );
        }
    }
}

// ---- Errors that keep the connection ----

#[test]
fn an_unknown_method_gets_an_unknown_method_exception_and_the_connection_stays_usable() {
    let node = NodeProc::start(None);
    let mut socket = connect(&node);
    send(
        &mut socket,
        &message(true, TMessageType::Call, "no_such_method", 5, |o| {
            bytes_field(o, 1, b"an argument to skip")
        }),
    );
    let reply = read_reply(&mut socket);
    assert_eq!(reply.ident.message_type, TMessageType::Exception);
    assert_eq!(reply.ident.sequence_number, 5);
    assert_eq!(reply.ident.name, "no_such_method");
    assert_eq!(
        reply.body.field(2),
        Some(&Value::I32(1)),
        "TApplicationException type UNKNOWN_METHOD: {reply:?}"
    );
    ping(&mut socket, 6);
}

#[test]
fn a_call_with_malformed_arguments_gets_an_exception_or_is_closed_and_the_node_keeps_serving() {
    let node = NodeProc::start(None);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "get with an i32 key",
            message(true, TMessageType::Call, "get", 9, |o| {
                o.write_field_begin(&TFieldIdentifier::new("key", TType::I32, 1))?;
                o.write_i32(5)?;
                o.write_field_end()
            }),
        ),
        (
            "get without its key",
            message(true, TMessageType::Call, "get", 9, |_| Ok(())),
        ),
        (
            "fetch with a list key",
            message(true, TMessageType::Call, "fetch", 9, |o| {
                o.write_field_begin(&TFieldIdentifier::new("key", TType::List, 1))?;
                o.write_list_begin(&TListIdentifier::new(TType::I32, 2))?;
                o.write_i32(1)?;
                o.write_i32(2)?;
                o.write_list_end()?;
                o.write_field_end()
            }),
        ),
        (
            "get with a key that is not UTF-8",
            message(true, TMessageType::Call, "get", 9, |o| {
                bytes_field(o, 1, &[0xff, 0xfe, 0x80])
            }),
        ),
    ];
    for (case, bytes) in cases {
        let mut socket = connect(&node);
        send(&mut socket, &bytes);
        match next_event(&socket, PATIENCE) {
            Next::Data => {
                let reply = read_reply(&mut socket);
                assert_eq!(
                    (reply.ident.message_type, reply.ident.sequence_number),
                    (TMessageType::Exception, 9),
                    "{case}: {reply:?}"
                );
                ping(&mut socket, 10);
            }
            Next::Closed => {}
            Next::Silence => panic!("{case}: neither an answer nor a close"),
        }
        assert_serves(&node);
    }
}

// ---- Hostile messages ----

/// `get_all`, but with a list field declaring two billion i32s: 40 bytes.
fn two_billion_element_list() -> Vec<u8> {
    let mut buf = header("get_all", 1);
    buf.extend_from_slice(&[15, 0, 1, 8]); // list field 1 of i32
    buf.extend_from_slice(&2_000_000_000i32.to_be_bytes());
    buf.resize(40, 0);
    buf
}

/// `get` whose key declares a length of 2 GB, followed by a few bytes of it.
fn two_gigabyte_string() -> Vec<u8> {
    let mut buf = header("get", 1);
    buf.extend_from_slice(&[11, 0, 1]);
    buf.extend_from_slice(&i32::MAX.to_be_bytes());
    buf.extend_from_slice(b"the rest never comes");
    buf
}

/// `put` whose args hold a struct in a struct, 100,000 deep.
fn struct_nested_100_000_deep() -> Vec<u8> {
    let depth = 100_000;
    let mut buf = header("put", 1);
    for _ in 0..depth {
        buf.extend_from_slice(&[12, 0, 1]);
    }
    buf.extend(std::iter::repeat_n(0u8, depth + 1));
    buf
}

#[test]
fn hostile_messages_close_their_connection_and_leave_the_node_serving() {
    let node = NodeProc::start(None);
    let mut garbage: Vec<u8> = (0u32..4096)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    garbage[1] = 0x17; // a versioned first byte with a wrong version
    let cases: [(&str, Vec<u8>); 7] = [
        ("a list of two billion elements", two_billion_element_list()),
        ("a string of 2 GB", two_gigabyte_string()),
        ("garbage bytes", garbage),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("a struct nested 100,000 deep", struct_nested_100_000_deep()),
        ("a reply sent to the server", {
            let mut reply = call("ping", 1);
            reply[3] = 2;
            reply
        }),
        ("an unknown message type", {
            let mut bad = call("ping", 1);
            bad[3] = 9;
            bad
        }),
    ];
    assert_eq!(two_billion_element_list().len(), 40);
    for (case, bytes) in cases {
        let mut socket = connect(&node);
        // The server may close before it has read everything; that is the point.
        let _ = socket.write_all(&bytes);
        assert_eq!(
            next_event(&socket, PATIENCE),
            Next::Closed,
            "{case}: the connection should be closed"
        );
        assert_serves(&node);
        let rss = node.memory("VmRSS");
        assert!(rss < RSS_LIMIT, "{case}: node RSS grew to {rss} bytes");
    }
}

#[test]
fn a_wrongly_typed_field_cannot_make_the_node_reserve_the_length_it_declares() {
    // A `get` whose key is sent as an i32 of 1.9 billion: the frame is 23
    // bytes, but code reading the key as a string sees a 1.9 GB length, under
    // the node's 2 GB message limit. VmPeak shows address space reserved even
    // when no page of it is touched; the margin leaves room for the 128 MB
    // reservations of a few new malloc arenas.
    let node = NodeProc::start_with(None, &["--max-value-bytes", "2000000000"]);
    let mut socket = connect(&node);
    ping(&mut socket, 1);
    let peak = node.memory("VmPeak");
    send(
        &mut socket,
        &message(true, TMessageType::Call, "get", 2, |o| {
            o.write_field_begin(&TFieldIdentifier::new("key", TType::I32, 1))?;
            o.write_i32(1_900_000_000)?;
            o.write_field_end()
        }),
    );
    let reply = read_reply(&mut socket);
    assert_eq!(reply.ident.message_type, TMessageType::Exception);
    let grown = node.memory("VmPeak") - peak;
    assert!(
        grown < 1 << 30,
        "a 23-byte message made the node reserve {grown} more bytes"
    );
    ping(&mut socket, 3);
}

// ---- Limits ----

#[test]
fn a_value_larger_than_max_value_bytes_is_refused_and_the_node_keeps_serving() {
    let node = NodeProc::start_with(None, &["--max-value-bytes", "1000"]);
    let mut client = node.client();
    let refused = client.store(b"big".to_vec(), vec![7; 2000]);
    assert!(
        matches!(refused, Err(thrift::Error::User(_))),
        "a 2000-byte value must be refused with a StoreError: {refused:?}"
    );
    assert_eq!(
        client.fetch(b"big".to_vec()).unwrap(),
        Lookup::new(None, None, None)
    );
    client.store(b"fits".to_vec(), vec![7; 1000]).unwrap();
    assert_eq!(
        client.fetch(b"fits".to_vec()).unwrap(),
        Lookup::new(vec![7; 1000], None, None)
    );
    assert_serves(&node);
}

/// A value so large that framing refuses the message before it arrives
/// (past the value limit plus the envelope's room) used to cost the sender a
/// broken pipe ("not open", `BrokenPipeError`): the call is answered with
/// `TOO_LARGE` naming the limit and the option, once the sender is done.
#[test]
fn a_value_past_the_message_limit_is_answered_with_the_limit_not_a_broken_pipe() {
    let node = NodeProc::start_with(None, &["--max-value-bytes", "1000"]);
    let mut session = node.session();
    let refused = session
        .put("huge", vec![7u8; 4 << 20])
        .expect_err("a 4 MiB value must be refused");
    assert_eq!(
        refused.kind(),
        thrifty_p2p::ErrorKind::TooLarge,
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("4194304 bytes")
            && message.contains("limit of 1000 bytes")
            && message.contains("--max-value-bytes"),
        "the refusal must name the size, the limit and the option: {message}"
    );
    assert_eq!(session.get("huge").unwrap(), None);
    assert_serves(&node);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let node = NodeProc::start_with(None, &["--idle-timeout", "1"]);
    let socket = connect(&node);
    assert_eq!(next_event(&socket, PATIENCE), Next::Closed);
    assert_serves(&node);
}

#[test]
fn a_connection_that_stops_reading_its_replies_is_closed_after_the_idle_timeout() {
    // One connection at a time: the second one is served only once the server
    // has given up on the first.
    let node = NodeProc::start_with(None, &["--max-connections", "1", "--idle-timeout", "1"]);
    let mut stalled = connect(&node);
    let mut store = message(true, TMessageType::Call, "store", 1, |o| {
        bytes_field(o, 1, b"big")?;
        bytes_field(o, 2, &vec![b'v'; 1 << 20])
    });
    send(&mut stalled, &store);
    assert_reply(&read_reply(&mut stalled), "store", 1);
    store.clear();
    // 64 MB of replies, far more than the socket buffers hold, never read.
    let fetch = message(true, TMessageType::Call, "fetch", 2, |o| {
        bytes_field(o, 1, b"big")
    });
    send(&mut stalled, &fetch.repeat(64));

    let mut next = connect(&node);
    send(&mut next, &call("ping", 3));
    assert_eq!(
        next_event(&next, PATIENCE),
        Next::Data,
        "a peer that stops reading must not hold its connection forever"
    );
    assert_reply(&read_reply(&mut next), "ping", 3);
}

#[test]
fn a_connection_over_the_cap_is_answered_once_another_closes() {
    let node = NodeProc::start_with(None, &["--max-connections", "2"]);
    let mut first = connect(&node);
    let mut second = connect(&node);
    // Answered pings prove both connections were accepted and hold the permits.
    ping(&mut first, 1);
    ping(&mut second, 1);

    let mut third = connect(&node);
    send(&mut third, &call("ping", 3));
    assert_eq!(
        next_event(&third, Duration::from_millis(300)),
        Next::Silence,
        "a third connection must wait while two are open"
    );

    drop(first);
    assert_eq!(next_event(&third, PATIENCE), Next::Data);
    assert_reply(&read_reply(&mut third), "ping", 3);
    ping(&mut second, 2);
}

// ---- Values on the wire ----

#[test]
fn ports_above_32767_travel_as_negative_i16_and_convert_back() {
    let node = NodeProc::start(None);
    assert!(
        node.addr.port > 32767,
        "the ephemeral port {} is not above 32767; check /proc/sys/net/ipv4/ip_local_port_range",
        node.addr.port
    );
    let expected = Value::Struct(vec![
        (1, Value::Bytes(node.addr.host.clone().into_bytes())),
        (2, Value::I16(node.addr.port as i16)),
    ]);
    let mut socket = connect(&node);

    send(&mut socket, &call("get_all", 1));
    let reply = read_reply(&mut socket);
    assert_reply(&reply, "get_all", 1);
    let Some(Value::List(members)) = reply.body.field(0) else {
        panic!("get_all returns a list: {reply:?}");
    };
    assert_eq!(members, &vec![expected.clone()]);
    let Some(&Value::I16(port)) = expected.field(2) else {
        unreachable!()
    };
    assert!(port < 0, "port {port} should travel negative");
    assert_eq!(port as u16, node.addr.port);

    send(
        &mut socket,
        &message(true, TMessageType::Call, "get_node", 2, |o| {
            bytes_field(o, 1, b"any key")
        }),
    );
    let reply = read_reply(&mut socket);
    assert_reply(&reply, "get_node", 2);
    assert_eq!(reply.body.field(0), Some(&expected));
}

#[test]
fn binary_values_round_trip_and_a_missing_key_has_no_value() {
    let node = NodeProc::start(None);
    let mut client = node.client();
    let every_byte: Vec<u8> = (0..=255).collect();
    let reversed: Vec<u8> = every_byte.iter().rev().copied().collect();
    client.store(reversed.clone(), every_byte.clone()).unwrap();
    assert_eq!(
        client.fetch(reversed).unwrap(),
        Lookup::new(every_byte, None, None),
        "every byte value survives, in key and value"
    );

    client.store(b"empty".to_vec(), Vec::new()).unwrap();
    assert_eq!(
        client.fetch(b"empty".to_vec()).unwrap(),
        Lookup::new(Vec::new(), None, None)
    );
    assert_eq!(
        client.fetch(b"missing".to_vec()).unwrap(),
        Lookup::new(None, None, None)
    );

    // On the wire: an empty value is a present, empty field; a missing one is absent.
    let mut socket = connect(&node);
    let fetch = |key: &'static [u8]| {
        message(true, TMessageType::Call, "fetch", 4, move |o| {
            bytes_field(o, 1, key)
        })
    };
    send(&mut socket, &fetch(b"empty"));
    let reply = read_reply(&mut socket);
    assert_reply(&reply, "fetch", 4);
    assert_eq!(
        reply.body.field(0),
        Some(&Value::Struct(vec![(1, Value::Bytes(vec![]))]))
    );
    send(&mut socket, &fetch(b"missing"));
    let reply = read_reply(&mut socket);
    assert_reply(&reply, "fetch", 4);
    assert_eq!(reply.body.field(0), Some(&Value::Struct(vec![])));
}

/// The 2009 `debug` once wrote a line per member and per key (14 lines for
/// 17 bytes, key names included): now one line, no key names.
#[test]
fn a_debug_call_logs_one_line_without_key_names() {
    let node = NodeProc::start(None);
    let mut client = node.client();
    client
        .store(b"a-private-key-name".to_vec(), b"v".to_vec())
        .unwrap();
    client.debug().unwrap();
    assert!(
        common::wait_until(PATIENCE, || node.log().contains("debug: I am")),
        "no debug line: {}",
        node.log()
    );
    let log = node.log();
    let lines = log.lines().filter(|l| l.contains("debug: ")).count();
    assert_eq!(lines, 1, "{log}");
    assert!(log.contains("1 keys; 1 members"), "{log}");
    assert!(!log.contains("a-private-key-name"), "{log}");
}

#[test]
fn pipelined_calls_on_one_connection_are_answered_in_order_and_take_effect_in_order_per_key() {
    // A 3-node ring: most writes wait for a replica, so later calls are
    // read and started while earlier ones wait.
    let nodes = common::start_ring(3, &[]);
    let mut socket = connect(&nodes[0]);
    let store = |seq: i32, key: &[u8], value: &[u8]| {
        let (key, value) = (key.to_vec(), value.to_vec());
        message(true, TMessageType::Call, "store", seq, move |o| {
            bytes_field(o, 1, &key)?;
            bytes_field(o, 2, &value)
        })
    };
    let fetch = |seq: i32, key: &[u8]| {
        let key = key.to_vec();
        message(true, TMessageType::Call, "fetch", seq, move |o| {
            bytes_field(o, 1, &key)
        })
    };
    // 100 keys, each written twice and read, all sent before any reply is
    // read: replies come in the order of the calls, and each read sees the
    // second write of its key.
    let mut burst = Vec::new();
    let mut expected = Vec::new();
    for k in 0..100 {
        let key = format!("pipelined{k}").into_bytes();
        let seq = k * 3;
        burst.extend(store(seq, &key, b"first"));
        burst.extend(store(seq + 1, &key, format!("second {k}").as_bytes()));
        burst.extend(fetch(seq + 2, &key));
        expected.push((seq, "store", None));
        expected.push((seq + 1, "store", None));
        expected.push((seq + 2, "fetch", Some(format!("second {k}").into_bytes())));
    }
    send(&mut socket, &burst);
    for (seq, name, value) in expected {
        let reply = read_reply(&mut socket);
        assert_reply(&reply, name, seq);
        if let Some(value) = value {
            let lookup = reply.body.field(0).expect("a fetch's success field");
            assert_eq!(lookup.field(1), Some(&Value::Bytes(value)), "seq {seq}");
        }
    }

    // 2009-style: a burst of oneway puts, then a ping, which is answered
    // once every put before it has been applied.
    let mut burst = Vec::new();
    for k in 0..2_000 {
        burst.extend(message(true, TMessageType::OneWay, "put", k, move |o| {
            bytes_field(o, 1, format!("oneway{k}").as_bytes())?;
            bytes_field(o, 2, b"v")
        }));
    }
    send(&mut socket, &burst);
    ping(&mut socket, 9_999);
    let mut ring = thrifty_p2p::Client::connect(&nodes[1].addr.to_string()).unwrap();
    for k in (0..2_000).step_by(97) {
        assert_eq!(
            ring.get(format!("oneway{k}")).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}
