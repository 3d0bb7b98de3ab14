//! KIP-848: ConsumerGroupHeartbeat and ConsumerGroupDescribe.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::admin::{regex_matches, topics_view};
use super::{client_host, on_coordinator, s};
use crate::groups::consumer;
use crate::groups::coordinator::Protocol;

/// ConsumerGroupHeartbeat (KIP-848).
pub async fn consumer_group_heartbeat(
    context: &Context,
    header: &RequestHeader,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.to_string();
    let mut response = ConsumerGroupHeartbeatResponse::default();
    if group_id.is_empty() {
        response.error_code = ResponseError::InvalidGroupId.code();
        return response;
    }
    if version >= 1 && request.member_id.is_empty() {
        response.error_code = ResponseError::InvalidRequest.code();
        response.error_message = Some(s("a member id is required"));
        return response;
    }
    if request.subscribed_topic_regex.as_ref().is_some_and(|r| !r.is_empty() && regex::Regex::new(r).is_err()) {
        response.error_code = ResponseError::InvalidRegularExpression.code();
        response.error_message = Some(s("the subscription regex does not compile"));
        return response;
    }
    let heartbeat = consumer::Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: request.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: if version >= 1 {
            request.subscribed_topic_regex.as_ref().map(|r| r.to_string())
        } else {
            None
        },
        server_assignor: request.server_assignor.as_ref().map(|a| a.to_string()),
        owned: request
            .topic_partitions
            .as_ref()
            .map(|ts| ts.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))).collect()),
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: client_host(context),
    };
    let id = group_id.clone();
    let result = on_coordinator(context, &group_id, move |state, at, shared| async move {
        let topics = topics_view(&shared);
        state.groups.consumer_heartbeat(at, &id, heartbeat, &topics, &regex_matches).await
    })
    .await
    .and_then(|r| r);
    match result {
        Ok(reply) => {
            response.error_code = reply.error.map_or(0, |e| e.code());
            response.error_message = reply.message.map(s);
            response.member_id = Some(s(reply.member_id));
            response.member_epoch = reply.member_epoch;
            response.heartbeat_interval_ms = reply.heartbeat_interval_ms;
            response.assignment = reply.assignment.map(|set| {
                let mut by_topic: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
                for (topic, p) in set {
                    by_topic.entry(topic).or_default().push(p);
                }
                let mut a = consumer_group_heartbeat_response::Assignment::default();
                a.topic_partitions = by_topic
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        let mut tp = consumer_group_heartbeat_response::TopicPartitions::default();
                        tp.topic_id = topic_id;
                        tp.partitions = partitions;
                        tp
                    })
                    .collect();
                a
            });
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}

/// ConsumerGroupDescribe (KIP-848 groups).
pub async fn consumer_group_describe(
    context: &Context,
    request: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let mut response = ConsumerGroupDescribeResponse::default();
    for group_id in request.group_ids.clone() {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, at, shared| async move {
            state.groups.inspect(at, |c| describe_consumer_group(c, &id, &shared, version)).await?
        })
        .await
        .and_then(|r| r);
        response.groups.push(result.unwrap_or_else(|error| {
            let mut described = consumer_group_describe_response::DescribedGroup::default();
            described.group_id = group_id.clone();
            described.error_code = error.code();
            described.authorized_operations = i32::MIN;
            described
        }));
    }
    for g in response.groups.iter_mut().filter(|g| g.error_code == 0) {
        g.authorized_operations =
            crate::api::authorized::when_asked(request.include_authorized_operations, crate::api::authorized::GROUP);
    }
    response
}

/// ConsumerGroupDescribe's answer for one group of coordinator `c`.
fn describe_consumer_group(
    c: &crate::groups::coordinator::Coordinator,
    id: &str,
    shared: &crate::shard::BrokerShared,
    version: i16,
) -> Result<consumer_group_describe_response::DescribedGroup, ResponseError> {
    let group = c.groups.get(id).ok_or(ResponseError::GroupIdNotFound)?;
    let Protocol::Consumer(g) = &group.protocol else { return Err(ResponseError::GroupIdNotFound) };
    let names: BTreeMap<uuid::Uuid, String> =
        shared.topics.image().topics.values().map(|t| (t.id, t.name.clone())).collect();
    let assignment = |set: &BTreeSet<(uuid::Uuid, i32)>| {
        let mut by_topic: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
        for (t, p) in set {
            by_topic.entry(*t).or_default().push(*p);
        }
        let mut a = consumer_group_describe_response::Assignment::default();
        a.topic_partitions = by_topic
            .into_iter()
            .map(|(topic_id, partitions)| {
                let mut tp = consumer_group_describe_response::TopicPartitions::default();
                tp.topic_id = topic_id;
                tp.topic_name = TopicName(s(names.get(&topic_id).cloned().unwrap_or_default()));
                tp.partitions = partitions;
                tp
            })
            .collect();
        a
    };
    let mut described = consumer_group_describe_response::DescribedGroup::default();
    described.group_id = GroupId(s(id.to_string()));
    described.group_state = s(g.state_name());
    described.group_epoch = g.epoch();
    described.assignment_epoch = g.assignment_epoch();
    described.assignor_name = s(g.assignor());
    described.authorized_operations = i32::MIN;
    described.members = g
        .members()
        .map(|m| {
            let mut member = consumer_group_describe_response::Member::default();
            member.member_id = s(m.member_id.clone());
            member.instance_id = m.metadata.instance_id.clone().map(s);
            member.rack_id = m.metadata.rack_id.clone().map(s);
            member.member_epoch = m.epoch;
            member.client_id = s(m.metadata.client_id.clone());
            member.client_host = s(m.metadata.client_host.clone());
            member.subscribed_topic_names =
                m.metadata.subscribed_names.iter().map(|n| TopicName(s(n.clone()))).collect();
            member.subscribed_topic_regex = m.metadata.subscribed_regex.clone().map(s);
            member.assignment = assignment(&m.assigned);
            member.target_assignment = assignment(&g.target_of(&m.member_id));
            if version >= 1 {
                member.member_type = 1;
            }
            member
        })
        .collect();
    Ok(described)
}
