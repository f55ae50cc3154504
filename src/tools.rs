//! What the command-line clients (`storeput`, `storeget`, `storeprimer`,
//! `storetest`) share: finding a node, and the calls they make.

use std::io::{Read, Write};

use crate::addr::NodeAddr;
use crate::client::{Client, ClientOptions, call_error, connect};
use crate::convert;
use crate::discover;
use crate::error::Result;
use crate::idl::diststore::TStoreSyncClient;
use crate::idl::locator::TLocatorSyncClient;
use crate::stream;

/// A connection to one node of a ring.
pub struct Session {
    peer: NodeAddr,
    client: Client,
}

impl Session {
    /// Connects to `peer`, or, when `None`, to the first node answering on
    /// localhost from port 9900 up.
    pub fn open(peer: Option<NodeAddr>) -> Result<Self> {
        let peer = match peer {
            Some(peer) => peer,
            None => discover::find_node("localhost")?,
        };
        let client = connect(&peer, &ClientOptions::default())?;
        Ok(Session { peer, client })
    }

    /// The node this session talks to.
    pub fn peer(&self) -> &NodeAddr {
        &self.peer
    }

    /// Stores `value` at `key`; returns once the key's owner has it.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.client
            .store(key.to_vec(), value.to_vec())
            .map_err(|e| call_error(&self.peer, e))
    }

    /// Deletes `key` (a tombstone keeps old copies from coming back).
    pub fn erase(&mut self, key: &[u8]) -> Result<()> {
        self.client
            .erase(key.to_vec())
            .map_err(|e| call_error(&self.peer, e))
    }

    /// The value at `key`, if stored.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let lookup = self
            .client
            .fetch(key.to_vec())
            .map_err(|e| call_error(&self.peer, e))?;
        Ok(lookup.value)
    }

    /// The member that owns `key`, if the ring is not empty.
    pub fn owner(&mut self, key: &[u8]) -> Result<Option<NodeAddr>> {
        let location = self
            .client
            .locate(key.to_vec())
            .map_err(|e| call_error(&self.peer, e))?;
        Ok(convert::addr(&location))
    }

    /// Stores everything `reader` yields at `key`: input that ends within one
    /// chunk as a plain value, longer input streamed as chunks straight to
    /// their owners (see [`stream::put`]). Never holds more than
    /// `options.workers + 1` chunks in memory.
    pub fn put_stream(
        &self,
        key: &[u8],
        reader: impl Read,
        options: &stream::Options,
    ) -> stream::Result<stream::Written> {
        stream::put(&self.peer, key, reader, options)
    }

    /// Writes the value at `key` to `writer`, fetching a streamed value's
    /// chunks from their owners in parallel (see [`stream::get_large`]);
    /// returns its size, or `None` when the key is not stored.
    pub fn get_stream(
        &self,
        key: &[u8],
        writer: impl Write,
        options: &stream::Options,
    ) -> stream::Result<Option<u64>> {
        stream::get_large(&self.peer, key, writer, options)
    }
}
