//! Listing: a page of the keys this node holds, in the listing order every
//! node shares (see `store`'s module doc), for clients that merge the pages of
//! every member into a listing of the ring (`Client::list`). The node knows
//! nothing of the listing as a whole: a page is one bounded call, and the
//! cursor is the client's.

use super::Node;
use crate::config::MAX_KEY_BYTES;
use crate::error::{Error, Result};
use crate::lease::is_record_key;
use crate::listing::MAX_PAGE_KEYS;
use crate::store::{Listed, list_position_after};
use crate::stream::CHUNK_PREFIX;

/// The most entries one page looks at: about a shard of a million keys, a
/// few milliseconds of one core, so a listing never stalls the node.
const LOOK_BUDGET: usize = 65_536;

impl Node {
    /// Up to `limit` of this node's keys (tombstones included, chunk keys
    /// left out) that start with `prefix`, from listing position `start`
    /// on, and where the next page starts. A page also stops once its keys
    /// fill half of a reply (`--max-reply-bytes`).
    pub fn list_keys(&self, prefix: &[u8], start: &[u8], limit: i32) -> Result<Listed> {
        let Some(limit) = u32::try_from(limit)
            .ok()
            .filter(|n| (1..=MAX_PAGE_KEYS).contains(n))
        else {
            return Err(Error::refused_here(format!(
                "list_keys: a page of {limit} keys was asked for; ask for 1 to {MAX_PAGE_KEYS}"
            )));
        };
        if prefix.len() > MAX_KEY_BYTES || start.len() > MAX_KEY_BYTES + 2 {
            return Err(Error::refused_here(format!(
                "list_keys: a prefix or start over {MAX_KEY_BYTES} bytes cannot match any key"
            )));
        }
        let mut listed = (self.store).list(start, prefix, limit as usize, LOOK_BUDGET)?;
        let room = self.config.max_reply_bytes() / 2;
        let mut bytes = 0;
        let mut kept = 0;
        for (key, _, _) in &listed.entries {
            bytes += key.len() + 32;
            if bytes > room {
                break;
            }
            kept += 1;
        }
        // At least one key, whatever the limits: a listing always moves on.
        if kept.max(1) < listed.entries.len() {
            listed.entries.truncate(kept.max(1));
            let last = &listed.entries.last().expect("one key kept").0;
            listed.next = Some(list_position_after(last));
        }
        listed
            .entries
            .retain(|(key, _, _)| !key.starts_with(CHUNK_PREFIX) && !is_record_key(key));
        Ok(listed)
    }
}
