//! CreateTopics (v2–7, including validate_only) and DeleteTopics (v1–5):
//! validation with Kafka's error codes, metadata persisted before logs are
//! opened on their owning shards, and the image published last.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::topics::{default_topic_configs, is_internal, log_config_for, validate_topic_name, TopicInfo};

/// A refusal: Kafka error and message.
pub type Refusal = (ResponseError, String);

/// Creates a topic: validates, places partitions, persists, opens the logs
/// on their shards, publishes. Used by CreateTopics and auto-creation.
pub async fn create_topic(
    context: &Context,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicInfo>, Refusal> {
    let shared = &context.shared;
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    if !(1..=100_000).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("number of partitions must be 1 to 100000, not {partitions}"),
        ));
    }
    let (log_config, ack) = log_config_for(&shared.config, &configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    let _guard = shared.topics.lock().await;
    let image = shared.topics.image();
    if image.topics.contains_key(name) {
        return Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")));
    }
    let placement = crate::placement::place_new(&image, shared.shards, partitions as usize);
    let topic =
        Arc::new(TopicInfo { name: name.to_string(), id: uuid::Uuid::new_v4(), partition_shards: placement, configs });
    let mut next = (*image).clone();
    next.topics.insert(name.to_string(), topic.clone());
    shared.topics.persist(&next).map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
    let opens = topic.partition_shards.iter().enumerate().map(|(index, &shard)| {
        let (name, log_config) = (name.to_string(), log_config.clone());
        context.mesh.call(shard % shared.shards, move |state| async move {
            state.partitions.open(&name, index as i32, log_config, ack).await.map(|_| ()).map_err(|e| e.to_string())
        })
    });
    for opened in futures::future::join_all(opens).await {
        if let Err(message) = opened.map_err(|e| e.to_string()).and_then(|r| r) {
            return Err((ResponseError::KafkaStorageError, message));
        }
    }
    shared.topics.publish(next);
    tracing::info!(topic = name, partitions, "created topic");
    Ok(topic)
}

fn effective_configs(context: &Context, explicit: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    default_topic_configs(&context.shared.config)
        .into_iter()
        .map(|(name, default)| {
            let mut entry = CreatableTopicConfigs::default();
            let (value, source) = match explicit.get(&name) {
                Some(value) => (value.clone(), 1), // DYNAMIC_TOPIC_CONFIG
                None => (default, 5),              // DEFAULT_CONFIG
            };
            entry.name = StrBytes::from_string(name);
            entry.value = Some(StrBytes::from_string(value));
            entry.config_source = source;
            entry
        })
        .collect()
}

/// Handles CreateTopics.
pub async fn create_topics(context: &Context, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let config = &context.shared.config;
    let mut response = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> =
        request.topics.iter().map(|t| t.name.0.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        let partitions = if topic.num_partitions == -1 { config.num_partitions } else { topic.num_partitions };
        let replication =
            if topic.replication_factor == -1 { config.default_replication_factor } else { topic.replication_factor };
        let configs: BTreeMap<String, String> =
            topic.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
        let null_config = topic.configs.iter().find(|c| c.value.is_none()).map(|c| c.name.to_string());
        let outcome: Result<Option<Arc<TopicInfo>>, Refusal> = if duplicates.contains(&name) {
            Err((ResponseError::InvalidRequest, format!("topic {name} appears more than once")))
        } else if context.shared.topics.image().topics.contains_key(&name) {
            Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")))
        } else if let Some(key) = null_config {
            Err((ResponseError::InvalidConfig, format!("null value for config {key}")))
        } else if !topic.assignments.is_empty() {
            let ok = topic
                .assignments
                .iter()
                .all(|a| a.broker_ids.iter().all(|b| b.0 == config.node_id) && a.broker_ids.len() == 1);
            if ok && topic.num_partitions == -1 && topic.replication_factor == -1 {
                create_or_validate(
                    context,
                    &name,
                    topic.assignments.len() as i32,
                    configs.clone(),
                    request.validate_only,
                )
                .await
            } else if topic.num_partitions != -1 || topic.replication_factor != -1 {
                Err((
                    ResponseError::InvalidRequest,
                    "replica assignments exclude num_partitions and replication_factor".into(),
                ))
            } else {
                Err((ResponseError::InvalidReplicaAssignment, "replicas must be exactly this broker".into()))
            }
        } else if replication != 1 {
            Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication} is larger than the 1 available broker"),
            ))
        } else {
            create_or_validate(context, &name, partitions, configs.clone(), request.validate_only).await
        };
        match outcome {
            Ok(created) => {
                if version >= 7 {
                    result.topic_id = created.map_or(uuid::Uuid::nil(), |t| t.id);
                }
                if version >= 5 {
                    result.num_partitions =
                        if topic.assignments.is_empty() { partitions } else { topic.assignments.len() as i32 };
                    result.replication_factor = 1;
                    result.configs = Some(effective_configs(context, &configs));
                }
            }
            Err((error, message)) => {
                result.error_code = error.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.topics.push(result);
    }
    response
}

async fn create_or_validate(
    context: &Context,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Option<Arc<TopicInfo>>, Refusal> {
    if !validate_only {
        return create_topic(context, name, partitions, configs).await.map(Some);
    }
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    if context.shared.topics.image().topics.contains_key(name) {
        return Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")));
    }
    if !(1..=100_000).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("number of partitions must be 1 to 100000, not {partitions}"),
        ));
    }
    log_config_for(&context.shared.config, &configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    Ok(None)
}

/// Deletes one topic: unpublished and persisted first, then its logs are
/// closed and removed on their shards.
async fn delete_topic(context: &Context, name: &str) -> Result<Arc<TopicInfo>, Refusal> {
    let shared = &context.shared;
    let _guard = shared.topics.lock().await;
    let image = shared.topics.image();
    let Some(topic) = image.topics.get(name).cloned() else {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist")));
    };
    let mut next = (*image).clone();
    next.topics.remove(name);
    shared.topics.persist(&next).map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
    shared.topics.publish(next);
    let deletes = topic.partition_shards.iter().enumerate().map(|(index, &shard)| {
        let name = name.to_string();
        context.mesh.call(shard % shared.shards, move |state| async move {
            state.partitions.delete(&name, index as i32).await.map_err(|e| e.to_string())
        })
    });
    for deleted in futures::future::join_all(deletes).await {
        if let Err(message) = deleted.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::warn!(topic = name, %message, "removing partition files of a deleted topic");
        }
    }
    tracing::info!(topic = name, "deleted topic");
    Ok(topic)
}

/// Handles DeleteTopics (by name; v1–5).
pub async fn delete_topics(context: &Context, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> =
        request.topic_names.iter().map(|n| n.0.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    for name in request.topic_names {
        let mut result = DeletableTopicResult::default();
        result.name = Some(name.clone());
        let outcome = if duplicates.contains(name.0.as_str()) {
            Err((ResponseError::InvalidRequest, format!("topic {} appears more than once", name.0.as_str())))
        } else if is_internal(&name.0) {
            Err((
                ResponseError::InvalidTopicException,
                format!("topic {} is an internal topic and is not allowed to be deleted", name.0.as_str()),
            ))
        } else {
            delete_topic(context, &name.0).await.map(|_| ())
        };
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            if version >= 5 {
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.responses.push(result);
    }
    response
}
