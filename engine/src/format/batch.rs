//! Kafka record batch (magic 2) header: parsing, validation, in-place
//! offset assignment, and re-encoding under another codec.
//!
//! Owns nothing but byte layouts; pure functions usable on any core. The
//! produce path (on the partition's owning shard) calls [`validate_batch`]
//! for every batch and then [`assign_offsets`], which rewrites only the base
//! offset and partition leader epoch fields. Neither field is covered by the
//! CRC, so records are not re-encoded, unless the topic's
//! `compression.type` names another codec than the producer's: then
//! [`recompressed`] rewrites the batch once, on produce.

use crate::format::compression::{compress, decompress, Codec, DecompressError};

/// Why a record batch was refused on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBatch {
    /// Fewer bytes than the header or the declared length needs.
    #[error("record batch is truncated")]
    Truncated,
    /// The declared batch length is too small to hold a header.
    #[error("record batch length is invalid")]
    BadLength,
    /// Not a magic-2 batch.
    #[error("unsupported record batch magic {0}")]
    BadMagic(i8),
    /// CRC32C mismatch: the batch is corrupt.
    #[error("record batch CRC mismatch")]
    BadCrc,
    /// Negative or zero record count where records are required.
    #[error("record batch record count is invalid")]
    BadRecordCount,
    /// The last offset delta does not match the record count.
    #[error("record batch last offset delta does not match its record count")]
    BadLastOffsetDelta,
    /// A compression codec id Kafka does not define.
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
}

/// Bytes before the `batchLength` field ends (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed magic-2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only record batch format we store (KIP-724: Kafka 4 dropped 0 and 1).
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Attribute bits (Kafka's `DefaultRecordBatch`).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Timestamp type bit: set means LogAppendTime.
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
/// Transactional batch bit.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Control batch bit (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;

/// The decoded fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Length of the batch after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch stamped by the leader on append.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 once validated.
    pub magic: i8,
    /// CRC32C over attributes..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Total size of the batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset just after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// Whether this is a transaction control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether this batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// Reads the fixed header at the start of `bytes` without checking the CRC.
///
/// Fails when fewer than [`BATCH_HEADER_BYTES`] bytes are present, when the
/// declared length is too small to hold a header, or the magic is not 2.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, InvalidBatch> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(InvalidBatch::Truncated);
    }
    let batch_length = i32_at(bytes, BATCH_LENGTH_AT);
    if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 {
        return Err(InvalidBatch::BadLength);
    }
    let magic = bytes[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(InvalidBatch::BadMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: i64_at(bytes, BASE_OFFSET_AT),
        batch_length,
        partition_leader_epoch: i32_at(bytes, LEADER_EPOCH_AT),
        magic,
        crc: i32_at(bytes, CRC_AT) as u32,
        attributes: i16_at(bytes, ATTRIBUTES_AT),
        last_offset_delta: i32_at(bytes, LAST_OFFSET_DELTA_AT),
        base_timestamp: i64_at(bytes, BASE_TIMESTAMP_AT),
        max_timestamp: i64_at(bytes, MAX_TIMESTAMP_AT),
        producer_id: i64_at(bytes, PRODUCER_ID_AT),
        producer_epoch: i16_at(bytes, PRODUCER_EPOCH_AT),
        base_sequence: i32_at(bytes, BASE_SEQUENCE_AT),
        records_count: i32_at(bytes, RECORDS_COUNT_AT),
    })
}

/// CRC32C of a whole batch as Kafka computes it: attributes to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    debug_assert!(batch.len() >= BATCH_HEADER_BYTES);
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Validates the first batch in `bytes` and returns its header.
///
/// Checks the declared length against the bytes present, the magic, the CRC
/// over the right range, a non-negative record count and a last offset delta
/// that matches it (`count - 1`), and a known compression codec. When
/// `require_records` is set (client produce), empty batches are rejected.
pub fn validate_batch(bytes: &[u8], require_records: bool) -> Result<BatchHeader, InvalidBatch> {
    let header = parse_header(bytes)?;
    let total = header.total_bytes();
    if total > bytes.len() {
        return Err(InvalidBatch::Truncated);
    }
    if compute_crc(&bytes[..total]) != header.crc {
        return Err(InvalidBatch::BadCrc);
    }
    if header.records_count < 0 || header.last_offset_delta < 0 {
        return Err(InvalidBatch::BadRecordCount);
    }
    if require_records {
        if header.records_count == 0 {
            return Err(InvalidBatch::BadRecordCount);
        }
        if i64::from(header.last_offset_delta) != i64::from(header.records_count) - 1 {
            return Err(InvalidBatch::BadLastOffsetDelta);
        }
    }
    if header.compression() > 4 {
        return Err(InvalidBatch::BadCompression(header.compression()));
    }
    Ok(header)
}

/// Rewrites the base offset and partition leader epoch of the batch at the
/// start of `batch` in place. Neither field is covered by the CRC.
pub fn assign_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    assert!(base_offset >= 0);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// The batch `batch` (valid, with `header`) with its records compressed by
/// `codec` instead: every header field but the length, the codec bits of
/// the attributes and the CRC is kept, so offsets, timestamps and the
/// producer's id, epoch and sequence are as the producer sent them. The
/// records are decompressed within `limit` bytes.
pub fn recompressed(
    batch: &[u8],
    header: &BatchHeader,
    codec: Codec,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let stored = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let records = decompress(header.compression(), stored, limit)?;
    recompressed_records(batch, header, codec, &records, limit)
}

/// [`recompressed`] for a batch whose records were already decompressed
/// (`records`, the body uncompressed).
pub fn recompressed_records(
    batch: &[u8],
    header: &BatchHeader,
    codec: Codec,
    records: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let body = compress(codec, records)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&body);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| DecompressError::TooLarge(limit))?;
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = header.attributes & !ATTR_COMPRESSION_MASK | codec.id();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(validate_batch(&out, true).is_ok(), "a recompressed batch is valid");
    Ok(out)
}

/// Iterates the batch headers in a byte range made of whole batches.
///
/// Stops (returns `None`) at the first position that does not hold a whole,
/// well-formed header; the CRC is not checked here.
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    /// Starts iterating at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Byte position of the next batch in the range.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    /// Position of the batch and its header.
    type Item = (usize, BatchHeader);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        let header = parse_header(rest).ok()?;
        if header.total_bytes() > rest.len() {
            return None;
        }
        let at = self.position;
        self.position += header.total_bytes();
        Some((at, header))
    }
}

/// Test and benchmark helper: builds valid magic-2 batches with raw records.
pub mod build {
    use super::*;

    /// One record's key, value and timestamp delta for [`batch`].
    #[derive(Debug, Clone)]
    pub struct TestRecord {
        /// Key bytes, or none.
        pub key: Option<Vec<u8>>,
        /// Value bytes, or none.
        pub value: Option<Vec<u8>>,
        /// Added to the batch base timestamp.
        pub timestamp_delta: i64,
    }

    fn put_varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            if zigzag < 0x80 {
                out.push(zigzag as u8);
                return;
            }
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
    }

    fn put_bytes(out: &mut Vec<u8>, bytes: &Option<Vec<u8>>) {
        match bytes {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// Encodes an uncompressed batch with base offset 0 and a valid CRC.
    pub fn batch(base_timestamp: i64, records: &[TestRecord]) -> Vec<u8> {
        assert!(!records.is_empty());
        let mut body = Vec::new();
        for (delta, record) in records.iter().enumerate() {
            let mut rec = vec![0u8]; // attributes
            put_varint(&mut rec, record.timestamp_delta);
            put_varint(&mut rec, delta as i64);
            put_bytes(&mut rec, &record.key);
            put_bytes(&mut rec, &record.value);
            put_varint(&mut rec, 0); // headers
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let max_delta = records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&(base_timestamp + max_delta).to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes());
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.extend_from_slice(&(records.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        let crc = compute_crc(&out);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Makes `batch` a producer's: sets its producer id, epoch and base
    /// sequence, adds `attributes` (transactional, control) and recomputes
    /// the CRC.
    pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32, attributes: i16) {
        let current = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&(current | attributes).to_be_bytes());
        batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
        batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = compute_crc(batch);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// The batch that producer `stream` sends as its `seq`-th: 1 to 8 records
    /// of up to 2 KiB, contents derived from both, so a reader can check the
    /// bytes it finds.
    pub fn deterministic_batch(stream: u64, seq: u64) -> Vec<u8> {
        let mix = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let count = 1 + (mix % 8) as usize;
        let value_bytes = ((mix >> 8) % 2048) as usize;
        let records: Vec<TestRecord> = (0..count)
            .map(|i| TestRecord {
                key: Some(format!("{stream}-{seq}-{i}").into_bytes()),
                value: Some((0..value_bytes).map(|b| (mix >> (b % 56)) as u8 ^ b as u8).collect()),
                timestamp_delta: i as i64,
            })
            .collect();
        batch(1_700_000_000_000 + seq as i64, &records)
    }

    /// `template` (a built batch) with its records replaced by `body`
    /// stored under compression `codec` and counted as `records_count`:
    /// the length and CRC are recomputed, so only the records are wrong
    /// when the body is.
    pub fn with_body(template: &[u8], codec: i16, body: &[u8], records_count: i32) -> Vec<u8> {
        let mut out = template[..BATCH_HEADER_BYTES].to_vec();
        let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32;
        out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
        let attributes = i16::from_be_bytes([out[ATTRIBUTES_AT], out[ATTRIBUTES_AT + 1]]) & !0x07 | codec;
        out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        out[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(records_count - 1).to_be_bytes());
        out[BATCH_HEADER_BYTES - 4..BATCH_HEADER_BYTES].copy_from_slice(&records_count.to_be_bytes());
        out.extend_from_slice(body);
        let crc = compute_crc(&out);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// The records of a built uncompressed batch (what follows its header).
    pub fn body_of(batch: &[u8]) -> &[u8] {
        &batch[BATCH_HEADER_BYTES..]
    }

    /// `bytes` as an lz4 frame (Kafka's codec 3).
    pub fn lz4(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(bytes).expect("lz4 into memory");
        encoder.finish().expect("lz4 into memory")
    }

    /// A batch of `count` records whose values are `value_bytes` long.
    pub fn simple_batch(base_timestamp: i64, count: usize, value_bytes: usize) -> Vec<u8> {
        let records: Vec<TestRecord> = (0..count)
            .map(|i| TestRecord {
                key: None,
                value: Some(vec![(i % 251) as u8; value_bytes]),
                timestamp_delta: i as i64,
            })
            .collect();
        batch(base_timestamp, &records)
    }
}

#[cfg(test)]
mod tests {
    use super::build::simple_batch;
    use super::*;

    #[test]
    fn built_batch_validates_and_offsets_rewrite_keeps_crc() {
        let mut batch = simple_batch(1_000, 3, 10);
        let header = validate_batch(&batch, true).expect("valid");
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_002);
        assign_offsets(&mut batch, 42, 7);
        let header = validate_batch(&batch, true).expect("still valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn corruption_is_detected() {
        let batch = simple_batch(0, 2, 5);
        let mut flipped = batch.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(validate_batch(&flipped, true), Err(InvalidBatch::BadCrc));
        assert_eq!(validate_batch(&batch[..batch.len() - 1], true), Err(InvalidBatch::Truncated));
        let mut bad_magic = batch.clone();
        bad_magic[MAGIC_AT] = 1;
        assert_eq!(validate_batch(&bad_magic, true), Err(InvalidBatch::BadMagic(1)));
        let mut bad_length = batch;
        bad_length[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(validate_batch(&bad_length, true), Err(InvalidBatch::BadLength));
    }

    #[test]
    fn iterator_walks_whole_batches_only() {
        let mut bytes = simple_batch(0, 1, 3);
        let first = bytes.len();
        bytes.extend(simple_batch(0, 2, 3));
        let full = bytes.len();
        bytes.extend_from_slice(&[0u8; 30]);
        let found: Vec<usize> = BatchIter::new(&bytes).map(|(at, _)| at).collect();
        assert_eq!(found, vec![0, first]);
        let mut iter = BatchIter::new(&bytes);
        iter.by_ref().count();
        assert_eq!(iter.position(), full);
    }
}
