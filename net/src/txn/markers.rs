//! Writing a transaction's markers on the partitions one shard (or one
//! simulated node) holds: each partition gets its commit or abort marker
//! (only where the producer has an open transaction, so never twice),
//! durable as acks=all asks, and an offsets partition then applies or
//! drops the producer's pending transactional offsets. The broker routes
//! a transaction's partitions to their shards and calls this on each.

use kafka_protocol::ResponseError;
use shardline_engine::partition::TxnMarker;
use shardline_engine::Disk;

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
        let written = replica.partition.write_marker(marker, 0, now_ms).await.map_err(|error| {
            tracing::warn!(topic, index, %error, producer_id = marker.producer_id, "writing a transaction marker failed");
            ResponseError::CoordinatorNotAvailable
        })?;
        if let Some(appended) = written {
            tracing::debug!(topic, index, producer_id = marker.producer_id, offset = appended.base_offset, "marker");
            replica
                .partition
                .wait_until(appended.end_offset(), replica.acks_all)
                .await
                .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        }
        if topic == OFFSETS_TOPIC {
            groups.complete_transaction(*index, Some(replica.clone()), marker.producer_id, marker.commit).await?;
        }
    }
    Ok(())
}
