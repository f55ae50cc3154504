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

tokio::task_local! {
    /// The name of the node whose task is running, where one was given (the
    /// simulation names its nodes, so one process's log tells them apart).
    static NODE: Arc<str>;
}

/// The name of the node whose task is running, if it has one.
pub fn current_node() -> Option<Arc<str>> {
    NODE.try_with(Arc::clone).ok()
}

/// Spawns a node's tasks; clones share the same stop switch and gate.
#[derive(Clone)]
pub struct Tasks {
    killed: Arc<watch::Sender<bool>>,
    gate: Option<Arc<Gate>>,
    name: Option<Arc<str>>,
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
            name: None,
        }
    }

    /// These tasks, named `name` for [`current_node`].
    pub fn named(self, name: &str) -> Self {
        Tasks {
            name: Some(name.into()),
            ..self
        }
    }

    /// Runs `work` on the current tokio runtime until it ends or [`Tasks::kill`].
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut killed = self.killed.subscribe();
        let name = self.name.clone();
        let work = async move {
            let work = async move {
                tokio::select! {
                    biased;
                    _ = killed.wait_for(|k| *k) => {}
                    () = work => {}
                }
            };
            match name {
                Some(name) => NODE.scope(name, work).await,
                None => work.await,
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
