//! `frame::scan` and `frame::Scanner` over arbitrary bytes, with the node's
//! limits and with small ones. The server finds messages with a `Scanner`
//! fed whatever each read brought; this target checks that doing so gives
//! exactly what one `scan` of the whole buffer gives, whatever the pieces.
//!
//! Input: one byte `n`, then `n % 17` little-endian `u16` cut points, then
//! the bytes to scan (seeds: `0x00` and a whole message).
//!
//! Checked, for every set of limits:
//! - nothing panics;
//! - a scanner fed growing prefixes ending at the cuts (and at every byte)
//!   settles on the same answer as one `scan` of the whole buffer, and at
//!   the first prefix where one-shot `scan` settles; a message refused for
//!   its size keeps the same [`Oversize`] either way;
//! - while it needs more (`Ok(None)`), `wanted()` is more than the bytes it
//!   has and never more than `max_message`, nor more than the message found
//!   in the end;
//! - a frame is no longer than the buffer, scans the same on its own bytes,
//!   and the scanner, once settled, finds the next pipelined message as a
//!   fresh one would.

#![no_main]

use libfuzzer_sys::fuzz_target;
use thrifty_p2p::wire::frame::{self, Frame, FrameError, Limits, Scanner};

type Answer = Result<Option<Frame>, FrameError>;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 17);
    if rest.len() < 2 * count {
        return;
    }
    let (cuts, buf) = rest.split_at(2 * count);
    let cuts: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    for limits in [
        Limits::default(),
        Limits {
            max_message: 300,
            max_container: 16,
            max_depth: 6,
        },
        Limits {
            max_message: 40,
            max_container: 3,
            max_depth: 2,
        },
        Limits {
            max_message: 4096,
            max_container: 1000,
            max_depth: 1,
        },
    ] {
        check(buf, &cuts, &limits);
    }
});

fn check(buf: &[u8], cuts: &[usize], limits: &Limits) {
    let whole = frame::scan(buf, limits);
    let whole_oversize = oversize_of(buf, limits);
    if let Ok(Some(frame)) = &whole {
        assert!(frame.len <= buf.len(), "a frame longer than its buffer");
        assert_eq!(
            frame::scan(&buf[..frame.len], limits).as_ref(),
            Ok(&Some(frame.clone())),
            "a message scans differently on its own bytes"
        );
    }

    // In the pieces the cuts make.
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    ends.push(buf.len());
    ends.sort_unstable();
    ends.dedup();
    resumed(buf, &ends, limits, &whole, &whole_oversize);

    // A byte at a time, checked against a one-shot scan of every prefix
    // (quadratic, so only the first 256 bytes: past the small limits).
    let upto = buf.len().min(256);
    let ends: Vec<usize> = (1..=upto).collect();
    let prefix = &buf[..upto];
    let answer = frame::scan(prefix, limits);
    resumed(prefix, &ends, limits, &answer, &oversize_of(prefix, limits));

    // Pipelined: the next message starts where this one ended.
    if let Ok(Some(frame)) = &whole
        && frame.len > 0
        && frame.len < buf.len()
    {
        let mut scanner = Scanner::new();
        assert_eq!(scanner.scan(buf, limits), whole);
        let next = &buf[frame.len..];
        assert_eq!(
            scanner.scan(next, limits),
            frame::scan(next, limits),
            "a settled scanner finds the next message differently"
        );
    }
}

/// What a fresh scanner refused for size, if anything, on the whole of `buf`.
fn oversize_of(buf: &[u8], limits: &Limits) -> Option<frame::Oversize> {
    let mut scanner = Scanner::new();
    let _ = scanner.scan(buf, limits);
    scanner.take_oversize()
}

/// Feeds `buf[..end]` for each of `ends` (ascending, the last `buf.len()`)
/// to one scanner and checks its answers against one-shot scans.
fn resumed(
    buf: &[u8],
    ends: &[usize],
    limits: &Limits,
    whole: &Answer,
    whole_oversize: &Option<frame::Oversize>,
) {
    let mut scanner = Scanner::new();
    for &end in ends {
        let got = scanner.scan(&buf[..end], limits);
        match &got {
            Ok(None) => {
                let wanted = scanner.wanted();
                assert!(
                    wanted <= limits.max_message,
                    "wants {wanted} bytes, more than the limit {}",
                    limits.max_message
                );
                if end > 0 {
                    assert!(wanted > end, "wants {wanted} bytes with {end} in");
                }
                if let Ok(Some(frame)) = whole {
                    assert!(
                        wanted <= frame.len,
                        "wants {wanted} bytes of a {}-byte message",
                        frame.len
                    );
                }
                assert_eq!(
                    frame::scan(&buf[..end], limits),
                    Ok(None),
                    "resumed needs more where one-shot settled, at {end}"
                );
            }
            settled => {
                assert_eq!(
                    settled,
                    &frame::scan(&buf[..end], limits),
                    "resumed and one-shot differ at {end} bytes"
                );
                assert_eq!(
                    settled, whole,
                    "settled at {end} bytes on another answer than the whole buffer's"
                );
                assert_eq!(
                    &scanner.take_oversize(),
                    whole_oversize,
                    "a refusal for size reports another call"
                );
                return;
            }
        }
    }
    assert_eq!(whole, &Ok(None), "the scanner never settled");
}
