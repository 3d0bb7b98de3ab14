//! Topic metadata of the single-node broker: names, ids, partition →
//! shard placement and per-topic configs, persisted to
//! `<data_dir>/__shardline/topics.json` and published as an immutable image
//! that every shard reads without locks (`ArcSwap`). Changes (create,
//! delete) are serialized by a mutex on the control path only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use shardline_engine::LogConfig;
use uuid::Uuid;

use shardline_engine::format::compression::Codec;
use shardline_engine::partition::Durability;

use crate::config::BrokerConfig;
use crate::groups::OFFSETS_TOPIC;
use crate::txn::TXN_TOPIC;

/// The shard of a partition this broker does not host (another broker's
/// replica), in [`TopicInfo::partition_shards`].
pub const NOT_HOSTED: usize = usize::MAX;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Owning shard of each partition, by partition index (as placed), or
    /// [`NOT_HOSTED`] for a partition with no replica on this broker.
    pub partition_shards: Vec<usize>,
    /// Topic configs set explicitly (Kafka names).
    pub configs: BTreeMap<String, String>,
}

/// An immutable snapshot of all topics.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicInfo>>,
}

impl MetadataImage {
    /// The topic with this id.
    pub fn by_id(&self, id: Uuid) -> Option<&Arc<TopicInfo>> {
        self.topics.values().find(|t| t.id == id)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct PersistedTopics {
    topics: Vec<TopicInfo>,
}

/// The topic store. Shared by all shards.
#[derive(Debug)]
pub struct TopicStore {
    image: ArcSwap<MetadataImage>,
    writer: futures::lock::Mutex<()>,
    path: PathBuf,
    /// The metadata log offset this view is applied to, and who waits
    /// for a later one.
    applied: std::sync::Mutex<Applied>,
}

#[derive(Debug, Default)]
struct Applied {
    offset: u64,
    waiters: Vec<(u64, futures::channel::oneshot::Sender<()>)>,
}

/// Whether `name` is one of the broker's internal topics (Kafka's
/// `Topic.isInternal`): clients may not produce to, delete or grow them.
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TXN_TOPIC
}

/// The metadata log's name (its directory is `__cluster_metadata-0`): no
/// topic may take it.
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Why a topic name is refused (Kafka's rules).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("topic name must be 1 to 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if name == CLUSTER_METADATA_TOPIC {
        return Err(format!("creation of internal topic {name} is prohibited"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!("topic name {name:?} has characters other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// Topic config keys this broker understands, with their broker default.
pub fn default_topic_configs(broker: &BrokerConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("cleanup.policy".into(), "delete".into());
    out.insert("compression.gzip.level".into(), "-1".into());
    out.insert("compression.lz4.level".into(), "9".into());
    out.insert("compression.type".into(), "producer".into());
    out.insert("compression.zstd.level".into(), "3".into());
    out.insert(
        "flush.messages".into(),
        if broker.log_flush_interval_messages < 0 {
            i64::MAX.to_string()
        } else {
            broker.log_flush_interval_messages.to_string()
        },
    );
    out.insert(
        "flush.ms".into(),
        if broker.log_flush_interval_ms < 0 { i64::MAX.to_string() } else { broker.log_flush_interval_ms.to_string() },
    );
    out.insert("index.interval.bytes".into(), "4096".into());
    out.insert("max.message.bytes".into(), broker.message_max_bytes.to_string());
    out.insert("message.timestamp.after.max.ms".into(), broker.log_message_timestamp_after_max_ms.to_string());
    out.insert("message.timestamp.before.max.ms".into(), broker.log_message_timestamp_before_max_ms.to_string());
    out.insert("message.timestamp.type".into(), "CreateTime".into());
    out.insert("min.insync.replicas".into(), "1".into());
    out.insert("retention.bytes".into(), broker.log_retention_bytes.to_string());
    out.insert("retention.ms".into(), broker.log_retention_ms.to_string());
    out.insert("segment.bytes".into(), broker.log_segment_bytes.to_string());
    out.insert("segment.ms".into(), (7 * 24 * 3600 * 1000i64).to_string());
    out.insert("shardline.acks.all.fsync".into(), broker.acks_all_fsync.to_string());
    out
}

/// The effective log configuration and ack durability of a topic, or the
/// name of the config that is invalid.
pub fn log_config_for(
    broker: &BrokerConfig,
    explicit: &BTreeMap<String, String>,
) -> Result<(LogConfig, Durability), String> {
    let mut all = default_topic_configs(broker);
    for (key, value) in explicit {
        if !all.contains_key(key) {
            return Err(format!("unknown topic config {key}"));
        }
        all.insert(key.clone(), value.clone());
    }
    let int = |key: &str| -> Result<i64, String> {
        all[key].parse::<i64>().map_err(|_| format!("invalid value for {key}: {}", all[key]))
    };
    let optional = |key: &str| -> Result<Option<u64>, String> {
        let v = int(key)?;
        if v < -1 {
            return Err(format!("invalid value for {key}: {v}"));
        }
        Ok(if v < 0 || v == i64::MAX { None } else { Some(v as u64) })
    };
    if all["cleanup.policy"] != "delete" {
        return Err("cleanup.policy: only \"delete\" is supported".into());
    }
    let level = |key: &str, range: std::ops::RangeInclusive<i64>| -> Result<i64, String> {
        let v = int(key)?;
        if !range.contains(&v) {
            return Err(format!("invalid value for {key}: {v}"));
        }
        Ok(v)
    };
    let gzip_level = level("compression.gzip.level", -1..=9)?;
    let gzip_level = if gzip_level <= 0 { 6 } else { gzip_level as u32 };
    level("compression.lz4.level", 1..=17)?;
    let zstd_level = level("compression.zstd.level", -131_072..=22)? as i32;
    let compression = match all["compression.type"].as_str() {
        "producer" => None,
        "uncompressed" => Some(Codec::Uncompressed),
        "gzip" => Some(Codec::Gzip { level: gzip_level }),
        "snappy" => Some(Codec::Snappy),
        "lz4" => Some(Codec::Lz4),
        "zstd" => Some(Codec::Zstd { level: zstd_level }),
        other => return Err(format!("invalid value for compression.type: {other}")),
    };
    if all["message.timestamp.type"] != "CreateTime" {
        return Err("message.timestamp.type: only CreateTime is supported".into());
    }
    let fsync = match all["shardline.acks.all.fsync"].as_str() {
        "true" => Durability::Durable,
        "false" => Durability::Written,
        other => return Err(format!("invalid value for shardline.acks.all.fsync: {other}")),
    };
    let segment_bytes = int("segment.bytes")?;
    if !(14..=i64::from(i32::MAX)).contains(&segment_bytes) {
        return Err(format!("invalid value for segment.bytes: {segment_bytes}"));
    }
    let max_message = int("max.message.bytes")?;
    if !(64..=(64 << 20)).contains(&max_message) {
        return Err(format!("invalid value for max.message.bytes: {max_message}"));
    }
    if int("min.insync.replicas")? < 1 {
        return Err("invalid value for min.insync.replicas: must be at least 1".into());
    }
    let index_interval = int("index.interval.bytes")?;
    if index_interval < 1 {
        return Err(format!("invalid value for index.interval.bytes: {index_interval}"));
    }
    let flush_messages = optional("flush.messages")?.filter(|n| *n > 0);
    let bound = |key: &str| -> Result<Option<u64>, String> {
        let v = int(key)?;
        if v < 0 {
            return Err(format!("invalid value for {key}: {v}"));
        }
        Ok((v != i64::MAX).then_some(v as u64))
    };
    let config = LogConfig {
        segment_bytes: segment_bytes as u64,
        segment_ms: optional("segment.ms")?,
        index_interval_bytes: index_interval as u64,
        flush_messages,
        flush_ms: optional("flush.ms")?,
        retention_ms: optional("retention.ms")?,
        retention_bytes: optional("retention.bytes")?,
        max_batch_bytes: max_message as usize,
        timestamp_before_max_ms: bound("message.timestamp.before.max.ms")?,
        timestamp_after_max_ms: bound("message.timestamp.after.max.ms")?,
        chunk_bytes: 1 << 20,
        max_pending_chunks: (max_message as usize).div_ceil(1 << 20).max(1) * 2 + 6,
        preallocate: true,
        compression,
    };
    config.validate().map_err(|key| format!("invalid value for {key}"))?;
    Ok((config, fsync))
}

impl TopicStore {
    /// Loads the store from `data_dir` (empty when new).
    pub fn load(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("__shardline");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("topics.json");
        let persisted: PersistedTopics = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedTopics::default(),
            Err(e) => return Err(e),
        };
        let topics = persisted.topics.into_iter().map(|t| (t.name.clone(), Arc::new(t))).collect();
        Ok(Self {
            image: ArcSwap::from_pointee(MetadataImage { topics }),
            writer: futures::lock::Mutex::new(()),
            path,
            applied: Default::default(),
        })
    }

    /// The current image (lock-free).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// Serializes control-path changes (an async lock: holders await mesh
    /// calls to other shards while holding it).
    pub async fn lock(&self) -> futures::lock::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// Writes `image` durably (temp file, fsync, rename, directory fsync).
    /// Call with [`lock`](Self::lock) held.
    pub fn persist(&self, image: &MetadataImage) -> std::io::Result<()> {
        use std::io::Write;
        let persisted = PersistedTopics { topics: image.topics.values().map(|t| (**t).clone()).collect() };
        let bytes = serde_json::to_vec_pretty(&persisted).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Makes `image` the one every shard sees.
    pub fn publish(&self, image: MetadataImage) {
        self.image.store(Arc::new(image));
    }

    /// The metadata log offset the published view is applied to.
    pub fn applied_offset(&self) -> u64 {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).offset
    }

    /// Records that the published view holds everything up to `offset`,
    /// and wakes those waiting for it.
    pub fn mark_applied(&self, offset: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.offset = applied.offset.max(offset);
        let reached = applied.offset;
        let (done, waiting) = std::mem::take(&mut applied.waiters).into_iter().partition(|(at, _)| *at <= reached);
        applied.waiters = waiting;
        drop(applied);
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    /// Waits until the published view holds `offset`; false when the
    /// broker stopped applying first.
    pub async fn wait_applied(&self, offset: u64) -> bool {
        let rx = {
            let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
            if applied.offset >= offset {
                return true;
            }
            let (tx, rx) = futures::channel::oneshot::channel();
            applied.waiters.push((offset, tx));
            rx
        };
        rx.await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_configs() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        let broker = BrokerConfig::default();
        let mut explicit = BTreeMap::new();
        explicit.insert("retention.ms".to_string(), "1000".to_string());
        let (config, ack) = log_config_for(&broker, &explicit).expect("valid");
        assert_eq!(config.retention_ms, Some(1000));
        assert_eq!(ack, Durability::Durable);
        explicit.insert("bogus".to_string(), "1".to_string());
        assert!(log_config_for(&broker, &explicit).is_err());
    }
}
