//! OffsetCommit and OffsetFetch.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::{asked_commits, on_coordinator, s};
use crate::groups::coordinator::{Group, Protocol};
use crate::groups::service::CommitAsk;

/// OffsetCommit: stored durably before the answer.
pub async fn offset_commit(context: &Context, request: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let shape: Vec<(TopicName, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let offsets = asked_commits(request.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            let epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
            (p.partition_index, p.committed_offset, epoch, p.committed_metadata.as_ref().map(|m| m.to_string()))
        });
        (t.name.to_string(), partitions.collect())
    }));
    let ask = CommitAsk {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        instance_id: if version >= 7 { request.group_instance_id.as_ref().map(|i| i.to_string()) } else { None },
        generation: request.generation_id_or_member_epoch,
        check_member: true,
        consumer_groups_allowed: version >= 9,
        offsets,
    };
    let result: Result<Vec<Vec<i16>>, ResponseError> = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        on_coordinator(context, &group_id, move |state, at, shared| async move {
            let exists = |topic: &str, p: i32| shared.partition_exists(topic, p);
            state.groups.commit_offsets(at, ask, None, &exists).await
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
    on_coordinator(context, &group_id, move |state, at, _| async move {
        state.groups.inspect(at, |c| committed_offsets(c, &id, asked, member, require_stable)).await?
    })
    .await
    .and_then(|r| r)
}

/// OffsetFetch's answer for group `id` of coordinator `c`.
fn committed_offsets(
    c: &crate::groups::coordinator::Coordinator,
    id: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> Result<Vec<Fetched>, ResponseError> {
    let group = c.groups.get(id);
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
    let asked: Option<Vec<(String, Vec<i32>)>> =
        request.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    match fetch_group_offsets(
        context,
        request.group_id.to_string(),
        asked.clone(),
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
        Err(error) => {
            // v0–1 have no top-level error: each asked partition carries it.
            response.topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(name, partitions)| {
                    let mut t = offset_fetch_response::OffsetFetchResponseTopic::default();
                    t.name = TopicName(s(name));
                    t.partitions = partitions
                        .into_iter()
                        .map(|index| {
                            let mut p = offset_fetch_response::OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            p.committed_offset = -1;
                            p.metadata = Some(s(""));
                            p.error_code = error.code();
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
