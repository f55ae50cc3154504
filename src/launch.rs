//! Starting and stopping a node: bind, serve, join, run the background workers,
//! and on request leave the ring gracefully and shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::addr::NodeAddr;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::server;
use crate::store::Store;

/// A node that is up and serving.
pub struct Running {
    node: Arc<Node>,
    runtime: tokio::runtime::Runtime,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    local: SocketAddr,
}

/// Starts a node: binds its port, serves, joins `config.seed` if given, and
/// starts gossip and handoff in the background.
pub fn start(config: Config) -> Result<Running> {
    let bind_addr = SocketAddr::new(config.bind, config.port);
    let listener = std::net::TcpListener::bind(bind_addr).map_err(|source| Error::Bind {
        addr: bind_addr.to_string(),
        source,
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let host = match &config.advertise {
        Some(host) => host.clone(),
        None if config.bind.is_unspecified() => {
            return Err(Error::BadAddress {
                input: config.bind.to_string(),
                reason: "a wildcard bind address cannot name this node to its peers; \
                         pass --advertise HOST with the address they should use"
                    .into(),
            });
        }
        None => config.bind.to_string(),
    };
    let me = NodeAddr::new(host, local.port());
    let store = match &config.data_dir {
        Some(dir) => Store::open(dir, config.fsync)?,
        None => Store::memory(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("thrifty-worker")
        .build()?;
    let node = Node::new(config.clone(), me, store, runtime.handle().clone());

    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (shutdown, watcher) = watch::channel(false);
    let server = runtime.spawn(server::serve(listener, node.clone(), watcher));
    let running = Running {
        node: node.clone(),
        runtime,
        shutdown,
        server,
        local,
    };
    if let Some(seed) = &config.seed
        && let Err(e) = node.join(seed)
    {
        running.stop_serving();
        return Err(e);
    }
    let worker = node.clone();
    std::thread::Builder::new()
        .name("handoff".into())
        .spawn(move || worker.handoff_worker())?;
    let worker = node.clone();
    std::thread::Builder::new()
        .name("detector".into())
        .spawn(move || worker.detector_worker())?;
    let worker = node.clone();
    std::thread::Builder::new()
        .name("anti-entropy".into())
        .spawn(move || worker.anti_entropy_worker())?;
    let gossiper = node.clone();
    std::thread::Builder::new()
        .name("gossip".into())
        .spawn(move || {
            let interval = gossiper.config().gossip_interval;
            while !gossiper.wait_for_stop_timeout(interval) {
                gossiper.gossip_round();
            }
        })?;
    log::info!("{} serving on {local}", node.me());
    Ok(running)
}

impl Running {
    /// The node's name on the ring.
    pub fn addr(&self) -> &NodeAddr {
        self.node.me()
    }

    /// The socket address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The node itself.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Blocks until the node is asked to stop (`die`, or `Node::request_stop` from
    /// a signal handler), then leaves the ring gracefully and shuts down.
    /// Returns how many keys could not be handed over.
    pub fn run_until_stopped(self) -> usize {
        self.node.wait_for_stop();
        let left_behind = self.node.leave();
        self.stop_serving();
        left_behind
    }

    fn stop_serving(self) {
        let _ = self.shutdown.send(true);
        let server = self.server;
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await });
        log::debug!("server stopped");
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        log::debug!("runtime stopped");
    }
}
