//! Encryption (TLS): everything rustls. A node started with `--tls-cert`,
//! `--tls-key` and `--tls-ca` serves TLS only and calls its peers over TLS;
//! clients take the same three files.
//!
//! Why mutual TLS with one CA: the ring is one trust domain. Every node and
//! every client holds a certificate from the ring's CA; a node presents its
//! own when it serves and when it calls a peer, and requires one from
//! whoever connects. So TLS alone keeps strangers out (the secrets of
//! [`crate::auth`] stay independent and can be layered on top), and a node
//! needs no second set of files to act as a client of its peers.
//!
//! Peers are verified by host name: the host in their [`NodeAddr`]
//! (an IP address or a DNS name) must be in their certificate's SANs.
//!
//! Crypto provider: ring, which builds with a C compiler alone (aws-lc-rs
//! also wants cmake).
//!
//! [`NodeAddr`]: crate::addr::NodeAddr

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

/// A node's or client's TLS identity and trust: its certificate chain and
/// key, and the CA its peers' certificates must be signed by.
#[derive(Clone)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// The same `Tls` (one loaded from the same files twice is not: the
/// configurations are compared by identity, not content).
impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        Arc::ptr_eq(&self.server, &other.server) && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for Tls {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(path: &Path, what: &str, e: impl fmt::Display) -> Error {
    Error::BadTls(format!(
        "TLS: cannot use {} as the {what}: {e}",
        path.display()
    ))
}

impl Tls {
    /// Reads a PEM certificate chain (`cert`), its PEM private key (`key`)
    /// and the PEM certificate(s) of the CA (`ca`).
    ///
    /// Errors: [`Error::BadTls`] naming the file that could not be used.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Tls> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| bad(cert, "certificate", e))?;
        if chain.is_empty() {
            return Err(bad(cert, "certificate", "no certificate in it"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, "private key", e))?;
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| bad(ca, "CA certificate", e))?;
        if cas.is_empty() {
            return Err(bad(ca, "CA certificate", "no certificate in it"));
        }
        for c in cas {
            roots.add(c).map_err(|e| bad(ca, "CA certificate", e))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| bad(ca, "CA certificate", e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::BadTls(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| bad(key, "private key of the certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::BadTls(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| bad(key, "private key of the certificate", e))?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// What a node accepts connections with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// What a node calls its peers with.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// Wraps a connected blocking socket to `host` (the handshake happens on
    /// first use).
    pub fn wrap(&self, host: &str, socket: std::net::TcpStream) -> Result<SyncStream> {
        let connection = ClientConnection::new(self.client.clone(), server_name(host)?)
            .map_err(|e| Error::BadTls(format!("TLS: {e}")))?;
        Ok(SyncStream::Tls(Box::new(StreamOwned::new(
            connection, socket,
        ))))
    }
}

/// The name a peer's certificate must hold: its host, an IP address or a
/// DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| Error::BadTls(format!("TLS: `{host}` cannot be checked: {e}")))
}

/// Whether an I/O error came from TLS (a refused certificate, a failed
/// handshake), so that callers can say so.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// A blocking connection, plain or TLS.
pub enum SyncStream {
    /// Plain TCP.
    Plain(std::net::TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, std::net::TcpStream>>),
}

impl SyncStream {
    /// The TCP socket underneath (for its timeouts).
    pub fn socket(&self) -> &std::net::TcpStream {
        match self {
            SyncStream::Plain(s) => s,
            SyncStream::Tls(s) => s.get_ref(),
        }
    }
}

impl fmt::Debug for SyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncStream::Plain(s) => write!(f, "Plain({s:?})"),
            SyncStream::Tls(s) => write!(f, "Tls({:?})", s.get_ref()),
        }
    }
}

impl Read for SyncStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SyncStream::Plain(s) => s.read(buf),
            SyncStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for SyncStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SyncStream::Plain(s) => s.write(buf),
            SyncStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SyncStream::Plain(s) => s.flush(),
            SyncStream::Tls(s) => s.flush(),
        }
    }
}

/// An async connection, plain or TLS (either side of it): what the server
/// serves and the relay pools.
pub enum Stream {
    /// Plain TCP.
    Plain(tokio::net::TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
