//! The hand-written codec against the generated code, byte for byte.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;

use super::*;
use crate::wire::idl::diststore::{
    Entry, Fetched, Item, KeyPage, Lease, LeaseOp, Outcome, PeerSyncClient, PeerSyncHandler,
    PeerSyncProcessor, Replica, StoreSyncHandler, TPeerSyncClient, TStoreSyncClient, ValueInfo,
    WriteOptions,
};
use crate::wire::idl::locator::{
    BaseSyncHandler, Location, LocatorSyncHandler, Member, TBaseSyncClient,
};

/// A write-side transport whose bytes the test can take afterwards.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes the generated client sends for `call`, with a strict or
/// non-strict header. `seq` calls are made first so the numbers differ.
fn generated_call(
    strict: bool,
    seq: i32,
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<()>,
) -> Vec<u8> {
    let out = Shared::default();
    let mut client = PeerSyncClient::new(
        TBinaryInputProtocol::new(io::empty(), strict),
        TBinaryOutputProtocol::new(out.clone(), strict),
    );
    for _ in 1..seq {
        let _ = client.ping();
    }
    out.0.borrow_mut().clear();
    // The call fails reading a reply from `io::empty()`; the request is out.
    let _ = call(&mut client);
    out.0.take()
}

fn key() -> Vec<u8> {
    b"k\xffey".to_vec()
}

#[test]
fn every_hot_call_decodes_to_what_the_generated_client_sent() {
    let v = Some(Version {
        stamp: 77,
        origin: 5,
    });
    for strict in [true, false] {
        let cases: Vec<(Method, Vec<u8>, Call)> = vec![
            (
                Method::Get,
                generated_call(strict, 3, |c| c.get("text".into()).map(drop)),
                Call::Read {
                    key: b"text".to_vec(),
                    hops: 0,
                },
            ),
            (
                Method::Put,
                generated_call(strict, 3, |c| c.put("a".into(), "apple".into())),
                Call::Write {
                    key: b"a".to_vec(),
                    value: Some(b"apple".to_vec()),
                    hops: 0,
                    version: None,
                    expires: None,
                },
            ),
            (
                Method::Fetch,
                generated_call(strict, 3, |c| c.fetch(key()).map(drop)),
                Call::Read {
                    key: key(),
                    hops: 0,
                },
            ),
            (
                Method::Store,
                generated_call(strict, 3, |c| c.store(key(), vec![0, 1, 2])),
                Call::Write {
                    key: key(),
                    value: Some(vec![0, 1, 2]),
                    hops: 0,
                    version: None,
                    expires: None,
                },
            ),
            (
                Method::Erase,
                generated_call(strict, 3, |c| c.erase(key())),
                Call::Write {
                    key: key(),
                    value: None,
                    hops: 0,
                    version: None,
                    expires: None,
                },
            ),
            (
                Method::RelayFetch,
                generated_call(strict, 3, |c| c.relay_fetch(key(), 2).map(drop)),
                Call::Read {
                    key: key(),
                    hops: 2,
                },
            ),
            (
                Method::RelayStore,
                generated_call(strict, 3, |c| c.relay_store(key(), vec![9], 1, -4, 77, 5)),
                Call::Write {
                    key: key(),
                    value: Some(vec![9]),
                    hops: 1,
                    version: v,
                    expires: Some(-4),
                },
            ),
            (
                Method::RelayErase,
                generated_call(strict, 3, |c| c.relay_erase(key(), 1, 9, 77, 5)),
                Call::Write {
                    key: key(),
                    value: None,
                    hops: 1,
                    version: v,
                    expires: Some(9),
                },
            ),
            (
                Method::Probe,
                generated_call(strict, 3, |c| {
                    c.probe(Location::new("h".to_string(), 40000u16 as i16))
                        .map(drop)
                }),
                Call::Probe(Some(NodeAddr::new("h", 40000))),
            ),
        ];
        for (method, bytes, call) in cases {
            let decoded = decode(&bytes, strict, &Limits::default())
                .unwrap_or_else(|| panic!("{method:?} (strict {strict}) did not decode"));
            assert_eq!(decoded.method, method);
            assert_eq!(decoded.seq, 3);
            assert_eq!(decoded.call, call, "{method:?} strict {strict}");
        }
    }
}

#[test]
fn malformed_hot_calls_are_left_to_the_generated_processor() {
    let limits = Limits::default();
    // A missing required field: `relay_store` without its origin.
    let full = generated_call(true, 1, |c| {
        c.relay_store(b"k".to_vec(), vec![1], 0, 0, 0, 7)
    });
    // Cut the origin field (type, id, i32: 7 bytes) before the stop byte.
    let mut cut = full[..full.len() - 8].to_vec();
    cut.push(0);
    assert!(decode(&cut, true, &limits).is_none());
    // A key that is not UTF-8 for the 2009 `get`.
    let text = generated_call(true, 1, |c| c.get("ab".into()).map(drop));
    let bad = text
        .iter()
        .map(|&b| if b == b'a' { 0xff } else { b })
        .collect::<Vec<_>>();
    assert!(decode(&bad, true, &limits).is_none());
    // Not a hot method.
    let ping = generated_call(true, 1, |c| c.ping());
    assert!(decode(&ping, true, &limits).is_none());
}

/// The outcome the stub handler gives, for one call.
#[derive(Clone)]
enum Canned {
    Copy(Option<Stored>),
    Done,
    Probed(bool),
    Fail(String),
}

/// Answers the hot methods with a canned outcome; nothing else is called.
struct Stub(Canned);

impl Stub {
    fn error(&self) -> Option<String> {
        match &self.0 {
            Canned::Fail(message) => Some(message.clone()),
            _ => None,
        }
    }
    fn store_error(&self) -> thrift::Result<()> {
        match self.error() {
            Some(message) => Err(thrift::Error::User(Box::new(convert::store_error(
                &Error::Storage(message),
            )))),
            None => Ok(()),
        }
    }
    fn copy(&self) -> Option<Stored> {
        match &self.0 {
            Canned::Copy(copy) => copy.clone(),
            _ => None,
        }
    }
}

fn app(message: String) -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        Error::Storage(message).to_string(),
    ))
}

impl BaseSyncHandler for Stub {
    fn handle_ping(&self) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_service_type(&self) -> thrift::Result<String> {
        unreachable!()
    }
    fn handle_service_types(&self) -> thrift::Result<Vec<String>> {
        unreachable!()
    }
    fn handle_debug(&self) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_die(&self) -> thrift::Result<()> {
        unreachable!()
    }
}

impl LocatorSyncHandler for Stub {
    fn handle_join(&self, _: Location) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_remove(&self, _: Location, _: Vec<Location>) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_add(&self, _: Location, _: Vec<Location>) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_get_all(&self) -> thrift::Result<Vec<Location>> {
        unreachable!()
    }
    fn handle_get_node(&self, _: String) -> thrift::Result<Location> {
        unreachable!()
    }
    fn handle_locate(&self, _: Vec<u8>) -> thrift::Result<Location> {
        unreachable!()
    }
    fn handle_replicas(&self, _: Vec<u8>, _: i32) -> thrift::Result<Vec<Location>> {
        unreachable!()
    }
}

impl StoreSyncHandler for Stub {
    fn handle_get(&self, _: String) -> thrift::Result<String> {
        if let Some(message) = self.error() {
            return Err(app(message));
        }
        let value = self.copy().and_then(|c| c.value).unwrap_or_default();
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
    fn handle_put(&self, _: String, _: String) -> thrift::Result<()> {
        Ok(())
    }
    fn handle_fetch(&self, _: Vec<u8>) -> thrift::Result<Lookup> {
        self.store_error()?;
        Ok(Lookup::new(self.copy().and_then(|c| c.value), None, None))
    }
    fn handle_store(&self, _: Vec<u8>, _: Vec<u8>) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_erase(&self, _: Vec<u8>) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_store_with(&self, _: Vec<u8>, _: Vec<u8>, _: WriteOptions) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_append(&self, _: Vec<u8>, _: Vec<u8>, _: WriteOptions) -> thrift::Result<i64> {
        self.store_error().map(|()| 0)
    }
    fn handle_lock(&self, _: Vec<u8>, _: i64) -> thrift::Result<Lease> {
        self.store_error().map(|()| Lease::default())
    }
    fn handle_unlock(&self, _: Vec<u8>, _: i64) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_renew(&self, _: Vec<u8>, _: i64, _: i64) -> thrift::Result<Lease> {
        self.store_error().map(|()| Lease::default())
    }
    fn handle_stats(&self) -> thrift::Result<BTreeMap<String, i64>> {
        unreachable!()
    }
    fn handle_list_keys(&self, _: Vec<u8>, _: Vec<u8>, _: i32) -> thrift::Result<KeyPage> {
        unreachable!()
    }
    fn handle_fetch_many(&self, _: Vec<Vec<u8>>) -> thrift::Result<Vec<Fetched>> {
        unreachable!()
    }
    fn handle_store_many(&self, _: Vec<Item>) -> thrift::Result<Vec<Outcome>> {
        unreachable!()
    }
    fn handle_members(&self) -> thrift::Result<Vec<Member>> {
        unreachable!()
    }
    fn handle_describe(&self, _: Vec<u8>) -> thrift::Result<ValueInfo> {
        unreachable!()
    }
    fn handle_read_range(&self, _: Vec<u8>, _: i64, _: i32, _: i64) -> thrift::Result<Vec<u8>> {
        unreachable!()
    }
    fn handle_begin_upload(&self, _: Vec<u8>) -> thrift::Result<i64> {
        unreachable!()
    }
    fn handle_upload_part(&self, _: Vec<u8>, _: i64, _: i64, _: Vec<u8>) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_commit_upload(&self, _: Vec<u8>, _: i64) -> thrift::Result<ValueInfo> {
        unreachable!()
    }
    fn handle_hello(&self, _: Vec<u8>) -> thrift::Result<Vec<u8>> {
        unreachable!()
    }
    fn handle_authenticate(&self, _: String, _: Vec<u8>) -> thrift::Result<Vec<u8>> {
        unreachable!()
    }
}

impl PeerSyncHandler for Stub {
    fn handle_enter(&self, _: Member) -> thrift::Result<Vec<Member>> {
        unreachable!()
    }
    fn handle_gossip(&self, _: Vec<Member>) -> thrift::Result<Vec<Member>> {
        unreachable!()
    }
    fn handle_probe(&self, _: Location) -> thrift::Result<bool> {
        match (&self.0, self.error()) {
            (_, Some(message)) => Err(app(message)),
            (Canned::Probed(answered), None) => Ok(*answered),
            _ => unreachable!(),
        }
    }
    fn handle_isolate(&self, _: bool) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_relay_fetch(&self, _: Vec<u8>, _: i8) -> thrift::Result<Lookup> {
        self.store_error()?;
        Ok(convert::lookup(self.copy()))
    }
    fn handle_relay_store(
        &self,
        _: Vec<u8>,
        _: Vec<u8>,
        _: i8,
        _: i64,
        _: i64,
        _: i32,
    ) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_relay_lease(
        &self,
        _: Vec<u8>,
        _: LeaseOp,
        _: i64,
        _: i64,
        _: i8,
    ) -> thrift::Result<Lease> {
        self.store_error().map(|()| Lease::default())
    }
    fn handle_relay_write_with(
        &self,
        _: Vec<u8>,
        _: Vec<u8>,
        _: WriteOptions,
        _: bool,
        _: i8,
    ) -> thrift::Result<i64> {
        self.store_error().map(|()| 0)
    }
    fn handle_relay_erase(&self, _: Vec<u8>, _: i8, _: i64, _: i64, _: i32) -> thrift::Result<()> {
        self.store_error()
    }
    fn handle_peek(&self, _: Vec<Vec<u8>>) -> thrift::Result<Vec<Entry>> {
        unreachable!()
    }
    fn handle_diff_buckets(&self, _: Location, _: Vec<i64>) -> thrift::Result<Vec<i32>> {
        unreachable!()
    }
    fn handle_reconcile(
        &self,
        _: Location,
        _: Vec<i32>,
        _: Vec<Entry>,
    ) -> thrift::Result<Vec<Entry>> {
        unreachable!()
    }
    fn handle_heartbeat(&self, _: i64, _: Location) -> thrift::Result<i64> {
        unreachable!()
    }
    fn handle_replica_read(&self, _: Vec<u8>, _: i64) -> thrift::Result<Replica> {
        unreachable!()
    }
    fn handle_replicate(&self, _: Vec<Entry>, _: i64) -> thrift::Result<()> {
        unreachable!()
    }
    fn handle_absorb(&self, _: Vec<Entry>) -> thrift::Result<()> {
        unreachable!()
    }
}

/// What the generated processor writes for `message` when the handler gives
/// `canned`.
fn generated_reply(message: &[u8], strict: bool, canned: Canned) -> Vec<u8> {
    let processor = PeerSyncProcessor::new(Stub(canned));
    let mut reply = Vec::new();
    let mut input = TBinaryInputProtocol::new(message, strict);
    let mut output = TBinaryOutputProtocol::new(&mut reply, strict);
    processor.process(&mut input, &mut output).unwrap();
    reply
}

fn ours(message: &[u8], strict: bool, canned: Canned) -> Vec<u8> {
    let decoded = decode(message, strict, &Limits::default()).unwrap();
    let outcome = match canned {
        Canned::Copy(copy) => Ok(Answer::Copy(copy)),
        Canned::Done => Ok(Answer::Done),
        Canned::Probed(answered) => Ok(Answer::Probed(answered)),
        Canned::Fail(message) => Err(Error::Storage(message)),
    };
    let mut reply = Vec::new();
    encode_reply(decoded.method, decoded.seq, strict, outcome, &mut reply);
    reply
}

#[test]
fn every_hot_reply_is_what_the_generated_processor_writes() {
    let value = Stored {
        value: Some(b"caf\xc3\xa9 \xff".to_vec()),
        version: Version {
            stamp: 1 << 40,
            origin: 3,
        },
    };
    let tombstone = Stored {
        value: None,
        version: Version {
            stamp: 9,
            origin: 1,
        },
    };
    let copies = [None, Some(value), Some(tombstone)];
    let fail = Canned::Fail("disk full".into());
    for strict in [true, false] {
        let reads: Vec<Vec<u8>> = vec![
            generated_call(strict, 5, |c| c.get("a".into()).map(drop)),
            generated_call(strict, 5, |c| c.fetch(key()).map(drop)),
            generated_call(strict, 5, |c| c.relay_fetch(key(), 1).map(drop)),
        ];
        for message in &reads {
            for copy in &copies {
                let canned = Canned::Copy(copy.clone());
                assert_eq!(
                    ours(message, strict, canned.clone()),
                    generated_reply(message, strict, canned)
                );
            }
            assert_eq!(
                ours(message, strict, fail.clone()),
                generated_reply(message, strict, fail.clone())
            );
        }
        let writes: Vec<Vec<u8>> = vec![
            generated_call(strict, 5, |c| c.store(key(), vec![1])),
            generated_call(strict, 5, |c| c.erase(key())),
            generated_call(strict, 5, |c| c.relay_store(key(), vec![1], 1, 2, 3, 4)),
            generated_call(strict, 5, |c| c.relay_erase(key(), 1, 2, 3, 4)),
        ];
        for message in &writes {
            for canned in [Canned::Done, fail.clone()] {
                assert_eq!(
                    ours(message, strict, canned.clone()),
                    generated_reply(message, strict, canned)
                );
            }
        }
        let probe = generated_call(strict, 5, |c| {
            c.probe(Location::new("h".to_string(), 1)).map(drop)
        });
        for canned in [Canned::Probed(true), Canned::Probed(false), fail.clone()] {
            assert_eq!(
                ours(&probe, strict, canned.clone()),
                generated_reply(&probe, strict, canned)
            );
        }
        // A oneway put gets no reply from either.
        let put = generated_call(strict, 5, |c| c.put("a".into(), "b".into()));
        assert!(ours(&put, strict, Canned::Done).is_empty());
        assert!(generated_reply(&put, strict, Canned::Done).is_empty());
    }
}

/// The generated client over in-memory transports.
type CannedClient =
    PeerSyncClient<TBinaryInputProtocol<io::Cursor<Vec<u8>>>, TBinaryOutputProtocol<Shared>>;

/// A generated client that reads `reply` and records what it sends.
fn canned_client(reply: Vec<u8>) -> (CannedClient, Shared) {
    let sent = Shared::default();
    let client = PeerSyncClient::new(
        TBinaryInputProtocol::new(io::Cursor::new(reply), true),
        TBinaryOutputProtocol::new(sent.clone(), true),
    );
    (client, sent)
}

fn store_reply(seq: i32, outcome: Result<Answer, Error>) -> Vec<u8> {
    let mut reply = Vec::new();
    encode_reply(Method::Store, seq, true, outcome, &mut reply);
    reply
}

#[test]
fn the_borrowed_store_sends_what_the_generated_client_sends() {
    let (mut generated, generated_sent) = canned_client(store_reply(1, Ok(Answer::Done)));
    generated.store(b"k".to_vec(), b"value".to_vec()).unwrap();
    let (mut ours, our_sent) = canned_client(store_reply(1, Ok(Answer::Done)));
    store_borrowed(&mut ours, b"k", b"value").unwrap();
    assert_eq!(our_sent.0.take(), generated_sent.0.take());
}

#[test]
fn the_borrowed_store_reports_the_nodes_error_with_its_kind() {
    let refusal = Err(Error::Quorum {
        stored: 1,
        needed: 2,
    });
    let (mut client, _) = canned_client(store_reply(1, refusal));
    let error = store_borrowed(&mut client, b"k", b"v").unwrap_err();
    let error = crate::wire::conn::call_error(&NodeAddr::new("n", 1), error);
    assert_eq!(error.kind(), crate::error::ErrorKind::Quorum);
}
