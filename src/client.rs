//! The public client: a ring-aware, map-like handle on a thrifty-p2p ring,
//! what the command-line tools and the tests use.
//!
//! ```
//! use thrifty_p2p::{Client, Config, launch};
//!
//! # fn main() -> thrifty_p2p::Result<()> {
//! // A one-node ring in this process, on a free port (`location 0` does the
//! // same from the command line).
//! let node = launch::start(Config { port: 0, ..Config::default() })?;
//! let mut ring = Client::connect(&node.addr().to_string())?;
//!
//! ring.put("a", "apple")?;
//! assert_eq!(ring.get("a")?.as_deref(), Some(&b"apple"[..]));
//! assert!(ring.contains("a")?);
//! ring.delete("a")?;
//! assert_eq!(ring.get("a")?, None);
//! assert!(!ring.contains("a")?);
//!
//! // Any bytes, any size: this one travels as chunks.
//! let big = vec![7u8; 9 << 20];
//! ring.put(b"\x00blob", &big)?;
//! assert_eq!(ring.get(b"\x00blob")?, Some(big));
//!
//! assert_eq!(ring.members()?, vec![node.addr().clone()]);
//! node.stop();
//! # Ok(())
//! # }
//! ```
//!
//! A refusal keeps its kind across the wire:
//!
//! ```
//! use thrifty_p2p::{Client, Config, ErrorKind, launch};
//!
//! # fn main() -> thrifty_p2p::Result<()> {
//! let node = launch::start(Config { port: 0, max_value_bytes: 1024, ..Config::default() })?;
//! let mut ring = Client::connect(&node.addr().to_string())?;
//! let error = ring.put("k", vec![0u8; 2048]).unwrap_err();
//! assert_eq!(error.kind(), ErrorKind::TooLarge);
//! assert!(!error.is_transient());
//! node.stop();
//! # Ok(())
//! # }
//! ```
//!
//! Ring-aware: the client learns the members from the node it was given and
//! sends each key's request straight to the key's owner (saving the hop a node
//! would forward it), falling back to the key's other replicas and then to
//! the given node when the owner cannot be reached or is still joining. Every
//! node routes, so a stale view of the ring costs a forward, never a wrong
//! answer. Values of any size: one larger than a chunk
//! ([`stream::Options::chunk_bytes`], 8 MiB by default) is streamed as chunks
//! to their owners in parallel (see [`crate::stream`]), and read back whole.
//!
//! Errors are [`Error`]s; one a node answered with is [`Error::Remote`] with
//! the [`crate::ErrorKind`] the node gave it, and [`Error::is_transient`] says
//! whether retrying may help.

mod batch;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::auth::{Role, Secret};
use crate::discover;
use crate::error::{Error, ErrorKind, Result};
use crate::lease::Lease;
pub use crate::listing::KeyPage;
use crate::listing::{self, MAX_PAGE_KEYS};
#[cfg(doc)]
use crate::membership::Status as MemberStatus;
use crate::membership::{MemberState, Status};
use crate::ring::Ring;
use crate::stream::{self, Manifest, Progress, ValueInfo, Written};
use crate::value::WriteOptions;
use crate::wire::{Conn, Limits};

/// How a [`Client`] connects and calls.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// A secret to prove on every connection, and which one it is (see
    /// [`crate::auth`]): needed by nodes started with
    /// `--client-secret-file` (role `Client`) or, for the node-to-node and
    /// ring-changing methods, `--cluster-secret-file` (role `Cluster`).
    pub secret: Option<(Role, Secret)>,
    /// TLS, for nodes started with `--tls-cert/--tls-key/--tls-ca` (see
    /// [`crate::tls`]): the client's certificate, key and the ring's CA.
    /// None by default: plain TCP.
    pub tls: Option<crate::tls::Tls>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long a new connection waits for the node's first answer (a
    /// `ping`): a port that accepts but never answers fails in this time
    /// with [`Error::NoAnswer`], not after `rpc_timeout`.
    pub answer_timeout: Duration,
    /// How long to wait for one reply.
    pub rpc_timeout: Duration,
    /// Limits on one reply.
    pub limits: Limits,
    /// Send each key to its owner (`true`, the default), or every request to
    /// the node given, which routes it (`false`: to test or use one node as
    /// the entry point on purpose).
    pub ring_aware: bool,
    /// How large values are streamed.
    pub stream: stream::Options,
}

impl ClientOptions {
    /// The default options with the secret and TLS read from files, as every
    /// client tool takes them: the cluster secret when `cluster_secret` is
    /// given (it opens every method), else the client secret; TLS with
    /// (certificate, key, CA) when given.
    pub fn from_files(
        client_secret: Option<&std::path::Path>,
        cluster_secret: Option<&std::path::Path>,
        tls: Option<(&std::path::Path, &std::path::Path, &std::path::Path)>,
    ) -> Result<ClientOptions> {
        let secret = match (cluster_secret, client_secret) {
            (Some(path), _) => Some((Role::Cluster, Secret::from_file(path)?)),
            (None, Some(path)) => Some((Role::Client, Secret::from_file(path)?)),
            (None, None) => None,
        };
        let tls = match tls {
            Some((cert, key, ca)) => Some(crate::tls::Tls::from_files(cert, key, ca)?),
            None => None,
        };
        Ok(ClientOptions {
            secret,
            tls,
            ..ClientOptions::default()
        })
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            secret: None,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            ring_aware: true,
            stream: stream::Options::default(),
        }
    }
}

/// A connection to a ring (see the [module docs](self)).
pub struct Client {
    entry: NodeAddr,
    options: ClientOptions,
    conns: HashMap<NodeAddr, Conn>,
    /// The members as the entry node saw them, learned on first use and
    /// again after a member could not be reached.
    ring: Option<Ring<NodeAddr>>,
}

impl Client {
    /// Connects to the ring that the node at `addr` (`HOST:PORT`) belongs to.
    ///
    /// Errors: [`Error::BadAddress`] for an address that does not parse,
    /// [`Error::Unreachable`] when no node answers there.
    pub fn connect(addr: &str) -> Result<Client> {
        Client::with_options(addr.parse()?, ClientOptions::default())
    }

    /// Connects to the ring of the first node answering on localhost from
    /// port 9900 up, as the 2009 tools did.
    pub fn discover() -> Result<Client> {
        Client::with_options(discover::find_node("localhost")?, ClientOptions::default())
    }

    /// Connects to `peer`'s ring, or when `None` to the ring of the first node
    /// answering on localhost from port 9900 up: what the command-line tools'
    /// `--peer` does.
    pub fn open(peer: Option<NodeAddr>, options: ClientOptions) -> Result<Client> {
        let entry = match peer {
            Some(peer) => peer,
            None => discover::find_node("localhost")?,
        };
        Client::with_options(entry, options)
    }

    /// Connects to `entry`'s ring with `options`.
    pub fn with_options(entry: NodeAddr, options: ClientOptions) -> Result<Client> {
        let mut client = Client {
            entry: entry.clone(),
            options,
            conns: HashMap::new(),
            ring: None,
        };
        client.conn(&entry)?;
        Ok(client)
    }

    /// Sends every request to `entry`, which routes it: the node a request
    /// enters the ring through is chosen, not the key's owner.
    pub fn through(entry: NodeAddr) -> Result<Client> {
        let options = ClientOptions {
            ring_aware: false,
            ..ClientOptions::default()
        };
        Client::with_options(entry, options)
    }

    /// The node this client was given.
    pub fn entry(&self) -> &NodeAddr {
        &self.entry
    }

    /// The value at `key`, whole, or `None` when it is not stored (never
    /// written, or deleted). A streamed value is read chunk by chunk and
    /// checked against its manifest's digests.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        match self.on_owner(key, |c| c.fetch(key)) {
            // The node says the value is streamed (see `describe`).
            Err(e) if e.kind() == ErrorKind::Streamed => {}
            Err(e) => return Err(e),
            Ok(None) => return Ok(None),
            Ok(Some(value)) => match Manifest::decode(&value) {
                // A node older than `describe` answers with the manifest.
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Some(value)),
                Err(reason) => {
                    return Err(Error::BadManifest {
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason,
                    });
                }
            },
        }
        let mut whole = Vec::new();
        Ok(self.get_to(key, &mut whole)?.map(|_| whole))
    }

    /// Stores `value` at `key`; returns once a write quorum of the key's
    /// replicas has it (with the defaults, 2 of 3). A value larger than one
    /// chunk is streamed (see [`Client::put_from`]).
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        if value.len() > self.options.stream.chunk_bytes || value.starts_with(&stream::MAGIC) {
            return self.put_from(key, value).map(drop);
        }
        self.on_owner(key, |c| c.store(key, value))
    }

    /// Stores `value` at `key` as [`Client::put`] does, with options: a
    /// content type and description stored with the value (returned by
    /// [`Client::describe`]), and create-only, which fails with
    /// [`Error::Exists`] (kind [`ErrorKind::Exists`]) if the key holds a
    /// value, changing nothing: of concurrent create-only writes of a key,
    /// exactly one succeeds. A value with options must fit one message
    /// (at most a chunk, [`stream::Options::chunk_bytes`]).
    ///
    /// ```no_run
    /// use thrifty_p2p::{Client, ErrorKind, WriteOptions};
    /// let mut ring = Client::connect("127.0.0.1:9900")?;
    /// let options = WriteOptions::default()
    ///     .create_only()
    ///     .content_type("text/plain")
    ///     .description("the greeting");
    /// match ring.put_with("greeting", "hello", &options) {
    ///     Err(e) if e.kind() == ErrorKind::Exists => println!("already there"),
    ///     other => other?,
    /// }
    /// let info = ring.describe("greeting")?;
    /// assert_eq!(info.meta.content_type.as_deref(), Some("text/plain"));
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn put_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: &WriteOptions,
    ) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        if *options == WriteOptions::default() {
            return self.put(key, value);
        }
        if value.len() > self.options.stream.chunk_bytes {
            return Err(Error::Refused {
                peer: "this client".into(),
                message: format!(
                    "a value of {} bytes is streamed in chunks of {}, and streamed values take no options (metadata, create-only); store it with put",
                    value.len(),
                    self.options.stream.chunk_bytes
                ),
            });
        }
        self.on_owner(key, |c| c.store_with(key, value, options))
    }

    /// Appends `suffix` to the value at `key`, atomically at the key's
    /// owner (concurrent appends through any nodes each land once), and
    /// returns the value's new size. A missing key is created; the value's
    /// metadata is kept. A streamed value fails with [`ErrorKind::Streamed`],
    /// a result over the nodes' `--max-value-bytes` with
    /// [`ErrorKind::TooLarge`]. Unlike a put, an append is not repeated
    /// after a call that broke midway ([`ErrorKind::Rpc`]): it may have been
    /// applied, so read the value before appending again.
    ///
    /// ```no_run
    /// let mut ring = thrifty_p2p::Client::connect("127.0.0.1:9900")?;
    /// ring.append("log", "first line\n")?;
    /// let size = ring.append("log", "second line\n")?;
    /// assert!(size >= 23);
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn append(&mut self, key: impl AsRef<[u8]>, suffix: impl AsRef<[u8]>) -> Result<u64> {
        let (key, suffix) = (key.as_ref(), suffix.as_ref());
        let options = WriteOptions::default();
        // Set once a call broke after it was sent: its outcome is unknown.
        let mut unknown: Option<(String, String)> = None;
        self.on_owner(key, |c| {
            if let Some((peer, reason)) = unknown.take() {
                return Err(Error::Rpc {
                    peer,
                    reason: format!(
                        "{reason}; the append may have been applied, so it was not repeated"
                    ),
                });
            }
            let result = c.append(key, suffix, &options);
            if let Err(Error::Rpc { peer, reason }) = &result {
                unknown = Some((peer.clone(), reason.clone()));
            }
            result
        })
    }

    /// Deletes `key`: a tombstone keeps older copies from coming back.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        self.on_owner(key, |c| c.erase(key))
    }

    /// Takes the lease on `key` for `ttl` (1 ms to one day, counted in whole
    /// milliseconds, rounded up) and returns it with its fencing token
    /// (README, Leases). When another holder's lease has not expired: with
    /// `wait` `None`, fails at once with [`ErrorKind::Held`] (the message
    /// says until when); otherwise tries again, backing off from 10 ms to
    /// at most 500 ms, until it gets the lease or `wait` has passed (then
    /// the last error). Transient errors (a node down, a ring changing) are
    /// retried the same way while `wait` lasts.
    ///
    /// The lease is decided at the key's owner and stored replicated, so it
    /// outlives that node; it ends with [`Client::unlock`] or by expiring.
    /// A lease does not stop anyone writing the key by itself: write with
    /// [`Client::put_fenced`], which is refused once a newer lease exists.
    ///
    /// ```
    /// use std::time::Duration;
    /// use thrifty_p2p::{Client, Config, ErrorKind, launch};
    ///
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// let node = launch::start(Config { port: 0, ..Config::default() })?;
    /// let mut ring = Client::connect(&node.addr().to_string())?;
    /// let lease = ring.lock("job", Duration::from_secs(10), None)?;
    /// ring.put_fenced("job", "step 1", lease.token)?;
    /// // Held: a second lock fails at once.
    /// let held = ring.lock("job", Duration::from_secs(10), None).unwrap_err();
    /// assert_eq!(held.kind(), ErrorKind::Held);
    /// ring.unlock("job", lease.token)?;
    /// let next = ring.lock("job", Duration::from_secs(10), Some(Duration::from_secs(5)))?;
    /// assert!(next.token > lease.token);
    /// // The old token no longer fences.
    /// let stale = ring.put_fenced("job", "late", lease.token).unwrap_err();
    /// assert_eq!(stale.kind(), ErrorKind::StaleToken);
    /// node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(
        &mut self,
        key: impl AsRef<[u8]>,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<Lease> {
        let key = key.as_ref();
        let ttl_ms = ttl_millis(ttl);
        let deadline = wait.map(|wait| std::time::Instant::now() + wait);
        let mut backoff = Duration::from_millis(10);
        loop {
            let error = match self.on_owner(key, |c| c.lock(key, ttl_ms)) {
                Ok(lease) => return Ok(lease),
                Err(e) => e,
            };
            let retry = error.kind() == ErrorKind::Held || error.is_transient();
            let left = deadline.and_then(|d| d.checked_duration_since(std::time::Instant::now()));
            match left {
                // Backing off is what waiting for a lease is: the holder
                // is not told about waiters, so they ask again.
                Some(left) if retry && !left.is_zero() => {
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                _ => return Err(error),
            }
        }
    }

    /// Gives the lease `token` on `key` back, at once: the next
    /// [`Client::lock`] gets it. Fails with [`ErrorKind::StaleToken`] when
    /// `token` is not the key's current lease (a newer one was granted, or
    /// it was unlocked already); nothing changes then.
    pub fn unlock(&mut self, key: impl AsRef<[u8]>, token: i64) -> Result<()> {
        let key = key.as_ref();
        self.on_owner(key, |c| c.unlock(key, token))
    }

    /// Extends the lease `token` on `key` to expire `ttl` from now, keeping
    /// its token; [`ErrorKind::StaleToken`] as for [`Client::unlock`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// # let node = thrifty_p2p::launch::start(thrifty_p2p::Config { port: 0, ..Default::default() })?;
    /// # let mut ring = thrifty_p2p::Client::connect(&node.addr().to_string())?;
    /// let lease = ring.lock("job", Duration::from_secs(1), None)?;
    /// let longer = ring.renew("job", lease.token, Duration::from_secs(60))?;
    /// assert_eq!(longer.token, lease.token);
    /// assert!(longer.expires_ms > lease.expires_ms);
    /// # node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn renew(&mut self, key: impl AsRef<[u8]>, token: i64, ttl: Duration) -> Result<Lease> {
        let key = key.as_ref();
        let ttl_ms = ttl_millis(ttl);
        self.on_owner(key, |c| c.renew(key, token, ttl_ms))
    }

    /// Stores `value` at `key` fenced with the lease `token` (from
    /// [`Client::lock`]): the key's owner checks the token and writes under
    /// the key's lease lock, and refuses with [`ErrorKind::StaleToken`]
    /// (storing nothing) unless `token` is the newest lease granted on the
    /// key and was not unlocked. A lease that expired but that nobody took
    /// since still fences. Values up to one message (`--max-value-bytes`);
    /// a fenced write is never streamed.
    pub fn put_fenced(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        token: i64,
    ) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.on_owner(key, |c| c.store_fenced(key, value, token))
    }

    /// Whether `key` holds a value.
    pub fn contains(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        match self.on_owner(key, |c| c.fetch(key)) {
            Err(e) if e.kind() == ErrorKind::Streamed => Ok(true),
            other => Ok(other?.is_some()),
        }
    }

    /// What `key` holds: whether it exists, its size, whether it is streamed
    /// (stored in parts behind a manifest), its part size and count, its
    /// identity for [`Client::read_range`], the metadata stored with it
    /// ([`Client::put_with`]) and, when the node stored it compressed, its
    /// stored size.
    ///
    /// ```no_run
    /// let mut ring = thrifty_p2p::Client::connect("127.0.0.1:9900")?;
    /// let info = ring.describe("movie")?;
    /// println!("{} bytes in {} parts", info.size, info.parts);
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn describe(&mut self, key: impl AsRef<[u8]>) -> Result<ValueInfo> {
        let key = key.as_ref();
        self.on_owner(key, |c| c.describe(key))
    }

    /// Up to `length` bytes (at most 16 MiB) of the value at `key`, plain or
    /// streamed, from byte `offset` on; fewer only at the value's end. With
    /// `id` from [`Client::describe`], fails with [`ErrorKind::Changed`] once
    /// the key holds another value, so pieces of two values are never mixed;
    /// with `id` 0 it reads whatever the key holds. The node checks every
    /// part it reads against the manifest's MD5.
    ///
    /// ```no_run
    /// let mut ring = thrifty_p2p::Client::connect("127.0.0.1:9900")?;
    /// let info = ring.describe("movie")?;
    /// let head = ring.read_range("movie", 0, 1 << 20, info.id)?;
    /// # Ok::<(), thrifty_p2p::Error>(())
    /// ```
    pub fn read_range(
        &mut self,
        key: impl AsRef<[u8]>,
        offset: u64,
        length: u32,
        id: u64,
    ) -> Result<Vec<u8>> {
        let key = key.as_ref();
        self.on_owner(key, |c| c.read_range(key, offset, length, id))
    }

    /// The member that owns `key` in the entry node's view of the ring.
    pub fn owner(&mut self, key: impl AsRef<[u8]>) -> Result<Option<NodeAddr>> {
        let entry = self.entry.clone();
        self.call(&entry, |c| c.locate(key.as_ref()))
    }

    /// The members holding `key` in the entry node's view, owner first: as
    /// many as the node's `--replicas` (fewer when the ring is smaller).
    pub fn replicas(&mut self, key: impl AsRef<[u8]>) -> Result<Vec<NodeAddr>> {
        let entry = self.entry.clone();
        // The node caps the count at its own replica count.
        self.call(&entry, |c| c.replicas(key.as_ref(), usize::MAX))
    }

    /// The ring's members in the entry node's view.
    pub fn members(&mut self) -> Result<Vec<NodeAddr>> {
        let entry = self.entry.clone();
        self.call(&entry, Conn::members)
    }

    /// Merges the entry node's ring with the ring `other` belongs to, and
    /// waits (up to `within`) until the entry node serves every member of
    /// both; returns the members. Keys then move to their owners in the
    /// merged ring as after any join, and where both rings hold a key the
    /// newer write wins (versions are hybrid-clock stamps).
    ///
    /// Each side is shown the other's member table as if its first member
    /// had gossiped it (a `gossip` push); from there the nodes' own
    /// membership protocol takes over: each new member is probed, served
    /// once it answered with its own identity, and the news spreads.
    /// Nothing changes if `other` is already a member.
    pub fn merge(&mut self, other: &NodeAddr, within: Duration) -> Result<Vec<NodeAddr>> {
        let entry = self.entry.clone();
        let ours = self.call(&entry, Conn::table)?;
        let mut theirs = Conn::open(other, &self.options)?;
        let their_table = theirs.table()?;
        let serving = |table: &[MemberState], addr: &NodeAddr| {
            table
                .iter()
                .any(|row| &row.addr == addr && row.status.is_up())
        };
        if serving(&ours, other) {
            return self.members();
        }
        // Each push starts with its sender's own row: the node answering.
        let push = |table: &[MemberState], from: &NodeAddr| -> Result<Vec<MemberState>> {
            let own = table
                .iter()
                .find(|row| &row.addr == from)
                .ok_or_else(|| Error::Refused {
                    peer: from.to_string(),
                    message: "its member table does not list itself; is it a thrifty-p2p node?"
                        .into(),
                })?;
            let mut rows = vec![own.clone()];
            rows.extend(table.iter().filter(|row| &row.addr != from).cloned());
            Ok(rows)
        };
        let to_ours = push(&their_table, other)?;
        let to_theirs = push(&ours, &entry)?;
        self.call(&entry, |c| c.gossip(&to_ours))?;
        theirs.gossip(&to_theirs)?;
        let wanted: Vec<NodeAddr> = ours
            .iter()
            .chain(&their_table)
            .filter(|row| row.status == Status::Alive)
            .map(|row| row.addr.clone())
            .collect();
        let deadline = std::time::Instant::now() + within;
        loop {
            let members = self.members()?;
            if wanted.iter().all(|m| members.contains(m)) {
                self.ring = None;
                return Ok(members);
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout(within));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A page of the keys the ring holds that start with `prefix`: at most
    /// `limit` of them (1 to 10,000), from `cursor` (`None` for the first
    /// page, then each page's [`KeyPage::cursor`] until it is `None`).
    ///
    /// Every member is asked for its own copies and the answers merged (see
    /// [`crate::listing`]), so each key is listed once, an erased key not at
    /// all, and a member that cannot be reached is left out as long as fewer
    /// than the write quorum are: past that it fails with
    /// [`Error::ListIncomplete`]. Keys written or erased while a listing
    /// runs may or may not be in it; every other key is listed exactly once.
    /// The order is the ring's listing order, not sorted by key.
    ///
    /// ```
    /// use thrifty_p2p::{Client, Config, launch};
    ///
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// let node = launch::start(Config { port: 0, ..Config::default() })?;
    /// let mut ring = Client::connect(&node.addr().to_string())?;
    /// for key in ["fruit/apple", "fruit/pear", "veg/leek"] {
    ///     ring.put(key, "x")?;
    /// }
    /// let mut fruit = Vec::new();
    /// let mut cursor = None;
    /// loop {
    ///     let page = ring.list("fruit/", cursor.as_deref(), 1)?;
    ///     fruit.extend(page.keys);
    ///     match page.cursor {
    ///         Some(next) => cursor = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// fruit.sort();
    /// assert_eq!(fruit, [b"fruit/apple".to_vec(), b"fruit/pear".to_vec()]);
    /// // Or, without cursors:
    /// assert_eq!(ring.keys("").count(), 3);
    /// assert_eq!(ring.count("veg/")?, 1);
    /// node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn list(
        &mut self,
        prefix: impl AsRef<[u8]>,
        cursor: Option<&[u8]>,
        limit: u32,
    ) -> Result<KeyPage> {
        let (prefix, start) = (prefix.as_ref(), cursor.unwrap_or_default());
        let limit = limit.clamp(1, MAX_PAGE_KEYS);
        let members = self.members()?;
        let mut pages = Vec::with_capacity(members.len());
        let mut silent = Vec::new();
        for member in &members {
            match self.call(member, |c| c.list_keys(prefix, start, limit)) {
                Ok(page) => pages.push(page),
                Err(e) if moves_on(&e) => {
                    log::debug!("listing without {member}: {e}");
                    silent.push(member.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        if !silent.is_empty() {
            let needed = self.write_quorum()?;
            if silent.len() >= needed || pages.is_empty() {
                return Err(Error::ListIncomplete { silent, needed });
            }
        }
        Ok(listing::merge(pages, limit as usize))
    }

    /// Every key starting with `prefix`, page by page (see [`Client::list`]);
    /// an error ends the iteration after it is yielded.
    pub fn keys(&mut self, prefix: impl AsRef<[u8]>) -> Keys<'_> {
        Keys {
            client: self,
            prefix: prefix.as_ref().to_vec(),
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// How many keys starting with `prefix` the ring holds (`""`: all), by
    /// listing them (see [`Client::list`]): it costs a listing.
    pub fn count(&mut self, prefix: impl AsRef<[u8]>) -> Result<u64> {
        let prefix = prefix.as_ref();
        let (mut count, mut cursor) = (0, None);
        loop {
            let page = self.list(prefix, cursor.as_deref(), MAX_PAGE_KEYS)?;
            count += page.keys.len() as u64;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(count),
            }
        }
    }

    /// The write quorum of the entry node: how many copies every
    /// acknowledged write has at least.
    fn write_quorum(&mut self) -> Result<usize> {
        let stats = self.stats()?;
        Ok(stats.get("write_quorum").map_or(1, |&w| w.max(1) as usize))
    }

    /// The entry node's counters (keys, bytes, requests, repairs...).
    pub fn stats(&mut self) -> Result<BTreeMap<String, i64>> {
        let entry = self.entry.clone();
        self.call(&entry, Conn::stats)
    }

    /// The counters of `node`, any member of the ring (see [`Client::stats`]),
    /// on a connection of this client's own.
    pub fn stats_of(&mut self, node: &NodeAddr) -> Result<BTreeMap<String, i64>> {
        self.call(node, Conn::stats)
    }

    /// The entry node's whole member table: every member it knows, itself
    /// included, with incarnation and [`MemberStatus`] (departed members
    /// too, as `Dead` or `Left`), sorted by address.
    ///
    /// ```
    /// use thrifty_p2p::{Client, Config, MemberStatus, launch};
    ///
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// let node = launch::start(Config { port: 0, ..Config::default() })?;
    /// let mut ring = Client::connect(&node.addr().to_string())?;
    /// let table = ring.member_table()?;
    /// assert_eq!(table.len(), 1);
    /// assert_eq!(&table[0].addr, node.addr());
    /// assert_eq!(table[0].status, MemberStatus::Alive);
    /// node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_table(&mut self) -> Result<Vec<MemberState>> {
        let entry = self.entry.clone();
        self.call(&entry, Conn::member_table)
    }

    /// Where the value at `key` lives, in the entry node's view of the ring:
    /// the members holding the key, owner first, and for a streamed value
    /// the members holding each part; `None` when the key holds nothing.
    ///
    /// ```
    /// use thrifty_p2p::{Client, Config, launch};
    ///
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// let node = launch::start(Config { port: 0, ..Config::default() })?;
    /// let mut ring = Client::connect(&node.addr().to_string())?;
    /// ring.put("blob", vec![0u8; 9 << 20])?; // more than one 8 MiB chunk
    /// let placement = ring.placement("blob")?.expect("stored");
    /// assert_eq!(placement.replicas, [node.addr().clone()]);
    /// assert_eq!(placement.parts.len(), 2);
    /// assert_eq!(ring.placement("nothing")?, None);
    /// node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn placement(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Placement>> {
        let key = key.as_ref();
        let info = self.describe(key)?;
        if !info.exists {
            return Ok(None);
        }
        let replicas = self.replicas(key)?;
        let parts = match &info.manifest {
            Some(manifest) => {
                let entry = self.entry.clone();
                let ring = self.call(&entry, Conn::ring)?;
                (0..manifest.chunks())
                    .map(|i| {
                        let part = manifest.chunk_key(key, i);
                        let owners = ring.owners(&part, replicas.len());
                        owners.into_iter().cloned().collect()
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Some(Placement { replicas, parts }))
    }

    /// `count` new keys, each `prefix` followed by 16 random hex digits,
    /// spread evenly over the members: the owner of the i-th key is the
    /// i-th member (sorted by address) round and round, so each member owns
    /// `count / members` of them, give or take one. For a shuffle's
    /// partitions, say. The spread is the ring's at the time of the call: a
    /// member joining or leaving later moves some of them, as it moves any key.
    ///
    /// ```
    /// use thrifty_p2p::{Client, Config, launch};
    ///
    /// # fn main() -> thrifty_p2p::Result<()> {
    /// let node = launch::start(Config { port: 0, ..Config::default() })?;
    /// let mut ring = Client::connect(&node.addr().to_string())?;
    /// let ids = ring.spread_keys("part-", 4)?;
    /// assert_eq!(ids.len(), 4);
    /// assert!(ids.iter().all(|id| id.starts_with("part-") && id.len() == 21));
    /// node.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn spread_keys(&mut self, prefix: &str, count: usize) -> Result<Vec<String>> {
        let entry = self.entry.clone();
        let ring = self.call(&entry, Conn::ring)?;
        let members = ring.members().to_vec();
        let mut keys = Vec::with_capacity(count);
        for target in members.iter().cycle().take(count) {
            // A member owns about 1/members of the circle: drawing that many
            // keys finds one of its own, on average.
            let tries = 1000 * members.len();
            let found = (0..tries).find_map(|_| {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).ok()?;
                let key = format!("{prefix}{:016x}", u64::from_be_bytes(bytes));
                (ring.owner(key.as_bytes()) == Some(target)).then_some(key)
            });
            keys.push(found.ok_or_else(|| Error::Refused {
                peer: target.to_string(),
                message: format!("no key of {tries} drawn is owned by this member"),
            })?);
        }
        Ok(keys)
    }

    /// Stores everything `reader` yields at `key`: input that ends within one
    /// chunk as a plain value, longer input as chunks sent straight to their
    /// owners, `options.stream.workers` at a time, behind a manifest written
    /// last (a reader sees the old value or the whole new one). Never holds
    /// more than `workers + 2` chunks in memory.
    pub fn put_from(&mut self, key: impl AsRef<[u8]>, reader: impl Read) -> Result<Written> {
        stream::put(&self.entry, key.as_ref(), reader, &self.stream_options())
    }

    /// [`Client::put_from`], telling `progress` after each chunk of a
    /// streamed value is stored (see [`stream::Progress`]); a value within
    /// one chunk is stored in one call and not told.
    pub fn put_from_with_progress(
        &mut self,
        key: impl AsRef<[u8]>,
        reader: impl Read,
        progress: impl Fn(Progress) + Sync,
    ) -> Result<Written> {
        let options = &self.stream_options();
        stream::put_with_progress(&self.entry, key.as_ref(), reader, options, &progress)
    }

    /// [`Client::get_to`], telling `progress` after each chunk of a streamed
    /// value is written out, with the value's size as its total.
    pub fn get_to_with_progress(
        &mut self,
        key: impl AsRef<[u8]>,
        writer: impl Write,
        progress: impl Fn(Progress) + Sync,
    ) -> Result<Option<u64>> {
        let options = &self.stream_options();
        stream::get_with_progress(&self.entry, key.as_ref(), writer, options, &progress)
    }

    /// Writes the value at `key` to `writer`, a streamed value's chunks
    /// fetched from their owners in parallel and in order; returns its size,
    /// or `None` when the key is not stored.
    pub fn get_to(&mut self, key: impl AsRef<[u8]>, writer: impl Write) -> Result<Option<u64>> {
        stream::get_large(&self.entry, key.as_ref(), writer, &self.stream_options())
    }

    /// Makes `call` at the key's owner, then at its other replicas, then at
    /// the entry node, until one answers (see the module docs).
    fn on_owner<R>(
        &mut self,
        key: &[u8],
        mut call: impl FnMut(&mut Conn) -> Result<R>,
    ) -> Result<R> {
        let mut tried = Vec::new();
        for refreshed in [false, true] {
            for peer in self.candidates(key, refreshed) {
                if tried.contains(&peer) {
                    continue;
                }
                match self.call(&peer, &mut call) {
                    Err(e) if moves_on(&e) && peer != self.entry => {
                        log::debug!("{e}; trying the next replica");
                        tried.push(peer);
                    }
                    other => return other,
                }
            }
            if tried.is_empty() {
                break;
            }
        }
        let entry = self.entry.clone();
        self.call(&entry, call)
    }

    /// Where a request for `key` goes, in order: the key's replicas in the
    /// ring as last learned (learned again when `refresh`), then the entry.
    fn candidates(&mut self, key: &[u8], refresh: bool) -> Vec<NodeAddr> {
        if !self.options.ring_aware {
            return vec![self.entry.clone()];
        }
        if refresh || self.ring.is_none() {
            let entry = self.entry.clone();
            match self.call(&entry, Conn::ring) {
                Ok(ring) => self.ring = Some(ring),
                Err(e) => log::debug!("cannot learn the ring: {e}"),
            }
        }
        let mut peers: Vec<NodeAddr> = self
            .ring
            .as_ref()
            .map(|ring| ring.owners(key, 3).into_iter().cloned().collect())
            .unwrap_or_default();
        peers.push(self.entry.clone());
        peers
    }

    /// How this client streams: its stream options, proving its secret.
    fn stream_options(&self) -> stream::Options {
        stream::Options {
            secret: self.options.secret.clone(),
            tls: self.options.tls.clone(),
            ..self.options.stream.clone()
        }
    }

    /// Makes `call` on a connection to `peer`, opened on first use; one that
    /// broke is dropped and, if it was an idle pooled one, opened again once.
    fn call<R>(
        &mut self,
        peer: &NodeAddr,
        mut call: impl FnMut(&mut Conn) -> Result<R>,
    ) -> Result<R> {
        let reused = self.conns.contains_key(peer);
        let result = call(self.conn(peer)?);
        match result {
            Err(_) if self.conns.get(peer).is_some_and(Conn::is_broken) => {
                self.conns.remove(peer);
                if reused {
                    // The node may have closed an idle connection: once more.
                    let result = call(self.conn(peer)?);
                    if self.conns.get(peer).is_some_and(Conn::is_broken) {
                        self.conns.remove(peer);
                    }
                    return result;
                }
                result
            }
            other => other,
        }
    }

    fn conn(&mut self, peer: &NodeAddr) -> Result<&mut Conn> {
        if !self.conns.contains_key(peer) {
            let conn = Conn::open(peer, &self.options)?;
            self.conns.insert(peer.clone(), conn);
        }
        Ok(self.conns.get_mut(peer).expect("inserted above"))
    }
}

/// Where a value lives ([`Client::placement`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The members holding the key (its value, or a streamed value's
    /// manifest), owner first.
    pub replicas: Vec<NodeAddr>,
    /// For a streamed value, the members holding each part, in order, owner
    /// first; empty for a plain value.
    pub parts: Vec<Vec<NodeAddr>>,
}

/// The keys of a ring, page by page ([`Client::keys`]).
pub struct Keys<'a> {
    client: &'a mut Client,
    prefix: Vec<u8>,
    cursor: Option<Vec<u8>>,
    page: std::vec::IntoIter<Vec<u8>>,
    done: bool,
}

impl Iterator for Keys<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            let cursor = self.cursor.take();
            match (self.client).list(&self.prefix, cursor.as_deref(), 1000) {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.cursor = page.cursor;
                    self.page = page.keys.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Whether a failure at one node is worth trying at another: it could not be
/// reached, the call broke, or it is joining or leaving.
/// A lease's TTL in whole milliseconds, rounded up (so 1 ns is 1 ms, and
/// only a zero TTL reaches the node as 0, which refuses it).
fn ttl_millis(ttl: Duration) -> i64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn moves_on(error: &Error) -> bool {
    match error {
        // The node answered: it is joining or leaving. (Its own failure to
        // reach a peer would be the same at another node.)
        Error::Remote { kind, .. } => matches!(kind, ErrorKind::Joining | ErrorKind::ShuttingDown),
        // We could not reach it, or the call broke.
        local => matches!(local.kind(), ErrorKind::Unreachable | ErrorKind::Rpc),
    }
}
