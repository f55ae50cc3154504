//! Starting and stopping a node: bind, serve, join, run the background workers,
//! and on request leave the ring gracefully and shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::addr::NodeAddr;
use crate::client::ClientOptions;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::node::{Node, Parts};
use crate::store::Store;
use crate::tasks::Tasks;
use crate::version::system_wall;
use crate::web;
use crate::wire::Conn;
use crate::wire::relay::{AsyncPool, ThriftTransport};
use crate::wire::server;

/// Where a stop request (a signal) goes: to the node once it runs, and if
/// it came before, the node stops as soon as it is attached.
#[derive(Clone, Default)]
pub struct Stopper {
    inner: Arc<parking_lot::Mutex<(bool, Option<Arc<Node>>)>>,
}

impl Stopper {
    /// Asks the node to stop (now, or as soon as it is attached).
    pub fn stop(&self) {
        let mut inner = self.inner.lock();
        inner.0 = true;
        if let Some(node) = &inner.1 {
            node.request_stop();
        }
    }

    /// The node stop requests go to from now on.
    pub fn attach(&self, node: Arc<Node>) {
        let mut inner = self.inner.lock();
        if inner.0 {
            node.request_stop();
        }
        inner.1 = Some(node);
    }
}

/// A node that is up and serving.
pub struct Running {
    node: Arc<Node>,
    runtime: tokio::runtime::Runtime,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// The HTTP server (`--http`): where it listens, and its task.
    http: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
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
    // Bound before anything starts, so a taken port fails the start at once.
    let http = match config.http {
        Some(addr) => {
            let http = std::net::TcpListener::bind(addr).map_err(|source| Error::HttpBind {
                addr: addr.to_string(),
                source,
            })?;
            http.set_nonblocking(true)?;
            Some(http)
        }
        None => None,
    };
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
    if let Some(seed) = &config.seed
        && names_this_node(seed, &me, local)
    {
        return Err(Error::SelfJoin {
            peer: seed.to_string(),
        });
    }
    let store = match &config.data_dir {
        Some(dir) => {
            let store = Store::open(dir, config.fsync)?;
            // Before the node records that it runs with it again.
            crate::node::check_downtime(
                &store,
                config.tombstone_grace,
                crate::version::wall_micros(),
                &dir.display().to_string(),
            )?;
            store
        }
        None => Store::memory(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("thrifty-worker")
        .build()?;
    let _inside = runtime.enter();
    let pool = Arc::new(
        AsyncPool::new(
            config.connect_timeout,
            config.limits(),
            config.secrets.cluster.clone(),
        )
        .with_tls(config.tls.clone()),
    );
    let node = Node::new(Parts {
        config: config.clone(),
        me,
        store,
        transport: Arc::new(ThriftTransport::new(pool)),
        tasks: Tasks::default(),
        wall: system_wall(),
    });
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (shutdown, watcher) = watch::channel(false);
    let server = runtime.spawn(server::serve(listener, node.clone(), watcher.clone()));
    let http = match http {
        Some(http) => {
            let http = tokio::net::TcpListener::from_std(http)?;
            let addr = http.local_addr()?;
            log::info!(
                "{} serving HTTP on http://{addr}/ (/metrics, /status.json)",
                node.me()
            );
            Some((addr, runtime.spawn(web::serve(http, node.clone(), watcher))))
        }
        None => None,
    };
    drop(_inside);
    let running = Running {
        node: node.clone(),
        runtime,
        shutdown,
        server,
        http,
        local,
    };
    if let Some(seed) = &config.seed
        && let Err(e) = running.runtime.block_on(join(&node, seed, &config))
    {
        running.stop_serving();
        return Err(e);
    }
    {
        let _inside = running.runtime.enter();
        node.start();
    }
    log::info!("{} serving on {local}", node.me());
    warn_about_access(&config, local);
    Ok(running)
}

/// Says at start what a node without secrets leaves open.
fn warn_about_access(config: &Config, local: SocketAddr) {
    let secrets = &config.secrets;
    if secrets.cluster.is_none() {
        log::warn!(
            "no cluster secret: anyone who can reach {local} can join this ring, remove or \
             stop members and overwrite any key; run it on a trusted network only, or start \
             every member with --cluster-secret-file (README, Security)"
        );
    }
    if secrets.client.is_none() {
        log::info!(
            "no client secret: anyone who can reach {local} can read and write data \
             (--client-secret-file to require one)"
        );
    }
}

/// Whether `seed` is this node itself (`me`, listening on `local`): its
/// name, or a name of this machine that resolves to the address and port it
/// listens on (`localhost:9900` for a node on 127.0.0.1:9900).
fn names_this_node(seed: &NodeAddr, me: &NodeAddr, local: SocketAddr) -> bool {
    if seed == me {
        return true;
    }
    if seed.port != local.port() {
        return false;
    }
    let Ok(resolved) = seed.resolve() else {
        return false;
    };
    resolved.into_iter().any(|addr| {
        let ip = addr.ip();
        ip == local.ip()
            || (ip.is_loopback() && (local.ip().is_loopback() || local.ip().is_unspecified()))
    })
}

/// Joins `seed`'s ring; a 2009 node (which has no `enter`) is joined its way:
/// `get_all`, then `join` on the seed.
async fn join(node: &Arc<Node>, seed: &NodeAddr, config: &Config) -> Result<()> {
    match node.join(seed).await {
        Err(e) if e.kind() == ErrorKind::Refused && e.to_string().contains("unknown method") => {}
        other => return other,
    }
    let options = ClientOptions {
        secret: config
            .secrets
            .cluster
            .clone()
            .map(|secret| (crate::auth::Role::Cluster, secret)),
        tls: config.tls.clone(),
        connect_timeout: config.connect_timeout,
        rpc_timeout: config.rpc_timeout,
        limits: config.limits(),
        ..ClientOptions::default()
    };
    let members = tokio::task::block_in_place(|| {
        let mut conn = Conn::open(seed, &options)?;
        let members = conn.members()?;
        conn.join(node.me())?;
        Ok::<_, Error>(members)
    })?;
    for addr in &members {
        node.admit_legacy(addr);
    }
    node.set_ready();
    Ok(())
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

    /// Where HTTP is served (`--http`), the port actually bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// The node itself.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Blocks until the node is asked to stop (`die`, or `Node::request_stop` from
    /// a signal handler), then leaves the ring gracefully and shuts down.
    /// Returns how many keys could not be handed over.
    pub fn run_until_stopped(self) -> usize {
        let node = self.node.clone();
        let left_behind = self.runtime.block_on(async move {
            node.wait_for_stop().await;
            node.leave().await
        });
        self.stop_serving();
        left_behind
    }

    /// Leaves the ring gracefully and shuts down now; returns how many keys
    /// could not be handed over.
    pub fn stop(self) -> usize {
        self.node.request_stop();
        self.run_until_stopped()
    }

    fn stop_serving(self) {
        let _ = self.shutdown.send(true);
        let server = self.server;
        let http = self.http.map(|(_, task)| task);
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let _ = server.await;
                if let Some(http) = http {
                    let _ = http.await;
                }
            })
            .await
        });
        log::debug!("server stopped");
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        log::debug!("runtime stopped");
    }
}
