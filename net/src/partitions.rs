//! The partitions one shard owns, and the operations other shards ask of
//! them over the mesh: open, delete, append (with the acks wait), read,
//! list offsets and wait for new data. Lives on its shard (`Rc`, no locks).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::BatchHeader;
use shardline_engine::log::cache::{BatchCache, SharedBatchCache};
use shardline_engine::partition::{
    AppendOrigin, Durability, Isolation, OffsetQuery, Partition, PartitionError, TxnMarker, WalkError,
};
use shardline_engine::runtime::clock::{timeout, SharedClock};
use shardline_engine::runtime::event::LocalEvent;
use shardline_engine::{HighWatermarkPolicy, LogOptions, RealDisk};

use crate::config::{AckDurability, BrokerConfig};

/// Called with each batch's header and bytes by
/// [`ShardPartitions::for_each_batch`]; an error (a Kafka code) stops the walk.
pub type BatchVisitor<'a> = dyn FnMut(&BatchHeader, &[u8]) -> Result<(), i16> + 'a;

/// A partition's address.
pub type PartitionKey = (String, i32);

/// One open partition.
pub struct OpenPartition {
    /// The partition.
    pub partition: Partition<RealDisk>,
    /// What acks=all waits for.
    pub ack: AckDurability,
}

/// State of one shard. See the module documentation.
pub struct ShardPartitions {
    /// This shard's index.
    pub shard: usize,
    /// Broker configuration.
    pub config: Arc<BrokerConfig>,
    /// This shard's clock.
    pub clock: SharedClock,
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

/// Kafka error code of a partition error.
pub fn error_code(error: &PartitionError) -> i16 {
    use shardline_engine::InvalidBatch;
    match error {
        PartitionError::InvalidBatch(InvalidBatch::BadCrc) => ResponseError::CorruptMessage.code(),
        PartitionError::InvalidBatch(_) | PartitionError::MultipleProducerBatches => {
            ResponseError::InvalidRecord.code()
        }
        PartitionError::BatchTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        PartitionError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        PartitionError::NotContiguous { .. } => ResponseError::UnknownServerError.code(),
        PartitionError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        PartitionError::Storage(_) => ResponseError::KafkaStorageError.code(),
        PartitionError::NotAvailable => ResponseError::NotLeaderOrFollower.code(),
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
    pub records: Vec<bytes::Bytes>,
    /// Last stable offset (below the first open transaction).
    pub last_stable_offset: i64,
    /// End of what this isolation level may see (high watermark, or the
    /// last stable offset for read_committed): a long poll waits past it.
    pub visible_end: i64,
    /// read_committed: aborted transactions in the range read, as
    /// (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
}

fn isolation(read_committed: bool) -> Isolation {
    if read_committed {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

/// The durability acks=all asks for on a partition.
fn acks_all(ack: AckDurability) -> Durability {
    match ack {
        AckDurability::Fsync => Durability::Durable,
        AckDurability::Written => Durability::Written,
    }
}

impl ShardPartitions {
    /// Empty state for `shard`.
    pub fn new(shard: usize, config: Arc<BrokerConfig>, clock: SharedClock) -> Self {
        let cache = BatchCache::shared(config.batch_cache_bytes);
        let sessions = crate::fetch_sessions::FetchSessions::new(
            config.max_incremental_fetch_session_cache_slots,
            shard,
            config.shard_count(),
        );
        Self {
            shard,
            config,
            clock,
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
    ) -> Result<(), PartitionError> {
        if self.get(topic, partition).is_some() {
            return Ok(());
        }
        let key = self.next_cache_key.get();
        self.next_cache_key.set(key + 1);
        let policy = match ack {
            AckDurability::Fsync => HighWatermarkPolicy::Durable,
            AckDurability::Written => HighWatermarkPolicy::Written,
        };
        let options =
            LogOptions { config, policy, cache: self.cache.clone(), cache_key: key, clock: self.clock.clone() };
        let dir = Self::partition_dir(&self.config, topic, partition);
        let opened = Partition::open(RealDisk, &dir, options, self.clock.now_ms()).await?;
        let open = OpenPartition { partition: opened, ack };
        self.partitions.borrow_mut().insert((topic.to_string(), partition), Rc::new(open));
        Ok(())
    }

    /// Closes a partition and removes its files.
    pub async fn delete(&self, topic: &str, partition: i32) -> std::io::Result<()> {
        let removed = self.partitions.borrow_mut().remove(&(topic.to_string(), partition));
        if let Some(open) = removed {
            if let Err(error) = open.partition.close().await {
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
            if let Err(error) = open.partition.close().await {
                tracing::error!(topic, partition, %error, "closing partition");
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
        timeout_after: Duration,
    ) -> ProduceOutcome {
        let failed = |code: i16| ProduceOutcome { error_code: code, base_offset: -1, log_start: -1 };
        let Some(open) = self.get(topic, partition) else {
            return failed(ResponseError::UnknownTopicOrPartition.code());
        };
        let appended = open.partition.append_as_leader(records, AppendOrigin::Client, 0, self.clock.now_ms()).await;
        let appended = match appended {
            Ok(appended) => appended,
            Err(error) => return failed(error_code(&error)),
        };
        let durability = match acks {
            0 => None,
            -1 => Some(acks_all(open.ack)),
            _ => Some(Durability::Written),
        };
        let wait = async {
            match durability {
                None => Ok(()),
                Some(durability) => open.partition.wait_until(appended.end_offset(), durability).await,
            }
        };
        match timeout(&*self.clock, timeout_after, wait).await {
            Ok(Ok(())) => {
                ProduceOutcome { error_code: 0, base_offset: appended.base_offset, log_start: appended.log_start }
            }
            Ok(Err(error)) => failed(error_code(&error)),
            Err(_) => failed(ResponseError::RequestTimedOut.code()),
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
        let marker = TxnMarker { producer_id, producer_epoch: epoch, commit, coordinator_epoch };
        let written = match open.partition.write_marker(marker, 0, self.clock.now_ms()).await {
            Ok(Some(appended)) => appended,
            // Nothing produced here in this transaction, or the marker is
            // already written (a retry): never write it twice.
            Ok(None) => return 0,
            Err(error) => return error_code(&error),
        };
        tracing::debug!(topic, partition, producer_id, commit, offset = written.base_offset, "transaction marker");
        let waited = open.partition.wait_until(written.end_offset(), acks_all(open.ack)).await;
        waited.map_or_else(|e| error_code(&e), |()| 0)
    }

    /// Appends a transactional batch written by a coordinator (offsets
    /// committed in a transaction): no sequence check, opens the
    /// producer's transaction here. Durable before it returns.
    pub async fn append_internal_transactional(&self, topic: &str, partition: i32, records: BytesMut) -> i16 {
        let Some(open) = self.get(topic, partition) else {
            return ResponseError::UnknownTopicOrPartition.code();
        };
        let now = self.clock.now_ms();
        let appended = match open.partition.append_as_leader(records, AppendOrigin::Coordinator, 0, now).await {
            Ok(appended) => appended,
            Err(error) => return error_code(&error),
        };
        let waited = open.partition.wait_until(appended.end_offset(), acks_all(open.ack)).await;
        waited.map_or_else(|e| error_code(&e), |()| 0)
    }

    /// Open transactions of a partition: (producer id, first offset).
    pub fn ongoing_transactions(&self, topic: &str, partition: i32) -> Vec<(i64, i64)> {
        self.get(topic, partition).map(|open| open.partition.producer_state().ongoing().collect()).unwrap_or_default()
    }

    /// Producers of a partition: (id, epoch, last sequence, last timestamp).
    pub fn describe_producers(&self, topic: &str, partition: i32) -> Option<Vec<(i64, i16, i32, i64)>> {
        self.get(topic, partition).map(|open| open.partition.producer_state().describe())
    }

    /// Snapshots the producer state of every partition whose durable
    /// offset moved, and forgets producers idle for
    /// `producer_id_expiration_ms`.
    pub async fn snapshot_producers(&self) {
        let all: Vec<Rc<OpenPartition>> = self.partitions.borrow().values().cloned().collect();
        let expire_before = self.clock.now_ms() - self.config.producer_id_expiration_ms;
        for open in all {
            if let Err(error) = open.partition.snapshot_producers(expire_before).await {
                tracing::warn!(dir = %open.partition.dir().display(), %error, "writing producer snapshot");
            }
        }
    }

    /// Walks every batch of a partition, from its log start to its high
    /// watermark, calling `visit` with each batch's header and bytes (the
    /// coordinators' loads). Returns the Kafka error of a failed read, or
    /// the first error `visit` returns.
    pub async fn for_each_batch(&self, topic: &str, partition: i32, visit: &mut BatchVisitor<'_>) -> Result<(), i16> {
        let Some(open) = self.get(topic, partition) else {
            return Err(ResponseError::UnknownTopicOrPartition.code());
        };
        open.partition.for_each_batch(|header, batch| visit(header, batch)).await.map_err(|e| match e {
            WalkError::Read(error) => error_code(&error),
            WalkError::Visitor(code) => code,
        })
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
        let offsets = open.partition.offsets();
        match open.partition.read(offset, max_bytes, isolation(read_committed)).await {
            Ok(read) => FetchOutcome {
                error_code: 0,
                high_watermark: read.high_watermark,
                log_start: read.log_start,
                records: read.batches,
                last_stable_offset: read.last_stable_offset,
                visible_end: read.visible_end,
                aborted: read.aborted.iter().map(|a| (a.producer_id, a.first_offset)).collect(),
            },
            Err(error) => FetchOutcome {
                error_code: error_code(&error),
                high_watermark: offsets.high_watermark,
                log_start: offsets.log_start,
                last_stable_offset: open.partition.last_stable_offset(),
                visible_end: open.partition.visible_end(isolation(read_committed)),
                ..FetchOutcome::default()
            },
        }
    }

    /// The last stable offset of a partition, if this shard holds it.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        Some(self.get(topic, partition)?.partition.last_stable_offset())
    }

    /// Waits until any of `partitions` has a high watermark above its
    /// threshold (new data since the caller last looked), or `deadline`.
    pub async fn wait_for_data(&self, partitions: Vec<(String, i32, i64)>, deadline: Instant, read_committed: bool) {
        let opens: Vec<(Rc<OpenPartition>, i64)> =
            partitions.iter().filter_map(|(t, p, o)| self.get(t, *p).map(|open| (open, *o))).collect();
        let level = isolation(read_committed);
        loop {
            if opens.iter().any(|(open, offset)| open.partition.visible_end(level) > *offset) {
                return;
            }
            let now = Instant::now();
            if now >= deadline || opens.is_empty() {
                if opens.is_empty() {
                    self.clock.sleep(deadline.saturating_duration_since(now)).await;
                }
                return;
            }
            let changes = futures::future::select_all(opens.iter().map(|(open, _)| Box::pin(open.partition.changed())));
            let _ = timeout(&*self.clock, deadline - now, changes).await;
        }
    }

    /// ListOffsets for one partition: (error, timestamp, offset).
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64, committed: bool) -> (i16, i64, i64) {
        let Some(open) = self.get(topic, partition) else {
            return (ResponseError::UnknownTopicOrPartition.code(), -1, -1);
        };
        let query = match timestamp {
            -2 => OffsetQuery::Earliest,
            -1 => OffsetQuery::Latest,
            -3 => OffsetQuery::MaxTimestamp,
            ts if ts >= 0 => OffsetQuery::AtOrAfter(ts),
            _ => return (ResponseError::InvalidRequest.code(), -1, -1),
        };
        match open.partition.list_offset(query, isolation(committed)).await {
            Ok(Some(found)) => (0, found.timestamp, found.offset),
            Ok(None) => (0, -1, -1),
            Err(error) => (error_code(&error), -1, -1),
        }
    }

    /// Runs retention on every partition of this shard.
    pub async fn apply_retention(&self) {
        let all: Vec<Rc<OpenPartition>> = self.partitions.borrow().values().cloned().collect();
        let now = self.clock.now_ms();
        for open in all {
            if let Err(error) = open.partition.apply_retention(now).await {
                tracing::warn!(dir = %open.partition.dir().display(), %error, "retention failed");
            }
        }
    }
}
