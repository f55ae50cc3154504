//! Raw Thrift messages for the tests that talk to a node byte by byte
//! (`tests/wire.rs`, `tests/hostile.rs`): built with the protocol writer, not
//! the generated client, so a test can send what no client would.

use std::net::TcpStream;
use std::time::Duration;

use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TMessageIdentifier, TMessageType, TOutputProtocol,
    TStructIdentifier, TType,
};

use super::NodeProc;

/// Where a message's fields are written.
pub type Out<'a> = TBinaryOutputProtocol<&'a mut Vec<u8>>;

/// One message: the header, then an args struct with the fields `fields` writes.
pub fn message(
    strict: bool,
    kind: TMessageType,
    name: &str,
    seq: i32,
    fields: impl FnOnce(&mut Out) -> thrift::Result<()>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut out = TBinaryOutputProtocol::new(&mut buf, strict);
    out.write_message_begin(&TMessageIdentifier::new(name, kind, seq))
        .unwrap();
    out.write_struct_begin(&TStructIdentifier::new("args"))
        .unwrap();
    fields(&mut out).unwrap();
    out.write_field_stop().unwrap();
    out.write_struct_end().unwrap();
    out.write_message_end().unwrap();
    out.flush().unwrap();
    buf
}

/// A strict call with no arguments.
pub fn call(name: &str, seq: i32) -> Vec<u8> {
    message(true, TMessageType::Call, name, seq, |_| Ok(()))
}

/// Writes field `id` as a string/binary.
pub fn bytes_field(out: &mut Out, id: i16, value: &[u8]) -> thrift::Result<()> {
    out.write_field_begin(&TFieldIdentifier::new("f", TType::String, id))?;
    out.write_bytes(value)?;
    out.write_field_end()
}

/// A connection to `node` with no delay and `patience` to read or write.
pub fn connect(node: &NodeProc, patience: Duration) -> TcpStream {
    let socket = TcpStream::connect((node.addr.host.as_str(), node.addr.port)).expect("connect");
    socket.set_nodelay(true).unwrap();
    socket.set_read_timeout(Some(patience)).unwrap();
    socket.set_write_timeout(Some(patience)).unwrap();
    socket
}
