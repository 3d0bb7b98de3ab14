//! The upgrade path of a data directory from before the metadata log: its
//! topics (`__shardline/topics.json`, ids and configs kept) and the end of
//! the producer ids it handed out become records of the new log, each partition hosted by this node, in requests of a
//! bounded size, the last marking the log as bootstrapped. A start that
//! crashed halfway goes on where it stopped: topics already in the log
//! are skipped. Runs once, on the thread that starts the broker.

use shardline_replication::controller::requests::{
    ControllerError, ControllerReply, ControllerRequest, BOOTSTRAP_FEATURE,
};
use shardline_replication::metadata::image::MetadataImage as ClusterImage;
use shardline_replication::metadata::records::{ConfigResource, MetadataRecord};

use super::controller_core::ControllerHandle;
use crate::topics::MetadataImage;

/// Partition records per request (a partition record is about 200 bytes).
const PARTITIONS_PER_REQUEST: usize = 10_000;

/// The records of `local`'s topics that `cluster` lacks, in groups of
/// whole topics of about [`PARTITIONS_PER_REQUEST`] partitions.
pub fn bootstrap_records(local: &MetadataImage, cluster: &ClusterImage, node_id: i32) -> Vec<Vec<MetadataRecord>> {
    let mut groups: Vec<Vec<MetadataRecord>> = Vec::new();
    let mut current: Vec<MetadataRecord> = Vec::new();
    for topic in local.topics.values().filter(|t| !cluster.topics.contains_key(&t.id)) {
        if !current.is_empty() && current.len() + topic.partition_shards.len() > PARTITIONS_PER_REQUEST {
            groups.push(std::mem::take(&mut current));
        }
        current.push(MetadataRecord::Topic { name: topic.name.clone(), topic_id: topic.id });
        for partition in 0..topic.partition_shards.len() as i32 {
            current.push(MetadataRecord::Partition {
                topic_id: topic.id,
                partition,
                replicas: vec![node_id],
                isr: vec![node_id],
                elr: vec![],
                leader: node_id,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        for (name, value) in &topic.configs {
            current.push(MetadataRecord::Config {
                resource: ConfigResource::Topic,
                resource_name: topic.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Brings `local`'s topics, and the producer ids it handed out (ids below
/// `next_producer_id`), into the metadata log unless it is bootstrapped
/// already; fails with the controller's reason.
pub async fn bootstrap(
    controller: &ControllerHandle,
    local: &MetadataImage,
    node_id: i32,
    next_producer_id: i64,
) -> Result<(), String> {
    let cluster = controller.published().image();
    if cluster.features.contains_key(BOOTSTRAP_FEATURE) {
        return Ok(());
    }
    let mut groups = bootstrap_records(local, &cluster, node_id);
    if next_producer_id > cluster.next_producer_id {
        groups.push(vec![MetadataRecord::ProducerIds { broker_id: node_id, broker_epoch: -1, next_producer_id }]);
    }
    let topics = local.topics.len();
    let requests = groups
        .into_iter()
        .map(|records| ControllerRequest::Bootstrap { records, complete: false })
        .chain(std::iter::once(ControllerRequest::Bootstrap { records: Vec::new(), complete: true }));
    for request in requests {
        match controller.ask(request).await.reply {
            ControllerReply::Done | ControllerReply::Refused(ControllerError::AlreadyBootstrapped) => {}
            ControllerReply::Refused(error) => return Err(format!("bootstrapping the metadata log: {error}")),
            other => return Err(format!("bootstrapping the metadata log: unexpected answer {other:?}")),
        }
    }
    if topics > 0 {
        tracing::info!(topics, "brought the data directory's topics into the metadata log");
    }
    Ok(())
}
