//! The partitions one shard holds: a registry from (topic, partition) to
//! the [`Replica`] this shard owns, opened, closed and deleted here, with
//! the shard's batch cache and clock handed to each log. Generic over the
//! [`Disk`] so the simulator runs the same registry on the fault disk.
//! Lives on its shard (`Rc`, no locks); other shards reach it over the mesh.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shardline_engine::log::cache::{BatchCache, SharedBatchCache};
use shardline_engine::log::index_budget::{IndexBudget, SharedIndexBudget};
use shardline_engine::partition::{Durability, Isolation, Partition, PartitionResult};
use shardline_engine::runtime::clock::{timeout, SharedClock};
use shardline_engine::{Disk, HighWatermarkPolicy, LogConfig, LogOptions};

/// Partitions a shard closes at once at shutdown.
pub const CLOSES_IN_FLIGHT: usize = 64;

/// A partition's address.
pub type PartitionKey = (String, i32);

/// One partition this shard holds, with what acks=all waits for on it
/// (from the topic's `shardline.acks.all.fsync`).
pub struct Replica<D: Disk> {
    /// The partition.
    pub partition: Partition<D>,
    /// What acks=all (and a coordinator's own writes) wait for.
    pub acks_all: Durability,
}

/// The registry. See the module documentation.
pub struct PartitionRegistry<D: Disk> {
    disk: D,
    data_dir: PathBuf,
    clock: SharedClock,
    cache: SharedBatchCache,
    indexes: SharedIndexBudget,
    next_cache_key: Cell<u64>,
    replicas: RefCell<BTreeMap<PartitionKey, Rc<Replica<D>>>>,
}

/// Directory of a partition: `<data_dir>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl<D: Disk> PartitionRegistry<D> {
    /// An empty registry for partitions under `data_dir`, with a batch
    /// cache of `cache_bytes` and a budget of `index_bytes` for loaded
    /// sealed-segment indexes, shared by them.
    pub fn new(disk: D, data_dir: PathBuf, clock: SharedClock, cache_bytes: usize, index_bytes: usize) -> Self {
        PartitionRegistry {
            disk,
            data_dir,
            clock,
            cache: BatchCache::shared(cache_bytes),
            indexes: IndexBudget::shared(index_bytes),
            next_cache_key: Cell::new(0),
            replicas: RefCell::new(BTreeMap::new()),
        }
    }

    /// The replica of `topic`/`partition`, if this shard holds it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<Replica<D>>> {
        self.replicas.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    /// Bytes of sealed-segment indexes loaded now.
    pub fn index_bytes(&self) -> usize {
        self.indexes.borrow().used_bytes()
    }

    /// The disk its partitions live on.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Every replica, in key order.
    pub fn all(&self) -> Vec<(PartitionKey, Rc<Replica<D>>)> {
        self.replicas.borrow().iter().map(|(k, r)| (k.clone(), r.clone())).collect()
    }

    /// Opens (creating or recovering) a partition on this shard; an open one
    /// is returned as it is.
    pub async fn open(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
        acks_all: Durability,
    ) -> PartitionResult<Rc<Replica<D>>> {
        if let Some(open) = self.get(topic, partition) {
            return Ok(open);
        }
        let cache_key = self.next_cache_key.get();
        self.next_cache_key.set(cache_key + 1);
        let policy = match acks_all {
            Durability::Durable => HighWatermarkPolicy::Durable,
            Durability::Written => HighWatermarkPolicy::Written,
        };
        let options = LogOptions {
            config,
            policy,
            cache: self.cache.clone(),
            cache_key,
            indexes: self.indexes.clone(),
            clock: self.clock.clone(),
        };
        let dir = partition_dir(&self.data_dir, topic, partition);
        let opened = Partition::open(self.disk.clone(), &dir, options, self.clock.now_ms()).await?;
        let replica = Rc::new(Replica { partition: opened, acks_all });
        // A concurrent open of the same partition may have won meanwhile.
        let mut replicas = self.replicas.borrow_mut();
        Ok(replicas.entry((topic.to_string(), partition)).or_insert(replica).clone())
    }

    /// Closes a partition and removes its files.
    pub async fn delete(&self, topic: &str, partition: i32) -> std::io::Result<()> {
        let removed = self.replicas.borrow_mut().remove(&(topic.to_string(), partition));
        if let Some(replica) = removed {
            if let Err(error) = replica.partition.close().await {
                tracing::warn!(topic, partition, %error, "closing a deleted partition");
            }
        }
        self.disk.remove_dir_all(&partition_dir(&self.data_dir, topic, partition)).await
    }

    /// Closes every partition cleanly (shutdown): flushed, clean marker,
    /// producer snapshot.
    /// [`CLOSES_IN_FLIGHT`] at a time, so their syncs overlap.
    pub async fn close_all(&self) {
        use futures::StreamExt;
        let all = std::mem::take(&mut *self.replicas.borrow_mut());
        let closes = futures::stream::iter(all).map(|((topic, partition), replica)| async move {
            if let Err(error) = replica.partition.close().await {
                tracing::error!(topic, partition, %error, "closing partition");
            }
        });
        closes.buffer_unordered(CLOSES_IN_FLIGHT).collect::<Vec<()>>().await;
    }

    /// Waits until any of `watches` (topic, partition, offset) can read past
    /// its offset at `isolation` (new data since the reader last looked),
    /// or until `deadline_ms` on the shard's clock.
    pub async fn wait_for_data(&self, watches: Vec<(String, i32, i64)>, deadline_ms: i64, isolation: Isolation) {
        let watched: Vec<(Rc<Replica<D>>, i64)> =
            watches.iter().filter_map(|(t, p, o)| self.get(t, *p).map(|replica| (replica, *o))).collect();
        // Each round waits for a change; bounded by the deadline.
        loop {
            if watched.iter().any(|(replica, offset)| replica.partition.visible_end(isolation) > *offset) {
                return;
            }
            let left_ms = deadline_ms - self.clock.now_ms();
            if left_ms <= 0 {
                return;
            }
            let left = std::time::Duration::from_millis(left_ms as u64);
            if watched.is_empty() {
                self.clock.sleep(left).await;
                return;
            }
            let changes = futures::future::select_all(watched.iter().map(|(r, _)| Box::pin(r.partition.changed())));
            let _ = timeout(&*self.clock, left, changes).await;
        }
    }

    /// Snapshots the producer state of every partition whose durable
    /// offset moved, forgetting producers silent since `expire_before_ms`.
    pub async fn snapshot_producers(&self, expire_before_ms: i64) {
        for (_, replica) in self.all() {
            if let Err(error) = replica.partition.snapshot_producers(expire_before_ms).await {
                tracing::warn!(dir = %replica.partition.dir().display(), %error, "writing producer snapshot");
            }
        }
    }

    /// Asks every partition with no append since the previous call to give
    /// back its disk reservation and its write and index descriptors
    /// (`Log::release_if_idle`).
    pub fn release_idle_partitions(&self) {
        for replica in self.replicas.borrow().values() {
            replica.partition.log().release_if_idle();
        }
    }

    /// Runs retention on every partition of this shard.
    pub async fn apply_retention(&self) {
        let now_ms = self.clock.now_ms();
        for (_, replica) in self.all() {
            if let Err(error) = replica.partition.apply_retention(now_ms).await {
                tracing::warn!(dir = %replica.partition.dir().display(), %error, "retention failed");
            }
        }
    }
}
