//! DescribeCluster (v0–2: the live brokers, or with v2's
//! `include_fenced_brokers` the fenced ones too, marked) and DescribeQuorum
//! (v0–2: the metadata quorum's leader, epoch, high watermark and each
//! voter's progress, as the active controller sees it; a node that does
//! not lead forwards the question, as Kafka's brokers do), which
//! `kafka-metadata-quorum describe --status/--replication` reads.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest, DescribeQuorumResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_replication::controller::requests::{ControllerReply, ControllerRequest};

use super::{authorized, Context};
use crate::cluster::controller_core::node_of_raft;

/// The metadata log's topic name in DescribeQuorum.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// DescribeCluster's endpoint type of a broker listener.
const BROKER_ENDPOINT: i8 = 1;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Handles DescribeCluster.
pub fn describe_cluster(context: &Context, request: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
    let shared = &context.shared;
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = BROKER_ENDPOINT;
    if version >= 1 && request.endpoint_type != BROKER_ENDPOINT {
        response.error_code = ResponseError::MismatchedEndpointType.code();
        response.error_message = Some(s(format!(
            "the request was sent to an endpoint of type BROKER, but asked for endpoint type {}",
            request.endpoint_type
        )));
        return response;
    }
    let cluster = shared.controller.published().image();
    let with_fenced = version >= 2 && request.include_fenced_brokers;
    response.cluster_id = s(shared.cluster_id.clone());
    response.brokers = cluster
        .brokers
        .values()
        .filter(|b| with_fenced || !b.fenced)
        .filter_map(|b| {
            let endpoint = b.endpoints.first()?;
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = BrokerId(b.broker_id);
            broker.host = s(endpoint.host.clone());
            broker.port = i32::from(endpoint.port);
            broker.rack = b.rack.clone().map(s);
            broker.is_fenced = b.fenced;
            Some(broker)
        })
        .collect();
    let leader = shared.controller.published().status().leader;
    let leader_live = cluster.brokers.get(&leader).is_some_and(|b| !b.fenced);
    response.controller_id = BrokerId(if leader_live { leader } else { shared.config.node_id });
    response.cluster_authorized_operations =
        authorized::when_asked(request.include_cluster_authorized_operations, authorized::CLUSTER);
    response
}

/// One partition's answer carrying only an error.
fn partition_error(index: i32, error: ResponseError, message: String, version: i16) -> PartitionData {
    let mut partition = PartitionData::default();
    partition.partition_index = index;
    partition.error_code = error.code();
    if version >= 2 {
        partition.error_message = Some(s(message));
    }
    partition.leader_id = BrokerId(-1);
    partition.leader_epoch = -1;
    partition.high_watermark = -1;
    partition
}

/// Handles DescribeQuorum.
pub async fn describe_quorum(
    context: &Context,
    request: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    let mut response = DescribeQuorumResponse::default();
    let asks_metadata = request.topics.iter().any(|t| t.topic_name.0.as_str() == METADATA_TOPIC);
    let report = if asks_metadata {
        match context.shared.controller.ask(ControllerRequest::DescribeQuorum).await.reply {
            ControllerReply::Quorum(report) => Ok(report),
            other => Err(format!("the active controller could not be asked: {other:?}")),
        }
    } else {
        Err(String::new())
    };
    for topic in request.topics {
        let mut data = TopicData::default();
        data.topic_name = topic.topic_name.clone();
        for asked in topic.partitions {
            let index = asked.partition_index;
            let partition = match &report {
                _ if topic.topic_name.0.as_str() != METADATA_TOPIC || index != 0 => partition_error(
                    index,
                    ResponseError::UnknownTopicOrPartition,
                    format!("only {METADATA_TOPIC}-0 has a quorum"),
                    version,
                ),
                Err(message) => partition_error(index, ResponseError::NotLeaderOrFollower, message.clone(), version),
                Ok(report) => {
                    let mut p = PartitionData::default();
                    p.partition_index = 0;
                    p.leader_id = BrokerId(node_of_raft(report.leader));
                    p.leader_epoch = i32::try_from(report.term).unwrap_or(i32::MAX);
                    p.high_watermark = report.high_watermark as i64;
                    p.current_voters = report
                        .voters
                        .iter()
                        .map(|v| {
                            let mut replica = ReplicaState::default();
                            replica.replica_id = BrokerId(node_of_raft(v.id));
                            replica.log_end_offset = v.log_end as i64;
                            replica.last_fetch_timestamp = v.last_fetch_ms;
                            replica.last_caught_up_timestamp = v.last_caught_up_ms;
                            replica
                        })
                        .collect();
                    p
                }
            };
            data.partitions.push(partition);
        }
        response.topics.push(data);
    }
    if version >= 2 {
        response.nodes = context
            .shared
            .config
            .voters()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.port != 0)
            .map(|v| {
                let mut listener = Listener::default();
                listener.name = s("CONTROLLER");
                listener.host = s(v.host);
                listener.port = v.port;
                let mut node = Node::default();
                node.node_id = BrokerId(v.id);
                node.listeners = vec![listener];
                node
            })
            .collect();
    }
    response
}
