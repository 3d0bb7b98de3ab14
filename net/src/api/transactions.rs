//! Transaction APIs (the classic path, before KIP-890's transaction
//! version 2, which is not advertised): InitProducerId with a
//! transactional id, AddPartitionsToTxn 0–3, AddOffsetsToTxn 0–3, EndTxn
//! 0–3, TxnOffsetCommit 0–3, and for operators ListTransactions 0–1,
//! DescribeTransactions 0 and DescribeProducers 0. Decoded on the
//! connection's shard, carried out on the shard of the transactional id's
//! `__transaction_state` partition (or the group's offsets partition for
//! TxnOffsetCommit); see `crate::txn`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures::Future;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use shardline_engine::runtime::mesh::Mesh;

use super::groups::{
    commit_records, fail_unwritten, internal_topic, offsets_topic, on_coordinator, partition_exists, s, CommitAsked,
};
use super::Context;
use crate::broker::BrokerShared;
use crate::groups::coordinator::Protocol;
use crate::groups::records::partition_for;
use crate::groups::{self, wall_ms, OFFSETS_TOPIC};
use crate::partitions::ShardPartitions;
use crate::topics::TopicInfo;
use crate::txn::coordinator::{InitPlan, TxnStatus};
use crate::txn::{self, TXN_TOPIC};

/// `__transaction_state`, created on first use.
pub async fn transaction_topic(context: &Context) -> Result<Arc<TopicInfo>, ResponseError> {
    internal_topic(context, TXN_TOPIC, context.shared.config.transaction_state_num_partitions).await
}

/// Runs `work` on the shard coordinating `transactional_id`.
async fn on_txn_coordinator<R, F, Fut>(context: &Context, transactional_id: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardPartitions>, i32, Arc<BrokerShared>, Mesh<ShardPartitions>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, ResponseError>> + 'static,
{
    let topic = transaction_topic(context).await?;
    let partition = partition_for(transactional_id, topic.partition_shards.len() as i32);
    let shard =
        context.shared.shard_of(&topic.partition_shards, partition).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let (shared, mesh) = (context.shared.clone(), context.mesh.clone());
    context
        .mesh
        .call(shard, move |state| work(state, partition, shared, mesh))
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?
}

/// InitProducerId with a transactional id: a new producer id, or the next
/// epoch of the existing one (fencing older producers, aborting their open
/// transaction first).
pub async fn init_transactional(
    context: &Context,
    transactional_id: String,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), ResponseError> {
    if timeout_ms <= 0 || timeout_ms > context.shared.config.transaction_max_timeout_ms {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    let id = transactional_id.clone();
    on_txn_coordinator(context, &transactional_id, move |state, partition, shared, mesh| async move {
        let coordinator = txn::coordinator(&state, partition).await?;
        for _ in 0..3 {
            let plan = {
                let mut allocate =
                    || shared.producer_ids.allocate().map_err(|_| ResponseError::CoordinatorNotAvailable);
                coordinator.borrow().init(&id, timeout_ms, expected, wall_ms(), &mut allocate)?
            };
            match plan {
                InitPlan::Ready(meta) => {
                    let answer = (meta.producer_id, meta.epoch);
                    txn::persist(&state, partition, &coordinator, &id, meta).await?;
                    return Ok(answer);
                }
                InitPlan::AbortFirst(abort, preparing) => {
                    txn::persist(&state, partition, &coordinator, &id, preparing).await?;
                    txn::complete(&state, &shared, &mesh, partition, &coordinator, abort).await?;
                }
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    })
    .await
}

/// AddPartitionsToTxn (v0–3: one transaction per request).
pub async fn add_partitions(
    context: &Context,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let id = request.v3_and_below_transactional_id.to_string();
    let asked: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p)))
        .collect();
    let unknown: Vec<bool> = asked.iter().map(|(t, p)| !partition_exists(&context.shared, t, *p)).collect();
    let (producer_id, epoch) = (request.v3_and_below_producer_id.0, request.v3_and_below_producer_epoch);
    let result = if unknown.iter().any(|u| *u) {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let (txn_id, partitions) = (id.clone(), asked.clone());
        on_txn_coordinator(context, &id, move |state, partition, _, _| async move {
            let coordinator = txn::coordinator(&state, partition).await?;
            let next = coordinator.borrow().add_partitions(
                &txn_id,
                producer_id,
                epoch,
                &partitions,
                wall_ms(),
                version >= 2,
            )?;
            if let Some(meta) = next {
                txn::persist(&state, partition, &coordinator, &txn_id, meta).await?;
            }
            Ok(())
        })
        .await
    };
    let mut by_topic: BTreeMap<String, Vec<add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult>> =
        BTreeMap::new();
    for ((topic, p), unknown) in asked.into_iter().zip(unknown) {
        let mut r = add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
        r.partition_index = p;
        r.partition_error_code = match &result {
            _ if unknown => ResponseError::UnknownTopicOrPartition.code(),
            Ok(()) => 0,
            Err(e) => e.code(),
        };
        by_topic.entry(topic).or_default().push(r);
    }
    let mut response = AddPartitionsToTxnResponse::default();
    response.results_by_topic_v3_and_below = by_topic
        .into_iter()
        .map(|(name, results)| {
            let mut t = add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
            t.name = TopicName(s(name));
            t.results_by_partition = results;
            t
        })
        .collect();
    response
}

/// AddOffsetsToTxn: adds the group's offsets partition to the transaction.
pub async fn add_offsets(context: &Context, request: AddOffsetsToTxnRequest, version: i16) -> AddOffsetsToTxnResponse {
    let mut response = AddOffsetsToTxnResponse::default();
    let group = request.group_id.to_string();
    let result = match offsets_topic(context).await {
        Err(e) => Err(e),
        Ok(topic) => {
            let offsets_partition =
                (OFFSETS_TOPIC.to_string(), partition_for(&group, topic.partition_shards.len() as i32));
            let id = request.transactional_id.to_string();
            let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
            let txn_id = id.clone();
            on_txn_coordinator(context, &id, move |state, partition, _, _| async move {
                let coordinator = txn::coordinator(&state, partition).await?;
                let next = coordinator.borrow().add_partitions(
                    &txn_id,
                    producer_id,
                    epoch,
                    std::slice::from_ref(&offsets_partition),
                    wall_ms(),
                    version >= 2,
                )?;
                if let Some(meta) = next {
                    txn::persist(&state, partition, &coordinator, &txn_id, meta).await?;
                }
                Ok(())
            })
            .await
        }
    };
    response.error_code = result.err().map_or(0, |e| e.code());
    response
}

/// EndTxn: commit or abort; answered once every marker is written.
pub async fn end_txn(context: &Context, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = request.transactional_id.to_string();
    let (producer_id, epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let txn_id = id.clone();
    let result = on_txn_coordinator(context, &id, move |state, partition, shared, mesh| async move {
        let coordinator = txn::coordinator(&state, partition).await?;
        let decided = coordinator.borrow().end(&txn_id, producer_id, epoch, commit, wall_ms(), version >= 2)?;
        if let Some((prepare, completion)) = decided {
            txn::persist(&state, partition, &coordinator, &txn_id, prepare).await?;
            txn::complete(&state, &shared, &mesh, partition, &coordinator, completion).await?;
        }
        Ok(())
    })
    .await;
    let mut response = EndTxnResponse::default();
    response.error_code = result.err().map_or(0, |e| e.code());
    response
}

/// TxnOffsetCommit: offsets written inside the producer's transaction to
/// the group's offsets partition; visible once the commit marker lands.
pub async fn txn_offset_commit(
    context: &Context,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let shape: Vec<(TopicName, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let id = group_id.clone();
    let result: Result<Vec<Vec<i16>>, ResponseError> =
        on_coordinator(context, &group_id, move |state, partition, shared| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let now_wall = wall_ms();
            if version >= 3 && (request.generation_id >= 0 || !request.member_id.is_empty()) {
                let mut c = coordinator.borrow_mut();
                let group = c.group_or_create(&id, now_wall);
                match &mut group.protocol {
                    Protocol::Classic(g) => g.check_commit(
                        &request.member_id,
                        request.group_instance_id.as_deref(),
                        request.generation_id,
                        state.groups.now(),
                    )?,
                    Protocol::Consumer(g) => g.check_member_epoch(&request.member_id, request.generation_id)?,
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
                            leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                        .collect();
                    (t.name.to_string(), partitions)
                })
                .collect();
            let (mut codes, records) =
                commit_records(&shared, state.config.offset_metadata_max_bytes, &id, &asked, now_wall);
            let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
            if !records.is_empty() {
                match groups::append_transactional(&state, partition, producer_id, epoch, &records).await {
                    Ok(()) => {
                        let mut c = coordinator.borrow_mut();
                        for record in records {
                            c.replay_pending(producer_id, record, now_wall);
                        }
                    }
                    Err(error) => fail_unwritten(&mut codes, error),
                }
            }
            Ok(codes)
        })
        .await
        .and_then(|r| r);
    let mut response = TxnOffsetCommitResponse::default();
    response.topics = shape
        .into_iter()
        .enumerate()
        .map(|(t, (name, partitions))| {
            let mut topic = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
            topic.name = name;
            topic.partitions = partitions
                .into_iter()
                .enumerate()
                .map(|(i, index)| {
                    let mut p = txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = match &result {
                        Ok(codes) => codes[t][i],
                        Err(e) => e.code(),
                    };
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// One transactional id as operators see it.
struct Listed {
    id: String,
    producer_id: i64,
    epoch: i16,
    status: TxnStatus,
    timeout_ms: i32,
    start_ms: i64,
    partitions: Vec<(String, i32)>,
}

async fn all_transactions(context: &Context) -> Vec<Listed> {
    let Some(topic) = context.shared.topics.image().topics.get(TXN_TOPIC).cloned() else { return Vec::new() };
    let mut out = Vec::new();
    for shard in 0..context.shared.shards {
        let partitions: Vec<i32> = (0..topic.partition_shards.len() as i32)
            .filter(|p| context.shared.shard_of(&topic.partition_shards, *p) == Some(shard))
            .collect();
        let listed = context
            .mesh
            .call(shard, move |state| async move {
                let mut listed = Vec::new();
                for p in partitions {
                    let Ok(c) = txn::coordinator(&state, p).await else { continue };
                    for (id, m) in c.borrow().txns.iter() {
                        listed.push(Listed {
                            id: id.clone(),
                            producer_id: m.producer_id,
                            epoch: m.epoch,
                            status: m.status,
                            timeout_ms: m.timeout_ms,
                            start_ms: m.start_ms,
                            partitions: m.partitions.iter().cloned().collect(),
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

/// ListTransactions (v0–1: state, producer id and duration filters).
pub async fn list_transactions(
    context: &Context,
    request: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    let known = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let mut response = ListTransactionsResponse::default();
    response.unknown_state_filters =
        request.state_filters.iter().filter(|f| !known.contains(&f.as_str())).cloned().collect();
    let now = wall_ms();
    let min_duration = if version >= 1 { request.duration_filter } else { -1 };
    response.transaction_states = all_transactions(context)
        .await
        .into_iter()
        .filter(|t| {
            request.state_filters.is_empty() || request.state_filters.iter().any(|f| f.as_str() == t.status.name())
        })
        .filter(|t| {
            request.producer_id_filters.is_empty() || request.producer_id_filters.iter().any(|p| p.0 == t.producer_id)
        })
        .filter(|t| min_duration < 0 || (t.start_ms >= 0 && now - t.start_ms >= min_duration))
        .map(|t| {
            let mut state = list_transactions_response::TransactionState::default();
            state.transactional_id = TransactionalId(s(t.id));
            state.producer_id = ProducerId(t.producer_id);
            state.transaction_state = s(t.status.name());
            state
        })
        .collect();
    response
}

/// DescribeTransactions (v0).
pub async fn describe_transactions(
    context: &Context,
    request: DescribeTransactionsRequest,
    _version: i16,
) -> DescribeTransactionsResponse {
    let all = all_transactions(context).await;
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let mut state = describe_transactions_response::TransactionState::default();
        state.transactional_id = id.clone();
        match all.iter().find(|t| t.id == id.as_str()) {
            None => state.error_code = ResponseError::TransactionalIdNotFound.code(),
            Some(t) => {
                state.transaction_state = s(t.status.name());
                state.transaction_timeout_ms = t.timeout_ms;
                state.transaction_start_time_ms = t.start_ms;
                state.producer_id = ProducerId(t.producer_id);
                state.producer_epoch = t.epoch;
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, p) in &t.partitions {
                    by_topic.entry(topic.clone()).or_default().push(*p);
                }
                state.topics = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut d = describe_transactions_response::TopicData::default();
                        d.topic = TopicName(s(topic));
                        d.partitions = partitions;
                        d
                    })
                    .collect();
            }
        }
        response.transaction_states.push(state);
    }
    response
}

/// DescribeProducers (v0): the active producers of each partition.
pub async fn describe_producers(
    context: &Context,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let image = context.shared.topics.image();
    let mut response = DescribeProducersResponse::default();
    for topic in request.topics {
        let name = topic.name.to_string();
        let info = image.topics.get(&name).cloned();
        let mut t = describe_producers_response::TopicResponse::default();
        t.name = topic.name.clone();
        for index in topic.partition_indexes {
            let mut p = describe_producers_response::PartitionResponse::default();
            p.partition_index = index;
            let shard = info.as_ref().and_then(|i| context.shared.shard_of(&i.partition_shards, index));
            let Some(shard) = shard else {
                p.error_code = ResponseError::UnknownTopicOrPartition.code();
                t.partitions.push(p);
                continue;
            };
            let topic_name = name.clone();
            let described = context
                .mesh
                .call(shard, move |state| async move {
                    let producers = state.describe_producers(&topic_name, index)?;
                    let ongoing: BTreeMap<i64, i64> =
                        state.ongoing_transactions(&topic_name, index).into_iter().collect();
                    Some((producers, ongoing))
                })
                .await
                .ok()
                .flatten();
            match described {
                None => p.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some((producers, ongoing)) => {
                    p.active_producers = producers
                        .into_iter()
                        .map(|(id, epoch, last_sequence, last_timestamp)| {
                            let mut ps = describe_producers_response::ProducerState::default();
                            ps.producer_id = ProducerId(id);
                            ps.producer_epoch = i32::from(epoch);
                            ps.last_sequence = last_sequence;
                            ps.last_timestamp = last_timestamp;
                            ps.coordinator_epoch = 0;
                            ps.current_txn_start_offset = ongoing.get(&id).copied().unwrap_or(-1);
                            ps
                        })
                        .collect();
                }
            }
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    response
}
