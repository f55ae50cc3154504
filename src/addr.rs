//! `NodeAddr`: how members name each other (`host:port`), parsed and printed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::error::Error;

/// A member's advertised address. Its text form `host:port` is also the member's
/// name on the ring, so every node must spell a member the same way: nodes learn
/// the spelling from the member itself (its advertised address), never from a
/// user's `localhost:9900`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl NodeAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// Every socket address the host resolves to, in resolver order.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Error::Unreachable {
                peer: self.to_string(),
                reason: format!("cannot resolve host: {e}"),
                refused: false,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Unreachable {
                peer: self.to_string(),
                reason: "the host resolves to no address".into(),
                refused: false,
            });
        }
        Ok(addrs)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for NodeAddr {
    type Err = Error;

    /// Parses `host:port`, `[v6]:port`, or a bare port (meaning localhost).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadAddress {
            input: s.to_string(),
            reason: why.to_string(),
        };
        if let Ok(port) = s.parse::<u16>() {
            return Ok(NodeAddr::new("localhost", port));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| bad("expected `:port` after `]`"))?;
            (host, port)
        } else {
            s.rsplit_once(':')
                .ok_or_else(|| bad("expected HOST:PORT, e.g. localhost:9900"))?
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
        Ok(NodeAddr::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_round_trip_through_text() {
        for text in ["127.0.0.1:9900", "localhost:65535", "[::1]:9901"] {
            let addr: NodeAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn a_bare_port_means_localhost() {
        assert_eq!(
            "9900".parse::<NodeAddr>().unwrap(),
            NodeAddr::new("localhost", 9900)
        );
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for text in [
            "",
            "localhost",
            ":9900",
            "host:99999",
            "[::1]9900",
            "host:port",
        ] {
            let err = text.parse::<NodeAddr>().unwrap_err().to_string();
            assert!(err.contains(text), "{err}");
        }
    }
}
