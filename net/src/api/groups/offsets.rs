//! OffsetCommit and OffsetFetch.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::{on_coordinator, partition_exists, s};
use crate::broker::BrokerShared;
use crate::groups::coordinator::{Group, Protocol};
use crate::groups::records::{OffsetValue, OffsetsRecord};
use crate::groups::{self, wall_ms};

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
            let asked: Vec<(String, Vec<CommitAsked>)> = request
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| CommitAsked {
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                        .collect();
                    (t.name.to_string(), partitions)
                })
                .collect();
            let (mut codes, records) =
                commit_records(&shared, state.config.offset_metadata_max_bytes, &id, &asked, now_wall);
            match groups::append(&state, partition, &records).await {
                Ok(()) => {
                    let mut c = coordinator.borrow_mut();
                    for record in records {
                        c.replay(record, now_wall);
                    }
                }
                Err(error) => fail_unwritten(&mut codes, error),
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

/// One partition's commit as an OffsetCommit or TxnOffsetCommit carries it.
pub(in crate::api) struct CommitAsked {
    /// Partition.
    pub partition: i32,
    /// Offset to commit.
    pub offset: i64,
    /// Leader epoch (-1 when the version has none).
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// Validates each asked commit of `group` (the partition exists, the
/// metadata fits) and builds the records of the valid ones. Returns, per
/// topic and partition, the error code (0: to be written) and the records.
pub(in crate::api) fn commit_records(
    shared: &BrokerShared,
    max_metadata: usize,
    group: &str,
    asked: &[(String, Vec<CommitAsked>)],
    now_wall: i64,
) -> (Vec<Vec<i16>>, Vec<OffsetsRecord>) {
    let mut records = Vec::new();
    let codes = asked
        .iter()
        .map(|(topic, partitions)| {
            partitions
                .iter()
                .map(|p| {
                    let metadata = p.metadata.clone().unwrap_or_default();
                    if !partition_exists(shared, topic, p.partition) {
                        return ResponseError::UnknownTopicOrPartition.code();
                    }
                    if metadata.len() > max_metadata {
                        return ResponseError::OffsetMetadataTooLarge.code();
                    }
                    records.push(OffsetsRecord::Offset {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: p.partition,
                        value: Some(OffsetValue {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata,
                            commit_timestamp: now_wall,
                        }),
                    });
                    0
                })
                .collect()
        })
        .collect();
    (codes, records)
}

/// The write of the valid commits failed: they get its error.
pub(in crate::api) fn fail_unwritten(codes: &mut [Vec<i16>], error: ResponseError) {
    for code in codes.iter_mut().flatten().filter(|c| **c == 0) {
        *code = error.code();
    }
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
