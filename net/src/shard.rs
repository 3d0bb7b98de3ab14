//! What a shard owns and what every shard shares. [`ShardState`] lives on
//! its shard (`Rc`, never crosses cores): its partition registry, the
//! fetch sessions of its connections, the group and transaction
//! coordinator services of the internal partitions it owns, its producer
//! ids, and its lifecycle flags. [`BrokerShared`] is read by all shards:
//! configuration, topic metadata, cluster id, advertised address.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use shardline_engine::runtime::clock::SharedClock;
use shardline_engine::runtime::event::LocalEvent;
use shardline_engine::storage::file_cache::CachedDisk;
use shardline_engine::RealDisk;

use crate::cluster::controller_core::ControllerHandle;
use crate::cluster::member_state::MemberState;
use crate::config::BrokerConfig;
use crate::fetch_sessions::FetchSessions;
use crate::groups::classic::ClassicLimits;
use crate::groups::consumer::ConsumerLimits;
use crate::groups::service::{GroupConfig, GroupService};
use crate::producer_ids::ProducerIdPool;
use crate::registry::PartitionRegistry;
use crate::topics::TopicStore;
use crate::txn::service::TxnService;

/// What every shard shares: configuration, topic metadata, cluster id,
/// the way to the controller.
#[derive(Debug)]
pub struct BrokerShared {
    /// Configuration.
    pub config: Arc<BrokerConfig>,
    /// Topics.
    pub topics: TopicStore,
    /// Cluster id from `meta.properties`.
    pub cluster_id: String,
    /// Advertised host and port.
    pub advertised: (String, i32),
    /// Number of shards.
    pub shards: usize,
    /// The controller core of this node (its one-voter quorum).
    pub controller: ControllerHandle,
    /// This broker's registration and fencing.
    pub member: MemberState,
}

impl BrokerShared {
    /// The shard owning partition `index` of a topic placed as `placement`.
    pub fn shard_of(&self, placement: &[usize], index: i32) -> Option<usize> {
        usize::try_from(index)
            .ok()
            .and_then(|i| placement.get(i))
            .filter(|shard| **shard != crate::topics::NOT_HOSTED)
            .map(|shard| shard % self.shards)
    }

    /// The shard owning `topic`/`index`, if the topic and partition exist.
    pub fn shard_of_partition(&self, topic: &str, index: i32) -> Option<usize> {
        let image = self.topics.image();
        self.shard_of(&image.topics.get(topic)?.partition_shards, index)
    }

    /// Why partition `index` of `info` cannot be served here: another
    /// broker hosts it (NOT_LEADER_OR_FOLLOWER, the client refreshes its
    /// metadata), or there is no such partition.
    pub fn unavailable(&self, info: Option<&crate::topics::TopicInfo>, index: i32) -> kafka_protocol::ResponseError {
        let placed = info.and_then(|t| usize::try_from(index).ok().and_then(|i| t.partition_shards.get(i)));
        match placed {
            Some(&crate::topics::NOT_HOSTED) => kafka_protocol::ResponseError::NotLeaderOrFollower,
            _ => kafka_protocol::ResponseError::UnknownTopicOrPartition,
        }
    }

    /// The shard of a coordinator's partition, or NOT_COORDINATOR when
    /// another broker hosts it (the client finds the coordinator again).
    pub fn coordinator_shard(&self, placement: &[usize], index: i32) -> Result<usize, kafka_protocol::ResponseError> {
        match usize::try_from(index).ok().and_then(|i| placement.get(i)) {
            Some(&crate::topics::NOT_HOSTED) => Err(kafka_protocol::ResponseError::NotCoordinator),
            Some(_) => self.shard_of(placement, index).ok_or(kafka_protocol::ResponseError::CoordinatorNotAvailable),
            None => Err(kafka_protocol::ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Whether `topic` has partition `index` (hosted here or elsewhere).
    pub fn partition_exists(&self, topic: &str, index: i32) -> bool {
        let image = self.topics.image();
        let count = image.topics.get(topic).map_or(0, |t| t.partition_shards.len());
        usize::try_from(index).is_ok_and(|i| i < count)
    }
}

/// The disk a shard's partitions live on: the real disk, with the
/// shard's descriptors kept within `open_files_per_shard`.
pub type ShardDisk = CachedDisk<RealDisk>;

/// Group coordinator settings from the broker configuration.
pub fn group_config(config: &BrokerConfig) -> GroupConfig {
    GroupConfig {
        classic: ClassicLimits {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            max_size: config.group_max_size,
        },
        consumer: ConsumerLimits {
            session_timeout_ms: config.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
            max_size: config.group_max_size,
        },
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms.max(1000) as i64,
    }
}

/// One shard's state. See the module documentation.
pub struct ShardState {
    /// This shard's index.
    pub shard: usize,
    /// Broker configuration.
    pub config: Arc<BrokerConfig>,
    /// This shard's clock.
    pub clock: SharedClock,
    /// The partitions this shard holds.
    pub partitions: PartitionRegistry<ShardDisk>,
    /// Incremental fetch sessions of this shard's connections.
    pub fetch_sessions: RefCell<FetchSessions>,
    /// Group coordinators of this shard's `__consumer_offsets` partitions.
    pub groups: GroupService<ShardDisk>,
    /// Transaction coordinators of this shard's `__transaction_state` partitions.
    pub txns: TxnService<ShardDisk>,
    /// This shard's producer ids.
    pub producer_ids: ProducerIdPool,
    /// Set once shutdown starts: connections stop reading new requests.
    pub shutting_down: Cell<bool>,
    /// Requests being handled by this shard's connections.
    pub in_flight: Cell<usize>,
    /// Fired when `in_flight` drops to zero.
    pub idle: LocalEvent,
}

impl ShardState {
    /// Empty state for `shard`; `seed` seeds its random choices (fetch
    /// session ids, member ids).
    pub fn new(shard: usize, config: Arc<BrokerConfig>, clock: SharedClock, seed: u64) -> Self {
        let disk = CachedDisk::new(RealDisk, config.open_files_per_shard);
        let partitions = PartitionRegistry::new(
            disk,
            config.data_dir.clone(),
            clock.clone(),
            config.batch_cache_bytes,
            config.index_cache_bytes,
        );
        let sessions =
            FetchSessions::new(config.max_incremental_fetch_session_cache_slots, shard, config.shard_count(), seed);
        let groups = GroupService::new(group_config(&config), clock.clone(), seed.rotate_left(17));
        let txns = TxnService::new(clock.clone(), config.transactional_id_expiration_ms);
        ShardState {
            shard,
            config,
            clock,
            partitions,
            fetch_sessions: RefCell::new(sessions),
            groups,
            txns,
            producer_ids: ProducerIdPool::default(),
            shutting_down: Cell::new(false),
            in_flight: Cell::new(0),
            idle: LocalEvent::default(),
        }
    }
}
