//! Transaction APIs (the classic path, before KIP-890's transaction
//! version 2, which is not advertised): InitProducerId with a
//! transactional id, AddPartitionsToTxn 0–3, AddOffsetsToTxn 0–3, EndTxn
//! 0–3, TxnOffsetCommit 0–3, and for operators ListTransactions 0–1,
//! DescribeTransactions 0 and DescribeProducers 0. Decoded on the
//! connection's shard, carried out by the transaction service on the
//! shard of the transactional id's `__transaction_state` partition (or by
//! the group service of the group's offsets partition for
//! TxnOffsetCommit); see `crate::txn::service`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures::Future;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use shardline_engine::runtime::mesh::Mesh;

use super::groups::{asked_commits, internal_topic, offsets_topic, on_coordinator, s};
use super::Context;
use crate::coordinators::CoordinatorLog;
use crate::groups::records::partition_for;
use crate::groups::service::CommitAsk;
use crate::groups::OFFSETS_TOPIC;
use crate::route::{scatter, scatter_topic, ControllerProducerIds, MeshMarkers};
use crate::shard::{BrokerShared, ShardState};
use crate::topics::TopicInfo;
use crate::txn::service::Listed;
use crate::txn::TXN_TOPIC;

/// `__transaction_state`, created on first use.
pub async fn transaction_topic(context: &Context) -> Result<Arc<TopicInfo>, ResponseError> {
    internal_topic(context, TXN_TOPIC, context.shared.config.transaction_state_num_partitions).await
}

/// Runs `work` on the shard coordinating `transactional_id`, with its
/// `__transaction_state` partition there.
async fn on_txn_coordinator<R, F, Fut>(context: &Context, transactional_id: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardState>, CoordinatorLog<crate::shard::ShardDisk>, Arc<BrokerShared>, Mesh<ShardState>) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = Result<R, ResponseError>> + 'static,
{
    let topic = transaction_topic(context).await?;
    let index = partition_for(transactional_id, topic.partition_shards.len() as i32);
    let shard = context.shared.coordinator_shard(&topic.partition_shards, index)?;
    let (shared, mesh) = (context.shared.clone(), context.mesh.clone());
    context
        .mesh
        .call(shard, move |state| {
            let at = CoordinatorLog::of(&state.partitions, TXN_TOPIC, index);
            work(state, at, shared, mesh)
        })
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
    on_txn_coordinator(context, &transactional_id, move |state, at, shared, mesh| async move {
        let ids = ControllerProducerIds { state: state.clone(), shared: shared.clone() };
        let markers = MeshMarkers { shared, mesh };
        state.txns.init_producer(at, &id, timeout_ms, expected, &ids, &markers).await
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
    let unknown: Vec<bool> = asked.iter().map(|(t, p)| !context.shared.partition_exists(t, *p)).collect();
    // Markers reach only this broker's partitions (WriteTxnMarkers to other
    // brokers is not built): a transaction over another broker's partition
    // is refused rather than left open there for ever.
    let elsewhere: Vec<bool> = asked
        .iter()
        .zip(&unknown)
        .map(|((t, p), unknown)| !unknown && context.shared.shard_of_partition(t, *p).is_none())
        .collect();
    if elsewhere.iter().any(|e| *e) {
        tracing::warn!(transactional_id = %id, "refused a transaction over partitions of another broker (not built yet)");
    }
    let (producer_id, epoch) = (request.v3_and_below_producer_id.0, request.v3_and_below_producer_epoch);
    let result = if unknown.iter().chain(&elsewhere).any(|u| *u) {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let (txn_id, partitions) = (id.clone(), asked.clone());
        on_txn_coordinator(context, &id, move |state, at, _, _| async move {
            state.txns.add_partitions(at, &txn_id, producer_id, epoch, &partitions, version >= 2).await
        })
        .await
    };
    let mut by_topic: BTreeMap<String, Vec<add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult>> =
        BTreeMap::new();
    for (((topic, p), unknown), elsewhere) in asked.into_iter().zip(unknown).zip(elsewhere) {
        let mut r = add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
        r.partition_index = p;
        r.partition_error_code = match &result {
            _ if unknown => ResponseError::UnknownTopicOrPartition.code(),
            _ if elsewhere => ResponseError::InvalidTxnState.code(),
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
        Ok(topic)
            if context
                .shared
                .shard_of(&topic.partition_shards, partition_for(&group, topic.partition_shards.len() as i32))
                .is_none() =>
        {
            // The group's coordinator is another broker, which no marker reaches yet.
            tracing::warn!(%group, "refused transactional offsets of a group another broker coordinates (not built yet)");
            Err(ResponseError::InvalidTxnState)
        }
        Ok(topic) => {
            let offsets_partition =
                (OFFSETS_TOPIC.to_string(), partition_for(&group, topic.partition_shards.len() as i32));
            let id = request.transactional_id.to_string();
            let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
            let txn_id = id.clone();
            on_txn_coordinator(context, &id, move |state, at, _, _| async move {
                let partitions = std::slice::from_ref(&offsets_partition);
                state.txns.add_partitions(at, &txn_id, producer_id, epoch, partitions, version >= 2).await
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
    let result = on_txn_coordinator(context, &id, move |state, at, shared, mesh| async move {
        let markers = MeshMarkers { shared, mesh };
        state.txns.end(at, &txn_id, producer_id, epoch, commit, version >= 2, &markers).await
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
    let offsets = asked_commits(request.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            let epoch = if version >= 2 { p.committed_leader_epoch } else { -1 };
            (p.partition_index, p.committed_offset, epoch, p.committed_metadata.as_ref().map(|m| m.to_string()))
        });
        (t.name.to_string(), partitions.collect())
    }));
    let ask = CommitAsk {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: request.generation_id,
        check_member: version >= 3 && (request.generation_id >= 0 || !request.member_id.is_empty()),
        consumer_groups_allowed: true,
        offsets,
    };
    let txn = Some((request.producer_id.0, request.producer_epoch));
    let result: Result<Vec<Vec<i16>>, ResponseError> =
        on_coordinator(context, &group_id, move |state, at, shared| async move {
            let exists = |topic: &str, p: i32| shared.partition_exists(topic, p);
            state.groups.commit_offsets(at, ask, txn, &exists).await
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

/// Every transactional id of every coordinator, one message per shard.
/// Every transaction of every loaded coordinator, and the first error of a
/// coordinator that could not answer (COORDINATOR_LOAD_IN_PROGRESS while
/// one loads), so a partial list is never silent.
async fn all_transactions(context: &Context) -> (Vec<Listed>, Option<ResponseError>) {
    let answers = scatter_topic(&context.shared, &context.mesh, TXN_TOPIC, |state, index| async move {
        let at = CoordinatorLog::of(&state.partitions, TXN_TOPIC, index);
        vec![state.txns.list(at).await]
    })
    .await;
    crate::api::gather(answers)
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
    let now = context.state.clock.now_ms();
    let min_duration = if version >= 1 { request.duration_filter } else { -1 };
    let (transactions, error) = all_transactions(context).await;
    response.error_code = error.map_or(0, |e| e.code());
    response.transaction_states = transactions
        .into_iter()
        .filter(|t| {
            request.state_filters.is_empty() || request.state_filters.iter().any(|f| f.as_str() == t.meta.status.name())
        })
        .filter(|t| {
            request.producer_id_filters.is_empty()
                || request.producer_id_filters.iter().any(|p| p.0 == t.meta.producer_id)
        })
        .filter(|t| min_duration < 0 || (t.meta.start_ms >= 0 && now - t.meta.start_ms >= min_duration))
        .map(|t| {
            let mut state = list_transactions_response::TransactionState::default();
            state.transactional_id = TransactionalId(s(t.id));
            state.producer_id = ProducerId(t.meta.producer_id);
            state.transaction_state = s(t.meta.status.name());
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
    let (all, unanswered) = all_transactions(context).await;
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let mut state = describe_transactions_response::TransactionState::default();
        state.transactional_id = id.clone();
        match all.iter().find(|t| t.id == id.as_str()) {
            // Not found, unless a coordinator that may hold it could not answer.
            None => state.error_code = unanswered.unwrap_or(ResponseError::TransactionalIdNotFound).code(),
            Some(t) => {
                state.transaction_state = s(t.meta.status.name());
                state.transaction_timeout_ms = t.meta.timeout_ms;
                state.transaction_start_time_ms = t.meta.start_ms;
                state.producer_id = ProducerId(t.meta.producer_id);
                state.producer_epoch = t.meta.epoch;
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, p) in &t.meta.partitions {
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

/// One producer of a partition as DescribeProducers reports it.
#[derive(Debug, Clone)]
struct Described {
    id: i64,
    epoch: i16,
    last_sequence: i32,
    last_timestamp: i64,
    current_txn_start_offset: i64,
}

/// DescribeProducers (v0): the active producers of each partition.
pub async fn describe_producers(
    context: &Context,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let image = context.shared.topics.image();
    let mut items = Vec::new();
    for topic in &request.topics {
        let name = topic.name.to_string();
        let info = image.topics.get(&name);
        for &index in &topic.partition_indexes {
            let shard = info.and_then(|i| context.shared.shard_of(&i.partition_shards, index));
            items.push((shard, (name.clone(), index)));
        }
    }
    let mut described = scatter(&context.mesh, items, None, |state, asked| async move {
        asked
            .into_iter()
            .map(|(topic, index)| {
                let replica = state.partitions.get(&topic, index)?;
                let producers = replica.partition.producer_state();
                let ongoing: BTreeMap<i64, i64> = producers.ongoing().collect();
                let list =
                    producers.describe().into_iter().map(|(id, epoch, last_sequence, last_timestamp)| Described {
                        id,
                        epoch,
                        last_sequence,
                        last_timestamp,
                        current_txn_start_offset: ongoing.get(&id).copied().unwrap_or(-1),
                    });
                Some(list.collect::<Vec<_>>())
            })
            .collect()
    })
    .await
    .into_iter();
    let mut response = DescribeProducersResponse::default();
    for topic in request.topics {
        let mut t = describe_producers_response::TopicResponse::default();
        t.name = topic.name.clone();
        for index in topic.partition_indexes {
            let mut p = describe_producers_response::PartitionResponse::default();
            p.partition_index = index;
            match described.next().flatten() {
                None => p.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(producers) => {
                    p.active_producers = producers
                        .into_iter()
                        .map(|d| {
                            let mut ps = describe_producers_response::ProducerState::default();
                            ps.producer_id = ProducerId(d.id);
                            ps.producer_epoch = i32::from(d.epoch);
                            ps.last_sequence = d.last_sequence;
                            ps.last_timestamp = d.last_timestamp;
                            ps.coordinator_epoch = 0;
                            ps.current_txn_start_offset = d.current_txn_start_offset;
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
