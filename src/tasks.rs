//! `Tasks`: every task a node runs (workers, replication senders, the
//! requests it serves in the simulation) is spawned through one handle, so
//! the node can be stopped as a whole, and, in the simulation, frozen
//! (SIGSTOP) and thawed (SIGCONT) or killed (`kill -9`) at any await point.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::watch;

/// A switch that freezes every task spawned under it.
#[derive(Default)]
pub struct Gate {
    paused: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    /// Freezes the tasks: they are not polled again until [`Gate::resume`],
    /// as a stopped process's threads are not scheduled. Their timers run on,
    /// so on resume they find the time that passed, as a process does.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Lets the frozen tasks run again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        for waker in self.waiting.lock().drain(..) {
            waker.wake();
        }
    }

    /// Whether the tasks are frozen.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// A future that is only polled while its gate is open.
struct Gated<F> {
    gate: Arc<Gate>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.gate.is_paused() {
            let mut waiting = self.gate.waiting.lock();
            // Checked again under the lock, so a resume in between is not missed.
            if self.gate.is_paused() {
                if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    waiting.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}

/// Spawns a node's tasks; clones share the same stop switch and gate.
#[derive(Clone)]
pub struct Tasks {
    killed: Arc<watch::Sender<bool>>,
    gate: Option<Arc<Gate>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new(None)
    }
}

impl Tasks {
    /// Tasks that `gate` (if any) can freeze.
    pub fn new(gate: Option<Arc<Gate>>) -> Self {
        Tasks {
            killed: Arc::new(watch::channel(false).0),
            gate,
        }
    }

    /// Runs `work` on the current tokio runtime until it ends or [`Tasks::kill`].
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut killed = self.killed.subscribe();
        let work = async move {
            tokio::select! {
                biased;
                _ = killed.wait_for(|k| *k) => {}
                () = work => {}
            }
        };
        match &self.gate {
            Some(gate) => drop(tokio::spawn(Gated {
                gate: gate.clone(),
                inner: Box::pin(work),
            })),
            None => drop(tokio::spawn(work)),
        }
    }

    /// Ends every task at its next await point (and refuses new ones: they
    /// end at once).
    pub fn kill(&self) {
        self.killed.send_replace(true);
    }

    /// Whether [`Tasks::kill`] was called.
    pub fn is_killed(&self) -> bool {
        *self.killed.borrow()
    }
}
