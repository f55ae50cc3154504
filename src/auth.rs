//! Access control: which methods need which secret, and the challenge-response
//! that proves a secret on a connection (pure; the wire carries it as the
//! `hello` and `authenticate` methods).
//!
//! A node may hold two secrets. The *cluster* secret guards everything a node
//! does for its peers or an operator: the node-to-node methods and the 2009
//! ring-changing ones (`join`, `remove`, `add`, `die`, `debug`). The *client*
//! secret guards the data methods (`get`, `put`, `fetch`, `store`, ...). A
//! connection that proved the cluster secret may call every method. With no
//! secret the node is open, as the 2009 program was.
//!
//! The proof (see [`Secret::client_proof`]) is an HMAC-SHA256 over both
//! sides' fresh nonces, so it cannot be replayed on another connection, and
//! the node answers with a proof of its own: a caller learns that the node
//! holds the secret too, so a node cannot be tricked into confirming (or
//! sending data to) an impostor member. Without TLS the connection itself is
//! not protected: someone on the path can read it, and take over a connection
//! once it is authenticated.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Fewest bytes a secret may have (after trimming a trailing newline).
pub const MIN_SECRET_BYTES: usize = 16;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;

/// What a caller may send as its nonce.
pub const CALLER_NONCE: std::ops::RangeInclusive<usize> = 16..=64;

/// Which secret a connection proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The cluster secret: every method.
    Cluster,
    /// The client secret: the data methods.
    Client,
}

impl Role {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Role::Cluster => "cluster",
            Role::Client => "client",
        }
    }

    /// The role named `name` on the wire.
    pub fn named(name: &str) -> Option<Role> {
        match name {
            "cluster" => Some(Role::Cluster),
            "client" => Some(Role::Client),
            _ => None,
        }
    }

    /// The option that gives a node or client this secret.
    pub fn option(self) -> &'static str {
        match self {
            Role::Cluster => "--cluster-secret-file",
            Role::Client => "--client-secret-file",
        }
    }
}

/// A shared secret, read from a file. Its bytes never appear in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// A secret from its bytes (at least [`MIN_SECRET_BYTES`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(Error::BadSecret(format!(
                "a secret must have at least {MIN_SECRET_BYTES} bytes, this one has {}; \
                 make one with: head -c 32 /dev/urandom | base64 > FILE",
                bytes.len()
            )));
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret from `path`: the file's bytes, less one trailing
    /// newline (`\n` or `\r\n`), so `echo` and editors make the same secret.
    pub fn from_file(path: &Path) -> Result<Secret> {
        let mut bytes = std::fs::read(path).map_err(|e| {
            Error::BadSecret(format!(
                "cannot read the secret file {}: {e}",
                path.display()
            ))
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Secret::new(bytes)
            .map_err(|e| Error::BadSecret(format!("secret file {}: {e}", path.display())))
    }

    /// The MAC each side proves: over who proves (`side`, "client" or
    /// "server"), the role, and both nonces, the prover's peer's first, so
    /// that neither proof can be replayed as the other.
    fn mac(&self, side: &str, role: Role, theirs: &[u8], mine: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        for part in [
            b"thrifty-p2p/1 ".as_slice(),
            side.as_bytes(),
            b" ",
            role.name().as_bytes(),
            theirs,
            mine,
        ] {
            mac.update(part);
        }
        mac
    }

    /// The caller's proof: HMAC-SHA256(secret, "thrifty-p2p/1 client " +
    /// role + node nonce + caller nonce).
    pub fn client_proof(&self, role: Role, node: &[u8], caller: &[u8]) -> Vec<u8> {
        let mac = self.mac("client", role, node, caller);
        mac.finalize().into_bytes().to_vec()
    }

    /// The node's proof back: HMAC-SHA256(secret, "thrifty-p2p/1 server " +
    /// role + caller nonce + node nonce).
    pub fn server_proof(&self, role: Role, node: &[u8], caller: &[u8]) -> Vec<u8> {
        let mac = self.mac("server", role, caller, node);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `proof` is the caller's proof (compared in constant time).
    fn verify_client(&self, role: Role, node: &[u8], caller: &[u8], proof: &[u8]) -> bool {
        let mac = self.mac("client", role, node, caller);
        mac.verify_slice(proof).is_ok()
    }

    /// Whether `proof` is the node's proof back (compared in constant time).
    pub fn verify_server(&self, role: Role, node: &[u8], caller: &[u8], proof: &[u8]) -> bool {
        let mac = self.mac("server", role, caller, node);
        mac.verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> Vec<u8> {
    let mut bytes = vec![0; NONCE_BYTES];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes
}

/// The secrets a node holds.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// Guards the node-to-node and ring-changing methods.
    pub cluster: Option<Secret>,
    /// Guards the data methods.
    pub client: Option<Secret>,
}

impl Secrets {
    /// Whether any secret is set.
    pub fn any(&self) -> bool {
        self.cluster.is_some() || self.client.is_some()
    }

    fn of(&self, role: Role) -> Option<&Secret> {
        match role {
            Role::Cluster => self.cluster.as_ref(),
            Role::Client => self.client.as_ref(),
        }
    }
}

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: `ping`, `service_type`, `service_types`, and the two steps
    /// of proving a secret.
    Nothing,
    /// The client secret, if the node has one (the cluster secret will do).
    Client,
    /// The cluster secret, if the node has one.
    Cluster,
}

/// Methods anyone may call.
const OPEN: [&str; 5] = [
    "ping",
    "service_type",
    "service_types",
    "hello",
    "authenticate",
];

/// The data methods: what a client of the store calls.
const DATA: [&str; 24] = [
    "get",
    "put",
    "fetch",
    "store",
    "erase",
    "locate",
    "replicas",
    "stats",
    "get_all",
    "get_node",
    "members",
    "list_keys",
    "describe",
    "read_range",
    "begin_upload",
    "upload_part",
    "commit_upload",
    "lock",
    "unlock",
    "renew",
    "store_with",
    "append",
    "fetch_many",
    "store_many",
];

/// What calling `method` needs. Every method not open and not a data method
/// (the node-to-node ones, the 2009 ring-changing ones, and any unknown name)
/// needs the cluster secret.
pub fn needs(method: &str) -> Needs {
    if OPEN.contains(&method) {
        Needs::Nothing
    } else if DATA.contains(&method) {
        Needs::Client
    } else {
        Needs::Cluster
    }
}

/// One connection's progress in proving a secret.
#[derive(Debug, Default)]
pub struct Session {
    /// Both nonces, once `hello` was called: (node's, caller's).
    nonces: Option<(Vec<u8>, Vec<u8>)>,
    /// The secrets proved so far.
    cluster: bool,
    client: bool,
    /// A proof was wrong: the connection is closed after the answer.
    failed: bool,
}

impl Session {
    /// A connection that proved nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `hello`: takes the caller's nonce and answers with a fresh one of
    /// the node's.
    pub fn hello(&mut self, caller: Vec<u8>) -> Result<Vec<u8>> {
        if !CALLER_NONCE.contains(&caller.len()) {
            return Err(Error::Unauthorized(format!(
                "`hello` takes a nonce of {} to {} bytes, not {}",
                CALLER_NONCE.start(),
                CALLER_NONCE.end(),
                caller.len()
            )));
        }
        let node = nonce();
        self.nonces = Some((node.clone(), caller));
        Ok(node)
    }

    /// `authenticate`: checks the caller's proof of `role`'s secret and
    /// answers with the node's proof. Each `hello` allows one attempt.
    pub fn authenticate(&mut self, secrets: &Secrets, role: &str, proof: &[u8]) -> Result<Vec<u8>> {
        let Some(role) = Role::named(role) else {
            return Err(Error::Unauthorized(format!(
                "unknown role `{role}`: expected `cluster` or `client`"
            )));
        };
        let Some((node, caller)) = self.nonces.take() else {
            return Err(Error::Unauthorized(
                "call `hello` first: `authenticate` proves a secret over its nonces".into(),
            ));
        };
        let Some(secret) = secrets.of(role) else {
            return Err(Error::Unauthorized(format!(
                "this node has no {} secret to prove",
                role.name()
            )));
        };
        if !secret.verify_client(role, &node, &caller, proof) {
            self.failed = true;
            return Err(Error::Unauthorized(format!(
                "wrong proof of the {} secret: check {} on both sides",
                role.name(),
                role.option()
            )));
        }
        match role {
            Role::Cluster => self.cluster = true,
            Role::Client => self.client = true,
        }
        Ok(secret.server_proof(role, &node, &caller))
    }

    /// Whether a proof was wrong (the connection must then close).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether this connection may call `method` on a node holding
    /// `secrets`; if not, the error to answer with.
    pub fn allows(&self, secrets: &Secrets, method: &str) -> Result<()> {
        let missing = match needs(method) {
            Needs::Nothing => None,
            Needs::Client if secrets.client.is_some() && !self.client && !self.cluster => {
                Some(Role::Client)
            }
            Needs::Client => None,
            Needs::Cluster if secrets.cluster.is_some() && !self.cluster => Some(Role::Cluster),
            Needs::Cluster => None,
        };
        match missing {
            None => Ok(()),
            Some(role) => Err(Error::Unauthorized(format!(
                "`{method}` needs the {} secret, which this connection has not proved: \
                 give the caller {} (or {})",
                role.name(),
                role.option(),
                env_name(role)
            ))),
        }
    }
}

/// The environment variable that names a role's secret file.
pub fn env_name(role: Role) -> &'static str {
    match role {
        Role::Cluster => "THRIFTY_CLUSTER_SECRET_FILE",
        Role::Client => "THRIFTY_CLIENT_SECRET_FILE",
    }
}

/// A caller's side of proving `secret` for `role`: the nonce to send with
/// `hello`, then [`Caller::proof`] for `authenticate` and [`Caller::check`]
/// on its answer.
#[derive(Debug)]
pub struct Caller {
    role: Role,
    nonce: Vec<u8>,
}

impl Caller {
    /// A fresh attempt at proving `role`'s secret.
    pub fn new(role: Role) -> Self {
        Caller {
            role,
            nonce: nonce(),
        }
    }

    /// The role proved.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The nonce to send with `hello`.
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// The proof to send with `authenticate`, given the node's nonce.
    pub fn proof(&self, secret: &Secret, node: &[u8]) -> Vec<u8> {
        secret.client_proof(self.role, node, &self.nonce)
    }

    /// Checks the node's answer: it must prove the same secret.
    pub fn check(&self, secret: &Secret, node: &[u8], answer: &[u8], peer: &str) -> Result<()> {
        if secret.verify_server(self.role, node, &self.nonce, answer) {
            Ok(())
        } else {
            Err(Error::Unauthorized(format!(
                "{peer} did not prove the {} secret: it is not a member of this ring, or \
                 holds another secret",
                self.role.name()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of the `Store` service (what a client calls) is open or
    /// a data method: a method added to the IDL and forgotten here would
    /// need the cluster secret, and a client with only the client secret
    /// could not call it.
    #[test]
    fn every_store_service_method_is_open_to_a_client() {
        let idl = include_str!("../thrift/diststore.thrift");
        let start = idl.find("service Store").expect("the Store service");
        let body = &idl[start..start + idl[start..].find("\n}").expect("its end")];
        let mut names = Vec::new();
        for line in body.lines().skip(1) {
            let line = line.trim();
            if line.starts_with("//") || line.starts_with('*') || line.starts_with("/*") {
                continue;
            }
            if let Some(open) = line.find('(') {
                let name = line[..open].rsplit([' ', '>']).next().unwrap_or_default();
                names.push(name.to_string());
            }
        }
        assert!(names.len() >= 20, "parsed too few methods: {names:?}");
        for name in &names {
            assert_ne!(
                needs(name),
                Needs::Cluster,
                "{name} needs the cluster secret"
            );
        }
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    fn cluster_only() -> Secrets {
        Secrets {
            cluster: Some(secret("cluster secret, 32 bytes long..")),
            client: None,
        }
    }

    /// Runs the whole exchange for `role` with `caller_secret`.
    fn prove(
        session: &mut Session,
        secrets: &Secrets,
        role: Role,
        caller_secret: &Secret,
    ) -> Result<()> {
        let caller = Caller::new(role);
        let node = session.hello(caller.nonce().to_vec())?;
        let answer =
            session.authenticate(secrets, role.name(), &caller.proof(caller_secret, &node))?;
        caller.check(caller_secret, &node, &answer, "node")
    }

    #[test]
    fn with_no_secret_everything_is_open() {
        let session = Session::new();
        for method in ["absorb", "die", "store", "get", "whatever"] {
            assert!(
                session.allows(&Secrets::default(), method).is_ok(),
                "{method}"
            );
        }
    }

    #[test]
    fn a_cluster_secret_guards_peer_and_ring_methods_not_data_ones() {
        let secrets = cluster_only();
        let session = Session::new();
        for method in [
            "absorb", "gossip", "enter", "die", "join", "remove", "debug", "probe", "unknown",
        ] {
            let refused = session.allows(&secrets, method).unwrap_err();
            assert_eq!(refused.kind(), crate::ErrorKind::Unauthorized);
            assert!(
                refused.to_string().contains("--cluster-secret-file"),
                "{refused}"
            );
        }
        for method in ["get", "store", "fetch", "ping", "hello", "stats"] {
            assert!(session.allows(&secrets, method).is_ok(), "{method}");
        }
    }

    #[test]
    fn the_right_proof_opens_the_connection_and_the_node_proves_itself_back() {
        let secrets = cluster_only();
        let mut session = Session::new();
        prove(
            &mut session,
            &secrets,
            Role::Cluster,
            secrets.cluster.as_ref().unwrap(),
        )
        .unwrap();
        assert!(session.allows(&secrets, "absorb").is_ok());
    }

    #[test]
    fn a_wrong_secret_is_refused_and_proves_nothing() {
        let secrets = cluster_only();
        let mut session = Session::new();
        let wrong = secret("another secret of 32 bytes......");
        let refused = prove(&mut session, &secrets, Role::Cluster, &wrong).unwrap_err();
        assert!(refused.to_string().contains("wrong proof"), "{refused}");
        assert!(session.allows(&secrets, "absorb").is_err());
    }

    #[test]
    fn a_proof_cannot_be_replayed_and_needs_a_hello_each_time() {
        let secrets = cluster_only();
        let key = secrets.cluster.clone().unwrap();
        let mut first = Session::new();
        let caller = Caller::new(Role::Cluster);
        let node = first.hello(caller.nonce().to_vec()).unwrap();
        let proof = caller.proof(&key, &node);
        first.authenticate(&secrets, "cluster", &proof).unwrap();
        // The same proof, on a second connection with the same caller nonce:
        // the node's nonce differs, so it fails.
        let mut second = Session::new();
        second.hello(caller.nonce().to_vec()).unwrap();
        assert!(second.authenticate(&secrets, "cluster", &proof).is_err());
        // And without a hello there is nothing to prove against.
        assert!(second.authenticate(&secrets, "cluster", &proof).is_err());
    }

    #[test]
    fn a_node_without_the_secret_cannot_prove_itself_to_a_caller() {
        let ours = secret("cluster secret, 32 bytes long..");
        let caller = Caller::new(Role::Cluster);
        let node = nonce();
        let forged = secret("an impostor's secret, 32 bytes.").server_proof(
            Role::Cluster,
            &node,
            caller.nonce(),
        );
        assert!(caller.check(&ours, &node, &forged, "x").is_err());
        let real = ours.server_proof(Role::Cluster, &node, caller.nonce());
        assert!(caller.check(&ours, &node, &real, "x").is_ok());
    }

    #[test]
    fn the_client_secret_opens_data_methods_only_and_the_cluster_secret_opens_all() {
        let secrets = Secrets {
            cluster: Some(secret("cluster secret, 32 bytes long..")),
            client: Some(secret("client secret, 32 bytes long...")),
        };
        let mut client = Session::new();
        assert!(client.allows(&secrets, "store").is_err());
        prove(
            &mut client,
            &secrets,
            Role::Client,
            secrets.client.as_ref().unwrap(),
        )
        .unwrap();
        assert!(client.allows(&secrets, "store").is_ok());
        // Large values are data too: the client secret opens them.
        for method in [
            "describe",
            "read_range",
            "begin_upload",
            "upload_part",
            "commit_upload",
        ] {
            assert_eq!(needs(method), Needs::Client, "{method}");
            assert!(client.allows(&secrets, method).is_ok(), "{method}");
        }
        assert!(client.allows(&secrets, "absorb").is_err());
        let mut member = Session::new();
        prove(
            &mut member,
            &secrets,
            Role::Cluster,
            secrets.cluster.as_ref().unwrap(),
        )
        .unwrap();
        assert!(member.allows(&secrets, "store").is_ok());
        assert!(member.allows(&secrets, "absorb").is_ok());
    }

    #[test]
    fn secrets_are_read_from_files_without_a_trailing_newline_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(
            Secret::from_file(&path).unwrap(),
            secret("0123456789abcdef")
        );
        std::fs::write(&path, "short\n").unwrap();
        let refused = Secret::from_file(&path).unwrap_err();
        assert!(
            refused.to_string().contains("at least 16 bytes"),
            "{refused}"
        );
        let missing = Secret::from_file(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        assert!(!format!("{:?}", secret("0123456789abcdef")).contains("0123"));
    }
}
