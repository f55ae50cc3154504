//! The hot requests, decoded and encoded by hand: `get`, `put`, `fetch`,
//! `store`, `erase`, the `relay_*` forwards and `probe`, the calls that may
//! wait on other nodes. [`decode`] reads one into a [`Call`] (one decode, so
//! the value is copied out of the message once); the node serves it; and
//! [`encode_reply`] writes the answer in exactly the bytes the generated
//! processor would. The tests below check both against the generated code,
//! byte for byte, with strict and non-strict headers.
//!
//! A message this decoder does not take as it is (a required field missing,
//! a field of an unexpected type) is left to the generated processor, so
//! malformed input is answered exactly as before.

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind, TThriftClient};

use super::conn::protocol_config;
use super::convert;
use super::frame::Limits;
use super::idl::diststore::{Lookup, StoreError};
use super::idl::locator::Location;
use crate::addr::NodeAddr;
use crate::error::Error;
use crate::store::Stored;
use crate::version::Version;

/// The methods this module decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// 2009 `get`: a string, `""` when absent; errors as exceptions.
    Get,
    /// 2009 oneway `put`.
    Put,
    /// `fetch`.
    Fetch,
    /// `store`.
    Store,
    /// `erase`.
    Erase,
    /// `relay_fetch`: answers with the copy's version.
    RelayFetch,
    /// `relay_store`.
    RelayStore,
    /// `relay_erase`.
    RelayErase,
    /// `probe`: an indirect probe for a peer.
    Probe,
}

impl Method {
    /// The method named `name`, if it is one of these.
    pub fn named(name: &str) -> Option<Method> {
        Some(match name {
            "get" => Method::Get,
            "put" => Method::Put,
            "fetch" => Method::Fetch,
            "store" => Method::Store,
            "erase" => Method::Erase,
            "relay_fetch" => Method::RelayFetch,
            "relay_store" => Method::RelayStore,
            "relay_erase" => Method::RelayErase,
            "probe" => Method::Probe,
            _ => return None,
        })
    }

    /// The method's name in the IDL.
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Fetch => "fetch",
            Method::Store => "store",
            Method::Erase => "erase",
            Method::RelayFetch => "relay_fetch",
            Method::RelayStore => "relay_store",
            Method::RelayErase => "relay_erase",
            Method::Probe => "probe",
        }
    }
}

/// A decoded request, in domain terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    /// `get`, `fetch`, `relay_fetch`.
    Read {
        /// The key.
        key: Vec<u8>,
        /// Forwards so far.
        hops: i8,
    },
    /// `put`, `store`, `erase` and their relays.
    Write {
        /// The key.
        key: Vec<u8>,
        /// The value; `None` erases.
        value: Option<Vec<u8>>,
        /// Forwards so far.
        hops: i8,
        /// The write's version, if relayed (the entry node took it).
        version: Option<Version>,
        /// When the relaying node stops waiting, if relayed.
        expires: Option<i64>,
    },
    /// `probe`: ping a member on a peer's behalf (`None`: no address given).
    Probe(Option<NodeAddr>),
}

/// A request as [`decode`] found it.
#[derive(Debug)]
pub struct Decoded {
    /// Its method.
    pub method: Method,
    /// Its sequence number, for the reply.
    pub seq: i32,
    /// What it asks.
    pub call: Call,
}

/// What the node answered to a [`Call`].
#[derive(Debug)]
pub enum Answer {
    /// A read's copy, tombstone included (`None`: never seen).
    Copy(Option<Stored>),
    /// A write was stored.
    Done,
    /// Whether the probed member answered.
    Probed(bool),
}

/// Decodes `message` (a whole call, found by `frame::scan`), or `None` when
/// it is not one of [`Method`]'s or not in the shape this decoder takes.
pub fn decode(message: &[u8], strict: bool, limits: &Limits) -> Option<Decoded> {
    // Nothing in a message is longer than the message (see server::process).
    let within = Limits {
        max_message: message.len(),
        ..*limits
    };
    let mut input = TBinaryInputProtocol::with_config(message, strict, protocol_config(&within));
    let header = input.read_message_begin().ok()?;
    let method = Method::named(&header.name)?;
    let args = Args::read(&mut input, method).ok()??;
    input.read_message_end().ok()?;
    Some(Decoded {
        method,
        seq: header.sequence_number,
        call: args,
    })
}

/// The arguments of one method, read field by field.
struct Args;

impl Args {
    /// `Ok(None)`: a required field is missing or has another type.
    fn read(input: &mut dyn TInputProtocol, method: Method) -> thrift::Result<Option<Call>> {
        let mut key = None;
        let mut value = None;
        let mut hops = None;
        let mut expires = None;
        let mut stamp = None;
        let mut origin = None;
        let mut target = None;
        input.read_struct_begin()?;
        loop {
            let field = input.read_field_begin()?;
            if field.field_type == TType::Stop {
                break;
            }
            let slot = match (method, field.id) {
                (Method::Probe, Some(1)) => Slot::Location,
                (_, Some(1)) => Slot::Key,
                (Method::Put | Method::Store | Method::RelayStore, Some(2)) => Slot::Value,
                (Method::RelayFetch | Method::RelayStore | Method::RelayErase, Some(n))
                    if n == Self::hops_id(method) =>
                {
                    Slot::Hops
                }
                (Method::RelayStore | Method::RelayErase, Some(n))
                    if n == Self::hops_id(method) + 1 =>
                {
                    Slot::Expires
                }
                (Method::RelayStore | Method::RelayErase, Some(n))
                    if n == Self::hops_id(method) + 2 =>
                {
                    Slot::Stamp
                }
                (Method::RelayStore | Method::RelayErase, Some(n))
                    if n == Self::hops_id(method) + 3 =>
                {
                    Slot::Origin
                }
                _ => Slot::Skip,
            };
            // The generated code reads a known field by its declared type
            // whatever type the sender named; leave such oddities to it.
            if slot.wire_type().is_some_and(|ty| ty != field.field_type) {
                return Ok(None);
            }
            // The 2009 methods take text, and the generated code refuses
            // bytes that are not UTF-8.
            let text = matches!(method, Method::Get | Method::Put);
            match slot {
                Slot::Key | Slot::Value if text => {
                    let read = input.read_string()?.into_bytes();
                    match slot {
                        Slot::Key => key = Some(read),
                        _ => value = Some(read),
                    }
                }
                Slot::Key => key = Some(input.read_bytes()?),
                Slot::Value => value = Some(input.read_bytes()?),
                Slot::Hops => hops = Some(input.read_i8()?),
                Slot::Expires => expires = Some(input.read_i64()?),
                Slot::Stamp => stamp = Some(input.read_i64()?),
                Slot::Origin => origin = Some(input.read_i32()?),
                Slot::Location => target = Some(Location::read_from_in_protocol(input)?),
                Slot::Skip => input.skip(field.field_type)?,
            }
            input.read_field_end()?;
        }
        input.read_struct_end()?;
        let relayed = |key, value| {
            Some(Call::Write {
                key,
                value,
                hops: hops?,
                version: Some(convert::version(stamp?, origin?)),
                expires: Some(expires?),
            })
        };
        let plain = |key, value| Call::Write {
            key,
            value,
            hops: 0,
            version: None,
            expires: None,
        };
        Ok(match method {
            Method::Probe => target.map(|t| Call::Probe(convert::addr(&t))),
            Method::Get | Method::Fetch => key.map(|key| Call::Read { key, hops: 0 }),
            Method::RelayFetch => key.zip(hops).map(|(key, hops)| Call::Read { key, hops }),
            Method::Put | Method::Store => key.zip(value).map(|(k, v)| plain(k, Some(v))),
            Method::Erase => key.map(|k| plain(k, None)),
            Method::RelayStore => key.zip(value).and_then(|(k, v)| relayed(k, Some(v))),
            Method::RelayErase => key.and_then(|k| relayed(k, None)),
        })
    }

    /// The field id of `hops` (the field after the value, or after the key).
    fn hops_id(method: Method) -> i16 {
        match method {
            Method::RelayStore => 3,
            _ => 2,
        }
    }
}

/// Where a field goes.
enum Slot {
    Key,
    Value,
    Hops,
    Expires,
    Stamp,
    Origin,
    Location,
    Skip,
}

impl Slot {
    fn wire_type(&self) -> Option<TType> {
        Some(match self {
            Slot::Key | Slot::Value => TType::String,
            Slot::Hops => TType::I08,
            Slot::Expires | Slot::Stamp => TType::I64,
            Slot::Origin => TType::I32,
            Slot::Location => TType::Struct,
            Slot::Skip => return None,
        })
    }
}

/// Writes the reply to call `seq` of `method` appended to `out`: the
/// bytes the generated processor writes for the same outcome. A oneway `put`
/// gets none.
pub fn encode_reply(
    method: Method,
    seq: i32,
    strict: bool,
    outcome: Result<Answer, Error>,
    out: &mut Vec<u8>,
) {
    if method == Method::Put {
        if let Err(e) = outcome {
            // Oneway: nobody hears an error, so log it rather than return it.
            log::warn!("put failed: {e}");
        }
        return;
    }
    // A value's reply is the value and a few dozen bytes: reserve it exactly
    // rather than let the buffer double past it (the server counts the
    // buffer's capacity against the node's budget of bytes in flight).
    if let Ok(Answer::Copy(Some(Stored {
        value: Some(value), ..
    }))) = &outcome
    {
        out.reserve_exact(value.len() + method.name().len() + 256);
    }
    let mut o = TBinaryOutputProtocol::new(&mut *out, strict);
    // Writing to memory cannot fail.
    let _ = write_reply(&mut o, method, seq, outcome);
}

/// Methods whose IDL declares `throws (1: StoreError err)`: a refusal is
/// answered as that exception (with its kind); other methods get a Thrift
/// application exception carrying the same message.
pub const STORE_ERROR_METHODS: [&str; 18] = [
    "fetch",
    "store",
    "erase",
    "describe",
    "read_range",
    "begin_upload",
    "upload_part",
    "commit_upload",
    "authenticate",
    "relay_fetch",
    "relay_store",
    "relay_erase",
    "peek",
    "diff_buckets",
    "reconcile",
    "replica_read",
    "replicate",
    "absorb",
];

/// Encodes into `out` the reply refusing a call of `method` with `error`,
/// for any method (see [`STORE_ERROR_METHODS`]).
pub fn encode_refusal(method: &str, seq: i32, strict: bool, error: &Error, out: &mut Vec<u8>) {
    out.clear();
    let mut o = TBinaryOutputProtocol::new(&mut *out, strict);
    // Writing to memory cannot fail.
    let _ = write_refusal(&mut o, method, seq, error);
}

fn write_refusal(
    o: &mut dyn TOutputProtocol,
    method: &str,
    seq: i32,
    error: &Error,
) -> thrift::Result<()> {
    if STORE_ERROR_METHODS.contains(&method) {
        o.write_message_begin(&TMessageIdentifier::new(method, TMessageType::Reply, seq))?;
        o.write_struct_begin(&TStructIdentifier::new("result"))?;
        o.write_field_begin(&TFieldIdentifier::new("err", TType::Struct, 1))?;
        convert::store_error(error).write_to_out_protocol(o)?;
        o.write_field_end()?;
        return finish(o);
    }
    let app = ApplicationError::new(ApplicationErrorKind::Unknown, error.to_string());
    o.write_message_begin(&TMessageIdentifier::new(
        method,
        TMessageType::Exception,
        seq,
    ))?;
    thrift::Error::write_application_error_to_out_protocol(&app, o)?;
    o.write_message_end()?;
    o.flush()
}

fn write_reply(
    o: &mut dyn TOutputProtocol,
    method: Method,
    seq: i32,
    outcome: Result<Answer, Error>,
) -> thrift::Result<()> {
    let name = method.name();
    // The 2009 `get` and `probe` declare no exception: errors travel as
    // application errors, as the handler raised them.
    let declares_error = !matches!(method, Method::Get | Method::Probe);
    let answer = match outcome {
        Ok(answer) => answer,
        Err(error) if declares_error => {
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seq))?;
            o.write_struct_begin(&TStructIdentifier::new("result"))?;
            o.write_field_begin(&TFieldIdentifier::new("err", TType::Struct, 1))?;
            convert::store_error(&error).write_to_out_protocol(o)?;
            o.write_field_end()?;
            return finish(o);
        }
        Err(error) => {
            let app = ApplicationError::new(ApplicationErrorKind::InternalError, error.to_string());
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Exception, seq))?;
            thrift::Error::write_application_error_to_out_protocol(&app, o)?;
            o.write_message_end()?;
            return o.flush();
        }
    };
    o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seq))?;
    o.write_struct_begin(&TStructIdentifier::new("result"))?;
    match (method, answer) {
        (Method::Get, Answer::Copy(copy)) => {
            // The 2009 interface answers "" for a missing key, and its values
            // are text.
            let value = copy.and_then(|c| c.value);
            let text = value
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            o.write_field_begin(&TFieldIdentifier::new("success", TType::String, 0))?;
            o.write_string(&text)?;
            o.write_field_end()?;
        }
        (Method::Fetch, Answer::Copy(copy)) => {
            let lookup = Lookup::new(copy.and_then(|c| c.value), None, None);
            o.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
            lookup.write_to_out_protocol(o)?;
            o.write_field_end()?;
        }
        (Method::RelayFetch, Answer::Copy(copy)) => {
            o.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
            convert::lookup(copy).write_to_out_protocol(o)?;
            o.write_field_end()?;
        }
        (Method::Probe, Answer::Probed(answered)) => {
            o.write_field_begin(&TFieldIdentifier::new("success", TType::Bool, 0))?;
            o.write_bool(answered)?;
            o.write_field_end()?;
        }
        (_, Answer::Done) => {}
        (method, answer) => {
            // A bug: say so to the caller instead of inventing an answer.
            let error = StoreError::new(
                format!("internal error: {method:?} answered with {answer:?}"),
                None,
            );
            o.write_field_begin(&TFieldIdentifier::new("err", TType::Struct, 1))?;
            error.write_to_out_protocol(o)?;
            o.write_field_end()?;
        }
    }
    finish(o)
}

fn finish(o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_message_end()?;
    o.flush()
}

/// Calls `store(key, value)` on `client` and reads its reply, writing the
/// value from a borrowed slice: the generated client takes the value by value
/// and drops it, so retrying a chunk at another member, or reusing its buffer
/// for the next chunk, would need a copy of every chunk. A unit test checks
/// it against the generated client byte for byte.
pub(crate) fn store_borrowed(
    client: &mut impl TThriftClient,
    key: &[u8],
    value: &[u8],
) -> thrift::Result<()> {
    use thrift::protocol::{
        field_id, verify_expected_message_type, verify_expected_sequence_number,
        verify_expected_service_call,
    };
    client.increment_sequence_number();
    let seq = client.sequence_number();
    let out = client.o_prot_mut();
    out.write_message_begin(&TMessageIdentifier::new("store", TMessageType::Call, seq))?;
    out.write_struct_begin(&TStructIdentifier::new("store_args"))?;
    out.write_field_begin(&TFieldIdentifier::new("key", TType::String, 1))?;
    out.write_bytes(key)?;
    out.write_field_end()?;
    out.write_field_begin(&TFieldIdentifier::new("value", TType::String, 2))?;
    out.write_bytes(value)?;
    out.write_field_end()?;
    out.write_field_stop()?;
    out.write_struct_end()?;
    out.write_message_end()?;
    out.flush()?;

    let input = client.i_prot_mut();
    let ident = input.read_message_begin()?;
    verify_expected_sequence_number(seq, ident.sequence_number)?;
    verify_expected_service_call("store", &ident.name)?;
    if ident.message_type == TMessageType::Exception {
        let remote = thrift::Error::read_application_error_from_in_protocol(input)?;
        input.read_message_end()?;
        return Err(thrift::Error::Application(remote));
    }
    verify_expected_message_type(TMessageType::Reply, ident.message_type)?;
    // The result struct: field 1 is the declared StoreError; void success
    // has no field of its own.
    input.read_struct_begin()?;
    let mut raised = None;
    loop {
        let field = input.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        if field_id(&field)? == 1 {
            raised = Some(StoreError::read_from_in_protocol(input)?);
        } else {
            input.skip(field.field_type)?;
        }
        input.read_field_end()?;
    }
    input.read_struct_end()?;
    input.read_message_end()?;
    match raised {
        Some(error) => Err(thrift::Error::User(Box::new(error))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
