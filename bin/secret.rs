//! The secret options every client command takes (see README, Security).

use std::path::PathBuf;

use thrifty_p2p::auth::{Role, Secret};
use thrifty_p2p::{Client, ClientOptions, NodeAddr, Result};

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
}

impl SecretArgs {
    /// The secret to prove, if any: the cluster secret when both are given.
    pub fn secret(&self) -> Result<Option<(Role, Secret)>> {
        if let Some(path) = &self.cluster_secret_file {
            return Ok(Some((Role::Cluster, Secret::from_file(path)?)));
        }
        match &self.client_secret_file {
            Some(path) => Ok(Some((Role::Client, Secret::from_file(path)?))),
            None => Ok(None),
        }
    }

    /// Default client options, proving the secret given (if any).
    pub fn options(&self) -> Result<ClientOptions> {
        Ok(ClientOptions {
            secret: self.secret()?,
            ..ClientOptions::default()
        })
    }

    /// Connects to `peer`'s ring (the local ring when `None`), proving the
    /// secret given.
    #[allow(dead_code)] // not every command connects this way
    pub fn open(&self, peer: Option<NodeAddr>) -> Result<Client> {
        Client::open(peer, self.options()?)
    }
}
