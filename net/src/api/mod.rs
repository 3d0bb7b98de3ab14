//! The Kafka APIs this broker answers, the versions it advertises (each
//! fully working at every version), and the dispatch from a decoded request
//! to its handler. A handler decodes, calls the service that owns the work
//! (a partition on its shard, a coordinator service), and encodes; typed
//! errors become Kafka error codes through `crate::errors`.
//! Runs on the connection's shard.

mod admin;
mod authorized;
mod cluster_info;
mod create_partitions;
mod describe_configs;
mod describe_topic_partitions;
mod elect_leaders;
mod fetch;
pub mod fetch_encode;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
#[cfg(test)]
mod test_image;
mod transactions;

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;
use shardline_engine::runtime::mesh::Mesh;

use crate::shard::{BrokerShared, ShardState};

pub use admin::create_topic;

/// What a handler can reach: broker-wide state, this shard's partitions and
/// the mesh to the others.
pub struct Context {
    /// Configuration and topics.
    pub shared: Arc<BrokerShared>,
    /// This shard's state.
    pub state: Rc<ShardState>,
    /// Every shard.
    pub mesh: Mesh<ShardState>,
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

/// (API, min version, max version) advertised in ApiVersions.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
];

/// Joins the answers of several coordinators: everything they listed, and
/// the first error of one that could not answer.
pub(crate) fn gather<T>(answers: Vec<Result<Vec<T>, ResponseError>>) -> (Vec<T>, Option<ResponseError>) {
    let mut listed = Vec::new();
    let mut error = None;
    for answer in answers {
        match answer {
            Ok(items) => listed.extend(items),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (listed, error)
}

/// Whether `version` of `key` is advertised.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED.iter().any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

fn api_versions_body(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    response
}

/// The v0-layout UNSUPPORTED_VERSION answer to a too-new ApiVersions
/// request, with the API list (KIP-511), as a whole frame.
pub fn unsupported_api_versions(correlation_id: i32) -> BytesMut {
    let body = api_versions_body(ResponseError::UnsupportedVersion.code());
    let mut out = BytesMut::with_capacity(128);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if body.encode(&mut out, 0).is_err() {
        out.truncate(8);
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// What to do after handling a request.
pub enum Answer {
    /// Send this response.
    Respond(Box<ResponseKind>),
    /// Send this fetch response, its records gathered from where they lie.
    Fetch(Box<fetch_encode::FetchReply>),
    /// Send nothing (acks=0 produce that succeeded).
    Silent,
    /// Close the connection (acks=0 produce that failed: as Kafka does, so
    /// the producer notices and refreshes its metadata).
    Close,
}

/// Handles one decoded request. `frame` is the frame it was decoded from:
/// Produce takes its records back out of it (see [`produce::handle`]), so
/// the caller keeps no other view of it.
pub async fn handle(context: &Context, header: &RequestHeader, request: RequestKind, frame: Bytes) -> Answer {
    let version = header.request_api_version;
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions_body(0)),
        RequestKind::Metadata(request) => ResponseKind::Metadata(metadata::handle(context, request, version).await),
        RequestKind::CreateTopics(request) => {
            ResponseKind::CreateTopics(admin::create_topics(context, request, version).await)
        }
        RequestKind::DeleteTopics(request) => {
            ResponseKind::DeleteTopics(admin::delete_topics(context, request, version).await)
        }
        RequestKind::Produce(request) => return produce::handle(context, request, version, frame).await,
        RequestKind::Fetch(request) => return Answer::Fetch(Box::new(fetch::handle(context, request, version).await)),
        RequestKind::DescribeConfigs(request) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(context, request, version))
        }
        RequestKind::ListOffsets(request) => {
            ResponseKind::ListOffsets(list_offsets::handle(context, request, version).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(context, r, version).await)
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(groups::join_group(context, header, r, version).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(context, r, version).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(context, r, version).await),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(context, r, version).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(groups::offset_commit(context, r, version).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(groups::offset_fetch(context, r, version).await),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(groups::offset_delete(context, r, version).await),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(context, r, version).await),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(context, r, version).await)
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete_groups(context, r, version).await),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ResponseKind::ConsumerGroupHeartbeat(groups::consumer_group_heartbeat(context, header, r, version).await)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe(context, r, version).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(context, r, version).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions(context, r, version).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets(context, r, version).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(transactions::end_txn(context, r, version).await),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(context, r, version).await)
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(transactions::list_transactions(context, r, version).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(transactions::describe_transactions(context, r, version).await)
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(transactions::describe_producers(context, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(context, r, version).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster_info::describe_cluster(context, r, version))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(cluster_info::describe_quorum(context, r, version).await)
        }
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(elect_leaders::handle(context, r, version).await),
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(context, r))
        }
        other => {
            // Unreachable: `is_supported` gates every key before decoding.
            tracing::error!(?other, "request for an API that is not advertised");
            return Answer::Close;
        }
    };
    Answer::Respond(Box::new(response))
}
