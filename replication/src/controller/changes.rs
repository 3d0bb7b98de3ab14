//! What each controller request changes: the records it adds, computed
//! against a scratch image (the committed image plus the records already
//! in the batch being built), and its reply. Pure: time, leases and fresh
//! ids come in as arguments.

use uuid::Uuid;

use super::election::{self, Election, PartitionChange};
use super::placement::{self, Loads};
use super::requests::{ControllerError, ControllerReply, NewTopic};
use super::ControllerSettings;
use crate::metadata::image::{MetadataImage, NO_LEADER};
use crate::metadata::records::{ConfigResource, Endpoint, MetadataRecord};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;
/// Partitions one CreateTopics or CreatePartitions may add per topic.
const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// A request's records and its reply.
pub(super) type Change = (Vec<MetadataRecord>, ControllerReply);

fn refused(error: ControllerError) -> Change {
    (Vec::new(), ControllerReply::Refused(error))
}

/// `min.insync.replicas` of a topic.
fn min_isr(image: &MetadataImage, topic: &str, settings: &ControllerSettings) -> usize {
    topic_config(image, topic, "min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(settings.min_insync_replicas)
}

fn election_of(image: &MetadataImage, topic: &str, settings: &ControllerSettings) -> Election {
    let unclean = topic_config(image, topic, "unclean.leader.election.enable")
        .map(|v| v == "true")
        .unwrap_or(settings.unclean_leader_election);
    if unclean {
        Election::Unclean
    } else {
        Election::Clean
    }
}

fn topic_config<'a>(image: &'a MetadataImage, topic: &str, name: &str) -> Option<&'a String> {
    image.configs.get(&(ConfigResource::Topic, topic.to_string())).and_then(|c| c.get(name))
}

fn live(image: &MetadataImage, broker: i32) -> bool {
    image.brokers.get(&broker).is_some_and(|b| !b.fenced)
}

fn change_record(topic_id: Uuid, partition: usize, change: PartitionChange) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition: partition as i32,
        leader: change.leader,
        isr: change.isr,
        elr: change.elr,
        replicas: None,
    }
}

/// The partition changes after brokers' liveness changed in `image`, for
/// the partitions with a replica on one of `brokers`: replicas that are
/// gone (fenced, or in `gone`: being fenced) leave the ISR and leaders are
/// elected again; leaderless partitions get a leader when one of theirs
/// can lead. Computed from the image as it is, so asking again after
/// applying them owes nothing.
pub(super) fn liveness_changes(
    image: &MetadataImage,
    brokers: &[i32],
    gone: &[i32],
    settings: &ControllerSettings,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let is_live = |b: i32| live(image, b) && !gone.contains(&b);
    for topic in image.topics.values() {
        let min_isr = min_isr(image, &topic.name, settings);
        let election = election_of(image, &topic.name, settings);
        for (i, p) in topic.partitions.iter().enumerate() {
            if !p.replicas.iter().any(|r| brokers.contains(r)) {
                continue;
            }
            let lost = p.isr.iter().any(|r| !is_live(*r)) || (p.leader != NO_LEADER && !is_live(p.leader));
            let change = if lost {
                election::after_replicas_lost(p, is_live, min_isr, election)
            } else {
                election::after_replicas_back(p, is_live, min_isr, election)
            };
            if !change.is_empty() {
                records.push(change_record(topic.topic_id, i, change));
            }
        }
    }
    records
}

/// Preferred elections for partitions led by another replica than their
/// first while the first is live (not `gone`) and in the ISR
/// (`auto.leader.rebalance.enable`), at most `limit` of them.
pub(super) fn preferred_elections(image: &MetadataImage, gone: &[i32], limit: usize) -> Vec<MetadataRecord> {
    let is_live = |b: i32| live(image, b) && !gone.contains(&b);
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (i, p) in topic.partitions.iter().enumerate() {
            if records.len() == limit {
                return records;
            }
            let change = election::preferred(p, is_live);
            if !change.is_empty() {
                records.push(change_record(topic.topic_id, i, change));
            }
        }
    }
    records
}

/// BrokerRegistration. `lease_live` says whether the current registration
/// of this id still holds a lease.
pub(super) fn register(
    image: &MetadataImage,
    batch_offset: u64,
    broker_id: i32,
    incarnation_id: Uuid,
    endpoints: Vec<Endpoint>,
    rack: Option<String>,
    lease_live: bool,
) -> Change {
    if let Some(existing) = image.brokers.get(&broker_id) {
        if existing.incarnation_id == incarnation_id {
            return (Vec::new(), ControllerReply::Registered { broker_epoch: existing.broker_epoch });
        }
        // Kafka refuses while the other incarnation's session is valid;
        // a registration already in this batch counts as valid too.
        if lease_live || existing.broker_epoch >= batch_offset as i64 {
            return refused(ControllerError::DuplicateBrokerRegistration(broker_id));
        }
    }
    // The broker epoch is the offset of the entry that registers it.
    let broker_epoch = batch_offset as i64;
    let record = MetadataRecord::RegisterBroker {
        broker_id,
        incarnation_id,
        broker_epoch,
        endpoints,
        rack,
        fenced: true,
        registered_offset: None,
    };
    (vec![record], ControllerReply::Registered { broker_epoch })
}

/// Fences a broker (its lease expired, or it asked).
pub(super) fn fence(image: &MetadataImage, broker_id: i32, broker_epoch: i64) -> Vec<MetadataRecord> {
    match image.brokers.get(&broker_id) {
        Some(b) if b.broker_epoch == broker_epoch && !b.fenced => {
            vec![MetadataRecord::FenceBroker { broker_id, broker_epoch }]
        }
        _ => Vec::new(),
    }
}

/// BrokerHeartbeat (the lease is renewed by the caller).
pub(super) fn heartbeat(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
    metadata_offset: u64,
    want_fence: bool,
    want_shutdown: bool,
) -> Change {
    let Some(broker) = image.brokers.get(&broker_id) else {
        return refused(ControllerError::BrokerNotRegistered(broker_id));
    };
    if broker.broker_epoch != broker_epoch {
        return refused(ControllerError::StaleBrokerEpoch);
    }
    let caught_up = metadata_offset >= broker.registered_offset;
    if want_shutdown || want_fence {
        let records = fence(image, broker_id, broker_epoch);
        let reply = ControllerReply::Heartbeat { fenced: true, caught_up, should_shut_down: want_shutdown };
        return (records, reply);
    }
    if broker.fenced && caught_up {
        let records = vec![MetadataRecord::UnfenceBroker { broker_id, broker_epoch }];
        return (records, ControllerReply::Heartbeat { fenced: false, caught_up, should_shut_down: false });
    }
    (Vec::new(), ControllerReply::Heartbeat { fenced: broker.fenced, caught_up, should_shut_down: false })
}

/// Kafka's rules for a topic name.
pub(super) fn check_topic_name(name: &str) -> Result<(), ControllerError> {
    let invalid = |why: String| Err(ControllerError::InvalidTopic(why));
    if name.is_empty() || name == "." || name == ".." {
        return invalid(format!("topic name {name:?} is illegal"));
    }
    if name == "__cluster_metadata" {
        return invalid(format!("creation of internal topic {name} is prohibited"));
    }
    if name.len() > MAX_TOPIC_NAME {
        return invalid(format!("topic name is longer than {MAX_TOPIC_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid(format!("topic name {name:?} has characters other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// One topic of a CreateTopics: its records and result.
pub(super) fn create_topic(
    image: &MetadataImage,
    loads: &mut Loads,
    topic: &NewTopic,
    topic_id: Uuid,
    settings: &ControllerSettings,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    check_topic_name(&topic.name)?;
    if image.topic_ids.contains_key(&topic.name) {
        return Err(ControllerError::TopicExists);
    }
    let assignments = if topic.assignments.is_empty() {
        let partitions = if topic.partitions == -1 { settings.default_partitions } else { topic.partitions };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC} (or -1 for the default), not {partitions}"
            )));
        }
        let rf =
            if topic.replication_factor == -1 { settings.default_replication_factor } else { topic.replication_factor };
        check_replication_factor(rf, settings)?;
        placement::place(image, loads, partitions as usize, rf as usize)
            .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?
    } else {
        check_assignments(image, loads, &topic.assignments, topic.partitions, topic.replication_factor, settings)?;
        topic.assignments.clone()
    };
    let mut records = vec![MetadataRecord::Topic { name: topic.name.clone(), topic_id }];
    for (i, replicas) in assignments.into_iter().enumerate() {
        records.push(new_partition(image, loads, topic_id, i as i32, replicas)?);
    }
    for (name, value) in &topic.configs {
        records.push(MetadataRecord::Config {
            resource: ConfigResource::Topic,
            resource_name: topic.name.clone(),
            name: name.clone(),
            value: Some(value.clone()),
        });
    }
    Ok(records)
}

fn check_replication_factor(rf: i32, settings: &ControllerSettings) -> Result<(), ControllerError> {
    if rf < 1 {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor must be at least 1 (or -1 for the default), not {rf}"
        )));
    }
    if rf as usize > settings.max_replication_factor {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is above {}: partition replication is not built yet, so each partition has one replica",
            settings.max_replication_factor
        )));
    }
    Ok(())
}

fn check_assignments(
    image: &MetadataImage,
    loads: &Loads,
    assignments: &[Vec<i32>],
    partitions: i32,
    replication_factor: i32,
    settings: &ControllerSettings,
) -> Result<(), ControllerError> {
    let invalid = |why: String| Err(ControllerError::InvalidReplicaAssignment(why));
    if partitions != -1 || replication_factor != -1 {
        return invalid("with replica assignments, partitions and replication factor must be -1".into());
    }
    if assignments.len() > MAX_PARTITIONS_PER_TOPIC as usize {
        return invalid(format!("more than {MAX_PARTITIONS_PER_TOPIC} partitions"));
    }
    let rf = assignments[0].len();
    check_replica_sets(image, loads, assignments, rf)?;
    check_replication_factor(rf as i32, settings)
}

/// Each replica set has `rf` distinct registered brokers, one of them
/// live and not leaving.
fn check_replica_sets(
    image: &MetadataImage,
    loads: &Loads,
    assignments: &[Vec<i32>],
    rf: usize,
) -> Result<(), ControllerError> {
    let invalid = |why: String| Err(ControllerError::InvalidReplicaAssignment(why));
    for (i, replicas) in assignments.iter().enumerate() {
        if replicas.len() != rf {
            return invalid(format!("assignment {i} has {} replicas where the topic has {rf}", replicas.len()));
        }
        let mut distinct = replicas.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != replicas.len() {
            return invalid(format!("assignment {i} repeats a replica"));
        }
        if let Some(unknown) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
            return invalid(format!("broker {unknown} of assignment {i} is not registered"));
        }
        if !replicas.iter().any(|r| live(image, *r) && !loads.is_excluded(*r)) {
            return invalid(format!("every broker of assignment {i} is fenced or shutting down"));
        }
    }
    Ok(())
}

/// One topic of a CreatePartitions.
pub(super) fn create_partitions(
    image: &MetadataImage,
    loads: &mut Loads,
    name: &str,
    count: i32,
    assignments: Option<&[Vec<i32>]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = image.topic(name).ok_or(ControllerError::UnknownTopic)?;
    let current = topic.partitions.len() as i32;
    if count <= current || count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic {name} has {current} partitions; the new count must be more, and at most {MAX_PARTITIONS_PER_TOPIC}, not {count}"
        )));
    }
    let rf = topic.partitions[0].replicas.len();
    let placed = if let Some(assignments) = assignments {
        if assignments.len() != (count - current) as usize {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "{} assignments given for {} new partitions",
                assignments.len(),
                count - current
            )));
        }
        check_replica_sets(image, loads, assignments, rf)?;
        assignments.to_vec()
    } else {
        placement::place(image, loads, (count - current) as usize, rf)
            .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?
    };
    placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| new_partition(image, loads, topic.topic_id, current + i as i32, replicas))
        .collect()
}

/// A new partition's record: its live replicas in the ISR, the first of
/// them the leader.
fn new_partition(
    image: &MetadataImage,
    loads: &Loads,
    topic_id: Uuid,
    partition: i32,
    replicas: Vec<i32>,
) -> Result<MetadataRecord, ControllerError> {
    // As Kafka: the replicas that are live and not shutting down (or being
    // fenced) are in sync, the first of them leads.
    let isr: Vec<i32> = replicas.iter().copied().filter(|r| live(image, *r) && !loads.is_excluded(*r)).collect();
    // Placement uses live brokers and checked assignments have one.
    let Some(&leader) = isr.first() else {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "every broker of partition {partition} is fenced or shutting down"
        )));
    };
    Ok(MetadataRecord::Partition {
        topic_id,
        partition,
        replicas,
        isr,
        elr: Vec::new(),
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

/// One partition of an ElectLeaders.
pub(super) fn elect(
    image: &MetadataImage,
    name: &str,
    partition: i32,
    preferred: bool,
    settings: &ControllerSettings,
    gone: &[i32],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = image.topic(name).ok_or(ControllerError::UnknownTopic)?;
    let index = usize::try_from(partition).map_err(|_| ControllerError::UnknownPartition)?;
    let p = topic.partitions.get(index).ok_or(ControllerError::UnknownPartition)?;
    // A broker being fenced or shutting down is elected nowhere.
    let is_live = |b: i32| live(image, b) && !gone.contains(&b);
    let change = if preferred {
        if p.leader == p.replicas[0] {
            return Err(ControllerError::ElectionNotNeeded);
        }
        let change = election::preferred(p, is_live);
        if change.is_empty() {
            return Err(ControllerError::PreferredLeaderNotAvailable);
        }
        change
    } else {
        if p.leader != NO_LEADER {
            return Err(ControllerError::ElectionNotNeeded);
        }
        let change = election::after_replicas_back(p, is_live, min_isr(image, name, settings), Election::Unclean);
        if change.leader.is_none() {
            return Err(ControllerError::EligibleLeadersNotAvailable);
        }
        change
    };
    Ok(vec![change_record(topic.topic_id, index, change)])
}
