//! ListOffsets (v1–7): earliest (-2), latest (-1), max timestamp (-3, v7)
//! and by timestamp, answered by the partition's owning shard.

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::Context;

/// Handles a ListOffsets request.
pub async fn handle(context: &Context, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = context.shared.topics.image();
    let committed = version >= 2 && request.isolation_level == 1;
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let info = image.topics.get(&name).cloned();
        let lookups = topic.partitions.iter().map(|partition| {
            let index = partition.partition_index;
            let timestamp = partition.timestamp;
            let shard = info.as_ref().and_then(|t| context.shared.shard_of(&t.partition_shards, index));
            let name = name.clone();
            async move {
                let unknown = (ResponseError::UnknownTopicOrPartition.code(), -1, -1);
                let answer = match shard {
                    None => unknown,
                    Some(_) if timestamp == -3 && version < 7 => (ResponseError::UnsupportedVersion.code(), -1, -1),
                    Some(shard) => context
                        .mesh
                        .call(
                            shard,
                            move |state| async move { state.list_offset(&name, index, timestamp, committed).await },
                        )
                        .await
                        .unwrap_or(unknown),
                };
                let mut p = ListOffsetsPartitionResponse::default();
                p.partition_index = index;
                p.error_code = answer.0;
                p.timestamp = answer.1;
                p.offset = answer.2;
                if version >= 4 && answer.0 == 0 && answer.2 >= 0 {
                    p.leader_epoch = 0;
                }
                p
            }
        });
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic.name;
        topic_response.partitions = futures::future::join_all(lookups).await;
        response.topics.push(topic_response);
    }
    response
}
