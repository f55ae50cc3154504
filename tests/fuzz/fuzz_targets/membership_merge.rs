//! The member table's merge (`Membership::apply`) and the SWIM machine's
//! handling of pushed rows (`Swim::on_gossip` and the other inputs), on
//! sequences of rows about a few addresses, with any incarnation and status.
//!
//! Input: derived with `arbitrary` (see [`Input`]); seeds are a few such
//! encodings.
//!
//! Checked on `Membership` (one fixed wall clock), as `src/membership.rs`
//! states it:
//! - each `Change` says what happened: `None` leaves the table as it was,
//!   `Updated` puts exactly that row, `Refuted` only raises our own
//!   incarnation;
//! - the final table is the one the rule gives (a newer incarnation wins,
//!   then the later status; rows above the ceiling refused; news about
//!   ourselves that outranks our row refuted one above it, keeping our
//!   status), so it is the same for the rows in order, reversed, or in two
//!   batches the other way round, and merging the rows again changes nothing;
//! - no row is ever above the ceiling (our refutation at most one above),
//!   our incarnation never wraps, and our own row stays alive, above every
//!   plausible row about us that outranked it (a refutation was available),
//!   except news at `MAX_INCARNATION` itself, which the module leaves
//!   unanswered rather than wrap.
//!
//! Checked on `Swim` (virtual time from zero, moved only by `Tick`):
//! - no row goes back (incarnation, status) and none disappears; our row
//!   stays alive and within the bounds above; every changed row is reported
//!   by an `Effect::Changed` carrying it (the node rebuilds its ring from
//!   those); every plausible row about us that outranked our row is refuted;
//! - a push is answered with our own row first, and with rows as our table
//!   holds them.

#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use thrifty_p2p::NodeAddr;
use thrifty_p2p::fuzzing::{
    Change, Effect, INCARNATION_HORIZON, MAX_INCARNATION, MemberState, Membership, Status, Swim,
    SwimConfig,
};

/// Wall time at the start: 2026-01-01, in milliseconds.
const TODAY: i64 = 1_767_225_600_000;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Our wall clock (milliseconds); also our starting incarnation for Swim.
    wall: Wall,
    /// Our starting incarnation for `Membership`.
    own: Inc,
    /// Rows merged into a `Membership`.
    rows: Vec<Row>,
    /// Where `rows` is cut in two batches.
    split: u8,
    /// Inputs to a `Swim`.
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Wall {
    Today,
    Any(i64),
    /// `MAX_INCARNATION` minus this.
    NearMax(u16),
}

impl Wall {
    fn millis(self) -> i64 {
        match self {
            Wall::Today => TODAY,
            Wall::Any(n) => n,
            Wall::NearMax(n) => MAX_INCARNATION - i64::from(n),
        }
    }
}

/// An incarnation: anywhere, or near the values that matter.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Inc {
    /// Our wall clock plus this.
    NearWall(i16),
    /// The ceiling (wall clock plus an hour) plus this.
    NearCeiling(i8),
    Any(i64),
    Max,
    MaxIncarnation,
    Zero,
}

impl Inc {
    fn resolve(self, wall: i64, ceiling: i64) -> i64 {
        match self {
            Inc::NearWall(n) => wall.saturating_add(i64::from(n)),
            Inc::NearCeiling(n) => ceiling.saturating_add(i64::from(n)),
            Inc::Any(n) => n,
            Inc::Max => i64::MAX,
            Inc::MaxIncarnation => MAX_INCARNATION,
            Inc::Zero => 0,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum St {
    Alive,
    Suspect,
    Leaving,
    Dead,
    Left,
}

impl From<St> for Status {
    fn from(s: St) -> Status {
        match s {
            St::Alive => Status::Alive,
            St::Suspect => Status::Suspect,
            St::Leaving => Status::Leaving,
            St::Dead => Status::Dead,
            St::Left => Status::Left,
        }
    }
}

/// A row about member `who % 5` (0 is ourselves).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Row {
    who: u8,
    inc: Inc,
    status: St,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A push (`gossip`) whose first row names its sender, as the node passes it.
    Push(Vec<Row>),
    /// The reply to a call we made to `who`.
    Reply(u8, Vec<Row>),
    /// News from outside the protocol (`enter`, 2009 `join`).
    Learn(Vec<Row>),
    /// Time passes by this many milliseconds, then a tick.
    Tick(u16),
    /// A connection to `who` was refused.
    DeclareDead(u8),
    /// The 2009 `add` of `who`.
    AdmitLegacy(u8),
}

fn addr(who: u8) -> NodeAddr {
    NodeAddr::new("10.0.0.1", 9000 + u16::from(who % 5))
}

fn state(row: Row, wall: i64, ceiling: i64) -> MemberState {
    MemberState {
        addr: addr(row.who),
        incarnation: row.inc.resolve(wall, ceiling),
        status: row.status.into(),
        weight: 1,
    }
}

type Table = BTreeMap<NodeAddr, (i64, Status)>;

fn table_of(rows: Vec<MemberState>) -> Table {
    rows.into_iter()
        .map(|r| (r.addr, (r.incarnation, r.status)))
        .collect()
}

/// Whether news `row` about us outranks our row and can be refuted (the
/// module leaves only news at `MAX_INCARNATION` with a later status
/// unanswered, rather than wrap).
fn refutable(row: &MemberState, mine: (i64, Status)) -> bool {
    (row.incarnation, row.status) > mine
        && !(row.incarnation >= MAX_INCARNATION && row.status > mine.1)
}

fuzz_target!(|input: Input| {
    merge_rows(&input);
    drive_swim(&input);
});

fn merge_rows(input: &Input) {
    let me = addr(0);
    let wall = input.wall.millis();
    let fresh = {
        let mut view = Membership::new(me.clone(), input.own.resolve(wall, wall));
        view.set_wall(wall);
        view
    };
    let ceiling = fresh.ceiling();
    assert_eq!(
        ceiling,
        wall.saturating_add(INCARNATION_HORIZON)
            .min(MAX_INCARNATION)
    );
    let start = fresh.my_state();
    assert!((0..=MAX_INCARNATION).contains(&start.incarnation));
    let rows: Vec<MemberState> = input
        .rows
        .iter()
        .map(|r| state(*r, wall, ceiling))
        .collect();

    // In order, checking each step.
    let mut forward = fresh.clone();
    for row in &rows {
        let before = table_of(forward.table());
        let change = forward.apply(row.clone());
        let after = table_of(forward.table());
        let mine_before = before[&me];
        let mine = after[&me];
        match &change {
            Change::None => assert_eq!(after, before, "None, yet the table changed: {row:?}"),
            Change::Updated(new) => {
                assert_eq!(new, row, "Updated with another row than merged");
                assert_ne!(new.addr, me, "our own row is only ever refuted");
                assert!(
                    new.incarnation <= ceiling,
                    "took {new:?} above the ceiling {ceiling}"
                );
                let mut expected = before.clone();
                expected.insert(new.addr.clone(), (new.incarnation, new.status));
                assert_eq!(after, expected, "Updated changed more than its row");
            }
            Change::Refuted(new) => {
                assert_eq!(new.addr, me);
                assert_eq!((new.incarnation, new.status), mine);
                assert!(mine.0 > mine_before.0, "a refutation that does not raise");
                let mut expected = before.clone();
                expected.insert(me.clone(), mine);
                assert_eq!(after, expected, "a refutation changed another row");
            }
        }
        assert_eq!(mine.1, start.status, "our status changed: {row:?}");
        assert!(
            mine.0 <= MAX_INCARNATION,
            "our incarnation passed MAX_INCARNATION"
        );
        assert!(mine.0 >= mine_before.0, "our incarnation went down");
        if row.incarnation > ceiling {
            assert_eq!(
                change,
                Change::None,
                "an implausible row was taken: {row:?}"
            );
        }
        if row.addr == me && row.incarnation <= ceiling && refutable(row, mine_before) {
            assert!(
                mine >= (row.incarnation, row.status),
                "news about us {row:?} stands unrefuted over {mine:?}"
            );
        }
    }

    // The rule, computed directly.
    let mut model: Table = BTreeMap::new();
    let mut mine = start.incarnation;
    for row in rows.iter().filter(|r| r.incarnation <= ceiling) {
        if row.addr == me {
            let raised = if row.status <= start.status {
                Some(row.incarnation)
            } else if row.incarnation < MAX_INCARNATION {
                Some(row.incarnation + 1)
            } else {
                None
            };
            if let Some(raised) = raised {
                mine = mine.max(raised);
            }
        } else {
            let entry = model
                .entry(row.addr.clone())
                .or_insert((row.incarnation, row.status));
            *entry = (*entry).max((row.incarnation, row.status));
        }
    }
    model.insert(me.clone(), (mine, start.status));
    assert_eq!(
        table_of(forward.table()),
        model,
        "the table is not the rule's"
    );
    assert!(mine <= ceiling.saturating_add(1).max(start.incarnation));

    // Other orders give the same table.
    let mut backward = fresh.clone();
    for row in rows.iter().rev() {
        backward.apply(row.clone());
    }
    assert_eq!(backward.table(), forward.table(), "reversed order differs");
    let cut = usize::from(input.split) % (rows.len() + 1);
    let mut swapped = fresh.clone();
    for row in rows[cut..].iter().chain(&rows[..cut]) {
        swapped.apply(row.clone());
    }
    assert_eq!(swapped.table(), forward.table(), "batches swapped differ");

    // Merging again is idle.
    for row in &rows {
        assert_eq!(
            forward.apply(row.clone()),
            Change::None,
            "merged twice: {row:?}"
        );
    }
}

fn drive_swim(input: &Input) {
    let me = addr(0);
    let wall = input.wall.millis();
    let config = SwimConfig::from_failure_timeout(Duration::from_secs(5));
    let mut swim = Swim::new(me.clone(), wall, config, 7, Duration::ZERO);
    let start = swim.membership().my_state();
    let mut now = Duration::ZERO;
    for op in &input.ops {
        let ceiling = swim.membership().ceiling();
        let wall_now = ceiling.saturating_sub(INCARNATION_HORIZON);
        let resolve = |rows: &[Row]| -> Vec<MemberState> {
            rows.iter().map(|r| state(*r, wall_now, ceiling)).collect()
        };
        let before = table_of(swim.membership().table());
        let mut pushed = Vec::new();
        let mut reply = None;
        let effects = match op {
            Op::Push(rows) => {
                let rows = resolve(rows);
                pushed.clone_from(&rows);
                let Some(from) = Swim::sender(&rows).cloned() else {
                    continue;
                };
                let (answer, effects) = swim.on_gossip(&from, rows, now);
                reply = Some(answer);
                effects
            }
            Op::Reply(who, rows) => {
                let rows = resolve(rows);
                pushed.clone_from(&rows);
                swim.on_gossip_reply(&addr(*who), rows, now)
            }
            Op::Learn(rows) => {
                let rows = resolve(rows);
                pushed.clone_from(&rows);
                let Some(from) = Swim::sender(&rows).cloned() else {
                    continue;
                };
                swim.learn(&from, rows, now)
            }
            Op::Tick(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                swim.tick(now)
            }
            Op::DeclareDead(who) => swim.declare_dead(&addr(*who), now),
            Op::AdmitLegacy(who) => swim.admit_legacy(&addr(*who), now),
        };
        let view = swim.membership();
        let ceiling = view.ceiling();
        let after = table_of(view.table());
        let mine = after[&me];
        assert_eq!(
            mine.1,
            Status::Alive,
            "our own row is {mine:?} after {op:?}"
        );
        assert!(mine.0 <= MAX_INCARNATION);
        assert!(mine.0 <= ceiling.saturating_add(1).max(start.incarnation));
        for (who, was) in &before {
            let now = after
                .get(who)
                .unwrap_or_else(|| panic!("{who} disappeared"));
            assert!(
                now >= was,
                "{who} went back from {was:?} to {now:?} after {op:?}"
            );
            if *now != *was {
                let reported = effects.iter().rev().find_map(|e| match e {
                    Effect::Changed(row) if row.addr == *who => Some((row.incarnation, row.status)),
                    _ => None,
                });
                assert_eq!(reported, Some(*now), "{who}'s change was not reported");
            }
        }
        for (who, row) in &after {
            if *who != me {
                assert!(
                    row.0 <= ceiling,
                    "{who} at {row:?}, above the ceiling {ceiling}"
                );
            }
            if !before.contains_key(who) {
                assert!(
                    effects
                        .iter()
                        .any(|e| matches!(e, Effect::Changed(r) if r.addr == *who)),
                    "{who} was added unreported"
                );
            }
        }
        let mine_before = before[&me];
        for row in pushed.iter().filter(|r| r.addr == me) {
            if row.incarnation <= ceiling && refutable(row, mine_before) {
                assert!(
                    mine >= (row.incarnation, row.status),
                    "news about us {row:?} stands unrefuted over {mine:?}"
                );
            }
        }
        if let Some(reply) = reply {
            assert_eq!(
                reply.first(),
                Some(&view.my_state()),
                "a reply starts with our row"
            );
            for row in &reply {
                assert_eq!(
                    after.get(&row.addr),
                    Some(&(row.incarnation, row.status)),
                    "a reply row is not our table's: {row:?}"
                );
            }
        }
    }
}
