//! The secret options every client command takes (see README, Security).

use std::path::PathBuf;

use thrifty_p2p::{ClientOptions, Result};

/// Which secret to prove to nodes that require one.
#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    /// A file holding the ring's client secret, for nodes started with
    /// --client-secret-file.
    #[arg(long, value_name = "FILE", env = "THRIFTY_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// A file holding the ring's cluster secret, for nodes started with
    /// --cluster-secret-file (it opens every method, data ones included).
    #[arg(long, value_name = "FILE", env = "THRIFTY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// This client's certificate (PEM), for nodes started with --tls-*:
    /// connect over TLS. Needs --tls-key and --tls-ca too.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The ring's CA certificate (PEM): the node's certificate must be
    /// signed by it.
    #[arg(long, value_name = "FILE", env = "THRIFTY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl SecretArgs {
    /// Default client options with the secret and TLS these arguments give
    /// (clap makes the TLS files all or none).
    pub fn options(&self) -> Result<ClientOptions> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some((cert.as_path(), key.as_path(), ca.as_path()))
            }
            _ => None,
        };
        ClientOptions::from_files(
            self.client_secret_file.as_deref(),
            self.cluster_secret_file.as_deref(),
            tls,
        )
    }
}
