//! Fetch (v4–12): whole batches from each partition's owning shard, up to
//! the high watermark, with partition and response `max_bytes` (the first
//! batch always whole), and long polling: while fewer than `min_bytes` are
//! available, wait on the owning shards for new data until `max_wait_ms`.
//!
//! Fetch sessions (KIP-227, v7+): epoch 0 creates a session holding the
//! requested partitions; later requests name the session and its next
//! epoch, add or update partitions and forget others, and the response
//! carries only partitions with news (records, an error, or a changed high
//! watermark or log start). Epoch -1 closes a session (sessionless full
//! fetch). Sessions live on the shard of the connection.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::partition::Isolation;

use super::Context;
use crate::errors::partition_error;
use crate::fetch_sessions::SessionError;
use crate::route::scatter;
use crate::shard::ShardState;

/// Upper bound on polling rounds of one fetch (each waits for new data).
const MAX_POLL_ROUNDS: usize = 1000;

struct Target {
    name: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    shard: Option<usize>,
}

/// What a fetch from one partition read.
#[derive(Debug, Clone, Default)]
struct FetchOutcome {
    /// Kafka error code (0 = none).
    error_code: i16,
    high_watermark: i64,
    log_start: i64,
    /// Whole batches.
    records: Vec<Bytes>,
    /// Last stable offset (below the first open transaction).
    last_stable_offset: i64,
    /// End of what this isolation level may see (high watermark, or the
    /// last stable offset for read_committed): a long poll waits past it.
    visible_end: i64,
    /// read_committed: aborted transactions in the range read, as
    /// (producer id, first offset).
    aborted: Vec<(i64, i64)>,
}

fn unknown() -> FetchOutcome {
    FetchOutcome {
        error_code: ResponseError::UnknownTopicOrPartition.code(),
        high_watermark: -1,
        log_start: -1,
        last_stable_offset: -1,
        visible_end: -1,
        ..FetchOutcome::default()
    }
}

fn isolation(committed: bool) -> Isolation {
    if committed {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
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

/// Reads one partition on this shard.
async fn read_here(
    state: &ShardState,
    topic: &str,
    index: i32,
    offset: i64,
    max_bytes: usize,
    committed: bool,
) -> FetchOutcome {
    let Some(replica) = state.partitions.get(topic, index) else { return unknown() };
    let partition = &replica.partition;
    match partition.read(offset, max_bytes, isolation(committed)).await {
        Ok(read) => FetchOutcome {
            error_code: 0,
            high_watermark: read.high_watermark,
            log_start: read.log_start,
            records: read.batches,
            last_stable_offset: read.last_stable_offset,
            visible_end: read.visible_end,
            aborted: read.aborted.iter().map(|a| (a.producer_id, a.first_offset)).collect(),
        },
        Err(error) => {
            let offsets = partition.offsets();
            FetchOutcome {
                error_code: partition_error(&error).code(),
                high_watermark: offsets.high_watermark,
                log_start: offsets.log_start,
                last_stable_offset: partition.last_stable_offset(),
                visible_end: partition.visible_end(isolation(committed)),
                ..FetchOutcome::default()
            }
        }
    }
}

async fn read_all(context: &Context, targets: &[Target], committed: bool) -> Vec<FetchOutcome> {
    let items = targets.iter().map(|t| (t.shard, (t.name.clone(), t.partition, t.offset, t.max_bytes))).collect();
    scatter(&context.mesh, items, unknown(), move |state, reads| async move {
        let reads = reads.into_iter().map(|(topic, index, offset, max_bytes)| {
            let state = state.clone();
            async move { read_here(&state, &topic, index, offset, max_bytes, committed).await }
        });
        futures::future::join_all(reads).await
    })
    .await
}

/// Waits until any owning shard reports data past what the last read saw
/// (its visible end, or the fetch offset when nothing was seen), or the
/// deadline (ms on the clock).
async fn wait_for_any(context: &Context, targets: &[Target], seen: &[FetchOutcome], deadline_ms: i64, committed: bool) {
    let mut by_shard: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); context.shared.shards];
    for (t, outcome) in targets.iter().zip(seen) {
        if let Some(shard) = t.shard {
            by_shard[shard].push((t.name.clone(), t.partition, outcome.visible_end.max(t.offset)));
        }
    }
    let waits: Vec<_> = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, list)| !list.is_empty())
        .map(|(shard, list)| {
            Box::pin(context.mesh.call(shard, move |state| async move {
                state.partitions.wait_for_data(list, deadline_ms, isolation(committed)).await
            }))
        })
        .collect();
    if waits.is_empty() {
        let left_ms = (deadline_ms - context.state.clock.now_ms()).max(0) as u64;
        context.state.clock.sleep(std::time::Duration::from_millis(left_ms)).await;
        return;
    }
    let _ = futures::future::select_all(waits).await;
}

/// How a request relates to fetch sessions.
enum Mode {
    /// Full fetch, no session (epoch -1, or a version without sessions).
    Sessionless,
    /// Full fetch that starts session `id` (`None`: no slot, sessionless).
    New(Option<i32>),
    /// Incremental fetch in session `id`.
    Incremental(i32),
}

fn requested_targets(context: &Context, request: &FetchRequest) -> Vec<Target> {
    let image = context.shared.topics.image();
    let mut targets = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let info = image.topics.get(&name);
        for p in &topic.partitions {
            let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, p.partition));
            let max_bytes = p.partition_max_bytes.max(0) as usize;
            targets.push(Target {
                name: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes,
                shard,
            });
        }
    }
    // A partition named twice is fetched once, at the last offset given.
    let mut unique: Vec<Target> = Vec::with_capacity(targets.len());
    for target in targets {
        match unique.iter_mut().find(|t| t.partition == target.partition && t.name == target.name) {
            Some(existing) => *existing = target,
            None => unique.push(target),
        }
    }
    unique
}

/// Chooses the mode and the partitions to read; `Err` is a top-level error.
fn plan(context: &Context, request: &FetchRequest, version: i16) -> Result<(Mode, Vec<Target>), ResponseError> {
    let requested = requested_targets(context, request);
    let (id, epoch) = if version >= 7 { (request.session_id, request.session_epoch) } else { (0, -1) };
    let mut sessions = context.state.fetch_sessions.borrow_mut();
    if id > 0 && epoch <= 0 {
        sessions.remove(id);
    }
    match (id, epoch) {
        (_, -1) => Ok((Mode::Sessionless, requested)),
        (_, 0) => {
            let created = sessions.create(context.state.clock.now_ms());
            if let Some(session) = created.and_then(|new| sessions.get_mut(new)) {
                for t in &requested {
                    session.upsert(&t.name, t.partition, t.offset, t.max_bytes);
                }
            }
            Ok((Mode::New(created), requested))
        }
        (0, _) => Err(ResponseError::FetchSessionIdNotFound),
        (id, epoch) => {
            let session = sessions.incremental(id, epoch, context.state.clock.now_ms()).map_err(|e| match e {
                SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
            })?;
            for t in &requested {
                session.upsert(&t.name, t.partition, t.offset, t.max_bytes);
            }
            for forgotten in &request.forgotten_topics_data {
                for &partition in &forgotten.partitions {
                    session.forget(&forgotten.topic.0, partition);
                }
            }
            let image = context.shared.topics.image();
            let targets = session
                .partitions
                .iter()
                .map(|p| {
                    let shard = image
                        .topics
                        .get(&p.topic)
                        .and_then(|t| context.shared.shard_of(&t.partition_shards, p.partition));
                    Target {
                        name: p.topic.clone(),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.max_bytes,
                        shard,
                    }
                })
                .collect();
            Ok((Mode::Incremental(id), targets))
        }
    }
}

/// Reads, waiting (long poll) while fewer than `min_bytes` are available.
async fn read_with_long_poll(context: &Context, targets: &[Target], request: &FetchRequest) -> Vec<FetchOutcome> {
    let clock = &context.state.clock;
    let deadline_ms = clock.now_ms() + i64::from(request.max_wait_ms.max(0));
    let min_bytes = request.min_bytes.max(0) as usize;
    let committed = request.isolation_level == 1;
    let mut outcomes = read_all(context, targets, committed).await;
    for _ in 0..MAX_POLL_ROUNDS {
        let total: usize = outcomes.iter().flat_map(|o| o.records.iter()).map(Bytes::len).sum();
        let errors = outcomes.iter().any(|o| o.error_code != 0);
        if total >= min_bytes || errors || clock.now_ms() >= deadline_ms || targets.is_empty() {
            break;
        }
        wait_for_any(context, targets, &outcomes, deadline_ms, committed).await;
        outcomes = read_all(context, targets, committed).await;
    }
    outcomes
}

/// Handles a Fetch request.
pub async fn handle(context: &Context, request: FetchRequest, version: i16) -> FetchResponse {
    let mut response = FetchResponse::default();
    let (mode, targets) = match plan(context, &request, version) {
        Ok(plan) => plan,
        Err(error) => {
            response.error_code = error.code();
            return response;
        }
    };
    let outcomes = read_with_long_poll(context, &targets, &request).await;
    let response_max = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let mut total = 0usize;
    let mut sessions = context.state.fetch_sessions.borrow_mut();
    let session_id = match mode {
        Mode::Sessionless | Mode::New(None) => 0,
        Mode::New(Some(id)) | Mode::Incremental(id) => id,
    };
    let mut session = if session_id > 0 { sessions.get_mut(session_id) } else { None };
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (index, (target, outcome)) in targets.iter().zip(outcomes).enumerate() {
        let records = concat(outcome.records);
        let trimmed = total > 0 && total + records.len() > response_max;
        let has_records = !records.is_empty() && !trimmed;
        let send = match session.as_mut() {
            Some(session) if index < session.partitions.len() => {
                let changed = session.should_send(
                    index,
                    has_records,
                    outcome.error_code,
                    outcome.high_watermark,
                    outcome.log_start,
                );
                changed || !matches!(mode, Mode::Incremental(_))
            }
            _ => true,
        };
        if !send {
            continue;
        }
        let mut p = PartitionData::default();
        p.partition_index = target.partition;
        p.error_code = outcome.error_code;
        p.high_watermark = outcome.high_watermark;
        p.last_stable_offset = outcome.last_stable_offset;
        if version >= 5 {
            p.log_start_offset = outcome.log_start;
        }
        p.aborted_transactions = Some(
            outcome
                .aborted
                .iter()
                .map(|&(producer_id, first_offset)| {
                    let mut a = kafka_protocol::messages::fetch_response::AbortedTransaction::default();
                    a.producer_id = kafka_protocol::messages::ProducerId(producer_id);
                    a.first_offset = first_offset;
                    a
                })
                .collect(),
        );
        if has_records {
            total += records.len();
            p.records = Some(records);
        } else {
            p.records = Some(Bytes::new());
        }
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == target.name => last.partitions.push(p),
            _ => {
                let mut topic = FetchableTopicResponse::default();
                topic.topic = TopicName(StrBytes::from_string(target.name.clone()));
                topic.partitions.push(p);
                topics.push(topic);
            }
        }
    }
    if let Some(session) = session.as_mut() {
        let served: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
                    .map(move |p| (t.topic.0.to_string(), p.partition_index))
            })
            .collect();
        session.rotate_served(&served);
    }
    if version >= 7 {
        response.session_id = session_id;
    }
    response.responses = topics;
    response
}
