//! What the fuzz targets in `tests/fuzz` reach of the crate-private modules,
//! compiled only under `--cfg fuzzing` (which `cargo fuzz` sets): the member
//! table and the SWIM machine, re-exported as they are, and the server's path
//! for a message that [`crate::wire::codec::decode`] does not take, run on a
//! node built in memory. Thin wrappers only: the targets test the code the
//! node runs, not copies of it. Not an API; it may change with any target.

use std::sync::Arc;
use std::time::Duration;

pub use crate::membership::{
    Change, INCARNATION_HORIZON, MAX_INCARNATION, MAX_ROWS, MemberState, Membership, Status,
};
pub use crate::swim::{Config as SwimConfig, Effect, Swim};

use crate::addr::NodeAddr;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::{Node, Parts};
use crate::peer::{Reply, Request};
use crate::store::Store;
use crate::tasks::Tasks;
use crate::transport::{BoxFuture, Transport};
use crate::wire::frame::Frame;
use crate::wire::handler::Handler;
use crate::wire::idl::diststore::PeerSyncProcessor;
use crate::wire::server;

/// The wall clock of every fuzzed node: 2026-01-01, in microseconds (the
/// simulation's epoch), so a run replays exactly.
pub const WALL_MICROS: u64 = 1_767_225_600_000_000;

/// A network on which nothing listens: every call is refused at once, so the
/// pushes a fuzzed call makes the node send end without waiting.
struct Nowhere;

impl Transport for Nowhere {
    fn call(&self, peer: &NodeAddr, _: Request, _: Duration) -> BoxFuture<Result<Reply>> {
        let peer = peer.to_string();
        Box::pin(async move {
            Err(Error::Unreachable {
                peer,
                reason: "nothing listens (fuzzing)".into(),
                refused: true,
            })
        })
    }
}

/// The node's limits for one message (`Config::default().limits()`), which
/// the server scans and decodes with.
pub fn node_limits() -> crate::wire::frame::Limits {
    Config::default().limits()
}

/// Serves `message` (whole, as `frame` found it at the start of the bytes)
/// the way the server serves a message that the hot codec did not take:
/// through the generated processor and the node's own handler, on a fresh,
/// unstarted node alone in its ring (default settings, memory store, fixed
/// wall clock, paused tokio time). The tasks the call spawned run until they
/// wait, then the node is dropped. Returns the reply bytes (none for a
/// oneway method).
pub fn serve_on_fresh_node(message: &[u8], frame: &Frame) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let config = Config::default();
        let limits = config.limits();
        let node = Node::new(Parts {
            config,
            me: NodeAddr::new("10.0.0.1", 9000),
            store: Store::memory_deterministic(),
            transport: Arc::new(Nowhere),
            tasks: Tasks::default(),
            wall: Arc::new(|| WALL_MICROS),
        });
        let session = Arc::new(parking_lot::Mutex::new(crate::auth::Session::new()));
        let processor = PeerSyncProcessor::new(Handler::new(node.clone(), session));
        let mut reply = Vec::new();
        server::process(&processor, message, frame, &limits, &mut reply);
        // Let what the call spawned (pushes to members it named, refused)
        // run a few steps; virtual time does not move meanwhile.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        node.tasks().kill();
        reply
    })
}
