//! ListOffsets (v1–7): earliest (-2), latest (-1), max timestamp (-3, v7)
//! and by timestamp, answered by the partitions' owning shards (one
//! message per shard).

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use shardline_engine::partition::{Isolation, OffsetQuery};

use super::Context;
use crate::errors::partition_error;
use crate::route::scatter;
use crate::shard::ShardState;

/// An answer: (error, timestamp, offset).
type Answer = (Option<ResponseError>, i64, i64);

const UNKNOWN: Answer = (Some(ResponseError::UnknownTopicOrPartition), -1, -1);

async fn lookup_here(state: &ShardState, topic: &str, index: i32, query: OffsetQuery, isolation: Isolation) -> Answer {
    let Some(replica) = state.partitions.get(topic, index) else { return UNKNOWN };
    match replica.partition.list_offset(query, isolation).await {
        Ok(Some(found)) => (None, found.timestamp, found.offset),
        Ok(None) => (None, -1, -1),
        Err(error) => (Some(partition_error(&error)), -1, -1),
    }
}

/// Handles a ListOffsets request.
pub async fn handle(context: &Context, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = context.shared.topics.image();
    let isolation = if version >= 2 && request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    // Per asked partition: an answer decided here, or a lookup to run.
    let mut decided: Vec<Option<Answer>> = Vec::new();
    let mut lookups = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let info = image.topics.get(&name);
        for partition in &topic.partitions {
            let index = partition.partition_index;
            let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, index));
            let query = match partition.timestamp {
                -2 => Ok(OffsetQuery::Earliest),
                -1 => Ok(OffsetQuery::Latest),
                -3 if version < 7 => Err(ResponseError::UnsupportedVersion),
                -3 => Ok(OffsetQuery::MaxTimestamp),
                ts if ts >= 0 => Ok(OffsetQuery::AtOrAfter(ts)),
                _ => Err(ResponseError::InvalidRequest),
            };
            match (shard, query) {
                (None, _) => decided.push(Some((Some(context.shared.unavailable(info.map(|t| &**t), index)), -1, -1))),
                (Some(_), Err(error)) => decided.push(Some((Some(error), -1, -1))),
                (Some(shard), Ok(query)) => {
                    decided.push(None);
                    lookups.push((Some(shard), (name.clone(), index, query)));
                }
            }
        }
    }
    let mut found = scatter(&context.mesh, lookups, UNKNOWN, move |state, asked| async move {
        let lookups = asked.into_iter().map(|(topic, index, query)| {
            let state = state.clone();
            async move { lookup_here(&state, &topic, index, query, isolation).await }
        });
        futures::future::join_all(lookups).await
    })
    .await
    .into_iter();
    let mut answers = decided.into_iter().map(|d| d.unwrap_or_else(|| found.next().unwrap_or(UNKNOWN)));
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let mut topic_response = ListOffsetsTopicResponse::default();
        for partition in &topic.partitions {
            let (error, timestamp, offset) = answers.next().unwrap_or(UNKNOWN);
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = partition.partition_index;
            p.error_code = error.map_or(0, |e| e.code());
            p.timestamp = timestamp;
            p.offset = offset;
            if version >= 4 && error.is_none() && offset >= 0 {
                p.leader_epoch = 0;
            }
            topic_response.partitions.push(p);
        }
        topic_response.name = topic.name;
        response.topics.push(topic_response);
    }
    response
}
