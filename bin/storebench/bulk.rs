//! The bulk rows: one large value streamed into a 3-node ring and back, a
//! join and a SIGINT handoff timed, a node's memory weighed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thrifty_p2p::ring::Ring;
use thrifty_p2p::stream;
use thrifty_p2p::{Error, Result};

use crate::cells::median;
use crate::failed;
use crate::procfs::{CpuSnapshot, rss_bytes};
use crate::report::size;
use crate::results::{Memory, Moved, Op, Transfer};
use crate::run::Bench;
use crate::target::Target;
use crate::wire::{Answer, Conn, KEY_LEN, Request, key, value_bytes};

impl Bench<'_> {
    /// Streams one value of `bulk_bytes` into a 3-node ring and reads it back
    /// (`stream::put` / `stream::get_large`: chunks go straight between this
    /// client and each chunk's owner, in parallel); median seconds each way.
    pub fn transfer(&self) -> Result<Transfer> {
        let c = self.config;
        let nodes = self.start_ring(c.replicas)?;
        let first = &nodes[0];
        let value = value_bytes(c.bulk_bytes);
        let options = stream::Options {
            chunk_bytes: c.bulk_chunk,
            ..stream::Options::default()
        };
        let failed = |e: Error| Error::Rpc {
            peer: first.addr.to_string(),
            reason: e.to_string(),
        };
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
        let before = CpuSnapshot::take(&pids);
        for _ in 0..c.repeat.max(1) {
            let started = Instant::now();
            stream::put(&first.addr, b"bulk", &value[..], &options).map_err(failed)?;
            ins.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let got =
                stream::get_large(&first.addr, b"bulk", io::sink(), &options).map_err(failed)?;
            outs.push(started.elapsed().as_secs_f64());
            if got != Some(value.len() as u64) {
                return Err(Error::Rpc {
                    peer: first.addr.to_string(),
                    reason: format!("streamed {got:?} bytes back, expected {}", value.len()),
                });
            }
        }
        Ok(Transfer {
            elsewhere: before.elsewhere(&CpuSnapshot::take(&pids)),
            values: value.len().div_ceil(c.bulk_chunk),
            value: c.bulk_chunk,
            secs_in: median(&mut ins),
            secs_out: median(&mut outs),
        })
    }

    /// Loads one node with twice `join_bytes`, starts a second that joins it and
    /// times until the second holds the keys it owns; then sends the second
    /// SIGINT and times until it exits, having handed those keys back.
    ///
    /// The join's end is seen with local-only reads on the new node. Reading
    /// every moved value while it arrives would double the new node's work, so
    /// the clock stops when an evenly spread sample of [`JOIN_SAMPLE`] moved
    /// keys is there (keys travel in hash order, so the sample's last key
    /// arrives on average within 1/(JOIN_SAMPLE+1) of the end); every moved key
    /// is then checked, untimed.
    pub fn join_and_handoff(&self, progress: &mut dyn FnMut(&str)) -> Result<(Moved, Moved)> {
        let c = self.config;
        let value = c.join_value;
        let keys = (2 * c.join_bytes / value).max(2);
        let first = self.start_node_alone(None, 0)?;
        progress(&format!("join: preloading {keys} keys of {}", size(value)));
        self.fill::<Conn>(&Target::single(first.socket), keys, value, 50, 1)?;
        progress("join: starting a second node");

        let before = CpuSnapshot::take(&[first.pid()]);
        let started = Instant::now();
        let mut second = self.start_node_alone(Some(&first.addr), 1)?;
        let ring = Ring::new([first.addr.clone(), second.addr.clone()]);
        // The keys the new node replicates come to it; those only it holds
        // go back when it leaves (with one copy, the same keys).
        let copies = c.replicas.max(1);
        let moved: Vec<usize> = (0..keys)
            .filter(|&i| ring.owners(&key(i), copies).contains(&&second.addr))
            .collect();
        let handed: Vec<usize> = moved
            .iter()
            .copied()
            .filter(|&i| !ring.owners(&key(i), copies).contains(&&first.addr))
            .collect();
        let sample: Vec<usize> = moved
            .iter()
            .copied()
            .step_by((moved.len() / JOIN_SAMPLE).max(1))
            .collect();
        let timeout = Duration::from_secs(300);
        self.runtime
            .block_on(wait_until_held(second.socket, &sample, value, timeout))?;
        let join_secs = started.elapsed().as_secs_f64();
        let join_elsewhere = before.elsewhere(&CpuSnapshot::take(&[first.pid(), second.pid()]));
        self.runtime
            .block_on(wait_until_held(second.socket, &moved, value, timeout))?;
        let bytes = |keys: &[usize]| (keys.len() * (KEY_LEN + value)) as u64;

        progress("handoff: SIGINT to the second node");
        let before = CpuSnapshot::take(&[first.pid(), second.pid()]);
        let started = Instant::now();
        second.signal("INT")?;
        let status = second.wait()?;
        let leave_secs = started.elapsed().as_secs_f64();
        let leave_elsewhere = before.elsewhere(&CpuSnapshot::take(&[first.pid()]));
        if !status.success() {
            return Err(failed(format!(
                "the node sent SIGINT exited with {status}: not every key was handed over (log {})",
                second.log.display()
            )));
        }
        // Not timed: the keys are back on the first node.
        let sample: Vec<usize> = handed
            .iter()
            .copied()
            .step_by((handed.len() / 64).max(1))
            .collect();
        self.runtime.block_on(wait_until_held(
            first.socket,
            &sample,
            value,
            Duration::from_secs(10),
        ))?;
        Ok((
            Moved {
                elsewhere: join_elsewhere,
                keys: moved.len(),
                bytes: bytes(&moved),
                secs: join_secs,
            },
            Moved {
                elsewhere: leave_elsewhere,
                keys: handed.len(),
                bytes: bytes(&handed),
                secs: leave_secs,
            },
        ))
    }

    /// Resident memory of a node holding `memory_keys` keys (and of Redis
    /// holding the same, when `with_redis`).
    pub fn memory(&self, with_redis: bool) -> Result<Memory> {
        let c = self.config;
        let node = self.start_node(None)?;
        std::thread::sleep(Duration::from_millis(200));
        let rss_empty = rss_bytes(node.pid())?;
        self.fill::<Conn>(
            &Target::single(node.socket),
            c.memory_keys,
            c.memory_value,
            50,
            1,
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let rss = rss_bytes(node.pid())?;
        drop(node);
        let redis_rss = if with_redis {
            let redis = self.start_redis()?;
            redis.fill(c.memory_keys, c.memory_value)?;
            Some(rss_bytes(redis.child.id())?)
        } else {
            None
        };
        Ok(Memory {
            keys: c.memory_keys,
            raw: (c.memory_keys * (KEY_LEN + c.memory_value)) as u64,
            rss_empty,
            rss,
            redis_rss,
        })
    }
}

/// Keys whose arrival on a joining node stops the join's clock.
pub const JOIN_SAMPLE: usize = 256;

/// Waits until the node at `addr` holds every key in `indices` (local-only
/// reads), polling each key until it is seen once, so each value crosses the
/// wire once.
async fn wait_until_held(
    addr: SocketAddr,
    indices: &[usize],
    value: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut conn = Conn::open(addr).await?;
    let mut peek = Request::peek();
    let mut next = 0;
    while next < indices.len() {
        peek.set_key(indices[next]);
        match conn.call(&peek.bytes).await? {
            // The node's own copy as stored: with --compress-above a
            // compressed value is shorter than `value`.
            Answer::Value { .. } => next += 1,
            Answer::Absent => {
                if Instant::now() > deadline {
                    return Err(failed(format!(
                        "{addr} still lacks {} of {} keys after {timeout:?}",
                        indices.len() - next,
                        indices.len()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => conn.expect(other, Op::Get, value, indices[next])?,
        }
    }
    Ok(())
}
