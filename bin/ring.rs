//! The options every client command takes to reach a ring: which node to
//! ask, and what to prove to it (see README, Security).

use thrifty_p2p::{Client, NodeAddr, Result};

use crate::secret::SecretArgs;

/// Which node of the ring to ask, and the secrets and TLS to ask it with.
#[derive(clap::Args, Debug)]
pub struct RingArgs {
    /// A node of the ring (HOST:PORT). Default: the first node answering on
    /// localhost from port 9900 up.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<NodeAddr>,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

impl RingArgs {
    /// A client of the ring through `--peer`, with default options and the
    /// secrets and TLS given.
    pub fn open(self) -> Result<Client> {
        Client::open(self.peer, self.secrets.options()?)
    }
}
