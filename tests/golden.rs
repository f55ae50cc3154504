//! Golden bytes: the exact bytes of every RPC of the IDL, requests and replies,
//! pinned in `tests/golden/*.hex` so that a rewrite of the Thrift boundary
//! (hand-encoded hot paths, a new wire module) can be checked byte for byte.
//!
//! # What is pinned
//!
//! - **Requests** (`NAME.request.hex`): for every method of Base, Locator and
//!   Store, the call the generated client writes with fixed, representative
//!   arguments (strict header, sequence id 1): ports above 32767 (negative
//!   i16), keys and values that are not UTF-8, entries with and without a
//!   value, negative i8/i32/i64 fields, all three member statuses. Also a call
//!   to a method the IDL lacks (`no_such_method`), written by hand.
//! - **Replies** (`NAME.reply.hex`): what real `location` nodes (ephemeral ports
//!   on 127.0.0.1) answer when those request bytes arrive over a raw TCP
//!   socket, in a fixed order per node. Each reply is first decoded with the
//!   generated client and its fields asserted; then its bytes are compared.
//!   Exception replies are pinned too: `StoreError` (`diff_buckets` and
//!   `reconcile` from a non-member, an expired `relay_store`),
//!   `TApplicationException` INTERNAL_ERROR (`isolate` without
//!   `--fault-injection`) and UNKNOWN_METHOD (`no_such_method`).
//! - **Oneway methods** (debug, die, join, remove, add, put) have no reply
//!   fixture: the test sends a ping after each, and the ping's reply must be
//!   the next message on the connection. `die` goes last, to the membership
//!   node, which must close the connection without a byte and exit.
//! - **Unversioned headers**: ping, put, get, store and fetch are also sent with
//!   the old header (i32 name length, name, i8 type, i32 seq id). The node
//!   answers with the same bytes as the strict fixture, except that the reply
//!   header is unversioned too: it mirrors the request's header form.
//!
//! # Placeholders
//!
//! Some replies hold values that change from run to run. The test decodes and
//! asserts those values, then zeroes them before comparing; the fixture says
//! which were zeroed (`# masked:`):
//! - the node's port: the i16 of its `Location` (`address` "127.0.0.1", then
//!   field 2) becomes `0000`, and in message text `127.0.0.1:PORT` becomes
//!   `127.0.0.1:00000`;
//! - the membership node's incarnation: the i64 after its own `Location` in its
//!   `Member` row becomes `0000000000000000`.
//! - a storage node's incarnation in its `stats`: the i64 after the map key
//!   `"incarnation"` becomes `0000000000000000`.
//!
//! Every declared mask must match at least once, so a moved value cannot slip
//! past as "nothing to mask". Versions are pinned exactly: the entries `peek`
//! returns are the ones `absorb` stored, with the versions the request carried.
//!
//! # Re-blessing
//!
//! `GOLDEN_BLESS=1 cargo test --test golden` rewrites every fixture from the
//! current code (the decoding assertions still run) and removes fixtures no
//! case produces. Re-bless only when the wire format is *meant* to change, and
//! say so in the commit: the 2009 clients (`thrift/PROTOCOL.md`) and
//! every older node read these bytes. A default run compares, and on a mismatch
//! names the fixture, the first differing offset, and both hex dumps.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TInputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier,
};
use thrift::{ApplicationError, ApplicationErrorKind};
use thrifty_p2p::NodeAddr;
use thrifty_p2p::wire::frame::{self, Limits, MessageKind};
use thrifty_p2p::wire::idl::diststore::{
    Entry, Lookup, PeerSyncClient, StoreError, TPeerSyncClient,
};
use thrifty_p2p::wire::idl::locator::{Location, Member, MemberStatus};

use common::NodeProc;

/// How long a test waits for something it expects to happen.
const PATIENCE: Duration = Duration::from_secs(10);

// ---- Arguments ----

const HOST: &str = "127.0.0.1";

// Members that do not exist. Their ports are above 32767, so they travel as
// negative i16, and above the ephemeral range (32768-60999 on Linux), so no
// test node can be listening there: a node that tries one is refused at once.
/// Enters the membership node (after it heard that incarnation died).
const ENTERING: u16 = 65001;
/// Gossips its table to the membership node (after it heard that
/// incarnation died).
const CALLER: u16 = 65002;
/// Left the ring, as the caller's table says.
const DEPARTED: u16 = 65003;
/// Joins with the 2009 `join`, and is removed with `remove`.
const JOINER: u16 = 65004;
/// Announced with the 2009 `add`.
const ADDED: u16 = 65005;
/// No node knows it: the probe target, and the caller that is refused
/// anti-entropy.
const STRANGER: u16 = 65100;

// Incarnations are a member's start time in milliseconds: these are in 2023
// and 2024, so that a node takes them (one more than an hour ahead of its
// clock is refused as forged).
const ENTERING_INCARNATION: i64 = 1_700_000_000_001;
const CALLER_INCARNATION: i64 = 1_712_345_678_901;
const DEPARTED_INCARNATION: i64 = 1_699_999_999_999;

/// A binary key that is not UTF-8 (0xff, 0xfe) and holds a NUL.
const KEY: &[u8] = b"\xffgolden\x00key\xfe";
/// A binary value with bytes at every boundary: 00, 7f, 80, ff.
const VALUE: &[u8] = b"\x00\x7f\x80\xffvalue";
/// The key of the relayed calls: an overlong (invalid) UTF-8 sequence first.
const RELAY_KEY: &[u8] = b"\xc0\x80relay";
const RELAY_VALUE: &[u8] = b"relayed\xfe";
/// Keys that `absorb` stores and `peek` reads back, with their versions.
const ABSORBED_KEY: &[u8] = b"absorbed\xff";
const ABSORBED_VALUE: &[u8] = b"handed\x00over";
const TOMBSTONE_KEY: &[u8] = b"erased\xfe";
const MISSING_KEY: &[u8] = b"\x00no such key\xff";
/// A hybrid logical clock reading (microseconds << 10, plus a logical count)
/// from November 2023: in the past, so absorbing it leaves the clock alone.
const ABSORBED_VERSION: i64 = (1_700_000_000_000_000 << 10) | 5;
const TOMBSTONE_VERSION: i64 = (1_700_000_000_000_001 << 10) | 1;
/// Origins are u32 hashes carried as i32: one positive, one negative.
const ABSORBED_ORIGIN: i32 = 0x1234_5678;
const TOMBSTONE_ORIGIN: i32 = 0xdead_beef_u32 as i32;
/// The 2009 text interface: a key, and a value that is UTF-8 but not ASCII.
const TEXT_KEY: &str = "golden-key";
const TEXT_VALUE: &str = "h\u{e9}llo w\u{f6}rld \u{2713}";
/// When a relayed write stops being worth applying: 2100-01-01, in microseconds.
const FAR_FUTURE: i64 = 4_102_444_800_000_000;
/// The version a relayed write carries (taken by its entry node): 2026-01-01
/// in microseconds, shifted by the clock's 10 logical bits.
const RELAY_STAMP: i64 = 1_767_225_600_000_000 << 10;
/// The entry node's tie-break.
const RELAY_ORIGIN: i32 = 0x0102_0304;
/// A relay deadline long gone (one second after the epoch).
const LONG_AGO: i64 = 1_000_000;

fn loc(port: u16) -> Location {
    Location::new(HOST.to_string(), port as i16)
}

/// Peers the 2009 `add`/`remove` say were told already (the default port,
/// and PROTOCOL.md's example of a negative port).
fn authorities() -> Vec<Location> {
    vec![loc(9900), loc(40000)]
}

fn absorbed_entries() -> Vec<Entry> {
    vec![
        Entry::new(
            ABSORBED_KEY.to_vec(),
            ABSORBED_VALUE.to_vec(),
            ABSORBED_VERSION,
            ABSORBED_ORIGIN,
        ),
        Entry::new(
            TOMBSTONE_KEY.to_vec(),
            None,
            TOMBSTONE_VERSION,
            TOMBSTONE_ORIGIN,
        ),
    ]
}

/// The membership node hears these first (setup, not pinned), so that the
/// pinned `enter` and `gossip`, which say these incarnations are alive,
/// change nothing. News that a new member is alive changes the ring, and
/// background threads (spreading the news, anti-entropy on the ring change)
/// then find it unreachable and mark it dead, before or after the reply is
/// written: the reply would depend on a race.
fn known_dead() -> Vec<Member> {
    vec![
        Member::new(
            loc(ENTERING),
            ENTERING_INCARNATION,
            MemberStatus::DEAD,
            None,
        ),
        Member::new(loc(CALLER), CALLER_INCARNATION, MemberStatus::DEAD, None),
    ]
}

// ---- Cases ----

/// The bytes of one request.
enum Request {
    /// A method of the IDL, called on the generated client.
    Method(fn(&mut dyn TPeerSyncClient) -> thrift::Result<()>),
    /// A method the IDL lacks (no client can call it; written by hand).
    Unknown(&'static str),
}

/// What the node must answer.
enum Answer {
    /// A reply message. `check` decodes it with the generated client and
    /// asserts its fields; `masks` name the run-specific values it holds.
    Reply {
        check: fn(&[u8], &Run),
        masks: &'static [Mask],
    },
    /// Nothing (a oneway method): a ping sent next is answered first.
    Nothing,
    /// Nothing, and the node leaves: the connection closes, the process exits.
    Shutdown,
}

/// One pinned call.
struct Case {
    /// The fixtures' name: the method, plus `.what` when a method has several.
    name: &'static str,
    /// The arguments, for the fixture's header.
    args: &'static str,
    request: Request,
    answer: Answer,
}

impl Case {
    fn request_fixture(&self) -> String {
        format!("{}.request", self.name)
    }

    fn reply_fixture(&self) -> Option<String> {
        matches!(self.answer, Answer::Reply { .. }).then(|| format!("{}.reply", self.name))
    }
}

fn reply(check: fn(&[u8], &Run)) -> Answer {
    Answer::Reply { check, masks: &[] }
}

fn masked(masks: &'static [Mask], check: fn(&[u8], &Run)) -> Answer {
    Answer::Reply { check, masks }
}

/// The cases sent to the storage node, in order. Later replies depend on
/// earlier calls (get after put, peek after absorb, stats after all).
fn store_node_cases() -> Vec<Case> {
    use Request::Method;
    vec![
        Case {
            name: "ping",
            args: "",
            request: Method(|c| c.ping()),
            answer: reply(|r, _| expect_reply(r, |c| c.ping())),
        },
        Case {
            name: "service_type",
            args: "",
            request: Method(|c| c.service_type().map(drop)),
            answer: reply(|r, _| {
                assert_eq!(expect_reply(r, |c| c.service_type()), "diststore.Store")
            }),
        },
        Case {
            name: "service_types",
            args: "",
            request: Method(|c| c.service_types().map(drop)),
            answer: reply(|r, _| {
                assert_eq!(
                    expect_reply(r, |c| c.service_types()),
                    ["locator.Base", "locator.Locator", "diststore.Store"]
                )
            }),
        },
        Case {
            name: "debug",
            args: "",
            request: Method(|c| c.debug()),
            answer: Answer::Nothing,
        },
        Case {
            name: "get_all",
            args: "",
            request: Method(|c| c.get_all().map(drop)),
            answer: masked(&[Mask::Port], |r, run| {
                assert_eq!(expect_reply(r, |c| c.get_all()), vec![run.location()])
            }),
        },
        Case {
            name: "get_node",
            args: "key \"golden-key\"",
            request: Method(|c| c.get_node(TEXT_KEY.into()).map(drop)),
            answer: masked(&[Mask::Port], |r, run| {
                assert_eq!(
                    expect_reply(r, |c| c.get_node(String::new())),
                    run.location()
                )
            }),
        },
        Case {
            name: "locate",
            args: "key ff 'golden' 00 'key' fe",
            request: Method(|c| c.locate(KEY.to_vec()).map(drop)),
            answer: masked(&[Mask::Port], |r, run| {
                assert_eq!(expect_reply(r, |c| c.locate(Vec::new())), run.location())
            }),
        },
        Case {
            name: "replicas",
            args: "key ff 'golden' 00 'key' fe, count 3",
            request: Method(|c| c.replicas(KEY.to_vec(), 3).map(drop)),
            answer: masked(&[Mask::Port], |r, run| {
                // One member: it is the whole preference list.
                assert_eq!(
                    expect_reply(r, |c| c.replicas(Vec::new(), 0)),
                    vec![run.location()]
                )
            }),
        },
        Case {
            name: "probe",
            args: "target 127.0.0.1:65100 (nothing listens there)",
            request: Method(|c| c.probe(loc(STRANGER)).map(drop)),
            answer: reply(|r, _| assert!(!expect_reply(r, |c| c.probe(loc(0))))),
        },
        Case {
            name: "isolate",
            args: "on true, to a node without --fault-injection",
            request: Method(|c| c.isolate(true)),
            answer: masked(&[Mask::Port], |r, run| {
                let error = expect_application_error(r, |c| c.isolate(false));
                assert_eq!(error.kind, ApplicationErrorKind::InternalError);
                assert_eq!(
                    error.message,
                    format!(
                        "{} refused: isolate needs a node started with --fault-injection",
                        run.addr
                    )
                );
            }),
        },
        Case {
            name: "put",
            args: "key \"golden-key\", value \"h\u{e9}llo w\u{f6}rld \u{2713}\" (UTF-8, not ASCII)",
            request: Method(|c| c.put(TEXT_KEY.into(), TEXT_VALUE.into())),
            answer: Answer::Nothing,
        },
        Case {
            name: "get",
            args: "key \"golden-key\" (after the put)",
            request: Method(|c| c.get(TEXT_KEY.into()).map(drop)),
            answer: reply(|r, _| assert_eq!(expect_reply(r, |c| c.get(String::new())), TEXT_VALUE)),
        },
        Case {
            name: "get.missing",
            args: "key \"no such key\"",
            request: Method(|c| c.get("no such key".into()).map(drop)),
            // The 2009 interface answers "" for a key that is not stored.
            answer: reply(|r, _| assert_eq!(expect_reply(r, |c| c.get(String::new())), "")),
        },
        Case {
            name: "store",
            args: "key ff 'golden' 00 'key' fe, value 00 7f 80 ff 'value'",
            request: Method(|c| c.store(KEY.to_vec(), VALUE.to_vec())),
            answer: reply(|r, _| expect_reply(r, |c| c.store(Vec::new(), Vec::new()))),
        },
        Case {
            name: "fetch",
            args: "key ff 'golden' 00 'key' fe (after the store)",
            request: Method(|c| c.fetch(KEY.to_vec()).map(drop)),
            answer: reply(|r, _| {
                assert_eq!(
                    expect_reply(r, |c| c.fetch(Vec::new())),
                    Lookup::new(VALUE.to_vec(), None, None)
                )
            }),
        },
        Case {
            name: "fetch.missing",
            args: "key 00 'no such key' ff",
            request: Method(|c| c.fetch(MISSING_KEY.to_vec()).map(drop)),
            // Absent, not empty: the Lookup has no field at all.
            answer: reply(|r, _| {
                assert_eq!(
                    expect_reply(r, |c| c.fetch(Vec::new())),
                    Lookup::new(None, None, None)
                )
            }),
        },
        Case {
            name: "erase",
            args: "key ff 'golden' 00 'key' fe",
            request: Method(|c| c.erase(KEY.to_vec())),
            answer: reply(|r, _| expect_reply(r, |c| c.erase(Vec::new()))),
        },
        Case {
            name: "relay_store",
            args: "key c0 80 'relay', value 'relayed' fe, hops 1, expires 2100-01-01, version RELAY_STAMP/RELAY_ORIGIN",
            request: Method(|c| {
                c.relay_store(
                    RELAY_KEY.to_vec(),
                    RELAY_VALUE.to_vec(),
                    1,
                    FAR_FUTURE,
                    RELAY_STAMP,
                    RELAY_ORIGIN,
                )
            }),
            answer: reply(|r, _| {
                expect_reply(r, |c| c.relay_store(Vec::new(), Vec::new(), 0, 0, 0, 0))
            }),
        },
        Case {
            name: "relay_fetch",
            args: "key c0 80 'relay', hops 1 (after the relay_store)",
            request: Method(|c| c.relay_fetch(RELAY_KEY.to_vec(), 1).map(drop)),
            answer: reply(|r, _| {
                assert_eq!(
                    expect_reply(r, |c| c.relay_fetch(Vec::new(), 0)),
                    Lookup::new(RELAY_VALUE.to_vec(), RELAY_STAMP, RELAY_ORIGIN)
                )
            }),
        },
        Case {
            name: "relay_fetch.peek",
            args: "key c0 80 'relay', hops -1 (PEEK: the receiver's own copy only)",
            request: Method(|c| c.relay_fetch(RELAY_KEY.to_vec(), -1).map(drop)),
            answer: reply(|r, _| {
                assert_eq!(
                    expect_reply(r, |c| c.relay_fetch(Vec::new(), 0)),
                    Lookup::new(RELAY_VALUE.to_vec(), RELAY_STAMP, RELAY_ORIGIN)
                )
            }),
        },
        Case {
            name: "relay_erase",
            args: "key c0 80 'relay', hops 1, expires 2100-01-01, version RELAY_STAMP + 1",
            request: Method(|c| {
                c.relay_erase(
                    RELAY_KEY.to_vec(),
                    1,
                    FAR_FUTURE,
                    RELAY_STAMP + 1,
                    RELAY_ORIGIN,
                )
            }),
            answer: reply(|r, _| expect_reply(r, |c| c.relay_erase(Vec::new(), 0, 0, 0, 0))),
        },
        Case {
            name: "relay_store.expired",
            args: "key c0 80 'relay', value 'relayed' fe, hops 2, expires 1970 (long gone)",
            request: Method(|c| {
                c.relay_store(
                    RELAY_KEY.to_vec(),
                    RELAY_VALUE.to_vec(),
                    2,
                    LONG_AGO,
                    RELAY_STAMP + 2,
                    RELAY_ORIGIN,
                )
            }),
            answer: reply(|r, _| {
                let message =
                    expect_store_error(r, |c| c.relay_store(Vec::new(), Vec::new(), 0, 0, 0, 0));
                assert_eq!(
                    message,
                    "the relayed write expired before this node could apply it"
                );
            }),
        },
        Case {
            name: "absorb",
            args: "entries [absorbed ff = 'handed' 00 'over' (version, positive origin), \
                   erased fe = tombstone (no value, negative origin)]",
            request: Method(|c| c.absorb(absorbed_entries())),
            answer: reply(|r, _| expect_reply(r, |c| c.absorb(Vec::new()))),
        },
        Case {
            name: "peek",
            args: "keys [absorbed ff, erased fe, 00 'no such key' ff] (after the absorb)",
            request: Method(|c| {
                c.peek(vec![
                    ABSORBED_KEY.to_vec(),
                    TOMBSTONE_KEY.to_vec(),
                    MISSING_KEY.to_vec(),
                ])
                .map(drop)
            }),
            // The absorbed entries come back as sent, versions included; the
            // missing key is left out.
            answer: reply(|r, _| {
                assert_eq!(expect_reply(r, |c| c.peek(Vec::new())), absorbed_entries())
            }),
        },
        Case {
            name: "diff_buckets",
            args: "caller 127.0.0.1:65100 (not a member), digests [0x0123456789abcdef, -1, 0]",
            request: Method(|c| {
                c.diff_buckets(loc(STRANGER), vec![0x0123_4567_89ab_cdef, -1, 0])
                    .map(drop)
            }),
            answer: masked(&[Mask::Port], |r, run| {
                let message = expect_store_error(r, |c| c.diff_buckets(loc(0), Vec::new()));
                assert_eq!(message, not_a_member(run));
            }),
        },
        Case {
            name: "reconcile",
            args: "caller 127.0.0.1:65100 (not a member), buckets [0, 17, 255], \
                   entries [one with a value, one tombstone]",
            request: Method(|c| {
                c.reconcile(loc(STRANGER), vec![0, 17, 255], absorbed_entries())
                    .map(drop)
            }),
            answer: masked(&[Mask::Port], |r, run| {
                let message =
                    expect_store_error(r, |c| c.reconcile(loc(0), Vec::new(), Vec::new()));
                assert_eq!(message, not_a_member(run));
            }),
        },
        // Large values: the calls whose answers do not depend on the run
        // (no fresh upload id, no version); `begin_upload` answers a random
        // id, so only its request is pinned by the cases that name an upload.
        Case {
            name: "describe.missing",
            args: "key 00 'no such key' ff",
            request: Method(|c| c.describe(MISSING_KEY.to_vec()).map(drop)),
            answer: reply(|r, _| {
                let info = expect_reply(r, |c| c.describe(Vec::new()));
                assert_eq!(info.exists, Some(false));
                assert_eq!(
                    (info.size, info.id, info.manifest),
                    (Some(0), Some(0), None)
                );
            }),
        },
        Case {
            name: "read_range.missing",
            args: "key 00 'no such key' ff, offset 2^32, length 1 MiB, id 0",
            request: Method(|c| {
                c.read_range(MISSING_KEY.to_vec(), 1 << 32, 1 << 20, 0)
                    .map(drop)
            }),
            answer: reply(|r, _| {
                let message = expect_store_error(r, |c| c.read_range(Vec::new(), 0, 0, 0));
                assert!(message.contains("holds no value"), "{message}");
            }),
        },
        Case {
            name: "upload_part.unknown",
            args: "key ff 'golden' 00 'key' fe, upload -2, index 3, data 00 7f 80 ff 'value'",
            request: Method(|c| c.upload_part(KEY.to_vec(), -2, 3, VALUE.to_vec())),
            answer: reply(|r, _| {
                let message =
                    expect_store_error(r, |c| c.upload_part(Vec::new(), 0, 0, Vec::new()));
                assert!(
                    message.contains("no open upload 18446744073709551614"),
                    "{message}"
                );
            }),
        },
        Case {
            name: "commit_upload.unknown",
            args: "key ff 'golden' 00 'key' fe, upload 7",
            request: Method(|c| c.commit_upload(KEY.to_vec(), 7).map(drop)),
            answer: reply(|r, _| {
                let message = expect_store_error(r, |c| c.commit_upload(Vec::new(), 0));
                assert!(message.contains("no open upload 7"), "{message}");
            }),
        },
        Case {
            name: "stats",
            args: "(after every call above)",
            request: Method(|c| c.stats().map(drop)),
            answer: masked(&[Mask::StatsIncarnation], |r, _| {
                let mut stats = expect_reply(r, |c| c.stats());
                let incarnation = stats.remove("incarnation").expect("an incarnation");
                assert!(plausible_incarnation(incarnation), "{incarnation}");
                // The two values' keys and values; the tombstones of the
                // erase, the relayed erase and the absorbed tombstone.
                let bytes =
                    TEXT_KEY.len() + TEXT_VALUE.len() + ABSORBED_KEY.len() + ABSORBED_VALUE.len();
                let expected = [
                    ("bytes", bytes as i64),
                    // The default --chunk-grace of 600 s.
                    ("chunk_grace_ms", 600_000),
                    // The default --compress-above: off.
                    ("compress_above", 0),
                    ("compressed_raw_bytes", 0),
                    ("compressed_stored_bytes", 0),
                    ("compressed_writes", 0),
                    ("handoff_pending", 0),
                    ("hints", 0),
                    // golden-key and the absorbed key: tombstones do not count.
                    ("keys", 2),
                    ("leaving", 0),
                    // No --max-memory: no cap.
                    ("max_memory_bytes", 0),
                    ("members", 1),
                    ("pauses", 0),
                    ("ready", 1),
                    ("replicas", 1),
                    ("replicas_configured", 3),
                    ("replication_pending", 0),
                    // Alone: the whole ring.
                    ("share_ppm", 1_000_000),
                    ("syncing", 0),
                    // --tombstone-grace 36500d; none collected (they are
                    // younger than that).
                    ("tombstone_grace_ms", 3_153_600_000_000),
                    ("tombstones", 3),
                    ("weight", 1),
                    ("tombstones_collected", 0),
                    // Alone: every write has its one copy.
                    ("write_quorum", 1),
                ];
                let expected = expected.map(|(k, v)| (k.to_string(), v)).into();
                assert_eq!(stats, expected);
            }),
        },
        Case {
            name: "no_such_method",
            args: "(a method the IDL lacks)",
            request: Request::Unknown("no_such_method"),
            answer: reply(|r, _| {
                let error = expect_exception(r, "no_such_method");
                assert_eq!(error.kind, ApplicationErrorKind::UnknownMethod);
                assert_eq!(error.message, "unknown method no_such_method");
            }),
        },
    ]
}

/// Why a node refuses anti-entropy with a caller it does not count as a member.
fn not_a_member(run: &Run) -> String {
    format!(
        "{} refused: {HOST}:{STRANGER} is not a member in this node's view yet; retry after gossip",
        run.addr
    )
}

/// The cases sent to the membership node, in order, after it heard
/// [`known_dead`]. The tables it answers with are sorted by address, and
/// every made-up member's port sorts after the node's own.
fn membership_node_cases() -> Vec<Case> {
    use Request::Method;
    // Incarnation first: its pattern holds the port that Port then zeroes.
    const NODE_ROW: &[Mask] = &[Mask::Incarnation, Mask::Port];
    vec![
        Case {
            name: "enter",
            args: "member 127.0.0.1:65001, incarnation 1700000000000001, ALIVE \
                   (the node has heard that this incarnation died)",
            request: Method(|c| {
                c.enter(Member::new(
                    loc(ENTERING),
                    ENTERING_INCARNATION,
                    MemberStatus::ALIVE,
                    None,
                ))
                .map(drop)
            }),
            answer: masked(NODE_ROW, |r, run| {
                let mut expected = vec![run.member()];
                expected.extend(known_dead());
                assert_eq!(
                    expect_reply(r, |c| c.enter(Member::new(None, None, None, None))),
                    expected
                );
            }),
        },
        Case {
            name: "gossip",
            args: "members [127.0.0.1:65002 ALIVE (the caller, whose incarnation the node \
                   heard died), 127.0.0.1:65003 LEFT, 127.0.0.1:65001 DEAD]",
            request: Method(|c| c.gossip(caller_table()).map(drop)),
            // Merged, not spread: a gossip reply never waits on other members.
            answer: masked(NODE_ROW, |r, run| {
                // The caller stays dead (that incarnation died); the member
                // that left is new, but not alive, so the ring stays as it is.
                let mut expected = vec![run.member()];
                expected.extend(known_dead());
                expected.push(caller_table()[1].clone());
                assert_eq!(expect_reply(r, |c| c.gossip(Vec::new())), expected);
            }),
        },
        Case {
            name: "members",
            args: "(after the gossip: the table the client-facing call reads)",
            request: Method(|c| c.members().map(drop)),
            // The same rows as the gossip reply: the node, the members it
            // holds dead, and the one that left.
            answer: masked(NODE_ROW, |r, run| {
                let mut expected = vec![run.member()];
                expected.extend(known_dead());
                expected.push(caller_table()[1].clone());
                assert_eq!(expect_reply(r, |c| c.members()), expected);
            }),
        },
        Case {
            name: "join",
            args: "location 127.0.0.1:65004",
            request: Method(|c| c.join(loc(JOINER))),
            answer: Answer::Nothing,
        },
        Case {
            name: "add",
            args: "location 127.0.0.1:65005, authorities [127.0.0.1:9900, 127.0.0.1:40000]",
            request: Method(|c| c.add(loc(ADDED), authorities())),
            answer: Answer::Nothing,
        },
        Case {
            name: "remove",
            args: "location 127.0.0.1:65004 (the joiner), authorities [127.0.0.1:9900, 127.0.0.1:40000]",
            request: Method(|c| c.remove(loc(JOINER), authorities())),
            answer: Answer::Nothing,
        },
        Case {
            name: "die",
            args: "",
            request: Method(|c| c.die()),
            answer: Answer::Shutdown,
        },
    ]
}

/// The table the gossip caller sends: itself alive, one member that left,
/// and one it holds dead.
fn caller_table() -> Vec<Member> {
    vec![
        Member::new(loc(CALLER), CALLER_INCARNATION, MemberStatus::ALIVE, None),
        Member::new(
            loc(DEPARTED),
            DEPARTED_INCARNATION,
            MemberStatus::LEFT,
            None,
        ),
        Member::new(
            loc(ENTERING),
            ENTERING_INCARNATION,
            MemberStatus::DEAD,
            None,
        ),
    ]
}

/// Methods also sent with an unversioned header.
const UNVERSIONED: [&str; 5] = ["ping", "put", "get", "store", "fetch"];

fn all_cases() -> Vec<Case> {
    let mut cases = store_node_cases();
    cases.extend(membership_node_cases());
    cases
}

// ---- The node a reply came from ----

/// What is particular to this run of a node.
struct Run {
    addr: NodeAddr,
    /// The node's own incarnation, once learned (membership node only).
    incarnation: Option<i64>,
}

impl Run {
    fn location(&self) -> Location {
        Location::new(self.addr.host.clone(), self.addr.port as i16)
    }

    fn member(&self) -> Member {
        let incarnation = self.incarnation.expect("the node's incarnation is known");
        Member::new(self.location(), incarnation, MemberStatus::ALIVE, None)
    }
}

/// A run-specific value in a reply, zeroed before the bytes are compared.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// The node's port: in its `Location` (an i16) and in message text.
    Port,
    /// The node's incarnation, in its own `Member` row.
    Incarnation,
    /// The node's incarnation, in its `stats` (the i64 after the key
    /// "incarnation").
    StatsIncarnation,
}

/// Whether `incarnation` is a start time in milliseconds within the last day.
fn plausible_incarnation(incarnation: i64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now - 86_400_000..=now + 1000).contains(&incarnation)
}

impl Mask {
    fn about(self) -> &'static str {
        match self {
            Mask::Port => {
                "the node's port, zeroed: i16 0000 after its Location's address, \
                 127.0.0.1:00000 in text"
            }
            Mask::Incarnation => {
                "the node's incarnation, zeroed: i64 after its own Location in its Member row"
            }
            Mask::StatsIncarnation => {
                "the node's incarnation, zeroed: i64 after the map key \"incarnation\""
            }
        }
    }

    /// Replaces every occurrence; returns how many there were.
    fn apply(self, bytes: &mut [u8], run: &Run) -> usize {
        let host = &run.addr.host;
        let port = run.addr.port;
        match self {
            Mask::Port => {
                let text = format!("{host}:{port}");
                let zeroed = format!("{host}:{}", "0".repeat(port.to_string().len()));
                replace_all(
                    bytes,
                    &location_fields(host, port),
                    &location_fields(host, 0),
                ) + replace_all(bytes, text.as_bytes(), zeroed.as_bytes())
            }
            Mask::Incarnation => {
                let incarnation = run.incarnation.expect("the node's incarnation is known");
                let row = |port: u16, incarnation: i64| {
                    let mut row = location_fields(host, port);
                    row.extend([0x00, 0x0a, 0x00, 0x02]); // Location's STOP; i64 field 2
                    row.extend(incarnation.to_be_bytes());
                    row
                };
                // The port stays: Mask::Port zeroes it next.
                replace_all(bytes, &row(port, incarnation), &row(port, 0))
            }
            Mask::StatsIncarnation => {
                let mut key = 11i32.to_be_bytes().to_vec();
                key.extend(b"incarnation");
                let mut found = 0;
                let mut at = 0;
                while let Some(offset) = bytes[at..].windows(key.len()).position(|w| w == key) {
                    let value = at + offset + key.len();
                    bytes[value..value + 8].fill(0);
                    found += 1;
                    at = value + 8;
                }
                found
            }
        }
    }
}

/// The fields of a `Location` (without its STOP), encoded by hand: a mask
/// must find exactly the bytes the node wrote.
fn location_fields(host: &str, port: u16) -> Vec<u8> {
    let mut bytes = vec![0x0b, 0x00, 0x01]; // string field 1
    bytes.extend((host.len() as i32).to_be_bytes());
    bytes.extend(host.as_bytes());
    bytes.extend([0x06, 0x00, 0x02]); // i16 field 2
    bytes.extend((port as i16).to_be_bytes());
    bytes
}

fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len(), "a mask keeps the length");
    let mut count = 0;
    let mut at = 0;
    while at + from.len() <= bytes.len() {
        if &bytes[at..at + from.len()] == from {
            bytes[at..at + from.len()].copy_from_slice(to);
            count += 1;
            at += from.len();
        } else {
            at += 1;
        }
    }
    count
}

/// `reply` with `masks` applied, each of which must have matched.
fn mask(reply: &[u8], masks: &[Mask], run: &Run, name: &str) -> Vec<u8> {
    let mut bytes = reply.to_vec();
    for &mask in masks {
        let found = mask.apply(&mut bytes, run);
        assert!(
            found > 0,
            "{name}: the reply should hold {mask:?} of {} but does not:\n{}",
            run.addr,
            hex_dump(reply)
        );
    }
    bytes
}

// ---- Encoding and decoding with the generated client ----

/// The request bytes, strict or with the old unversioned header.
fn encode(request: &Request, strict: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    match request {
        Request::Method(call) => {
            let mut client = PeerSyncClient::new(
                TBinaryInputProtocol::new(io::empty(), strict),
                TBinaryOutputProtocol::new(&mut bytes, strict),
            );
            // A two-way call then fails to read its reply from `io::empty()`;
            // the request is written by then.
            let _ = call(&mut client);
        }
        Request::Unknown(name) => {
            let mut out = TBinaryOutputProtocol::new(&mut bytes, strict);
            let written: thrift::Result<()> = (|| {
                out.write_message_begin(&TMessageIdentifier::new(*name, TMessageType::Call, 1))?;
                out.write_struct_begin(&TStructIdentifier::new("args"))?;
                out.write_field_stop()?;
                out.write_struct_end()?;
                out.write_message_end()?;
                out.flush()
            })();
            written.expect("writing to memory cannot fail");
        }
    }
    bytes
}

/// Decodes `reply` as the answer to the one call `call` makes, as a fresh
/// generated client does (its sequence id 1 must match). The call's own
/// arguments go nowhere. Every byte of the reply must be consumed.
fn decode<R>(
    reply: &[u8],
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
) -> thrift::Result<R> {
    let mut rest = reply;
    let result = {
        // Not strict: this reader takes both header forms.
        let mut client = PeerSyncClient::new(
            TBinaryInputProtocol::new(&mut rest, false),
            TBinaryOutputProtocol::new(io::sink(), true),
        );
        call(&mut client)
    };
    assert!(
        rest.is_empty(),
        "{} bytes after the reply:\n{}",
        rest.len(),
        hex_dump(reply)
    );
    result
}

fn expect_reply<R>(
    reply: &[u8],
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
) -> R {
    decode(reply, call)
        .unwrap_or_else(|e| panic!("not a successful reply ({e}):\n{}", hex_dump(reply)))
}

/// The message of the `StoreError` that `reply` carries.
fn expect_store_error<R: std::fmt::Debug>(
    reply: &[u8],
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
) -> String {
    match decode(reply, call) {
        Err(thrift::Error::User(error)) => match error.downcast::<StoreError>() {
            Ok(error) => error.message.expect("a StoreError has a message"),
            Err(other) => panic!("not a StoreError: {other}"),
        },
        other => panic!("expected a StoreError, got {other:?}"),
    }
}

/// The `TApplicationException` that `reply` carries.
fn expect_application_error<R: std::fmt::Debug>(
    reply: &[u8],
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
) -> ApplicationError {
    match decode(reply, call) {
        Err(thrift::Error::Application(error)) => error,
        other => panic!("expected an application error, got {other:?}"),
    }
}

/// An exception message for `name` (no generated client can call a method
/// the IDL lacks, so this reads it with the protocol directly).
fn expect_exception(reply: &[u8], name: &str) -> ApplicationError {
    let mut rest = reply;
    let (header, error) = {
        let mut input = TBinaryInputProtocol::new(&mut rest, false);
        let header = input.read_message_begin().unwrap();
        let error = thrift::Error::read_application_error_from_in_protocol(&mut input).unwrap();
        input.read_message_end().unwrap();
        (header, error)
    };
    assert_eq!(
        (
            header.name.as_str(),
            header.message_type,
            header.sequence_number
        ),
        (name, TMessageType::Exception, 1)
    );
    assert!(rest.is_empty(), "bytes after the exception");
    error
}

/// `message` with its strict header rewritten in the old unversioned form
/// (i32 name length, name, i8 type, i32 seq id), the body untouched.
fn unversioned(message: &[u8]) -> Vec<u8> {
    assert_eq!(&message[..3], [0x80, 0x01, 0x00], "a strict header");
    let kind = message[3];
    let len = i32::from_be_bytes(message[4..8].try_into().unwrap()) as usize;
    let name_end = 8 + len;
    let mut out = message[4..name_end].to_vec(); // length and name
    out.push(kind);
    out.extend_from_slice(&message[name_end..]); // seq id and body
    out
}

// ---- Raw TCP ----

/// A plain socket to a node: bytes out, whole messages in.
struct Wire {
    socket: TcpStream,
}

impl Wire {
    fn connect(node: &NodeProc) -> Wire {
        let socket = TcpStream::connect((HOST, node.addr.port)).expect("connect to the node");
        socket.set_nodelay(true).unwrap();
        Wire { socket }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).expect("send to the node");
    }

    /// Reads until the bytes received form one whole message, within
    /// [`PATIENCE`]: the answer to call `name`. Only one message may arrive.
    fn receive(&mut self, name: &str) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = Vec::new();
        loop {
            if let Some(frame) = frame::scan(&buf, &Limits::default()).expect("a valid message") {
                assert_eq!(
                    frame.len,
                    buf.len(),
                    "{name}: more than one message arrived:\n{}",
                    hex_dump(&buf)
                );
                return buf;
            }
            match self.read_before(deadline) {
                Some(0) => panic!(
                    "{name}: the node closed the connection; so far:\n{}",
                    hex_dump(&buf)
                ),
                Some(_) => {}
                None => panic!(
                    "{name}: no whole message within {PATIENCE:?}; so far:\n{}",
                    hex_dump(&buf)
                ),
            }
            buf.extend_from_slice(&self.chunk());
        }
    }

    /// Sends `request` (call `name`), returns the one message answered.
    fn call(&mut self, name: &str, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.receive(name)
    }

    /// Sends a oneway `request`, then `ping`: the ping's reply must be the
    /// next message on the connection, so the oneway got none.
    fn oneway(&mut self, name: &str, request: &[u8], ping: &[u8]) {
        self.send(request);
        self.send(ping);
        let reply = self.receive(&format!("the ping after {name}"));
        let frame = frame::scan(&reply, &Limits::default()).unwrap().unwrap();
        assert_eq!(
            (frame.name.as_str(), frame.kind),
            ("ping", MessageKind::Reply),
            "{name} is oneway: the first message after it must be the ping's reply:\n{}",
            hex_dump(&reply)
        );
        expect_reply(&reply, |c| c.ping());
    }

    /// Waits until the node closes the connection; it must send nothing.
    fn expect_close(&mut self, name: &str) {
        let deadline = Instant::now() + PATIENCE;
        match self.read_before(deadline) {
            Some(0) => {}
            Some(_) => panic!("{name} was answered:\n{}", hex_dump(&self.chunk())),
            None => panic!("the connection stayed open {PATIENCE:?} after {name}"),
        }
    }

    /// Waits for bytes or a close; `Some(0)` for a close, `None` at the deadline.
    /// The bytes are left for [`Wire::chunk`].
    fn read_before(&mut self, deadline: Instant) -> Option<usize> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut byte = [0u8; 1];
        match self.socket.peek(&mut byte) {
            Ok(n) => Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading from the node: {e}"),
        }
    }

    /// The bytes that have arrived (at least one, after `read_before`).
    fn chunk(&mut self) -> Vec<u8> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.socket.read(&mut chunk).expect("read from the node");
        chunk.truncate(n);
        chunk
    }
}

// ---- Fixtures ----

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(format!("{name}.hex"))
}

/// Whether this run rewrites the fixtures instead of comparing.
fn blessing() -> bool {
    std::env::var_os("GOLDEN_BLESS").is_some_and(|v| v == "1")
}

/// The bytes of a fixture: hex digits, whitespace ignored, `#` to the end of
/// a line a comment.
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("an odd number of hex digits ({})", digits.len()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("not hex: {:?}", &digits[i..i + 2]))
        })
        .collect()
}

/// 16 bytes a line, as 32 hex digits, then the printable ones (others as
/// `.`) between bars, as a comment.
fn format_hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(16) {
        let hex: String = line.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{hex:<32}  # |{text}|").unwrap();
    }
    out
}

/// Like [`format_hex`], with offsets, for failure messages.
fn hex_dump(bytes: &[u8]) -> String {
    format_hex(bytes)
        .lines()
        .enumerate()
        .map(|(i, line)| format!("  {:04x}  {line}\n", i * 16))
        .collect()
}

/// Compares (or, blessing, writes) fixtures; reports every mismatch at the end.
struct Golden {
    bless: bool,
    mismatches: Vec<String>,
}

impl Golden {
    fn new() -> Self {
        Golden {
            bless: blessing(),
            mismatches: Vec::new(),
        }
    }

    /// A request fixture's bytes to send; blessing, the request as encoded
    /// now (another test is rewriting the request fixtures meanwhile).
    fn request(&self, case: &Case) -> Vec<u8> {
        if self.bless {
            encode(&case.request, true)
        } else {
            read_fixture(&case.request_fixture())
        }
    }

    /// Checks `actual` against fixture `name`, or writes it with `about` as
    /// its header comment.
    fn check(&mut self, name: &str, about: &[String], actual: &[u8]) {
        if self.bless {
            let mut text = String::new();
            for line in about.iter().flat_map(|line| wrap(line, 76)) {
                writeln!(text, "# {line}").unwrap();
            }
            writeln!(
                text,
                "# Written by GOLDEN_BLESS=1 cargo test --test golden; see tests/golden.rs."
            )
            .unwrap();
            text.push_str(&format_hex(actual));
            write_atomically(&fixture_path(name), &text);
            return;
        }
        let expected = read_fixture(name);
        if expected != actual {
            let masked = about.iter().any(|line| line.starts_with("masked:"));
            let label = format!(
                "{name} ({}{})",
                fixture_path(name).display(),
                if masked { "; actual shown masked" } else { "" }
            );
            self.mismatches.push(mismatch(&label, &expected, actual));
        }
    }

    fn finish(self) {
        assert!(
            self.mismatches.is_empty(),
            "{} golden mismatch(es):\n\n{}\nIf the wire format is meant to change, re-bless with \
             GOLDEN_BLESS=1 cargo test --test golden and review the diff of tests/golden/.",
            self.mismatches.len(),
            self.mismatches.join("\n")
        );
    }
}

/// `text` broken at spaces into lines of at most `width` characters (longer
/// words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); a new case needs GOLDEN_BLESS=1 cargo test --test golden",
            path.display()
        )
    });
    parse_hex(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes through a temporary file, so that a test reading the fixture
/// meanwhile sees the old or the new one, never half of one.
fn write_atomically(path: &PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let temporary = path.with_extension("hex.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Where `actual` first differs from `expected`, and both, for `label`.
fn mismatch(label: &str, expected: &[u8], actual: &[u8]) -> String {
    let first = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let what = match (expected.get(first), actual.get(first)) {
        (Some(e), Some(a)) => format!("expected {e:02x}, got {a:02x}"),
        (Some(_), None) => format!("{} bytes missing", expected.len() - actual.len()),
        (None, _) => format!("{} bytes too many", actual.len() - expected.len()),
    };
    format!(
        "{label}: first difference at offset {first} (0x{first:x}): {what}\n\
         expected ({} bytes):\n{}actual ({} bytes):\n{}",
        expected.len(),
        hex_dump(expected),
        actual.len(),
        hex_dump(actual)
    )
}

fn request_about(case: &Case) -> Vec<String> {
    let args = if case.args.is_empty() {
        String::new()
    } else {
        format!(": {}", case.args)
    };
    vec![format!(
        "{}{args}. As the generated client writes it: strict header, seq id 1.",
        case.name
    )]
}

fn reply_about(case: &Case, masks: &[Mask], node: &str) -> Vec<String> {
    let mut about = vec![format!(
        "{}: what {node} answers to {}.hex.",
        case.name,
        case.request_fixture()
    )];
    about.extend(masks.iter().map(|m| format!("masked: {}.", m.about())));
    about
}

// ---- Running the cases on a node ----

/// Sends `cases` in order on one connection to `node` (named so in the
/// fixtures), checking every answer.
fn run_cases(cases: &[Case], node: &str, wire: &mut Wire, run: &Run, golden: &mut Golden) {
    let first = &store_node_cases()[0];
    assert_eq!(first.name, "ping");
    let ping = golden.request(first);
    for case in cases {
        let request = golden.request(case);
        match &case.answer {
            Answer::Reply { check, masks } => {
                let reply = wire.call(case.name, &request);
                check(&reply, run);
                let name = case.reply_fixture().unwrap();
                let bytes = mask(&reply, masks, run, &name);
                let about = reply_about(case, masks, node);
                golden.check(&name, &about, &bytes);
            }
            Answer::Nothing => wire.oneway(case.name, &request, &ping),
            Answer::Shutdown => {
                wire.send(&request);
                wire.expect_close(case.name);
            }
        }
    }
}

// ---- Tests ----

#[test]
fn the_generated_client_writes_every_golden_request_byte_for_byte() {
    let mut golden = Golden::new();
    for case in all_cases() {
        let bytes = encode(&case.request, true);
        golden.check(&case.request_fixture(), &request_about(&case), &bytes);

        // The generated client must not wait for a reply to a oneway method.
        if let Request::Method(call) = &case.request {
            let mut sink = Vec::new();
            let mut client = PeerSyncClient::new(
                TBinaryInputProtocol::new(io::empty(), true),
                TBinaryOutputProtocol::new(&mut sink, true),
            );
            let waited = call(&mut client).is_err();
            assert_eq!(
                waited,
                matches!(case.answer, Answer::Reply { .. }),
                "{}: only two-way calls read a reply",
                case.name
            );
        }
        // Pins `unversioned` itself against the thrift crate's old header.
        if UNVERSIONED.contains(&case.name) {
            assert_eq!(
                encode(&case.request, false),
                unversioned(&bytes),
                "{}",
                case.name
            );
        }
    }
    golden.finish();
}

#[test]
fn a_storage_node_answers_every_golden_request_with_its_golden_reply() {
    // A grace of a century: the fixtures' versions are from 2023, and a
    // tombstone past the grace would not be stored where nothing is held
    // (`merge_copy` in src/node/tombstones.rs).
    let node = NodeProc::start_with(None, &["--tombstone-grace", "36500d"]);
    let run = Run {
        addr: node.addr.clone(),
        incarnation: None,
    };
    let mut golden = Golden::new();
    let mut wire = Wire::connect(&node);
    run_cases(
        &store_node_cases(),
        "a storage node",
        &mut wire,
        &run,
        &mut golden,
    );
    golden.finish();
}

#[test]
fn a_membership_node_answers_with_golden_tables_ignores_oneway_news_and_dies_silently() {
    let mut node = NodeProc::start(None);
    let mut wire = Wire::connect(&node);
    // Setup, not pinned: see `known_dead`. Its reply tells the node's
    // incarnation, which the pinned replies hold.
    let setup = encode(&Request::Method(|c| c.gossip(known_dead()).map(drop)), true);
    let table = expect_reply(&wire.call("the setup gossip", &setup), |c| {
        c.gossip(Vec::new())
    });
    let me = Location::new(node.addr.host.clone(), node.addr.port as i16);
    let [own, dead @ ..] = table.as_slice() else {
        panic!("the node and the dead members: {table:?}");
    };
    assert_eq!(
        (own.location.as_ref(), own.status),
        (Some(&me), Some(MemberStatus::ALIVE))
    );
    assert_eq!(dead, known_dead());
    let run = Run {
        addr: node.addr.clone(),
        incarnation: Some(own.incarnation.expect("an incarnation")),
    };

    let mut golden = Golden::new();
    run_cases(
        &membership_node_cases(),
        "the membership node",
        &mut wire,
        &run,
        &mut golden,
    );
    let status = node.wait_exit(PATIENCE).expect("the node exits after die");
    assert!(status.success(), "the node left cleanly: {status:?}");
    golden.finish();
}

#[test]
fn unversioned_requests_get_the_golden_replies_with_an_unversioned_header() {
    // A node of its own, so that these calls cannot disturb the storage
    // node's sequence; the same calls in the same order give the same replies.
    let node = NodeProc::start(None);
    let golden = Golden::new();
    let cases: Vec<Case> = store_node_cases()
        .into_iter()
        .filter(|c| UNVERSIONED.contains(&c.name))
        .collect();
    assert_eq!(cases.len(), UNVERSIONED.len());
    let ping = unversioned(&golden.request(&cases[0]));
    let mut wire = Wire::connect(&node);
    for case in &cases {
        let strict = golden.request(case);
        let old = unversioned(&strict);
        match &case.answer {
            Answer::Reply { masks, .. } => {
                assert!(masks.is_empty(), "{}: no run-specific values", case.name);
                let strict_reply = wire.call(case.name, &strict);
                let old_reply = wire.call(case.name, &old);
                // Blessing, the other test is rewriting the reply fixtures:
                // compare with the strict reply of this run instead.
                let fixture = case.reply_fixture().unwrap();
                let golden_reply = if golden.bless {
                    strict_reply.clone()
                } else {
                    read_fixture(&fixture)
                };
                assert!(
                    strict_reply == golden_reply,
                    "{}",
                    mismatch(&format!("{fixture}, strict"), &golden_reply, &strict_reply)
                );
                // The node answers in the header form it was called with.
                let expected = unversioned(&golden_reply);
                assert!(
                    old_reply == expected,
                    "{}",
                    mismatch(
                        &format!("{fixture}, re-headed unversioned"),
                        &expected,
                        &old_reply
                    )
                );
            }
            Answer::Nothing => {
                wire.oneway(case.name, &strict, &ping);
                wire.oneway(case.name, &old, &ping);
            }
            Answer::Shutdown => unreachable!("die is not among these"),
        }
    }
}

#[test]
fn the_golden_directory_holds_exactly_the_fixtures_of_the_cases() {
    let mut expected = BTreeSet::new();
    for case in all_cases() {
        expected.insert(format!("{}.hex", case.request_fixture()));
        expected.extend(case.reply_fixture().map(|name| format!("{name}.hex")));
    }
    let names: Vec<_> = expected.iter().collect();
    assert_eq!(
        names.len(),
        all_cases().len() + all_cases().iter().filter_map(Case::reply_fixture).count(),
        "fixture names are unique: {names:?}"
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".hex"))
                .collect()
        })
        .unwrap_or_default();
    let stale: Vec<_> = on_disk.difference(&expected).collect();
    if blessing() {
        for name in stale {
            std::fs::remove_file(fixture_dir().join(name)).unwrap();
        }
        return;
    }
    let missing: Vec<_> = expected.difference(&on_disk).collect();
    assert!(
        stale.is_empty() && missing.is_empty(),
        "tests/golden/ is out of step with the cases: missing {missing:?}, stale {stale:?}; \
         GOLDEN_BLESS=1 cargo test --test golden writes the one and removes the other"
    );
}
