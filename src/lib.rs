//! thrifty-p2p: a peer-to-peer distributed key-value store. Nodes form a flat,
//! full-membership ring, place keys with MD5 consistent hashing, and speak Apache
//! Thrift to each other and to clients (wire-compatible with the 2009 program).
//!
//! # Using it
//!
//! [`Client`] is a ring-aware, map-like handle on a ring (`get`, `put`,
//! `delete`, `contains`, values of any size); [`Error`] is the one error
//! type, and [`ErrorKind`] says what kind of failure it is, the same on
//! either side of the wire. [`launch::start`] runs a node in this process.
//!
//! # Layout, along a request's path
//!
//! A `put` from `bin/storeput.rs`: [`client`] (to the key's owner) →
//! [`wire::conn`] (the call) → [`wire::server`] (one message, checked by
//! [`wire::frame`]) → [`wire::codec`] (decoded once) → `node/write.rs`
//! (coordinates: version, forward, quorum; reads in `node/read.rs`) →
//! [`replicate`] (to the other replicas) → [`store`] (the engine). Peers are reached through [`transport`], which is
//! [`wire::relay`] between processes.
//!
//! Pure core (no sockets, no clocks of their own):
//! - [`ring`]: the consistent-hash ring; which member owns a key.
//! - [`membership`]: the member table and its merge rules (incarnations, tombstones).
//! - [`swim`]: SWIM failure detection and dissemination with Lifeguard's
//!   refinements: probes, suspicion, piggyback; time and I/O passed in.
//! - [`store`]: the local keys, versioned, with tombstones; in memory or on
//!   disk (fjall), behind one engine interface.
//! - [`version`]: hybrid logical clock versions that settle conflicting copies.
//! - [`quorum`]: a quorum read's tally: what counts, which copy wins, what
//!   to repair.
//! - [`antientropy`]: bucket digests that let two replicas find where they
//!   differ, and the rounds that say whom a node compares with when.
//! - [`handoff`]: which keys move after a ring change, to whom, and when a
//!   batch may be deleted here.
//! - [`upload`]: the uploads in parts a node holds open (`begin_upload`,
//!   `upload_part`, `commit_upload`), bounded, and the commit's checks.
//! - [`value`]: the envelope of a stored value: its metadata (content type,
//!   description) and LZ4 compression, in band, bounded when decoded.
//! - [`capacity`]: the cap on stored bytes (`--max-memory`): whether a
//!   write fits.
//! - [`lease`]: leases with fencing tokens, the pure part: the record a
//!   lease is stored as, and the decisions on it.
//! - [`addr`], [`config`], [`error`]: names, settings and errors.
//!
//! Node:
//! - [`peer`]: node-to-node requests and replies, as domain types.
//! - [`transport`]: how a node reaches peers (a trait; Thrift between
//!   processes, memory in [`sim`]).
//! - [`tasks`]: a node's tasks, with the stop switch and the simulation's
//!   pause gate; a deterministic [`tasks::Signal`].
//! - [`node`]: one member, all async on tokio, one file per step: `read`,
//!   `write` (routing, coordination, quorums), `replica` (the other side),
//!   `members` (membership driven by [`swim`], join), `liveness` (view
//!   agreement, pause watch, lease), `repair` (anti-entropy, hints),
//!   `handoff`, `leave`, `listing` (a page of the node's keys), `collect`
//!   (unreferenced chunks), `large` (large values for any Thrift client:
//!   `describe`, `read_range`, uploads in parts).
//! - [`replicate`]: per-peer batched replication, quorum acks, hints.
//! - [`launch`]: start a node process, run it, stop it.
//! - [`metrics`]: the node's Prometheus registry: counters where the work
//!   happens, gauges read from the node when scraped.
//! - [`web`]: HTTP with `--http`: `/metrics`, the status page `/` and
//!   `/status.json` (the ring's arcs, every member's stats).
//!
//! The one Thrift boundary, [`wire`]: the only module that names the
//! `thrift` crate or the generated code ([`wire::idl`]).
//!
//! Clients:
//! - [`client`]: the public [`Client`].
//! - [`listing`]: a ring's keys, from every member's pages, merged.
//! - [`stream`]: large values as chunks sent straight to their owners, in
//!   parallel, behind a manifest at the key.
//! - [`tls`]: encryption and mutual certificates (rustls), for nodes and clients.
//! - [`discover`]: find a local ring by probing ports from 9900, like the original.
//! - [`status`]: the ring at a glance (members, their counters, health), as
//!   `storestat` prints it.
//!
//! Testing:
//! - [`sim`]: a deterministic cluster simulation (real nodes, in-memory
//!   network with faults, virtual time), a history checker and seeded fault
//!   schedules.
//! - `fuzzing` (only under `--cfg fuzzing`, which `cargo fuzz` sets): what
//!   the fuzz targets in `tests/fuzz` reach of the crate-private modules.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
// The layout above names the crate-private modules on purpose: it is a map for
// the next engineer, who builds the docs with `--document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod addr;
pub(crate) mod antientropy;
pub mod auth;
pub mod capacity;
pub mod client;
pub mod config;
pub mod discover;
pub mod error;
pub(crate) mod handoff;
pub mod launch;
pub mod lease;
pub mod listing;
pub(crate) mod membership;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod peer;
pub(crate) mod quorum;
pub(crate) mod replicate;
pub mod ring;
pub mod sim;
pub mod status;
pub(crate) mod store;
pub mod stream;
pub(crate) mod swim;
pub(crate) mod tasks;
pub mod tls;
pub(crate) mod transport;
pub(crate) mod upload;
pub mod value;
pub(crate) mod version;
pub(crate) mod web;
pub mod wire;

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

pub use addr::NodeAddr;
pub use client::{Client, ClientOptions};
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use lease::Lease;
pub use membership::{MemberState, Status as MemberStatus};
pub use value::{Meta, WriteOptions};
