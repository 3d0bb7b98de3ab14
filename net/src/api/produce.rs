//! Produce (v3–11, acks 0, 1 and -1): each partition's batches are
//! appended as the leader on the shard that owns it and acknowledged once
//! as durable as `acks` asks (acks=1: written; acks=-1: the topic's
//! `shardline.acks.all.fsync`, written or fdatasync'ed). The partitions of
//! one request travel to their shards in one message per shard and
//! proceed concurrently there.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::partition::Durability;
use shardline_engine::runtime::clock::timeout;

use super::{Answer, Context};
use crate::errors::{produce_error, ProduceError};
use crate::route::{scatter, MeshVerifier};
use crate::shard::ShardState;
use crate::topics::is_internal;
use crate::txn::verify::append_client_batch;

/// What a produce to one partition answered.
#[derive(Debug, Clone)]
struct ProduceOutcome {
    error: Option<ProduceError>,
    base_offset: i64,
    log_start: i64,
}

fn failed(error: impl Into<ProduceError>) -> ProduceOutcome {
    ProduceOutcome { error: Some(error.into()), base_offset: -1, log_start: -1 }
}

/// One partition's part of a request, as sent to its shard.
struct PartitionProduce {
    topic: String,
    index: i32,
    records: BytesMut,
}

/// What every partition of one request shares on its way to its shard.
#[derive(Clone)]
struct RequestShape {
    acks: i16,
    timeout_after: Duration,
    transactional_id: Option<String>,
    verifier: MeshVerifier,
}

/// Appends on this shard (verifying a transaction's first batch with its
/// coordinator) and waits as `acks` asks, within `timeout_after`.
async fn produce_here(state: &ShardState, produce: PartitionProduce, shape: &RequestShape) -> ProduceOutcome {
    let Some(replica) = state.partitions.get(&produce.topic, produce.index) else {
        return failed(ResponseError::UnknownTopicOrPartition);
    };
    let transactional_id = shape.transactional_id.as_deref();
    let now = state.clock.now_ms();
    let (topic, index) = (&produce.topic, produce.index);
    let appended = match append_client_batch(
        &replica,
        topic,
        index,
        produce.records,
        transactional_id,
        &shape.verifier,
        now,
    )
    .await
    {
        Ok(appended) => appended,
        Err(error) => return failed(error),
    };
    let partition = &replica.partition;
    let durability = match shape.acks {
        0 => None,
        1 => Some(Durability::Written),
        _ => Some(replica.acks_all),
    };
    let wait = async {
        match durability {
            None => Ok(()),
            Some(durability) => partition.wait_until(appended.end_offset(), durability).await,
        }
    };
    match timeout(&*state.clock, shape.timeout_after, wait).await {
        Ok(Ok(())) => ProduceOutcome { error: None, base_offset: appended.base_offset, log_start: appended.log_start },
        Ok(Err(error)) => failed(produce_error(&error)),
        Err(_) => failed(ResponseError::RequestTimedOut),
    }
}

/// Handles a Produce request. acks=0 gets no response, and a failure
/// closes the connection instead.
pub async fn handle(context: &Context, request: ProduceRequest, version: i16) -> Answer {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let timeout_after = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let image = context.shared.topics.image();
    // A partition named more than once is produced once, with its last data
    // (Kafka keys a request's data by partition).
    let mut last_entry = std::collections::HashMap::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        for (p, partition) in topic.partition_data.iter().enumerate() {
            last_entry.insert((topic.name.0.to_string(), partition.index), (t, p));
        }
    }
    // Each answer slot: (topic, partition, an outcome decided here or the
    // position of its work in `work`).
    let mut answers: Vec<(TopicName, i32, Result<ProduceOutcome, usize>)> = Vec::new();
    let mut work: Vec<(Option<usize>, PartitionProduce)> = Vec::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.to_string();
        let info = image.topics.get(&name);
        // One replica here: acks=all cannot satisfy min.insync.replicas > 1.
        let too_few_replicas = acks == -1
            && info
                .and_then(|t| t.configs.get("min.insync.replicas"))
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|min| min > 1);
        for (p, partition) in topic.partition_data.iter().enumerate() {
            let index = partition.index;
            if last_entry.get(&(name.clone(), index)) != Some(&(t, p)) {
                continue;
            }
            let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, index));
            let decided = match (valid_acks, shard, &partition.records) {
                (false, _, _) => Ok(failed(ResponseError::InvalidRequiredAcks)),
                // Only the coordinators write their internal topics.
                _ if is_internal(&name) => Ok(failed(ProduceError {
                    code: ResponseError::InvalidTopicException,
                    message: Some(format!("Cannot append to internal topic {name}")),
                    records: Vec::new(),
                })),
                (_, None, _) => Ok(failed(ResponseError::UnknownTopicOrPartition)),
                _ if too_few_replicas => Ok(failed(ResponseError::NotEnoughReplicas)),
                (_, Some(_), None) => Ok(failed(ResponseError::InvalidRecord)),
                (_, Some(_), Some(records)) if records.is_empty() => Ok(failed(ResponseError::InvalidRecord)),
                (_, Some(shard), Some(records)) => {
                    // The log rewrites offsets in place: it needs its own copy.
                    let records = BytesMut::from(&records[..]);
                    work.push((Some(shard), PartitionProduce { topic: name.clone(), index, records }));
                    Err(work.len() - 1)
                }
            };
            answers.push((topic.name.clone(), index, decided));
        }
    }
    let shape = RequestShape {
        acks,
        timeout_after,
        transactional_id: request.transactional_id.as_ref().map(|id| id.to_string()),
        verifier: MeshVerifier { shared: context.shared.clone(), mesh: context.mesh.clone() },
    };
    let done = scatter(&context.mesh, work, failed(ResponseError::NotLeaderOrFollower), move |state, parts| {
        let shape = shape.clone();
        async move {
            let produces = parts.into_iter().map(|part| {
                let (state, shape) = (state.clone(), &shape);
                async move { produce_here(&state, part, shape).await }
            });
            futures::future::join_all(produces).await
        }
    })
    .await;
    let outcomes: Vec<(TopicName, i32, ProduceOutcome)> = answers
        .into_iter()
        .map(|(topic, index, decided)| (topic, index, decided.unwrap_or_else(|at| done[at].clone())))
        .collect();
    if acks == 0 {
        return if outcomes.iter().any(|(_, _, o)| o.error.is_some()) { Answer::Close } else { Answer::Silent };
    }
    let mut response = ProduceResponse::default();
    for (topic_name, index, outcome) in outcomes {
        let mut p = PartitionProduceResponse::default();
        p.index = index;
        p.error_code = outcome.error.as_ref().map_or(0, |e| e.code.code());
        p.base_offset = outcome.base_offset;
        p.log_append_time_ms = -1;
        if version >= 5 {
            p.log_start_offset = outcome.log_start;
        }
        if let Some(error) = outcome.error.filter(|_| version >= 8) {
            p.error_message = error.message.map(StrBytes::from_string);
            p.record_errors = error
                .records
                .into_iter()
                .map(|record| {
                    let mut e = BatchIndexAndErrorMessage::default();
                    e.batch_index = record.batch_index;
                    e.batch_index_error_message = Some(StrBytes::from_string(record.message));
                    e
                })
                .collect();
        }
        match response.responses.last_mut() {
            Some(last) if last.name == topic_name => last.partition_responses.push(p),
            _ => {
                let mut topic_response = TopicProduceResponse::default();
                topic_response.name = topic_name;
                topic_response.partition_responses.push(p);
                response.responses.push(topic_response);
            }
        }
    }
    Answer::Respond(Box::new(ResponseKind::Produce(response)))
}
