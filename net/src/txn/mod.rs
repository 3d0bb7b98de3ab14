//! Transactions: the coordinators of this shard's `__transaction_state`
//! partitions and the IO around their sans-IO state
//! ([`coordinator::TxnCoordinator`]). A transactional id lives on the shard
//! owning partition `hash(id) % 50` of `__transaction_state`. This module
//! loads a partition by replaying its records, persists metadata (acks=all)
//! before answering, writes commit and abort markers to every partition of
//! a transaction through the mesh (offsets partitions also apply or drop
//! their pending transactional offsets), completes transactions a crash
//! left half-way, and aborts transactions past their timeout.

pub mod coordinator;
pub mod records;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_engine::format::batch::BatchHeader;
use shardline_engine::format::records::for_each_key_value;
use shardline_engine::runtime::mesh::Mesh;

use crate::broker::BrokerShared;
use crate::groups::{wall_ms, OFFSETS_TOPIC};
use crate::partitions::ShardPartitions;
use coordinator::{Completion, TxnCoordinator, TxnMeta};

/// The internal topic holding transaction metadata.
pub const TXN_TOPIC: &str = "__transaction_state";

enum Slot {
    Loading,
    Ready(Rc<RefCell<TxnCoordinator>>),
}

/// This shard's transaction coordinators.
#[derive(Default)]
pub struct TxnShard {
    slots: RefCell<HashMap<i32, Slot>>,
    /// Transactional ids whose markers are being written.
    completing: RefCell<HashSet<String>>,
}

impl TxnShard {
    fn loaded(&self) -> Vec<(i32, Rc<RefCell<TxnCoordinator>>)> {
        self.slots
            .borrow()
            .iter()
            .filter_map(|(p, s)| match s {
                Slot::Ready(c) => Some((*p, c.clone())),
                Slot::Loading => None,
            })
            .collect()
    }
}

/// The coordinator of `partition`, loading it on first use.
pub async fn coordinator(
    state: &Rc<ShardPartitions>,
    partition: i32,
) -> Result<Rc<RefCell<TxnCoordinator>>, ResponseError> {
    match state.txns.slots.borrow().get(&partition) {
        Some(Slot::Ready(c)) => return Ok(c.clone()),
        Some(Slot::Loading) => return Err(ResponseError::CoordinatorLoadInProgress),
        None => {}
    }
    if state.get(TXN_TOPIC, partition).is_none() {
        return Err(ResponseError::NotCoordinator);
    }
    state.txns.slots.borrow_mut().insert(partition, Slot::Loading);
    match load(state, partition).await {
        Ok(c) => {
            let c = Rc::new(RefCell::new(c));
            state.txns.slots.borrow_mut().insert(partition, Slot::Ready(c.clone()));
            Ok(c)
        }
        Err(code) => {
            state.txns.slots.borrow_mut().remove(&partition);
            tracing::error!(partition, code, "loading transaction coordinator failed");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

async fn load(state: &Rc<ShardPartitions>, partition: i32) -> Result<TxnCoordinator, i16> {
    let mut coordinator = TxnCoordinator::default();
    let mut visit = |header: &BatchHeader, batch: &[u8]| {
        if header.is_control() {
            return Ok(());
        }
        for_each_key_value(batch, header, |kv| {
            if let Some(id) = kv.key.and_then(records::decode_key) {
                coordinator.replay(id, kv.value.and_then(records::decode_value));
            }
        })
        .map_err(|_| ResponseError::CorruptMessage.code())
    };
    state.for_each_batch(TXN_TOPIC, partition, &mut visit).await?;
    tracing::info!(partition, ids = coordinator.txns.len(), "loaded transaction coordinator");
    Ok(coordinator)
}

/// Persists `meta` for `transactional_id` (acks=all), then applies it.
pub async fn persist(
    state: &Rc<ShardPartitions>,
    partition: i32,
    coordinator: &Rc<RefCell<TxnCoordinator>>,
    transactional_id: &str,
    meta: TxnMeta,
) -> Result<(), ResponseError> {
    write(state, partition, coordinator, transactional_id, Some(meta)).await
}

/// Writes `meta` (None: a tombstone forgetting the id), then applies it.
async fn write(
    state: &Rc<ShardPartitions>,
    partition: i32,
    coordinator: &Rc<RefCell<TxnCoordinator>>,
    transactional_id: &str,
    meta: Option<TxnMeta>,
) -> Result<(), ResponseError> {
    let record = TestRecord {
        key: Some(records::encode_key(transactional_id)),
        value: meta.as_ref().map(records::encode_value),
        timestamp_delta: 0,
    };
    let bytes = BytesMut::from(&batch(wall_ms(), &[record])[..]);
    let outcome = state.produce(TXN_TOPIC, partition, bytes, -1, Duration::from_secs(30)).await;
    if outcome.error_code != 0 {
        tracing::warn!(transactional_id, code = outcome.error_code, "persisting transaction metadata failed");
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    coordinator.borrow_mut().replay(transactional_id.to_string(), meta);
    Ok(())
}

/// Writes the markers of `completion` on every partition's shard, then
/// persists the completed metadata. A failure leaves the transaction in its
/// prepared state, retried by the timer until it completes.
pub async fn complete(
    state: &Rc<ShardPartitions>,
    shared: &Arc<BrokerShared>,
    mesh: &Mesh<ShardPartitions>,
    partition: i32,
    coordinator: &Rc<RefCell<TxnCoordinator>>,
    completion: Completion,
) -> Result<(), ResponseError> {
    if !state.txns.completing.borrow_mut().insert(completion.transactional_id.clone()) {
        return Err(ResponseError::ConcurrentTransactions);
    }
    let result = write_markers(shared, mesh, &completion).await;
    let result = match result {
        Ok(()) => {
            persist(state, partition, coordinator, &completion.transactional_id, completion.complete.clone()).await
        }
        Err(e) => Err(e),
    };
    state.txns.completing.borrow_mut().remove(&completion.transactional_id);
    result
}

async fn write_markers(
    shared: &Arc<BrokerShared>,
    mesh: &Mesh<ShardPartitions>,
    completion: &Completion,
) -> Result<(), ResponseError> {
    let image = shared.topics.image();
    let mut by_shard: BTreeMap<usize, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, p) in &completion.partitions {
        // A partition deleted since it joined the transaction needs no marker.
        let Some(info) = image.topics.get(topic) else { continue };
        let Some(shard) = shared.shard_of(&info.partition_shards, *p) else { continue };
        by_shard.entry(shard).or_default().push((topic.clone(), *p));
    }
    let (producer_id, epoch, commit) = (completion.producer_id, completion.epoch, completion.commit);
    let writes = by_shard.into_iter().map(|(shard, partitions)| {
        mesh.call(shard, move |state| async move {
            for (topic, p) in partitions {
                let code = state.write_marker(&topic, p, producer_id, epoch, commit, 0).await;
                if code != 0 {
                    return code;
                }
                if topic == OFFSETS_TOPIC {
                    crate::groups::complete_transaction(&state, p, producer_id, commit).await;
                }
            }
            0
        })
    });
    for written in futures::future::join_all(writes).await {
        match written {
            Ok(0) => {}
            Ok(code) => {
                tracing::warn!(code, producer_id, "writing a transaction marker failed");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        }
    }
    Ok(())
}

/// Every second: completes transactions left prepared (after a crash or a
/// failed marker write) and aborts those past their timeout; every minute,
/// forgets transactional ids idle for `transactional_id_expiration_ms`.
pub fn spawn_timers(state: Rc<ShardPartitions>, shared: Arc<BrokerShared>, mesh: Mesh<ShardPartitions>) {
    compio::runtime::spawn(async move {
        let mut ticks = 0u64;
        loop {
            compio::time::sleep(Duration::from_secs(1)).await;
            if state.shutting_down.get() {
                return;
            }
            ticks += 1;
            if ticks.is_multiple_of(60) {
                let expiration = state.config.transactional_id_expiration_ms;
                for (partition, coordinator) in state.txns.loaded() {
                    let expired = coordinator.borrow().expired_ids(wall_ms(), expiration);
                    for id in expired {
                        tracing::info!(id, "forgetting an expired transactional id");
                        let _ = write(&state, partition, &coordinator, &id, None).await;
                    }
                }
            }
            for (partition, coordinator) in state.txns.loaded() {
                let (unfinished, expired) = {
                    let c = coordinator.borrow();
                    (c.unfinished(), c.timed_out(wall_ms()))
                };
                for completion in unfinished {
                    if state.txns.completing.borrow().contains(&completion.transactional_id) {
                        continue;
                    }
                    let _ = complete(&state, &shared, &mesh, partition, &coordinator, completion).await;
                }
                for (prepare, completion) in expired {
                    tracing::info!(id = completion.transactional_id, "aborting a transaction past its timeout");
                    let id = completion.transactional_id.clone();
                    if persist(&state, partition, &coordinator, &id, prepare).await.is_ok() {
                        let _ = complete(&state, &shared, &mesh, partition, &coordinator, completion).await;
                    }
                }
            }
        }
    })
    .detach();
}
