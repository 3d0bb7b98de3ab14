//! Fetch (v4–12): whole batches from each partition's owning shard, up to
//! the high watermark, with partition and response `max_bytes` (the first
//! batch always whole), and long polling: while fewer than `min_bytes` are
//! available, wait on the owning shards for new data until `max_wait_ms`.
//!
//! Fetch sessions (KIP-227): this broker answers every fetch as a full one
//! and returns session id 0, which tells clients that no session was
//! created, so they keep sending full fetch requests (what Kafka does when
//! its session cache is full). A request naming a session id is refused with
//! FETCH_SESSION_ID_NOT_FOUND.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::partitions::FetchOutcome;

/// Upper bound on polling rounds of one fetch (each waits for new data).
const MAX_POLL_ROUNDS: usize = 1000;

struct Target {
    topic_index: usize,
    name: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    shard: Option<usize>,
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                out.extend_from_slice(&chunk);
            }
            out.freeze()
        }
    }
}

async fn read_all(context: &Context, targets: &[Target]) -> Vec<FetchOutcome> {
    let reads = targets.iter().map(|t| {
        let (name, partition, offset, max_bytes) = (t.name.clone(), t.partition, t.offset, t.max_bytes);
        async move {
            let unknown = FetchOutcome {
                error_code: ResponseError::UnknownTopicOrPartition.code(),
                high_watermark: -1,
                log_start: -1,
                records: Vec::new(),
            };
            match t.shard {
                None => unknown,
                Some(shard) => context
                    .mesh
                    .call(shard, move |state| async move { state.fetch(&name, partition, offset, max_bytes).await })
                    .await
                    .unwrap_or(unknown),
            }
        }
    });
    futures::future::join_all(reads).await
}

/// Waits until any owning shard reports new data, or the deadline.
async fn wait_for_any(context: &Context, targets: &[Target], deadline: Instant) {
    let mut by_shard: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); context.shared.shards];
    for t in targets {
        if let Some(shard) = t.shard {
            by_shard[shard].push((t.name.clone(), t.partition, t.offset));
        }
    }
    let waits: Vec<_> = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, list)| !list.is_empty())
        .map(|(shard, list)| {
            Box::pin(context.mesh.call(shard, move |state| async move { state.wait_for_data(list, deadline).await }))
        })
        .collect();
    if waits.is_empty() {
        compio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return;
    }
    let _ = futures::future::select_all(waits).await;
}

/// Handles a Fetch request.
pub async fn handle(context: &Context, request: FetchRequest, version: i16) -> FetchResponse {
    let mut response = FetchResponse::default();
    if request.session_id != 0 {
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return response;
    }
    let image = context.shared.topics.image();
    let mut targets = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let name = topic.topic.0.to_string();
        let info = image.topics.get(&name);
        for p in &topic.partitions {
            let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, p.partition));
            let max_bytes = p.partition_max_bytes.max(0) as usize;
            targets.push(Target {
                topic_index,
                name: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes,
                shard,
            });
        }
    }
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut outcomes = read_all(context, &targets).await;
    for _ in 0..MAX_POLL_ROUNDS {
        let total: usize = outcomes.iter().flat_map(|o| o.records.iter()).map(Bytes::len).sum();
        let errors = outcomes.iter().any(|o| o.error_code != 0);
        if total >= min_bytes.max(1) || errors || Instant::now() >= deadline || targets.is_empty() {
            break;
        }
        wait_for_any(context, &targets, deadline).await;
        outcomes = read_all(context, &targets).await;
    }
    let response_max = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let mut total = 0usize;
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            let mut r = FetchableTopicResponse::default();
            r.topic = t.topic.clone();
            r.topic_id = t.topic_id;
            r
        })
        .collect();
    for (target, outcome) in targets.iter().zip(outcomes) {
        let mut p = PartitionData::default();
        p.partition_index = target.partition;
        p.error_code = outcome.error_code;
        p.high_watermark = outcome.high_watermark;
        p.last_stable_offset = outcome.high_watermark;
        if version >= 5 {
            p.log_start_offset = outcome.log_start;
        }
        p.aborted_transactions = Some(Vec::new());
        let records = concat(outcome.records);
        if total > 0 && total + records.len() > response_max {
            p.records = Some(Bytes::new());
        } else {
            total += records.len();
            p.records = Some(records);
        }
        topics[target.topic_index].partitions.push(p);
    }
    response.responses = topics;
    response
}
