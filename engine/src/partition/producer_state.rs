//! Idempotent-producer state of one partition, sans IO: for each producer
//! id its epoch and the metadata of its last five batches, so a retried
//! batch is recognised (and answered with the offsets it already has), a
//! gap in sequence numbers is refused, and an older epoch is fenced. The
//! rules follow Kafka's `ProducerStateManager`. For transactions it also
//! keeps each producer's open transaction (its first offset, which bounds
//! the last stable offset) and the aborted transactions that read_committed
//! fetches must be told about.
//!
//! Rebuilt on open from a snapshot (`<offset>.producer-snapshot`, written
//! at close and periodically) plus the batches after it. Owned by the shard
//! that owns the partition.

use std::collections::{BTreeMap, VecDeque};

use crate::format::batch::BatchHeader;

/// Batches remembered per producer (Kafka's `max.in.flight` limit for
/// idempotence is 5).
pub const BATCHES_KEPT: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Producer epoch.
    pub epoch: i16,
    /// First sequence.
    pub first_seq: i32,
    /// Last sequence.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Largest timestamp (ms), for expiry.
    pub timestamp: i64,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended at these offsets: answer success, append nothing.
    Duplicate {
        /// Offset of the original's first record.
        first_offset: i64,
        /// Offset of the original's last record.
        last_offset: i64,
    },
    /// The sequence does not follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder,
    /// The epoch is older than the producer's current one (INVALID_PRODUCER_EPOCH).
    Fenced,
}

/// An aborted transaction in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// Producer id.
    pub producer_id: i64,
    /// Offset of its first batch here.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, VecDeque<BatchMeta>>,
    /// Open transactions: producer id → offset of its first batch here.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
    /// Transactions committed since the last snapshot (so a snapshot cut
    /// below their marker sees them open); not persisted.
    recently_committed: Vec<AbortedTxn>,
}

/// Control record types (the key of a control batch's record).
pub const MARKER_ABORT: i16 = 0;
/// Commit marker.
pub const MARKER_COMMIT: i16 = 1;

/// A transaction marker: a control batch of producer `producer_id` at
/// `epoch` whose one record says commit or abort (key: version 0, type;
/// value: version 0, coordinator epoch).
pub fn marker_batch(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32, timestamp: i64) -> Vec<u8> {
    use crate::format::batch::build::{batch, set_producer, TestRecord};
    let kind = if commit { MARKER_COMMIT } else { MARKER_ABORT };
    let mut key = 0i16.to_be_bytes().to_vec();
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut out = batch(timestamp, &[TestRecord { key: Some(key), value: Some(value), timestamp_delta: 0 }]);
    let attributes = crate::format::batch::ATTR_TRANSACTIONAL | crate::format::batch::ATTR_CONTROL;
    set_producer(&mut out, producer_id, epoch, -1, attributes);
    out
}

/// The marker type of a control batch (uncompressed, one record whose key
/// is version int16 then type int16), if it is one.
pub fn marker_type(batch: &[u8]) -> Option<i16> {
    let header = crate::format::batch::parse_header(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let body = batch.get(crate::format::batch::BATCH_HEADER_BYTES..header.total_bytes())?;
    let record = crate::format::records::key_values(body, 1).into_iter().next()?;
    let key = record.key?;
    Some(i16::from_be_bytes([*key.get(2)?, *key.get(3)?]))
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (last == i32::MAX && next == 0)
}

/// A batch's last sequence (sequences wrap at i32::MAX).
pub fn last_sequence(header: &BatchHeader) -> i32 {
    let span = i64::from(header.last_offset_delta);
    ((i64::from(header.base_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerState {
    /// Producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The current epoch of `producer_id`.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).and_then(|b| b.back()).map(|b| b.epoch)
    }

    /// Decides what to do with a batch of `producer_id` at `epoch` holding
    /// sequences `first_seq..=last_seq`.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        let Some(batches) = self.producers.get(&producer_id) else {
            // No state (new producer, or its batches are gone): any sequence.
            return SequenceCheck::Append;
        };
        let Some(last) = batches.back() else { return SequenceCheck::Append };
        if epoch < last.epoch {
            return SequenceCheck::Fenced;
        }
        if epoch > last.epoch {
            return if first_seq == 0 { SequenceCheck::Append } else { SequenceCheck::OutOfOrder };
        }
        if let Some(original) =
            batches.iter().find(|b| b.first_seq >= 0 && b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate { first_offset: original.first_offset, last_offset: original.last_offset };
        }
        if in_sequence(last.last_seq, first_seq) {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder
        }
    }

    /// Records an appended batch of a transaction: opens it here if this is
    /// its first batch.
    pub fn record_transactional(&mut self, producer_id: i64, batch: BatchMeta) {
        self.ongoing.entry(producer_id).or_insert(batch.first_offset);
        self.record(producer_id, batch);
    }

    /// Moves `producer_id` to `epoch` when a marker carries a newer one
    /// (the coordinator fenced the producer): its next batch starts at
    /// sequence 0 and older epochs are refused.
    pub fn bump_epoch(&mut self, producer_id: i64, epoch: i16, offset: i64, timestamp: i64) {
        if self.epoch_of(producer_id).is_some_and(|current| current >= epoch) {
            return;
        }
        let batches = self.producers.entry(producer_id).or_default();
        batches.clear();
        batches.push_back(BatchMeta {
            epoch,
            first_seq: -1,
            last_seq: -1,
            first_offset: offset,
            last_offset: offset,
            timestamp,
        });
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn has_ongoing(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// Closes `producer_id`'s transaction at its marker's offset; an abort
    /// is remembered for read_committed fetches. False when none was open.
    pub fn complete(&mut self, producer_id: i64, marker_offset: i64, commit: bool) -> bool {
        let Some(first_offset) = self.ongoing.remove(&producer_id) else { return false };
        let txn = AbortedTxn { producer_id, first_offset, last_offset: marker_offset };
        if commit {
            self.recently_committed.push(txn);
        } else {
            self.aborted.push(txn);
        }
        true
    }

    /// First offset of the oldest open transaction (the last stable offset
    /// is this, or the high watermark when there is none).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// Open transactions: (producer id, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(p, o)| (*p, *o))
    }

    /// Aborted transactions that overlap `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted.iter().filter(|a| a.last_offset >= from && a.first_offset < to).copied().collect()
    }

    /// Drops aborted transactions wholly below the log start.
    pub fn forget_aborted_below(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Producers with their epoch, last sequence and last timestamp
    /// (DescribeProducers).
    pub fn describe(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers
            .iter()
            .filter_map(|(id, b)| b.back().map(|last| (*id, last.epoch, last.last_seq, last.timestamp)))
            .collect()
    }

    /// Records an appended batch.
    pub fn record(&mut self, producer_id: i64, batch: BatchMeta) {
        let batches = self.producers.entry(producer_id).or_default();
        if batches.back().is_some_and(|last| last.epoch != batch.epoch) {
            batches.clear();
        }
        batches.push_back(batch);
        while batches.len() > BATCHES_KEPT {
            batches.pop_front();
        }
    }

    /// Records a stored batch read back from the log (recovery), if it
    /// carries a producer id: data batches, transactions and their markers.
    pub fn replay(&mut self, header: &BatchHeader, batch: &[u8]) {
        let marker = if header.is_control() { marker_type(batch) } else { None };
        self.replay_header(header, marker);
    }

    /// [`replay`](Self::replay) from the header alone and, for a control
    /// batch, its marker type (commit or abort).
    pub fn replay_header(&mut self, header: &BatchHeader, marker: Option<i16>) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            if let Some(kind) = marker {
                self.complete(header.producer_id, header.base_offset, kind == MARKER_COMMIT);
                self.bump_epoch(header.producer_id, header.producer_epoch, header.base_offset, header.max_timestamp);
            }
            return;
        }
        if header.is_transactional() {
            self.ongoing.entry(header.producer_id).or_insert(header.base_offset);
        }
        self.record(
            header.producer_id,
            BatchMeta {
                epoch: header.producer_epoch,
                first_seq: header.base_sequence,
                last_seq: last_sequence(header),
                first_offset: header.base_offset,
                last_offset: header.last_offset(),
                timestamp: header.max_timestamp,
            },
        );
    }

    /// Forgets producers whose last batch is older than `expire_before_ms`
    /// (`producer.id.expiration.ms`).
    pub fn expire(&mut self, expire_before_ms: i64) {
        let ongoing = &self.ongoing;
        self.producers.retain(|id, batches| {
            ongoing.contains_key(id) || batches.back().is_some_and(|b| b.timestamp >= expire_before_ms)
        });
    }

    /// Drops batches at or after `offset` (log truncation).
    pub fn truncate_to(&mut self, offset: i64) {
        for batches in self.producers.values_mut() {
            batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, b| !b.is_empty());
        self.ongoing.retain(|_, first| *first < offset);
        self.aborted.retain(|a| a.last_offset < offset);
    }

    /// The state as it was just before `offset`: only batches wholly below
    /// it. Transactions closed at or after `offset` are open again there.
    pub fn below(&self, offset: i64) -> ProducerState {
        let mut out = self.clone();
        out.truncate_to(offset);
        let closed_later = self.aborted.iter().chain(&self.recently_committed);
        for a in closed_later.filter(|a| a.last_offset >= offset && a.first_offset < offset) {
            out.ongoing.insert(a.producer_id, a.first_offset);
        }
        out.recently_committed.clear();
        out
    }

    /// After a snapshot at `offset`: commits below it need no memory.
    pub fn snapshotted(&mut self, offset: i64) {
        self.recently_committed.retain(|c| c.last_offset >= offset);
    }

    /// Snapshot bytes: a version, the producer count, then per producer its
    /// id, batch count and batches (fixed-width big-endian fields), and a
    /// CRC32C of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, batches) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.push(batches.len() as u8);
            for b in batches {
                out.extend_from_slice(&b.epoch.to_be_bytes());
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (id, first) in &self.ongoing {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses snapshot bytes; None when truncated, corrupt or unknown.
    pub fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = body.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        let version = u16::from_be_bytes(take(2)?.try_into().ok()?);
        if version != 1 && version != 2 {
            return None;
        }
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut state = ProducerState::default();
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let batches = take(1)?[0] as usize;
            for _ in 0..batches.min(BATCHES_KEPT) {
                let batch = BatchMeta {
                    epoch: i16::from_be_bytes(take(2)?.try_into().ok()?),
                    first_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    last_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    timestamp: i64::from_be_bytes(take(8)?.try_into().ok()?),
                };
                state.record(id, batch);
            }
        }
        if version >= 2 {
            let ongoing = u32::from_be_bytes(take(4)?.try_into().ok()?);
            for _ in 0..ongoing {
                let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
                let first = i64::from_be_bytes(take(8)?.try_into().ok()?);
                state.ongoing.insert(id, first);
            }
            let aborted = u32::from_be_bytes(take(4)?.try_into().ok()?);
            for _ in 0..aborted {
                state.aborted.push(AbortedTxn {
                    producer_id: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                });
            }
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(epoch: i16, first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            epoch,
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
            timestamp: 1000,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut state = ProducerState::default();
        assert_eq!(state.check(7, 0, 0, 4), SequenceCheck::Append);
        state.record(7, meta(0, 0, 4, 100));
        assert_eq!(state.check(7, 0, 0, 4), SequenceCheck::Duplicate { first_offset: 100, last_offset: 104 });
        assert_eq!(state.check(7, 0, 6, 6), SequenceCheck::OutOfOrder);
        assert_eq!(state.check(7, 0, 5, 9), SequenceCheck::Append);
        for i in 1..=6 {
            state.record(7, meta(0, 5 * i, 5 * i + 4, 100 + 5 * i64::from(i)));
        }
        // Only the last five batches are remembered.
        assert_eq!(state.check(7, 0, 0, 4), SequenceCheck::OutOfOrder);
        assert_eq!(state.check(7, 0, 30, 34), SequenceCheck::Duplicate { first_offset: 130, last_offset: 134 });
        // A new epoch starts at sequence 0; the old one is fenced.
        assert_eq!(state.check(7, 1, 3, 3), SequenceCheck::OutOfOrder);
        assert_eq!(state.check(7, 1, 0, 0), SequenceCheck::Append);
        state.record(7, meta(1, 0, 0, 200));
        assert_eq!(state.check(7, 0, 35, 35), SequenceCheck::Fenced);
        // Sequences wrap.
        state.record(8, meta(0, i32::MAX - 1, i32::MAX, 300));
        assert_eq!(state.check(8, 0, 0, 3), SequenceCheck::Append);
    }

    #[test]
    fn transactions_bound_the_stable_offset_and_aborts_are_listed() {
        let mut state = ProducerState::default();
        state.record_transactional(1, meta(0, 0, 1, 10));
        state.record_transactional(2, meta(0, 0, 0, 12));
        state.record_transactional(1, meta(0, 2, 2, 13));
        assert_eq!(state.first_unstable_offset(), Some(10));
        assert!(state.complete(1, 14, false));
        assert!(!state.complete(1, 15, false), "a second marker closes nothing");
        assert_eq!(state.first_unstable_offset(), Some(12));
        assert!(state.complete(2, 16, true));
        let marker = marker_batch(2, 0, true, 0, 5);
        assert_eq!(marker_type(&marker), Some(MARKER_COMMIT));
        crate::format::batch::validate_batch(&marker, true).expect("a marker is a valid batch");
        assert_eq!(state.first_unstable_offset(), None);
        assert_eq!(
            state.aborted_between(0, 100),
            vec![AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 14 }]
        );
        assert!(state.aborted_between(15, 100).is_empty());
        // Cut before the abort marker: the transaction is open there.
        assert_eq!(state.below(14).first_unstable_offset(), Some(10));
        // Cut before the commit marker: producer 2's transaction is open there.
        assert_eq!(state.below(16).ongoing().collect::<Vec<_>>(), vec![(2, 12)]);
        state.snapshotted(17);
        let bytes = state.encode();
        assert_eq!(ProducerState::decode(&bytes), Some(state));
    }

    #[test]
    fn snapshots_round_trip_and_cut_at_an_offset() {
        let mut state = ProducerState::default();
        state.record(1, meta(0, 0, 1, 10));
        state.record(1, meta(0, 2, 3, 20));
        state.record(2, meta(3, 0, 0, 30));
        let bytes = state.encode();
        assert_eq!(ProducerState::decode(&bytes), Some(state.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(ProducerState::decode(&bytes[..cut]), None);
        }
        let below = state.below(21);
        assert_eq!(below.check(1, 0, 2, 3), SequenceCheck::Append);
        assert_eq!(below.epoch_of(2), None);
    }
}
