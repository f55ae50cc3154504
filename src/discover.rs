//! Finding a local ring the way the 2009 program did: probe localhost ports from
//! 9900 upward for a node that answers, and for a free port to listen on.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::client::ClientOptions;
use crate::error::{Error, Result};
use crate::wire::Conn;

/// First port probed, as in the 2009 program.
pub const FIRST_PORT: u16 = 9900;
/// How many ports are probed.
pub const PROBE_PORTS: u16 = 100;

fn probe_range() -> std::ops::RangeInclusive<u16> {
    FIRST_PORT..=FIRST_PORT + PROBE_PORTS - 1
}

/// The first port from 9900 on `host` where a node answers `ping`.
pub fn find_node(host: &str) -> Result<NodeAddr> {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(200),
        rpc_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    for port in probe_range() {
        let addr = NodeAddr::new(host, port);
        // Opening checks that the node answers already.
        if Conn::open(&addr, &options).is_ok() {
            return Ok(addr);
        }
    }
    Err(Error::NotFound {
        what: "running node",
        first: FIRST_PORT,
        last: FIRST_PORT + PROBE_PORTS - 1,
        hint: "start one with `location 9900`, or name a node with --peer HOST:PORT",
    })
}

/// The first port from 9900 that `bind` can listen on.
pub fn free_port(bind: IpAddr) -> Result<u16> {
    probe_range()
        .find(|&port| TcpListener::bind(SocketAddr::new(bind, port)).is_ok())
        .ok_or(Error::NotFound {
            what: "free port",
            first: FIRST_PORT,
            last: FIRST_PORT + PROBE_PORTS - 1,
            hint: "name a port explicitly, e.g. `location 0` for any free port",
        })
}
