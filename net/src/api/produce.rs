//! Produce (v3–11, acks 0, 1 and -1; v10+ names the current leader of a
//! partition led elsewhere, KIP-951): each partition's batches are
//! appended as the leader on the shard that owns it and acknowledged once
//! as durable as `acks` asks (acks=1: written; acks=-1: the topic's
//! `shardline.acks.all.fsync`, written or fdatasync'ed). The partitions of
//! one request travel to their shards in one message per shard and
//! proceed concurrently there.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::partition::Durability;
use shardline_engine::runtime::clock::timeout;
use shardline_replication::metadata::image::MetadataImage;

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

/// Takes each partition's records back out of `frame` (the frame `request`
/// was decoded from) as exclusive buffers, `[topic][partition]` in request
/// order, so the log rewrites offsets and epochs in the producer's own
/// bytes and copies them once, into its tail. The request's names are
/// detached from the frame first; when some other view of the frame still
/// lives (never on the connection's path), the records are copied instead.
fn reclaim_records(frame: Bytes, request: &mut ProduceRequest) -> Vec<Vec<Option<BytesMut>>> {
    request.transactional_id =
        request.transactional_id.take().map(|id| TransactionalId(StrBytes::from_string(id.to_string())));
    let base = frame.as_ptr() as usize;
    // (start in the frame, length, topic, partition) of each partition's records.
    let mut regions: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut out: Vec<Vec<Option<BytesMut>>> = Vec::with_capacity(request.topic_data.len());
    let mut strays: Vec<(usize, usize, Bytes)> = Vec::new();
    for (t, topic) in request.topic_data.iter_mut().enumerate() {
        topic.name = TopicName(StrBytes::from_string(topic.name.0.to_string()));
        out.push(vec![None; topic.partition_data.len()]);
        for (p, partition) in topic.partition_data.iter_mut().enumerate() {
            let Some(records) = partition.records.take() else { continue };
            let start = (records.as_ptr() as usize).wrapping_sub(base);
            if records.is_empty() || start.checked_add(records.len()).is_none_or(|end| end > frame.len()) {
                // Not a view of this frame (or empty): handled on its own.
                strays.push((t, p, records));
            } else {
                regions.push((start, records.len(), t, p));
            }
        }
    }
    for (t, p, records) in strays {
        out[t][p] = Some(BytesMut::from(&records[..]));
    }
    regions.sort_unstable();
    match frame.try_into_mut() {
        Ok(mut rest) => {
            let mut at = 0usize;
            for (start, len, t, p) in regions {
                assert!(start >= at, "records of two partitions overlap in one frame");
                let _ = rest.split_to(start - at);
                out[t][p] = Some(rest.split_to(len));
                at = start + len;
            }
        }
        Err(frame) => {
            for (start, len, t, p) in regions {
                out[t][p] = Some(BytesMut::from(&frame[start..start + len]));
            }
        }
    }
    out
}

/// Handles a Produce request decoded from `frame`. acks=0 gets no
/// response, and a failure closes the connection instead.
pub async fn handle(context: &Context, mut request: ProduceRequest, version: i16, frame: Bytes) -> Answer {
    let mut records = reclaim_records(frame, &mut request);
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
            let decided = match (valid_acks, shard, records[t][p].take()) {
                (false, _, _) => Ok(failed(ResponseError::InvalidRequiredAcks)),
                // Only the coordinators write their internal topics.
                _ if is_internal(&name) => Ok(failed(ProduceError {
                    code: ResponseError::InvalidTopicException,
                    message: Some(format!("Cannot append to internal topic {name}")),
                    records: Vec::new(),
                })),
                (_, None, _) => Ok(failed(context.shared.unavailable(info.map(|t| &**t), index))),
                _ if too_few_replicas => Ok(failed(ResponseError::NotEnoughReplicas)),
                (_, Some(_), None) => Ok(failed(ResponseError::InvalidRecord)),
                (_, Some(_), Some(records)) if records.is_empty() => Ok(failed(ResponseError::InvalidRecord)),
                (_, Some(shard), Some(records)) => {
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
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let led_elsewhere =
        response.responses.iter().flat_map(|t| &t.partition_responses).any(|p| p.error_code == not_leader);
    if version >= 10 && led_elsewhere {
        // The image is read only for an answer that needs it.
        point_to_current_leaders(&context.shared.controller.published().image(), &mut response);
    }
    Answer::Respond(Box::new(ResponseKind::Produce(response)))
}

/// KIP-951: each NOT_LEADER_OR_FOLLOWER partition names the leader and
/// leader epoch `image` knows, and the response carries the endpoint of
/// each such leader that is live, so the producer retries there without
/// waiting for a metadata refresh (v10+).
fn point_to_current_leaders(image: &MetadataImage, response: &mut ProduceResponse) {
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    for topic in &mut response.responses {
        let state = image.topic_ids.get(topic.name.0.as_str()).and_then(|id| image.topics.get(id));
        for p in topic.partition_responses.iter_mut().filter(|p| p.error_code == not_leader) {
            let Some(partition) = state.and_then(|t| usize::try_from(p.index).ok().and_then(|i| t.partitions.get(i)))
            else {
                continue;
            };
            let mut current = LeaderIdAndEpoch::default();
            current.leader_id = BrokerId(partition.leader);
            current.leader_epoch = partition.leader_epoch;
            p.current_leader = current;
            let live = image.brokers.get(&partition.leader).filter(|b| !b.fenced);
            let Some((broker, endpoint)) = live.and_then(|b| Some((b, b.endpoints.first()?))) else {
                continue;
            };
            if response.node_endpoints.iter().any(|n| n.node_id.0 == broker.broker_id) {
                continue;
            }
            let mut node = NodeEndpoint::default();
            node.node_id = BrokerId(broker.broker_id);
            node.host = StrBytes::from_string(endpoint.host.clone());
            node.port = i32::from(endpoint.port);
            node.rack = broker.rack.clone().map(StrBytes::from_string);
            response.node_endpoints.push(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_image::image;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::{Decodable, Encodable};

    /// A v9 produce body with `partitions` partitions of topic "t", each
    /// holding `records` bytes of its own value.
    fn decoded(partitions: i32, records: usize) -> (Bytes, ProduceRequest) {
        let mut request = ProduceRequest::default();
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_static_str("t"));
        for index in 0..partitions {
            let mut partition = PartitionProduceData::default();
            partition.index = index;
            partition.records = Some(Bytes::from(vec![index as u8; records]));
            topic.partition_data.push(partition);
        }
        request.topic_data.push(topic);
        let mut body = BytesMut::new();
        request.encode(&mut body, 9).expect("encode");
        let frame = body.freeze();
        let decoded = ProduceRequest::decode(&mut frame.clone(), 9).expect("decode");
        (frame, decoded)
    }

    #[test]
    fn records_are_taken_back_from_the_frame_without_a_copy() {
        let (frame, mut request) = decoded(3, 5000);
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let records = reclaim_records(frame, &mut request);
        for (index, region) in records[0].iter().enumerate() {
            let region = region.as_ref().expect("records");
            assert_eq!(&region[..], &vec![index as u8; 5000][..]);
            assert!(range.contains(&(region.as_ptr() as usize)), "partition {index} was copied");
        }
        assert!(request.topic_data[0].partition_data.iter().all(|p| p.records.is_none()));
    }

    #[test]
    fn records_are_copied_when_the_frame_is_still_shared() {
        let (frame, mut request) = decoded(2, 100);
        let other_view = frame.clone();
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let records = reclaim_records(frame, &mut request);
        for (index, region) in records[0].iter().enumerate() {
            let region = region.as_ref().expect("records");
            assert_eq!(&region[..], &vec![index as u8; 100][..]);
            assert!(!range.contains(&(region.as_ptr() as usize)), "a shared frame is never written");
        }
        drop(other_view);
    }

    fn answered(topic: &str, partitions: &[(i32, ResponseError)]) -> TopicProduceResponse {
        let mut t = TopicProduceResponse::default();
        t.name = TopicName(StrBytes::from_string(topic.into()));
        t.partition_responses = partitions
            .iter()
            .map(|(index, error)| {
                let mut p = PartitionProduceResponse::default();
                p.index = *index;
                p.error_code = error.code();
                p
            })
            .collect();
        t
    }

    #[test]
    fn a_partition_led_elsewhere_names_its_leader_and_a_live_leaders_endpoint() {
        use ResponseError::{NotLeaderOrFollower as NotLeader, UnknownTopicOrPartition as Unknown};
        let mut response = ProduceResponse::default();
        // "a": 0 and 1 led by broker 1, partition 1 by the fenced broker 2,
        // 2 by nobody; "b" 1 led by 1 again; "zz" unknown.
        response.responses = vec![
            answered("a", &[(0, NotLeader), (1, NotLeader), (2, NotLeader)]),
            answered("b", &[(0, Unknown), (1, NotLeader)]),
            answered("zz", &[(0, NotLeader)]),
        ];
        point_to_current_leaders(&image(), &mut response);
        let leaders: Vec<Vec<(i32, i32)>> = response
            .responses
            .iter()
            .map(|t| {
                t.partition_responses
                    .iter()
                    .map(|p| (p.current_leader.leader_id.0, p.current_leader.leader_epoch))
                    .collect()
            })
            .collect();
        assert_eq!(leaders, vec![vec![(1, 3), (2, 3), (-1, 3)], vec![(-1, -1), (1, 3)], vec![(-1, -1)]]);
        // Only the live leader's endpoint, once.
        let endpoints: Vec<(i32, String, i32)> =
            response.node_endpoints.iter().map(|n| (n.node_id.0, n.host.to_string(), n.port)).collect();
        assert_eq!(endpoints, vec![(1, "127.0.0.1".to_string(), 9091)]);
    }
}
