//! Kafka's LogValidator for a client's batches, on the partition's shard,
//! before anything is appended: every record of every batch is walked (a
//! compressed batch decompressed first, within
//! [`MAX_DECOMPRESSED_BYTES`]). The records must frame as Kafka's
//! DefaultRecord, be as many as the header counts, carry offset deltas
//! 0, 1, 2, …, and (CreateTime) have timestamps within
//! `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of
//! the broker's clock. A batch the producer compressed otherwise than the
//! topic's `compression.type` is then recompressed ([`in_topic_codec`]).
//! Pure: the caller passes the time.

use bytes::BytesMut;

use crate::format::batch::{recompressed, recompressed_records, BatchHeader, ATTR_TIMESTAMP_TYPE, BATCH_HEADER_BYTES};
use crate::format::compression::{decompress, Codec};
use crate::format::records::{walk_records, MAX_DECOMPRESSED_BYTES};
use crate::log::ValidBatches;
use crate::partition::error::{PartitionError, RecordError};

/// `valid`'s batches with every one the producer compressed otherwise than
/// the topic's `codec` recompressed in it (Kafka's LogValidator does the
/// same, once, on produce).
///
/// `checked` holds, batch by batch, the records [`check_client_batch`]
/// decompressed, so a batch is not decompressed twice.
pub fn in_topic_codec(
    valid: &ValidBatches,
    codec: Codec,
    checked: &[Option<Vec<u8>>],
) -> Result<BytesMut, PartitionError> {
    let mut out = BytesMut::with_capacity(valid.bytes().len());
    for (i, (batch, header)) in valid.batches().enumerate() {
        if header.compression() == codec.id() {
            out.extend_from_slice(batch);
            continue;
        }
        let rewritten = match checked.get(i) {
            Some(Some(records)) => recompressed_records(batch, header, codec, records, MAX_DECOMPRESSED_BYTES),
            _ => recompressed(batch, header, codec, MAX_DECOMPRESSED_BYTES),
        };
        let rewritten = rewritten.map_err(|error| PartitionError::InvalidRecords {
            message: format!("the batch does not decompress: {error}"),
            records: Vec::new(),
        })?;
        out.extend_from_slice(&rewritten);
    }
    Ok(out)
}

/// The timestamp bounds of a topic (`None`: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimestampBounds {
    /// `message.timestamp.before.max.ms`: how far a record may lie in the past.
    pub before_max_ms: Option<u64>,
    /// `message.timestamp.after.max.ms`: how far it may lie in the future.
    pub after_max_ms: Option<u64>,
}

/// Checks the records of one client batch (`batch` holds exactly it, its
/// header already checked) against Kafka's rules at `now_ms`. Returns the
/// records decompressed when the batch is compressed.
pub fn check_client_batch(
    batch: &[u8],
    header: &BatchHeader,
    bounds: TimestampBounds,
    now_ms: i64,
) -> Result<Option<Vec<u8>>, PartitionError> {
    let count = usize::try_from(header.records_count)
        .map_err(|_| PartitionError::InvalidRecords { message: "negative record count".into(), records: Vec::new() })?;
    let stored = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let decompressed = if header.compression() == 0 {
        None
    } else {
        Some(decompress(header.compression(), stored, MAX_DECOMPRESSED_BYTES).map_err(|error| {
            PartitionError::InvalidRecords {
                message: format!("the batch does not decompress: {error}"),
                records: Vec::new(),
            }
        })?)
    };
    let body = decompressed.as_deref().unwrap_or(stored);
    let create_time = header.attributes & ATTR_TIMESTAMP_TYPE == 0;
    let mut misnumbered: Option<(usize, i64)> = None;
    let mut bad_timestamps: Vec<RecordError> = Vec::new();
    walk_records(body, count, |index, record| {
        if misnumbered.is_none() && record.offset_delta != index as i64 {
            misnumbered = Some((index, record.offset_delta));
        }
        if create_time {
            let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
            if let Some(why) = out_of_bounds(timestamp, bounds, now_ms) {
                bad_timestamps.push(RecordError { batch_index: index as i32, message: why });
            }
        }
    })
    .map_err(|error| PartitionError::InvalidRecords { message: error.to_string(), records: Vec::new() })?;
    if let Some((index, found)) = misnumbered {
        return Err(PartitionError::InvalidRecords {
            message: format!("record {index} has offset delta {found}, expected {index}"),
            records: vec![RecordError { batch_index: index as i32, message: "offset delta out of order".into() }],
        });
    }
    if !bad_timestamps.is_empty() {
        return Err(PartitionError::InvalidTimestamps { records: bad_timestamps });
    }
    Ok(decompressed)
}

fn out_of_bounds(timestamp: i64, bounds: TimestampBounds, now_ms: i64) -> Option<String> {
    let behind = i128::from(now_ms) - i128::from(timestamp);
    if bounds.before_max_ms.is_some_and(|max| behind > i128::from(max)) {
        return Some(format!(
            "timestamp {timestamp} is more than message.timestamp.before.max.ms before the broker's time {now_ms}"
        ));
    }
    if bounds.after_max_ms.is_some_and(|max| -behind > i128::from(max)) {
        return Some(format!(
            "timestamp {timestamp} is more than message.timestamp.after.max.ms after the broker's time {now_ms}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::build::{batch, simple_batch, TestRecord};
    use crate::format::batch::parse_header;

    fn check(bytes: &[u8], bounds: TimestampBounds, now_ms: i64) -> Result<(), PartitionError> {
        check_client_batch(bytes, &parse_header(bytes).expect("header"), bounds, now_ms).map(|_| ())
    }

    #[test]
    fn well_formed_batches_pass() {
        assert!(check(&simple_batch(1_000, 5, 100), TimestampBounds::default(), 1_000).is_ok());
    }

    #[test]
    fn timestamps_outside_the_bounds_are_named_per_record() {
        let records: Vec<TestRecord> = [0, 5_000, 20_000]
            .into_iter()
            .map(|delta| TestRecord { key: None, value: Some(vec![1]), timestamp_delta: delta })
            .collect();
        let bytes = batch(100_000, &records);
        let bounds = TimestampBounds { before_max_ms: Some(10_000), after_max_ms: Some(1_000) };
        // now 115_000: record 0 (100_000) is 15 s old, record 2 (120_000) 5 s ahead.
        match check(&bytes, bounds, 115_000) {
            Err(PartitionError::InvalidTimestamps { records }) => {
                assert_eq!(records.iter().map(|r| r.batch_index).collect::<Vec<_>>(), vec![0, 2]);
            }
            other => panic!("expected invalid timestamps, got {other:?}"),
        }
        assert!(check(&bytes, TimestampBounds::default(), 115_000).is_ok());
    }

    #[test]
    fn broken_framing_and_counts_are_refused() {
        let good = simple_batch(1_000, 3, 10);
        // One record fewer than the header claims: rewrite the count (and CRC
        // is not checked here, the header was).
        let mut short = good.clone();
        short[57..61].copy_from_slice(&4i32.to_be_bytes());
        assert!(matches!(check(&short, TimestampBounds::default(), 0), Err(PartitionError::InvalidRecords { .. })));
        // A record length that runs past the batch.
        let mut long = good.clone();
        long[BATCH_HEADER_BYTES] = 0x7e;
        assert!(matches!(check(&long, TimestampBounds::default(), 0), Err(PartitionError::InvalidRecords { .. })));
    }
}
