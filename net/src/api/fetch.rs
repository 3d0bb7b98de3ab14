//! Fetch (v4–12): whole batches from each partition's owning shard, up to
//! the high watermark, with partition and response `max_bytes`, and long
//! polling: while fewer than `min_bytes` are available, wait on the owning
//! shards for new data until `max_wait_ms`.
//!
//! Bounded by what it sends: each shard reads its partitions in request
//! order against what is left of the response `max_bytes` and stops reading
//! records once it is spent (the first batch of the response may exceed it,
//! as Kafka's does); the partitions after that answer their offsets only.
//! A long-poll round reads only past what the last rounds returned. The
//! loops over partitions are linear and yield to the shard every
//! [`YIELD_EVERY`] partitions, so a request naming a million partitions
//! does not stall the shard.
//!
//! Records found in the batch cache go out as its `Bytes`; older records
//! whose file pages are all resident go out as a file range the connection
//! splices (at most [`MAX_SPLICED_PER_SHARD_READ`] partitions per shard
//! read, the rest copied; config `fetch_splice`); cold records are read
//! asynchronously first.
//!
//! Fetch sessions (KIP-227, v7+): epoch 0 creates a session holding the
//! requested partitions; later requests name the session and its next
//! epoch, add or update partitions and forget others, and the response
//! carries only partitions with news (records, an error, or a changed high
//! watermark or log start). Epoch -1 closes a session (sessionless full
//! fetch). Sessions live on the shard of the connection.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::BatchIter;
use shardline_engine::partition::Isolation;
use shardline_engine::runtime::spawn::yield_now;

use super::fetch_encode::{FetchReply, Segment};
use super::Context;
use crate::errors::partition_error;
use crate::fetch_sessions::SessionError;
use crate::route::scatter;
use crate::shard::ShardState;

/// Upper bound on polling rounds of one fetch (each waits for new data).
const MAX_POLL_ROUNDS: usize = 1000;

/// Partitions a loop handles between yields to the shard's other tasks.
pub const YIELD_EVERY: usize = 256;

/// At most this many partitions of one shard read are sent as resident
/// file ranges; the rest are copied. Each range costs two splices per
/// pipe-full, which is more than copying a few of them would.
pub const MAX_SPLICED_PER_SHARD_READ: usize = 16;

struct Target {
    name: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    shard: Option<usize>,
    /// Why it cannot be read here, when `shard` is none.
    unavailable: ResponseError,
}

impl Target {
    /// The read of this partition after `earlier` (what earlier rounds
    /// returned): from the fetch offset while nothing was, else on from the
    /// last batch within what is left of the partition's max bytes.
    fn read_after(&self, earlier: Option<&FetchOutcome>) -> Read {
        let continued = earlier.and_then(|o| Some((o.next_offset()?, o.bytes())));
        let (offset, max_bytes, whole_first) = match continued {
            Some((next, read)) => (next, self.max_bytes.saturating_sub(read), false),
            None => (self.offset, self.max_bytes, true),
        };
        Read { topic: self.name.clone(), partition: self.partition, offset, max_bytes, whole_first }
    }
}

/// What a fetch from one partition read.
#[derive(Debug, Clone, Default)]
struct FetchOutcome {
    /// Kafka error code (0 = none).
    error_code: i16,
    high_watermark: i64,
    log_start: i64,
    /// Whole batches (in memory, or resident file ranges).
    records: Vec<Segment>,
    /// Last stable offset (below the first open transaction).
    last_stable_offset: i64,
    /// End of what this isolation level may see (high watermark, or the
    /// last stable offset for read_committed): a long poll waits past it.
    visible_end: i64,
    /// read_committed: aborted transactions in the range read, as
    /// (producer id, first offset).
    aborted: Vec<(i64, i64)>,
}

impl FetchOutcome {
    fn bytes(&self) -> usize {
        self.records.iter().map(Segment::len).sum()
    }

    /// The offset after the last batch read (`None` when nothing was read).
    fn next_offset(&self) -> Option<i64> {
        match self.records.last()? {
            Segment::Bytes(last) => BatchIter::new(last).last().map(|(_, header)| header.next_offset()),
            Segment::File(range) => Some(range.next_offset),
        }
    }

    /// Adds what a later read past this one returned.
    fn extend(&mut self, later: FetchOutcome) {
        if later.error_code != 0 {
            // Keep what was read; the error shows on the next fetch.
            return;
        }
        self.records.extend(later.records);
        for aborted in later.aborted {
            if !self.aborted.contains(&aborted) {
                self.aborted.push(aborted);
            }
        }
        self.high_watermark = later.high_watermark;
        self.log_start = later.log_start;
        self.last_stable_offset = later.last_stable_offset;
        self.visible_end = later.visible_end;
    }
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

/// One partition read as its shard gets it.
#[derive(Debug, Clone)]
struct Read {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// Whether the first batch may exceed `max_bytes` (false when this
    /// read continues one that already returned the partition's first).
    whole_first: bool,
}

/// What a partition read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFor {
    /// The offsets only (the byte budget is spent).
    Offsets,
    /// Records up to this many bytes, in memory.
    Bytes(usize),
    /// Records up to this many bytes, resident ones as a file range.
    Socket(usize),
}

/// Reads one partition on this shard as `what` says.
async fn read_here(state: &ShardState, read: &Read, what: ReadFor, committed: bool) -> FetchOutcome {
    let Some(replica) = state.partitions.get(&read.topic, read.partition) else { return unknown() };
    let partition = &replica.partition;
    let result = match what {
        ReadFor::Bytes(max_bytes) => partition.read(read.offset, max_bytes, isolation(committed)).await,
        ReadFor::Socket(max_bytes) => partition.read_for_socket(read.offset, max_bytes, isolation(committed)).await,
        ReadFor::Offsets => partition.read_position(read.offset, isolation(committed)),
    };
    match result {
        Ok(read) => FetchOutcome {
            error_code: 0,
            high_watermark: read.high_watermark,
            log_start: read.log_start,
            records: read.batches.into_iter().map(Segment::Bytes).chain(read.resident.map(Segment::File)).collect(),
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

/// One shard's part of a fetch: its partitions in request order, each up to
/// its own max bytes and what is left of `budget`. Until a partition has
/// returned records (`first_free`), the first batch may exceed both, as
/// Kafka's minOneMessage; after that a batch that does not fit is not kept,
/// and once the budget is spent the rest answer their offsets only.
async fn read_shard(
    state: Rc<ShardState>,
    reads: Vec<Read>,
    budget: usize,
    first_free: bool,
    committed: bool,
) -> Vec<FetchOutcome> {
    let mut left = budget;
    let mut first_free = first_free;
    let mut first_kept = 0;
    let mut spliced = 0usize;
    let mut out = Vec::with_capacity(reads.len());
    for (i, read) in reads.iter().enumerate() {
        if i > 0 && i % YIELD_EVERY == 0 {
            yield_now().await;
        }
        let partition_room = read.whole_first || read.max_bytes > 0;
        let limit = ((first_free || left > 0) && partition_room).then(|| read.max_bytes.min(left));
        let what = match limit {
            None => ReadFor::Offsets,
            Some(max) if state.config.fetch_splice && spliced < MAX_SPLICED_PER_SHARD_READ => ReadFor::Socket(max),
            Some(max) => ReadFor::Bytes(max),
        };
        let mut outcome = read_here(&state, read, what, committed).await;
        if outcome.records.iter().any(|r| matches!(r, Segment::File(_))) {
            spliced += 1;
        }
        let got = outcome.bytes();
        if got > 0 {
            let fits_partition = read.whole_first || got <= read.max_bytes;
            if fits_partition && (first_free || got <= left) {
                if first_free {
                    first_kept = got;
                }
                left = left.saturating_sub(got);
                first_free = false;
            } else {
                outcome.records.clear();
                outcome.aborted.clear();
            }
        }
        out.push(outcome);
    }
    let kept: usize = out.iter().map(FetchOutcome::bytes).sum();
    assert!(kept <= budget.max(first_kept), "a shard keeps {kept} bytes for a budget of {budget}");
    out
}

/// Reads `reads` (each with its target's shard) against `budget`: one
/// message per shard, answers in the order given.
async fn read_all(
    context: &Context,
    reads: Vec<(Option<usize>, Read)>,
    budget: usize,
    first_free: bool,
    committed: bool,
) -> Vec<FetchOutcome> {
    scatter(&context.mesh, reads, unknown(), move |state, reads| {
        read_shard(state, reads, budget, first_free, committed)
    })
    .await
}

/// Waits until any owning shard reports data past what the last read of
/// `watched` saw (its visible end, or the fetch offset when nothing was
/// seen), or the deadline (ms on the clock).
async fn wait_for_any(
    context: &Context,
    targets: &[Target],
    watched: &[usize],
    seen: &[FetchOutcome],
    deadline_ms: i64,
    committed: bool,
) {
    let mut by_shard: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); context.shared.shards];
    for &i in watched {
        let t = &targets[i];
        if let Some(shard) = t.shard {
            by_shard[shard].push((t.name.clone(), t.partition, seen[i].visible_end.max(t.offset)));
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

/// The partitions a request names, each once; yields to the shard every
/// [`YIELD_EVERY`] partitions.
async fn requested_targets(context: &Context, request: &FetchRequest) -> Vec<Target> {
    let image = context.shared.topics.image();
    let mut targets = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let info = image.topics.get(&name);
        for p in &topic.partitions {
            if !targets.is_empty() && targets.len() % YIELD_EVERY == 0 {
                yield_now().await;
            }
            let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, p.partition));
            let max_bytes = p.partition_max_bytes.max(0) as usize;
            targets.push(Target {
                name: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes,
                shard,
                unavailable: context.shared.unavailable(info.map(|t| &**t), p.partition),
            });
        }
    }
    // A partition named twice is fetched once, at the last offset given.
    let mut position: HashMap<(String, i32), usize> = HashMap::with_capacity(targets.len());
    let mut unique: Vec<Target> = Vec::with_capacity(targets.len());
    for target in targets {
        match position.get(&(target.name.clone(), target.partition)) {
            Some(&at) => unique[at] = target,
            None => {
                position.insert((target.name.clone(), target.partition), unique.len());
                unique.push(target);
            }
        }
    }
    unique
}

/// Chooses the mode and the partitions to read; `Err` is a top-level error.
async fn plan(context: &Context, request: &FetchRequest, version: i16) -> Result<(Mode, Vec<Target>), ResponseError> {
    let requested = requested_targets(context, request).await;
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
                session.upsert_all(requested.iter().map(|t| (t.name.as_str(), t.partition, t.offset, t.max_bytes)));
            }
            Ok((Mode::New(created), requested))
        }
        (0, _) => Err(ResponseError::FetchSessionIdNotFound),
        (id, epoch) => {
            let session = sessions.incremental(id, epoch, context.state.clock.now_ms()).map_err(|e| match e {
                SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
            })?;
            session.upsert_all(requested.iter().map(|t| (t.name.as_str(), t.partition, t.offset, t.max_bytes)));
            session.forget_all(
                request
                    .forgotten_topics_data
                    .iter()
                    .flat_map(|f| f.partitions.iter().map(move |&partition| (f.topic.0.as_str(), partition))),
            );
            let image = context.shared.topics.image();
            let targets = session
                .partitions
                .iter()
                .map(|p| {
                    let info = image.topics.get(&p.topic);
                    let shard = info.and_then(|t| context.shared.shard_of(&t.partition_shards, p.partition));
                    Target {
                        name: p.topic.clone(),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.max_bytes,
                        shard,
                        unavailable: context.shared.unavailable(info.map(|t| &**t), p.partition),
                    }
                })
                .collect();
            Ok((Mode::Incremental(id), targets))
        }
    }
}

/// Reads, waiting (long poll) while fewer than `min_bytes` are available.
/// Each round reads only past what earlier rounds returned: partitions that
/// returned nothing are read again at their fetch offset, partitions that
/// returned records go on after their last batch within what is left of
/// their max bytes; `response_max` bounds every round's reads together.
async fn read_with_long_poll(
    context: &Context,
    targets: &[Target],
    request: &FetchRequest,
    response_max: usize,
) -> Vec<FetchOutcome> {
    let clock = &context.state.clock;
    let deadline_ms = clock.now_ms() + i64::from(request.max_wait_ms.max(0));
    let min_bytes = request.min_bytes.max(0) as usize;
    let committed = request.isolation_level == 1;
    let first: Vec<(Option<usize>, Read)> = targets.iter().map(|t| (t.shard, t.read_after(None))).collect();
    let mut outcomes = read_all(context, first, response_max, true, committed).await;
    for (outcome, target) in outcomes.iter_mut().zip(targets).filter(|(_, t)| t.shard.is_none()) {
        outcome.error_code = target.unavailable.code();
    }
    for _ in 0..MAX_POLL_ROUNDS {
        let total: usize = outcomes.iter().map(FetchOutcome::bytes).sum();
        let errors = outcomes.iter().any(|o| o.error_code != 0);
        if total >= min_bytes || total >= response_max || errors || clock.now_ms() >= deadline_ms || targets.is_empty()
        {
            break;
        }
        // What may still grow: partitions below their max bytes.
        let open: Vec<usize> = (0..targets.len())
            .filter(|&i| {
                let o = &outcomes[i];
                o.records.is_empty() || (o.bytes() < targets[i].max_bytes && o.next_offset().is_some())
            })
            .collect();
        if open.is_empty() {
            break;
        }
        wait_for_any(context, targets, &open, &outcomes, deadline_ms, committed).await;
        let reads: Vec<(Option<usize>, Read)> =
            open.iter().map(|&i| (targets[i].shard, targets[i].read_after(Some(&outcomes[i])))).collect();
        let more = read_all(context, reads, response_max - total, total == 0, committed).await;
        for (i, later) in open.into_iter().zip(more) {
            if outcomes[i].records.is_empty() {
                outcomes[i] = later;
            } else {
                outcomes[i].extend(later);
            }
        }
    }
    outcomes
}

/// Handles a Fetch request. The records stay the `Bytes` the reads
/// returned, for the gathered write (see [`super::fetch_encode`]).
pub async fn handle(context: &Context, request: FetchRequest, version: i16) -> FetchReply {
    let mut reply = FetchReply::default();
    let (mode, targets) = match plan(context, &request, version).await {
        Ok(plan) => plan,
        Err(error) => {
            reply.response.error_code = error.code();
            return reply;
        }
    };
    let response_max = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let outcomes = read_with_long_poll(context, &targets, &request, response_max).await;
    // Which records go out: in request order within the response max bytes,
    // the first partition's whole.
    let mut total = 0usize;
    let kept: Vec<bool> = outcomes
        .iter()
        .map(|outcome| {
            let len = outcome.bytes();
            let keep = len > 0 && (total == 0 || total + len <= response_max);
            if keep {
                total += len;
            }
            keep
        })
        .collect();
    let session_id = match mode {
        Mode::Sessionless | Mode::New(None) => 0,
        Mode::New(Some(id)) | Mode::Incremental(id) => id,
    };
    let incremental = matches!(mode, Mode::Incremental(_));
    // What the session says must be sent (nothing awaits while it is borrowed).
    let send: Vec<bool> = {
        let mut sessions = context.state.fetch_sessions.borrow_mut();
        match sessions.get_mut(session_id).filter(|_| session_id > 0) {
            Some(session) => outcomes
                .iter()
                .enumerate()
                .map(|(index, outcome)| {
                    if index >= session.partitions.len() {
                        return true;
                    }
                    let changed = session.should_send(
                        index,
                        kept[index],
                        outcome.error_code,
                        outcome.high_watermark,
                        outcome.log_start,
                    );
                    changed || !incremental
                })
                .collect(),
            None => vec![true; outcomes.len()],
        }
    };
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut served: Vec<(String, i32)> = Vec::new();
    for (index, (target, outcome)) in targets.iter().zip(outcomes).enumerate() {
        if index > 0 && index % YIELD_EVERY == 0 {
            yield_now().await;
        }
        if !send[index] {
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
        if kept[index] {
            reply.records.push(outcome.records);
            served.push((target.name.clone(), target.partition));
        } else {
            reply.records.push(Vec::new());
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
    if let Some(session) = context.state.fetch_sessions.borrow_mut().get_mut(session_id).filter(|_| session_id > 0) {
        session.rotate_served(&served);
    }
    if version >= 7 {
        reply.response.session_id = session_id;
    }
    reply.response.responses = topics;
    reply
}
