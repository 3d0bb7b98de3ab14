//! Typed errors of the partition layer. Each names what went wrong in the
//! partition's own terms; the protocol edge (net/) maps them to Kafka error
//! codes, and nothing here knows about the wire.

use crate::format::batch::InvalidBatch;
use crate::log::error::LogError;

/// One record a client batch was refused for (Produce v8+ `record_errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The record's position in its batch.
    pub batch_index: i32,
    /// Why.
    pub message: String,
}

/// Why a partition operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A client batch's records are malformed (framing, count, offset
    /// deltas, or a body that does not decompress): nothing was appended.
    #[error("invalid records: {message}")]
    InvalidRecords {
        /// What is wrong, in words.
        message: String,
        /// The records at fault, when they can be named.
        records: Vec<RecordError>,
    },
    /// Records of a client batch have timestamps outside the topic's
    /// `message.timestamp.before.max.ms` / `after.max.ms`.
    #[error("one or more records have been rejected due to invalid timestamp")]
    InvalidTimestamps {
        /// The records at fault.
        records: Vec<RecordError>,
    },
    /// A batch failed validation; nothing from the request was appended.
    #[error("invalid record batch: {0}")]
    InvalidBatch(InvalidBatch),
    /// A batch (or the whole append) is larger than allowed.
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the offending batch or append.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// A client sent a control batch (only coordinators write markers).
    #[error("clients may not write control batches")]
    ControlBatchFromClient,
    /// An idempotent or transactional append carried more than one batch
    /// (a producer sends exactly one per partition).
    #[error("an idempotent append must carry exactly one batch")]
    MultipleProducerBatches,
    /// The batch's first sequence does not follow the producer's last one.
    #[error("producer {producer_id}: sequence {first_sequence} does not follow the last one")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        first_sequence: i32,
    },
    /// The batch's producer epoch is older than the producer's current one.
    #[error("producer {producer_id}: epoch {epoch} is fenced by a newer epoch")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The batch's (old) epoch.
        epoch: i16,
    },
    /// A transaction's first batch here arrived after the transaction
    /// ended (a marker landed while it was being verified).
    #[error("producer {producer_id}: the transaction ended before its batch arrived")]
    TransactionEnded {
        /// The producer.
        producer_id: i64,
    },
    /// Follower batches do not continue the log at its end.
    #[error("follower batch at offset {found} does not continue the log at {expected}")]
    NotContiguous {
        /// Where the next batch had to start.
        expected: i64,
        /// Where it started.
        found: i64,
    },
    /// The offset is outside what the partition holds.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset held.
        log_start: i64,
        /// Next offset to be assigned.
        log_end: i64,
    },
    /// A write or fdatasync failed earlier, or the files are damaged: the
    /// partition refuses appends until it is reopened.
    #[error("storage error: {0}")]
    Storage(String),
    /// The partition is closing, or was truncated under a waiting append:
    /// this replica can no longer answer for the offsets asked about.
    #[error("partition is closed or was truncated")]
    NotAvailable,
}

/// Result alias for partition operations.
pub type PartitionResult<T> = Result<T, PartitionError>;

impl From<LogError> for PartitionError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::InvalidBatch(invalid) => PartitionError::InvalidBatch(invalid),
            LogError::BatchTooLarge { size, limit } => PartitionError::BatchTooLarge { size, limit },
            LogError::NotContiguous { expected, found } => PartitionError::NotContiguous { expected, found },
            LogError::OffsetOutOfRange { offset, log_start, log_end } => {
                PartitionError::OffsetOutOfRange { offset, log_start, log_end }
            }
            LogError::Poisoned(reason) => PartitionError::Storage(reason),
            LogError::Io(error) => PartitionError::Storage(error.to_string()),
            LogError::Corrupt(reason) => PartitionError::Storage(reason),
            LogError::Closed | LogError::Truncated { .. } => PartitionError::NotAvailable,
        }
    }
}

impl From<InvalidBatch> for PartitionError {
    fn from(invalid: InvalidBatch) -> Self {
        PartitionError::InvalidBatch(invalid)
    }
}
