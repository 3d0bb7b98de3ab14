//! The simulator's clock: time moves only when the simulation says so.
//! Timers ([`Clock::sleep`]) wake in deadline order (ties in the order they
//! were armed) when [`SimClock::advance_to`] passes them, so the same seed
//! always fires the same timers at the same step.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shardline_engine::runtime::clock::{Clock, Sleep};

#[derive(Debug, Default)]
struct State {
    now_ms: Cell<i64>,
    timers: RefCell<BTreeMap<(i64, u64), Waker>>,
    next_seq: Cell<u64>,
}

/// The clock; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    state: Rc<State>,
}

impl SimClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        let clock = SimClock::default();
        clock.state.now_ms.set(start_ms);
        clock
    }

    /// Moves time forward to `to_ms` and wakes every timer due by then.
    pub fn advance_to(&self, to_ms: i64) {
        assert!(to_ms >= self.state.now_ms.get(), "simulated time never goes back");
        self.state.now_ms.set(to_ms);
        let due: Vec<Waker> = {
            let mut timers = self.state.timers.borrow_mut();
            let later = timers.split_off(&(to_ms + 1, 0));
            std::mem::replace(&mut *timers, later).into_values().collect()
        };
        for waker in due {
            waker.wake();
        }
    }

    /// Forgets every armed timer (a crash: their tasks are gone).
    pub fn clear_timers(&self) {
        self.state.timers.borrow_mut().clear();
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.state.now_ms.get()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline_ms = self.state.now_ms.get().saturating_add(duration.as_millis() as i64);
        Box::pin(SimSleep { state: self.state.clone(), deadline_ms, key: None })
    }
}

struct SimSleep {
    state: Rc<State>,
    deadline_ms: i64,
    key: Option<(i64, u64)>,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.now_ms.get() >= self.deadline_ms {
            if let Some(key) = self.key.take() {
                self.state.timers.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let seq = self.state.next_seq.get();
                self.state.next_seq.set(seq + 1);
                let key = (self.deadline_ms, seq);
                self.key = Some(key);
                key
            }
        };
        self.state.timers.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Ok(mut timers) = self.state.timers.try_borrow_mut() {
                timers.remove(&key);
            }
        }
    }
}
