//! One simulated broker: the same partition registry, group and
//! transaction coordinator services and producer-id allocator the real
//! broker runs, over the fault disk and the simulated clock. Booting it is
//! what a restart does: open (recover) every partition; the coordinators
//! load on first use. A crash drops it whole; only the disk survives.
//!
//! The cluster issues give the simulator several nodes and a network;
//! each node keeps this shape.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use kafka_protocol::ResponseError;
use shardline_engine::partition::Durability;
use shardline_engine::runtime::clock::{Clock, SharedClock};
use shardline_engine::storage::fault_disk::FaultDisk;
use shardline_engine::LogConfig;
use shardline_net::coordinators::CoordinatorLog;
use shardline_net::groups::classic::ClassicLimits;
use shardline_net::groups::consumer::ConsumerLimits;
use shardline_net::groups::records::partition_for;
use shardline_net::groups::service::{GroupConfig, GroupService};
use shardline_net::groups::OFFSETS_TOPIC;
use shardline_net::producer_ids::{BlockRequest, ProducerIdBlocks, ProducerIdError, ProducerIdPool};
use shardline_net::registry::{PartitionRegistry, Replica};
use shardline_net::txn::coordinator::Completion;
use shardline_net::txn::markers::write_local_markers;
use shardline_net::txn::service::{LocalResult, MarkerWriter, ProducerIdSource, TxnService};
use shardline_net::txn::verify::PartitionVerifier;
use shardline_net::txn::TXN_TOPIC;

use crate::sim::clock::SimClock;

/// The topic the clients produce to.
pub const DATA_TOPIC: &str = "data";
/// Its partitions: 0 and 1 acknowledge acks=all after fdatasync, 2 once
/// written (`shardline.acks.all.fsync=false`).
pub const DATA_PARTITIONS: i32 = 3;
/// Partitions of `__consumer_offsets` and of `__transaction_state`.
pub const INTERNAL_PARTITIONS: i32 = 2;
/// Batch cache per node: small, so reads also come from the files.
const CACHE_BYTES: usize = 24 * 1024;
/// Small enough that sealed indexes are dropped and reloaded all the time.
const INDEX_BUDGET_BYTES: usize = 512;

/// What acks=all waits for on data partition `index`.
pub fn data_acks_all(index: i32) -> Durability {
    if index == 2 {
        Durability::Written
    } else {
        Durability::Durable
    }
}

/// Small segments and chunks, so runs roll segments and wrap the tail.
pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 24 * 1024,
        segment_ms: None,
        index_interval_bytes: 512,
        retention_ms: None,
        retention_bytes: None,
        chunk_bytes: 8 * 1024,
        max_pending_chunks: 6,
        max_batch_bytes: 16 * 1024,
        preallocate: false,
        ..LogConfig::default()
    }
}

/// The group coordinators' settings in the simulation.
pub fn group_config() -> GroupConfig {
    GroupConfig {
        classic: ClassicLimits {
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            initial_rebalance_delay_ms: 300,
            max_size: 8,
        },
        consumer: ConsumerLimits { session_timeout_ms: 6_000, heartbeat_interval_ms: 1_000, max_size: 8 },
        offset_metadata_max_bytes: 64,
        offsets_retention_ms: 7 * 24 * 3_600_000,
        offsets_retention_check_interval_ms: 600_000,
    }
}

/// A booted node. See the module documentation.
pub struct SimNode {
    /// Its disk.
    pub disk: FaultDisk,
    /// The shared simulated clock.
    pub clock: SimClock,
    /// Its partitions.
    pub registry: Rc<PartitionRegistry<FaultDisk>>,
    /// Its group coordinators.
    pub groups: Rc<GroupService<FaultDisk>>,
    /// Its transaction coordinators.
    pub txns: Rc<TxnService<FaultDisk>>,
    /// Producer id blocks.
    pub id_blocks: Rc<ProducerIdBlocks<FaultDisk>>,
    /// Producer ids from the current block.
    pub id_pool: Rc<ProducerIdPool>,
}

fn data_dir() -> PathBuf {
    Path::new("/sim/node-0").to_path_buf()
}

impl SimNode {
    /// Boots on `disk`: recovers every partition. `seed` seeds the group
    /// service's member ids.
    pub async fn boot(disk: FaultDisk, clock: SimClock, seed: u64) -> Result<SimNode, String> {
        let shared: SharedClock = Rc::new(clock.clone());
        let registry =
            Rc::new(PartitionRegistry::new(disk.clone(), data_dir(), shared.clone(), CACHE_BYTES, INDEX_BUDGET_BYTES));
        for index in 0..DATA_PARTITIONS {
            registry.open(DATA_TOPIC, index, log_config(), data_acks_all(index)).await.map_err(|e| e.to_string())?;
        }
        for topic in [OFFSETS_TOPIC, TXN_TOPIC] {
            for index in 0..INTERNAL_PARTITIONS {
                registry.open(topic, index, log_config(), Durability::Durable).await.map_err(|e| e.to_string())?;
            }
        }
        let id_blocks = ProducerIdBlocks::open(disk.clone(), &data_dir()).await.map_err(|e| e.to_string())?;
        let node = SimNode {
            disk,
            clock,
            registry,
            groups: Rc::new(GroupService::new(group_config(), shared.clone(), seed)),
            txns: Rc::new(TxnService::new(shared, 7 * 24 * 3_600_000)),
            id_blocks: Rc::new(id_blocks),
            id_pool: Rc::new(ProducerIdPool::default()),
        };
        // As the broker does at startup: every coordinator loads now, so
        // its timers run without a client touching it.
        for index in 0..INTERNAL_PARTITIONS {
            let groups = CoordinatorLog::of(&node.registry, OFFSETS_TOPIC, index);
            node.groups.inspect(groups, |_| ()).await.map_err(|e| format!("loading groups: {e:?}"))?;
            let txns = CoordinatorLog::of(&node.registry, TXN_TOPIC, index);
            node.txns.list(txns).await.map_err(|e| format!("loading transactions: {e:?}"))?;
        }
        Ok(node)
    }

    /// Now on the simulated clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The replica of `topic`/`index`.
    pub fn replica(&self, topic: &str, index: i32) -> Option<Rc<Replica<FaultDisk>>> {
        self.registry.get(topic, index)
    }

    /// Where group `group`'s coordinator lives.
    pub fn offsets_coordinator(&self, group: &str) -> CoordinatorLog<FaultDisk> {
        CoordinatorLog::of(&self.registry, OFFSETS_TOPIC, partition_for(group, INTERNAL_PARTITIONS))
    }

    /// Where transactional id `id`'s coordinator lives.
    pub fn txn_coordinator(&self, id: &str) -> CoordinatorLog<FaultDisk> {
        CoordinatorLog::of(&self.registry, TXN_TOPIC, partition_for(id, INTERNAL_PARTITIONS))
    }

    /// Writes transaction markers on this node's partitions.
    pub fn markers(&self) -> SimMarkers {
        SimMarkers { registry: self.registry.clone(), groups: self.groups.clone(), clock: self.clock.clone() }
    }

    /// Checks a transaction's first batch on a partition with this node's
    /// coordinator.
    pub fn verifier(&self) -> SimVerifier {
        SimVerifier { registry: self.registry.clone(), txns: self.txns.clone() }
    }

    /// Hands out producer ids from this node's blocks.
    pub fn ids(&self) -> SimIds {
        SimIds { pool: self.id_pool.clone(), blocks: self.id_blocks.clone() }
    }
}

/// Markers written straight on the node's partitions (one node holds
/// them all).
pub struct SimMarkers {
    registry: Rc<PartitionRegistry<FaultDisk>>,
    groups: Rc<GroupService<FaultDisk>>,
    clock: SimClock,
}

impl MarkerWriter for SimMarkers {
    fn write_markers<'a>(&'a self, completion: &'a Completion) -> LocalResult<'a, ()> {
        Box::pin(async move {
            let marker = shardline_engine::partition::TxnMarker {
                producer_id: completion.producer_id,
                producer_epoch: completion.epoch,
                commit: completion.commit,
                coordinator_epoch: 0,
            };
            let partitions: Vec<(String, i32)> = completion.partitions.iter().cloned().collect();
            write_local_markers(&self.registry, &self.groups, &partitions, marker, self.clock.now_ms()).await
        })
    }
}

/// The node's transaction coordinator, asked directly.
pub struct SimVerifier {
    registry: Rc<PartitionRegistry<FaultDisk>>,
    txns: Rc<TxnService<FaultDisk>>,
}

impl PartitionVerifier for SimVerifier {
    fn verify<'a>(
        &'a self,
        transactional_id: &'a str,
        producer_id: i64,
        epoch: i16,
        partition: &'a (String, i32),
    ) -> LocalResult<'a, ()> {
        Box::pin(async move {
            let index = partition_for(transactional_id, INTERNAL_PARTITIONS);
            let at = CoordinatorLog::of(&self.registry, TXN_TOPIC, index);
            self.txns.verify(at, transactional_id, producer_id, epoch, partition).await
        })
    }
}

/// Producer ids from the node's pool, refilled from its blocks.
pub struct SimIds {
    pool: Rc<ProducerIdPool>,
    blocks: Rc<ProducerIdBlocks<FaultDisk>>,
}

impl ProducerIdSource for SimIds {
    fn allocate(&self) -> LocalResult<'_, i64> {
        Box::pin(async move {
            let blocks = self.blocks.clone();
            let refill = move || -> BlockRequest<'static> {
                Box::pin(async move { blocks.next_block().await.map_err(ProducerIdError::Io) })
            };
            self.pool.allocate(refill).await.map_err(|_| ResponseError::CoordinatorNotAvailable)
        })
    }
}
