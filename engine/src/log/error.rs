//! Typed errors of the partition log. The partition layer wraps them and
//! the protocol edge (net/) maps them to Kafka error codes; nothing here
//! knows about the wire.

use std::io;

use crate::format::batch::InvalidBatch;

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
    /// Follower batches do not continue the log: the first must start at
    /// the log end and each where the previous one ended.
    #[error("follower batch at offset {found} does not continue the log at {expected}")]
    NotContiguous {
        /// The offset the next batch must start at.
        expected: i64,
        /// The base offset the batch has.
        found: i64,
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
