//! The node-wide budget for bytes in flight: requests being read and replies
//! waiting to be written, over all connections at once.
//!
//! Without it, memory scales with connections × the largest message: 40 slow
//! 64 MiB `store`s held 2.8 GB, and the defaults allow 1024 × 64 MiB. With it,
//! a connection that wants to buffer more than its small free allowance
//! ([`FREE_PER_CONNECTION`]) first takes that many bytes from the budget, and
//! waits while there are none: it stops reading, so TCP pushes back on its
//! sender. Waiters are served first come, first served (a tokio `Semaphore`),
//! so a large request is not starved by a stream of small ones.
//!
//! A reply to a read of a value the node holds is sized before it is made
//! (the store tells a value's length without copying it), so the room for
//! the node's copy and its encoding is *reserved* like a request's, waiting
//! its turn. Any other reply's size is known only once it exists (a value
//! gathered from other replicas, a `peek`, a `reconcile`), so it is
//! *charged* (taken at once, going into debt when the budget is short), and
//! while the budget is in debt no connection starts making a reply that can
//! carry values ([`Budget::no_debt`]). The memory above the budget is
//! therefore at most the charged replies being produced at the moment the
//! budget ran out. Debt is repaid first from every release.
//!
//! Bytes are counted in KiB units (a semaphore hands out at most `u32`
//! permits at once) and rounded up.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

/// Bytes each connection may buffer without touching the budget: its first
/// read buffer and a small reply need none, so pings and small calls never
/// wait on it. At the default cap of 1024 connections this leaves 64 MiB
/// outside the budget.
pub const FREE_PER_CONNECTION: usize = 64 * 1024;

/// Bytes per permit.
const UNIT: usize = 1024;

/// Bytes in flight on the whole node, shared by its connections.
#[derive(Debug)]
pub struct Budget {
    permits: Semaphore,
    /// Units in all.
    total: usize,
    /// Units charged beyond what was free; repaid before permits go back.
    debt: Mutex<usize>,
    /// Woken whenever the debt is repaid in full.
    repaid: Notify,
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        // One acquisition takes at most u32::MAX permits: 4 TiB of KiB units.
        let total = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize);
        Budget {
            permits: Semaphore::new(total),
            total,
            debt: Mutex::new(0),
            repaid: Notify::new(),
        }
    }

    /// Takes `units`, waiting while they are not free. Never more than the
    /// whole budget is waited for (a request larger than it proceeds alone).
    /// Cancel-safe: a wait dropped half-way gives back what it was assigned.
    async fn acquire(&self, units: usize) -> usize {
        let units = units.min(self.total);
        let count = u32::try_from(units).expect("the total fits in u32");
        self.permits
            .acquire_many(count)
            .await
            .expect("the budget's semaphore is never closed")
            .forget();
        units
    }

    /// Takes `units` at once: what is free, and the rest as debt.
    fn charge(&self, units: usize) {
        let mut debt = self.debt.lock().expect("budget lock");
        let mut left = units;
        while left > 0 {
            let free = self.permits.available_permits().min(left);
            if free == 0 {
                break;
            }
            let count = u32::try_from(free).expect("the total fits in u32");
            if let Ok(permits) = self.permits.try_acquire_many(count) {
                permits.forget();
                left -= free;
            }
        }
        *debt += left;
    }

    /// Gives back `units`, repaying any debt first.
    fn release(&self, units: usize) {
        let mut debt = self.debt.lock().expect("budget lock");
        let repay = units.min(*debt);
        *debt -= repay;
        let back = units - repay;
        if back > 0 {
            self.permits.add_permits(back);
        }
        if repay > 0 && *debt == 0 {
            self.repaid.notify_waiters();
        }
    }

    /// Resolves once the budget is not in debt.
    pub async fn no_debt(&self) {
        loop {
            let repaid = self.repaid.notified();
            tokio::pin!(repaid);
            repaid.as_mut().enable();
            if *self.debt.lock().expect("budget lock") == 0 {
                return;
            }
            repaid.await;
        }
    }

    /// Bytes free right now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

/// What one connection holds of the budget: enough for the bytes it has in
/// use beyond [`FREE_PER_CONNECTION`]. Given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Budget>,
    /// Units held.
    held: usize,
}

impl Share {
    /// A share of nothing yet.
    pub fn new(budget: Arc<Budget>) -> Self {
        Share { budget, held: 0 }
    }

    /// Units needed for `bytes` in use.
    fn units(bytes: usize) -> usize {
        bytes.saturating_sub(FREE_PER_CONNECTION).div_ceil(UNIT)
    }

    /// Holds enough for `bytes` in use, waiting until the budget has it.
    /// Cancel-safe: a cancelled wait takes nothing.
    pub async fn reserve(&mut self, bytes: usize) {
        let want = Self::units(bytes).min(self.budget.total);
        if want > self.held {
            self.held += self.budget.acquire(want - self.held).await;
        }
    }

    /// Holds enough for `bytes` in use at once, in debt if need be.
    pub fn charge(&mut self, bytes: usize) {
        let want = Self::units(bytes);
        if want > self.held {
            self.budget.charge(want - self.held);
            self.held = want;
        }
    }

    /// Gives back what is held beyond `bytes` in use.
    pub fn settle(&mut self, bytes: usize) {
        let want = Self::units(bytes);
        if want < self.held {
            self.budget.release(self.held - want);
            self.held = want;
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held * UNIT
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.settle(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn a_share_within_the_free_allowance_takes_nothing() {
        let budget = Arc::new(Budget::new(MIB));
        let mut share = Share::new(budget.clone());
        share.reserve(FREE_PER_CONNECTION).await;
        share.charge(FREE_PER_CONNECTION);
        assert_eq!(share.held(), 0);
        assert_eq!(budget.available(), MIB);
    }

    #[tokio::test]
    async fn a_reserve_waits_until_another_share_gives_bytes_back() {
        let budget = Arc::new(Budget::new(MIB));
        let mut first = Share::new(budget.clone());
        first.reserve(FREE_PER_CONNECTION + MIB).await;
        assert_eq!(budget.available(), 0);
        let mut second = Share::new(budget.clone());
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            second.reserve(FREE_PER_CONNECTION + 1),
        )
        .await;
        assert!(waiting.is_err(), "no byte is free");
        first.settle(FREE_PER_CONNECTION + MIB / 2);
        second.reserve(FREE_PER_CONNECTION + MIB / 2).await;
        assert_eq!(budget.available(), 0);
        drop(first);
        drop(second);
        assert_eq!(budget.available(), MIB);
    }

    #[tokio::test]
    async fn a_reserve_larger_than_the_budget_proceeds_alone() {
        let budget = Arc::new(Budget::new(MIB));
        let mut share = Share::new(budget.clone());
        share.reserve(10 * MIB).await;
        assert_eq!(share.held(), MIB);
    }

    #[tokio::test]
    async fn a_charge_beyond_the_budget_is_debt_that_holds_new_work_until_repaid() {
        let budget = Arc::new(Budget::new(MIB));
        let mut reply = Share::new(budget.clone());
        reply.charge(FREE_PER_CONNECTION + 3 * MIB);
        assert_eq!(budget.available(), 0);
        let held = tokio::time::timeout(Duration::from_millis(50), budget.no_debt()).await;
        assert!(held.is_err(), "in debt");
        // Repaying part of the debt frees nothing yet.
        reply.settle(FREE_PER_CONNECTION + 2 * MIB);
        assert_eq!(budget.available(), 0);
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.no_debt().await }
        });
        drop(reply);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken once the debt is repaid")
            .unwrap();
        assert_eq!(budget.available(), MIB);
    }
}
