//! CreatePartitions (v0–3): grows a topic through the controller, which
//! places the new partitions on brokers (or on the replicas the request
//! assigns, checked there); the answer waits until this
//! broker opened those it hosts (on its least-loaded shards). Consumer
//! groups see the new count on
//! their next metadata refresh (classic) or heartbeat (KIP-848).

use std::collections::HashSet;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest};

use super::admin::{controller_refusal, until_applied, Refusal};
use super::Context;
use crate::topics::{is_internal, log_config_for};

/// Most partitions a topic may have.
const MAX_PARTITIONS: i32 = 100_000;

async fn grow(
    context: &Context,
    name: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let shared = &context.shared;
    if is_internal(name) {
        return Err((ResponseError::InvalidRequest, format!("internal topic {name} cannot be changed")));
    }
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
    log_config_for(&shared.config, &topic.configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    let request =
        ControllerRequest::CreatePartitions { topics: vec![(name.to_string(), count, assignments)], validate_only };
    let answer = shared.controller.ask(request).await;
    match answer.reply {
        ControllerReply::Partitions(mut results) if results.len() == 1 => {
            results.pop().map(|(_, r)| r).unwrap_or(Err(ControllerError::UnknownTopic))
        }
        ControllerReply::Refused(error) => Err(error),
        other => return Err((ResponseError::UnknownServerError, format!("unexpected controller answer {other:?}"))),
    }
    .map_err(|e| controller_refusal(&e))?;
    if validate_only {
        return Ok(());
    }
    until_applied(context, answer.offset).await?;
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
        } else {
            let assignments: Option<Vec<Vec<i32>>> = topic
                .assignments
                .as_ref()
                .map(|list| list.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect());
            grow(context, &name, topic.count, assignments, request.validate_only).await
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
