//! The membership view: who is in the ring, as a pure state machine.
//!
//! Each member has an incarnation (its start time, raised when it refutes news
//! about itself) and a status. Updates from gossip, joins and failure reports are
//! merged with one rule, so every node that has seen the same updates holds the
//! same table whatever order they came in: a newer incarnation wins; within one
//! incarnation the later status in
//! `Alive < Suspect < Leaving < Dead < Left` wins. The order, and why:
//!
//! - `Alive < Suspect`: a suspicion at incarnation `i` is news about the member
//!   as it was at `i`; only the member itself can answer it, by announcing itself
//!   alive at `i + 1` (SWIM's refutation).
//! - `Suspect < Leaving`: `Leaving` is the member's own word that it is handing
//!   its keys over; a suspicion is only someone's failure to reach it. If a
//!   suspicion beat it, peers would route to a leaving member again (a suspect
//!   still serves), sending it writes it is about to carry away. A leaving
//!   member that really goes silent still dies: the detector suspects it locally
//!   and then declares it `Dead` (see [`crate::swim`]).
//! - `Leaving < Dead`: a member that stops answering mid-handoff must be
//!   dropped; if it still lives, it refutes with `Leaving` at `i + 1`.
//! - `Dead < Left`: both end the member's incarnation, but `Left` is its own
//!   word, and says its keys were handed over. It is final for that incarnation.
//!
//! Departed members stay as tombstones so that stale news cannot bring them
//! back; a restarted node comes back with a newer incarnation.
//!
//! A node is the only author of its own incarnations: news about itself that
//! outranks its own row (`Suspect`, `Dead`, even `Left` when it has not left) is
//! refuted by taking an incarnation above the news, keeping its own status.
//!
//! Incarnations never wrap. A row above [`MAX_INCARNATION`] is refused as
//! implausible, about any member (no honest node gets there: incarnations start
//! at a start time in milliseconds, about 2^41 today, and rise by one per
//! refutation). So a corrupt or forged `i64::MAX` can neither kill a member nor
//! push a refutation past `i64::MAX`; news at exactly `MAX_INCARNATION` about
//! ourselves cannot be outbid, and is left unanswered rather than wrapped.

use std::collections::BTreeMap;

use crate::addr::NodeAddr;

/// The highest incarnation a row may carry; rows above it are refused as
/// implausible (see the module doc). 2^62, some 146 million years of milliseconds.
pub const MAX_INCARNATION: i64 = 1 << 62;

/// How a member stands. The order is the merge order within one incarnation
/// (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Serving its share of the ring.
    Alive,
    /// A peer could not reach it: still serving, but it will be declared dead
    /// unless it refutes in time.
    Suspect,
    /// Handing its keys over before it leaves: peers stop routing to it, but
    /// it is not dead and still answers.
    Leaving,
    /// Dropped after it could not be reached.
    Dead,
    /// Left on purpose after handing its keys over.
    Left,
}

impl Status {
    /// Whether the member holds its share of the ring: `Alive` or `Suspect`.
    pub fn serves(self) -> bool {
        matches!(self, Status::Alive | Status::Suspect)
    }

    /// Whether the member is still up as far as we know, so worth probing and
    /// gossiping with: it serves, or it is leaving.
    pub fn is_up(self) -> bool {
        self.serves() || self == Status::Leaving
    }

    /// Whether the member's incarnation is over: `Dead` or `Left`.
    pub fn is_gone(self) -> bool {
        !self.is_up()
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberState {
    /// The member's address (its name on the ring).
    pub addr: NodeAddr,
    /// Its incarnation.
    pub incarnation: i64,
    /// Its status.
    pub status: Status,
}

impl MemberState {
    fn supersedes(&self, incarnation: i64, status: Status) -> bool {
        (self.incarnation, self.status) > (incarnation, status)
    }
}

/// What merging one update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing new (or the update was refused as implausible): no state changed.
    None,
    /// The table changed; spread the update.
    Updated(MemberState),
    /// Someone said we are suspect, dead or gone while we are not: we took a
    /// newer incarnation. Spread our refutation.
    Refuted(MemberState),
}

/// A node's view of the ring's members.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeAddr,
    table: BTreeMap<NodeAddr, (i64, Status)>,
}

impl Membership {
    /// A view holding only ourselves, alive at `incarnation` (clamped to
    /// `0..=MAX_INCARNATION`).
    pub fn new(me: NodeAddr, incarnation: i64) -> Self {
        let mut table = BTreeMap::new();
        table.insert(
            me.clone(),
            (incarnation.clamp(0, MAX_INCARNATION), Status::Alive),
        );
        Membership { me, table }
    }

    /// Our own address.
    pub fn me(&self) -> &NodeAddr {
        &self.me
    }

    /// Our own row.
    pub fn my_state(&self) -> MemberState {
        self.state(&self.me).expect("a view always holds its owner")
    }

    /// The row of `addr`, if known.
    pub fn state(&self, addr: &NodeAddr) -> Option<MemberState> {
        self.table
            .get(addr)
            .map(|&(incarnation, status)| MemberState {
                addr: addr.clone(),
                incarnation,
                status,
            })
    }

    /// The status of `addr`, if known.
    pub fn status(&self, addr: &NodeAddr) -> Option<Status> {
        self.table.get(addr).map(|&(_, status)| status)
    }

    /// Merges one update. Rows above [`MAX_INCARNATION`] are refused
    /// ([`Change::None`]).
    pub fn apply(&mut self, update: MemberState) -> Change {
        if update.incarnation > MAX_INCARNATION {
            return Change::None;
        }
        if update.addr == self.me {
            return self.apply_about_me(update);
        }
        match self.table.get(&update.addr) {
            Some(&(inc, status)) if !update.supersedes(inc, status) => Change::None,
            _ => {
                self.table
                    .insert(update.addr.clone(), (update.incarnation, update.status));
                Change::Updated(update)
            }
        }
    }

    /// News about ourselves that outranks our own row is wrong (we are its only
    /// author): take an incarnation at which our own status wins again. The
    /// result is the same whatever order such news comes in (the highest wins).
    fn apply_about_me(&mut self, update: MemberState) -> Change {
        let (mine, my_status) = self.table[&self.me];
        if my_status == Status::Left || !update.supersedes(mine, my_status) {
            // We left (our own word stands), or the news is not newer than ours.
            return Change::None;
        }
        let refuted = if my_status >= update.status {
            update.incarnation
        } else if update.incarnation < MAX_INCARNATION {
            update.incarnation + 1
        } else {
            // Cannot be outbid without leaving the plausible range: unanswered.
            return Change::None;
        };
        self.table.insert(self.me.clone(), (refuted, my_status));
        Change::Refuted(self.my_state())
    }

    /// Marks `addr` suspect at the incarnation we know, if it is alive to us.
    pub fn suspect(&mut self, addr: &NodeAddr) -> Change {
        match self.state(addr) {
            Some(state) if state.status == Status::Alive && *addr != self.me => {
                self.apply(MemberState {
                    status: Status::Suspect,
                    ..state
                })
            }
            _ => Change::None,
        }
    }

    /// Declares `addr` dead at the incarnation we know, if it is up to us
    /// (alive, suspect or leaving).
    pub fn declare_dead(&mut self, addr: &NodeAddr) -> Change {
        match self.state(addr) {
            Some(state) if state.status.is_up() && *addr != self.me => self.apply(MemberState {
                status: Status::Dead,
                ..state
            }),
            _ => Change::None,
        }
    }

    /// Adds `addr` as alive on the word of the 2009 protocol, which carries no
    /// incarnation: a new member starts at 0, a departed one comes back one higher.
    pub fn admit_legacy(&mut self, addr: &NodeAddr) -> Change {
        let incarnation = match self.state(addr) {
            Some(state) if state.status.is_up() => return Change::None,
            Some(state) => state.incarnation.saturating_add(1),
            None => 0,
        };
        self.apply(MemberState {
            addr: addr.clone(),
            incarnation,
            status: Status::Alive,
        })
    }

    /// Members that count toward a quorum's size: every row but those that
    /// left on purpose (a dead member may come back with its data).
    pub fn known(&self) -> usize {
        self.table
            .values()
            .filter(|(_, status)| *status != Status::Left)
            .count()
    }

    /// Marks ourselves as leaving (handing our keys over), unless we already
    /// left. Returns our row, to spread.
    pub fn start_leaving(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        if entry.1 != Status::Left {
            entry.1 = Status::Leaving;
        }
        self.my_state()
    }

    /// Marks ourselves as having left. Returns our row, to spread.
    pub fn leave(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        entry.1 = Status::Left;
        self.my_state()
    }

    /// Members that hold a share of the ring (alive or suspect), ourselves
    /// included if we do, sorted. Leaving members are not among them.
    pub fn alive(&self) -> impl Iterator<Item = &NodeAddr> {
        self.table
            .iter()
            .filter(|(_, (_, status))| status.serves())
            .map(|(addr, _)| addr)
    }

    /// Members in [`Membership::alive`] other than ourselves.
    pub fn peers(&self) -> Vec<NodeAddr> {
        self.alive().filter(|a| **a != self.me).cloned().collect()
    }

    /// Members other than ourselves that are up (alive, suspect or leaving):
    /// the ones to probe and gossip with.
    pub fn up_peers(&self) -> Vec<NodeAddr> {
        self.table
            .iter()
            .filter(|(addr, (_, status))| status.is_up() && **addr != self.me)
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// How many rows the table holds, tombstones and ourselves included.
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// Every row, tombstones included.
    pub fn table(&self) -> Vec<MemberState> {
        self.table
            .iter()
            .map(|(addr, &(incarnation, status))| MemberState {
                addr: addr.clone(),
                incarnation,
                status,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    fn state(port: u16, incarnation: i64, status: Status) -> MemberState {
        MemberState {
            addr: addr(port),
            incarnation,
            status,
        }
    }

    #[test]
    fn a_new_member_is_added_and_reported() {
        let mut view = Membership::new(addr(1), 10);
        let update = state(2, 5, Status::Alive);
        assert_eq!(view.apply(update.clone()), Change::Updated(update));
        assert_eq!(view.peers(), vec![addr(2)]);
    }

    #[test]
    fn stale_news_cannot_resurrect_a_dead_member() {
        let mut view = Membership::new(addr(1), 10);
        view.apply(state(2, 5, Status::Alive));
        assert!(matches!(view.declare_dead(&addr(2)), Change::Updated(_)));
        assert_eq!(view.apply(state(2, 5, Status::Alive)), Change::None);
        assert_eq!(view.apply(state(2, 5, Status::Suspect)), Change::None);
        assert!(view.peers().is_empty());
    }

    #[test]
    fn a_restarted_member_returns_with_a_newer_incarnation() {
        let mut view = Membership::new(addr(1), 10);
        view.apply(state(2, 5, Status::Left));
        assert!(matches!(
            view.apply(state(2, 6, Status::Alive)),
            Change::Updated(_)
        ));
        assert_eq!(view.peers(), vec![addr(2)]);
    }

    #[test]
    fn a_node_refutes_news_of_its_own_death() {
        let mut view = Membership::new(addr(1), 10);
        let change = view.apply(state(1, 10, Status::Dead));
        assert_eq!(change, Change::Refuted(state(1, 11, Status::Alive)));
        assert_eq!(view.my_state().status, Status::Alive);
    }

    #[test]
    fn a_node_refutes_suspicion_with_a_newer_incarnation() {
        let mut view = Membership::new(addr(1), 10);
        let change = view.apply(state(1, 10, Status::Suspect));
        assert_eq!(change, Change::Refuted(state(1, 11, Status::Alive)));
        // The refutation beats the suspicion everywhere.
        let mut peer = Membership::new(addr(2), 3);
        peer.apply(state(1, 10, Status::Suspect));
        assert!(matches!(
            peer.apply(view.my_state()),
            Change::Updated(ref s) if s.status == Status::Alive
        ));
    }

    #[test]
    fn old_news_about_ourselves_is_not_refuted() {
        let mut view = Membership::new(addr(1), 10);
        assert_eq!(view.apply(state(1, 9, Status::Dead)), Change::None);
        assert_eq!(view.apply(state(1, 10, Status::Alive)), Change::None);
        assert_eq!(view.my_state(), state(1, 10, Status::Alive));
    }

    #[test]
    fn a_departed_node_does_not_refute() {
        let mut view = Membership::new(addr(1), 10);
        view.leave();
        assert_eq!(view.apply(state(1, 10, Status::Dead)), Change::None);
        assert_eq!(view.my_state().status, Status::Left);
    }

    #[test]
    fn a_leaving_node_refutes_news_of_its_death_and_stays_leaving() {
        let mut view = Membership::new(addr(1), 10);
        assert_eq!(view.start_leaving(), state(1, 10, Status::Leaving));
        // A suspicion does not outrank a leaving announcement: nothing to answer.
        assert_eq!(view.apply(state(1, 10, Status::Suspect)), Change::None);
        assert_eq!(
            view.apply(state(1, 10, Status::Dead)),
            Change::Refuted(state(1, 11, Status::Leaving))
        );
    }

    #[test]
    fn a_suspicion_cannot_undo_a_leaving_announcement() {
        let mut view = Membership::new(addr(1), 1);
        view.apply(state(2, 5, Status::Leaving));
        assert_eq!(view.apply(state(2, 5, Status::Suspect)), Change::None);
        assert_eq!(view.suspect(&addr(2)), Change::None);
        assert_eq!(view.status(&addr(2)), Some(Status::Leaving));
        assert!(matches!(view.declare_dead(&addr(2)), Change::Updated(_)));
    }

    #[test]
    fn a_suspect_still_serves_but_a_leaving_member_does_not() {
        let mut view = Membership::new(addr(1), 1);
        view.apply(state(2, 5, Status::Alive));
        view.apply(state(3, 5, Status::Alive));
        view.apply(state(4, 5, Status::Alive));
        assert!(matches!(view.suspect(&addr(2)), Change::Updated(_)));
        view.apply(state(3, 5, Status::Leaving));
        assert_eq!(view.peers(), vec![addr(2), addr(4)]);
        assert_eq!(view.up_peers(), vec![addr(2), addr(3), addr(4)]);
        assert_eq!(view.alive().count(), 3);
    }

    #[test]
    fn an_implausible_incarnation_is_refused_and_never_wraps() {
        let mut view = Membership::new(addr(1), 10);
        // About ourselves: refused, not refuted at i64::MAX + 1.
        assert_eq!(view.apply(state(1, i64::MAX, Status::Dead)), Change::None);
        assert_eq!(view.my_state(), state(1, 10, Status::Alive));
        // About someone else: refused too, so it cannot kill them.
        view.apply(state(2, 5, Status::Alive));
        assert_eq!(view.apply(state(2, i64::MAX, Status::Dead)), Change::None);
        assert_eq!(view.status(&addr(2)), Some(Status::Alive));
        // Just below the ceiling: refuted at the ceiling.
        assert_eq!(
            view.apply(state(1, MAX_INCARNATION - 1, Status::Dead)),
            Change::Refuted(state(1, MAX_INCARNATION, Status::Alive))
        );
        // At the ceiling: cannot be outbid; left unanswered, never wrapped.
        assert_eq!(
            view.apply(state(1, MAX_INCARNATION, Status::Dead)),
            Change::None
        );
        assert_eq!(view.my_state().incarnation, MAX_INCARNATION);
        // A legacy re-admission saturates too.
        let mut other = Membership::new(addr(1), 1);
        other.apply(state(2, MAX_INCARNATION, Status::Dead));
        assert_eq!(other.admit_legacy(&addr(2)), Change::None);
    }

    #[test]
    fn merge_order_does_not_matter() {
        let updates = [
            state(2, 1, Status::Alive),
            state(2, 1, Status::Dead),
            state(2, 2, Status::Alive),
            state(3, 1, Status::Alive),
            state(3, 1, Status::Left),
            state(4, 7, Status::Alive),
            state(5, 2, Status::Suspect),
            state(5, 2, Status::Leaving),
        ];
        let mut forward = Membership::new(addr(1), 1);
        let mut backward = Membership::new(addr(1), 1);
        updates.iter().cloned().for_each(|u| {
            forward.apply(u);
        });
        updates.iter().rev().cloned().for_each(|u| {
            backward.apply(u);
        });
        assert_eq!(forward.table(), backward.table());
        assert_eq!(forward.peers(), vec![addr(2), addr(4)]);
    }

    #[test]
    fn legacy_add_brings_back_a_departed_member() {
        let mut view = Membership::new(addr(1), 1);
        assert!(matches!(view.admit_legacy(&addr(2)), Change::Updated(_)));
        view.declare_dead(&addr(2));
        assert!(matches!(view.admit_legacy(&addr(2)), Change::Updated(_)));
        assert_eq!(view.state(&addr(2)).unwrap().incarnation, 1);
        assert_eq!(view.admit_legacy(&addr(2)), Change::None);
    }

    fn any_status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Alive),
            Just(Status::Suspect),
            Just(Status::Leaving),
            Just(Status::Dead),
            Just(Status::Left),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any two orders of the same updates (news about ourselves included)
        /// leave the same table.
        #[test]
        fn any_order_of_the_same_updates_gives_the_same_table(
            updates in proptest::collection::vec((1u16..5, 0i64..6, any_status()), 0..24),
            order in any::<u64>(),
        ) {
            let updates: Vec<MemberState> =
                updates.into_iter().map(|(p, i, s)| state(p, i, s)).collect();
            let mut shuffled = updates.clone();
            // A deterministic permutation drawn from `order`.
            let mut x = order | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut a = Membership::new(addr(1), 2);
            let mut b = Membership::new(addr(1), 2);
            updates.into_iter().for_each(|u| { a.apply(u); });
            shuffled.into_iter().for_each(|u| { b.apply(u); });
            prop_assert_eq!(a.table(), b.table());
        }
    }
}
