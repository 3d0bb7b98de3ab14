//! Record-level parsing inside an uncompressed magic-2 batch (varint
//! fields), used where Kafka answers per record: ListOffsets by timestamp.
//! Pure functions; never allocates from a length read off the wire.

use crate::format::batch::{parse_header, BATCH_HEADER_BYTES};

/// Reads a zigzag varint (at most 10 bytes); returns it and the bytes used.
pub fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, i + 1));
        }
    }
    None
}

/// One record's offset delta and timestamp delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    /// Offset relative to the batch base offset.
    pub offset_delta: i64,
    /// Timestamp relative to the batch base timestamp.
    pub timestamp_delta: i64,
}

/// Iterates the records of an uncompressed batch body (after the header).
pub fn record_positions(body: &[u8], count: usize) -> Vec<RecordPosition> {
    let mut out = Vec::new();
    let mut rest = body;
    for _ in 0..count {
        let Some((length, used)) = read_varint(rest) else { break };
        if length < 0 || used + length as usize > rest.len() {
            break;
        }
        let record = &rest[used..used + length as usize];
        rest = &rest[used + length as usize..];
        // attributes (1 byte), timestamp delta, offset delta
        let Some((timestamp_delta, a)) = record.get(1..).and_then(read_varint) else { break };
        let Some((offset_delta, _)) = record.get(1 + a..).and_then(read_varint) else { break };
        out.push(RecordPosition { offset_delta, timestamp_delta });
    }
    out
}

/// One record's key and value, borrowed from a batch body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValue<'a> {
    /// Offset relative to the batch base offset.
    pub offset_delta: i64,
    /// Key, or None for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, or None for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Keys and values of the records of an uncompressed batch body; stops at
/// the first record that does not fit the bytes present.
pub fn key_values(body: &[u8], count: usize) -> Vec<KeyValue<'_>> {
    fn field(bytes: &[u8], at: &mut usize) -> Option<Option<(usize, usize)>> {
        let (len, used) = read_varint(bytes.get(*at..)?)?;
        *at += used;
        if len < 0 {
            return Some(None);
        }
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        if end > bytes.len() {
            return None;
        }
        let span = (*at, end);
        *at = end;
        Some(Some(span))
    }
    let mut out = Vec::new();
    let mut rest = body;
    for _ in 0..count {
        let Some((length, used)) = read_varint(rest) else { break };
        if length < 0 || used + length as usize > rest.len() {
            break;
        }
        let record = &rest[used..used + length as usize];
        rest = &rest[used + length as usize..];
        let parsed = (|| {
            let mut at = 1; // attributes
            let (_, a) = read_varint(record.get(at..)?)?; // timestamp delta
            at += a;
            let (offset_delta, b) = read_varint(record.get(at..)?)?;
            at += b;
            let key = field(record, &mut at)?;
            let value = field(record, &mut at)?;
            Some(KeyValue {
                offset_delta,
                key: key.map(|(s, e)| &record[s..e]),
                value: value.map(|(s, e)| &record[s..e]),
            })
        })();
        match parsed {
            Some(kv) => out.push(kv),
            None => break,
        }
    }
    out
}

/// Calls `visit` with each record's key and value of one whole batch
/// (`batch`, whose parsed header is `header`), decompressing it first
/// (bounded by [`MAX_DECOMPRESSED_BYTES`]).
pub fn for_each_key_value(
    batch: &[u8],
    header: &crate::format::batch::BatchHeader,
    mut visit: impl FnMut(KeyValue<'_>),
) -> Result<(), crate::format::compression::DecompressError> {
    let compressed = batch.get(BATCH_HEADER_BYTES..header.total_bytes()).unwrap_or_default();
    let body = crate::format::compression::decompress(header.compression(), compressed, MAX_DECOMPRESSED_BYTES)?;
    for kv in key_values(&body, header.records_count.max(0) as usize) {
        visit(kv);
    }
    Ok(())
}

/// Largest decompressed batch body looked into.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// In a CreateTime batch (compressed or not), the first record with a
/// timestamp ≥ `timestamp` as (offset, timestamp). `None` for LogAppendTime
/// batches, undecodable bodies, or when no record qualifies.
pub fn first_record_at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
    let header = parse_header(batch).ok()?;
    if header.attributes & crate::format::batch::ATTR_TIMESTAMP_TYPE != 0 {
        return None;
    }
    let compressed = batch.get(BATCH_HEADER_BYTES..header.total_bytes())?;
    let body = crate::format::compression::decompress(header.compression(), compressed, MAX_DECOMPRESSED_BYTES).ok()?;
    let count = usize::try_from(header.records_count).ok()?;
    record_positions(&body, count)
        .into_iter()
        .map(|r| (header.base_offset + r.offset_delta, header.base_timestamp + r.timestamp_delta))
        .find(|&(_, ts)| ts >= timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::build::{batch, TestRecord};

    #[test]
    fn finds_first_record_by_timestamp() {
        let records: Vec<TestRecord> = [0i64, 5, 3, 10]
            .iter()
            .map(|d| TestRecord { key: None, value: Some(vec![1, 2]), timestamp_delta: *d })
            .collect();
        let mut bytes = batch(1_000, &records);
        crate::format::batch::assign_offsets(&mut bytes, 100, 0);
        assert_eq!(first_record_at_or_after(&bytes, 1_004), Some((101, 1_005)));
        assert_eq!(first_record_at_or_after(&bytes, 1_000), Some((100, 1_000)));
        assert_eq!(first_record_at_or_after(&bytes, 1_011), None);
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0xff; 11]), None);
    }
}

/// Why a batch body's records do not frame as Kafka's DefaultRecord.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordFramingError {
    /// A record's length, or a field inside it, runs past what is there.
    #[error("record {0} is truncated or its length is invalid")]
    Truncated(usize),
    /// A field inside a record is malformed (a negative size where none is
    /// allowed, a varint too long).
    #[error("record {0} has an invalid field")]
    BadField(usize),
    /// A record's fields do not fill its declared length exactly.
    #[error("record {0} does not fill its declared length")]
    LengthMismatch(usize),
    /// Bytes remain after the last record the header counts.
    #[error("bytes remain after the last of {0} records")]
    TrailingBytes(usize),
}

/// Walks exactly `count` records of a (decompressed) batch body, checking
/// each record's framing: its length, attributes, timestamp and offset
/// deltas, key, value and headers, filling the length exactly, with nothing
/// after the last record. Calls `each` with every record's index and
/// deltas. Never allocates from a length read off the wire.
pub fn walk_records(
    body: &[u8],
    count: usize,
    mut each: impl FnMut(usize, RecordPosition),
) -> Result<(), RecordFramingError> {
    /// A varint inside `record` at `at`, moved past.
    fn varint(record: &[u8], at: &mut usize, index: usize) -> Result<i64, RecordFramingError> {
        let (value, used) =
            read_varint(record.get(*at..).unwrap_or_default()).ok_or(RecordFramingError::Truncated(index))?;
        *at += used;
        Ok(value)
    }
    /// A length-prefixed byte field; `nullable` allows -1.
    fn bytes_field(record: &[u8], at: &mut usize, index: usize, nullable: bool) -> Result<(), RecordFramingError> {
        let len = varint(record, at, index)?;
        if len == -1 && nullable {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| RecordFramingError::BadField(index))?;
        let end = at.checked_add(len).filter(|&end| end <= record.len()).ok_or(RecordFramingError::Truncated(index))?;
        *at = end;
        Ok(())
    }
    let mut rest = body;
    for index in 0..count {
        let (length, used) = read_varint(rest).ok_or(RecordFramingError::Truncated(index))?;
        let length = usize::try_from(length).map_err(|_| RecordFramingError::Truncated(index))?;
        let end =
            used.checked_add(length).filter(|&end| end <= rest.len()).ok_or(RecordFramingError::Truncated(index))?;
        let record = &rest[used..end];
        rest = &rest[end..];
        if record.is_empty() {
            return Err(RecordFramingError::Truncated(index));
        }
        let mut at = 1; // attributes
        let timestamp_delta = varint(record, &mut at, index)?;
        let offset_delta = varint(record, &mut at, index)?;
        if i32::try_from(offset_delta).is_err() {
            return Err(RecordFramingError::BadField(index));
        }
        bytes_field(record, &mut at, index, true)?; // key
        bytes_field(record, &mut at, index, true)?; // value
        let headers = varint(record, &mut at, index)?;
        if headers < 0 {
            return Err(RecordFramingError::BadField(index));
        }
        for _ in 0..headers {
            if at >= record.len() {
                return Err(RecordFramingError::Truncated(index));
            }
            bytes_field(record, &mut at, index, false)?; // header key: never null
            bytes_field(record, &mut at, index, true)?; // header value
        }
        if at != record.len() {
            return Err(RecordFramingError::LengthMismatch(index));
        }
        each(index, RecordPosition { offset_delta, timestamp_delta });
    }
    if !rest.is_empty() {
        return Err(RecordFramingError::TrailingBytes(count));
    }
    Ok(())
}
