//! Consumer-group APIs: FindCoordinator (0–4), the classic protocol
//! (JoinGroup 0–9, SyncGroup 0–5, Heartbeat 0–4, LeaveGroup 0–5), KIP-848
//! (ConsumerGroupHeartbeat 0–1, ConsumerGroupDescribe 0–1), offsets
//! (OffsetCommit 2–9, OffsetFetch 1–9, OffsetDelete 0) and group admin
//! (ListGroups 0–5, DescribeGroups 0–5, DeleteGroups 0–2). Each request is
//! decoded on the connection's shard and carried out on the shard of the
//! group's coordinator (`crate::groups`).

mod admin;
mod classic;
mod consumer;
mod offsets;

pub use admin::{delete_groups, describe_groups, list_groups, offset_delete};
pub use classic::{heartbeat, join_group, leave_group, sync_group};
pub use consumer::{consumer_group_describe, consumer_group_heartbeat};
pub use offsets::{offset_commit, offset_fetch};

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures::Future;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::coordinators::CoordinatorLog;
use crate::groups::coordinator::CommitAsked;
use crate::groups::records::partition_for;
use crate::groups::OFFSETS_TOPIC;
use crate::shard::{BrokerShared, ShardState};
use crate::topics::TopicInfo;

pub(super) fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// An internal coordinator topic (`__consumer_offsets`,
/// `__transaction_state`), created on first use. Kafka compacts these;
/// until compaction exists here nothing is deleted from them by retention,
/// so no committed offset or transaction state is lost.
pub(in crate::api) async fn internal_topic(
    context: &Context,
    name: &str,
    partitions: i32,
) -> Result<Arc<TopicInfo>, ResponseError> {
    if let Some(topic) = context.shared.topics.image().topics.get(name) {
        return Ok(topic.clone());
    }
    let configs: BTreeMap<String, String> =
        [("retention.ms", "-1"), ("retention.bytes", "-1"), ("segment.bytes", "104857600")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    match super::create_topic(context, name, partitions, configs).await {
        Ok(topic) => Ok(topic),
        // Created meanwhile by another request, or not at all.
        Err(_) => context.shared.topics.image().topics.get(name).cloned().ok_or(ResponseError::CoordinatorNotAvailable),
    }
}

/// `__consumer_offsets`, created on first use.
pub async fn offsets_topic(context: &Context) -> Result<Arc<TopicInfo>, ResponseError> {
    internal_topic(context, OFFSETS_TOPIC, context.shared.config.offsets_topic_num_partitions).await
}

/// Runs `work` on the shard coordinating `group`, with its offsets
/// partition there.
pub(super) async fn on_coordinator<R, F, Fut>(context: &Context, group: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardState>, CoordinatorLog<crate::shard::ShardDisk>, Arc<BrokerShared>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let topic = offsets_topic(context).await?;
    let index = partition_for(group, topic.partition_shards.len() as i32);
    let shard = context.shared.coordinator_shard(&topic.partition_shards, index)?;
    let shared = context.shared.clone();
    context
        .mesh
        .call(shard, move |state| {
            let at = CoordinatorLog::of(&state.partitions, OFFSETS_TOPIC, index);
            work(state, at, shared)
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// The commits an OffsetCommit or TxnOffsetCommit asks for, per topic:
/// (partition, offset, leader epoch, metadata).
pub(in crate::api) fn asked_commits(
    topics: impl Iterator<Item = (String, Vec<(i32, i64, i32, Option<String>)>)>,
) -> Vec<(String, Vec<CommitAsked>)> {
    topics
        .map(|(topic, partitions)| {
            let asked = partitions
                .into_iter()
                .map(|(partition, offset, leader_epoch, metadata)| CommitAsked {
                    partition,
                    offset,
                    leader_epoch,
                    metadata,
                })
                .collect();
            (topic, asked)
        })
        .collect()
}

/// The broker leading the coordinator partition of `key` in `topic`: its
/// id, host and port, or why there is none.
fn coordinator_of(context: &Context, topic: &TopicInfo, key: &str) -> Result<(i32, String, i32), ResponseError> {
    let index = partition_for(key, topic.partition_shards.len() as i32);
    let cluster = context.shared.controller.published().image();
    let leader = cluster.partition(topic.id, index).map(|p| p.leader).ok_or(ResponseError::CoordinatorNotAvailable)?;
    if leader == context.shared.config.node_id {
        let (host, port) = context.shared.advertised.clone();
        return Ok((leader, host, port));
    }
    let broker = cluster.brokers.get(&leader).filter(|b| !b.fenced).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let endpoint = broker.endpoints.first().ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((leader, endpoint.host.clone(), i32::from(endpoint.port)))
}

/// FindCoordinator: the broker that leads each key's partition of
/// `__consumer_offsets` or `__transaction_state` (created on first use).
pub async fn find_coordinator(
    context: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 { request.coordinator_keys.clone() } else { vec![request.key.clone()] };
    let ready = match request.key_type {
        0 => offsets_topic(context).await,
        1 => super::transactions::transaction_topic(context).await,
        _ => Err(ResponseError::InvalidRequest),
    };
    let answer = |key: &StrBytes| -> (i32, String, i32, i16, Option<StrBytes>) {
        let found = match &ready {
            Ok(topic) => coordinator_of(context, topic, key).map_err(|e| (e, "the coordinator is not available")),
            Err(e) if request.key_type > 1 => Err((*e, "")),
            Err(e) => Err((*e, "the coordinator's internal topic is not available")),
        };
        match found {
            Ok((node, host, port)) => (node, host, port, 0, None),
            Err((error, _)) if request.key_type > 1 => (
                -1,
                String::new(),
                -1,
                error.code(),
                Some(s(format!("coordinator key type {} is not supported", request.key_type))),
            ),
            Err((error, message)) => (-1, String::new(), -1, error.code(), Some(s(message))),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = keys
            .into_iter()
            .map(|key| {
                let (node, host, port, error, message) = answer(&key);
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = key;
                c.node_id = BrokerId(node);
                c.host = s(host);
                c.port = port;
                c.error_code = error;
                c.error_message = message;
                c
            })
            .collect();
    } else {
        let (node, host, port, error, message) = answer(&request.key);
        response.node_id = BrokerId(node);
        response.host = s(host);
        response.port = port;
        response.error_code = error;
        if version >= 1 {
            response.error_message = message;
        }
    }
    response
}

pub(super) fn client_host(context: &Context) -> String {
    format!("/{}", context.peer.ip())
}
