//! The RESP client of the cells, storebench's own (so Redis is driven by the
//! same load loop as our nodes, not by redis-benchmark's): prebuilt `GET` and
//! `SET` commands whose key is swapped in place, replies read just far enough
//! to find their end and check them; and a blocking [`command`] for setup
//! (`CLUSTER INFO`, `CLUSTER SLOTS`).
//!
//! It speaks RESP2, the protocol a client gets without `HELLO 3`. Replies
//! carry no request id: on one connection Redis answers in the order of the
//! commands, so each reply is matched to the oldest command not yet answered.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use thrifty_p2p::{Error, Result};

use crate::engine::{self, Expect, Socket};
use crate::results::Op;
use crate::wire::{KEY_LEN, key};

/// Longest simple string, error, integer or length line read (Redis's own
/// inline limit is 64 KiB too); a longer one is an error, not a wait.
const MAX_LINE: usize = 64 << 10;
/// Largest bulk string accepted: Redis's default `proto-max-bulk-len`.
const MAX_BULK: usize = 512 << 20;
/// Largest array accepted (setup replies are a few dozen elements).
const MAX_ARRAY: usize = 1 << 20;

/// A command as RESP's array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        bytes.extend_from_slice(arg);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// A whole `GET` or `SET` whose key can be swapped in place.
pub struct Request {
    bytes: Vec<u8>,
    key_at: usize,
}

impl Request {
    pub fn get() -> Request {
        Request::new(&[b"GET", &key(0)])
    }

    pub fn set(value: &[u8]) -> Request {
        Request::new(&[b"SET", &key(0), value])
    }

    fn new(args: &[&[u8]]) -> Request {
        let bytes = encode(args);
        // The key is the second argument: after `*N`, `$3`, the command and
        // `$16`, each line with its CRLF.
        let head = format!("*{}\r\n$3\r\n", args.len()).len() + 5 + format!("${KEY_LEN}\r\n").len();
        debug_assert_eq!(&bytes[head..head + KEY_LEN], &key(0));
        Request {
            bytes,
            key_at: head,
        }
    }
}

impl engine::Request for Request {
    /// RESP has no sequence numbers: `seq` is unused.
    fn set(&mut self, index: usize, _seq: i32) {
        self.bytes[self.key_at..self.key_at + KEY_LEN].copy_from_slice(&key(index));
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One reply, or for an array only its header: the elements follow it as
/// replies of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`: the text, without the CRLF.
    Simple(&'a [u8]),
    /// `-ERR ...`: the text, without the CRLF.
    Error(&'a [u8]),
    Integer(i64),
    /// `$N`: the N bytes.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`: no value.
    Nil,
    /// `*N`: N elements follow.
    Array(usize),
}

/// The line at the start of `buf` (not empty) without its type byte and
/// CRLF, and the length with both; `Ok(None)` while its CRLF has not come.
fn line(buf: &[u8]) -> std::result::Result<Option<(&[u8], usize)>, String> {
    let window = &buf[1..buf.len().min(MAX_LINE + 3)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], end + 3))),
        None if buf.len() > MAX_LINE => Err(format!(
            "a reply line longer than {} KiB without CRLF",
            MAX_LINE >> 10
        )),
        None => Ok(None),
    }
}

fn integer(text: &[u8]) -> std::result::Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{:?} is not a RESP integer", String::from_utf8_lossy(text)))
}

/// A length that may be -1 (nil); any other negative, or one above `max`,
/// is an error.
fn length(text: &[u8], max: usize) -> std::result::Result<Option<usize>, String> {
    match integer(text)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(format!("RESP length {n} out of range (0 to {max}, or -1)")),
        },
    }
}

/// Reads the reply at the start of `buf` (for an array, its header only):
/// `Ok(None)` while incomplete, else the bytes it takes and the reply. A bulk
/// string is whole only with its data and final CRLF; the data is not looked
/// at beyond finding its end.
pub fn reply(buf: &[u8]) -> std::result::Result<Option<(usize, Reply<'_>)>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if !b"+-:$*".contains(&kind) {
        return Err(format!(
            "a reply starting with byte 0x{kind:02x} ({:?}), not a RESP2 type",
            kind as char
        ));
    }
    let Some((text, len)) = line(buf)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Integer(integer(text)?),
        b'$' => match length(text, MAX_BULK)? {
            None => Reply::Nil,
            Some(n) => {
                let Some(end) = buf.get(len..len + n + 2) else {
                    return Ok(None);
                };
                if &end[n..] != b"\r\n" {
                    return Err(format!("a {n}-byte bulk string not ended by CRLF"));
                }
                return Ok(Some((len + n + 2, Reply::Bulk(&end[..n]))));
            }
        },
        // `*`, the only type left.
        _ => match length(text, MAX_ARRAY)? {
            None => Reply::Nil,
            Some(n) => Reply::Array(n),
        },
    };
    Ok(Some((len, reply)))
}

/// A whole reply, owned: what setup commands get back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    /// Reads the whole reply at the start of `buf`, arrays and all:
    /// `Ok(None)` while incomplete, else its length and value.
    pub fn parse(buf: &[u8]) -> std::result::Result<Option<(usize, Value)>, String> {
        Value::parse_nested(buf, 0)
    }

    fn parse_nested(
        buf: &[u8],
        depth: usize,
    ) -> std::result::Result<Option<(usize, Value)>, String> {
        if depth > 8 {
            return Err("RESP arrays nested deeper than 8".into());
        }
        let Some((mut len, head)) = reply(buf)? else {
            return Ok(None);
        };
        let text = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
        let value = match head {
            Reply::Simple(t) => Value::Simple(text(t)),
            Reply::Error(t) => Value::Error(text(t)),
            Reply::Integer(n) => Value::Integer(n),
            Reply::Bulk(b) => Value::Bulk(b.to_vec()),
            Reply::Nil => Value::Nil,
            Reply::Array(n) => {
                // Not sized from the untrusted count: it grows as elements arrive.
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let Some((used, item)) = Value::parse_nested(&buf[len..], depth + 1)? else {
                        return Ok(None);
                    };
                    len += used;
                    items.push(item);
                }
                Value::Array(items)
            }
        };
        Ok(Some((len, value)))
    }
}

/// Sends one command on a blocking connection and reads its whole reply (an
/// error reply is returned as [`Value::Error`], for the caller to judge).
pub fn command(stream: &mut std::net::TcpStream, args: &[&[u8]]) -> Result<Value> {
    stream.write_all(&encode(args))?;
    let mut buf = Vec::new();
    let mut chunk = [0; 16 << 10];
    loop {
        if let Some((len, value)) = Value::parse(&buf).map_err(io::Error::other)? {
            if len != buf.len() {
                return Err(io::Error::other("bytes after a Redis reply").into());
            }
            return Ok(value);
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::Error::other("Redis closed the connection").into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One client connection to a Redis server.
pub struct Conn {
    socket: Socket,
}

impl Conn {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Rpc {
            peer: format!("Redis at {}", self.socket.peer),
            reason: reason.into(),
        }
    }
}

/// What a reply to `expect` is wrong with, if anything.
fn check(reply: Reply, expect: &Expect) -> std::result::Result<(), String> {
    let command = match expect.op {
        Op::Get => "GET",
        Op::Put => "SET",
    };
    let key = key(expect.index);
    let key = String::from_utf8_lossy(&key);
    match (expect.op, reply) {
        (Op::Get, Reply::Bulk(value)) if value.len() == expect.value => Ok(()),
        (Op::Put, Reply::Simple(b"OK")) => Ok(()),
        (_, Reply::Error(text)) => Err(format!(
            "{command} {key} answered the error `{}`",
            String::from_utf8_lossy(text)
        )),
        (Op::Get, Reply::Nil) => Err(format!(
            "GET {key} answered nil: the key is not stored (the keyspace is preloaded, so \
             something dropped it)"
        )),
        (Op::Get, Reply::Bulk(value)) => Err(format!(
            "GET {key} answered {} bytes, expected {}",
            value.len(),
            expect.value
        )),
        (_, other) => Err(format!(
            "{command} {key} answered {other:?}, expected {}",
            if expect.op == Op::Get {
                "a bulk string"
            } else {
                "+OK"
            }
        )),
    }
}

impl engine::Connection for Conn {
    type Request = Request;

    fn request(op: Op, value: &[u8]) -> Request {
        match op {
            Op::Get => Request::get(),
            Op::Put => Request::set(value),
        }
    }

    async fn open(peer: SocketAddr) -> Result<Conn> {
        Ok(Conn {
            socket: Socket::open(peer).await?,
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket.send(bytes).await
    }

    fn take_reply(&mut self, expect: &Expect) -> Result<bool> {
        let (len, wrong) = match reply(self.socket.unread()) {
            Ok(None) => return Ok(false),
            Ok(Some((len, reply))) => (len, check(reply, expect).err()),
            Err(e) => return Err(self.error(e)),
        };
        if let Some(wrong) = wrong {
            return Err(self.error(wrong));
        }
        self.socket.consume(len);
        Ok(true)
    }

    async fn read_more(&mut self) -> Result<()> {
        if !self.socket.read_more().await? {
            return Err(self.error("Redis closed the connection"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Request as _;

    #[test]
    fn prebuilt_commands_carry_the_key_in_place() {
        let mut get = Request::get();
        get.set(42, 0);
        assert_eq!(
            get.bytes(),
            b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n"
        );
        let mut set = Request::set(b"abc");
        set.set(7, 0);
        assert_eq!(
            set.bytes(),
            b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000007\r\n$3\r\nabc\r\n"
        );
    }

    #[test]
    fn whole_replies_are_read_with_their_length() {
        assert_eq!(reply(b"+OK\r\n"), Ok(Some((5, Reply::Simple(b"OK")))));
        assert_eq!(reply(b":12182\r\n"), Ok(Some((8, Reply::Integer(12182)))));
        assert_eq!(reply(b"$3\r\nabc\r\n"), Ok(Some((9, Reply::Bulk(b"abc")))));
        assert_eq!(reply(b"$0\r\n\r\n"), Ok(Some((6, Reply::Bulk(b"")))));
        assert_eq!(reply(b"*2\r\n:1\r\n"), Ok(Some((4, Reply::Array(2)))));
        // A bulk string may hold CRLF: its length, not a search, ends it.
        assert_eq!(
            reply(b"$4\r\n\r\n\r\n\r\n+OK\r\n"),
            Ok(Some((10, Reply::Bulk(b"\r\n\r\n"))))
        );
    }

    #[test]
    fn a_reply_split_across_reads_is_incomplete_until_its_last_byte() {
        let mut bytes = b"$100\r\n".to_vec();
        bytes.extend_from_slice(&[b'x'; 100]);
        bytes.extend_from_slice(b"\r\n+OK\r\n");
        let first = bytes.len() - 5;
        for cut in 0..first {
            assert_eq!(reply(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (len, got) = reply(&bytes).unwrap().unwrap();
        assert_eq!((len, got), (first, Reply::Bulk(&[b'x'; 100])));
        assert_eq!(reply(&bytes[len..]), Ok(Some((5, Reply::Simple(b"OK")))));
        for cut in 0..4 {
            assert_eq!(reply(&b"+OK\r\n"[..cut]), Ok(None));
        }
    }

    #[test]
    fn nil_bulk_and_nil_array_are_nil() {
        assert_eq!(reply(b"$-1\r\n"), Ok(Some((5, Reply::Nil))));
        assert_eq!(reply(b"*-1\r\n"), Ok(Some((5, Reply::Nil))));
        let expect = Expect {
            op: Op::Get,
            value: 100,
            index: 3,
            seq: 0,
        };
        let wrong = check(Reply::Nil, &expect).unwrap_err();
        assert!(
            wrong.contains("GET key:000000000003 answered nil"),
            "{wrong}"
        );
    }

    #[test]
    fn error_replies_fail_the_request_with_their_text() {
        let bytes = b"-MOVED 11187 127.0.0.1:17003\r\n";
        let (len, got) = reply(bytes).unwrap().unwrap();
        assert_eq!(
            (len, got),
            (bytes.len(), Reply::Error(b"MOVED 11187 127.0.0.1:17003"))
        );
        let expect = Expect {
            op: Op::Put,
            value: 100,
            index: 1,
            seq: 0,
        };
        let wrong = check(got, &expect).unwrap_err();
        assert_eq!(
            wrong,
            "SET key:000000000001 answered the error `MOVED 11187 127.0.0.1:17003`"
        );
    }

    #[test]
    fn replies_are_checked_against_their_command() {
        let get = Expect {
            op: Op::Get,
            value: 3,
            index: 0,
            seq: 0,
        };
        assert_eq!(check(Reply::Bulk(b"abc"), &get), Ok(()));
        assert!(
            check(Reply::Bulk(b"ab"), &get)
                .unwrap_err()
                .contains("2 bytes, expected 3")
        );
        assert!(check(Reply::Simple(b"OK"), &get).is_err());
        let set = Expect { op: Op::Put, ..get };
        assert_eq!(check(Reply::Simple(b"OK"), &set), Ok(()));
        assert!(check(Reply::Bulk(b"abc"), &set).is_err());
    }

    #[test]
    fn malformed_replies_are_errors_not_waits() {
        assert!(reply(b"?what\r\n").is_err());
        assert!(reply(b"$-2\r\n").is_err());
        assert!(reply(b":12x\r\n").is_err());
        assert!(reply(b"$3\r\nabcXY").is_err());
        assert!(reply(&[b'+'; MAX_LINE + 3]).is_err());
        assert_eq!(reply(&[b'+'; 100]), Ok(None));
        assert!(reply(b"\r\n").is_err());
    }

    #[test]
    fn nested_replies_parse_whole_or_not_at_all() {
        let bytes = b"*2\r\n*2\r\n:0\r\n$1\r\na\r\n$-1\r\n";
        let want = Value::Array(vec![
            Value::Array(vec![Value::Integer(0), Value::Bulk(b"a".to_vec())]),
            Value::Nil,
        ]);
        assert_eq!(Value::parse(bytes), Ok(Some((bytes.len(), want))));
        for cut in 0..bytes.len() {
            assert_eq!(Value::parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }
}
