//! ElectLeaders (v0–2), which `kafka-leader-election` and the admin
//! client's `electLeaders` send: a preferred election (v0, or election
//! type 0) moves a partition's leadership to its first replica when that
//! one is live and in the ISR; an unclean one (type 1) gives a partition
//! without a leader one from its live replicas. The active controller
//! decides, a thousand partitions a request (asked again while the quorum
//! has no leader, within the request's timeout); the answer waits until
//! this broker applied the changes. With no partitions named, every partition
//! is tried and those already led as asked are left out of the answer, as
//! Kafka does. Runs on the connection's shard.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest};

use super::admin::{controller_refusal, until_applied, Refusal};
use super::Context;

/// Partitions per request to the controller (its batches are bounded).
const PARTITIONS_PER_ASK: usize = 1000;
/// The wait before asking again while the quorum elects a leader.
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// ElectLeaders' election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

type Outcome = Result<(), Refusal>;

/// Handles ElectLeaders.
pub async fn handle(context: &Context, request: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    let election_type = if version >= 1 { request.election_type } else { PREFERRED };
    let every_partition = request.topic_partitions.is_none();
    let asked: Vec<(String, i32)> = match request.topic_partitions {
        Some(topics) => {
            topics.into_iter().flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.0.to_string(), p))).collect()
        }
        None => {
            let image = context.shared.controller.published().image();
            image
                .topics
                .values()
                .flat_map(|t| (0..t.partitions.len() as i32).map(move |p| (t.name.clone(), p)))
                .collect()
        }
    };
    let outcomes: Vec<((String, i32), Outcome)> = if election_type != PREFERRED && election_type != UNCLEAN {
        let refusal = (ResponseError::InvalidRequest, format!("unknown election type {election_type}"));
        if version >= 1 {
            response.error_code = ResponseError::InvalidRequest.code();
        }
        asked.into_iter().map(|partition| (partition, Err(refusal.clone()))).collect()
    } else {
        let deadline_ms = context.state.clock.now_ms() + i64::from(request.timeout_ms.clamp(1_000, 300_000));
        elect(context, election_type == PREFERRED, asked, deadline_ms).await
    };
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    for ((topic, partition), outcome) in outcomes {
        let not_needed = matches!(&outcome, Err((ResponseError::ElectionNotNeeded, _)));
        if every_partition && not_needed {
            continue;
        }
        let mut result = PartitionResult::default();
        result.partition_id = partition;
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        let at = *position.entry(topic.clone()).or_insert_with(|| {
            let mut entry = ReplicaElectionResult::default();
            entry.topic = TopicName(StrBytes::from_string(topic.clone()));
            by_topic.push(entry);
            by_topic.len() - 1
        });
        by_topic[at].partition_result.push(result);
    }
    response.replica_election_results = by_topic;
    response
}

/// Each partition's outcome, decided by the controller a chunk at a time;
/// while the quorum has no leader (an election), a chunk is asked again
/// until `deadline_ms`, as Kafka's brokers retry a forwarded request.
async fn elect(
    context: &Context,
    preferred: bool,
    asked: Vec<(String, i32)>,
    deadline_ms: i64,
) -> Vec<((String, i32), Outcome)> {
    let clock = &context.state.clock;
    let mut outcomes = Vec::with_capacity(asked.len());
    for chunk in asked.chunks(PARTITIONS_PER_ASK) {
        let answer = loop {
            let request = ControllerRequest::ElectLeaders { preferred, partitions: chunk.to_vec() };
            let answer = context.shared.controller.ask(request).await;
            let no_leader = matches!(answer.reply, ControllerReply::Refused(ControllerError::NotController { .. }));
            if !no_leader || clock.now_ms() >= deadline_ms {
                break answer;
            }
            clock.sleep(RETRY_BACKOFF).await;
        };
        let decided: BTreeMap<(String, i32), Result<(), ControllerError>> = match answer.reply {
            ControllerReply::Elected(results) => results.into_iter().collect(),
            ControllerReply::Refused(error) => chunk.iter().map(|p| (p.clone(), Err(error.clone()))).collect(),
            other => {
                let error = ControllerError::NotController { leader: 0 };
                tracing::error!(?other, "unexpected controller answer to ElectLeaders");
                chunk.iter().map(|p| (p.clone(), Err(error.clone()))).collect()
            }
        };
        let applied =
            if decided.values().any(Result::is_ok) { until_applied(context, answer.offset).await } else { Ok(()) };
        for partition in chunk {
            // A partition named twice was decided once; both get its outcome.
            let outcome = match decided.get(partition).cloned() {
                Some(Ok(())) => applied.clone(),
                Some(Err(error)) => Err(refusal(&error)),
                None => Err((ResponseError::UnknownServerError, "the controller did not decide it".into())),
            };
            outcomes.push((partition.clone(), outcome));
        }
    }
    outcomes
}

/// Kafka's messages for an election's refusals.
fn refusal(error: &ControllerError) -> Refusal {
    let (code, message) = controller_refusal(error);
    let message = match error {
        ControllerError::ElectionNotNeeded => "Leader election not needed for topic partition.".to_string(),
        ControllerError::PreferredLeaderNotAvailable => {
            "The preferred leader is not live or not in the ISR.".to_string()
        }
        ControllerError::EligibleLeadersNotAvailable => "No live replica can be elected.".to_string(),
        _ => message,
    };
    (code, message)
}
