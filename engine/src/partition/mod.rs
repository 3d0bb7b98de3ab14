//! One partition replica, Kafka-free: its log, its idempotent producers'
//! state, its transactions (open and aborted, the last stable offset), the
//! high watermark policy and the producer snapshots. Every operation takes
//! the time (`now_ms`) and, for a leader append, the leader epoch as
//! arguments; what an acknowledgement waits for is a [`Durability`], not a
//! Kafka acks number; failures are [`PartitionError`]s, which only the
//! protocol edge turns into Kafka error codes.
//!
//! A `Partition` lives on the shard that owns it and is touched by no other
//! core. A sequence check and the append it allows run in one synchronous
//! step (after [`Log::make_room`]), so producers never need a lock.

pub mod error;
pub mod producer_state;
mod snapshots;
pub mod validation;

use std::cell::{Cell, Ref, RefCell};
use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::format::batch::{BatchHeader, BatchIter};
use crate::log::offsets::PartitionOffsets;
use crate::log::{Log, LogOptions, Placement};
use crate::partition::producer_state::{
    last_sequence, marker_batch, marker_type, AbortedTxn, BatchMeta, ProducerState, SequenceCheck,
};
use crate::partition::validation::{check_client_batch, in_topic_codec, TimestampBounds};
use crate::storage::disk::Disk;

pub use error::{PartitionError, PartitionResult};

/// What an acknowledgement waits for on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the file: survives a crash of the process, not of the
    /// machine.
    Written,
    /// Written and fdatasync'ed (group commit): survives a power loss.
    Durable,
}

/// Who appends as the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer: idempotent batches are checked against the producer's
    /// sequence numbers and epoch.
    Client,
    /// A coordinator writing its own records (offset commits, transaction
    /// metadata, offsets inside a transaction): no sequence check, but a
    /// producer's batch is still refused at an epoch older than its own.
    Coordinator,
}

/// What a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Everything below the last stable offset; aborted transactions are
    /// listed so the reader can drop them.
    ReadCommitted,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The log start offset at the time.
    pub log_start: i64,
    /// A retried idempotent batch: it was already in the log at these
    /// offsets and nothing was appended.
    pub duplicate: bool,
}

impl Appended {
    /// The offset after the last record (what a wait waits for).
    pub fn end_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// A transaction marker a coordinator asks a partition to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    /// The producer whose transaction ends.
    pub producer_id: i64,
    /// Its epoch (a fencing abort carries a bumped one).
    pub producer_epoch: i16,
    /// Commit or abort.
    pub commit: bool,
    /// The coordinator's epoch.
    pub coordinator_epoch: i32,
}

/// Whole batches read from a partition, with its offsets at read time.
#[derive(Debug, Clone, Default)]
pub struct PartitionRead {
    /// Whole batches, in offset order, as stored.
    pub batches: Vec<Bytes>,
    /// For [`Partition::read_for_socket`]: the batches as a resident file
    /// range instead (then `batches` is empty).
    pub resident: Option<crate::log::FileRange>,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start: i64,
    /// End of what the isolation level may see (a long poll waits past it).
    pub visible_end: i64,
    /// read_committed: the aborted transactions below the read limit.
    pub aborted: Vec<AbortedTxn>,
}

/// What ListOffsets asks of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The end of what the isolation level may see.
    Latest,
    /// The record with the largest timestamp (KIP-734).
    MaxTimestamp,
    /// The first record with a timestamp at or after this one.
    AtOrAfter(i64),
}

/// An offset found by a [`OffsetQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundOffset {
    /// The offset.
    pub offset: i64,
    /// Its record's timestamp (-1 for earliest and latest).
    pub timestamp: i64,
}

/// Why a walk over a partition's batches stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// Reading the partition failed.
    #[error("reading the partition: {0}")]
    Read(PartitionError),
    /// The visitor refused a batch.
    #[error("a batch was refused")]
    Visitor(E),
}

/// Bytes a walk over the partition reads per step.
const WALK_READ_BYTES: usize = 4 << 20;

/// One partition replica. See the module documentation.
pub struct Partition<D: Disk> {
    log: Log<D>,
    producers: RefCell<ProducerState>,
    /// Offset of the newest producer snapshot.
    snapshot_offset: Cell<i64>,
    /// Markers written here so far (a verification of a transaction's
    /// first batch holds only while no marker lands meanwhile).
    markers_written: Cell<u64>,
}

/// What a transactional batch that starts its producer's transaction on a
/// partition was checked against: taken before asking the transaction
/// coordinator whether the partition is in the transaction (KIP-890 part
/// 1), it makes the append fail if a marker landed while the answer was
/// on its way (the transaction ended: the batch is late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnVerification {
    markers_written: u64,
}

impl<D: Disk> Partition<D> {
    /// Opens the partition in `dir`, recovering its log after a crash and
    /// rebuilding its producer state (snapshot plus the batches after it).
    pub async fn open(disk: D, dir: &Path, options: LogOptions, now_ms: i64) -> PartitionResult<Self> {
        let log = Log::open(disk, dir, options, now_ms).await?;
        let (producers, snapshot_offset) = snapshots::load(&log).await?;
        Ok(Partition {
            log,
            producers: RefCell::new(producers),
            snapshot_offset: Cell::new(snapshot_offset),
            markers_written: Cell::new(0),
        })
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// The underlying log (for maintenance and tests).
    pub fn log(&self) -> &Log<D> {
        &self.log
    }

    /// The partition's offsets now.
    pub fn offsets(&self) -> PartitionOffsets {
        self.log.offsets()
    }

    /// The producers' state (read only).
    pub fn producer_state(&self) -> Ref<'_, ProducerState> {
        self.producers.borrow()
    }

    /// The last stable offset: below the first open transaction, at most
    /// the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.log.offsets().high_watermark;
        let first_unstable = self.producers.borrow().first_unstable_offset();
        first_unstable.map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The end of what `isolation` may read.
    pub fn visible_end(&self, isolation: Isolation) -> i64 {
        match isolation {
            Isolation::ReadUncommitted => self.log.offsets().high_watermark,
            Isolation::ReadCommitted => self.last_stable_offset(),
        }
    }

    /// Appends as the leader: validates every batch, checks an idempotent
    /// producer's sequence and epoch (a retry gets its original offsets and
    /// appends nothing), assigns offsets from the log end and stamps
    /// `leader_epoch`. Returns once the batches are in the log (readable
    /// by followers); wait with [`wait_until`](Self::wait_until).
    pub async fn append_as_leader(
        &self,
        records: BytesMut,
        origin: AppendOrigin,
        leader_epoch: i32,
        now_ms: i64,
    ) -> PartitionResult<Appended> {
        self.append_leader(records, origin, None, leader_epoch, now_ms).await
    }

    /// The producer (id, epoch) of `records` when they are a transactional
    /// batch that would start the producer's transaction here: such a batch
    /// must be verified with the transaction coordinator first (the
    /// partition must be in the transaction), then appended with
    /// [`append_verified`](Self::append_verified).
    pub fn needs_verification(&self, records: &[u8]) -> Option<(i64, i16)> {
        let header = crate::format::batch::parse_header(records).ok()?;
        let starts = header.is_transactional()
            && !header.is_control()
            && header.producer_id >= 0
            && !self.producers.borrow().has_ongoing(header.producer_id);
        starts.then_some((header.producer_id, header.producer_epoch))
    }

    /// Starts a verification: take it before asking the coordinator.
    pub fn begin_verification(&self) -> TxnVerification {
        TxnVerification { markers_written: self.markers_written.get() }
    }

    /// A client's append whose transaction the coordinator confirmed since
    /// `verification` was taken; refused if a marker landed meanwhile.
    pub async fn append_verified(
        &self,
        records: BytesMut,
        verification: TxnVerification,
        leader_epoch: i32,
        now_ms: i64,
    ) -> PartitionResult<Appended> {
        self.append_leader(records, AppendOrigin::Client, Some(verification), leader_epoch, now_ms).await
    }

    async fn append_leader(
        &self,
        records: BytesMut,
        origin: AppendOrigin,
        verification: Option<TxnVerification>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> PartitionResult<Appended> {
        let valid = self.log.validate(records)?;
        let header = *valid.headers().next().ok_or(PartitionError::MultipleProducerBatches)?;
        // A client batch compressed otherwise than the topic's codec is
        // recompressed; the checks' decompressed records are kept for it.
        let recompress_to = match self.log.config().compression {
            Some(codec) if origin == AppendOrigin::Client && valid.headers().any(|h| h.compression() != codec.id()) => {
                Some(codec)
            }
            _ => None,
        };
        let mut checked: Vec<Option<Vec<u8>>> = Vec::new();
        if origin == AppendOrigin::Client {
            if valid.headers().any(BatchHeader::is_control) {
                // Only coordinators write markers (Kafka's LogValidator).
                return Err(PartitionError::ControlBatchFromClient);
            }
            let config = self.log.config();
            let bounds = TimestampBounds {
                before_max_ms: config.timestamp_before_max_ms,
                after_max_ms: config.timestamp_after_max_ms,
            };
            for (batch, header) in valid.batches() {
                let records = check_client_batch(batch, header, bounds, now_ms)?;
                if recompress_to.is_some() {
                    checked.push(records);
                }
            }
        }
        let valid = match recompress_to {
            Some(codec) => self.log.validate(in_topic_codec(&valid, codec, &checked)?)?,
            None => valid,
        };
        drop(checked);
        if header.producer_id >= 0 && valid.len() != 1 {
            // Kafka: a producer with an id sends exactly one batch per partition.
            return Err(PartitionError::MultipleProducerBatches);
        }
        self.log.make_room(&valid, now_ms).await?;
        // From here to the append nothing awaits: the check holds.
        if header.producer_id >= 0 {
            match origin {
                AppendOrigin::Client => {
                    if let Some(duplicate) = self.check_sequence(&header)? {
                        return Ok(duplicate);
                    }
                }
                // A coordinator's batch in a transaction (offsets) skips the
                // sequence check but not the epoch: a fenced producer's
                // commits must not land.
                AppendOrigin::Coordinator => self.check_epoch(&header)?,
            }
            if let Some(verification) = verification {
                let starts = header.is_transactional() && !self.producers.borrow().has_ongoing(header.producer_id);
                if starts && self.markers_written.get() != verification.markers_written {
                    return Err(PartitionError::TransactionEnded { producer_id: header.producer_id });
                }
            }
        }
        let info = self.log.append_valid(valid, Placement::Leader { leader_epoch })?;
        if header.producer_id >= 0 {
            let meta = BatchMeta {
                epoch: header.producer_epoch,
                first_seq: if origin == AppendOrigin::Client { header.base_sequence } else { -1 },
                last_seq: if origin == AppendOrigin::Client { last_sequence(&header) } else { -1 },
                first_offset: info.base_offset,
                last_offset: info.last_offset,
                timestamp: now_ms,
            };
            let mut producers = self.producers.borrow_mut();
            if header.is_transactional() {
                producers.record_transactional(header.producer_id, meta);
            } else {
                producers.record(header.producer_id, meta);
            }
        }
        Ok(Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_start: info.log_start,
            duplicate: false,
        })
    }

    /// Refuses a batch whose producer epoch is older than the producer's.
    fn check_epoch(&self, header: &BatchHeader) -> PartitionResult<()> {
        let current = self.producers.borrow().epoch_of(header.producer_id);
        if current.is_some_and(|current| header.producer_epoch < current) {
            return Err(PartitionError::ProducerFenced {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
            });
        }
        Ok(())
    }

    /// The outcome for an idempotent batch: `Some` for a retry (already in
    /// the log), `None` to append, or the refusal.
    fn check_sequence(&self, header: &BatchHeader) -> PartitionResult<Option<Appended>> {
        let (id, epoch, first_seq) = (header.producer_id, header.producer_epoch, header.base_sequence);
        let check = self.producers.borrow().check(id, epoch, first_seq, last_sequence(header));
        match check {
            SequenceCheck::Append => Ok(None),
            SequenceCheck::Duplicate { first_offset, last_offset } => Ok(Some(Appended {
                base_offset: first_offset,
                last_offset,
                log_start: self.log.offsets().log_start,
                duplicate: true,
            })),
            SequenceCheck::Fenced => Err(PartitionError::ProducerFenced { producer_id: id, epoch }),
            SequenceCheck::OutOfOrder => {
                Err(PartitionError::OutOfOrderSequence { producer_id: id, first_sequence: first_seq })
            }
        }
    }

    /// Appends a follower's batches exactly as the leader gave them
    /// (offsets and leader epochs kept); they must start at the log end
    /// and be contiguous. Producer and transaction state follow the
    /// batches, markers included.
    pub async fn append_as_follower(&self, records: BytesMut, now_ms: i64) -> PartitionResult<Appended> {
        let valid = self.log.validate(records)?;
        self.log.make_room(&valid, now_ms).await?;
        let mut at = 0usize;
        let replays: Vec<(BatchHeader, Option<i16>)> = valid
            .headers()
            .map(|header| {
                let batch = &valid.bytes()[at..at + header.total_bytes()];
                at += header.total_bytes();
                (*header, if header.is_control() { marker_type(batch) } else { None })
            })
            .collect();
        let info = self.log.append_valid(valid, Placement::Follower)?;
        let mut producers = self.producers.borrow_mut();
        for (header, marker) in &replays {
            producers.replay_header(header, *marker);
        }
        Ok(Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_start: info.log_start,
            duplicate: false,
        })
    }

    /// Waits until every offset below `end_offset` is as durable as asked.
    pub async fn wait_until(&self, end_offset: i64, durability: Durability) -> PartitionResult<()> {
        match durability {
            Durability::Written => self.log.wait_written(end_offset).await?,
            Durability::Durable => self.log.wait_durable(end_offset).await?,
        }
        Ok(())
    }

    /// Writes a commit or abort marker for the producer, as the leader. As
    /// in Kafka the marker is written whether or not the producer has an
    /// open transaction here: it closes the open one if there is one, and
    /// in every case makes the marker's epoch the producer's epoch on this
    /// partition, durably, so a fenced producer (a transaction aborted by
    /// its coordinator with an epoch bump) cannot start a new transaction
    /// here with its old epoch. A repeated marker changes nothing else.
    pub async fn write_marker(&self, marker: TxnMarker, leader_epoch: i32, now_ms: i64) -> PartitionResult<Appended> {
        let TxnMarker { producer_id, producer_epoch, commit, coordinator_epoch } = marker;
        let bytes = marker_batch(producer_id, producer_epoch, commit, coordinator_epoch, now_ms);
        let valid = self.log.validate(BytesMut::from(&bytes[..]))?;
        self.log.make_room(&valid, now_ms).await?;
        let info = self.log.append_valid(valid, Placement::Leader { leader_epoch })?;
        self.markers_written.set(self.markers_written.get() + 1);
        let mut producers = self.producers.borrow_mut();
        producers.complete(producer_id, info.base_offset, commit);
        producers.bump_epoch(producer_id, producer_epoch, info.base_offset, now_ms);
        debug_assert!(!producers.has_ongoing(producer_id), "a marker closes the producer's transaction");
        Ok(Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_start: info.log_start,
            duplicate: false,
        })
    }

    /// Reads whole batches from the one containing `offset`, below what
    /// `isolation` may see, up to `max_bytes` (the first batch whole even
    /// when larger). An offset between the visible end and the log end
    /// reads nothing yet.
    pub async fn read(&self, offset: i64, max_bytes: usize, isolation: Isolation) -> PartitionResult<PartitionRead> {
        self.read_with(offset, max_bytes, isolation, false).await
    }

    /// [`read`](Self::read) for a client's socket: the same batches, as a
    /// resident file range (`resident`) when they are not in the batch
    /// cache but all in the page cache (see [`crate::log::Log::read_resident`]).
    pub async fn read_for_socket(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> PartitionResult<PartitionRead> {
        self.read_with(offset, max_bytes, isolation, true).await
    }

    async fn read_with(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
        resident: bool,
    ) -> PartitionResult<PartitionRead> {
        let mut out = self.read_position(offset, isolation)?;
        if offset >= out.visible_end {
            return Ok(out);
        }
        let read = if resident {
            self.log.read_resident(offset, max_bytes, out.visible_end).await?
        } else {
            self.log.read(offset, max_bytes, out.visible_end).await?
        };
        if isolation == Isolation::ReadCommitted && read.total_bytes() > 0 {
            // A read returns chunks that may hold several batches: list every
            // aborted transaction below the read limit (a client ignores
            // those past the data it got).
            out.aborted = self.producers.borrow().aborted_between(offset, out.visible_end);
        }
        out.high_watermark = read.high_watermark;
        out.log_start = read.log_start;
        out.batches = read.batches;
        out.resident = read.resident;
        Ok(out)
    }

    /// What a read at `offset` would answer, without reading records (a
    /// fetch whose byte budget is spent): the offsets, or the out-of-range
    /// error the read would give.
    pub fn read_position(&self, offset: i64, isolation: Isolation) -> PartitionResult<PartitionRead> {
        let offsets = self.log.offsets();
        let last_stable_offset = self.last_stable_offset();
        let visible_end = match isolation {
            Isolation::ReadUncommitted => offsets.high_watermark,
            Isolation::ReadCommitted => last_stable_offset,
        };
        debug_assert!(last_stable_offset <= offsets.high_watermark && offsets.high_watermark <= offsets.log_end);
        if offset < offsets.log_start || offset > offsets.log_end {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                log_start: offsets.log_start,
                log_end: offsets.log_end,
            });
        }
        Ok(PartitionRead {
            batches: Vec::new(),
            resident: None,
            high_watermark: offsets.high_watermark,
            last_stable_offset,
            log_start: offsets.log_start,
            visible_end,
            aborted: Vec::new(),
        })
    }

    /// ListOffsets: earliest, latest, the max timestamp record, or the
    /// first record at or after a timestamp, each within what `isolation`
    /// may see (below the LSO for read_committed). `None` when no record
    /// matches.
    pub async fn list_offset(&self, query: OffsetQuery, isolation: Isolation) -> PartitionResult<Option<FoundOffset>> {
        let offsets = self.log.offsets();
        Ok(match query {
            OffsetQuery::Earliest => Some(FoundOffset { offset: offsets.log_start, timestamp: -1 }),
            OffsetQuery::Latest => Some(FoundOffset { offset: self.visible_end(isolation), timestamp: -1 }),
            OffsetQuery::MaxTimestamp => self
                .log
                .max_timestamp_record()
                .await?
                .filter(|(offset, _)| *offset < self.visible_end(isolation))
                .map(|(offset, timestamp)| FoundOffset { offset, timestamp }),
            OffsetQuery::AtOrAfter(timestamp) => self
                .log
                .offset_for_timestamp(timestamp, self.visible_end(isolation))
                .await?
                .map(|(offset, found)| FoundOffset { offset: offset.max(offsets.log_start), timestamp: found }),
        })
    }

    /// Waits until the partition's offsets change in any way (long poll).
    pub async fn changed(&self) {
        self.log.changed().await
    }

    /// Walks every batch from the log start to the high watermark, calling
    /// `visit` with each batch's header and bytes (a coordinator's load).
    pub async fn for_each_batch<E>(
        &self,
        mut visit: impl FnMut(&BatchHeader, &[u8]) -> Result<(), E>,
    ) -> Result<(), WalkError<E>> {
        let mut offset = self.log.offsets().log_start;
        loop {
            let read = match self.read(offset, WALK_READ_BYTES, Isolation::ReadUncommitted).await {
                Err(PartitionError::OffsetOutOfRange { log_start, .. }) if offset < log_start => {
                    // Retention moved the start meanwhile.
                    offset = log_start;
                    continue;
                }
                other => other.map_err(WalkError::Read)?,
            };
            if read.batches.is_empty() {
                return Ok(());
            }
            let before = offset;
            for chunk in &read.batches {
                for (at, header) in BatchIter::new(chunk) {
                    offset = offset.max(header.next_offset());
                    visit(&header, &chunk[at..at + header.total_bytes()]).map_err(WalkError::Visitor)?;
                }
            }
            assert!(offset > before, "a walk makes progress");
            if offset >= read.high_watermark {
                return Ok(());
            }
        }
    }

    /// Moves the high watermark forward (replication drives it; capped at
    /// the log end, never backwards).
    pub fn advance_high_watermark(&self, to: i64) {
        self.log.advance_high_watermark(to);
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` this
    /// replica knows and the offset where the next one starts (the log end
    /// for the latest); (-1, -1) when it knows none.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.leader_epochs().end_offset_for(epoch, self.log.offsets().log_end)
    }

    /// Removes every batch at or after `offset` and rebuilds the producer
    /// state for the shorter log. Returns the new log end.
    pub async fn truncate_to(&self, offset: i64) -> PartitionResult<i64> {
        let log_end = self.log.truncate_to(offset).await?;
        snapshots::remove_above(self.log.disk(), self.log.dir(), log_end).await?;
        let (producers, snapshot_offset) = snapshots::load(&self.log).await?;
        *self.producers.borrow_mut() = producers;
        self.snapshot_offset.set(snapshot_offset.min(log_end));
        assert!(self.log.offsets().log_end <= offset.max(self.log.offsets().log_start));
        Ok(log_end)
    }

    /// Truncation by leader epoch (KIP-101, KIP-279): the leader answered
    /// OffsetForLeaderEpoch with `leader_end_offset` for `leader_epoch`;
    /// this replica keeps what both logs agree on: up to the smaller of that
    /// offset and its own end of the same epoch. Returns the new log end.
    pub async fn truncate_to_leader_epoch(&self, leader_epoch: i32, leader_end_offset: i64) -> PartitionResult<i64> {
        let log_end = self.log.offsets().log_end;
        let (local_epoch, local_end) = self.end_offset_for_epoch(leader_epoch);
        let ours = if local_epoch < 0 { log_end } else { local_end };
        let target = ours.min(leader_end_offset).min(log_end);
        if target >= log_end {
            return Ok(log_end);
        }
        self.truncate_to(target).await
    }

    /// Snapshots the producer state if the durable offset moved since the
    /// last snapshot, after forgetting producers idle since before
    /// `expire_before_ms` and aborted transactions below the log start.
    pub async fn snapshot_producers(&self, expire_before_ms: i64) -> PartitionResult<()> {
        let offsets = self.log.offsets();
        if offsets.durable <= self.snapshot_offset.get() {
            return Ok(());
        }
        let state = {
            let mut producers = self.producers.borrow_mut();
            producers.expire(expire_before_ms);
            producers.forget_aborted_below(offsets.log_start);
            producers.below(offsets.durable)
        };
        snapshots::write(self.log.disk(), self.log.dir(), offsets.durable, &state).await?;
        self.snapshot_offset.set(offsets.durable);
        self.producers.borrow_mut().snapshotted(offsets.durable);
        Ok(())
    }

    /// Deletes segments past `retention.ms` or `retention.bytes`. Returns
    /// how many were deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> PartitionResult<usize> {
        Ok(self.log.apply_retention(now_ms).await?)
    }

    /// Clean close: everything durable, the log closed with its clean
    /// marker, and the producer state snapshotted at the log end.
    pub async fn close(&self) -> PartitionResult<()> {
        self.log.close().await?;
        let end = self.log.offsets().log_end;
        // A snapshot at the log end is already there when nothing was
        // appended since the last close.
        if !snapshots::exists(self.log.disk(), self.log.dir(), end) {
            let state = self.producers.borrow().clone();
            snapshots::write(self.log.disk(), self.log.dir(), end, &state).await?;
        }
        Ok(())
    }
}
