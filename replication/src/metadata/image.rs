//! The metadata image: the cluster's state after every committed record up
//! to an offset (brokers, topics, partitions with their leaders and ISR,
//! configs, producer-id blocks, feature levels). Immutable once published:
//! the core that follows the metadata log applies each committed batch to
//! make the next image and hands an `Arc` of it to every shard, so no shard
//! reads shared mutable metadata. Topics are behind their own `Arc`, so a
//! new image copies pointers, not partitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::records::{ConfigResource, Endpoint, MetadataRecord, RecordBatch};

/// No leader (`leader` of a partition without one).
pub const NO_LEADER: i32 = -1;

/// A broker as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// Its node id.
    pub broker_id: i32,
    /// Changes on every start of the process.
    pub incarnation_id: Uuid,
    /// The log offset of its registration: requests from an older epoch
    /// are from a previous incarnation and are refused.
    pub broker_epoch: i64,
    /// Its advertised listeners.
    pub endpoints: Vec<Endpoint>,
    /// Its rack, for rack-aware placement.
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not in Metadata answers.
    pub fenced: bool,
    /// The offset its registration was applied at (a snapshot's offset
    /// after a restart): it has caught up once it applied this far.
    pub registered_offset: u64,
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    /// Replicas in preference order (the first is the preferred leader).
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Eligible leader replicas (KIP-966).
    pub elr: Vec<i32>,
    /// The leader, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change; only increases.
    pub leader_epoch: i32,
    /// Bumped on every change; AlterPartition is fenced by it.
    pub partition_epoch: i32,
}

/// A topic and its partitions (partition `i` at index `i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    /// Its name.
    pub name: String,
    /// Its id.
    pub topic_id: Uuid,
    /// Its partitions.
    pub partitions: Vec<PartitionImage>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The Raft index of the last entry applied (0 before any).
    pub offset: u64,
    /// Registered brokers by id.
    pub brokers: Arc<BTreeMap<i32, BrokerRegistration>>,
    /// Topics by id.
    pub topics: BTreeMap<Uuid, Arc<TopicImage>>,
    /// Topic ids by name.
    pub topic_ids: BTreeMap<String, Uuid>,
    /// Configs set on topics and brokers, by resource then name.
    pub configs: Arc<BTreeMap<(ConfigResource, String), BTreeMap<String, String>>>,
    /// Producer ids below this are given out.
    pub next_producer_id: i64,
    /// Finalized feature levels.
    pub features: BTreeMap<String, i16>,
}

/// A committed record that breaks a rule of the image: a controller bug,
/// or a log from elsewhere.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("metadata record at offset {offset} cannot apply: {reason} ({record:?})")]
pub struct ImageError {
    /// The entry's offset.
    pub offset: u64,
    /// What rule it breaks.
    pub reason: String,
    /// The record.
    pub record: Box<MetadataRecord>,
}

impl MetadataImage {
    /// The image after `batch`, the entry at `offset`; `self` is unchanged
    /// when any record in it breaks a rule.
    pub fn applied(&self, offset: u64, batch: &RecordBatch) -> Result<MetadataImage, ImageError> {
        assert!(offset > self.offset, "entries apply in log order: {offset} after {}", self.offset);
        let mut next = self.clone();
        for versioned in &batch.records {
            next.apply_record(offset, &versioned.record).map_err(|reason| ImageError {
                offset,
                reason,
                record: Box::new(versioned.record.clone()),
            })?;
        }
        next.offset = offset;
        Ok(next)
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// A partition of a topic.
    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<&PartitionImage> {
        let topic = self.topics.get(&topic_id)?;
        usize::try_from(partition).ok().and_then(|i| topic.partitions.get(i))
    }

    /// Registered brokers that are not fenced, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Partitions in the image.
    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }

    /// The records that rebuild this image from an empty one (a snapshot).
    pub fn to_records(&self) -> RecordBatch {
        let mut records = Vec::new();
        for (name, level) in &self.features {
            records.push(MetadataRecord::FeatureLevel { name: name.clone(), level: *level });
        }
        for b in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                broker_id: b.broker_id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.broker_epoch,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
                registered_offset: Some(b.registered_offset),
            });
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic { name: topic.name.clone(), topic_id: topic.topic_id });
            for (i, p) in topic.partitions.iter().enumerate() {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.topic_id,
                    partition: i as i32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    elr: p.elr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                });
            }
        }
        for ((resource, resource_name), values) in self.configs.iter() {
            for (name, value) in values {
                records.push(MetadataRecord::Config {
                    resource: *resource,
                    resource_name: resource_name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        RecordBatch::of(records)
    }

    /// The image a snapshot's records rebuild, at `offset`.
    pub fn from_records(offset: u64, batch: &RecordBatch) -> Result<MetadataImage, ImageError> {
        let image = MetadataImage::default().applied(offset.max(1), batch)?;
        Ok(MetadataImage { offset, ..image })
    }

    fn apply_record(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), String> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                broker_epoch,
                endpoints,
                rack,
                fenced,
                registered_offset,
            } => {
                if let Some(old) = self.brokers.get(broker_id) {
                    if old.broker_epoch >= *broker_epoch {
                        return Err(format!("broker epoch {broker_epoch} is not after {}", old.broker_epoch));
                    }
                }
                let registration = BrokerRegistration {
                    broker_id: *broker_id,
                    incarnation_id: *incarnation_id,
                    broker_epoch: *broker_epoch,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    fenced: *fenced,
                    registered_offset: registered_offset.unwrap_or(offset),
                };
                Arc::make_mut(&mut self.brokers).insert(*broker_id, registration);
            }
            MetadataRecord::FenceBroker { broker_id, broker_epoch } => {
                self.set_fenced(*broker_id, *broker_epoch, true)?
            }
            MetadataRecord::UnfenceBroker { broker_id, broker_epoch } => {
                self.set_fenced(*broker_id, *broker_epoch, false)?
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    return Err("the topic exists".into());
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                let topic = TopicImage { name: name.clone(), topic_id: *topic_id, partitions: Vec::new() };
                self.topics.insert(*topic_id, Arc::new(topic));
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or("no such topic")?;
                self.topic_ids.remove(&topic.name);
                Arc::make_mut(&mut self.configs).remove(&(ConfigResource::Topic, topic.name.clone()));
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                elr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topic = self.topics.get_mut(topic_id).ok_or("no such topic")?;
                if *partition as usize != topic.partitions.len() || *partition < 0 {
                    return Err(format!("partition {partition} is not the next ({})", topic.partitions.len()));
                }
                let state = PartitionImage {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    elr: elr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                check_partition(&state)?;
                Arc::make_mut(topic).partitions.push(state);
            }
            MetadataRecord::PartitionChange { topic_id, partition, leader, isr, elr, replicas } => {
                let topic = self.topics.get_mut(topic_id).ok_or("no such topic")?;
                let index = usize::try_from(*partition).map_err(|_| "negative partition")?;
                let current = topic.partitions.get(index).ok_or("no such partition")?;
                let mut next = current.clone();
                if let Some(leader) = leader {
                    if *leader != current.leader {
                        next.leader = *leader;
                        next.leader_epoch = current.leader_epoch.checked_add(1).ok_or("leader epoch overflow")?;
                    }
                }
                next.isr = isr.clone().unwrap_or(next.isr);
                next.elr = elr.clone().unwrap_or(next.elr);
                next.replicas = replicas.clone().unwrap_or(next.replicas);
                next.partition_epoch = current.partition_epoch.checked_add(1).ok_or("partition epoch overflow")?;
                check_partition(&next)?;
                assert!(next.leader_epoch >= current.leader_epoch, "a leader epoch only increases");
                Arc::make_mut(topic).partitions[index] = next;
            }
            MetadataRecord::Config { resource, resource_name, name, value } => {
                if *resource == ConfigResource::Topic && !self.topic_ids.contains_key(resource_name) {
                    return Err("a config of a topic that does not exist".into());
                }
                let configs = Arc::make_mut(&mut self.configs);
                let key = (*resource, resource_name.clone());
                match value {
                    Some(value) => {
                        configs.entry(key).or_default().insert(name.clone(), value.clone());
                    }
                    None => {
                        if let Some(values) = configs.get_mut(&key) {
                            values.remove(name);
                            if values.is_empty() {
                                configs.remove(&key);
                            }
                        }
                    }
                }
            }
            MetadataRecord::ProducerIds { next_producer_id, .. } => {
                if *next_producer_id <= self.next_producer_id {
                    return Err(format!("producer ids go back to {next_producer_id} from {}", self.next_producer_id));
                }
                self.next_producer_id = *next_producer_id;
            }
            MetadataRecord::FeatureLevel { name, level } => {
                self.features.insert(name.clone(), *level);
            }
        }
        Ok(())
    }

    fn set_fenced(&mut self, broker_id: i32, broker_epoch: i64, fenced: bool) -> Result<(), String> {
        let brokers = Arc::make_mut(&mut self.brokers);
        let broker = brokers.get_mut(&broker_id).ok_or("no such broker")?;
        if broker.broker_epoch != broker_epoch {
            return Err(format!("broker epoch {broker_epoch} is not the current {}", broker.broker_epoch));
        }
        broker.fenced = fenced;
        Ok(())
    }
}

/// The rules every partition state keeps: replicas distinct and not
/// empty, ISR and ELR within the replicas and apart, the leader in the ISR.
fn check_partition(p: &PartitionImage) -> Result<(), String> {
    let mut sorted = p.replicas.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() || sorted.len() != p.replicas.len() {
        return Err(format!("replicas {:?} are empty or repeat", p.replicas));
    }
    if let Some(stray) = p.isr.iter().chain(&p.elr).find(|r| !p.replicas.contains(r)) {
        return Err(format!("replica {stray} of the ISR or ELR is not a replica"));
    }
    if p.isr.iter().any(|r| p.elr.contains(r)) {
        return Err("a replica is in both the ISR and the ELR".into());
    }
    if p.leader != NO_LEADER && !p.isr.contains(&p.leader) {
        return Err(format!("leader {} is not in the ISR {:?}", p.leader, p.isr));
    }
    if p.leader_epoch < 0 || p.partition_epoch < 0 {
        return Err("negative epoch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic_batch(id: u128, partitions: i32) -> RecordBatch {
        let topic_id = Uuid::from_u128(id);
        let mut records = vec![MetadataRecord::Topic { name: format!("t{id}"), topic_id }];
        for partition in 0..partitions {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                elr: vec![],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        RecordBatch::of(records)
    }

    #[test]
    fn a_leader_change_bumps_both_epochs_and_a_snapshot_rebuilds_the_image() {
        let image = MetadataImage::default().applied(1, &topic_batch(1, 2)).unwrap();
        let change = RecordBatch::of([MetadataRecord::PartitionChange {
            topic_id: Uuid::from_u128(1),
            partition: 1,
            leader: Some(2),
            isr: Some(vec![2]),
            elr: None,
            replicas: None,
        }]);
        let next = image.applied(2, &change).unwrap();
        let p = next.partition(Uuid::from_u128(1), 1).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (2, 1, 1, vec![2]));
        assert_eq!(image.partition(Uuid::from_u128(1), 1).unwrap().leader_epoch, 0, "the old image is unchanged");
        let rebuilt = MetadataImage::from_records(2, &next.to_records()).unwrap();
        assert_eq!(rebuilt, next);
    }

    #[test]
    fn a_batch_that_breaks_a_rule_changes_nothing() {
        let image = MetadataImage::default().applied(1, &topic_batch(1, 1)).unwrap();
        let bad = RecordBatch::of([
            MetadataRecord::FeatureLevel { name: "metadata.version".into(), level: 1 },
            MetadataRecord::PartitionChange {
                topic_id: Uuid::from_u128(1),
                partition: 0,
                leader: Some(3),
                isr: None,
                elr: None,
                replicas: None,
            },
        ]);
        let error = image.applied(2, &bad).unwrap_err();
        assert!(error.reason.contains("leader 3 is not in the ISR"), "{error}");
        assert!(image.features.is_empty());
        assert!(image.applied(2, &topic_batch(1, 1)).unwrap_err().reason.contains("exists"));
    }
}
