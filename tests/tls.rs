//! Encryption with real processes: nodes started with `--tls-*` form a ring
//! and replicate over TLS, the CLI tools reach them with the same options, a
//! plain-TCP client is refused cleanly (and the node keeps serving), a
//! certificate from another CA is refused (for a node and for a client),
//! and what crosses the wire is not plaintext. Certificates are made for
//! each test with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{NodeProc, run_tool, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use thrifty_p2p::tls::Tls;
use thrifty_p2p::wire::idl::locator::TLocatorSyncClient;
use thrifty_p2p::{Client, ClientOptions, NodeAddr};

/// The three files of one identity: certificate, key, CA.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Identity {
    fn args(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
            "--tls-ca",
            self.ca.to_str().unwrap(),
        ]
    }

    fn tls(&self) -> Tls {
        Tls::from_files(&self.cert, &self.key, &self.ca).unwrap()
    }
}

/// A throw-away CA in `dir`, which signs identities for 127.0.0.1 and
/// localhost.
struct Ca {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    fn identity(&self, who: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let stem = format!("{}-{who}", self.name);
        let identity = Identity {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
            ca: self.ca.clone(),
        };
        std::fs::write(&identity.cert, cert.pem()).unwrap();
        std::fs::write(&identity.key, key.serialize_pem()).unwrap();
        identity
    }
}

fn options(identity: &Identity) -> ClientOptions {
    ClientOptions {
        tls: Some(identity.tls()),
        ..ClientOptions::default()
    }
}

/// The members `node` reports, over TLS as `identity`.
fn members_over_tls(node: &NodeAddr, identity: &Identity) -> Option<usize> {
    let mut client = thrifty_p2p::wire::conn::connect(node, &options(identity)).ok()?;
    client.get_all().ok().map(|all| all.len())
}

#[test]
fn a_ring_over_tls_forms_and_replicates_and_the_tools_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ring");
    let (one, two, user) = (ca.identity("one"), ca.identity("two"), ca.identity("user"));
    let a = NodeProc::start_with(None, &one.args());
    let b = NodeProc::start_with(Some(&a.addr), &two.args());
    assert!(
        wait_until(Duration::from_secs(20), || {
            members_over_tls(&a.addr, &user) == Some(2)
                && members_over_tls(&b.addr, &user) == Some(2)
        }),
        "no 2-node ring over TLS; log:\n{}",
        b.log()
    );
    let mut put = vec!["greeting", "hello over tls", "--peer"];
    let a_peer = a.addr.to_string();
    put.push(&a_peer);
    put.extend(user.args());
    let (code, _, err) = run_tool("storeput", &put, None);
    assert_eq!(code, 0, "storeput over TLS: {err}");
    let b_peer = b.addr.to_string();
    let mut get = vec!["greeting", "--peer", &b_peer];
    get.extend(user.args());
    let (code, out, err) = run_tool("storeget", &get, None);
    assert_eq!(code, 0, "storeget over TLS: {err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "hello over tls");
}

#[test]
fn a_plain_client_is_refused_cleanly_and_the_node_keeps_serving_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ring");
    let (node_id, user) = (ca.identity("node"), ca.identity("user"));
    let node = NodeProc::start_with(None, &node_id.args());
    let peer = node.addr.to_string();

    // A raw Thrift `ping` in plaintext: the node ends the connection.
    let mut raw = TcpStream::connect(("127.0.0.1", node.addr.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ping = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
    ping.extend_from_slice(b"ping");
    ping.extend_from_slice(&[0, 0, 0, 1, 0]);
    raw.write_all(&ping).unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        !answer.windows(4).any(|w| w == b"ping"),
        "a plaintext ping was answered: {answer:?}"
    );

    // The CLI without --tls-*: a clean failure, no hang.
    let (code, _, err) = run_tool("storeget", &["k", "--peer", &peer], None);
    assert_eq!(code, 2, "plain storeget against a TLS node: {err}");

    let mut put = vec!["k", "still serving", "--peer", &peer];
    put.extend(user.args());
    let (code, _, err) = run_tool("storeput", &put, None);
    assert_eq!(code, 0, "storeput over TLS after plain clients: {err}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_for_nodes_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ring");
    let other = Ca::new(dir.path(), "other");
    let node_id = ca.identity("node");
    let node = NodeProc::start_with(None, &node_id.args());
    let peer = node.addr.to_string();

    let stranger = other.identity("stranger");
    let mut get = vec!["k", "--peer", &peer];
    get.extend(stranger.args());
    let (code, _, err) = run_tool("storeget", &get, None);
    assert_eq!(code, 2, "storeget with a stranger's certificate: {err}");
    assert!(
        err.contains("TLS") || err.contains("certificate"),
        "the refusal does not say TLS: {err}"
    );

    let intruder = other.identity("intruder");
    let joined = NodeProc::try_start_with(Some(&node.addr), &intruder.args());
    assert!(
        joined.is_err(),
        "a node with another CA's certificate joined"
    );
    assert_eq!(members_over_tls(&node.addr, &ca.identity("user")), Some(1));
}

/// Forwards one connection at a time from a port of its own to `to`,
/// recording every byte in both directions.
fn recording_proxy(to: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                return;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

#[test]
fn what_crosses_the_wire_is_not_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ring");
    let (node_id, user) = (ca.identity("node"), ca.identity("user"));
    let node = NodeProc::start_with(None, &node_id.args());
    let (port, seen) = recording_proxy(node.addr.port);
    let via: NodeAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let marker = b"MARKER-7f3a9c-plaintext-would-show-this";
    let mut client = Client::with_options(
        via,
        ClientOptions {
            ring_aware: false,
            ..options(&user)
        },
    )
    .unwrap();
    client.put(b"marked-key", marker).unwrap();
    assert_eq!(
        client.get(b"marked-key").unwrap().as_deref(),
        Some(&marker[..])
    );
    let seen = seen.lock().unwrap();
    assert!(seen.len() > marker.len(), "the proxy saw nothing");
    assert!(
        !seen.windows(marker.len()).any(|w| w == marker),
        "the marker crossed the wire in plaintext"
    );
    assert!(!seen.windows(10).any(|w| w == b"marked-key"));
}
