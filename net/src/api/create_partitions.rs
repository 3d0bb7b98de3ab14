//! CreatePartitions (v0–3): grows a topic. New partitions are placed on the
//! least-loaded shards like a new topic's, their logs opened there, and the
//! metadata persisted and published; consumer groups see the new count on
//! their next metadata refresh (classic) or heartbeat (KIP-848).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::admin::Refusal;
use super::Context;
use crate::topics::{is_internal, log_config_for, TopicInfo};

/// Most partitions a topic may have.
const MAX_PARTITIONS: i32 = 100_000;

async fn grow(
    context: &Context,
    name: &str,
    count: i32,
    assignments: Option<usize>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let shared = &context.shared;
    if is_internal(name) {
        return Err((ResponseError::InvalidRequest, format!("internal topic {name} cannot be changed")));
    }
    let _guard = shared.topics.lock().await;
    let image = shared.topics.image();
    let Some(topic) = image.topics.get(name).cloned() else {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist")));
    };
    let current = topic.partition_shards.len() as i32;
    if count <= current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("topic currently has {current} partitions, which is higher than or equal to the requested {count}"),
        ));
    }
    if count > MAX_PARTITIONS {
        return Err((ResponseError::InvalidPartitions, format!("at most {MAX_PARTITIONS} partitions")));
    }
    if let Some(given) = assignments {
        if given != (count - current) as usize {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("{given} assignments given for {} new partitions", count - current),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    let (log_config, ack) =
        log_config_for(&shared.config, &topic.configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    let extra = crate::placement::place_new(&image, shared.shards, (count - current) as usize);
    let mut placement = topic.partition_shards.clone();
    placement.extend(extra);
    let grown = Arc::new(TopicInfo { partition_shards: placement, ..(*topic).clone() });
    let mut next = (*image).clone();
    next.topics.insert(name.to_string(), grown.clone());
    shared.topics.persist(&next).map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
    let opens = (current..count).map(|index| {
        let shard = grown.partition_shards[index as usize] % shared.shards;
        let (name, log_config) = (name.to_string(), log_config.clone());
        context.mesh.call(shard, move |state| async move {
            state.partitions.open(&name, index, log_config, ack).await.map(|_| ()).map_err(|e| e.to_string())
        })
    });
    for opened in futures::future::join_all(opens).await {
        if let Err(message) = opened.map_err(|e| e.to_string()).and_then(|r| r) {
            return Err((ResponseError::KafkaStorageError, message));
        }
    }
    shared.topics.publish(next);
    tracing::info!(topic = name, from = current, to = count, "added partitions");
    Ok(())
}

/// Handles CreatePartitions.
pub async fn handle(context: &Context, request: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> =
        request.topics.iter().map(|t| t.name.0.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = if duplicates.contains(&name) {
            Err((ResponseError::InvalidRequest, format!("topic {name} appears more than once")))
        } else if topic.assignments.as_ref().is_some_and(|a| {
            a.iter().any(|r| r.broker_ids != [kafka_protocol::messages::BrokerId(context.shared.config.node_id)])
        }) {
            Err((ResponseError::InvalidReplicaAssignment, "replicas must be exactly this broker".to_string()))
        } else {
            grow(context, &name, topic.count, topic.assignments.as_ref().map(Vec::len), request.validate_only).await
        };
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name;
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        response.results.push(result);
    }
    response
}
