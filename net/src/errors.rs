//! The protocol edge's one mapping from the partition layer's typed errors
//! to Kafka error codes (used by the handlers and by the produce path's
//! transaction verification).

use kafka_protocol::ResponseError;
use shardline_engine::partition::PartitionError;
use shardline_engine::InvalidBatch;

/// The Kafka error a client gets for a partition error.
pub fn partition_error(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::InvalidBatch(InvalidBatch::BadCrc) => ResponseError::CorruptMessage,
        PartitionError::InvalidBatch(_)
        | PartitionError::MultipleProducerBatches
        | PartitionError::ControlBatchFromClient => ResponseError::InvalidRecord,
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
