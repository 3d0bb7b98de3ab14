//! Group administration: ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete, and the subscription helpers they share.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::{on_coordinator, s};
use crate::coordinators::CoordinatorLog;
use crate::groups::consumer::TopicsView;
use crate::groups::coordinator::{Coordinator, Group, Protocol};
use crate::groups::records::OffsetsRecord;
use crate::groups::OFFSETS_TOPIC;
use crate::route::scatter_topic;
use crate::shard::BrokerShared;

/// Summary of one group for ListGroups.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    protocol_type: String,
    state: &'static str,
    kind: &'static str,
}

/// Every group on every shard, one message per shard.
/// Every group of every loaded coordinator, and the first error of a
/// coordinator that could not answer (one still loading:
/// COORDINATOR_LOAD_IN_PROGRESS), so a partial list is never silent.
async fn all_groups(context: &Context) -> (Vec<Listed>, Option<ResponseError>) {
    let answers = scatter_topic(&context.shared, &context.mesh, OFFSETS_TOPIC, |state, index| async move {
        let at = CoordinatorLog::of(&state.partitions, OFFSETS_TOPIC, index);
        vec![state.groups.inspect(at, list_coordinator).await]
    })
    .await;
    crate::api::gather(answers)
}

fn list_coordinator(c: &Coordinator) -> Vec<Listed> {
    c.groups
        .iter()
        .map(|(id, g)| Listed {
            id: id.clone(),
            protocol_type: g.protocol_type(),
            state: g.state_name(),
            kind: g.type_name(),
        })
        .collect()
}

/// ListGroups (v4: state filter, v5: type filter).
pub async fn list_groups(context: &Context, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut response = ListGroupsResponse::default();
    let (groups, error) = all_groups(context).await;
    response.error_code = error.map_or(0, |e| e.code());
    response.groups = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.contains(&g.kind.to_string()))
        .map(|g| {
            let mut listed = list_groups_response::ListedGroup::default();
            listed.group_id = GroupId(s(g.id));
            listed.protocol_type = s(g.protocol_type);
            if version >= 4 {
                listed.group_state = s(g.state);
            }
            if version >= 5 {
                listed.group_type = s(g.kind);
            }
            listed
        })
        .collect();
    response
}

/// DescribeGroups: classic groups in full; a KIP-848 group is described
/// with its members (Kafka answers these through ConsumerGroupDescribe).
pub async fn describe_groups(
    context: &Context,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups.clone() {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, at, _| async move {
            state.groups.inspect(at, |c| describe_group(c, &id, version)).await
        })
        .await
        .and_then(|r| r);
        response.groups.push(result.unwrap_or_else(|error| {
            let mut described = describe_groups_response::DescribedGroup::default();
            described.group_id = group_id.clone();
            described.error_code = error.code();
            described.authorized_operations = i32::MIN;
            described
        }));
    }
    // v3+: a described group's operations when asked (all, with no authorizer).
    let asked = version >= 3 && request.include_authorized_operations;
    for g in response.groups.iter_mut().filter(|g| g.error_code == 0) {
        g.authorized_operations = crate::api::authorized::when_asked(asked, crate::api::authorized::GROUP);
    }
    response
}

/// DescribeGroups' answer for group `id` of coordinator `c`.
fn describe_group(c: &Coordinator, id: &str, version: i16) -> describe_groups_response::DescribedGroup {
    let mut described = describe_groups_response::DescribedGroup::default();
    described.group_id = GroupId(s(id.to_string()));
    described.authorized_operations = i32::MIN;
    match c.groups.get(id) {
        None => described.group_state = s("Dead"),
        Some(g) => {
            described.group_state = s(g.state_name());
            described.protocol_type = s(g.protocol_type());
            match &g.protocol {
                Protocol::Classic(classic) => {
                    described.protocol_data = s(classic.protocol().unwrap_or_default());
                    let stable = matches!(classic.state(), crate::groups::classic::State::Stable);
                    described.members = classic
                        .members()
                        .map(|m| {
                            let mut member = describe_groups_response::DescribedGroupMember::default();
                            member.member_id = s(m.member_id.clone());
                            if version >= 4 {
                                member.group_instance_id = m.instance_id.clone().map(s);
                            }
                            member.client_id = s(m.client_id.clone());
                            member.client_host = s(m.client_host.clone());
                            member.member_metadata = m.metadata(classic.protocol());
                            if stable {
                                member.member_assignment = m.assignment.clone();
                            }
                            member
                        })
                        .collect();
                }
                Protocol::Consumer(consumer) => {
                    described.protocol_data = s(consumer.assignor());
                    described.members = consumer
                        .members()
                        .map(|m| {
                            let mut member = describe_groups_response::DescribedGroupMember::default();
                            member.member_id = s(m.member_id.clone());
                            if version >= 4 {
                                member.group_instance_id = m.metadata.instance_id.clone().map(s);
                            }
                            member.client_id = s(m.metadata.client_id.clone());
                            member.client_host = s(m.metadata.client_host.clone());
                            member
                        })
                        .collect();
                }
            }
        }
    }
    described
}

/// DeleteGroups: only empty groups; their offsets go too.
pub async fn delete_groups(context: &Context, request: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, at, _| async move {
            let planned = state.groups.append_planned(at, |c| Ok(((), c.plan_delete_group(&id)?))).await;
            planned
        })
        .await
        .and_then(|r| r);
        let mut r = delete_groups_response::DeletableGroupResult::default();
        r.group_id = group_id;
        r.error_code = result.err().map_or(0, |e| e.code());
        response.results.push(r);
    }
    response
}

/// OffsetDelete: removes committed offsets of partitions the group does
/// not consume (any partition, once the group is empty).
pub async fn offset_delete(context: &Context, request: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let asked: Vec<(TopicName, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let id = group_id.clone();
    let list = asked.clone();
    let result = on_coordinator(context, &group_id, move |state, at, shared| async move {
        state.groups.append_planned(at, |c| plan_offset_delete(c, &id, &list, &shared)).await
    })
    .await
    .and_then(|r| r);
    let mut response = OffsetDeleteResponse::default();
    match result {
        Err(error) => response.error_code = error.code(),
        Ok(codes) => {
            response.topics = asked
                .into_iter()
                .zip(codes)
                .map(|((name, parts), codes)| {
                    let mut t = offset_delete_response::OffsetDeleteResponseTopic::default();
                    t.name = name;
                    t.partitions = parts
                        .into_iter()
                        .zip(codes)
                        .map(|(index, code)| {
                            let mut p = offset_delete_response::OffsetDeleteResponsePartition::default();
                            p.partition_index = index;
                            p.error_code = code;
                            p
                        })
                        .collect();
                    t
                })
                .collect();
        }
    }
    response
}

/// OffsetDelete's plan for group `id`: per asked partition its error code,
/// and the tombstones of the committed offsets to delete.
fn plan_offset_delete(
    c: &Coordinator,
    id: &str,
    asked: &[(TopicName, Vec<i32>)],
    shared: &BrokerShared,
) -> Result<(Vec<Vec<i16>>, Vec<OffsetsRecord>), ResponseError> {
    let group = c.groups.get(id).ok_or(ResponseError::GroupIdNotFound)?;
    let subscribed = subscribed_topics(group, shared);
    let mut records = Vec::new();
    let codes: Vec<Vec<i16>> = asked
        .iter()
        .map(|(topic, parts)| {
            parts
                .iter()
                .map(|p| {
                    if !shared.partition_exists(topic, *p) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if subscribed.contains(topic.as_str()) {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        if group.offsets.contains_key(&(topic.to_string(), *p)) {
                            records.push(OffsetsRecord::Offset {
                                group: id.to_string(),
                                topic: topic.to_string(),
                                partition: *p,
                                value: None,
                            });
                        }
                        0
                    }
                })
                .collect()
        })
        .collect();
    Ok((codes, records))
}

/// Topics a group's members consume: from the consumer protocol's
/// subscription metadata (classic) or the members' subscriptions (KIP-848).
fn subscribed_topics(group: &Group, shared: &BrokerShared) -> BTreeSet<String> {
    match &group.protocol {
        Protocol::Classic(classic) => {
            if classic.protocol_type() != Some("consumer") {
                return BTreeSet::new();
            }
            classic.members().flat_map(|m| consumer_subscription(&m.metadata(classic.protocol()))).collect()
        }
        Protocol::Consumer(consumer) => {
            let topics = topics_view(shared);
            consumer
                .members()
                .flat_map(|m| {
                    let regex = m.metadata.subscribed_regex.clone();
                    let names = m.metadata.subscribed_names.clone();
                    topics
                        .keys()
                        .filter(move |t| names.contains(t) || regex.as_deref().is_some_and(|r| regex_matches(r, t)))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }
}

/// Topic names in a consumer protocol subscription (ConsumerProtocol
/// Subscription: version int16, topics array of strings, ...).
pub fn consumer_subscription(metadata: &Bytes) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = &metadata[..];
    if bytes.len() < 6 {
        return out;
    }
    let count = i32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    let mut at = 6usize;
    for _ in 0..count.max(0) {
        let Some(len) = bytes.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else { break };
        at += 2;
        let Some(name) = usize::try_from(len).ok().and_then(|len| bytes.get(at..at + len)) else { break };
        at += name.len();
        out.push(String::from_utf8_lossy(name).into_owned());
    }
    out
}

/// Topics a KIP-848 assignor may hand out (internal ones excluded).
pub fn topics_view(shared: &BrokerShared) -> TopicsView {
    shared
        .topics
        .image()
        .topics
        .values()
        .filter(|t| !t.name.starts_with("__"))
        .map(|t| (t.name.clone(), (t.id, t.partition_shards.len() as i32)))
        .collect()
}

/// Compiled subscription regexes are kept per shard, at most this many.
const REGEX_CACHE_SLOTS: usize = 256;

thread_local! {
    /// This shard's compiled subscription regexes (None: does not compile).
    static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether `topic` matches a subscription regex (the whole name, as Java's
/// Pattern.matches does). Compiled once per shard and regex.
pub fn regex_matches(regex: &str, topic: &str) -> bool {
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(regex) {
            if cache.len() >= REGEX_CACHE_SLOTS {
                cache.clear();
            }
            cache.insert(regex.to_string(), regex::Regex::new(&format!("^(?:{regex})$")).ok());
        }
        cache.get(regex).and_then(|r| r.as_ref()).is_some_and(|r| r.is_match(topic))
    })
}
