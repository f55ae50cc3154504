//! thrifty-p2p: a peer-to-peer distributed key-value store. Nodes form a flat,
//! full-membership ring, place keys with MD5 consistent hashing, and speak Apache
//! Thrift to each other and to clients (wire-compatible with the 2009 program).
//!
//! # Layout
//!
//! Pure core (no sockets, no clocks of their own):
//! - [`ring`]: the consistent-hash ring; which member owns a key.
//! - [`membership`]: the member table and its merge rules (incarnations, tombstones).
//! - [`swim`]: SWIM failure detection and dissemination with Lifeguard's
//!   refinements: probes, suspicion, piggyback; time and I/O passed in.
//! - [`store`]: the local keys, versioned, with tombstones; in memory or on
//!   disk (fjall), behind one engine interface.
//! - [`version`]: hybrid logical clock versions that settle conflicting copies.
//! - [`frame`]: finds where one Thrift message ends, within limits.
//! - [`antientropy`]: bucket digests that let two replicas find where they differ.
//! - [`addr`], [`config`], [`error`]: names, settings and errors.
//!
//! Node and RPC edge:
//! - [`peer`]: node-to-node requests and replies, as domain types.
//! - [`transport`]: how a node reaches peers (a trait; Thrift between
//!   processes, memory in [`sim`]).
//! - [`tasks`]: a node's tasks, with the stop switch and the simulation's
//!   pause gate; a deterministic [`tasks::Signal`].
//! - [`node`]: one member, all async on tokio: routing, coordination and
//!   quorums, membership driven by [`swim`], view agreement, anti-entropy,
//!   join, handoff, graceful leave.
//! - [`replicate`]: per-peer batched replication, quorum acks, hints.
//! - [`idl`]: code generated from `thrift/` (never edited by hand).
//! - [`convert`]: generated Thrift types to and from domain types.
//! - [`handler`]: the generated service traits, implemented over [`node`].
//! - [`server`]: our accept loop and connections (cap, idle timeout, shutdown).
//! - [`client`]: outbound calls and the per-peer connection pool.
//! - [`relay`]: async node-to-node calls for the request path (generated
//!   client as codec, tokio sockets).
//! - [`launch`]: start a node process, run it, stop it.
//! - [`discover`]: find a local ring by probing ports from 9900, like the original.
//! - [`stream`]: large values as chunks sent straight to their owners, in
//!   parallel, behind a manifest at the key.
//! - [`tools`]: what the command-line clients share.
//!
//! Testing:
//! - [`sim`]: a deterministic cluster simulation (real nodes, in-memory
//!   network with faults, virtual time), a history checker and seeded fault
//!   schedules.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod antientropy;
pub mod client;
pub mod config;
pub mod convert;
pub mod discover;
pub mod error;
pub mod frame;
pub mod handler;
pub mod idl;
pub mod launch;
pub mod membership;
pub mod node;
pub mod peer;
pub mod relay;
pub mod replicate;
pub mod ring;
pub mod server;
pub mod sim;
pub mod store;
pub mod stream;
pub mod swim;
pub mod tasks;
pub mod tools;
pub mod transport;
pub mod version;

pub use addr::NodeAddr;
pub use config::Config;
pub use error::{Error, Result};
