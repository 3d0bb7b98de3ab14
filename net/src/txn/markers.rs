//! Writing a transaction's markers on the partitions one shard (or one
//! simulated node) holds: each partition of the transaction gets its
//! commit or abort marker (written even where the producer wrote nothing,
//! as Kafka does, so the marker's epoch fences a zombie producer there too),
//! made durable (fdatasync'ed) before the transaction completes, and an offsets
//! partition then applies or drops the producer's pending transactional
//! offsets. Markers are durable even where acks=all waits only for the
//! write (`shardline.acks.all.fsync=false`): a marker lost to a power loss
//! would leave the transaction open on that partition and let a later one
//! of the same producer close it, exposing aborted records. The broker
//! routes a transaction's partitions to their shards and calls this on
//! each.

use kafka_protocol::ResponseError;
use shardline_engine::partition::{Durability, TxnMarker};
use shardline_engine::Disk;

use crate::coordinators::CoordinatorLog;
use crate::groups::service::GroupService;
use crate::groups::OFFSETS_TOPIC;
use crate::registry::PartitionRegistry;

/// Writes `marker` on each of `partitions` (all held by `registry`).
pub async fn write_local_markers<D: Disk>(
    registry: &PartitionRegistry<D>,
    groups: &GroupService<D>,
    partitions: &[(String, i32)],
    marker: TxnMarker,
    now_ms: i64,
) -> Result<(), ResponseError> {
    for (topic, index) in partitions {
        let replica = registry.get(topic, *index).ok_or(ResponseError::UnknownTopicOrPartition)?;
        let appended = replica.partition.write_marker(marker, 0, now_ms).await.map_err(|error| {
            tracing::warn!(topic, index, %error, producer_id = marker.producer_id, "writing a transaction marker failed");
            ResponseError::CoordinatorNotAvailable
        })?;
        tracing::debug!(topic, index, producer_id = marker.producer_id, offset = appended.base_offset, "marker");
        replica
            .partition
            .wait_until(appended.end_offset(), Durability::Durable)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        if topic == OFFSETS_TOPIC {
            let at = CoordinatorLog { index: *index, replica: Some(replica.clone()) };
            groups.complete_transaction(at, marker.producer_id, marker.commit).await?;
        }
    }
    Ok(())
}
