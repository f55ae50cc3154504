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
use tokio::sync::Notify;

/// A value that tasks can wait on until it satisfies them: `tokio::sync::watch`
/// without its randomness (watch picks one of eight wait lists at random, so
/// waiters wake in a different order each run and a simulated seed would not
/// replay). Waiters wake in the order they started waiting.
#[derive(Debug, Default)]
pub struct Signal<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Signal<T> {
    /// A signal holding `value`.
    pub fn new(value: T) -> Self {
        Signal {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.value.lock().clone()
    }

    /// Changes the value with `change` and wakes every waiter.
    pub fn modify(&self, change: impl FnOnce(&mut T)) {
        change(&mut self.value.lock());
        self.changed.notify_waiters();
    }

    /// Sets the value and wakes every waiter.
    pub fn set(&self, value: T) {
        self.modify(|v| *v = value);
    }

    /// Waits until `done` holds for the value; returns that value.
    pub async fn wait_for(&self, mut done: impl FnMut(&T) -> bool) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between is not missed.
            notified.as_mut().enable();
            {
                let value = self.value.lock();
                if done(&value) {
                    return value.clone();
                }
            }
            notified.await;
        }
    }
}

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
    killed: Arc<Signal<bool>>,
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
            killed: Arc::new(Signal::new(false)),
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
        let killed = self.killed.clone();
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
        self.killed.set(true);
    }

    /// Whether [`Tasks::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.killed.get()
    }
}
