//! Typed errors of the storage engine. The protocol edge (net/) maps each to
//! a Kafka error code; nothing here knows about the wire.

use std::io;

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

/// Errors from the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch failed validation; nothing from the request was appended.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] InvalidBatch),
    /// A single batch larger than the segment size or the allowed maximum.
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the offending batch.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// An earlier fsync or write failed: the partition refuses all appends
    /// until it is reopened (never silently retried).
    #[error("partition log is poisoned by an earlier I/O error: {0}")]
    Poisoned(String),
    /// The requested offset is outside `[log start, log end]`.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset held.
        log_start: i64,
        /// Next offset to be assigned.
        log_end: i64,
    },
    /// The log was truncated below an offset being waited for.
    #[error("log truncated below offset {offset}")]
    Truncated {
        /// The offset that was awaited.
        offset: i64,
    },
    /// The log is closed or being truncated.
    #[error("partition log is closed")]
    Closed,
    /// An I/O error while reading or recovering.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Files on disk are inconsistent beyond what recovery repairs.
    #[error("corrupt log: {0}")]
    Corrupt(String),
}

/// Result alias for the engine.
pub type LogResult<T> = Result<T, LogError>;
