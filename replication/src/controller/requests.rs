//! What brokers and admin clients ask the active controller, and what it
//! answers: Kafka's controller APIs (BrokerRegistration, BrokerHeartbeat,
//! CreateTopics, DeleteTopics, CreatePartitions, AllocateProducerIds,
//! ElectLeaders, configs) as plain types. The protocol edge maps Kafka
//! messages to these and the errors to Kafka codes.

use uuid::Uuid;

use crate::metadata::records::{ConfigResource, Endpoint};

/// The feature level that marks a metadata log as bootstrapped.
pub const BOOTSTRAP_FEATURE: &str = "shardline.bootstrapped";

/// The driver's handle for a request, given back with its reply.
pub type RequestId = u64;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partitions, or -1 for the default (ignored with `assignments`).
    pub partitions: i32,
    /// Replicas per partition, or -1 for the default.
    pub replication_factor: i32,
    /// Replicas of each partition, when the client chose them.
    pub assignments: Vec<Vec<i32>>,
    /// Topic configs, already validated by the protocol edge.
    pub configs: Vec<(String, String)>,
}

/// One replica list (broker ids, preferred leader first) per partition.
pub type ReplicaSets = Vec<Vec<i32>>;

/// A request to the controller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ControllerRequest {
    /// BrokerRegistration: a broker starts (a new incarnation).
    RegisterBroker { broker_id: i32, incarnation_id: Uuid, endpoints: Vec<Endpoint>, rack: Option<String> },
    /// BrokerHeartbeat: renews the lease and asks for a state.
    Heartbeat { broker_id: i32, broker_epoch: i64, metadata_offset: u64, want_fence: bool, want_shutdown: bool },
    /// CreateTopics.
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    /// DeleteTopics, by name.
    DeleteTopics { names: Vec<String> },
    /// CreatePartitions: each topic grows to the given count, the new
    /// partitions on the replicas given (one list per new partition) or,
    /// when no list is given, placed by the controller.
    CreatePartitions { topics: Vec<(String, i32, Option<ReplicaSets>)>, validate_only: bool },
    /// AllocateProducerIds: a block for one broker.
    AllocateProducerIds { broker_id: i32, broker_epoch: i64 },
    /// ElectLeaders for these partitions.
    ElectLeaders { preferred: bool, partitions: Vec<(String, i32)> },
    /// Records a node's existing state brings into a new metadata log
    /// (the topics of a data directory from before the metadata log), in
    /// as many requests as their size needs; the one with `complete` marks
    /// the log with the feature [`BOOTSTRAP_FEATURE`], and every bootstrap
    /// after that is refused.
    Bootstrap { records: Vec<crate::metadata::records::MetadataRecord>, complete: bool },
    /// DescribeQuorum: the quorum as the active controller sees it.
    DescribeQuorum,
    /// Sets (`Some`) or removes configs of one resource.
    AlterConfigs { resource: ConfigResource, name: String, changes: Vec<(String, Option<String>)> },
}

/// Why the controller refused (all or part of) a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ControllerError {
    /// This node does not lead the quorum; `leader` is the one it knows
    /// of (0 for none).
    #[error("not the active controller (leader {leader})")]
    NotController { leader: u64 },
    /// Another incarnation of this broker id still holds a lease.
    #[error("broker {0} is registered by another incarnation that still holds its lease")]
    DuplicateBrokerRegistration(i32),
    /// The broker's previous incarnation still leads partitions that the
    /// controller is moving before it fences it; the registration is
    /// retried.
    #[error("broker {0}'s previous incarnation is being fenced, its partitions a batch at a time; retry")]
    PreviousIncarnationLeaving(i32),
    /// The broker's epoch is not its current registration's.
    #[error("stale broker epoch")]
    StaleBrokerEpoch,
    /// The broker is not registered.
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(i32),
    /// The topic exists.
    #[error("topic already exists")]
    TopicExists,
    /// No such topic.
    #[error("unknown topic")]
    UnknownTopic,
    /// No such partition.
    #[error("unknown partition")]
    UnknownPartition,
    /// The name breaks Kafka's rules.
    #[error("{0}")]
    InvalidTopic(String),
    /// The replication factor cannot be had.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// The partition count cannot be had.
    #[error("{0}")]
    InvalidPartitions(String),
    /// A client-chosen assignment is invalid.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// The election would change nothing.
    #[error("leader election not needed")]
    ElectionNotNeeded,
    /// The preferred replica is not alive or not in the ISR.
    #[error("preferred leader not available")]
    PreferredLeaderNotAvailable,
    /// No live replica can lead.
    #[error("no eligible leader available")]
    EligibleLeadersNotAvailable,
    /// The metadata log was bootstrapped already.
    #[error("the metadata log is bootstrapped already")]
    AlreadyBootstrapped,
    /// Bootstrap records that break the image's rules.
    #[error("bootstrap records cannot apply: {0}")]
    InvalidBootstrap(String),
    /// The request's records would not fit in one metadata entry.
    #[error("the request is too large for one metadata entry: ask for fewer partitions at once")]
    RequestTooLarge,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ControllerReply {
    /// The whole request was refused.
    Refused(ControllerError),
    /// Registered, with the broker's epoch.
    Registered { broker_epoch: i64 },
    /// The broker's state after a heartbeat.
    Heartbeat { fenced: bool, caught_up: bool, should_shut_down: bool },
    /// Per topic: its id, or why not.
    Topics(Vec<(String, Result<Uuid, ControllerError>)>),
    /// Per topic: deleted, or why not.
    Deleted(Vec<(String, Result<(), ControllerError>)>),
    /// Per topic: grown, or why not.
    Partitions(Vec<(String, Result<(), ControllerError>)>),
    /// The ids `first..first + count` are this broker's.
    ProducerIds { first: i64, count: i64 },
    /// Per partition: elected, or why not.
    Elected(Vec<((String, i32), Result<(), ControllerError>)>),
    /// The quorum as the active controller sees it.
    Quorum(QuorumReport),
    /// Done.
    Done,
}

/// The quorum as the active controller sees it (DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumReport {
    /// The leader's raft id.
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The commit index (the quorum's high watermark).
    pub high_watermark: u64,
    /// Each voter's progress.
    pub voters: Vec<VoterReport>,
}

/// One voter in a [`QuorumReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoterReport {
    /// Its raft id.
    pub id: u64,
    /// The last index the leader knows it holds.
    pub log_end: u64,
    /// When the leader last heard from it (ms since the epoch; -1 when
    /// unknown). The controller leaves it to its driver, which has a clock.
    pub last_fetch_ms: i64,
    /// When it last held everything the leader had (-1 when unknown).
    pub last_caught_up_ms: i64,
}
