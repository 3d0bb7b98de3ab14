//! CreateTopics (v2–7, including validate_only) and DeleteTopics (v1–5):
//! checked at the edge with Kafka's error codes, then decided by the
//! controller (the change is committed to the metadata log); the answer
//! waits until this broker applied it (partitions it hosts opened, or a
//! deleted topic gone from its view).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest, NewTopic};

use crate::topics::{default_topic_configs, is_internal, log_config_for, validate_topic_name, TopicInfo};

/// A refusal: Kafka error and message.
pub type Refusal = (ResponseError, String);

/// The Kafka error and message for a controller's refusal.
pub fn controller_refusal(error: &ControllerError) -> Refusal {
    let code = match error {
        ControllerError::NotController { .. } => ResponseError::NotController,
        ControllerError::TopicExists => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic | ControllerError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::RequestTooLarge => ResponseError::PolicyViolation,
        ControllerError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ControllerError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ControllerError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ControllerError::DuplicateBrokerRegistration(_) => ResponseError::DuplicateBrokerRegistration,
        ControllerError::PreviousIncarnationLeaving(_) => ResponseError::RequestTimedOut,
        ControllerError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
        ControllerError::BrokerNotRegistered(_) => ResponseError::BrokerIdNotRegistered,
        ControllerError::AlreadyBootstrapped | ControllerError::InvalidBootstrap(_) => {
            ResponseError::UnknownServerError
        }
    };
    (code, error.to_string())
}

/// Waits until this broker's view holds the metadata log up to `offset`
/// (what a controller answer reported), bounded.
pub async fn until_applied(context: &Context, offset: u64) -> Result<(), Refusal> {
    let waited = shardline_engine::runtime::clock::timeout(
        &*context.state.clock,
        APPLY_TIMEOUT,
        context.shared.topics.wait_applied(offset),
    )
    .await;
    match waited {
        Ok(true) => Ok(()),
        _ => {
            Err((ResponseError::RequestTimedOut, format!("the broker did not apply metadata offset {offset} in time")))
        }
    }
}

/// How long a change waits for this broker to apply what the controller
/// committed (opening the partitions it hosts).
const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A topic to create, checked at the edge.
struct Creation {
    name: String,
    partitions: i32,
    replication_factor: i32,
    assignments: Vec<Vec<i32>>,
    configs: BTreeMap<String, String>,
}

/// Creates (or with `validate_only` checks) a topic through the
/// controller; once created, waits until this broker has opened the
/// partitions it hosts and returns the topic as this broker sees it.
async fn create_through_controller(
    context: &Context,
    creation: Creation,
    validate_only: bool,
) -> Result<Option<Arc<TopicInfo>>, Refusal> {
    let shared = &context.shared;
    validate_topic_name(&creation.name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    log_config_for(&shared.config, &creation.configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    let name = creation.name.clone();
    let topic = NewTopic {
        name: creation.name,
        partitions: creation.partitions,
        replication_factor: creation.replication_factor,
        assignments: creation.assignments,
        configs: creation.configs.into_iter().collect(),
    };
    let answer = shared.controller.ask(ControllerRequest::CreateTopics { topics: vec![topic], validate_only }).await;
    let topic_id = match answer.reply {
        ControllerReply::Topics(mut results) if results.len() == 1 => {
            results.pop().map(|(_, r)| r).unwrap_or(Err(ControllerError::UnknownTopic))
        }
        ControllerReply::Refused(error) => Err(error),
        other => return Err((ResponseError::UnknownServerError, format!("unexpected controller answer {other:?}"))),
    }
    .map_err(|e| controller_refusal(&e))?;
    if validate_only {
        return Ok(None);
    }
    until_applied(context, answer.offset).await?;
    let image = shared.topics.image();
    match image.topics.get(&name).filter(|t| t.id == topic_id) {
        Some(topic) => {
            tracing::info!(topic = %name, partitions = topic.partition_shards.len(), "created topic");
            Ok(Some(topic.clone()))
        }
        // Deleted again before this broker applied the creation.
        None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} was deleted meanwhile"))),
    }
}

/// Creates a topic with the default replication factor: validates, asks
/// the controller, and returns once this broker has opened the partitions
/// it hosts. Used by auto-creation and the internal topics.
pub async fn create_topic(
    context: &Context,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicInfo>, Refusal> {
    let creation = Creation {
        name: name.to_string(),
        partitions,
        replication_factor: i32::from(context.shared.config.default_replication_factor),
        assignments: Vec::new(),
        configs,
    };
    create_through_controller(context, creation, false)
        .await?
        .ok_or_else(|| (ResponseError::UnknownServerError, "no topic created".to_string()))
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
        } else if let Some(key) = null_config {
            Err((ResponseError::InvalidConfig, format!("null value for config {key}")))
        } else if !topic.assignments.is_empty() && (topic.num_partitions != -1 || topic.replication_factor != -1) {
            Err((
                ResponseError::InvalidRequest,
                "replica assignments exclude num_partitions and replication_factor".into(),
            ))
        } else {
            let mut assignments: Vec<(i32, Vec<i32>)> = topic
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect()))
                .collect();
            assignments.sort_by_key(|(index, _)| *index);
            if assignments.iter().enumerate().any(|(i, (index, _))| *index != i as i32) {
                Err((ResponseError::InvalidReplicaAssignment, "assignments must cover partitions 0 to n-1".into()))
            } else {
                let creation = Creation {
                    name: name.clone(),
                    partitions: if assignments.is_empty() { partitions } else { -1 },
                    replication_factor: if assignments.is_empty() { i32::from(replication) } else { -1 },
                    assignments: assignments.into_iter().map(|(_, replicas)| replicas).collect(),
                    configs: configs.clone(),
                };
                create_through_controller(context, creation, request.validate_only).await
            }
        };
        match outcome {
            Ok(created) => {
                if version >= 7 {
                    result.topic_id = created.map_or(uuid::Uuid::nil(), |t| t.id);
                }
                if version >= 5 {
                    result.num_partitions =
                        if topic.assignments.is_empty() { partitions } else { topic.assignments.len() as i32 };
                    result.replication_factor = match topic.assignments.first() {
                        Some(first) => first.broker_ids.len() as i16,
                        None => replication,
                    };
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

/// Deletes one topic through the controller; returns once this broker
/// no longer shows it (its logs are removed after).
async fn delete_topic(context: &Context, name: &str) -> Result<(), Refusal> {
    let shared = &context.shared;
    if !shared.topics.image().topics.contains_key(name) {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist")));
    }
    let answer = shared.controller.ask(ControllerRequest::DeleteTopics { names: vec![name.to_string()] }).await;
    match answer.reply {
        ControllerReply::Deleted(mut results) if results.len() == 1 => {
            results.pop().map(|(_, r)| r).unwrap_or(Err(ControllerError::UnknownTopic))
        }
        ControllerReply::Refused(error) => Err(error),
        other => return Err((ResponseError::UnknownServerError, format!("unexpected controller answer {other:?}"))),
    }
    .map_err(|e| match e {
        ControllerError::UnknownTopic => {
            (ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist"))
        }
        other => controller_refusal(&other),
    })?;
    until_applied(context, answer.offset).await
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
            delete_topic(context, &name.0).await
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
