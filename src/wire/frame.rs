//! Finds where one Thrift binary-protocol message ends in a byte buffer, within limits.
//!
//! Nodes speak the binary protocol over plain, unframed TCP, so nothing on the
//! wire says how long a message is. A server that wants to read asynchronously
//! and only then hand a whole message to the (blocking) generated Thrift code
//! must walk the message itself to find its end. [`scan`] does that walk over
//! the bytes received so far, without trusting any size it reads: every declared
//! length and count is checked against [`Limits`] before it is acted on, the walk
//! keeps its own stack instead of recursing, and the only allocation that
//! depends on the input is the method name (at most 255 bytes) and one small
//! entry per level of nesting (at most [`Limits::max_depth`]).
//!
//! The walk is schema-less: it follows the types the message declares. The
//! generated code reads with the types of its IDL and may disagree with a
//! message whose declared types are wrong; it then fails on the bytes it was
//! handed, which is safe, because it is only ever handed `buf[..frame.len]`.

use std::fmt;

/// Limits applied while walking a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message, header included, in bytes.
    pub max_message: usize,
    /// Largest element count of one list, set or map (for a map: its pairs).
    pub max_container: usize,
    /// Deepest nesting of structs/containers. The message's own struct is at
    /// depth 1, so 0 refuses every message.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 64 MiB + 64 KiB per message (room for a 64 MiB value plus its key and
    /// header), a million elements per container, and 64 levels of nesting
    /// (Thrift's own default skip depth).
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024 * 1024 + 64 * 1024,
            max_container: 1_000_000,
            max_depth: 64,
        }
    }
}

/// The kind of message, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request that expects a reply (type 1).
    Call,
    /// A successful or declared-exception reply (type 2).
    Reply,
    /// An application exception raised by the server's Thrift layer (type 3).
    Exception,
    /// A request that expects no reply (type 4).
    Oneway,
}

impl MessageKind {
    /// The kind for a header's type byte, if it is one of the four.
    fn from_byte(byte: u8) -> Result<Self, FrameError> {
        match byte {
            1 => Ok(MessageKind::Call),
            2 => Ok(MessageKind::Reply),
            3 => Ok(MessageKind::Exception),
            4 => Ok(MessageKind::Oneway),
            other => Err(FrameError::BadMessageType(other)),
        }
    }
}

/// What the header says, and how long the whole message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The method name: valid UTF-8, at most 255 bytes.
    pub name: String,
    /// Call, reply, exception or oneway.
    pub kind: MessageKind,
    /// The sequence id, which a reply echoes from its call.
    pub seq: i32,
    /// Whether the header was strict (versioned, starting `0x80 0x01`) rather
    /// than the old unversioned form.
    pub strict: bool,
    /// Bytes from the start of the buffer to the end of this message; the next
    /// message, if any, starts here.
    pub len: usize,
}

/// Why a buffer cannot hold a valid message. Display text says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte had its top bit set (a versioned header) but the first two
    /// bytes, shown here big-endian, are not `0x8001`.
    BadVersion(u16),
    /// The header's message type is not 1 (call) to 4 (oneway).
    BadMessageType(u8),
    /// The method name is longer than 255 bytes or is not valid UTF-8.
    BadName,
    /// A field, element, key or value type code that is not a value type
    /// (unknown, or STOP/VOID where a value must follow).
    BadType(u8),
    /// A string, binary or container declared a negative length or count.
    NegativeSize(i32),
    /// The message would be longer than [`Limits::max_message`]; decided as soon
    /// as a declared size makes it certain, before those bytes arrive.
    TooLarge {
        /// The limit that would be passed.
        limit: usize,
    },
    /// A list, set or map declared more elements than [`Limits::max_container`].
    TooManyElements {
        /// The declared count.
        count: usize,
        /// The limit it passes.
        limit: usize,
    },
    /// Structs and containers nest deeper than [`Limits::max_depth`].
    TooDeep {
        /// The limit that would be passed.
        limit: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadVersion(v) => write!(
                f,
                "bad protocol version 0x{v:04x}: expected 0x8001 (Thrift binary protocol)"
            ),
            FrameError::BadMessageType(t) => write!(
                f,
                "bad message type {t}: expected 1 (call), 2 (reply), 3 (exception) or 4 (oneway)"
            ),
            FrameError::BadName => {
                write!(f, "bad method name: longer than 255 bytes or not UTF-8")
            }
            FrameError::BadType(t) => {
                write!(f, "bad type code {t} where a value type was expected")
            }
            FrameError::NegativeSize(n) => write!(f, "negative length or count {n}"),
            FrameError::TooLarge { limit } => {
                write!(f, "message would be larger than the limit of {limit} bytes")
            }
            FrameError::TooManyElements { count, limit } => write!(
                f,
                "container declares {count} elements, more than the limit of {limit}"
            ),
            FrameError::TooDeep { limit } => {
                write!(
                    f,
                    "structs and containers nest deeper than the limit of {limit}"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Finds the end of the message at the start of `buf`.
///
/// Returns `Ok(Some(frame))` when `buf` starts with one complete message (`buf`
/// may hold more bytes after it, from the next message); `Ok(None)` when the
/// bytes so far are a valid prefix and more are needed; `Err` when they can
/// never become a valid message or would pass a limit. Once a buffer gives
/// `Err` or `Some`, every longer buffer with the same start gives the same.
/// Errors are reported as soon as the bytes make them certain, with one
/// exception: a lone first byte with its top bit set waits for the second, so
/// that [`FrameError::BadVersion`] can show both.
///
/// Each call walks from the start of `buf`. A reader that calls it after every
/// read of a growing buffer pays time quadratic in the message's size; such a
/// reader keeps a [`Scanner`] instead, which resumes where it stopped.
pub fn scan(buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
    Scanner::new().scan(buf, limits)
}

/// A [`scan`] that resumes where the previous call on the same message stopped,
/// so that reading a message in many small pieces costs time linear in its
/// size, not quadratic (a 4 MB list trickled 1 KB per millisecond cost a node
/// 3.9 s of CPU when every read re-walked it from the start).
///
/// It remembers the header once walked, the stack of open structs and
/// containers, and how far the walk got: the end of the last item (field,
/// element, string) that was whole in the buffer. An item cut off by the end of
/// the buffer is walked again from its start on the next call, which costs at
/// most its header (a type byte, a field id, a length: a few bytes; a string's
/// bytes are stepped over, never read).
///
/// Every call must pass the same message start, each time with at least the
/// bytes of the previous call (a reader appends and passes its unread bytes).
/// Once a call settles (`Some` or `Err`) the scanner starts afresh, ready for
/// the next message.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The message header, once walked whole.
    header: Option<Header>,
    /// Bytes walked up to the end of the last whole item.
    pos: usize,
    /// As [`Walker::owed`], at `pos`.
    owed: usize,
    /// Structs and containers open at `pos`.
    stack: Vec<Open>,
    /// The fewest bytes the whole message can have, as far as the walk knows.
    wanted: usize,
    /// The last message refused as too large, once its header was walked.
    oversize: Option<Oversize>,
}

/// A message refused for its size after its header was walked: enough to
/// answer the call with an error that names the limit, rather than only
/// close the connection (which the sender sees as a broken pipe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// The method called.
    pub name: String,
    /// Call or oneway.
    pub kind: MessageKind,
    /// The call's sequence number.
    pub seq: i32,
    /// Whether the header was strict.
    pub strict: bool,
    /// The declared length of the string or binary that passed the limit (a
    /// value's length), or the fewest bytes the message declared in all when
    /// containers passed it.
    pub size: usize,
}

/// A walked message header.
#[derive(Debug)]
struct Header {
    name: String,
    kind: MessageKind,
    seq: i32,
    strict: bool,
}

impl Scanner {
    /// A scanner at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Like [`scan`], resuming the walk of the previous call; see [`Scanner`]
    /// for what `buf` must be.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
        match self.resume(buf, limits) {
            Ok(frame) => {
                self.restart();
                Ok(Some(frame))
            }
            Err(Halt::NeedMore) => Ok(None),
            Err(Halt::Bad(e)) => {
                if let (FrameError::TooLarge { .. }, Some(header)) = (&e, self.header.take()) {
                    self.oversize = Some(Oversize {
                        name: header.name,
                        kind: header.kind,
                        seq: header.seq,
                        strict: header.strict,
                        size: self.wanted,
                    });
                }
                self.restart();
                Err(e)
            }
        }
    }

    /// The fewest bytes the message being walked can have in all, header
    /// included: after `Ok(None)`, no scan can find the message before the
    /// buffer holds this many (an error can show sooner). Readers use it to size their buffer (a declared 60 MB
    /// string says so up front) and to skip scans that cannot progress.
    /// 0 before the first scan of a message.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// The message the last scan refused as too large, if its header was
    /// walked (see [`Oversize`]); taken once.
    pub fn take_oversize(&mut self) -> Option<Oversize> {
        self.oversize.take()
    }

    /// Forgets the message: the next scan starts a new one.
    pub fn restart(&mut self) {
        self.header = None;
        self.pos = 0;
        self.owed = 0;
        self.stack.clear();
        self.wanted = 0;
    }

    fn resume(&mut self, buf: &[u8], limits: &Limits) -> Result<Frame, Halt> {
        let mut walker = Walker {
            buf,
            pos: self.pos,
            owed: self.owed,
            limits,
            need: 0,
        };
        if self.header.is_none() {
            let header = walker.header().inspect_err(|_| self.wanted = walker.need)?;
            // Opening the message's struct reads no bytes, so it cannot stop
            // half-way: it only reserves the STOP.
            walker.value(STRUCT, &mut self.stack)?;
            self.header = Some(header);
            self.pos = walker.pos;
            self.owed = walker.owed;
        }
        while let Some(&top) = self.stack.last() {
            let depth = self.stack.len();
            match walker.step(&mut self.stack) {
                Ok(()) => {
                    self.pos = walker.pos;
                    self.owed = walker.owed;
                }
                Err(Halt::NeedMore) => {
                    // A step that runs out of bytes has changed only the top
                    // entry (never pushed or popped): put it back, so the
                    // next call walks this item again from its start.
                    debug_assert_eq!(self.stack.len(), depth);
                    if let Some(last) = self.stack.last_mut() {
                        *last = top;
                    }
                    self.wanted = walker.need;
                    return Err(Halt::NeedMore);
                }
                Err(bad) => {
                    // A refusal for size knows the size declared
                    // (see `Oversize::size`).
                    self.wanted = walker.need;
                    return Err(bad);
                }
            }
        }
        let header = self.header.take().expect("walked above");
        Ok(Frame {
            name: header.name,
            kind: header.kind,
            seq: header.seq,
            strict: header.strict,
            len: self.pos,
        })
    }
}

// Type codes of the binary protocol (1 is VOID, never a value; 5, 7 and 9 are unused).
const STOP: u8 = 0;
const BOOL: u8 = 2;
const BYTE: u8 = 3;
const DOUBLE: u8 = 4;
const I16: u8 = 6;
const I32: u8 = 8;
const I64: u8 = 10;
const STRING: u8 = 11;
const STRUCT: u8 = 12;
const MAP: u8 = 13;
const SET: u8 = 14;
const LIST: u8 = 15;
const UUID: u8 = 16;

/// The fewest bytes a value of type `ty` can take on the wire. Used to refuse
/// container counts that could not fit in the message anyway, and to keep a
/// running total of bytes that must still come.
fn min_width(ty: u8) -> usize {
    match ty {
        BOOL | BYTE => 1,
        I16 => 2,
        I32 => 4,
        DOUBLE | I64 => 8,
        STRING => 4,     // the length, for an empty string
        STRUCT => 1,     // a lone STOP
        MAP => 6,        // key type, value type, count
        SET | LIST => 5, // element type, count
        UUID => 16,
        // Not a value type; callers check with `value_type` first.
        _ => 1,
    }
}

/// Checks that `ty` can be the type of a field, element, key or value.
fn value_type(ty: u8) -> Result<u8, Halt> {
    match ty {
        BOOL | BYTE | DOUBLE | I16 | I32 | I64 | STRING | STRUCT | MAP | SET | LIST | UUID => {
            Ok(ty)
        }
        // STOP, VOID (1) and codes no protocol version defines.
        other => Err(Halt::Bad(FrameError::BadType(other))),
    }
}

/// Why the walk stopped before the end of the message.
enum Halt {
    /// The buffer ends before the message does; nothing wrong so far.
    NeedMore,
    /// The message is invalid or passes a limit.
    Bad(FrameError),
}

impl From<FrameError> for Halt {
    fn from(e: FrameError) -> Self {
        Halt::Bad(e)
    }
}

/// One open struct or container on the walk's own stack (kept on the heap so
/// that deep nesting cannot overflow the thread's stack).
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Inside a struct: a field header or STOP comes next.
    Struct,
    /// Inside a list or set: `left` more elements of type `elem`.
    Seq {
        /// Element type.
        elem: u8,
        /// Elements still to walk.
        left: usize,
    },
    /// Inside a map: `left` more pairs; `in_pair` when the key of the current
    /// pair was walked and its value comes next.
    Map {
        /// Key type.
        key: u8,
        /// Value type.
        value: u8,
        /// Pairs not yet started.
        left: usize,
        /// The current pair's key is done; its value comes next.
        in_pair: bool,
    },
}

/// The state of one walk over a buffer.
struct Walker<'a> {
    buf: &'a [u8],
    /// Bytes walked so far.
    pos: usize,
    /// Bytes that must still follow `pos` to close everything opened so far: a
    /// STOP per open struct, the minimum width of each element a container
    /// still owes. Checking `pos + owed` against the limit is what lets a
    /// too-large message be refused before its bytes arrive.
    owed: usize,
    limits: &'a Limits,
    /// Set when the buffer ran out: the fewest bytes the message can have,
    /// from the item that did not fit and what `owed` still reserves.
    need: usize,
}

impl Walker<'_> {
    /// Walks the message header, strict or not.
    fn header(&mut self) -> Result<Header, Halt> {
        let first = *self.buf.first().ok_or(Halt::NeedMore)?;
        if first & 0x80 != 0 {
            // Strict: version word 0x8001_xxTT. Like Thrift's own reader, only
            // the first two bytes are checked and the third is ignored.
            let version = self.take(2)?;
            let version = u16::from_be_bytes([version[0], version[1]]);
            if version != 0x8001 {
                return Err(FrameError::BadVersion(version).into());
            }
            self.take(1)?;
            let kind = MessageKind::from_byte(self.byte()?)?;
            let len = self.i32()?;
            let name = self.name(len)?;
            let seq = self.i32()?;
            Ok(Header {
                name,
                kind,
                seq,
                strict: true,
            })
        } else {
            // Old style: the name's length comes first (top bit clear, so
            // never negative), then the name, the type byte and the seq id.
            let len = self.i32()?;
            let name = self.name(len)?;
            let kind = MessageKind::from_byte(self.byte()?)?;
            let seq = self.i32()?;
            Ok(Header {
                name,
                kind,
                seq,
                strict: false,
            })
        }
    }

    /// Reads a method name of declared length `len`. Its length is checked
    /// before anything is copied, so the copy is at most 255 bytes.
    fn name(&mut self, len: i32) -> Result<String, Halt> {
        let len = usize::try_from(len).map_err(|_| FrameError::NegativeSize(len))?;
        if len > 255 {
            return Err(FrameError::BadName.into());
        }
        let bytes = self.take(len)?;
        let name = std::str::from_utf8(bytes).map_err(|_| FrameError::BadName)?;
        Ok(name.to_owned())
    }

    /// Walks one item of the innermost open struct or container (a field, an
    /// element, a key or value), or closes it. Iterative, with the stack on
    /// the heap: nesting cannot overflow the thread's stack. When the buffer
    /// runs out, only the top entry of `stack` has changed.
    fn step(&mut self, stack: &mut Vec<Open>) -> Result<(), Halt> {
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        // Decide what comes next, updating the top entry, and release from
        // `owed` the reserve for the item about to be walked: the walk itself
        // now accounts for those bytes.
        let next = match top {
            Open::Struct => {
                self.owed -= 1; // the STOP, or this field's type byte
                let ty = self.byte()?;
                if ty == STOP {
                    stack.pop();
                    return Ok(());
                }
                let ty = value_type(ty)?;
                self.owed += 1; // the struct still needs its STOP
                self.take(2)?; // field id: any i16 will do
                ty
            }
            Open::Seq { elem, left } => {
                if *left == 0 {
                    stack.pop();
                    return Ok(());
                }
                *left -= 1;
                self.owed -= min_width(*elem);
                *elem
            }
            Open::Map {
                key,
                value,
                left,
                in_pair,
            } => {
                if *in_pair {
                    *in_pair = false;
                    self.owed -= min_width(*value);
                    *value
                } else if *left == 0 {
                    stack.pop();
                    return Ok(());
                } else {
                    *left -= 1;
                    *in_pair = true;
                    self.owed -= min_width(*key);
                    *key
                }
            }
        };
        self.value(next, stack)
    }

    /// Walks a scalar or string of type `ty`, or opens a struct or container
    /// of that type by walking its header and pushing it on `stack`.
    fn value(&mut self, ty: u8, stack: &mut Vec<Open>) -> Result<(), Halt> {
        let open = match ty {
            BOOL | BYTE | DOUBLE | I16 | I32 | I64 | UUID => {
                self.take(min_width(ty))?;
                return Ok(());
            }
            STRING => {
                let len = self.size()?;
                self.take(len)?;
                return Ok(());
            }
            STRUCT => {
                self.enter(stack)?;
                self.reserve(1)?;
                Open::Struct
            }
            SET | LIST => {
                self.enter(stack)?;
                let elem = value_type(self.byte()?)?;
                let left = self.count()?;
                self.reserve(left.saturating_mul(min_width(elem)))?;
                Open::Seq { elem, left }
            }
            MAP => {
                self.enter(stack)?;
                let key = value_type(self.byte()?)?;
                let value = value_type(self.byte()?)?;
                let left = self.count()?;
                self.reserve(left.saturating_mul(min_width(key) + min_width(value)))?;
                Open::Map {
                    key,
                    value,
                    left,
                    in_pair: false,
                }
            }
            // Callers pass only checked types; refuse rather than assume.
            other => return Err(FrameError::BadType(other).into()),
        };
        stack.push(open);
        Ok(())
    }

    /// Refuses to open one more level when that would pass the depth limit.
    fn enter(&self, stack: &[Open]) -> Result<(), Halt> {
        if stack.len() >= self.limits.max_depth {
            return Err(FrameError::TooDeep {
                limit: self.limits.max_depth,
            }
            .into());
        }
        Ok(())
    }

    /// Adds `bytes` to what must still come, refusing at once if that makes
    /// the message too large.
    fn reserve(&mut self, bytes: usize) -> Result<(), Halt> {
        self.owed = self.owed.saturating_add(bytes);
        if self.pos.saturating_add(self.owed) > self.limits.max_message {
            self.need = self.pos.saturating_add(self.owed);
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Steps over the next `n` bytes. The limit is checked first, so a huge
    /// declared length is refused even though its bytes have not arrived.
    fn take(&mut self, n: usize) -> Result<&[u8], Halt> {
        let end = self.pos.saturating_add(n);
        if end.saturating_add(self.owed) > self.limits.max_message {
            // Refused for size: `need` reports the item's own length (a
            // value's), which is what a sender can act on.
            self.need = n;
            return Err(self.too_large());
        }
        let Some(bytes) = self.buf.get(self.pos..end) else {
            self.need = end.saturating_add(self.owed);
            return Err(Halt::NeedMore);
        };
        self.pos = end;
        Ok(bytes)
    }

    fn too_large(&self) -> Halt {
        FrameError::TooLarge {
            limit: self.limits.max_message,
        }
        .into()
    }

    fn byte(&mut self) -> Result<u8, Halt> {
        Ok(self.take(1)?[0])
    }

    fn i32(&mut self) -> Result<i32, Halt> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a string or binary length, refusing negative ones.
    fn size(&mut self) -> Result<usize, Halt> {
        let n = self.i32()?;
        Ok(usize::try_from(n).map_err(|_| FrameError::NegativeSize(n))?)
    }

    /// Reads a container's element count, refusing negative and over-limit ones.
    fn count(&mut self) -> Result<usize, Halt> {
        let count = self.size()?;
        if count > self.limits.max_container {
            return Err(FrameError::TooManyElements {
                count,
                limit: self.limits.max_container,
            }
            .into());
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;
    use std::io::{Cursor, Write};
    use thrift::protocol::{
        TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
        TListIdentifier, TMapIdentifier, TMessageIdentifier, TMessageType, TOutputProtocol,
        TSetIdentifier, TStructIdentifier, TType,
    };

    type Out = TBinaryOutputProtocol<Vec<u8>>;

    /// Encodes one message with the real Thrift protocol; `body` writes the
    /// args/result struct.
    fn encode(
        strict: bool,
        kind: TMessageType,
        name: &str,
        seq: i32,
        body: impl FnOnce(&mut Out) -> thrift::Result<()>,
    ) -> Vec<u8> {
        let mut o = TBinaryOutputProtocol::new(Vec::new(), strict);
        o.write_message_begin(&TMessageIdentifier::new(name, kind, seq))
            .unwrap();
        body(&mut o).unwrap();
        o.write_message_end().unwrap();
        o.flush().unwrap();
        o.transport
    }

    fn field(o: &mut Out, ty: TType, id: i16) -> thrift::Result<()> {
        o.write_field_begin(&TFieldIdentifier::new("f", ty, id))
    }

    fn begin(o: &mut Out) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("s"))
    }

    fn end(o: &mut Out) -> thrift::Result<()> {
        o.write_field_stop()?;
        o.write_struct_end()
    }

    /// A small struct: { 1: i32, 2: string }.
    fn small(o: &mut Out, n: i32) -> thrift::Result<()> {
        begin(o)?;
        field(o, TType::I32, 1)?;
        o.write_i32(n)?;
        field(o, TType::String, 2)?;
        o.write_string("small")?;
        end(o)
    }

    /// A struct with a field of every type, nested structs and containers of
    /// all kinds, some empty.
    fn every_type(o: &mut Out) -> thrift::Result<()> {
        begin(o)?;
        field(o, TType::Bool, 1)?;
        o.write_bool(true)?;
        field(o, TType::I08, 2)?;
        o.write_i8(-7)?;
        field(o, TType::Double, 3)?;
        o.write_double(1.5)?;
        field(o, TType::I16, 4)?;
        o.write_i16(-300)?;
        field(o, TType::I32, 5)?;
        o.write_i32(70_000)?;
        field(o, TType::I64, 6)?;
        o.write_i64(-1 << 40)?;
        field(o, TType::String, 7)?;
        o.write_string("héllo")?;
        field(o, TType::String, 8)?;
        o.write_bytes(&[0, 0x80, 0xff, 0x0b])?;
        // The crate's write_uuid takes a type from a crate we do not depend
        // on; a UUID is 16 raw bytes, so write them directly.
        field(o, TType::Uuid, 9)?;
        o.transport.write_all(&[0xab; 16])?;
        field(o, TType::Struct, 10)?;
        begin(o)?;
        field(o, TType::Struct, 1)?;
        small(o, 1)?;
        end(o)?;
        field(o, TType::List, 11)?;
        o.write_list_begin(&TListIdentifier::new(TType::Struct, 3))?;
        for n in 0..3 {
            small(o, n)?;
        }
        o.write_list_end()?;
        field(o, TType::Map, 12)?;
        o.write_map_begin(&TMapIdentifier::new(TType::String, TType::List, 2))?;
        for key in ["a", "b"] {
            o.write_string(key)?;
            o.write_list_begin(&TListIdentifier::new(TType::I32, 2))?;
            o.write_i32(1)?;
            o.write_i32(2)?;
            o.write_list_end()?;
        }
        o.write_map_end()?;
        field(o, TType::Set, 13)?;
        o.write_set_begin(&TSetIdentifier::new(TType::I64, 2))?;
        o.write_i64(1)?;
        o.write_i64(2)?;
        o.write_set_end()?;
        field(o, TType::List, 14)?;
        o.write_list_begin(&TListIdentifier::new(TType::String, 0))?;
        o.write_list_end()?;
        field(o, TType::Map, 15)?;
        o.write_map_begin(&TMapIdentifier::new(TType::I32, TType::I32, 0))?;
        o.write_map_end()?;
        field(o, TType::Set, 16)?;
        o.write_set_begin(&TSetIdentifier::new(TType::Double, 0))?;
        o.write_set_end()?;
        field(o, TType::Map, 17)?;
        o.write_map_begin(&TMapIdentifier::new(TType::I16, TType::Struct, 1))?;
        o.write_i16(3)?;
        small(o, 3)?;
        o.write_map_end()?;
        field(o, TType::List, 18)?;
        o.write_list_begin(&TListIdentifier::new(TType::Bool, 3))?;
        for b in [true, false, true] {
            o.write_bool(b)?;
        }
        o.write_list_end()?;
        field(o, TType::Struct, 19)?;
        begin(o)?;
        end(o)?;
        end(o)
    }

    fn every_type_call(strict: bool) -> Vec<u8> {
        encode(strict, TMessageType::Call, "put", 42, every_type)
    }

    /// The bytes of a strict call header for method `name`, seq 1.
    fn strict_header(name: &str) -> Vec<u8> {
        encode(true, TMessageType::Call, name, 1, |_| Ok(()))
    }

    /// Scans with the default limits.
    fn scan_default(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        scan(buf, &Limits::default())
    }

    #[test]
    fn default_limits_are_64_mib_plus_64_kib_a_million_elements_and_depth_64() {
        let limits = Limits::default();
        assert_eq!(limits.max_message, 67_174_400);
        assert_eq!(limits.max_container, 1_000_000);
        assert_eq!(limits.max_depth, 64);
    }

    #[test]
    fn a_strict_call_with_every_type_is_found_whole() {
        let buf = every_type_call(true);
        let frame = scan_default(&buf).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                name: "put".into(),
                kind: MessageKind::Call,
                seq: 42,
                strict: true,
                len: buf.len(),
            }
        );
    }

    #[test]
    fn a_non_strict_call_with_every_type_is_found_whole() {
        let buf = every_type_call(false);
        let frame = scan_default(&buf).unwrap().unwrap();
        assert_eq!(frame.name, "put");
        assert_eq!(frame.kind, MessageKind::Call);
        assert_eq!(frame.seq, 42);
        assert!(!frame.strict);
        assert_eq!(frame.len, buf.len());
    }

    #[test]
    fn replies_exceptions_and_oneways_are_told_apart() {
        for (ty, kind) in [
            (TMessageType::Call, MessageKind::Call),
            (TMessageType::Reply, MessageKind::Reply),
            (TMessageType::Exception, MessageKind::Exception),
            (TMessageType::OneWay, MessageKind::Oneway),
        ] {
            for strict in [true, false] {
                let buf = encode(strict, ty, "get", -5, |o| small(o, 9));
                let frame = scan_default(&buf).unwrap().unwrap();
                assert_eq!((frame.kind, frame.seq, frame.len), (kind, -5, buf.len()));
            }
        }
    }

    #[test]
    fn trailing_bytes_of_a_second_message_do_not_change_the_length() {
        for strict in [true, false] {
            let first = every_type_call(strict);
            let second = encode(strict, TMessageType::Reply, "get", 43, |o| small(o, 1));
            for cut in 0..=second.len() {
                let mut buf = first.clone();
                buf.extend_from_slice(&second[..cut]);
                let frame = scan_default(&buf).unwrap().unwrap();
                assert_eq!(frame.len, first.len());
                assert_eq!(frame.seq, 42);
            }
        }
    }

    #[test]
    fn every_strict_prefix_of_a_valid_message_needs_more_bytes() {
        for strict in [true, false] {
            let buf = every_type_call(strict);
            for cut in 0..buf.len() {
                assert_eq!(scan_default(&buf[..cut]), Ok(None), "prefix of {cut} bytes");
            }
        }
    }

    #[test]
    fn an_empty_name_and_an_empty_struct_make_a_valid_message() {
        let buf = encode(true, TMessageType::OneWay, "", 0, |o| {
            begin(o)?;
            end(o)
        });
        assert_eq!(buf.len(), 13);
        let frame = scan_default(&buf).unwrap().unwrap();
        assert_eq!((frame.name.as_str(), frame.len), ("", 13));
    }

    #[test]
    fn a_top_bit_without_version_one_is_a_bad_version() {
        assert_eq!(
            scan_default(&[0x81, 0x01, 0x00, 0x01]),
            Err(FrameError::BadVersion(0x8101))
        );
        assert_eq!(
            scan_default(&[0x80, 0x02]),
            Err(FrameError::BadVersion(0x8002))
        );
        assert_eq!(
            scan_default(&[0xff, 0xff]),
            Err(FrameError::BadVersion(0xffff))
        );
    }

    #[test]
    fn a_message_type_outside_one_to_four_is_refused_in_either_header() {
        for t in [0u8, 5, 0xff] {
            assert_eq!(
                scan_default(&[0x80, 0x01, 0x00, t]),
                Err(FrameError::BadMessageType(t))
            );
            // Non-strict: name "a", then the type byte.
            assert_eq!(
                scan_default(&[0, 0, 0, 1, b'a', t]),
                Err(FrameError::BadMessageType(t))
            );
        }
    }

    #[test]
    fn a_negative_string_length_is_refused() {
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[STRING, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(scan_default(&buf), Err(FrameError::NegativeSize(-1)));
    }

    #[test]
    fn a_negative_container_count_is_refused() {
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[LIST, 0, 1, I32, 0x80, 0, 0, 0]);
        assert_eq!(scan_default(&buf), Err(FrameError::NegativeSize(i32::MIN)));
    }

    #[test]
    fn a_negative_name_length_is_refused() {
        let buf = [0x80, 0x01, 0x00, 0x01, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(scan_default(&buf), Err(FrameError::NegativeSize(-2)));
    }

    #[test]
    fn a_name_longer_than_255_bytes_is_refused_as_soon_as_its_length_is_read() {
        let long = "x".repeat(256);
        for strict in [true, false] {
            let buf = encode(strict, TMessageType::Call, &long, 1, |o| small(o, 1));
            assert_eq!(scan_default(&buf), Err(FrameError::BadName));
            let length_end = if strict { 8 } else { 4 };
            assert_eq!(scan_default(&buf[..length_end]), Err(FrameError::BadName));
        }
        let longest = "x".repeat(255);
        let buf = encode(true, TMessageType::Call, &longest, 1, |o| small(o, 1));
        assert_eq!(scan_default(&buf).unwrap().unwrap().name, longest);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused() {
        let buf = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 2, 0xc3, 0x28];
        assert_eq!(scan_default(&buf), Err(FrameError::BadName));
    }

    #[test]
    fn plain_text_on_the_port_is_refused_at_once() {
        // "GET " read as a non-strict name length is over a billion.
        assert_eq!(
            scan_default(b"GET / HTTP/1.1\r\n"),
            Err(FrameError::BadName)
        );
    }

    #[test]
    fn a_container_over_the_element_limit_is_refused_when_its_count_is_read() {
        let limits = Limits {
            max_container: 3,
            ..Limits::default()
        };
        let buf = encode(true, TMessageType::Call, "put", 1, |o| {
            begin(o)?;
            field(o, TType::Set, 1)?;
            o.write_set_begin(&TSetIdentifier::new(TType::I32, 4))?;
            for n in 0..4 {
                o.write_i32(n)?;
            }
            o.write_set_end()?;
            end(o)
        });
        let count_end = strict_header("put").len() + 3 + 5;
        let expected = Err(FrameError::TooManyElements { count: 4, limit: 3 });
        assert_eq!(scan(&buf, &limits), expected);
        assert_eq!(scan(&buf[..count_end], &limits), expected);
        assert_eq!(scan(&buf[..count_end - 1], &limits), Ok(None));
    }

    #[test]
    fn a_map_over_the_element_limit_counts_pairs() {
        let limits = Limits {
            max_container: 2,
            ..Limits::default()
        };
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[MAP, 0, 1, I32, I32, 0, 0, 0, 3]);
        assert_eq!(
            scan(&buf, &limits),
            Err(FrameError::TooManyElements { count: 3, limit: 2 })
        );
        let last = buf.len() - 1;
        buf[last] = 2;
        assert_eq!(scan(&buf, &limits), Ok(None));
    }

    #[test]
    fn a_string_past_max_message_is_refused_with_only_the_header_present() {
        let limits = Limits::default();
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[STRING, 0, 1]);
        let huge = i32::try_from(limits.max_message).unwrap();
        buf.extend_from_slice(&huge.to_be_bytes());
        assert_eq!(
            scan(&buf, &limits),
            Err(FrameError::TooLarge {
                limit: limits.max_message
            })
        );
    }

    #[test]
    fn a_refusal_for_size_keeps_the_call_and_the_declared_length_to_answer_it() {
        let limits = Limits::default();
        let mut buf = strict_header("store");
        buf.extend_from_slice(&[STRING, 0, 1, 0, 0, 0, 1, b'k', STRING, 0, 2]);
        let huge = i32::try_from(limits.max_message).unwrap();
        buf.extend_from_slice(&huge.to_be_bytes());
        let mut scanner = Scanner::new();
        assert!(matches!(
            scanner.scan(&buf, &limits),
            Err(FrameError::TooLarge { .. })
        ));
        let over = scanner.take_oversize().expect("the header was walked");
        assert_eq!(over.name, "store");
        assert_eq!(over.kind, MessageKind::Call);
        assert!(over.strict);
        assert_eq!(over.size, limits.max_message, "the value's own length");
        assert_eq!(scanner.take_oversize(), None, "taken once");
        // Other refusals leave nothing to answer.
        assert!(scanner.scan(&[0x80, 0x02, 0, 1], &limits).is_err());
        assert_eq!(scanner.take_oversize(), None);
    }

    #[test]
    fn a_message_exactly_at_max_message_is_accepted_and_one_byte_more_is_not() {
        let buf = every_type_call(true);
        let exact = Limits {
            max_message: buf.len(),
            ..Limits::default()
        };
        assert_eq!(scan(&buf, &exact).unwrap().unwrap().len, buf.len());
        let short = Limits {
            max_message: buf.len() - 1,
            ..Limits::default()
        };
        let refused = Err(FrameError::TooLarge {
            limit: buf.len() - 1,
        });
        assert_eq!(scan(&buf, &short), refused);
        // Every struct owes its STOP byte, so the overflow is known before
        // the last bytes arrive.
        assert_eq!(scan(&buf[..buf.len() - 1], &short), refused);
    }

    #[test]
    fn a_list_of_two_billion_elements_is_refused_at_once() {
        // A 40-byte message: strict header with a 20-byte name, a list field
        // of i32 declaring two billion elements, and none of them.
        let mut buf = strict_header("put_with_a_long_name");
        buf.extend_from_slice(&[LIST, 0, 1, I32]);
        buf.extend_from_slice(&2_000_000_000i32.to_be_bytes());
        assert_eq!(buf.len(), 40);
        assert_eq!(
            scan_default(&buf),
            Err(FrameError::TooManyElements {
                count: 2_000_000_000,
                limit: 1_000_000
            })
        );
        // Even with no element limit, 8 GB of i32s cannot fit the message.
        let no_count_limit = Limits {
            max_container: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            scan(&buf, &no_count_limit),
            Err(FrameError::TooLarge {
                limit: no_count_limit.max_message
            })
        );
    }

    #[test]
    fn a_plausible_count_is_judged_by_the_narrowest_element() {
        // A million empty-able strings need 4 MB: fine under 64 MiB, but not
        // under a 1 MB limit.
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[LIST, 0, 1, STRING]);
        buf.extend_from_slice(&1_000_000i32.to_be_bytes());
        assert_eq!(scan_default(&buf), Ok(None));
        let small_limit = Limits {
            max_message: 1 << 20,
            ..Limits::default()
        };
        assert_eq!(
            scan(&buf, &small_limit),
            Err(FrameError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn nested_lists_that_together_pass_max_message_are_refused_early() {
        // list<list<i64>> of 1000 lists, the first declaring 1000 i64s: the
        // 8000 bytes it owes plus 5 for each other list pass a 10 kB limit
        // long before any i64 arrives.
        let limits = Limits {
            max_message: 10_000,
            ..Limits::default()
        };
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[LIST, 0, 1, LIST, 0, 0, 3, 0xe8, I64, 0, 0, 3, 0xe8]);
        assert_eq!(
            scan(&buf, &limits),
            Err(FrameError::TooLarge { limit: 10_000 })
        );
    }

    /// Ten thousand structs, each the only field of the one around it.
    fn struct_bomb(depth: usize, complete: bool) -> Vec<u8> {
        let mut buf = strict_header("put");
        for _ in 0..depth {
            buf.extend_from_slice(&[STRUCT, 0, 1]);
        }
        if complete {
            buf.extend(std::iter::repeat_n(STOP, depth + 1));
        }
        buf
    }

    #[test]
    fn a_struct_nested_ten_thousand_deep_is_refused_as_too_deep() {
        let expected = Err(FrameError::TooDeep { limit: 64 });
        assert_eq!(scan_default(&struct_bomb(10_000, false)), expected);
        assert_eq!(scan_default(&struct_bomb(10_000, true)), expected);
    }

    #[test]
    fn lists_nested_ten_thousand_deep_are_refused_as_too_deep() {
        let mut buf = strict_header("put");
        buf.extend_from_slice(&[LIST, 0, 1]);
        for _ in 0..10_000 {
            buf.extend_from_slice(&[LIST, 0, 0, 0, 1]);
        }
        assert_eq!(scan_default(&buf), Err(FrameError::TooDeep { limit: 64 }));
    }

    #[test]
    fn nesting_exactly_at_the_depth_limit_is_accepted() {
        // The message's struct is depth 1, so 63 nested structs make 64.
        let buf = struct_bomb(63, true);
        assert_eq!(scan_default(&buf).unwrap().unwrap().len, buf.len());
        let buf = struct_bomb(64, true);
        assert_eq!(scan_default(&buf), Err(FrameError::TooDeep { limit: 64 }));
    }

    #[test]
    fn deep_nesting_without_a_depth_limit_does_not_overflow_the_stack() {
        let unlimited = Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        };
        let buf = struct_bomb(10_000, true);
        assert_eq!(scan(&buf, &unlimited).unwrap().unwrap().len, buf.len());
    }

    #[test]
    fn unknown_type_codes_and_void_fields_are_refused() {
        for code in [1u8, 5, 7, 9, 17, 0x80, 0xff] {
            let mut buf = strict_header("put");
            buf.extend_from_slice(&[code, 0, 1]);
            assert_eq!(scan_default(&buf), Err(FrameError::BadType(code)));
        }
    }

    #[test]
    fn stop_and_void_are_refused_as_element_key_or_value_types() {
        for code in [STOP, 1, 5] {
            for body in [
                vec![LIST, 0, 1, code],
                vec![SET, 0, 1, code],
                vec![MAP, 0, 1, code],
                vec![MAP, 0, 1, I32, code],
            ] {
                let mut buf = strict_header("put");
                buf.extend_from_slice(&body);
                assert_eq!(scan_default(&buf), Err(FrameError::BadType(code)));
            }
        }
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let cases = [
            (FrameError::BadVersion(0x8102), "0x8102"),
            (FrameError::BadMessageType(9), "message type 9"),
            (FrameError::BadName, "name"),
            (FrameError::BadType(7), "type code 7"),
            (FrameError::NegativeSize(-3), "-3"),
            (FrameError::TooLarge { limit: 10 }, "10 bytes"),
            (
                FrameError::TooManyElements { count: 5, limit: 4 },
                "5 elements",
            ),
            (
                FrameError::TooDeep { limit: 64 },
                "deeper than the limit of 64",
            ),
        ];
        for (error, text) in cases {
            assert!(error.to_string().contains(text), "{error}");
        }
    }

    // ---- Property tests ----

    /// The shape of a value, so containers hold values of one type.
    #[derive(Debug, Clone)]
    enum Ty {
        Bool,
        Byte,
        Double,
        I16,
        I32,
        I64,
        Str,
        Uuid,
        Struct(Vec<(i16, Ty)>),
        List(Box<Ty>),
        Set(Box<Ty>),
        Map(Box<Ty>, Box<Ty>),
    }

    impl Ty {
        fn ttype(&self) -> TType {
            match self {
                Ty::Bool => TType::Bool,
                Ty::Byte => TType::I08,
                Ty::Double => TType::Double,
                Ty::I16 => TType::I16,
                Ty::I32 => TType::I32,
                Ty::I64 => TType::I64,
                Ty::Str => TType::String,
                Ty::Uuid => TType::Uuid,
                Ty::Struct(_) => TType::Struct,
                Ty::List(_) => TType::List,
                Ty::Set(_) => TType::Set,
                Ty::Map(..) => TType::Map,
            }
        }
    }

    /// A value with its type code, ready to encode.
    #[derive(Debug, Clone)]
    enum Val {
        Bool(bool),
        Byte(i8),
        Double(f64),
        I16(i16),
        I32(i32),
        I64(i64),
        Str(Vec<u8>),
        Uuid([u8; 16]),
        Struct(Vec<(i16, TType, Val)>),
        List(TType, Vec<Val>),
        Set(TType, Vec<Val>),
        Map(TType, TType, Vec<(Val, Val)>),
    }

    fn write_val(o: &mut Out, v: &Val) -> thrift::Result<()> {
        match v {
            Val::Bool(b) => o.write_bool(*b),
            Val::Byte(b) => o.write_i8(*b),
            Val::Double(d) => o.write_double(*d),
            Val::I16(n) => o.write_i16(*n),
            Val::I32(n) => o.write_i32(*n),
            Val::I64(n) => o.write_i64(*n),
            Val::Str(b) => o.write_bytes(b),
            Val::Uuid(b) => Ok(o.transport.write_all(b)?),
            Val::Struct(fields) => {
                begin(o)?;
                for (id, ty, v) in fields {
                    field(o, *ty, *id)?;
                    write_val(o, v)?;
                    o.write_field_end()?;
                }
                end(o)
            }
            Val::List(ty, vs) => {
                o.write_list_begin(&TListIdentifier::new(*ty, vs.len() as i32))?;
                vs.iter().try_for_each(|v| write_val(o, v))?;
                o.write_list_end()
            }
            Val::Set(ty, vs) => {
                o.write_set_begin(&TSetIdentifier::new(*ty, vs.len() as i32))?;
                vs.iter().try_for_each(|v| write_val(o, v))?;
                o.write_set_end()
            }
            Val::Map(k, v, pairs) => {
                o.write_map_begin(&TMapIdentifier::new(*k, *v, pairs.len() as i32))?;
                for (key, value) in pairs {
                    write_val(o, key)?;
                    write_val(o, value)?;
                }
                o.write_map_end()
            }
        }
    }

    fn ty_strategy() -> impl Strategy<Value = Ty> {
        let leaf = prop_oneof![
            Just(Ty::Bool),
            Just(Ty::Byte),
            Just(Ty::Double),
            Just(Ty::I16),
            Just(Ty::I32),
            Just(Ty::I64),
            Just(Ty::Str),
            Just(Ty::Uuid),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec((any::<i16>(), inner.clone()), 0..4).prop_map(Ty::Struct),
                inner.clone().prop_map(|t| Ty::List(Box::new(t))),
                inner.clone().prop_map(|t| Ty::Set(Box::new(t))),
                (inner.clone(), inner).prop_map(|(k, v)| Ty::Map(Box::new(k), Box::new(v))),
            ]
        })
    }

    fn val_strategy(ty: &Ty) -> BoxedStrategy<Val> {
        let items = || 0..5usize;
        match ty {
            Ty::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
            Ty::Byte => any::<i8>().prop_map(Val::Byte).boxed(),
            Ty::Double => any::<f64>().prop_map(Val::Double).boxed(),
            Ty::I16 => any::<i16>().prop_map(Val::I16).boxed(),
            Ty::I32 => any::<i32>().prop_map(Val::I32).boxed(),
            Ty::I64 => any::<i64>().prop_map(Val::I64).boxed(),
            Ty::Str => prop::collection::vec(any::<u8>(), 0..24)
                .prop_map(Val::Str)
                .boxed(),
            Ty::Uuid => any::<[u8; 16]>().prop_map(Val::Uuid).boxed(),
            Ty::Struct(fields) => fields
                .iter()
                .map(|(id, t)| {
                    let (id, tt) = (*id, t.ttype());
                    val_strategy(t).prop_map(move |v| (id, tt, v))
                })
                .collect::<Vec<_>>()
                .prop_map(Val::Struct)
                .boxed(),
            Ty::List(t) => {
                let tt = t.ttype();
                prop::collection::vec(val_strategy(t), items())
                    .prop_map(move |vs| Val::List(tt, vs))
                    .boxed()
            }
            Ty::Set(t) => {
                let tt = t.ttype();
                prop::collection::vec(val_strategy(t), items())
                    .prop_map(move |vs| Val::Set(tt, vs))
                    .boxed()
            }
            Ty::Map(k, v) => {
                let (kt, vt) = (k.ttype(), v.ttype());
                prop::collection::vec((val_strategy(k), val_strategy(v)), items())
                    .prop_map(move |ps| Val::Map(kt, vt, ps))
                    .boxed()
            }
        }
    }

    /// A whole message: header fields and an args/result struct.
    fn message_strategy() -> impl Strategy<Value = (bool, u8, String, i32, Val)> {
        let body = prop::collection::vec((any::<i16>(), ty_strategy()), 0..6)
            .prop_flat_map(|fields| val_strategy(&Ty::Struct(fields)));
        (any::<bool>(), 1u8..=4, "[a-z_]{0,12}", any::<i32>(), body)
    }

    fn encode_message(strict: bool, kind: u8, name: &str, seq: i32, body: &Val) -> Vec<u8> {
        let kind = TMessageType::try_from(kind).unwrap();
        encode(strict, kind, name, seq, |o| write_val(o, body))
    }

    /// How many bytes Thrift's own reader consumes to read the message's
    /// header and skip its struct.
    fn thrift_reader_length(buf: &[u8]) -> u64 {
        let mut cursor = Cursor::new(buf);
        let mut i = TBinaryInputProtocol::new(&mut cursor, false);
        i.read_message_begin().unwrap();
        i.skip(TType::Struct).unwrap();
        i.read_message_end().unwrap();
        cursor.position()
    }

    /// Checks what `scan` promises about growing buffers: over the prefixes
    /// of `buf`, `Ok(None)` until one length, then the same answer for every
    /// longer prefix, with a frame never longer than the bytes it came from.
    ///
    /// A [`Scanner`] fed the same growing prefixes, one byte more each time,
    /// gives the same answers until it settles, never finds a message shorter
    /// than it said it wanted, and never wants more than the message holds.
    fn check_prefixes(buf: &[u8], limits: &Limits) {
        let whole = scan(buf, limits);
        let mut settled = false;
        let mut scanner = Scanner::new();
        let mut scanner_settled = false;
        for cut in 0..=buf.len() {
            let got = scan(&buf[..cut], limits);
            if let Ok(Some(frame)) = &got {
                assert!(frame.len <= cut);
            }
            if settled || got != Ok(None) {
                assert_eq!(got, whole, "prefix of {cut} bytes");
                settled = true;
            }
            if !scanner_settled {
                let wanted = scanner.wanted();
                let resumed = scanner.scan(&buf[..cut], limits);
                assert_eq!(resumed, got, "resumed scan of a prefix of {cut} bytes");
                if resumed != Ok(None) {
                    if resumed.is_ok() {
                        assert!(cut >= wanted, "found at {cut} bytes, wanted {wanted}");
                    }
                    scanner_settled = true;
                } else if let Ok(Some(frame)) = &whole {
                    assert!(scanner.wanted() <= frame.len, "wants more than the message");
                }
            }
        }
    }

    /// Feeds `buf` to one scanner in the pieces `cuts` makes, as a reader
    /// would, and returns its first settled answer.
    fn scan_in_pieces(
        buf: &[u8],
        cuts: &[usize],
        limits: &Limits,
    ) -> Result<Option<Frame>, FrameError> {
        let mut scanner = Scanner::new();
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        ends.push(buf.len());
        ends.sort_unstable();
        for end in ends {
            if let Some(answer) = scanner.scan(&buf[..end], limits).transpose() {
                return answer.map(Some);
            }
        }
        Ok(None)
    }

    #[test]
    fn a_resumed_scan_does_not_walk_again_what_it_has_walked() {
        // A list of 100,000 i64 fed 1 KB at a time: each scan starts where the
        // last whole element ended.
        let buf = encode(true, TMessageType::Call, "put", 1, |o| {
            begin(o)?;
            field(o, TType::List, 1)?;
            o.write_list_begin(&TListIdentifier::new(TType::I64, 100_000))?;
            for n in 0..100_000 {
                o.write_i64(n)?;
            }
            o.write_list_end()?;
            end(o)
        });
        let mut scanner = Scanner::new();
        let mut end = 0;
        while end < buf.len() {
            end = (end + 1000).min(buf.len());
            let walked_before = scanner.pos;
            match scanner.scan(&buf[..end], &Limits::default()).unwrap() {
                Some(frame) => assert_eq!(frame.len, buf.len()),
                None => {
                    assert!(scanner.pos >= walked_before, "never goes back");
                    assert!(end - scanner.pos < 8, "stops within one element of the end");
                }
            }
        }
    }

    #[test]
    fn a_declared_string_says_how_many_bytes_the_message_wants() {
        let header_and_length = {
            let mut buf = strict_header("store");
            buf.extend_from_slice(&[11, 0, 2]); // field 2: a string
            buf.extend_from_slice(&1_000_000i32.to_be_bytes());
            buf
        };
        let mut scanner = Scanner::new();
        assert_eq!(
            scanner.scan(&header_and_length, &Limits::default()),
            Ok(None)
        );
        // The string, then at least a STOP.
        assert_eq!(scanner.wanted(), header_and_length.len() + 1_000_000 + 1);
    }

    proptest! {
        // The cases proptest once shrank to are kept under tests/ (the top
        // level of the repository holds only the designed folders).
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                "tests/proptest-regressions/frame.txt",
            ))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_bytes_never_panic_and_answers_only_settle_once(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            check_prefixes(&bytes, &Limits::default());
        }

        #[test]
        fn random_bodies_after_a_valid_header_never_panic(
            strict in any::<bool>(),
            body in prop::collection::vec(
                prop_oneof![3 => 0u8..=16, 1 => any::<u8>()], 0..200),
            max_message in 20usize..400,
        ) {
            let mut buf = encode(strict, TMessageType::Call, "put", 1, |_| Ok(()));
            buf.extend_from_slice(&body);
            let limits = Limits { max_message, max_container: 50, max_depth: 8 };
            check_prefixes(&buf, &limits);
        }

        #[test]
        fn random_valid_messages_are_found_to_the_exact_byte(
            (strict, kind, name, seq, body) in message_strategy(),
            trailing in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let buf = encode_message(strict, kind, &name, seq, &body);
            let frame = scan_default(&buf).unwrap().unwrap();
            prop_assert_eq!(frame.len, buf.len());
            prop_assert_eq!(frame.len as u64, thrift_reader_length(&buf));
            prop_assert_eq!(&frame.name, &name);
            prop_assert_eq!(frame.seq, seq);
            prop_assert_eq!(frame.strict, strict);
            prop_assert_eq!(frame.kind, MessageKind::from_byte(kind).unwrap());
            let mut longer = buf.clone();
            longer.extend_from_slice(&trailing);
            prop_assert_eq!(scan_default(&longer).unwrap().unwrap(), frame);
        }

        #[test]
        fn random_valid_messages_fed_in_random_pieces_are_found_the_same(
            (strict, kind, name, seq, body) in message_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let buf = encode_message(strict, kind, &name, seq, &body);
            let limits = Limits::default();
            prop_assert_eq!(scan_in_pieces(&buf, &cuts, &limits), scan(&buf, &limits));
        }

        #[test]
        fn random_truncations_of_valid_messages_need_more_bytes(
            (strict, kind, name, seq, body) in message_strategy(),
            cut in any::<prop::sample::Index>(),
        ) {
            let buf = encode_message(strict, kind, &name, seq, &body);
            let cut = cut.index(buf.len());
            prop_assert_eq!(scan_default(&buf[..cut]), Ok(None));
        }

        #[test]
        fn single_byte_corruptions_of_valid_messages_never_panic(
            (strict, kind, name, seq, body) in message_strategy(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut buf = encode_message(strict, kind, &name, seq, &body);
            let at = at.index(buf.len());
            buf[at] ^= flip;
            let limits = Limits { max_message: 4096, max_container: 100, max_depth: 16 };
            check_prefixes(&buf, &limits);
        }
    }
}
