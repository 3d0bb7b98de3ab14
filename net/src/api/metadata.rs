//! Metadata (v0–12): the live brokers, cluster id, controller, topics
//! with each partition's leader, leader epoch, replicas, ISR and offline
//! replicas from the committed metadata image, topic ids, and auto topic
//! creation.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use shardline_replication::metadata::image::{MetadataImage as ClusterImage, NO_LEADER};

use super::{authorized, Context};
use crate::topics::{is_internal, validate_topic_name, TopicInfo};

/// The live (unfenced) brokers of `cluster`: id, host, port, rack.
pub fn live_brokers(cluster: &ClusterImage) -> Vec<(i32, String, i32, Option<String>)> {
    cluster
        .live_brokers()
        .filter_map(|b| {
            let endpoint = b.endpoints.first()?;
            Some((b.broker_id, endpoint.host.clone(), i32::from(endpoint.port), b.rack.clone()))
        })
        .collect()
}

fn topic_entry(context: &Context, topic: &TopicInfo, version: i16) -> MetadataResponseTopic {
    let cluster = context.shared.controller.published().image();
    let state = cluster.topics.get(&topic.id);
    let live = |b: &i32| cluster.brokers.get(b).is_some_and(|r| !r.fenced);
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    if version >= 10 {
        entry.topic_id = topic.id;
    }
    entry.topic_authorized_operations = authorized::NOT_REQUESTED;
    if version >= 1 {
        entry.is_internal = is_internal(&topic.name);
    }
    entry.partitions = (0..topic.partition_shards.len() as i32)
        .map(|index| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = index;
            let Some(partition) = state.and_then(|t| t.partitions.get(index as usize)) else {
                p.error_code = ResponseError::LeaderNotAvailable.code();
                p.leader_id = BrokerId(-1);
                return p;
            };
            if partition.leader == NO_LEADER {
                p.error_code = ResponseError::LeaderNotAvailable.code();
            }
            p.leader_id = BrokerId(partition.leader);
            if version >= 7 {
                p.leader_epoch = partition.leader_epoch;
            }
            p.replica_nodes = partition.replicas.iter().map(|r| BrokerId(*r)).collect();
            p.isr_nodes = partition.isr.iter().map(|r| BrokerId(*r)).collect();
            if version >= 5 {
                p.offline_replicas = partition.replicas.iter().filter(|r| !live(r)).map(|r| BrokerId(*r)).collect();
            }
            p
        })
        .collect();
    entry
}

fn error_entry(name: Option<String>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    entry.topic_id = id;
    entry.error_code = error.code();
    entry.topic_authorized_operations = authorized::NOT_REQUESTED;
    entry
}

/// Handles a Metadata request; v8+ reports authorized operations when asked
/// (the cluster's only up to v10, as the field was removed in v11).
pub async fn handle(context: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    let topic_operations = version >= 8 && request.include_topic_authorized_operations;
    let cluster_operations = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
    let mut response = describe(context, request, version).await;
    response.cluster_authorized_operations = authorized::when_asked(cluster_operations, authorized::CLUSTER);
    for topic in response.topics.iter_mut().filter(|t| t.error_code == 0) {
        topic.topic_authorized_operations = authorized::when_asked(topic_operations, authorized::TOPIC);
    }
    response
}

async fn describe(context: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    let shared = &context.shared;
    let mut response = MetadataResponse::default();
    let cluster = shared.controller.published().image();
    let mut brokers = live_brokers(&cluster);
    if !brokers.iter().any(|b| b.0 == shared.config.node_id) {
        // Serving, so unfenced: the image on its way here says so.
        let rack = (!shared.config.broker_rack.is_empty()).then(|| shared.config.broker_rack.clone());
        brokers.push((shared.config.node_id, shared.advertised.0.clone(), shared.advertised.1, rack));
    }
    response.brokers = brokers
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(id);
            broker.host = StrBytes::from_string(host);
            broker.port = port;
            // Encoded from v1 (the field's first version); v0 leaves it out.
            broker.rack = rack.map(StrBytes::from_string);
            broker
        })
        .collect();
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(shared.cluster_id.clone()));
    }
    if version >= 1 {
        // As Kafka's KRaft brokers: a live broker, which forwards
        // controller requests to the active controller.
        let leader = shared.controller.published().status().leader;
        let live = response.brokers.iter().any(|b| b.node_id.0 == leader);
        response.controller_id = BrokerId(if live { leader } else { shared.config.node_id });
    }
    response.cluster_authorized_operations = authorized::NOT_REQUESTED;
    // v0: an empty list means all topics; v1+: null means all.
    let all = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    if all {
        let image = shared.topics.image();
        response.topics = image.topics.values().map(|t| topic_entry(context, t, version)).collect();
        return response;
    }
    let auto_create = shared.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    for requested in request.topics.unwrap_or_default() {
        // As Kafka: a topic id, when given, wins over the name (the Java
        // client sends "" as the name with an id); ids are accepted from v12.
        let by_id = !requested.topic_id.is_nil() || requested.name.is_none();
        let entry = if by_id && version < 12 {
            error_entry(requested.name.map(|n| n.0.to_string()), requested.topic_id, ResponseError::InvalidRequest)
        } else if by_id {
            match shared.topics.image().by_id(requested.topic_id) {
                Some(topic) => topic_entry(context, topic, version),
                None => error_entry(None, requested.topic_id, ResponseError::UnknownTopicId),
            }
        } else {
            let name = requested.name.map(|n| n.0.to_string()).unwrap_or_default();
            named_topic(context, name, auto_create, version).await
        };
        response.topics.push(entry);
    }
    response
}

async fn named_topic(context: &Context, name: String, auto_create: bool, version: i16) -> MetadataResponseTopic {
    if let Some(topic) = context.shared.topics.image().topics.get(&name) {
        return topic_entry(context, topic, version);
    }
    if validate_topic_name(&name).is_err() {
        return error_entry(Some(name), Uuid::nil(), ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return error_entry(Some(name), Uuid::nil(), ResponseError::UnknownTopicOrPartition);
    }
    let partitions = context.shared.config.num_partitions;
    match super::create_topic(context, &name, partitions, Default::default()).await {
        Ok(topic) => topic_entry(context, &topic, version),
        Err((ResponseError::TopicAlreadyExists, _)) => match context.shared.topics.image().topics.get(&name) {
            Some(topic) => topic_entry(context, topic, version),
            None => error_entry(Some(name), Uuid::nil(), ResponseError::LeaderNotAvailable),
        },
        Err((error, message)) => {
            tracing::warn!(topic = %name, %message, "auto-creating topic failed");
            error_entry(Some(name), Uuid::nil(), error)
        }
    }
}
