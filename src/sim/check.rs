//! The history a simulation's clients record, and the checker that states the
//! guarantee in code. For a key written by one client (its writes numbered 1,
//! 2, ... in the order issued, each a value or an erase):
//!
//! - a read returns the value of a write that was issued before the read
//!   ended, and no older than the newest write acknowledged before the read
//!   began (so no acknowledged write is lost, and no read is stale);
//! - a read answers "absent" only if nothing was acknowledged before it began,
//!   or an erase at least that new was issued before it ended (so no erased
//!   value comes back, and no acknowledged value disappears).
//!
//! A write the client gave up on may take effect, but only in its place in
//! the order: reading it after a later acknowledged write is a stale read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;

/// One write as its client saw it.
#[derive(Clone, Debug)]
pub struct Write {
    /// The key.
    pub key: String,
    /// Its number among the key's writes, from 1.
    pub index: u64,
    /// An erase rather than a value.
    pub erase: bool,
    /// When the client sent it.
    pub start: Duration,
    /// When the client stopped waiting (answer or gave up).
    pub end: Duration,
    /// Whether it was acknowledged.
    pub acked: bool,
}

/// One read as its client saw it.
#[derive(Clone, Debug)]
pub struct Read {
    /// The key.
    pub key: String,
    /// The node the client asked.
    pub via: String,
    /// When the client sent it.
    pub start: Duration,
    /// When the answer came.
    pub end: Duration,
    /// The value's write number; `None` for "absent".
    pub index: Option<u64>,
}

/// The value a client writes as write `index` of `key`.
pub fn value_of(key: &str, index: u64) -> Vec<u8> {
    format!("{key}#{index}").into_bytes()
}

/// Everything the clients saw.
#[derive(Default)]
pub struct History {
    writes: Mutex<Vec<Write>>,
    reads: Mutex<Vec<Read>>,
    /// Reads whose value no client wrote.
    garbage: Mutex<Vec<String>>,
}

/// A broken promise, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl History {
    /// Records a write.
    pub fn write(&self, write: Write) {
        self.writes.lock().push(write);
    }

    /// Records a successful read of `key` that answered `value`.
    pub fn read(&self, key: &str, via: &str, start: Duration, end: Duration, value: Option<&[u8]>) {
        let index = match value {
            None => None,
            Some(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                match text
                    .strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('#'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => Some(n),
                    None => {
                        self.garbage
                            .lock()
                            .push(format!("read of {key} via {via} answered {text:?}"));
                        return;
                    }
                }
            }
        };
        self.reads.lock().push(Read {
            key: key.to_string(),
            via: via.to_string(),
            start,
            end,
            index,
        });
    }

    /// How many writes and reads were recorded, and how many writes were
    /// acknowledged.
    pub fn counts(&self) -> (usize, usize, usize) {
        let writes = self.writes.lock();
        let acked = writes.iter().filter(|w| w.acked).count();
        (writes.len(), acked, self.reads.lock().len())
    }

    /// A digest of the whole history in the order it was recorded: two runs
    /// of one seed must give the same one.
    pub fn fingerprint(&self) -> String {
        use md5::{Digest, Md5};
        let mut md5 = Md5::new();
        for w in self.writes.lock().iter() {
            md5.update(format!("{w:?}\n").as_bytes());
        }
        for r in self.reads.lock().iter() {
            md5.update(format!("{r:?}\n").as_bytes());
        }
        let digest = md5.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every violation of the guarantee in the history.
    pub fn check(&self) -> Vec<Violation> {
        let mut violations: Vec<Violation> = self
            .garbage
            .lock()
            .iter()
            .map(|g| Violation(format!("a value no client wrote: {g}")))
            .collect();
        let mut by_key: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
        let writes = self.writes.lock();
        for write in writes.iter() {
            by_key.entry(&write.key).or_default().push(write);
        }
        let empty = Vec::new();
        for read in self.reads.lock().iter() {
            let writes = by_key.get(read.key.as_str()).unwrap_or(&empty);
            let acked_before = writes
                .iter()
                .filter(|w| w.acked && w.end < read.start)
                .map(|w| w.index)
                .max()
                .unwrap_or(0);
            let issued_before = writes
                .iter()
                // Virtual time moves in whole milliseconds: a write sent in
                // the same millisecond as the read ended may be in it.
                .filter(|w| w.start <= read.end)
                .map(|w| w.index)
                .max()
                .unwrap_or(0);
            let write = |n: u64| writes.iter().find(|w| w.index == n);
            let at = |t: Duration| format!("{:.3}s", t.as_secs_f64());
            match read.index {
                Some(n) if n < acked_before => violations.push(Violation(format!(
                    "stale read: {} via {} at {}..{} answered write #{n}, but write #{acked_before} \
                     was acknowledged at {}",
                    read.key,
                    read.via,
                    at(read.start),
                    at(read.end),
                    write(acked_before).map_or_else(String::new, |w| at(w.end)),
                ))),
                Some(n) if n > issued_before || write(n).is_none_or(|w| w.erase) => {
                    violations.push(Violation(format!(
                        "{} via {} at {}..{} answered write #{n}, which was never issued as a \
                         value (issued before it ended: #{issued_before}; #{n} is {:?})",
                        read.key,
                        read.via,
                        at(read.start),
                        at(read.end),
                        write(n)
                    )))
                }
                Some(_) => {}
                None => {
                    let erased = acked_before == 0
                        || writes.iter().any(|w| {
                            w.erase && w.index >= acked_before && w.index <= issued_before
                        });
                    if !erased {
                        violations.push(Violation(format!(
                            "lost write: {} via {} at {}..{} answered absent, but write \
                             #{acked_before} was acknowledged at {}",
                            read.key,
                            read.via,
                            at(read.start),
                            at(read.end),
                            write(acked_before).map_or_else(String::new, |w| at(w.end)),
                        )));
                    }
                }
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn write(index: u64, start: u64, end: u64, acked: bool, erase: bool) -> Write {
        Write {
            key: "k".into(),
            index,
            erase,
            start: s(start),
            end: s(end),
            acked,
        }
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_stale() {
        let history = History::default();
        history.write(write(1, 0, 10, true, false));
        history.write(write(2, 20, 30, true, false));
        history.read("k", "n", s(40), s(50), Some(&value_of("k", 1)));
        assert!(history.check()[0].0.starts_with("stale read"));
    }

    #[test]
    fn a_write_the_client_gave_up_on_may_still_be_read_until_a_later_one_is_acknowledged() {
        let history = History::default();
        history.write(write(1, 0, 10, true, false));
        history.write(write(2, 20, 1020, false, false));
        history.read("k", "n", s(1030), s(1040), Some(&value_of("k", 2)));
        history.write(write(3, 1050, 1060, true, false));
        history.read("k", "n", s(1070), s(1080), Some(&value_of("k", 3)));
        assert!(history.check().is_empty());
        history.read("k", "n", s(1090), s(1100), Some(&value_of("k", 2)));
        assert_eq!(history.check().len(), 1);
    }

    #[test]
    fn an_erased_value_coming_back_is_a_stale_read() {
        let history = History::default();
        history.write(write(1, 0, 10, true, false));
        history.write(write(2, 20, 30, true, true));
        history.read("k", "n", s(40), s(50), None);
        assert!(history.check().is_empty());
        history.read("k", "n", s(60), s(70), Some(&value_of("k", 1)));
        assert_eq!(history.check().len(), 1);
    }

    #[test]
    fn an_acknowledged_value_answered_absent_is_lost() {
        let history = History::default();
        history.write(write(1, 0, 10, true, false));
        history.read("k", "n", s(20), s(30), None);
        assert!(history.check()[0].0.starts_with("lost write"));
    }

    #[test]
    fn a_value_nobody_wrote_is_reported() {
        let history = History::default();
        history.read("k", "n", s(20), s(30), Some(b"k#9"));
        history.read("k", "n", s(20), s(30), Some(b"junk"));
        assert_eq!(history.check().len(), 2);
    }
}
