//! The simulator's executor: one thread, tasks polled in a first-in,
//! first-out order that depends on nothing but the order of spawns and
//! wake-ups, so a seed replays exactly. It stands in for the shard's compio
//! runtime: installed as the thread's spawner, it also runs the tasks the
//! engine and the coordinators start in the background (log writers,
//! group-commit syncs, metadata writes). Nothing here does real I/O.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use shardline_engine::runtime::spawn::{set_spawner, LocalTask, Spawner};

/// A task's identity.
pub type TaskId = u64;

struct TaskWaker {
    id: TaskId,
    ready: Arc<Mutex<VecDeque<TaskId>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.push_back(self.id);
        }
    }
}

struct Inner {
    tasks: RefCell<BTreeMap<TaskId, LocalTask>>,
    ready: Arc<Mutex<VecDeque<TaskId>>>,
    next_id: Cell<TaskId>,
}

/// The executor. Cloning shares it.
#[derive(Clone)]
pub struct Executor {
    inner: Rc<Inner>,
}

/// More polls than a step may take: something spins without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Livelock {
    /// Polls done before giving up.
    pub polls: u64,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with no tasks.
    pub fn new() -> Self {
        Executor {
            inner: Rc::new(Inner {
                tasks: RefCell::new(BTreeMap::new()),
                ready: Arc::new(Mutex::new(VecDeque::new())),
                next_id: Cell::new(1),
            }),
        }
    }

    /// Makes this executor the thread's spawner (engine and services spawn
    /// their background tasks here). Removed by [`uninstall`](Self::uninstall).
    pub fn install(&self) {
        let executor = self.clone();
        let spawner: Spawner = Rc::new(move |task: LocalTask| {
            executor.spawn(task);
        });
        set_spawner(Some(spawner));
    }

    /// Stops being the thread's spawner.
    pub fn uninstall(&self) {
        set_spawner(None);
    }

    /// Adds a task; it first runs at the next [`run_until_stalled`](Self::run_until_stalled).
    pub fn spawn(&self, task: impl Future<Output = ()> + 'static) -> TaskId {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.inner.tasks.borrow_mut().insert(id, Box::pin(task));
        self.push_ready(id);
        id
    }

    fn push_ready(&self, id: TaskId) {
        if let Ok(mut ready) = self.inner.ready.lock() {
            ready.push_back(id);
        }
    }

    fn pop_ready(&self) -> Option<TaskId> {
        self.inner.ready.lock().ok().and_then(|mut ready| ready.pop_front())
    }

    /// Polls ready tasks until none is ready, at most `max_polls` times.
    /// Returns the polls done.
    pub fn run_until_stalled(&self, max_polls: u64) -> Result<u64, Livelock> {
        let mut polls = 0u64;
        while let Some(id) = self.pop_ready() {
            // Taken out while polled: the task may spawn others.
            let Some(mut task) = self.inner.tasks.borrow_mut().remove(&id) else { continue };
            polls += 1;
            if polls > max_polls {
                self.inner.tasks.borrow_mut().insert(id, task);
                return Err(Livelock { polls });
            }
            let waker = Waker::from(Arc::new(TaskWaker { id, ready: self.inner.ready.clone() }));
            let mut context = Context::from_waker(&waker);
            if task.as_mut().poll(&mut context).is_pending() {
                self.inner.tasks.borrow_mut().insert(id, task);
            }
        }
        Ok(polls)
    }

    /// Drops task `id` where it stands (a client that went away): its
    /// future is cancelled at its current await.
    pub fn cancel(&self, id: TaskId) -> bool {
        let task = self.inner.tasks.borrow_mut().remove(&id);
        task.is_some()
    }

    /// Drops every task (a crash: nothing in memory survives).
    pub fn clear(&self) {
        let tasks = std::mem::take(&mut *self.inner.tasks.borrow_mut());
        drop(tasks);
        if let Ok(mut ready) = self.inner.ready.lock() {
            ready.clear();
        }
    }

    /// Runs `work` to completion as a task, polling at most `max_polls`
    /// times; `None` when it could not finish without time passing.
    pub fn block_on<T: 'static>(&self, work: impl Future<Output = T> + 'static, max_polls: u64) -> Option<T> {
        let slot: Rc<RefCell<Option<T>>> = Rc::new(RefCell::new(None));
        let out = slot.clone();
        self.spawn(async move {
            let value = work.await;
            *out.borrow_mut() = Some(value);
        });
        let _ = self.run_until_stalled(max_polls);
        let value = slot.borrow_mut().take();
        value
    }
}
