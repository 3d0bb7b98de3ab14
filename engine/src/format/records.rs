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
