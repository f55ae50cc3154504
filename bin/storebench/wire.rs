//! The raw Thrift client of the cells: prebuilt calls whose key is swapped in
//! place, replies read just far enough, one connection to a node.
//!
//! Why the client speaks raw Thrift instead of using [`thrifty_p2p::client`]:
//! the generated client copies each key and value into owned `Vec`s, and its
//! reader zero-fills a 64 KiB buffer for every reply. redis-benchmark builds
//! each command once per connection and only swaps the key in place; this
//! client does the same (every key has the same length: `key:` and 12 digits,
//! the names redis-benchmark's `-r` produces), and reads a reply only far
//! enough to find its end and check the answer. So the figures weigh the
//! server, as redis-benchmark's weigh Redis.

use std::net::SocketAddr;

use thrifty_p2p::wire::PEEK;
use thrifty_p2p::wire::convert::remote_error;
use thrifty_p2p::wire::idl::diststore::{ErrorKind as WireKind, StoreError};
use thrifty_p2p::{Error, NodeAddr, Result};

use crate::engine::{self, Expect, Socket};
use crate::results::Op;

/// Key length: `key:` and 12 digits, as redis-benchmark names its `-r` keys.
pub const KEY_LEN: usize = 16;

const STRICT_VERSION: u32 = 0x8001_0000;
const CALL: u32 = 1;
const REPLY: u32 = 2;
const EXCEPTION: u32 = 3;
const ONEWAY: u32 = 4;
const T_STOP: u8 = 0;
const T_I08: u8 = 3;
const T_I16: u8 = 6;
const T_I32: u8 = 8;
const T_I64: u8 = 10;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;

/// Writes key number `index` into `out` (`KEY_LEN` bytes).
fn write_key(out: &mut [u8], index: usize) {
    out[..4].copy_from_slice(b"key:");
    let mut n = index;
    for digit in out[4..KEY_LEN].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

pub fn key(index: usize) -> [u8; KEY_LEN] {
    let mut key = [0; KEY_LEN];
    write_key(&mut key, index);
    key
}

/// A value of `len` bytes (any bytes do; these are printable).
pub fn value_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A whole call message whose key and sequence number can be swapped in place.
pub struct Request {
    pub bytes: Vec<u8>,
    key_at: usize,
    seq_at: usize,
}

/// Writes a strict message header of `kind` (`CALL`, `ONEWAY`) for `method`
/// with sequence number 0, and returns where the number is.
fn begin(bytes: &mut Vec<u8>, method: &str, kind: u32) -> usize {
    bytes.extend_from_slice(&(STRICT_VERSION | kind).to_be_bytes());
    bytes.extend_from_slice(&(method.len() as i32).to_be_bytes());
    bytes.extend_from_slice(method.as_bytes());
    let seq_at = bytes.len();
    bytes.extend_from_slice(&0i32.to_be_bytes());
    seq_at
}

/// A whole `ping` call (no arguments): its reply is a void one, read as
/// [`Answer::Stored`].
pub fn ping() -> Vec<u8> {
    let mut bytes = Vec::new();
    begin(&mut bytes, "ping", CALL);
    bytes.push(T_STOP);
    bytes
}

impl Request {
    /// `method(1: binary key, ...)` sent as `kind`: `rest` writes the fields
    /// after the key.
    fn message(method: &str, kind: u32, rest: impl FnOnce(&mut Vec<u8>)) -> Request {
        let mut bytes = Vec::new();
        let seq_at = begin(&mut bytes, method, kind);
        bytes.push(T_STRING);
        bytes.extend_from_slice(&1i16.to_be_bytes());
        bytes.extend_from_slice(&(KEY_LEN as i32).to_be_bytes());
        let key_at = bytes.len();
        bytes.extend_from_slice(&key(0));
        rest(&mut bytes);
        bytes.push(T_STOP);
        Request {
            bytes,
            key_at,
            seq_at,
        }
    }

    /// `method(1: binary key, ...)`, a call answered with a reply.
    fn call(method: &str, rest: impl FnOnce(&mut Vec<u8>)) -> Request {
        Request::message(method, CALL, rest)
    }

    pub fn fetch() -> Request {
        Request::call("fetch", |_| {})
    }

    pub fn store(value: &[u8]) -> Request {
        Request::call("store", |bytes| string_field(bytes, 2, value))
    }

    /// The 2009 `put(1: string key, 2: string value)`, sent oneway as the
    /// old clients send it: the node answers nothing. Thrift writes `string`
    /// and `binary` alike; the node takes these as text, so `value` must be
    /// UTF-8 (as [`value_bytes`] is).
    pub fn put(value: &[u8]) -> Request {
        Request::message("put", ONEWAY, |bytes| string_field(bytes, 2, value))
    }

    /// `relay_fetch(key, PEEK)`: a read of the node's own store only.
    pub fn peek() -> Request {
        Request::call("relay_fetch", |bytes| {
            bytes.push(T_I08);
            bytes.extend_from_slice(&2i16.to_be_bytes());
            bytes.push(PEEK as u8);
        })
    }

    pub fn set_key(&mut self, index: usize) {
        write_key(&mut self.bytes[self.key_at..self.key_at + KEY_LEN], index);
    }
}

impl engine::Request for Request {
    fn set(&mut self, index: usize, seq: i32) {
        self.set_key(index);
        self.bytes[self.seq_at..self.seq_at + 4].copy_from_slice(&seq.to_be_bytes());
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Writes field `id` of type string (or binary) holding `value`.
fn string_field(bytes: &mut Vec<u8>, id: i16, value: &[u8]) {
    bytes.push(T_STRING);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
    bytes.extend_from_slice(value);
}

/// What a node answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `fetch`: the value is `len` bytes at offset `at` of the reply.
    Value { at: usize, len: usize },
    /// `fetch`: the key is not stored.
    Absent,
    /// `store`: stored (and any void reply, such as `ping`'s).
    Stored,
    /// A `StoreError` (with its kind, when the node sent one) or an
    /// application exception (no kind), with its message.
    Failed { message: String, kind: Option<i32> },
}

/// Reads bytes of a reply in order; `None` when the buffer ends first.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<std::result::Result<usize, String>> {
        let n = self.i32()?;
        Some(usize::try_from(n).map_err(|_| format!("negative length {n}")))
    }
}

/// `Ok(None)` from `$e` (the bytes so far end early) returns "incomplete".
macro_rules! more {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// A whole reply: its length in bytes, its sequence number and its answer.
type Parsed = (usize, i32, Answer);

/// Reads the reply at the start of `buf`: `Ok(None)` while incomplete, else
/// its length, sequence number and answer. Only the shapes `fetch`, `store`
/// and `relay_fetch` answer with are understood; anything else is an error.
fn parse_reply(buf: &[u8]) -> std::result::Result<Option<Parsed>, String> {
    let mut c = Cursor { buf, pos: 0 };
    let head = more!(c.i32()) as u32;
    if head & 0xffff_0000 != STRICT_VERSION {
        return Err(format!(
            "reply header 0x{head:08x} is not a strict binary-protocol header"
        ));
    }
    let name = more!(c.len())?;
    more!(c.take(name));
    let seq = more!(c.i32());
    match head & 0xff {
        REPLY => {}
        EXCEPTION => {
            // A TApplicationException: its field 2 is its type, not a kind.
            let (message, _) = more!(struct_message(&mut c))?;
            return Ok(Some((
                c.pos,
                seq,
                Answer::Failed {
                    message,
                    kind: None,
                },
            )));
        }
        other => return Err(format!("unexpected message type {other} in a reply")),
    }
    let field = more!(c.u8());
    if field == T_STOP {
        return Ok(Some((c.pos, seq, Answer::Stored)));
    }
    let id = more!(c.i16());
    let answer = match (field, id) {
        (T_STRUCT, 0) => {
            // Lookup: an optional value (field 1), then, in `relay_fetch`
            // replies, the copy's version and origin (i64, i32), skipped.
            let mut answer = Answer::Absent;
            loop {
                match more!(c.u8()) {
                    T_STOP => break answer,
                    T_STRING => {
                        more!(c.i16());
                        let len = more!(c.len())?;
                        let at = c.pos;
                        more!(c.take(len));
                        answer = Answer::Value { at, len };
                    }
                    T_I64 => {
                        more!(c.i16());
                        more!(c.take(8));
                    }
                    T_I32 => {
                        more!(c.i16());
                        more!(c.take(4));
                    }
                    other => return Err(format!("unexpected field type {other} in Lookup")),
                }
            }
        }
        (T_STRUCT, 1) => {
            let (message, kind) = more!(struct_message(&mut c))?;
            Answer::Failed { message, kind }
        }
        _ => return Err(format!("unexpected result field {id} of type {field}")),
    };
    if more!(c.u8()) != T_STOP {
        return Err("unexpected field after the result".into());
    }
    Ok(Some((c.pos, seq, answer)))
}

/// Reads a flat struct (an exception) and returns its field 1 string and
/// field 2 i32 (a `StoreError`'s kind).
fn struct_message(c: &mut Cursor) -> Option<std::result::Result<(String, Option<i32>), String>> {
    let mut message = String::new();
    let mut kind = None;
    loop {
        let field = c.u8()?;
        if field == T_STOP {
            return Some(Ok((message, kind)));
        }
        let id = c.i16()?;
        match field {
            T_STRING => {
                let len = match c.len()? {
                    Ok(len) => len,
                    Err(e) => return Some(Err(e)),
                };
                let text = c.take(len)?;
                if id == 1 {
                    message = String::from_utf8_lossy(text).into_owned();
                }
            }
            T_I08 => drop(c.take(1)?),
            T_I16 => drop(c.take(2)?),
            T_I32 => {
                let n = c.i32()?;
                if id == 2 {
                    kind = Some(n);
                }
            }
            T_I64 => drop(c.take(8)?),
            other => {
                return Some(Err(format!(
                    "unexpected field type {other} in an exception"
                )));
            }
        }
    }
}

/// One client connection to a node.
pub struct Conn {
    socket: Socket,
}

impl Conn {
    pub async fn open(peer: SocketAddr) -> Result<Conn> {
        Ok(Conn {
            socket: Socket::open(peer).await?,
        })
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Rpc {
            peer: self.socket.peer.to_string(),
            reason: reason.into(),
        }
    }

    /// The oldest reply not yet taken, if it is whole: its sequence number
    /// and answer (a value's offset is into the reply).
    fn next_reply(&mut self) -> Result<Option<(i32, Answer)>> {
        if self.socket.unread().is_empty() {
            return Ok(None);
        }
        match parse_reply(self.socket.unread()).map_err(|e| self.error(e))? {
            Some((len, seq, answer)) => {
                self.socket.consume(len);
                Ok(Some((seq, answer)))
            }
            None => Ok(None),
        }
    }

    /// Reads more of the replies.
    async fn fill_buf(&mut self) -> Result<()> {
        if !self.socket.read_more().await? {
            return Err(self.error("the node closed the connection"));
        }
        Ok(())
    }

    /// Writes `bytes` (whole messages) to the node.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket.send(bytes).await
    }

    /// Sends one whole call and reads its whole reply (no other call may be
    /// in flight on this connection).
    pub async fn call(&mut self, request: &[u8]) -> Result<Answer> {
        self.socket.send(request).await?;
        loop {
            if let Some((_, answer)) = self.next_reply()? {
                if !self.socket.unread().is_empty() {
                    return Err(self.error("bytes after the reply (the call was answered twice?)"));
                }
                return Ok(answer);
            }
            self.fill_buf().await?;
        }
    }

    /// Checks that `answer` is what `op` on key `index` should get.
    pub fn expect(&self, answer: Answer, op: Op, value: usize, index: usize) -> Result<()> {
        match (op, answer) {
            (Op::Get, Answer::Value { len, .. }) if len == value => Ok(()),
            (Op::Put, Answer::Stored) => Ok(()),
            // With its kind, as the library's client would see it (so a
            // caller can tell what to retry).
            (
                _,
                Answer::Failed {
                    message,
                    kind: Some(kind),
                },
            ) => Err(remote_error(
                &NodeAddr::new(self.socket.peer.ip().to_string(), self.socket.peer.port()),
                StoreError::new(message, WireKind::from(kind)),
            )),
            (
                _,
                Answer::Failed {
                    message,
                    kind: None,
                },
            ) => Err(Error::Refused {
                peer: self.socket.peer.to_string(),
                message,
            }),
            (_, other) => Err(self.error(format!(
                "{} of {} answered {other:?} (expected a {value}-byte value)",
                op.label(),
                String::from_utf8_lossy(&key(index))
            ))),
        }
    }
}

impl engine::Connection for Conn {
    type Request = Request;

    fn request(op: Op, value: &[u8]) -> Request {
        match op {
            Op::Get => Request::fetch(),
            Op::Put => Request::store(value),
        }
    }

    async fn open(peer: SocketAddr) -> Result<Conn> {
        Conn::open(peer).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        Conn::send(self, bytes).await
    }

    /// Replies come back in the order of the calls (the node promises it),
    /// each carrying its call's sequence number: a reply with another one is
    /// an error.
    fn take_reply(&mut self, expect: &Expect) -> Result<bool> {
        let Some((seq, answer)) = self.next_reply()? else {
            return Ok(false);
        };
        if seq != expect.seq {
            return Err(self.error(format!(
                "reply with sequence number {seq} where call {} was next (out of order)",
                expect.seq
            )));
        }
        self.expect(answer, expect.op, expect.value, expect.index)?;
        Ok(true)
    }

    async fn read_more(&mut self) -> Result<()> {
        self.fill_buf().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_like_redis_benchmark_keys() {
        assert_eq!(&key(42), b"key:000000000042");
        let mut request = Request::fetch();
        request.set_key(123_456);
        assert!(
            request
                .bytes
                .windows(KEY_LEN)
                .any(|w| w == b"key:000000123456")
        );
    }

    #[test]
    fn a_prebuilt_store_call_decodes_as_the_generated_code_would() {
        use thrifty_p2p::wire::frame::{Limits, MessageKind, scan};
        let mut request = Request::store(b"hello");
        request.set_key(7);
        let frame = scan(&request.bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(frame.name, "store");
        assert_eq!(frame.kind, MessageKind::Call);
        assert_eq!(frame.len, request.bytes.len());
    }

    #[test]
    fn a_prebuilt_call_carries_the_key_and_sequence_number_set_in_place() {
        use crate::engine::Request as _;
        use thrifty_p2p::wire::frame::{Limits, scan};
        let mut request = Request::fetch();
        request.set(99, 123_456);
        let frame = scan(&request.bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!((frame.name.as_ref(), frame.seq), ("fetch", 123_456));
        assert!(request.bytes.windows(KEY_LEN).any(|w| w == key(99)));
    }

    #[test]
    fn a_prebuilt_put_is_the_2009_oneway_put_the_node_decodes() {
        use thrifty_p2p::wire::codec::{Call, Method, decode};
        use thrifty_p2p::wire::frame::{Limits, MessageKind, scan};
        let value = value_bytes(100);
        let mut request = Request::put(&value);
        request.set_key(5);
        let frame = scan(&request.bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(
            (frame.name.as_ref(), frame.kind),
            ("put", MessageKind::Oneway)
        );
        assert_eq!(frame.len, request.bytes.len());
        let decoded = decode(&request.bytes, true, &Limits::default()).unwrap();
        assert_eq!(decoded.method, Method::Put);
        let Call::Write {
            key: k, value: v, ..
        } = decoded.call
        else {
            panic!("a put decodes as a write");
        };
        assert_eq!((k.as_slice(), v), (&key(5)[..], Some(value)));
    }

    #[test]
    fn a_ping_is_one_whole_call_without_arguments() {
        use thrifty_p2p::wire::frame::{Limits, MessageKind, scan};
        let ping = ping();
        let frame = scan(&ping, &Limits::default()).unwrap().unwrap();
        assert_eq!(
            (frame.name.as_ref(), frame.kind),
            ("ping", MessageKind::Call)
        );
        assert_eq!(frame.len, ping.len());
    }

    fn reply(result: &[u8]) -> Vec<u8> {
        let mut bytes = (STRICT_VERSION | REPLY).to_be_bytes().to_vec();
        bytes.extend_from_slice(&5i32.to_be_bytes());
        bytes.extend_from_slice(b"fetch");
        bytes.extend_from_slice(&7i32.to_be_bytes());
        bytes.extend_from_slice(result);
        bytes
    }

    #[test]
    fn replies_are_read_only_once_complete() {
        let mut lookup = vec![T_STRUCT, 0, 0, T_STRING, 0, 1, 0, 0, 0, 3];
        lookup.extend_from_slice(b"abc");
        lookup.extend_from_slice(&[T_STOP, T_STOP]);
        let whole = reply(&lookup);
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let (len, seq, answer) = parse_reply(&whole).unwrap().unwrap();
        assert_eq!((len, seq), (whole.len(), 7));
        let Answer::Value { at, len } = answer else {
            panic!("not a value: {answer:?}");
        };
        assert_eq!(&whole[at..at + len], b"abc");
        assert_eq!(
            parse_reply(&reply(&[T_STRUCT, 0, 0, T_STOP, T_STOP]))
                .unwrap()
                .unwrap()
                .2,
            Answer::Absent
        );
        assert_eq!(
            parse_reply(&reply(&[T_STOP])).unwrap().unwrap().2,
            Answer::Stored
        );
    }

    #[test]
    fn a_store_error_is_read_with_its_message() {
        let mut err = vec![T_STRUCT, 0, 1, T_STRING, 0, 1, 0, 0, 0, 4];
        err.extend_from_slice(b"full");
        err.extend_from_slice(&[T_STOP, T_STOP]);
        let whole = reply(&err);
        assert_eq!(
            parse_reply(&whole).unwrap().unwrap(),
            (
                whole.len(),
                7,
                Answer::Failed {
                    message: "full".into(),
                    kind: None
                }
            )
        );
    }

    #[test]
    fn a_store_error_s_kind_reaches_the_caller() {
        let mut err = vec![T_STRUCT, 0, 1, T_STRING, 0, 1, 0, 0, 0, 6];
        err.extend_from_slice(b"paused");
        err.extend_from_slice(&[T_I32, 0, 2, 0, 0, 0, 9, T_STOP, T_STOP]);
        let (_, _, answer) = parse_reply(&reply(&err)).unwrap().unwrap();
        assert_eq!(
            answer,
            Answer::Failed {
                message: "paused".into(),
                kind: Some(9)
            }
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let conn = rt
            .block_on(Conn::open(listener.local_addr().unwrap()))
            .unwrap();
        let refused = conn.expect(answer, Op::Put, 100, 1).unwrap_err();
        assert_eq!(refused.kind(), thrifty_p2p::ErrorKind::Paused);
    }
}
