//! How work reaches the shard that owns it: per-shard scatter (one mesh
//! message per shard, however many partitions it owns; the caller's own
//! shard runs its part directly), and the mesh-backed implementations of
//! the outward interfaces the transaction service uses: markers written
//! on whichever shards hold a transaction's partitions, producer id blocks
//! from the allocating shard, and the coordinator's check of a
//! transaction's first batch on a partition.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use shardline_engine::partition::TxnMarker;
use shardline_engine::runtime::mesh::Mesh;

use crate::coordinators::CoordinatorLog;
use crate::groups::records::partition_for;
use crate::producer_ids::{BlockRequest, ProducerIdError};
use crate::shard::{BrokerShared, ShardState};
use crate::txn::coordinator::Completion;
use crate::txn::markers::write_local_markers;
use crate::txn::service::{LocalResult, MarkerWriter, ProducerIdSource};
use crate::txn::verify::PartitionVerifier;
use crate::txn::TXN_TOPIC;
use shardline_replication::controller::requests::{ControllerReply, ControllerRequest};

/// Runs `work` once on each shard that owns some of `items` (each item
/// tagged with its owning shard, or `None` when nobody owns it), with all
/// of that shard's items, and returns one result per item in the items'
/// order. Items nobody owns, and items of a shard that stopped, get
/// `fallback`.
pub async fn scatter<T, R, F, Fut>(
    mesh: &Mesh<ShardState>,
    items: Vec<(Option<usize>, T)>,
    fallback: R,
    work: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Clone + Send + 'static,
    F: Fn(Rc<ShardState>, Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let count = items.len();
    let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (position, (shard, item)) in items.into_iter().enumerate() {
        if let Some(shard) = shard {
            let entry = by_shard.entry(shard).or_default();
            entry.0.push(position);
            entry.1.push(item);
        }
    }
    let calls = by_shard.into_iter().map(|(shard, (positions, items))| {
        let work = work.clone();
        async move { (positions, mesh.call(shard, move |state| work(state, items)).await) }
    });
    let mut results = vec![fallback.clone(); count];
    for (positions, answered) in futures::future::join_all(calls).await {
        if let Ok(answers) = answered {
            assert_eq!(answers.len(), positions.len(), "one answer per item");
            for (position, answer) in positions.into_iter().zip(answers) {
                results[position] = answer;
            }
        }
    }
    results
}

/// Runs `work` once on each shard owning partitions of internal topic
/// `topic` (one message per shard), with those partitions' indexes, and
/// returns everything the shards answered. Empty when the topic does not
/// exist yet.
pub async fn scatter_topic<R, F, Fut>(shared: &BrokerShared, mesh: &Mesh<ShardState>, topic: &str, work: F) -> Vec<R>
where
    R: Clone + Send + 'static,
    F: Fn(Rc<ShardState>, i32) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let Some(info) = shared.topics.image().topics.get(topic).cloned() else { return Vec::new() };
    let items = (0..info.partition_shards.len() as i32)
        .map(|index| (shared.shard_of(&info.partition_shards, index), index))
        .collect();
    let answers = scatter(mesh, items, Vec::new(), move |state, indexes| {
        let work = work.clone();
        async move {
            let mut out = Vec::with_capacity(indexes.len());
            for index in indexes {
                out.push(work(state.clone(), index).await);
            }
            out
        }
    })
    .await;
    answers.into_iter().flatten().collect()
}

/// Writes markers on the shards that hold a transaction's partitions.
pub struct MeshMarkers {
    /// Topic placement.
    pub shared: Arc<BrokerShared>,
    /// Every shard.
    pub mesh: Mesh<ShardState>,
}

impl MarkerWriter for MeshMarkers {
    fn write_markers<'a>(&'a self, completion: &'a Completion) -> LocalResult<'a, ()> {
        Box::pin(async move {
            let marker = TxnMarker {
                producer_id: completion.producer_id,
                producer_epoch: completion.epoch,
                commit: completion.commit,
                coordinator_epoch: 0,
            };
            // A partition deleted since it joined the transaction needs no marker.
            let items: Vec<(Option<usize>, (String, i32))> = completion
                .partitions
                .iter()
                .filter_map(|(topic, p)| {
                    self.shared.shard_of_partition(topic, *p).map(|s| (Some(s), (topic.clone(), *p)))
                })
                .collect();
            let written = scatter(
                &self.mesh,
                items,
                Err(ResponseError::CoordinatorNotAvailable),
                move |state, partitions| async move {
                    let now = state.clock.now_ms();
                    let result = write_local_markers(&state.partitions, &state.groups, &partitions, marker, now).await;
                    vec![result; partitions.len()]
                },
            )
            .await;
            written.into_iter().collect::<Result<Vec<()>, ResponseError>>().map(|_| ())
        })
    }
}

/// Asks the transaction coordinator, wherever it lives, whether a partition
/// is in a producer's open transaction.
#[derive(Clone)]
pub struct MeshVerifier {
    /// Topic placement.
    pub shared: Arc<BrokerShared>,
    /// Every shard.
    pub mesh: Mesh<ShardState>,
}

impl PartitionVerifier for MeshVerifier {
    fn verify<'a>(
        &'a self,
        transactional_id: &'a str,
        producer_id: i64,
        epoch: i16,
        partition: &'a (String, i32),
    ) -> LocalResult<'a, ()> {
        Box::pin(async move {
            let image = self.shared.topics.image();
            let topic = image.topics.get(TXN_TOPIC).ok_or(ResponseError::InvalidTxnState)?;
            let index = partition_for(transactional_id, topic.partition_shards.len() as i32);
            let shard = self.shared.coordinator_shard(&topic.partition_shards, index)?;
            let (id, asked) = (transactional_id.to_string(), partition.clone());
            self.mesh
                .call(shard, move |state| async move {
                    let at = CoordinatorLog::of(&state.partitions, TXN_TOPIC, index);
                    state.txns.verify(at, &id, producer_id, epoch, &asked).await
                })
                .await
                .map_err(|_| ResponseError::CoordinatorNotAvailable)?
        })
    }
}

/// Producer ids of this shard's pool, refilled with blocks the active
/// controller hands out (AllocateProducerIds, KIP-730): committed to the
/// metadata log before they are used, so ids are unique across the
/// cluster and its restarts.
pub struct ControllerProducerIds {
    /// This shard.
    pub state: Rc<ShardState>,
    /// The broker (its controller handle and registration).
    pub shared: Arc<BrokerShared>,
}

impl ProducerIdSource for ControllerProducerIds {
    fn allocate(&self) -> LocalResult<'_, i64> {
        Box::pin(async move {
            let shared = self.shared.clone();
            let refill = move || -> BlockRequest<'static> {
                Box::pin(async move {
                    let broker_epoch = shared.member.broker_epoch.load(std::sync::atomic::Ordering::Acquire);
                    let request =
                        ControllerRequest::AllocateProducerIds { broker_id: shared.config.node_id, broker_epoch };
                    match shared.controller.ask(request).await.reply {
                        ControllerReply::ProducerIds { first, count } if count > 0 => Ok((first, first + count)),
                        other => {
                            tracing::warn!(?other, "the controller gave no producer id block");
                            Err(ProducerIdError::Unreachable)
                        }
                    }
                })
            };
            self.state.producer_ids.allocate(refill).await.map_err(|error| {
                tracing::error!(%error, "allocating a producer id");
                ResponseError::CoordinatorNotAvailable
            })
        })
    }
}
