//! The background work of every shard, each loop bounded by the shard's
//! shutdown flag: loading the coordinators of its internal partitions at
//! startup, retention, producer snapshots, giving back what idle partitions hold, and the group and transaction
//! coordinators' timers (woken at the deadline the state machines armed,
//! at most a second apart).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shardline_engine::runtime::clock::timeout;
use shardline_engine::runtime::mesh::Mesh;
use shardline_engine::runtime::spawn::spawn_local;

use crate::coordinators::CoordinatorLog;
use crate::groups::OFFSETS_TOPIC;
use crate::route::MeshMarkers;
use crate::shard::{BrokerShared, ShardState};
use crate::txn::TXN_TOPIC;

/// Longest sleep of a coordinator timer loop (so shutdown is noticed).
const TIMER_MAX_SLEEP_MS: i64 = 1000;

/// Starts this shard's background loops.
pub fn spawn_timers(state: &Rc<ShardState>, shared: &Arc<BrokerShared>, mesh: &Mesh<ShardState>) {
    spawn_coordinator_loads(state.clone());
    spawn_retention(state.clone());
    spawn_producer_snapshots(state.clone());
    spawn_idle_release(state.clone());
    spawn_group_timers(state.clone());
    spawn_txn_timers(state.clone(), MeshMarkers { shared: shared.clone(), mesh: mesh.clone() });
}

/// Loads the group and transaction coordinators of every internal
/// partition this shard holds, in the background, as the broker starts: a
/// transaction a crash left open times out, and one left between its
/// decision and its markers completes, without waiting for a client to
/// touch its coordinator. Requests meanwhile get
/// COORDINATOR_LOAD_IN_PROGRESS and retry.
fn spawn_coordinator_loads(state: Rc<ShardState>) {
    spawn_local(async move {
        for ((topic, index), _) in state.partitions.all() {
            if state.shutting_down.get() {
                return;
            }
            let at = CoordinatorLog::of(&state.partitions, &topic, index);
            let loaded = match topic.as_str() {
                OFFSETS_TOPIC => state.groups.inspect(at, |_| ()).await,
                TXN_TOPIC => state.txns.list(at).await.map(|_| ()),
                _ => continue,
            };
            if let Err(error) = loaded {
                tracing::warn!(topic, index, ?error, "loading a coordinator at startup");
            }
        }
    });
}

fn spawn_retention(state: Rc<ShardState>) {
    let interval = Duration::from_millis(state.config.retention_check_interval_ms.max(100));
    spawn_local(async move {
        while !state.shutting_down.get() {
            state.clock.sleep(interval).await;
            if state.shutting_down.get() {
                return;
            }
            state.partitions.apply_retention().await;
        }
    });
}

/// What idle partitions give back, every `partition_idle_ms`: the segment
/// descriptors no read or write used since the previous sweep (so one
/// closes after one to two intervals), and the disk reserved past the data
/// and the write and index descriptors of partitions with no append since
/// then.
fn spawn_idle_release(state: Rc<ShardState>) {
    let interval = Duration::from_millis(state.config.partition_idle_ms.max(1));
    spawn_local(async move {
        while !state.shutting_down.get() {
            state.clock.sleep(interval).await;
            if state.shutting_down.get() {
                return;
            }
            state.partitions.release_idle_partitions();
            let closed = state.partitions.disk().close_idle();
            if closed > 0 {
                tracing::debug!(shard = state.shard, closed, "closed idle segment files");
            }
        }
    });
}

fn spawn_producer_snapshots(state: Rc<ShardState>) {
    let interval = Duration::from_millis(state.config.producer_snapshot_interval_ms);
    spawn_local(async move {
        while !state.shutting_down.get() {
            state.clock.sleep(interval).await;
            if state.shutting_down.get() {
                return;
            }
            let expire_before = state.clock.now_ms() - state.config.producer_id_expiration_ms;
            state.partitions.snapshot_producers(expire_before).await;
        }
    });
}

/// How long to sleep until `deadline_ms`, at most a second.
fn sleep_until(now_ms: i64, deadline_ms: i64) -> Duration {
    Duration::from_millis((deadline_ms - now_ms).clamp(1, TIMER_MAX_SLEEP_MS) as u64)
}

fn spawn_group_timers(state: Rc<ShardState>) {
    spawn_local(async move {
        while !state.shutting_down.get() {
            let wait = sleep_until(state.clock.now_ms(), state.groups.next_deadline_ms());
            // An earlier deadline armed meanwhile cuts the sleep short.
            let _ = timeout(&*state.clock, wait, state.groups.rearmed()).await;
            if state.shutting_down.get() {
                return;
            }
            if state.clock.now_ms() >= state.groups.next_deadline_ms() {
                state.groups.tick().await;
            }
        }
    });
}

fn spawn_txn_timers(state: Rc<ShardState>, markers: MeshMarkers) {
    spawn_local(async move {
        while !state.shutting_down.get() {
            let wait = sleep_until(state.clock.now_ms(), state.txns.next_deadline_ms());
            state.clock.sleep(wait).await;
            if state.shutting_down.get() {
                return;
            }
            if state.clock.now_ms() >= state.txns.next_deadline_ms() {
                state.txns.tick(&markers).await;
            }
        }
    });
}
