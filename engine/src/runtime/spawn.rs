//! Where background tasks run: on the executor of the calling thread. A
//! shard's thread runs a compio runtime, so by default a task goes to
//! `compio::runtime::spawn`; the deterministic simulator installs its own
//! executor for its thread with [`set_spawner`], so the same engine and
//! coordinator code runs there in a reproducible order. Tasks never cross
//! threads.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// A task handed to an executor.
pub type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// An executor that accepts tasks on this thread.
pub type Spawner = Rc<dyn Fn(LocalTask)>;

thread_local! {
    static SPAWNER: RefCell<Option<Spawner>> = const { RefCell::new(None) };
}

/// Runs `task` in the background on this thread's executor.
pub fn spawn_local(task: impl Future<Output = ()> + 'static) {
    let installed = SPAWNER.with(|spawner| spawner.borrow().clone());
    match installed {
        Some(spawner) => spawner(Box::pin(task)),
        None => compio::runtime::spawn(task).detach(),
    }
}

/// Installs (or, with `None`, removes) this thread's executor; returns the
/// previous one.
pub fn set_spawner(spawner: Option<Spawner>) -> Option<Spawner> {
    SPAWNER.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), spawner))
}

/// Lets the other tasks of this thread's executor run before going on: a
/// long loop in one request (thousands of partitions) calls it every so
/// often, so no single request stalls the shard.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
