//! Consumer-group APIs: FindCoordinator (0–4), the classic protocol
//! (JoinGroup 0–9, SyncGroup 0–5, Heartbeat 0–4, LeaveGroup 0–5), KIP-848
//! (ConsumerGroupHeartbeat 0–1, ConsumerGroupDescribe 0–1), offsets
//! (OffsetCommit 2–9, OffsetFetch 1–9, OffsetDelete 0) and group admin
//! (ListGroups 0–5, DescribeGroups 0–5, DeleteGroups 0–2). Each request is
//! decoded on the connection's shard and carried out on the shard of the
//! group's coordinator (`crate::groups`).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::Future;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::BrokerShared;
use crate::groups::classic::{ClassicGroup, Join};
use crate::groups::consumer::{self, ConsumerGroup, TopicsView};
use crate::groups::coordinator::{Group, Protocol};
use crate::groups::records::{partition_for, OffsetValue, OffsetsRecord};
use crate::groups::{self, wall_ms, OFFSETS_TOPIC};
use crate::partitions::ShardPartitions;
use crate::topics::TopicInfo;

pub(super) fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// `__consumer_offsets`, created on first use.
pub async fn offsets_topic(context: &Context) -> Result<Arc<TopicInfo>, ResponseError> {
    if let Some(topic) = context.shared.topics.image().topics.get(OFFSETS_TOPIC) {
        return Ok(topic.clone());
    }
    // Kafka compacts this topic. Until compaction exists here, nothing is
    // ever deleted from it by retention, so no committed offset is lost.
    let configs: BTreeMap<String, String> =
        [("retention.ms", "-1"), ("retention.bytes", "-1"), ("segment.bytes", "104857600")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let partitions = context.shared.config.offsets_topic_num_partitions;
    match super::create_topic(context, OFFSETS_TOPIC, partitions, configs).await {
        Ok(topic) => Ok(topic),
        Err(_) => context
            .shared
            .topics
            .image()
            .topics
            .get(OFFSETS_TOPIC)
            .cloned()
            .ok_or(ResponseError::CoordinatorNotAvailable),
    }
}

/// Runs `work` on the shard coordinating `group`, with its offsets
/// partition.
pub(super) async fn on_coordinator<R, F, Fut>(context: &Context, group: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardPartitions>, i32, Arc<BrokerShared>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let topic = offsets_topic(context).await?;
    let partition = partition_for(group, topic.partition_shards.len() as i32);
    let shard =
        context.shared.shard_of(&topic.partition_shards, partition).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let shared = context.shared.clone();
    context
        .mesh
        .call(shard, move |state| work(state, partition, shared))
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// FindCoordinator: this node coordinates every group.
pub async fn find_coordinator(
    context: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 { request.coordinator_keys.clone() } else { vec![request.key.clone()] };
    let ready = match request.key_type {
        0 => offsets_topic(context).await.map(|_| ()),
        1 => super::transactions::transaction_topic(context).await.map(|_| ()),
        _ => Err(ResponseError::InvalidRequest),
    };
    let (host, port) = context.shared.advertised.clone();
    let node = BrokerId(context.shared.config.node_id);
    let mut response = FindCoordinatorResponse::default();
    let (error, message) = match ready {
        Ok(()) => (0, None),
        Err(e) if request.key_type > 1 => {
            (e.code(), Some(s(format!("coordinator key type {} is not supported", request.key_type))))
        }
        Err(e) => (e.code(), Some(s("the coordinator's internal topic is not available"))),
    };
    let (node, host) = if error == 0 { (node, s(host)) } else { (BrokerId(-1), s("")) };
    let port = if error == 0 { port } else { -1 };
    if version >= 4 {
        response.coordinators = keys
            .into_iter()
            .map(|key| {
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = key;
                c.node_id = node;
                c.host = host.clone();
                c.port = port;
                c.error_code = error;
                c.error_message = message.clone();
                c
            })
            .collect();
    } else {
        response.node_id = node;
        response.host = host;
        response.port = port;
        response.error_code = error;
        if version >= 1 {
            response.error_message = message;
        }
    }
    response
}

fn client_host(context: &Context) -> String {
    format!("/{}", context.peer.ip())
}

/// JoinGroup: waits until the rebalance completes.
pub async fn join_group(
    context: &Context,
    header: &RequestHeader,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let join = Join {
        token: 0,
        member_id: request.member_id.to_string(),
        instance_id: if version >= 5 { request.group_instance_id.as_ref().map(|i| i.to_string()) } else { None },
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: client_host(context),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let reply = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        let id = group_id.clone();
        on_coordinator(context, &group_id, move |state, partition, _| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let token = state.groups.token();
            let rx = state.groups.wait_join(token);
            let effects = {
                let mut c = coordinator.borrow_mut();
                let limits = c.classic_limits;
                let group = c.group_or_create(&id, wall_ms());
                if let Protocol::Consumer(consumer) = &group.protocol {
                    // An empty KIP-848 group may turn classic, as in Kafka.
                    if !consumer.is_empty() {
                        return Err(ResponseError::InconsistentGroupProtocol);
                    }
                    let mut classic = ClassicGroup::new(limits);
                    classic.restore_generation(consumer.epoch());
                    group.protocol = Protocol::Classic(classic);
                }
                let Protocol::Classic(classic) = &mut group.protocol else { unreachable!("converted above") };
                let mut effects = Vec::new();
                let random = uuid::Uuid::new_v4().as_u64_pair().0;
                classic.join(Join { token, ..join }, state.groups.now(), random, &mut effects);
                if !classic.is_empty() {
                    group.empty_since_ms = None;
                }
                effects
            };
            groups::run_effects(&state, partition, &id, effects);
            rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
        })
        .await
        .and_then(|r| r)
    };
    let mut response = JoinGroupResponse::default();
    match reply {
        Ok(reply) => {
            response.error_code = reply.error.map_or(0, |e| e.code());
            response.generation_id = reply.generation;
            if version >= 7 {
                response.protocol_type = reply.protocol_type.map(s);
            }
            response.protocol_name = reply.protocol_name.map(s);
            if version < 7 && response.protocol_name.is_none() {
                response.protocol_name = Some(s(""));
            }
            response.leader = s(reply.leader);
            response.member_id = s(reply.member_id);
            if version >= 9 {
                response.skip_assignment = reply.skip_assignment;
            }
            response.members = reply
                .members
                .into_iter()
                .map(|m| {
                    let mut member = join_group_response::JoinGroupResponseMember::default();
                    member.member_id = s(m.member_id);
                    if version >= 5 {
                        member.group_instance_id = m.instance_id.map(s);
                    }
                    member.metadata = m.metadata;
                    member
                })
                .collect();
        }
        Err(error) => {
            response.error_code = error.code();
            response.generation_id = -1;
            response.member_id = request.member_id.clone();
            if version < 7 {
                response.protocol_name = Some(s(""));
            }
        }
    }
    response
}

/// SyncGroup: followers wait for the leader's assignment.
pub async fn sync_group(context: &Context, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let id = group_id.clone();
    let reply = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let token = state.groups.token();
        let rx = state.groups.wait_sync(token);
        let effects = {
            let mut c = coordinator.borrow_mut();
            let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else {
                return Err(ResponseError::InconsistentGroupProtocol);
            };
            let mut effects = Vec::new();
            let assignments =
                request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
            classic.sync(
                token,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                if version >= 5 { request.protocol_type.as_deref() } else { None },
                if version >= 5 { request.protocol_name.as_deref() } else { None },
                assignments,
                state.groups.now(),
                wall_ms(),
                &mut effects,
            );
            effects
        };
        groups::run_effects(&state, partition, &id, effects);
        rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
    })
    .await
    .and_then(|r| r);
    let mut response = SyncGroupResponse::default();
    match reply {
        Ok(reply) => {
            response.error_code = reply.error.map_or(0, |e| e.code());
            if version >= 5 && reply.error.is_none() {
                response.protocol_type = reply.protocol_type.map(s);
                response.protocol_name = reply.protocol_name.map(s);
            }
            response.assignment = reply.assignment;
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}

/// Heartbeat.
pub async fn heartbeat(context: &Context, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let id = group_id.clone();
    let result = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let mut c = coordinator.borrow_mut();
        let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
        match &mut group.protocol {
            Protocol::Classic(classic) => classic.heartbeat(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                state.groups.now(),
            ),
            Protocol::Consumer(_) => Err(ResponseError::UnknownMemberId),
        }
    })
    .await
    .and_then(|r| r);
    let mut response = HeartbeatResponse::default();
    response.error_code = result.err().map_or(0, |e| e.code());
    response
}

/// LeaveGroup (v3+: several members, by member or instance id).
pub async fn leave_group(context: &Context, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let id = group_id.clone();
    let list = leaving.clone();
    let result = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let (results, effects) = {
            let mut c = coordinator.borrow_mut();
            let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else { return Err(ResponseError::UnknownMemberId) };
            let mut effects = Vec::new();
            let now = state.groups.now();
            let results: Vec<Option<ResponseError>> = list
                .iter()
                .map(|(member, instance)| classic.leave(member, instance.as_deref(), now, &mut effects).err())
                .collect();
            if classic.is_empty() && group.empty_since_ms.is_none() {
                group.empty_since_ms = Some(wall_ms());
            }
            (results, effects)
        };
        groups::run_effects(&state, partition, &id, effects);
        Ok(results)
    })
    .await
    .and_then(|r| r);
    let mut response = LeaveGroupResponse::default();
    match result {
        Ok(results) if version >= 3 => {
            response.members = leaving
                .into_iter()
                .zip(results)
                .map(|((member, instance), error)| {
                    let mut m = leave_group_response::MemberResponse::default();
                    m.member_id = s(member);
                    m.group_instance_id = instance.map(s);
                    m.error_code = error.map_or(0, |e| e.code());
                    m
                })
                .collect();
        }
        Ok(results) => response.error_code = results.first().copied().flatten().map_or(0, |e| e.code()),
        Err(error) => response.error_code = error.code(),
    }
    response
}

/// Where a topic partition stands for offset validation.
pub(super) fn partition_exists(shared: &BrokerShared, topic: &str, partition: i32) -> bool {
    shared
        .topics
        .image()
        .topics
        .get(topic)
        .is_some_and(|t| partition >= 0 && (partition as usize) < t.partition_shards.len())
}

/// OffsetCommit: stored durably before the answer.
pub async fn offset_commit(context: &Context, request: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let shape: Vec<(TopicName, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let id = group_id.clone();
    let result: Result<Vec<Vec<i16>>, ResponseError> = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        on_coordinator(context, &group_id, move |state, partition, shared| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let now_wall = wall_ms();
            // Validate the member, then each partition.
            {
                let mut c = coordinator.borrow_mut();
                let group = c.group_or_create(&id, now_wall);
                let generation = request.generation_id_or_member_epoch;
                let instance = if version >= 7 { request.group_instance_id.as_deref() } else { None };
                match &mut group.protocol {
                    Protocol::Classic(g) => {
                        g.check_commit(&request.member_id, instance, generation, state.groups.now())?
                    }
                    Protocol::Consumer(g) => {
                        if version < 9 && !(generation < 0 && request.member_id.is_empty() && g.is_empty()) {
                            return Err(ResponseError::UnsupportedVersion);
                        }
                        g.check_member_epoch(&request.member_id, generation)?
                    }
                }
            }
            let max_metadata = state.config.offset_metadata_max_bytes;
            let mut codes = Vec::new();
            let mut records = Vec::new();
            for topic in &request.topics {
                let mut topic_codes = Vec::new();
                for p in &topic.partitions {
                    let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
                    let code = if !partition_exists(&shared, &topic.name, p.partition_index) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if metadata.len() > max_metadata {
                        ResponseError::OffsetMetadataTooLarge.code()
                    } else {
                        records.push(OffsetsRecord::Offset {
                            group: id.clone(),
                            topic: topic.name.to_string(),
                            partition: p.partition_index,
                            value: Some(OffsetValue {
                                offset: p.committed_offset,
                                leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                                metadata,
                                commit_timestamp: now_wall,
                            }),
                        });
                        0
                    };
                    topic_codes.push(code);
                }
                codes.push(topic_codes);
            }
            match groups::append(&state, partition, &records).await {
                Ok(()) => {
                    let mut c = coordinator.borrow_mut();
                    for record in records {
                        c.replay(record, now_wall);
                    }
                }
                Err(error) => {
                    for code in codes.iter_mut().flatten() {
                        if *code == 0 {
                            *code = error.code();
                        }
                    }
                }
            }
            Ok(codes)
        })
        .await
        .and_then(|r| r)
    };
    let mut response = OffsetCommitResponse::default();
    response.topics = shape
        .into_iter()
        .enumerate()
        .map(|(t, (name, partitions))| {
            let mut topic = offset_commit_response::OffsetCommitResponseTopic::default();
            topic.name = name;
            topic.partitions = partitions
                .into_iter()
                .enumerate()
                .map(|(i, index)| {
                    let mut p = offset_commit_response::OffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = match &result {
                        Ok(codes) => codes[t][i],
                        Err(error) => error.code(),
                    };
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// One partition's committed offset as OffsetFetch reports it.
struct Fetched {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    /// UNSTABLE_OFFSET_COMMIT when stable offsets were asked for and a
    /// transaction holds an offset for this partition.
    error_code: i16,
}

/// Committed offsets of one group: the partitions asked for (None: all).
async fn fetch_group_offsets(
    context: &Context,
    group_id: String,
    asked: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> Result<Vec<Fetched>, ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    let id = group_id.clone();
    on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let c = coordinator.borrow();
        let group = c.groups.get(&id);
        if let (Some((member_id, epoch)), Some(Group { protocol: Protocol::Consumer(g), .. })) = (&member, group) {
            if *epoch >= 0 || !member_id.is_empty() {
                g.check_member_epoch(member_id, *epoch)?;
            }
        }
        let stored = |topic: &str, p: i32| group.and_then(|g| g.offsets.get(&(topic.to_string(), p)));
        let unstable = |topic: &str, p: i32| {
            require_stable && group.is_some_and(|g| g.pending.values().any(|m| m.contains_key(&(topic.to_string(), p))))
        };
        let fetched = |topic: &str, p: i32| {
            let value = stored(topic, p);
            let error_code = if unstable(topic, p) { ResponseError::UnstableOffsetCommit.code() } else { 0 };
            Fetched {
                topic: topic.to_string(),
                partition: p,
                offset: if error_code == 0 { value.map_or(-1, |v| v.offset) } else { -1 },
                leader_epoch: value.map_or(-1, |v| v.leader_epoch),
                metadata: value.map(|v| v.metadata.clone()).unwrap_or_default(),
                error_code,
            }
        };
        Ok(match asked {
            Some(topics) => {
                topics.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t, *p))).map(|(t, p)| fetched(t, p)).collect()
            }
            None => group.map_or_else(Vec::new, |g| g.offsets.keys().map(|(t, p)| fetched(t, *p)).collect()),
        })
    })
    .await
    .and_then(|r| r)
}

fn group_by_topic(fetched: Vec<Fetched>) -> BTreeMap<String, Vec<Fetched>> {
    let mut out: BTreeMap<String, Vec<Fetched>> = BTreeMap::new();
    for f in fetched {
        out.entry(f.topic.clone()).or_default().push(f);
    }
    out
}

/// OffsetFetch (v8+: several groups).
pub async fn offset_fetch(context: &Context, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for group in request.groups {
            let asked =
                group.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
            let member = if version >= 9 { group.member_id.map(|m| (m.to_string(), group.member_epoch)) } else { None };
            let result =
                fetch_group_offsets(context, group.group_id.to_string(), asked, member, request.require_stable).await;
            let mut g = offset_fetch_response::OffsetFetchResponseGroup::default();
            g.group_id = group.group_id;
            match result {
                Ok(fetched) => {
                    g.topics = group_by_topic(fetched)
                        .into_iter()
                        .map(|(name, parts)| {
                            let mut t = offset_fetch_response::OffsetFetchResponseTopics::default();
                            t.name = TopicName(s(name));
                            t.partitions = parts
                                .into_iter()
                                .map(|f| {
                                    let mut p = offset_fetch_response::OffsetFetchResponsePartitions::default();
                                    p.partition_index = f.partition;
                                    p.committed_offset = f.offset;
                                    p.committed_leader_epoch = f.leader_epoch;
                                    p.metadata = Some(s(f.metadata));
                                    p.error_code = f.error_code;
                                    p
                                })
                                .collect();
                            t
                        })
                        .collect();
                }
                Err(error) => g.error_code = error.code(),
            }
            response.groups.push(g);
        }
        return response;
    }
    let asked = request.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    match fetch_group_offsets(
        context,
        request.group_id.to_string(),
        asked,
        None,
        version >= 7 && request.require_stable,
    )
    .await
    {
        Ok(fetched) => {
            response.topics = group_by_topic(fetched)
                .into_iter()
                .map(|(name, parts)| {
                    let mut t = offset_fetch_response::OffsetFetchResponseTopic::default();
                    t.name = TopicName(s(name));
                    t.partitions = parts
                        .into_iter()
                        .map(|f| {
                            let mut p = offset_fetch_response::OffsetFetchResponsePartition::default();
                            p.partition_index = f.partition;
                            p.committed_offset = f.offset;
                            if version >= 5 {
                                p.committed_leader_epoch = f.leader_epoch;
                            }
                            p.metadata = Some(s(f.metadata));
                            p.error_code = f.error_code;
                            p
                        })
                        .collect();
                    t
                })
                .collect();
        }
        Err(error) if version >= 2 => response.error_code = error.code(),
        Err(_) => {}
    }
    response
}

/// Summary of one group for ListGroups.
struct Listed {
    id: String,
    protocol_type: String,
    state: &'static str,
    kind: &'static str,
}

/// Every group on every shard.
async fn all_groups(context: &Context) -> Vec<Listed> {
    let Some(topic) = context.shared.topics.image().topics.get(OFFSETS_TOPIC).cloned() else { return Vec::new() };
    let mut out = Vec::new();
    for shard in 0..context.shared.shards {
        let partitions: Vec<i32> = topic
            .partition_shards
            .iter()
            .enumerate()
            .filter(|(i, _)| context.shared.shard_of(&topic.partition_shards, *i as i32) == Some(shard))
            .map(|(i, _)| i as i32)
            .collect();
        let listed = context
            .mesh
            .call(shard, move |state| async move {
                let mut listed = Vec::new();
                for p in partitions {
                    let Ok(c) = groups::coordinator(&state, p).await else { continue };
                    for (id, g) in c.borrow().groups.iter() {
                        listed.push(Listed {
                            id: id.clone(),
                            protocol_type: g.protocol_type(),
                            state: g.state_name(),
                            kind: g.type_name(),
                        });
                    }
                }
                listed
            })
            .await;
        out.extend(listed.unwrap_or_default());
    }
    out
}

/// ListGroups (v4: state filter, v5: type filter).
pub async fn list_groups(context: &Context, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut response = ListGroupsResponse::default();
    response.groups = all_groups(context)
        .await
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
    for group_id in request.groups {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, partition, _| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let c = coordinator.borrow();
            let mut described = describe_groups_response::DescribedGroup::default();
            described.group_id = GroupId(s(id.clone()));
            described.authorized_operations = i32::MIN;
            match c.groups.get(&id) {
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
                                        member.group_instance_id = m.instance_id.clone().map(s);
                                    }
                                    member.client_id = s(m.client_id.clone());
                                    member.client_host = s(m.client_host.clone());
                                    member
                                })
                                .collect();
                        }
                    }
                }
            }
            Ok::<_, ResponseError>(described)
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
    if version < 3 {
        for g in &mut response.groups {
            g.authorized_operations = i32::MIN;
        }
    }
    response
}

/// DeleteGroups: only empty groups; their offsets go too.
pub async fn delete_groups(context: &Context, request: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, partition, _| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let records = {
                let c = coordinator.borrow();
                let group = c.groups.get(&id).ok_or(ResponseError::GroupIdNotFound)?;
                if !group.is_empty() {
                    return Err(ResponseError::NonEmptyGroup);
                }
                let mut records: Vec<OffsetsRecord> = group
                    .offsets
                    .keys()
                    .map(|(t, p)| OffsetsRecord::Offset {
                        group: id.clone(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    })
                    .collect();
                records.push(match group.protocol {
                    Protocol::Classic(_) => OffsetsRecord::Group { group: id.clone(), value: None },
                    Protocol::Consumer(_) => OffsetsRecord::ConsumerGroupEpoch { group: id.clone(), epoch: None },
                });
                records
            };
            groups::append(&state, partition, &records).await?;
            coordinator.borrow_mut().groups.remove(&id);
            Ok(())
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
    let result = on_coordinator(context, &group_id, move |state, partition, shared| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let (codes, records) = {
            let c = coordinator.borrow();
            let group = c.groups.get(&id).ok_or(ResponseError::GroupIdNotFound)?;
            let subscribed = subscribed_topics(group, &shared);
            let mut records = Vec::new();
            let codes: Vec<Vec<i16>> = list
                .iter()
                .map(|(topic, parts)| {
                    parts
                        .iter()
                        .map(|p| {
                            if !partition_exists(&shared, topic, *p) {
                                ResponseError::UnknownTopicOrPartition.code()
                            } else if subscribed.contains(topic.as_str()) {
                                ResponseError::GroupSubscribedToTopic.code()
                            } else {
                                if group.offsets.contains_key(&(topic.to_string(), *p)) {
                                    records.push(OffsetsRecord::Offset {
                                        group: id.clone(),
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
            (codes, records)
        };
        groups::append(&state, partition, &records).await?;
        let mut c = coordinator.borrow_mut();
        for record in records {
            c.replay(record, wall_ms());
        }
        Ok(codes)
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
                    let regex = m.subscribed_regex.clone();
                    let names = m.subscribed_names.clone();
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

/// Whether `topic` matches a subscription regex (the whole name, as Java's
/// Pattern.matches does).
pub fn regex_matches(regex: &str, topic: &str) -> bool {
    regex::Regex::new(&format!("^(?:{regex})$")).is_ok_and(|r| r.is_match(topic))
}

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
    let result = on_coordinator(context, &group_id, move |state, partition, shared| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let mut c = coordinator.borrow_mut();
        let limits = c.consumer_limits.clone();
        let group = c.group_or_create(&id, wall_ms());
        if let Protocol::Classic(classic) = &group.protocol {
            if !classic.is_empty() {
                return Err(ResponseError::GroupIdNotFound);
            }
            let mut fresh = ConsumerGroup::new(limits);
            fresh.restore_epoch(classic.generation());
            group.protocol = Protocol::Consumer(fresh);
        }
        let Protocol::Consumer(g) = &mut group.protocol else { unreachable!("converted above") };
        let topics = topics_view(&shared);
        let reply =
            g.heartbeat(heartbeat, &topics, &regex_matches, state.groups.now(), uuid::Uuid::new_v4().to_string());
        let empty = g.is_empty();
        if empty && group.empty_since_ms.is_none() {
            group.empty_since_ms = Some(wall_ms());
        } else if !empty {
            group.empty_since_ms = None;
        }
        groups::persist_consumer_epochs(&state, partition, &mut c);
        Ok(reply)
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
    for group_id in request.group_ids {
        let id = group_id.to_string();
        let result = on_coordinator(context, &id.clone(), move |state, partition, shared| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let c = coordinator.borrow();
            let group = c.groups.get(&id).ok_or(ResponseError::GroupIdNotFound)?;
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
            described.group_id = GroupId(s(id.clone()));
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
                    member.instance_id = m.instance_id.clone().map(s);
                    member.rack_id = m.rack_id.clone().map(s);
                    member.member_epoch = m.epoch;
                    member.client_id = s(m.client_id.clone());
                    member.client_host = s(m.client_host.clone());
                    member.subscribed_topic_names =
                        m.subscribed_names.iter().map(|n| TopicName(s(n.clone()))).collect();
                    member.subscribed_topic_regex = m.subscribed_regex.clone().map(s);
                    member.assignment = assignment(&m.assigned);
                    member.target_assignment = assignment(&g.target_of(&m.member_id));
                    if version >= 1 {
                        member.member_type = 1;
                    }
                    member
                })
                .collect();
            Ok(described)
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
    response
}
