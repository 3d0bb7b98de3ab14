//! The records of the cluster metadata log: what the controller proposes,
//! the quorum commits, and every broker applies to its
//! [`MetadataImage`](super::image::MetadataImage). One Raft entry holds one
//! [`RecordBatch`], applied atomically (a CreateTopics is one topic record
//! and its partition records, all or none). Snapshots are record batches
//! too: the records that rebuild the image.
//!
//! Each record travels with the version of its schema. A node refuses a
//! version newer than it knows (an upgrade runs the new binary everywhere
//! before anything writes the new version), and reads every older one.
//! Encoded as JSON: entries are small, rare (control plane only) and
//! readable in a dump. Decoding is bounded by the entry's own length.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The newest schema version of every record this build writes.
pub const RECORD_VERSION: u16 = 1;

/// Bytes one encoded batch may take (a partition record is about 200
/// bytes: a CreateTopics of 10,000 partitions is about 2 MB). The
/// controller splits or refuses requests so no batch is larger.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Bytes a snapshot's records may take (the whole image).
pub const MAX_SNAPSHOT_RECORD_BYTES: usize = 1 << 30;

/// A broker's endpoint as it registered it (an advertised listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `CLIENT`, ...).
    pub name: String,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// The listener's security protocol (`PLAINTEXT`, `SSL`, ...).
    pub security_protocol: String,
}

/// Which kind of resource a config record sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    /// A topic, by name.
    Topic,
    /// A broker, by id (the name is the id; empty for the cluster default).
    Broker,
}

/// One metadata record. The controller validates every record against the
/// image before it proposes it, so applying a committed record never fails
/// on a correct controller; [`MetadataImage::apply`](super::image::MetadataImage::apply)
/// checks the rules again and reports a violation as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker registered (or registered again after a restart, with a
    /// new incarnation). Its epoch is the log offset of this record.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        broker_epoch: i64,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        /// Registered fenced: a broker is unfenced once it has caught up
        /// with the metadata log.
        fenced: bool,
        /// Only in snapshots: the offset the registration was first
        /// applied at (otherwise the offset of this record).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registered_offset: Option<u64>,
    },
    /// The broker lost its lease or shut down cleanly: it leads nothing
    /// and is left out of Metadata answers until it is unfenced.
    FenceBroker { broker_id: i32, broker_epoch: i64 },
    /// The broker caught up and holds a lease again.
    UnfenceBroker { broker_id: i32, broker_epoch: i64 },
    /// A topic was created.
    Topic { name: String, topic_id: Uuid },
    /// A topic and all its partitions were deleted.
    RemoveTopic { topic_id: Uuid },
    /// A partition was created, with its whole state.
    Partition {
        topic_id: Uuid,
        partition: i32,
        /// Replicas in preference order: the first is the preferred leader.
        replicas: Vec<i32>,
        isr: Vec<i32>,
        /// Eligible leader replicas (KIP-966): left the ISR while it was
        /// at `min.insync.replicas` or below, still safe to elect.
        elr: Vec<i32>,
        /// -1 when the partition has no leader.
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A change to an existing partition: only the fields given change.
    /// A new leader bumps the leader epoch; every change bumps the
    /// partition epoch.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: Option<i32>,
        isr: Option<Vec<i32>>,
        elr: Option<Vec<i32>>,
        replicas: Option<Vec<i32>>,
    },
    /// A config was set (`value` given) or removed back to its default.
    Config { resource: ConfigResource, resource_name: String, name: String, value: Option<String> },
    /// The next producer-id block was given to a broker: ids below
    /// `next_producer_id` are taken.
    ProducerIds { broker_id: i32, broker_epoch: i64, next_producer_id: i64 },
    /// A feature's finalized level (`metadata.version`, ...).
    FeatureLevel { name: String, level: i16 },
}

/// A record and the schema version it was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedRecord {
    /// Schema version, at most [`RECORD_VERSION`] for this build.
    pub version: u16,
    /// The record.
    pub record: MetadataRecord,
}

/// The records of one Raft entry, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// In order of application.
    pub records: Vec<VersionedRecord>,
}

/// Why a batch could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Longer than [`MAX_BATCH_BYTES`].
    #[error("metadata batch of {0} bytes is over its limit")]
    TooLarge(usize),
    /// Not a batch this build can read.
    #[error("metadata batch does not decode: {0}")]
    Malformed(String),
    /// Written by a newer build.
    #[error("metadata record version {version} is newer than this build's {RECORD_VERSION}; upgrade every node first")]
    TooNew { version: u16 },
}

impl RecordBatch {
    /// A batch of records at this build's version.
    pub fn of(records: impl IntoIterator<Item = MetadataRecord>) -> Self {
        RecordBatch {
            records: records.into_iter().map(|record| VersionedRecord { version: RECORD_VERSION, record }).collect(),
        }
    }

    /// The batch's bytes (a Raft entry's data).
    pub fn encode(&self) -> Vec<u8> {
        let bytes = serde_json::to_vec(self).expect("metadata records always serialize");
        // Snapshots encode the whole image: check within their bound.
        debug_assert!(Self::decode_snapshot(&bytes).is_ok_and(|back| &back == self));
        bytes
    }

    /// Reads a batch back, refusing one over [`MAX_BATCH_BYTES`] or with a
    /// record newer than this build.
    pub fn decode(bytes: &[u8]) -> Result<RecordBatch, RecordError> {
        Self::decode_within(bytes, MAX_BATCH_BYTES)
    }

    /// Reads a snapshot's records back (bounded by
    /// [`MAX_SNAPSHOT_RECORD_BYTES`], not by one batch's limit).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<RecordBatch, RecordError> {
        Self::decode_within(bytes, MAX_SNAPSHOT_RECORD_BYTES)
    }

    fn decode_within(bytes: &[u8], limit: usize) -> Result<RecordBatch, RecordError> {
        if bytes.len() > limit {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let batch: RecordBatch = serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if let Some(newer) = batch.records.iter().find(|r| r.version > RECORD_VERSION) {
            return Err(RecordError::TooNew { version: newer.version });
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_written() {
        let batch = RecordBatch::of([
            MetadataRecord::Topic { name: "orders".into(), topic_id: Uuid::from_u128(7) },
            MetadataRecord::Partition {
                topic_id: Uuid::from_u128(7),
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                elr: vec![],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        ]);
        assert_eq!(RecordBatch::decode(&batch.encode()), Ok(batch));
    }

    #[test]
    fn a_record_from_a_newer_build_is_refused_by_name() {
        let mut batch = RecordBatch::of([MetadataRecord::FeatureLevel { name: "metadata.version".into(), level: 1 }]);
        batch.records[0].version = RECORD_VERSION + 1;
        let bytes = serde_json::to_vec(&batch).unwrap();
        assert_eq!(RecordBatch::decode(&bytes), Err(RecordError::TooNew { version: RECORD_VERSION + 1 }));
        assert!(matches!(RecordBatch::decode(b"{\"records\": [1"), Err(RecordError::Malformed(_))));
    }
}
