//! The protocol edge's one mapping from the partition layer's typed errors
//! to Kafka error codes (used by the handlers and by the produce path's
//! transaction verification).

use kafka_protocol::ResponseError;
use shardline_engine::partition::error::RecordError;
use shardline_engine::partition::PartitionError;
use shardline_engine::InvalidBatch;

/// A refused produce as Produce answers it: the code and, from v8, the
/// reason in words and the records at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceError {
    /// The partition's error code.
    pub code: ResponseError,
    /// `error_message`.
    pub message: Option<String>,
    /// `record_errors`.
    pub records: Vec<RecordError>,
}

impl From<ResponseError> for ProduceError {
    fn from(code: ResponseError) -> Self {
        ProduceError { code, message: None, records: Vec::new() }
    }
}

/// How Produce answers a partition error (Kafka fills `record_errors` for
/// per-record refusals and gives every error's reason).
pub fn produce_error(error: &PartitionError) -> ProduceError {
    let records = match error {
        PartitionError::InvalidRecords { records, .. } | PartitionError::InvalidTimestamps { records } => {
            records.clone()
        }
        _ => Vec::new(),
    };
    let message = match error {
        PartitionError::InvalidTimestamps { .. } => {
            "One or more records have been rejected due to invalid timestamp".to_string()
        }
        other => other.to_string(),
    };
    ProduceError { code: partition_error(error), message: Some(message), records }
}

/// The Kafka error a client gets for a partition error.
pub fn partition_error(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::InvalidBatch(InvalidBatch::BadCrc) => ResponseError::CorruptMessage,
        PartitionError::InvalidBatch(_)
        | PartitionError::MultipleProducerBatches
        | PartitionError::ControlBatchFromClient
        | PartitionError::InvalidRecords { .. } => ResponseError::InvalidRecord,
        PartitionError::InvalidTimestamps { .. } => ResponseError::InvalidTimestamp,
        PartitionError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::TransactionEnded { .. } => ResponseError::InvalidTxnState,
        // A follower's fetch answer that does not fit its log: internal.
        PartitionError::NotContiguous { .. } => ResponseError::UnknownServerError,
        PartitionError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        PartitionError::Storage(_) => ResponseError::KafkaStorageError,
        PartitionError::NotAvailable => ResponseError::NotLeaderOrFollower,
    }
}
