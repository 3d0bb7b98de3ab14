//! The partitions one shard owns, and the operations other shards ask of
//! them over the mesh: open, delete, append (with the acks wait), read,
//! list offsets and wait for new data. Lives on its shard (`Rc`, no locks).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use shardline_engine::cache::{BatchCache, SharedBatchCache};
use shardline_engine::event::LocalEvent;
use shardline_engine::{HighWatermarkPolicy, Log, LogError, LogOptions, RealDisk};

use crate::config::{AckDurability, BrokerConfig};
use crate::producer_snapshots;
use shardline_engine::batch::{parse_header, validate_batch, BatchHeader, BatchIter};
use shardline_engine::producer_state::{last_sequence, marker_batch, BatchMeta, ProducerState, SequenceCheck};

/// Called with each batch's header and bytes by
/// [`ShardPartitions::for_each_batch`]; an error (a Kafka code) stops the walk.
pub type BatchVisitor<'a> = dyn FnMut(&BatchHeader, &[u8]) -> Result<(), i16> + 'a;

/// A partition's address.
pub type PartitionKey = (String, i32);

/// One open partition.
pub struct OpenPartition {
    /// Its log.
    pub log: Log<RealDisk>,
    /// What acks=all waits for.
    pub ack: AckDurability,
    /// Idempotent producers' sequences and epochs.
    pub producers: RefCell<ProducerState>,
    /// Serialises the check-then-append of idempotent batches (an append
    /// may wait before it assigns offsets).
    pub append_lock: futures::lock::Mutex<()>,
    /// Offset of the newest producer snapshot.
    pub snapshot_offset: Cell<i64>,
}

/// State of one shard. See the module documentation.
pub struct ShardPartitions {
    /// This shard's index.
    pub shard: usize,
    /// Broker configuration.
    pub config: Arc<BrokerConfig>,
    cache: SharedBatchCache,
    partitions: RefCell<HashMap<PartitionKey, Rc<OpenPartition>>>,
    next_cache_key: Cell<u64>,
    /// Set once shutdown starts: connections stop reading new requests.
    pub shutting_down: Cell<bool>,
    /// Requests being handled by this shard's connections.
    pub in_flight: Cell<usize>,
    /// Fired when `in_flight` drops to zero.
    pub idle: LocalEvent,
    /// Incremental fetch sessions of this shard's connections.
    pub fetch_sessions: RefCell<crate::fetch_sessions::FetchSessions>,
    /// Group coordinators of this shard's `__consumer_offsets` partitions.
    pub groups: crate::groups::GroupShard,
    /// Transaction coordinators of this shard's `__transaction_state` partitions.
    pub txns: crate::txn::TxnShard,
}

/// Kafka error code from an engine error.
pub fn error_code(error: &LogError) -> i16 {
    match error {
        LogError::InvalidBatch(shardline_engine::InvalidBatch::BadCrc) => ResponseError::CorruptMessage.code(),
        LogError::InvalidBatch(_) => ResponseError::InvalidRecord.code(),
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::Poisoned(_) | LogError::Io(_) | LogError::Corrupt(_) => ResponseError::KafkaStorageError.code(),
        LogError::Closed | LogError::Truncated { .. } => ResponseError::NotLeaderOrFollower.code(),
    }
}

/// What a produce to one partition answered.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOutcome {
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// First offset assigned, or -1.
    pub base_offset: i64,
    /// Log start offset, or -1.
    pub log_start: i64,
}

/// What a fetch from one partition read.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start: i64,
    /// Whole batches.
    pub records: Vec<Bytes>,
    /// Last stable offset (below the first open transaction).
    pub last_stable_offset: i64,
    /// End of what this isolation level may see (high watermark, or the
    /// last stable offset for read_committed): a long poll waits past it.
    pub visible_end: i64,
    /// read_committed: aborted transactions in the range read, as
    /// (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl ShardPartitions {
    /// Empty state for `shard`.
    pub fn new(shard: usize, config: Arc<BrokerConfig>) -> Self {
        let cache = BatchCache::shared(config.batch_cache_bytes);
        let sessions = crate::fetch_sessions::FetchSessions::new(
            config.max_incremental_fetch_session_cache_slots,
            shard,
            config.shard_count(),
        );
        Self {
            shard,
            config,
            cache,
            partitions: RefCell::new(HashMap::new()),
            next_cache_key: Cell::new(0),
            shutting_down: Cell::new(false),
            in_flight: Cell::new(0),
            idle: LocalEvent::default(),
            fetch_sessions: RefCell::new(sessions),
            groups: crate::groups::GroupShard::default(),
            txns: crate::txn::TxnShard::default(),
        }
    }

    /// Directory of a partition: `<data_dir>/<topic>-<partition>`.
    pub fn partition_dir(config: &BrokerConfig, topic: &str, partition: i32) -> PathBuf {
        config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// The open partition, if this shard holds it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<OpenPartition>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    /// Opens (creating or recovering) a partition log on this shard.
    pub async fn open(
        &self,
        topic: &str,
        partition: i32,
        config: shardline_engine::LogConfig,
        ack: AckDurability,
    ) -> Result<(), LogError> {
        if self.get(topic, partition).is_some() {
            return Ok(());
        }
        let key = self.next_cache_key.get();
        self.next_cache_key.set(key + 1);
        let policy = match ack {
            AckDurability::Fsync => HighWatermarkPolicy::Durable,
            AckDurability::Written => HighWatermarkPolicy::Written,
        };
        let options = LogOptions { config, policy, cache: self.cache.clone(), cache_key: key };
        let dir = Self::partition_dir(&self.config, topic, partition);
        let log = Log::open(RealDisk, &dir, options, now_ms()).await?;
        let (producers, snapshot_offset) = producer_snapshots::load(&log).await?;
        let open = OpenPartition {
            log,
            ack,
            producers: RefCell::new(producers),
            append_lock: futures::lock::Mutex::new(()),
            snapshot_offset: Cell::new(snapshot_offset),
        };
        self.partitions.borrow_mut().insert((topic.to_string(), partition), Rc::new(open));
        Ok(())
    }

    /// Closes a partition and removes its files.
    pub async fn delete(&self, topic: &str, partition: i32) -> std::io::Result<()> {
        let removed = self.partitions.borrow_mut().remove(&(topic.to_string(), partition));
        if let Some(open) = removed {
            if let Err(error) = open.log.close().await {
                tracing::warn!(topic, partition, %error, "closing a deleted partition");
            }
        }
        let dir = Self::partition_dir(&self.config, topic, partition);
        compio::runtime::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("remove task failed")))
    }

    /// Closes every partition cleanly (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<(PartitionKey, Rc<OpenPartition>)> = self.partitions.borrow_mut().drain().collect();
        for ((topic, partition), open) in all {
            if let Err(error) = open.log.close().await {
                tracing::error!(topic, partition, %error, "closing partition log");
                continue;
            }
            let end = open.log.offsets().log_end;
            let state = open.producers.borrow().clone();
            if let Err(error) = producer_snapshots::write(open.log.dir().to_path_buf(), end, state).await {
                tracing::warn!(topic, partition, %error, "writing producer snapshot");
            }
        }
    }

    /// Appends and waits as `acks` asks, within `timeout`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: BytesMut,
        acks: i16,
        timeout: Duration,
    ) -> ProduceOutcome {
        let failed = |code: i16| ProduceOutcome { error_code: code, base_offset: -1, log_start: -1 };
        let Some(open) = self.get(topic, partition) else {
            return failed(ResponseError::UnknownTopicOrPartition.code());
        };
        let info = match parse_header(&records) {
            Ok(header) if header.producer_id >= 0 => match self.append_idempotent(&open, records, &header).await {
                Ok(info) => info,
                Err(code) => return failed(code),
            },
            _ => match open.log.append(records, 0, now_ms()).await {
                Ok(info) => (info.base_offset, info.last_offset, info.log_start),
                Err(error) => return failed(error_code(&error)),
            },
        };
        let (base_offset, last_offset, log_start) = info;
        let end = last_offset + 1;
        let wait = async {
            match (acks, open.ack) {
                (0, _) => Ok(()),
                (-1, AckDurability::Fsync) => open.log.wait_durable(end).await,
                _ => open.log.wait_written(end).await,
            }
        };
        match compio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => ProduceOutcome { error_code: 0, base_offset, log_start },
            Ok(Err(error)) => failed(error_code(&error)),
            Err(_) => failed(ResponseError::RequestTimedOut.code()),
        }
    }

    /// Appends one idempotent producer's batch after checking its sequence
    /// and epoch; a retried batch gets the offsets it already has. Returns
    /// (first offset, last offset, log start) or a Kafka error code.
    async fn append_idempotent(
        &self,
        open: &OpenPartition,
        records: BytesMut,
        header: &BatchHeader,
    ) -> Result<(i64, i64, i64), i16> {
        if header.total_bytes() != records.len() {
            // Kafka: an idempotent produce carries exactly one batch.
            return Err(ResponseError::InvalidRecord.code());
        }
        let _serial = open.append_lock.lock().await;
        let (id, epoch, first_seq, last_seq) =
            (header.producer_id, header.producer_epoch, header.base_sequence, last_sequence(header));
        let check = open.producers.borrow().check(id, epoch, first_seq, last_seq);
        match check {
            SequenceCheck::Fenced => Err(ResponseError::InvalidProducerEpoch.code()),
            SequenceCheck::OutOfOrder => Err(ResponseError::OutOfOrderSequenceNumber.code()),
            SequenceCheck::Duplicate { first_offset, last_offset } => {
                validate_batch(&records, true).map_err(|_| ResponseError::CorruptMessage.code())?;
                Ok((first_offset, last_offset, open.log.offsets().log_start))
            }
            SequenceCheck::Append => {
                let info = open.log.append(records, 0, now_ms()).await.map_err(|e| error_code(&e))?;
                let meta = BatchMeta {
                    epoch,
                    first_seq,
                    last_seq,
                    first_offset: info.base_offset,
                    last_offset: info.last_offset,
                    timestamp: now_ms(),
                };
                if header.is_transactional() {
                    open.producers.borrow_mut().record_transactional(id, meta);
                } else {
                    open.producers.borrow_mut().record(id, meta);
                }
                Ok((info.base_offset, info.last_offset, info.log_start))
            }
        }
    }

    /// Writes a transaction marker for `producer_id` (commit or abort) if
    /// it has an open transaction here, and waits until it is as durable as
    /// acks=all asks. Returns a Kafka error code (0 = done).
    pub async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> i16 {
        let Some(open) = self.get(topic, partition) else {
            return ResponseError::UnknownTopicOrPartition.code();
        };
        let end = {
            let _serial = open.append_lock.lock().await;
            if !open.producers.borrow().has_ongoing(producer_id) {
                tracing::debug!(topic, partition, producer_id, commit, "no open transaction: no marker");
                // Nothing produced here in this transaction, or the marker
                // is already written (a retry): never write it twice.
                return 0;
            }
            let now = now_ms();
            let marker = BytesMut::from(&marker_batch(producer_id, epoch, commit, coordinator_epoch, now)[..]);
            let info = match open.log.append(marker, 0, now).await {
                Ok(info) => info,
                Err(error) => return error_code(&error),
            };
            tracing::debug!(topic, partition, producer_id, commit, offset = info.base_offset, "transaction marker");
            let mut producers = open.producers.borrow_mut();
            producers.complete(producer_id, info.base_offset, commit);
            producers.bump_epoch(producer_id, epoch, info.base_offset, now);
            info.last_offset + 1
        };
        let waited = match open.ack {
            AckDurability::Fsync => open.log.wait_durable(end).await,
            AckDurability::Written => open.log.wait_written(end).await,
        };
        waited.map_or_else(|e| error_code(&e), |()| 0)
    }

    /// Appends a transactional batch written by a coordinator (offsets
    /// committed in a transaction): no sequence check, opens the
    /// producer's transaction here. Durable before it returns.
    pub async fn append_internal_transactional(&self, topic: &str, partition: i32, records: BytesMut) -> i16 {
        let Some(open) = self.get(topic, partition) else {
            return ResponseError::UnknownTopicOrPartition.code();
        };
        let Ok(header) = parse_header(&records) else { return ResponseError::CorruptMessage.code() };
        let end = {
            let _serial = open.append_lock.lock().await;
            let info = match open.log.append(records, 0, now_ms()).await {
                Ok(info) => info,
                Err(error) => return error_code(&error),
            };
            let meta = BatchMeta {
                epoch: header.producer_epoch,
                first_seq: -1,
                last_seq: -1,
                first_offset: info.base_offset,
                last_offset: info.last_offset,
                timestamp: now_ms(),
            };
            open.producers.borrow_mut().record_transactional(header.producer_id, meta);
            info.last_offset + 1
        };
        let waited = match open.ack {
            AckDurability::Fsync => open.log.wait_durable(end).await,
            AckDurability::Written => open.log.wait_written(end).await,
        };
        waited.map_or_else(|e| error_code(&e), |()| 0)
    }

    /// Open transactions of a partition: (producer id, first offset).
    pub fn ongoing_transactions(&self, topic: &str, partition: i32) -> Vec<(i64, i64)> {
        self.get(topic, partition).map(|open| open.producers.borrow().ongoing().collect()).unwrap_or_default()
    }

    /// Producers of a partition: (id, epoch, last sequence, last timestamp).
    pub fn describe_producers(&self, topic: &str, partition: i32) -> Option<Vec<(i64, i16, i32, i64)>> {
        self.get(topic, partition).map(|open| open.producers.borrow().describe())
    }

    /// Snapshots the producer state of every partition whose durable
    /// offset moved, and forgets producers idle for
    /// `producer_id_expiration_ms`.
    pub async fn snapshot_producers(&self) {
        let all: Vec<Rc<OpenPartition>> = self.partitions.borrow().values().cloned().collect();
        let expire_before = now_ms() - self.config.producer_id_expiration_ms;
        for open in all {
            let durable = open.log.offsets().durable;
            if durable <= open.snapshot_offset.get() {
                continue;
            }
            let state = {
                let mut producers = open.producers.borrow_mut();
                producers.expire(expire_before);
                producers.forget_aborted_below(open.log.offsets().log_start);
                producers.below(durable)
            };
            match producer_snapshots::write(open.log.dir().to_path_buf(), durable, state).await {
                Ok(()) => {
                    open.snapshot_offset.set(durable);
                    open.producers.borrow_mut().snapshotted(durable);
                }
                Err(error) => tracing::warn!(dir = %open.log.dir().display(), %error, "writing producer snapshot"),
            }
        }
    }

    /// Walks every batch of a partition, from its log start to its high
    /// watermark, calling `visit` with each batch's header and bytes (the
    /// coordinators' loads). Returns the Kafka error of a failed read, or
    /// the first error `visit` returns.
    pub async fn for_each_batch(&self, topic: &str, partition: i32, visit: &mut BatchVisitor<'_>) -> Result<(), i16> {
        let mut offset = 0i64;
        loop {
            let read = self.fetch(topic, partition, offset, 4 << 20, false).await;
            if read.error_code == ResponseError::OffsetOutOfRange.code() && offset < read.log_start {
                offset = read.log_start;
                continue;
            }
            if read.error_code != 0 {
                return Err(read.error_code);
            }
            if read.records.is_empty() {
                return Ok(());
            }
            for chunk in &read.records {
                for (at, header) in BatchIter::new(chunk) {
                    offset = offset.max(header.next_offset());
                    visit(&header, &chunk[at..at + header.total_bytes()])?;
                }
            }
            if offset >= read.high_watermark {
                return Ok(());
            }
        }
    }

    /// Reads whole batches below the high watermark (read_uncommitted) or
    /// the last stable offset (read_committed, with the aborted
    /// transactions the reader must drop).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> FetchOutcome {
        let Some(open) = self.get(topic, partition) else {
            return FetchOutcome {
                error_code: ResponseError::UnknownTopicOrPartition.code(),
                high_watermark: -1,
                log_start: -1,
                last_stable_offset: -1,
                visible_end: -1,
                ..FetchOutcome::default()
            };
        };
        let offsets = open.log.offsets();
        let lso = Self::last_stable(&open, offsets.high_watermark);
        let limit = if read_committed { lso } else { offsets.high_watermark };
        let empty = FetchOutcome {
            error_code: 0,
            high_watermark: offsets.high_watermark,
            log_start: offsets.log_start,
            last_stable_offset: lso,
            visible_end: limit,
            ..FetchOutcome::default()
        };
        if offset > limit && offset <= offsets.log_end {
            // Between the visible end and LEO: nothing yet (not out of range).
            return empty;
        }
        match open.log.read(offset, max_bytes, limit).await {
            Ok(read) => {
                // A read returns chunks that may hold several batches: list
                // every aborted transaction below the read limit (a client
                // ignores those past the data it got).
                let aborted = if read_committed && !read.batches.is_empty() {
                    let producers = open.producers.borrow();
                    producers
                        .aborted_between(offset, limit)
                        .into_iter()
                        .map(|a| (a.producer_id, a.first_offset))
                        .collect()
                } else {
                    Vec::new()
                };
                FetchOutcome {
                    high_watermark: read.high_watermark,
                    log_start: read.log_start,
                    records: read.batches,
                    aborted,
                    ..empty
                }
            }
            Err(error) => FetchOutcome { error_code: error_code(&error), ..empty },
        }
    }

    fn last_stable(open: &OpenPartition, high_watermark: i64) -> i64 {
        open.producers.borrow().first_unstable_offset().map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The last stable offset of a partition, if this shard holds it.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let open = self.get(topic, partition)?;
        Some(Self::last_stable(&open, open.log.offsets().high_watermark))
    }

    /// Waits until any of `partitions` has a high watermark above its
    /// threshold (new data since the caller last looked), or `deadline`.
    pub async fn wait_for_data(&self, partitions: Vec<(String, i32, i64)>, deadline: Instant, read_committed: bool) {
        let opens: Vec<(Rc<OpenPartition>, i64)> =
            partitions.iter().filter_map(|(t, p, o)| self.get(t, *p).map(|open| (open, *o))).collect();
        let logs: Vec<(Log<RealDisk>, i64)> = opens.iter().map(|(open, o)| (open.log.clone(), *o)).collect();
        let visible = |open: &OpenPartition| {
            let hw = open.log.offsets().high_watermark;
            if read_committed {
                Self::last_stable(open, hw)
            } else {
                hw
            }
        };
        loop {
            if opens.iter().any(|(open, offset)| visible(open) > *offset) {
                return;
            }
            let now = Instant::now();
            if now >= deadline || logs.is_empty() {
                if logs.is_empty() {
                    compio::time::sleep(deadline.saturating_duration_since(now)).await;
                }
                return;
            }
            let changes = futures::future::select_all(logs.iter().map(|(log, _)| Box::pin(log.changed())));
            let _ = compio::time::timeout(deadline - now, changes).await;
        }
    }

    /// ListOffsets for one partition: (error, timestamp, offset).
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64, committed: bool) -> (i16, i64, i64) {
        let Some(open) = self.get(topic, partition) else {
            return (ResponseError::UnknownTopicOrPartition.code(), -1, -1);
        };
        let offsets = open.log.offsets();
        match timestamp {
            -2 => (0, -1, offsets.log_start),
            -1 if committed => (0, -1, Self::last_stable(&open, offsets.high_watermark)),
            -1 => (0, -1, offsets.high_watermark),
            -3 => match open.log.max_timestamp_record().await {
                Ok(Some((offset, ts))) if offset < offsets.high_watermark => (0, ts, offset),
                Ok(_) => (0, -1, -1),
                Err(error) => (error_code(&error), -1, -1),
            },
            ts if ts >= 0 => match open.log.offset_for_timestamp(ts, offsets.high_watermark).await {
                Ok(Some((offset, found))) => (0, found, offset.max(offsets.log_start)),
                Ok(None) => (0, -1, -1),
                Err(error) => (error_code(&error), -1, -1),
            },
            _ => (ResponseError::InvalidRequest.code(), -1, -1),
        }
    }

    /// Runs retention on every partition of this shard.
    pub async fn apply_retention(&self) {
        let all: Vec<Rc<OpenPartition>> = self.partitions.borrow().values().cloned().collect();
        for open in all {
            if let Err(error) = open.log.apply_retention(now_ms()).await {
                tracing::warn!(dir = %open.log.dir().display(), %error, "retention failed");
            }
        }
    }
}
