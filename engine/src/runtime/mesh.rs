//! The cross-core mesh: bounded channels through which any shard runs a
//! closure on the shard that owns a partition (or a coordinator) and gets
//! its result. A call to the caller's own shard runs directly, without a
//! channel hop or a task of its own; callers that touch many partitions
//! group them per shard first, so one message carries all of a shard's
//! work. Nothing but the channel ends is shared between shards.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;

thread_local! {
    /// The shard this thread runs (its index and its state), set once when
    /// the shard starts.
    static LOCAL_SHARD: RefCell<Option<(usize, Rc<dyn Any>)>> = const { RefCell::new(None) };
}

/// Marks this thread as shard `shard` with `state` (its own calls then run
/// directly).
pub(crate) fn register_local_shard<S: 'static>(shard: usize, state: Rc<S>) {
    LOCAL_SHARD.with(|slot| *slot.borrow_mut() = Some((shard, state as Rc<dyn Any>)));
}

/// The state of shard `shard` if this thread is that shard.
fn local_state<S: 'static>(shard: usize) -> Option<Rc<S>> {
    LOCAL_SHARD.with(|slot| match &*slot.borrow() {
        Some((index, state)) if *index == shard => state.clone().downcast::<S>().ok(),
        _ => None,
    })
}

/// A closure shipped to a shard; it runs there with the shard's state.
pub(crate) type ShardTask<S> = Box<dyn FnOnce(Rc<S>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Messages a shard's inbox holds at most before senders wait.
pub const MESH_QUEUE_DEPTH: usize = 1024;

/// The mesh failed to deliver (the target shard stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// Handles to every shard's inbox. Cheap to clone; usable from any shard.
pub struct Mesh<S> {
    pub(crate) inboxes: Arc<Vec<async_channel::Sender<ShardTask<S>>>>,
}

impl<S> Clone for Mesh<S> {
    fn clone(&self) -> Self {
        Self { inboxes: self.inboxes.clone() }
    }
}

impl<S: 'static> Mesh<S> {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Runs `work` on shard `shard` with its state and returns its result.
    /// Waits (without blocking the core) while that shard's inbox is full.
    pub async fn call<R, F, Fut>(&self, shard: usize, work: F) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let inbox = self.inboxes.get(shard).ok_or(ShardGone(shard))?;
        if let Some(state) = local_state::<S>(shard) {
            // Same shard: no hop, no task; the caller awaits the work itself.
            return Ok(work(state).await);
        }
        let (reply, result) = oneshot::channel();
        let task: ShardTask<S> = Box::new(move |state| {
            Box::pin(async move {
                let _ = reply.send(work(state).await);
            })
        });
        inbox.send(task).await.map_err(|_| ShardGone(shard))?;
        result.await.map_err(|_| ShardGone(shard))
    }

    /// Stops every shard's inbox loop.
    pub fn close(&self) {
        for inbox in self.inboxes.iter() {
            inbox.close();
        }
    }
}
