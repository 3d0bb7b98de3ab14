//! DescribeTopicPartitions (v0, KIP-966): topics with each partition's
//! leader, leader epoch, replicas, ISR, eligible leader replicas and
//! offline replicas from the committed metadata image, in name order and
//! a page at a time (at most [`MAX_PARTITIONS_PER_ANSWER`] partitions, or
//! the request's limit when lower, with a cursor to the next one). The
//! Java admin client's `describeTopics` and `kafka-topics --describe` read
//! it. Runs on the connection's shard, against the image it last received.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_replication::metadata::image::{MetadataImage, PartitionImage, TopicImage, NO_LEADER};
use uuid::Uuid;

use super::{authorized, Context};
use crate::topics::{is_internal, validate_topic_name};

/// The most partitions one answer lists (Kafka's
/// `max.request.partition.size.limit` default).
pub const MAX_PARTITIONS_PER_ANSWER: i32 = 2000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

/// Handles DescribeTopicPartitions against the shard's committed image.
pub fn handle(context: &Context, request: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let image = context.shared.controller.published().image();
    describe(&image, request)
}

/// The answer to `request` from `image`, as Kafka's brokers give it.
pub fn describe(image: &MetadataImage, request: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let mut response = DescribeTopicPartitionsResponse::default();
    let all_topics = request.topics.is_empty();
    let cursor = request.cursor.as_ref().map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let from = cursor.as_ref().map_or("", |(name, _)| name.as_str());
    let names: BTreeSet<String> = if all_topics {
        image.topic_ids.keys().filter(|name| name.as_str() >= from).cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.0.to_string()).filter(|name| name.as_str() >= from).collect()
    };
    let cursor_is_valid = match &cursor {
        None => true,
        // The cursor's topic is one of those asked for, and its index a
        // partition index.
        Some((name, index)) => *index >= 0 && (all_topics || names.contains(name)),
    };
    if !cursor_is_valid {
        response.topics =
            request.topics.iter().map(|t| error_topic(t.name.0.as_str(), ResponseError::InvalidRequest)).collect();
        return response;
    }
    // At least one partition an answer, so a client following the cursor
    // always moves on (as Kafka's brokers answer a limit of 0 or less).
    let mut remaining = MAX_PARTITIONS_PER_ANSWER.min(request.response_partition_limit).max(1);
    for name in names {
        if remaining == 0 {
            // Every partition of the topics before is listed: the next
            // page starts at this topic.
            response.next_cursor = Some(cursor_at(&name, 0));
            break;
        }
        let start = match &cursor {
            Some((cursor_topic, index)) if *cursor_topic == name => *index,
            _ => 0,
        };
        let Some(topic) = image.topic_ids.get(&name).and_then(|id| image.topics.get(id)) else {
            if !all_topics {
                let error = match validate_topic_name(&name) {
                    Ok(()) => ResponseError::UnknownTopicOrPartition,
                    Err(_) => ResponseError::InvalidTopicException,
                };
                response.topics.push(error_topic(&name, error));
            }
            continue;
        };
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let end = count.min(start.saturating_add(remaining));
        response.topics.push(topic_entry(image, topic, start, end));
        if end < count {
            response.next_cursor = Some(cursor_at(&name, end));
            break;
        }
        remaining -= end.saturating_sub(start).max(0);
    }
    response
}

fn cursor_at(name: &str, partition_index: i32) -> Cursor {
    let mut cursor = Cursor::default();
    cursor.topic_name = topic_name(name);
    cursor.partition_index = partition_index;
    cursor
}

fn error_topic(name: &str, error: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    let mut entry = DescribeTopicPartitionsResponseTopic::default();
    entry.error_code = error.code();
    entry.name = Some(topic_name(name));
    entry.topic_id = Uuid::nil();
    entry.is_internal = is_internal(name);
    entry.topic_authorized_operations = authorized::NOT_REQUESTED;
    entry
}

/// `topic` with its partitions `start..end`.
fn topic_entry(
    image: &MetadataImage,
    topic: &TopicImage,
    start: i32,
    end: i32,
) -> DescribeTopicPartitionsResponseTopic {
    let mut entry = DescribeTopicPartitionsResponseTopic::default();
    entry.name = Some(topic_name(&topic.name));
    entry.topic_id = topic.topic_id;
    entry.is_internal = is_internal(&topic.name);
    // No authorizer: every operation on a topic is permitted.
    entry.topic_authorized_operations = authorized::TOPIC;
    entry.partitions = (start..end)
        .filter_map(|index| {
            let partition = topic.partitions.get(usize::try_from(index).ok()?)?;
            Some(partition_entry(image, index, partition))
        })
        .collect();
    entry
}

fn partition_entry(
    image: &MetadataImage,
    index: i32,
    partition: &PartitionImage,
) -> DescribeTopicPartitionsResponsePartition {
    let registered = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.endpoints.is_empty());
    let offline: Vec<i32> =
        partition.replicas.iter().copied().filter(|id| image.brokers.get(id).is_none_or(|b| b.fenced)).collect();
    let mut entry = DescribeTopicPartitionsResponsePartition::default();
    entry.partition_index = index;
    entry.leader_id = BrokerId(if partition.leader != NO_LEADER && registered(&partition.leader) {
        partition.leader
    } else {
        NO_LEADER
    });
    entry.leader_epoch = partition.leader_epoch;
    entry.replica_nodes = broker_ids(&partition.replicas);
    entry.isr_nodes = broker_ids(&partition.isr);
    entry.eligible_leader_replicas = Some(broker_ids(&partition.elr));
    // The image keeps no last known ELR (it is only set once every
    // eligible replica is gone, by unclean recovery, which is not built).
    entry.last_known_elr = Some(Vec::new());
    entry.offline_replicas = broker_ids(&offline);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_image::image;
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor as RequestCursor, TopicRequest};

    fn request(topics: &[&str], limit: i32, cursor: Option<(&str, i32)>) -> DescribeTopicPartitionsRequest {
        let mut request = DescribeTopicPartitionsRequest::default();
        request.topics = topics
            .iter()
            .map(|name| {
                let mut t = TopicRequest::default();
                t.name = topic_name(name);
                t
            })
            .collect();
        request.response_partition_limit = limit;
        request.cursor = cursor.map(|(name, index)| {
            let mut c = RequestCursor::default();
            c.topic_name = topic_name(name);
            c.partition_index = index;
            c
        });
        request
    }

    /// (topic, error, partition indexes) of each answered topic, and the cursor.
    type Shape = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

    fn shape(response: &DescribeTopicPartitionsResponse) -> Shape {
        let topics = response
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                (name, t.error_code, t.partitions.iter().map(|p| p.partition_index).collect())
            })
            .collect();
        let cursor = response.next_cursor.as_ref().map(|c| (c.topic_name.0.to_string(), c.partition_index));
        (topics, cursor)
    }

    #[test]
    fn every_topic_in_name_order_with_leaders_replicas_and_offline_replicas() {
        let response = describe(&image(), request(&[], 2000, None));
        assert_eq!(shape(&response), (vec![("a".into(), 0, vec![0, 1, 2]), ("b".into(), 0, vec![0, 1])], None));
        let a = &response.topics[0];
        assert_eq!(a.topic_id, Uuid::from_u128(u128::from(b'a')));
        assert_eq!(a.topic_authorized_operations, authorized::TOPIC);
        let leaders: Vec<i32> = a.partitions.iter().map(|p| p.leader_id.0).collect();
        assert_eq!(leaders, vec![1, 2, NO_LEADER]);
        let offline: Vec<Vec<BrokerId>> = a.partitions.iter().map(|p| p.offline_replicas.clone()).collect();
        assert_eq!(offline, vec![vec![], vec![BrokerId(2)], vec![BrokerId(2)]]);
        assert!(a.partitions.iter().all(|p| p.leader_epoch == 3 && p.eligible_leader_replicas == Some(vec![])));
    }

    #[test]
    fn pages_follow_the_cursor_until_every_partition_is_listed() {
        let image = image();
        let first = describe(&image, request(&[], 2, None));
        assert_eq!(shape(&first), (vec![("a".into(), 0, vec![0, 1])], Some(("a".into(), 2))));
        let second = describe(&image, request(&[], 2, Some(("a", 2))));
        // One partition of "a" fits, then "b" starts the next page.
        assert_eq!(shape(&second), (vec![("a".into(), 0, vec![2]), ("b".into(), 0, vec![0])], Some(("b".into(), 1))));
        let third = describe(&image, request(&[], 2, Some(("b", 1))));
        assert_eq!(shape(&third), (vec![("b".into(), 0, vec![1])], None));
        let exact = describe(&image, request(&[], 3, None));
        assert_eq!(shape(&exact), (vec![("a".into(), 0, vec![0, 1, 2])], Some(("b".into(), 0))));
        for limit in [0, -5] {
            let one = describe(&image, request(&[], limit, None));
            assert_eq!(shape(&one), (vec![("a".into(), 0, vec![0])], Some(("a".into(), 1))), "limit {limit}");
        }
    }

    #[test]
    fn named_topics_sorted_with_unknown_and_invalid_ones_as_errors() {
        let response = describe(&image(), request(&["b", "zz", "a", "b", "bad name"], 2000, None));
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let invalid = ResponseError::InvalidTopicException.code();
        assert_eq!(
            shape(&response).0,
            vec![
                ("a".into(), 0, vec![0, 1, 2]),
                ("b".into(), 0, vec![0, 1]),
                ("bad name".into(), invalid, vec![]),
                ("zz".into(), unknown, vec![]),
            ]
        );
        assert_eq!(response.topics[3].topic_id, Uuid::nil());
    }

    #[test]
    fn a_cursor_outside_the_named_topics_is_an_invalid_request() {
        let response = describe(&image(), request(&["a"], 2000, Some(("b", 0))));
        assert_eq!(shape(&response), (vec![("a".into(), ResponseError::InvalidRequest.code(), vec![])], None));
        let negative = describe(&image(), request(&["a"], 2000, Some(("a", -1))));
        assert_eq!(negative.topics[0].error_code, ResponseError::InvalidRequest.code());
    }
}
