//! What one broker makes of a committed metadata image: the topics it
//! knows, which of their partitions it hosts (a replica on this node) and
//! on which of its shards, and what that changes against its current view
//! (partitions to open, topics to remove). Pure: the broker's follower
//! runs it on the core that applies the log, then opens and removes logs
//! and publishes the new view to every shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardline_replication::metadata::image::MetadataImage as ClusterImage;
use shardline_replication::metadata::records::ConfigResource;

use crate::placement::least_loaded;
use crate::topics::{MetadataImage, TopicInfo, NOT_HOSTED};

/// What applying an image changes on this broker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalChanges {
    /// Partitions to open: the topic (as in the new view) and the index.
    pub opened: Vec<(Arc<TopicInfo>, i32)>,
    /// Topics gone (deleted, or deleted and made again under a new id):
    /// their logs are removed, as they were placed.
    pub removed: Vec<Arc<TopicInfo>>,
}

impl LocalChanges {
    /// Whether nothing changes on disk.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.removed.is_empty()
    }
}

/// The view of `cluster` for broker `node_id` with `shards` shards, keeping
/// the placement of every partition `current` already hosts; new hosted
/// partitions go to the shards with the fewest.
pub fn local_view(
    cluster: &ClusterImage,
    current: &MetadataImage,
    node_id: i32,
    shards: usize,
) -> (MetadataImage, LocalChanges) {
    assert!(shards >= 1, "a broker has at least one shard");
    let mut changes = LocalChanges::default();
    let mut load = vec![0usize; shards];
    let kept = |name: &str, id| current.topics.get(name).filter(|t| t.id == id);
    for topic in cluster.topics.values() {
        if let Some(known) = kept(&topic.name, topic.topic_id) {
            for &shard in known.partition_shards.iter().filter(|s| **s != NOT_HOSTED) {
                load[shard % shards] += 1;
            }
        }
    }
    let mut topics = BTreeMap::new();
    for topic in cluster.topics.values() {
        let known = kept(&topic.name, topic.topic_id);
        let configs = cluster.configs.get(&(ConfigResource::Topic, topic.name.clone())).cloned().unwrap_or_default();
        let mut new_indexes = Vec::new();
        let partition_shards: Vec<usize> = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let placed = known.and_then(|k| k.partition_shards.get(index)).copied().filter(|s| *s != NOT_HOSTED);
                match placed {
                    Some(shard) => shard,
                    None if partition.replicas.contains(&node_id) => {
                        new_indexes.push(index as i32);
                        least_loaded(&mut load)
                    }
                    None => NOT_HOSTED,
                }
            })
            .collect();
        let info = match known {
            Some(k) if k.partition_shards == partition_shards && k.configs == configs => k.clone(),
            _ => Arc::new(TopicInfo { name: topic.name.clone(), id: topic.topic_id, partition_shards, configs }),
        };
        changes.opened.extend(new_indexes.into_iter().map(|index| (info.clone(), index)));
        topics.insert(topic.name.clone(), info);
    }
    for (name, old) in &current.topics {
        if topics.get(name).is_none_or(|t| t.id != old.id) {
            changes.removed.push(old.clone());
        }
    }
    (MetadataImage { topics }, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_replication::metadata::records::{MetadataRecord, RecordBatch};
    use uuid::Uuid;

    fn topic_records(name: &str, id: u128, replicas: &[i32]) -> Vec<MetadataRecord> {
        let topic_id = Uuid::from_u128(id);
        let mut records = vec![MetadataRecord::Topic { name: name.into(), topic_id }];
        for (partition, replica) in replicas.iter().enumerate() {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: partition as i32,
                replicas: vec![*replica],
                isr: vec![*replica],
                elr: vec![],
                leader: *replica,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        records
    }

    fn cluster(offset: u64, records: Vec<MetadataRecord>) -> ClusterImage {
        ClusterImage::default().applied(offset, &RecordBatch::of(records)).expect("applies")
    }

    #[test]
    fn hosted_partitions_are_placed_once_and_kept() {
        let image = cluster(1, topic_records("a", 1, &[1, 2, 1, 1]));
        let (view, changes) = local_view(&image, &MetadataImage::default(), 1, 2);
        assert_eq!(view.topics["a"].partition_shards, vec![0, NOT_HOSTED, 1, 0]);
        assert_eq!(changes.opened.iter().map(|(_, i)| *i).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert!(changes.removed.is_empty());
        // The same image again changes nothing, and keeps the topic's Arc.
        let (again, none) = local_view(&image, &view, 1, 2);
        assert!(none.is_empty());
        assert!(Arc::ptr_eq(&again.topics["a"], &view.topics["a"]));
    }

    #[test]
    fn a_topic_made_again_under_a_new_id_is_removed_and_placed_fresh() {
        let first = cluster(1, topic_records("a", 1, &[1]));
        let (view, _) = local_view(&first, &MetadataImage::default(), 1, 1);
        let second = cluster(2, topic_records("a", 2, &[1, 1]));
        let (next, changes) = local_view(&second, &view, 1, 1);
        assert_eq!(changes.removed.len(), 1);
        assert_eq!(changes.removed[0].id, Uuid::from_u128(1));
        assert_eq!(changes.opened.len(), 2);
        assert_eq!(next.topics["a"].id, Uuid::from_u128(2));
        let (gone, changes) = local_view(&ClusterImage::default(), &next, 1, 1);
        assert!(gone.topics.is_empty());
        assert_eq!(changes.removed.len(), 1);
    }
}
