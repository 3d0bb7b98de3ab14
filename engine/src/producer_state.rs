//! Idempotent-producer state of one partition, sans IO: for each producer
//! id its epoch and the metadata of its last five batches, so a retried
//! batch is recognised (and answered with the offsets it already has), a
//! gap in sequence numbers is refused, and an older epoch is fenced. The
//! rules follow Kafka's `ProducerStateManager`.
//!
//! Rebuilt on open from a snapshot (`<offset>.producer-snapshot`, written
//! at close and periodically) plus the batches after it. Owned by the shard
//! that owns the partition.

use std::collections::{BTreeMap, VecDeque};

use crate::batch::BatchHeader;

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

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, VecDeque<BatchMeta>>,
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
        if let Some(original) = batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last_seq) {
            return SequenceCheck::Duplicate { first_offset: original.first_offset, last_offset: original.last_offset };
        }
        if in_sequence(last.last_seq, first_seq) {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder
        }
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
    /// carries a producer id.
    pub fn replay(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.is_control() {
            return;
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
        self.producers.retain(|_, batches| batches.back().is_some_and(|b| b.timestamp >= expire_before_ms));
    }

    /// Drops batches at or after `offset` (log truncation).
    pub fn truncate_to(&mut self, offset: i64) {
        for batches in self.producers.values_mut() {
            batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, b| !b.is_empty());
    }

    /// The state as it was just before `offset`: only batches wholly below it.
    pub fn below(&self, offset: i64) -> ProducerState {
        let mut out = self.clone();
        out.truncate_to(offset);
        out
    }

    /// Snapshot bytes: a version, the producer count, then per producer its
    /// id, batch count and batches (fixed-width big-endian fields), and a
    /// CRC32C of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1u16.to_be_bytes());
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
        if u16::from_be_bytes(take(2)?.try_into().ok()?) != 1 {
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
