//! The drain part: issue 10 asks that oneway `put`s on one connection drain
//! at 100,000/s or more, so that the 2009 client's `ping` after a burst of
//! them is answered at once. A burst of `drain_puts` prebuilt 2009 `put`s
//! (oneway, distinct keys, values of `drain_value`) is written on one
//! connection as fast as the socket takes it, then one `ping`: the node
//! serves a `ping` (a call of the generated processor) only after every
//! request before it on the connection has been served (`wire::server`), so
//! its reply says the burst is done. Drain rate: puts over the time from the
//! first byte written to the `ping`'s reply.
//!
//! A oneway call that fails is only logged by the node (nobody hears it), so
//! a fast drain could be one of dropped writes: after each round every key
//! is read back, untimed, with `fetch_many`, and compared with the value put.
//! A round that lost any key fails the target whatever its rate.
//!
//! Run on one node keeping one copy, then on one node of a 3-node ring at
//! N=3: at 3 copies on 3 nodes that node holds every key, so it coordinates
//! every write, each acknowledged by a write quorum (2 of 3) before the next
//! `ping` can be answered. Each round puts fresh keys; the median round is
//! reported.

use std::time::Instant;

use thrifty_p2p::wire::Conn as LibConn;
use thrifty_p2p::{ClientOptions, Result};

use crate::failed;
use crate::nodes::NodeProc;
use crate::procfs::CpuSnapshot;
use crate::results::Drain;
use crate::run::Bench;
use crate::wire::{Answer, Conn, Request, key, ping, value_bytes};

/// Keys read back per `fetch_many` (its most).
const CHECK_BATCH: usize = 10_000;

impl Bench<'_> {
    /// The drain on one node keeping one copy, then on one node of a fresh
    /// 3-node ring at N=3.
    pub fn drains(&self, progress: &mut dyn FnMut(&str)) -> Result<Vec<Drain>> {
        let node = self.start_node_keeping(None, 1, false)?;
        let one = self.drain(&[node], 1, progress)?;
        let ring = self.start_ring(3)?;
        let three = self.drain(&ring, 3, progress)?;
        Ok(vec![one, three])
    }

    /// `repeat` rounds of a burst to `nodes[0]`, each with fresh keys.
    fn drain(
        &self,
        nodes: &[NodeProc],
        replicas: usize,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Drain> {
        let c = self.config;
        let node = &nodes[0];
        let pids: Vec<u32> = nodes.iter().map(NodeProc::pid).collect();
        let value = value_bytes(c.drain_value);
        let mut put = Request::put(&value);
        let ping = ping();
        let mut drain = Drain {
            nodes: nodes.len(),
            replicas,
            puts: c.drain_puts,
            value: c.drain_value,
            secs: Vec::new(),
            written: Vec::new(),
            checked: 0,
            lost: 0,
            first_lost: None,
            elsewhere: 0.0,
        };
        let before = CpuSnapshot::take(&pids);
        for round in 0..c.repeat.max(1) {
            let first = round * c.drain_puts;
            let keys = first..first + c.drain_puts;
            // Built before the clock starts: the figure weighs the node.
            let mut burst = Vec::with_capacity(c.drain_puts * put.bytes.len());
            for i in keys.clone() {
                put.set_key(i);
                burst.extend_from_slice(&put.bytes);
            }
            progress(&format!(
                "drain, {} node{} at N={replicas}: round {}, {} oneway puts ({} MiB) then a ping",
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                round + 1,
                c.drain_puts,
                burst.len() >> 20
            ));
            let (written, answered) = self.runtime.block_on(async {
                let mut conn = Conn::open(node.socket).await?;
                let started = Instant::now();
                conn.send(&burst).await?;
                let written = started.elapsed();
                match conn.call(&ping).await? {
                    Answer::Stored => Ok((written, started.elapsed())),
                    other => Err(failed(format!("ping after the burst answered {other:?}"))),
                }
            })?;
            drain.written.push(written.as_secs_f64());
            drain.secs.push(answered.as_secs_f64());
            let (checked, lost, first_lost) = check(node, keys, &value)?;
            drain.checked += checked;
            drain.lost += lost;
            drain.first_lost = drain.first_lost.take().or(first_lost);
        }
        drain.elsewhere = before.elsewhere(&CpuSnapshot::take(&pids));
        if drain.lost > 0 {
            progress(&format!(
                "drain: {} of {} keys put were not read back ({}); node log {}",
                drain.lost,
                drain.checked,
                drain.first_lost.as_deref().unwrap_or_default(),
                node.log.display()
            ));
        }
        Ok(drain)
    }
}

/// Reads back `keys` through `node` and counts those not holding `value`:
/// how many were read, how many were not as put, and what the first of
/// those held.
fn check(
    node: &NodeProc,
    keys: std::ops::Range<usize>,
    value: &[u8],
) -> Result<(usize, usize, Option<String>)> {
    let mut conn = LibConn::open(&node.addr, &ClientOptions::default())?;
    let (mut checked, mut lost, mut first_lost) = (0, 0, None);
    let indices: Vec<usize> = keys.collect();
    for batch in indices.chunks(CHECK_BATCH) {
        let names: Vec<_> = batch.iter().map(|&i| key(i)).collect();
        let refs: Vec<&[u8]> = names.iter().map(|k| &k[..]).collect();
        for (name, got) in names.iter().zip(conn.fetch_many(&refs)?) {
            checked += 1;
            let wrong = match got {
                Ok(Some(v)) if v == value => continue,
                Ok(Some(v)) => format!("a {}-byte value", v.len()),
                Ok(None) => "nothing".to_string(),
                Err(e) => format!("an error: {e}"),
            };
            lost += 1;
            if first_lost.is_none() {
                first_lost = Some(format!("{} held {wrong}", String::from_utf8_lossy(name)));
            }
        }
    }
    Ok((checked, lost, first_lost))
}
