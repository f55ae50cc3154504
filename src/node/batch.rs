//! Batches: `fetch_many` and `store_many`, many keys in one call.
//!
//! Each key is served exactly as its own `fetch` or `store` would be (routed
//! to its owner, coordinated there, acknowledged by a write quorum), many of
//! them at once, with one outcome per key. So a batch costs one round trip
//! from the client instead of one per key, and the node overlaps the waits
//! on replicas; nothing more is promised: a batch is not atomic and not a
//! snapshot (README, Batches).
//!
//! # Bounds
//!
//! A batch names at most [`MAX_BATCH`] keys and runs at most [`PARALLEL`] of
//! them at a time. A read batch's reply carries at most `--max-value-bytes`
//! of values (what one `fetch` may carry); a key whose value would not fit
//! answers [`Error::BatchFull`], to be read again. While it reads, the node
//! starts another key only while the values in flight (each guessed by this
//! node's own copy, or as `--max-value-bytes` when it has none) stay within
//! that same size, so a batch holds at most about three times
//! `--max-value-bytes` however its keys are chosen: the server reserves that
//! much of `--inflight-bytes` before serving one ([`Node::batch_room`]).
//!
//! Writes of one batch take their versions in the order given (a write takes
//! its version before it first waits), so of two items for one key the later
//! one wins, whatever order their replicas see them in.

use std::sync::Arc;

use futures::stream::{self, FuturesUnordered, StreamExt};

use super::Node;
use crate::error::{Error, Result};

/// The most keys (or items) one batch names.
pub const MAX_BATCH: usize = 10_000;

/// The most keys of one batch served at a time.
pub const PARALLEL: usize = 64;

impl Node {
    /// Bytes a `fetch_many` may hold while it runs (see the module doc): the
    /// values kept for its reply, those in flight, and the reply itself.
    pub fn batch_room(&self) -> usize {
        self.config.max_value_bytes.saturating_mul(3)
    }

    /// Reads `keys` as `fetch` reads each: one outcome per key, in order.
    pub async fn fetch_many(
        self: &Arc<Self>,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        check_count(keys.len())?;
        let limit = self.config.max_value_bytes;
        let mut outcomes: Vec<Option<Result<Option<Vec<u8>>>>> = Vec::new();
        outcomes.resize_with(keys.len(), || None);
        let mut running = FuturesUnordered::new();
        let (mut next, mut in_flight, mut kept) = (0, 0usize, 0usize);
        loop {
            while next < keys.len() && running.len() < PARALLEL {
                let guess = match self.store.value_len(&keys[next]) {
                    Ok(Some(len)) => len,
                    _ => limit,
                };
                if !running.is_empty() && in_flight.saturating_add(guess) > limit {
                    break;
                }
                in_flight = in_flight.saturating_add(guess);
                let index = next;
                next += 1;
                running
                    .push(async move { (index, guess, self.fetch_for_client(&keys[index]).await) });
            }
            let Some((index, guess, outcome)) = running.next().await else {
                break;
            };
            in_flight = in_flight.saturating_sub(guess);
            outcomes[index] = Some(match outcome {
                Ok(Some(value)) if kept.saturating_add(value.len()) > limit => {
                    Err(Error::BatchFull {
                        key: String::from_utf8_lossy(&keys[index]).into_owned(),
                        limit,
                    })
                }
                Ok(Some(value)) => {
                    kept += value.len();
                    Ok(Some(value))
                }
                other => other,
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every key was read"))
            .collect())
    }

    /// Writes `items` as `store` writes each: one outcome per item, in order.
    pub async fn store_many(
        self: &Arc<Self>,
        items: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Result<()>>> {
        check_count(items.len())?;
        // `buffered` starts the writes in order, and each takes its version
        // before it first waits: a later item of the same key wins.
        Ok(stream::iter(items)
            .map(|(key, value)| self.store_for_client(key, value))
            .buffered(PARALLEL)
            .collect()
            .await)
    }

    /// One key read as a client's `fetch` reads it: at once when this node
    /// can, a streamed value refused.
    async fn fetch_for_client(self: &Arc<Self>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = match self.fetch_now(key, 0) {
            Some(now) => now?,
            None => self.fetch(key, 0).await?,
        };
        super::refuse_streamed(key, value.as_deref())?;
        Ok(value)
    }

    /// One item written as a client's `store` writes it.
    async fn store_for_client(self: &Arc<Self>, key: &[u8], value: &[u8]) -> Result<()> {
        match self.write_now(key, Some(value), 0, None) {
            Some(now) => now,
            None => self.write(key, Some(value), 0, None, None).await,
        }
    }
}

fn check_count(count: usize) -> Result<()> {
    if count > MAX_BATCH {
        return Err(Error::refused_here(format!(
            "a batch of {count} keys is more than {MAX_BATCH}: split it"
        )));
    }
    Ok(())
}
