//! KIP-890 part 1 on the produce path: a transactional batch that would
//! start its producer's transaction on a partition is accepted only once
//! the transaction coordinator confirms the partition is in the open
//! transaction, so a late or stray batch (after its transaction ended, or
//! for a partition never added) cannot leave a transaction hanging there.
//! Batches of a transaction already open on the partition append at once.
//! Runs on the partition's shard; the coordinator is reached through a
//! [`PartitionVerifier`] (the mesh on the broker, a direct call in the
//! simulator).

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use shardline_engine::partition::{AppendOrigin, Appended};
use shardline_engine::Disk;

use crate::errors::{produce_error, ProduceError};
use crate::registry::Replica;
use crate::txn::service::LocalResult;

/// Asks the transaction coordinator whether a partition is in a
/// producer's open transaction.
pub trait PartitionVerifier {
    /// Ok when `partition` is in `transactional_id`'s open transaction at
    /// producer (id, epoch).
    fn verify<'a>(
        &'a self,
        transactional_id: &'a str,
        producer_id: i64,
        epoch: i16,
        partition: &'a (String, i32),
    ) -> LocalResult<'a, ()>;
}

/// Appends a client's batch to `topic`/`index` as the leader, verifying it
/// first when it starts a transaction here. A transactional batch without
/// a transactional id is refused as Kafka refuses it.
pub async fn append_client_batch<D: Disk>(
    replica: &Replica<D>,
    topic: &str,
    index: i32,
    records: BytesMut,
    transactional_id: Option<&str>,
    verifier: &dyn PartitionVerifier,
    now_ms: i64,
) -> Result<Appended, ProduceError> {
    let partition = &replica.partition;
    let Some((producer_id, epoch)) = partition.needs_verification(&records) else {
        return partition
            .append_as_leader(records, AppendOrigin::Client, 0, now_ms)
            .await
            .map_err(|e| produce_error(&e));
    };
    let Some(transactional_id) = transactional_id else {
        return Err(ResponseError::TransactionalIdAuthorizationFailed.into());
    };
    let verification = partition.begin_verification();
    verifier.verify(transactional_id, producer_id, epoch, &(topic.to_string(), index)).await?;
    partition.append_verified(records, verification, 0, now_ms).await.map_err(|e| produce_error(&e))
}
