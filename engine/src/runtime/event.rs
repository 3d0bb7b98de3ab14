//! A single-threaded broadcast event: tasks on one shard wait for "something
//! changed" and re-check their condition. Used by the partition log to wake
//! appenders (room in the tail), offset waiters (written, durable) and its
//! writer task. Never crosses cores.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LocalEvent {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    /// Wakes every task currently listening.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// A future that completes at the next [`notify_all`](Self::notify_all)
    /// after this call.
    pub fn listen(&self) -> Listen<'_> {
        Listen { event: self, generation: self.generation.get(), registered: false }
    }
}

/// Future returned by [`LocalEvent::listen`].
#[derive(Debug)]
pub struct Listen<'a> {
    event: &'a LocalEvent,
    generation: u64,
    registered: bool,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            return Poll::Ready(());
        }
        // Registered once per listen: a spurious re-poll adds at most one
        // extra (harmless) wake-up instead of an O(waiters) scan.
        if !self.registered {
            self.event.wakers.borrow_mut().push(cx.waker().clone());
            self.registered = true;
        }
        Poll::Pending
    }
}
