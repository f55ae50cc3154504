//! The membership view: who is in the ring, as a pure state machine.
//!
//! Each member has an incarnation (its start time, raised when it refutes news of
//! its own death) and a status. Updates from gossip, joins and failure reports are
//! merged with one rule, so every node that has seen the same updates holds the
//! same table whatever order they came in:
//! a newer incarnation wins; within one incarnation `Left` beats `Dead` beats
//! `Alive`. Departed members stay as tombstones so that stale news cannot bring
//! them back; a restarted node comes back with a newer incarnation.

use std::collections::BTreeMap;

use crate::addr::NodeAddr;

/// How a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Serving its share of the ring.
    Alive,
    /// Handing its keys over before it leaves: no longer routed or replicated
    /// to. Within one incarnation it beats `Alive` (the member's own word) and
    /// loses to `Dead` and `Left`.
    Leaving,
    /// Dropped after it could not be reached.
    Dead,
    /// Left on purpose after handing its keys over.
    Left,
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
    /// Nothing new.
    None,
    /// The table changed; spread the update.
    Updated(MemberState),
    /// Someone said we are gone while we are not: we took a newer incarnation.
    /// Spread our refutation.
    Refuted(MemberState),
}

/// A node's view of the ring's members.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeAddr,
    table: BTreeMap<NodeAddr, (i64, Status)>,
}

impl Membership {
    /// A view holding only ourselves, alive at `incarnation`.
    pub fn new(me: NodeAddr, incarnation: i64) -> Self {
        let mut table = BTreeMap::new();
        table.insert(me.clone(), (incarnation, Status::Alive));
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

    /// Merges one update.
    pub fn apply(&mut self, update: MemberState) -> Change {
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

    fn apply_about_me(&mut self, update: MemberState) -> Change {
        let (mine, my_status) = self.table[&self.me];
        if my_status != Status::Alive || update.status == Status::Alive {
            // We are leaving (our own word stands), or the news is that we live.
            return Change::None;
        }
        if update.incarnation < mine {
            return Change::None;
        }
        let refuted = update.incarnation + 1;
        self.table.insert(self.me.clone(), (refuted, Status::Alive));
        Change::Refuted(self.my_state())
    }

    /// Declares `addr` dead at the incarnation we know, if it is alive to us.
    pub fn declare_dead(&mut self, addr: &NodeAddr) -> Change {
        match self.state(addr) {
            Some(state) if state.status == Status::Alive && *addr != self.me => {
                self.apply(MemberState {
                    status: Status::Dead,
                    ..state
                })
            }
            _ => Change::None,
        }
    }

    /// Adds `addr` as alive on the word of the 2009 protocol, which carries no
    /// incarnation: a new member starts at 0, a departed one comes back one higher.
    pub fn admit_legacy(&mut self, addr: &NodeAddr) -> Change {
        let incarnation = match self.state(addr) {
            Some(state) if state.status == Status::Alive => return Change::None,
            Some(state) => state.incarnation + 1,
            None => 0,
        };
        self.apply(MemberState {
            addr: addr.clone(),
            incarnation,
            status: Status::Alive,
        })
    }

    /// Marks ourselves as leaving (handing our keys over); returns our row to
    /// spread.
    pub fn start_leaving(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        entry.1 = Status::Leaving;
        self.my_state()
    }

    /// Members that count toward a quorum's size: every row but those that
    /// left on purpose (a dead member may come back with its data).
    pub fn known(&self) -> usize {
        self.table
            .values()
            .filter(|(_, status)| *status != Status::Left)
            .count()
    }

    /// Marks ourselves as having left.
    pub fn leave(&mut self) -> MemberState {
        let entry = self.table.get_mut(&self.me).expect("own row");
        entry.1 = Status::Left;
        self.my_state()
    }

    /// Alive members, ourselves included, sorted.
    pub fn alive(&self) -> impl Iterator<Item = &NodeAddr> {
        self.table
            .iter()
            .filter(|(_, (_, status))| *status == Status::Alive)
            .map(|(addr, _)| addr)
    }

    /// Alive members other than ourselves.
    pub fn peers(&self) -> Vec<NodeAddr> {
        self.alive().filter(|a| **a != self.me).cloned().collect()
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
    fn a_leaving_node_does_not_refute() {
        let mut view = Membership::new(addr(1), 10);
        view.leave();
        assert_eq!(view.apply(state(1, 10, Status::Dead)), Change::None);
        assert_eq!(view.my_state().status, Status::Left);
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
}
