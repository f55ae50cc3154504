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
//! Incarnations never wrap. An incarnation starts at the member's start time
//! in wall-clock milliseconds (see `Node::new`) and rises by one per
//! refutation, so an honest one is never far ahead of anyone's wall clock. A
//! row whose incarnation is more than [`INCARNATION_HORIZON`] (one hour) ahead
//! of our wall clock ([`Membership::set_wall`]) is refused as implausible, about
//! any member, ourselves included. So news that kills a member is always at
//! most an hour ahead, and the member's refutation (one higher) is taken as
//! soon as the receiver's clock has moved on a millisecond: a forged
//! `i64::MAX` can neither kill a member nor push a refutation past
//! `i64::MAX`, and a member always gets back in. (The bound is on wall time,
//! not on the highest incarnation seen, so it cannot be ratcheted forward.
//! Clocks of members must agree within the hour; [`MAX_INCARNATION`] caps it
//! all in any case.)
//!
//! # Who may serve
//!
//! A row says what someone claims about a member; it does not show that
//! anything answers at that address. A member serves (holds a share of the
//! ring, counts toward quorums) only once it answered a call *we* made to its
//! address, with its own row first ([`Membership::confirm`], fed by
//! [`crate::swim::Swim`] from ping and gossip replies). Until then it is
//! [`Contact::Unconfirmed`]: probed, so it is confirmed or found dead, but
//! neither in [`Membership::alive`] nor in [`Membership::known`]. A push that
//! names its sender does not confirm it: anyone can write any row first. A
//! confirmed member that goes down and comes back in our view is
//! [`Contact::Lapsed`]: it still counts toward quorums (it may hold data) but
//! serves again only once it answered again. Contact is local knowledge,
//! outside the merge: it never travels and does not change the merge order.

use std::collections::BTreeMap;

use crate::addr::NodeAddr;

/// The highest incarnation a row may ever carry, whatever the clock says
/// (see the module doc). 2^62, some 146 million years of milliseconds.
pub const MAX_INCARNATION: i64 = 1 << 62;

/// How far ahead of our wall clock, in milliseconds, an incarnation may be:
/// one hour (see the module doc).
pub const INCARNATION_HORIZON: i64 = 3_600_000;

/// The most rows a table holds, tombstones included: news of a member not in
/// a full table is ignored, so forged rows cannot grow it without bound.
pub const MAX_ROWS: usize = 16_384;

/// Whether a member answered us itself (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Contact {
    /// Known from others' word only: does not serve, does not count.
    Unconfirmed,
    /// Answered a call of ours since it last came up: serves.
    Confirmed,
    /// Answered before, but went down and came up again since: counts toward
    /// quorums, serves once it answers again.
    Lapsed,
}

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
    /// Every status, in merge order.
    pub const ALL: [Status; 5] = [
        Status::Alive,
        Status::Suspect,
        Status::Leaving,
        Status::Dead,
        Status::Left,
    ];

    /// Its name for people and tools (`storestat`, the status page, the
    /// `status` label of `/metrics`, the log).
    pub fn name(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Leaving => "leaving",
            Status::Dead => "dead",
            Status::Left => "left",
        }
    }

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
    /// Its weight on the ring, 1 to [`crate::config::MAX_WEIGHT`]: the
    /// member's own setting (`--weight`), carried with its row. A member
    /// sets it when it starts, so it changes only with a new incarnation,
    /// and every node that merged the same rows builds the same ring.
    pub weight: u32,
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

/// One row as held: the merged part, and our own contact with the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    incarnation: i64,
    status: Status,
    weight: u32,
    contact: Contact,
}

/// A node's view of the ring's members.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeAddr,
    table: BTreeMap<NodeAddr, Row>,
    /// Our wall clock in milliseconds, as last told.
    wall: i64,
}

impl Membership {
    /// A view holding only ourselves, alive at `incarnation` (clamped to
    /// `0..=MAX_INCARNATION`), which is also taken as our wall clock until
    /// [`Membership::set_wall`] says otherwise (incarnations start at the
    /// start time).
    pub fn new(me: NodeAddr, incarnation: i64) -> Self {
        let incarnation = incarnation.clamp(0, MAX_INCARNATION);
        let mut table = BTreeMap::new();
        table.insert(
            me.clone(),
            Row {
                incarnation,
                status: Status::Alive,
                weight: 1,
                contact: Contact::Confirmed,
            },
        );
        Membership {
            me,
            table,
            wall: incarnation,
        }
    }

    /// Sets our own weight (clamped to 1..=[`crate::config::MAX_WEIGHT`]).
    /// Only before our row is first sent: a weight travels with an
    /// incarnation, so a change under the same one would not spread.
    pub fn set_my_weight(&mut self, weight: u32) {
        let row = self.table.get_mut(&self.me).expect("own row");
        row.weight = weight.clamp(1, crate::config::MAX_WEIGHT);
    }

    /// Tells the view our wall clock (milliseconds since the epoch), which
    /// bounds the incarnations it takes.
    pub fn set_wall(&mut self, millis: i64) {
        self.wall = millis;
    }

    /// The highest incarnation taken now: our wall clock plus
    /// [`INCARNATION_HORIZON`], at most [`MAX_INCARNATION`].
    pub fn ceiling(&self) -> i64 {
        self.wall
            .saturating_add(INCARNATION_HORIZON)
            .min(MAX_INCARNATION)
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
        self.table.get(addr).map(|row| MemberState {
            addr: addr.clone(),
            incarnation: row.incarnation,
            status: row.status,
            weight: row.weight,
        })
    }

    /// The status of `addr`, if known.
    pub fn status(&self, addr: &NodeAddr) -> Option<Status> {
        self.table.get(addr).map(|row| row.status)
    }

    /// Our contact with `addr`, if known (see the module doc).
    #[cfg(test)]
    pub fn contact(&self, addr: &NodeAddr) -> Option<Contact> {
        self.table.get(addr).map(|row| row.contact)
    }

    /// Whether `addr` is up and answered us since it came up.
    pub fn is_confirmed(&self, addr: &NodeAddr) -> bool {
        self.table
            .get(addr)
            .is_some_and(|row| row.status.is_up() && row.contact == Contact::Confirmed)
    }

    /// `addr` answered a call we made to its address, with its own row:
    /// it may serve. Returns whether our contact with it changed.
    pub fn confirm(&mut self, addr: &NodeAddr) -> bool {
        match self.table.get_mut(addr) {
            Some(row) if row.contact != Contact::Confirmed => {
                row.contact = Contact::Confirmed;
                true
            }
            _ => false,
        }
    }

    /// Merges one update. Rows above [`Membership::ceiling`], and rows about
    /// new members once the table holds [`MAX_ROWS`], are refused
    /// ([`Change::None`]).
    pub fn apply(&mut self, update: MemberState) -> Change {
        if update.incarnation > self.ceiling() {
            return Change::None;
        }
        if update.addr == self.me {
            return self.apply_about_me(update);
        }
        match self.table.get(&update.addr) {
            Some(row) if !update.supersedes(row.incarnation, row.status) => Change::None,
            None if self.table.len() >= MAX_ROWS => Change::None,
            known => {
                let contact = match known {
                    None => Contact::Unconfirmed,
                    // Back up after it was gone: it must answer again.
                    Some(row)
                        if row.contact == Contact::Confirmed
                            && row.status.is_gone()
                            && update.status.is_up() =>
                    {
                        Contact::Lapsed
                    }
                    Some(row) => row.contact,
                };
                self.table.insert(
                    update.addr.clone(),
                    Row {
                        incarnation: update.incarnation,
                        status: update.status,
                        weight: update.weight.clamp(1, crate::config::MAX_WEIGHT),
                        contact,
                    },
                );
                Change::Updated(update)
            }
        }
    }

    /// News about ourselves that outranks our own row is wrong (we are its only
    /// author): take an incarnation at which our own status wins again. The
    /// result is the same whatever order such news comes in (the highest wins).
    fn apply_about_me(&mut self, update: MemberState) -> Change {
        let Row {
            incarnation: mine,
            status: my_status,
            ..
        } = self.table[&self.me];
        if my_status == Status::Left || !update.supersedes(mine, my_status) {
            // We left (our own word stands), or the news is not newer than ours.
            return Change::None;
        }
        let refuted = if my_status >= update.status {
            update.incarnation
        } else if update.incarnation < MAX_INCARNATION {
            // At most one above the ceiling: taken by every peer whose clock
            // is a millisecond later than ours was.
            update.incarnation + 1
        } else {
            // Only with a clock beyond 2^62 ms: unanswered rather than wrapped.
            return Change::None;
        };
        let row = self.table.get_mut(&self.me).expect("own row");
        row.incarnation = refuted;
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
        let (incarnation, weight) = match self.state(addr) {
            Some(state) if state.status.is_up() => return Change::None,
            Some(state) => (state.incarnation.saturating_add(1), state.weight),
            None => (0, 1),
        };
        self.apply(MemberState {
            addr: addr.clone(),
            incarnation,
            status: Status::Alive,
            weight,
        })
    }

    /// Members that count toward a quorum's size: every row but those that
    /// left on purpose (a dead member may come back with its data) and those
    /// that never answered us (see the module doc).
    pub fn known(&self) -> usize {
        self.table
            .values()
            .filter(|row| row.status != Status::Left && row.contact != Contact::Unconfirmed)
            .count()
    }

    /// Marks ourselves as leaving (handing our keys over), unless we already
    /// left. Returns our row, to spread.
    pub fn start_leaving(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        if entry.status != Status::Left {
            entry.status = Status::Leaving;
        }
        self.my_state()
    }

    /// Marks ourselves as having left. Returns our row, to spread.
    pub fn leave(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        entry.status = Status::Left;
        self.my_state()
    }

    /// Members that hold a share of the ring (alive or suspect, and
    /// confirmed: see the module doc), ourselves included if we do, sorted.
    /// Leaving members are not among them.
    pub fn alive(&self) -> impl Iterator<Item = &NodeAddr> {
        self.alive_weighted().map(|(addr, _)| addr)
    }

    /// [`Membership::alive`] with each member's weight: what the ring is
    /// built from.
    pub fn alive_weighted(&self) -> impl Iterator<Item = (&NodeAddr, u32)> {
        self.table
            .iter()
            .filter(|(_, row)| row.status.serves() && row.contact == Contact::Confirmed)
            .map(|(addr, row)| (addr, row.weight))
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
            .filter(|(addr, row)| row.status.is_up() && **addr != self.me)
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// [`Membership::up_peers`] that are confirmed: the ones to gossip with
    /// and to ask for indirect probes.
    pub fn confirmed_peers(&self) -> Vec<NodeAddr> {
        self.table
            .iter()
            .filter(|(addr, row)| {
                row.status.is_up() && row.contact == Contact::Confirmed && **addr != self.me
            })
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// Up members that have not answered us since they came up, in order.
    pub fn unconfirmed(&self) -> impl Iterator<Item = &NodeAddr> {
        self.table
            .iter()
            .filter(|(_, row)| row.status.is_up() && row.contact != Contact::Confirmed)
            .map(|(addr, _)| addr)
    }

    /// How many rows the table holds, tombstones and ourselves included.
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// Every row, tombstones included.
    pub fn table(&self) -> Vec<MemberState> {
        self.table
            .iter()
            .map(|(addr, row)| MemberState {
                addr: addr.clone(),
                incarnation: row.incarnation,
                status: row.status,
                weight: row.weight,
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
            weight: 1,
        }
    }

    #[test]
    fn a_weight_travels_with_its_row_and_survives_suspicion_and_refutation() {
        let mut view = Membership::new(addr(1), 10);
        view.set_my_weight(3);
        assert_eq!(view.my_state().weight, 3);
        let heavy = MemberState {
            weight: 2,
            ..state(2, 5, Status::Alive)
        };
        view.apply(heavy);
        view.confirm(&addr(2));
        let weighted: Vec<(NodeAddr, u32)> =
            view.alive_weighted().map(|(a, w)| (a.clone(), w)).collect();
        assert_eq!(weighted, vec![(addr(1), 3), (addr(2), 2)]);
        // Someone's suspicion keeps the member's weight; so does our
        // refutation of news about us that carries another weight.
        view.suspect(&addr(2));
        assert_eq!(view.state(&addr(2)).unwrap().weight, 2);
        let forged = MemberState {
            weight: 1,
            ..state(1, 11, Status::Dead)
        };
        assert!(matches!(view.apply(forged), Change::Refuted(_)));
        assert_eq!(view.my_state().weight, 3);
        // Same incarnation and status, another weight: not news.
        let same = MemberState {
            weight: 7,
            ..state(2, 5, Status::Suspect)
        };
        assert_eq!(view.apply(same), Change::None);
        assert_eq!(view.state(&addr(2)).unwrap().weight, 2);
        // A restart (new incarnation) may bring a new weight.
        let restarted = MemberState {
            weight: 4,
            ..state(2, 6, Status::Alive)
        };
        view.apply(restarted);
        assert_eq!(view.state(&addr(2)).unwrap().weight, 4);
        // Our own weight is clamped to the bounds.
        view.set_my_weight(0);
        assert_eq!(view.my_state().weight, 1);
        view.set_my_weight(1000);
        assert_eq!(view.my_state().weight, crate::config::MAX_WEIGHT);
    }

    #[test]
    fn a_new_member_is_added_and_reported() {
        let mut view = Membership::new(addr(1), 10);
        let update = state(2, 5, Status::Alive);
        assert_eq!(view.apply(update.clone()), Change::Updated(update));
        assert_eq!(view.up_peers(), vec![addr(2)]);
        assert!(view.confirm(&addr(2)));
        assert_eq!(view.peers(), vec![addr(2)]);
    }

    #[test]
    fn a_member_serves_only_once_it_answered_us_itself() {
        let mut view = Membership::new(addr(1), 10);
        view.apply(state(2, 5, Status::Alive));
        // On someone's word only: probed, but no share of the ring, no vote.
        assert_eq!(view.contact(&addr(2)), Some(Contact::Unconfirmed));
        assert_eq!(view.up_peers(), vec![addr(2)]);
        assert!(view.peers().is_empty());
        assert!(view.confirmed_peers().is_empty());
        assert_eq!(view.known(), 1);
        assert_eq!(
            view.unconfirmed().cloned().collect::<Vec<_>>(),
            vec![addr(2)]
        );
        // It answered: it serves and counts.
        assert!(view.confirm(&addr(2)));
        assert!(!view.confirm(&addr(2)), "once is enough");
        assert_eq!(view.peers(), vec![addr(2)]);
        assert_eq!(view.known(), 2);
        assert_eq!(view.unconfirmed().count(), 0);
        // Dead, it still counts (it may come back with its data) ...
        view.declare_dead(&addr(2));
        assert_eq!(view.known(), 2);
        // ... and back up on someone's word, it counts but must answer again.
        view.apply(state(2, 6, Status::Alive));
        assert_eq!(view.contact(&addr(2)), Some(Contact::Lapsed));
        assert!(view.peers().is_empty());
        assert_eq!(view.known(), 2);
        assert!(view.confirm(&addr(2)));
        assert_eq!(view.peers(), vec![addr(2)]);
        // A fake that never answers and dies does not count either.
        view.apply(state(3, 5, Status::Alive));
        view.declare_dead(&addr(3));
        assert_eq!(view.known(), 2);
        // Suspicion and refutation keep the contact.
        view.suspect(&addr(2));
        view.apply(state(2, 7, Status::Alive));
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
        view.confirm(&addr(2));
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
        for i in 2..=4 {
            view.confirm(&addr(i));
        }
        assert!(matches!(view.suspect(&addr(2)), Change::Updated(_)));
        view.apply(state(3, 5, Status::Leaving));
        assert_eq!(view.peers(), vec![addr(2), addr(4)]);
        assert_eq!(view.up_peers(), vec![addr(2), addr(3), addr(4)]);
        assert_eq!(view.alive().count(), 3);
    }

    #[test]
    fn an_implausible_incarnation_is_refused_and_never_wraps() {
        let wall = 1_700_000_000_000; // 2023, in milliseconds
        let mut view = Membership::new(addr(1), wall);
        let ceiling = wall + INCARNATION_HORIZON;
        assert_eq!(view.ceiling(), ceiling);
        // About ourselves: refused, not refuted at i64::MAX + 1.
        assert_eq!(view.apply(state(1, i64::MAX, Status::Dead)), Change::None);
        assert_eq!(
            view.apply(state(1, ceiling + 1, Status::Dead)),
            Change::None
        );
        assert_eq!(view.my_state(), state(1, wall, Status::Alive));
        // About someone else: refused too, so it cannot kill them.
        view.apply(state(2, wall, Status::Alive));
        for forged in [i64::MAX, MAX_INCARNATION, ceiling + 1] {
            assert_eq!(view.apply(state(2, forged, Status::Dead)), Change::None);
            assert_eq!(view.status(&addr(2)), Some(Status::Alive));
        }
        // At the ceiling: refuted one above it.
        assert_eq!(
            view.apply(state(1, ceiling, Status::Dead)),
            Change::Refuted(state(1, ceiling + 1, Status::Alive))
        );
        // A legacy re-admission saturates too.
        let mut other = Membership::new(addr(1), 1);
        other.set_wall(MAX_INCARNATION);
        other.apply(state(2, MAX_INCARNATION, Status::Dead));
        assert_eq!(other.admit_legacy(&addr(2)), Change::None);
        assert_eq!(other.ceiling(), MAX_INCARNATION);
    }

    #[test]
    fn a_member_killed_at_the_ceiling_gets_back_in_a_millisecond_later() {
        let wall = 1_700_000_000_000;
        let ceiling = wall + INCARNATION_HORIZON;
        // A holds B; someone forges B's death at the highest incarnation A takes.
        let mut a = Membership::new(addr(1), wall);
        let mut b = Membership::new(addr(2), wall);
        a.apply(b.my_state());
        a.confirm(&addr(2));
        let forged = state(2, ceiling, Status::Dead);
        assert!(matches!(a.apply(forged.clone()), Change::Updated(_)));
        assert!(a.peers().is_empty());
        // B hears of it and refutes, one above A's ceiling ...
        let Change::Refuted(refutation) = b.apply(forged) else {
            panic!("B refutes");
        };
        assert_eq!(refutation.incarnation, ceiling + 1);
        assert_eq!(a.apply(refutation.clone()), Change::None);
        // ... which A takes once its clock moved on a millisecond.
        a.set_wall(wall + 1);
        assert!(matches!(a.apply(refutation), Change::Updated(_)));
        assert_eq!(a.status(&addr(2)), Some(Status::Alive));
        assert!(a.confirm(&addr(2)));
        assert_eq!(a.peers(), vec![addr(2)]);
    }

    #[test]
    fn a_full_table_ignores_news_of_new_members() {
        let mut view = Membership::new(addr(1), 10);
        for i in 0..MAX_ROWS + 10 {
            let fake = NodeAddr::new(format!("10.{}.{}.1", i / 256, i % 256), 1);
            view.apply(MemberState {
                addr: fake,
                incarnation: 1,
                status: Status::Dead,
                weight: 1,
            });
        }
        assert_eq!(view.size(), MAX_ROWS);
        // Members already known still change.
        assert!(matches!(
            view.apply(state(1, 11, Status::Dead)),
            Change::Refuted(_)
        ));
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
        for i in 2..=5 {
            forward.confirm(&addr(i));
        }
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
