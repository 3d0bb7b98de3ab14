//! The shard pool: one compio executor per core on a pinned thread, each
//! owning its own state `S` (its partitions, its coordinators, its batch
//! cache), reachable from the others through the [`Mesh`]. A shard's state
//! is `Rc` and never leaves its thread.

use std::collections::HashSet;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::runtime::mesh::{register_local_shard, Mesh, ShardTask, MESH_QUEUE_DEPTH};

/// The running shards.
pub struct ShardPool<S> {
    mesh: Mesh<S>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<S: 'static> ShardPool<S> {
    /// Starts `count` shards. Shard `i` runs on a thread pinned to core
    /// `i % cores`, builds its state with `make_state(i)`, spawns
    /// `main(i, state, mesh)` and serves its inbox until [`Mesh::close`].
    pub fn start<MakeState, Main, MainFut>(count: usize, make_state: MakeState, main: Main) -> std::io::Result<Self>
    where
        MakeState: Fn(usize) -> S + Send + Sync + 'static,
        Main: Fn(usize, Rc<S>, Mesh<S>) -> MainFut + Send + Sync + 'static,
        MainFut: Future<Output = ()> + 'static,
    {
        assert!(count > 0);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| async_channel::bounded::<ShardTask<S>>(MESH_QUEUE_DEPTH)).unzip();
        let mesh = Mesh { inboxes: Arc::new(senders) };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let make_state = Arc::new(make_state);
        let main = Arc::new(main);
        let mut threads = Vec::with_capacity(count);
        for (shard, inbox) in receivers.into_iter().enumerate() {
            let mesh = mesh.clone();
            let make_state = make_state.clone();
            let main = main.clone();
            let thread = std::thread::Builder::new().name(format!("shard-{shard}")).spawn(move || {
                let runtime = compio::runtime::RuntimeBuilder::new()
                    .thread_affinity(HashSet::from([shard % cores]))
                    .build()
                    .expect("build shard runtime");
                runtime.block_on(async move {
                    let state = Rc::new(make_state(shard));
                    register_local_shard(shard, state.clone());
                    compio::runtime::spawn(main(shard, state.clone(), mesh)).detach();
                    while let Ok(task) = inbox.recv().await {
                        compio::runtime::spawn(task(state.clone())).detach();
                    }
                });
            })?;
            threads.push(thread);
        }
        Ok(Self { mesh, threads })
    }

    /// The mesh to reach every shard.
    pub fn mesh(&self) -> &Mesh<S> {
        &self.mesh
    }

    /// Waits until every shard has stopped (after [`Mesh::close`]).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn calls_run_on_the_owning_shard() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let pool = ShardPool::start(
            2,
            |shard| (shard, Cell::new(0u64)),
            move |shard, _state, mesh: Mesh<(usize, Cell<u64>)>| {
                let done = done_tx.clone();
                async move {
                    if shard == 0 {
                        let mut seen = Vec::new();
                        for target in [1usize, 0, 1] {
                            let got = mesh
                                .call(target, |state| async move {
                                    state.1.set(state.1.get() + 1);
                                    (state.0, state.1.get(), std::thread::current().name().map(str::to_string))
                                })
                                .await
                                .expect("call");
                            seen.push(got);
                        }
                        done.send(seen).expect("report");
                        mesh.close();
                    }
                }
            },
        )
        .expect("start");
        let seen = done_rx.recv().expect("result");
        assert_eq!(seen[0], (1, 1, Some("shard-1".into())));
        assert_eq!(seen[1], (0, 1, Some("shard-0".into())));
        assert_eq!(seen[2], (1, 2, Some("shard-1".into())));
        pool.join();
    }
}
