//! Produce (v3–11, acks 0, 1 and -1): each partition's batches go to the
//! shard that owns it, appended and acknowledged as `acks` and the topic's
//! durability ask; partitions of one request proceed concurrently.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{Answer, Context};
use crate::partitions::ProduceOutcome;
use kafka_protocol::messages::ResponseKind;

fn failed(code: ResponseError) -> ProduceOutcome {
    ProduceOutcome { error_code: code.code(), base_offset: -1, log_start: -1 }
}

/// Handles a Produce request. acks=0 gets no response, and a failure
/// closes the connection instead.
pub async fn handle(context: &Context, request: ProduceRequest, version: i16) -> Answer {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let image = context.shared.topics.image();
    // A partition named more than once is produced once, with its last data
    // (Kafka keys a request's data by partition).
    let mut last_entry = std::collections::HashMap::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        for (p, partition) in topic.partition_data.iter().enumerate() {
            last_entry.insert((topic.name.0.to_string(), partition.index), (t, p));
        }
    }
    let mut pending = Vec::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.to_string();
        let info = image.topics.get(&name).cloned();
        for (p, partition) in topic.partition_data.iter().enumerate() {
            let index = partition.index;
            if last_entry.get(&(name.clone(), index)) != Some(&(t, p)) {
                continue;
            }
            let topic_name = topic.name.clone();
            let records = partition.records.clone();
            let shard = info.as_ref().and_then(|t| context.shared.shard_of(&t.partition_shards, index));
            // One replica here: acks=all cannot satisfy min.insync.replicas > 1.
            let too_few_replicas = acks == -1
                && info
                    .as_ref()
                    .and_then(|t| t.configs.get("min.insync.replicas"))
                    .and_then(|v| v.parse::<i32>().ok())
                    .is_some_and(|min| min > 1);
            let name = name.clone();
            pending.push(async move {
                let outcome = match (valid_acks, shard, records) {
                    (false, _, _) => failed(ResponseError::InvalidRequiredAcks),
                    (_, None, _) => failed(ResponseError::UnknownTopicOrPartition),
                    _ if too_few_replicas => failed(ResponseError::NotEnoughReplicas),
                    (_, Some(_), None) => failed(ResponseError::InvalidRecord),
                    (_, Some(_), Some(records)) if records.is_empty() => failed(ResponseError::InvalidRecord),
                    (true, Some(shard), Some(records)) => {
                        // The log rewrites offsets in place: it needs its own copy.
                        let records = BytesMut::from(&records[..]);
                        let call = context.mesh.call(shard, move |state| async move {
                            state.produce(&name, index, records, acks, timeout).await
                        });
                        call.await.unwrap_or_else(|_| failed(ResponseError::NotLeaderOrFollower))
                    }
                };
                (topic_name, index, outcome)
            });
        }
    }
    let outcomes = futures::future::join_all(pending).await;
    if acks == 0 {
        return if outcomes.iter().any(|(_, _, o)| o.error_code != 0) { Answer::Close } else { Answer::Silent };
    }
    let mut response = ProduceResponse::default();
    for (topic_name, index, outcome) in outcomes {
        let mut p = PartitionProduceResponse::default();
        p.index = index;
        p.error_code = outcome.error_code;
        p.base_offset = outcome.base_offset;
        p.log_append_time_ms = -1;
        if version >= 5 {
            p.log_start_offset = outcome.log_start;
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
