//! Incremental fetch sessions (KIP-227) on the wire: a session is created
//! at epoch 0, incremental requests return only partitions with news,
//! epochs are checked, forgotten partitions leave the session, and epoch -1
//! closes it.

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::simple_batch;
use shardline_tests::{Broker, RawClient};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn fetch(
    client: &mut RawClient,
    session_id: i32,
    epoch: i32,
    partitions: &[(i32, i64)],
    forget: &[i32],
) -> FetchResponse {
    let mut topic = FetchTopic::default();
    topic.topic = name("s");
    topic.partitions = partitions
        .iter()
        .map(|&(partition, offset)| {
            let mut p = FetchPartition::default();
            p.partition = partition;
            p.fetch_offset = offset;
            p.partition_max_bytes = 1 << 20;
            p
        })
        .collect();
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.min_bytes = 0;
    request.max_bytes = 50 << 20;
    request.session_id = session_id;
    request.session_epoch = epoch;
    request.topics = if partitions.is_empty() { vec![] } else { vec![topic] };
    if !forget.is_empty() {
        let mut forgotten = ForgottenTopic::default();
        forgotten.topic = name("s");
        forgotten.partitions = forget.to_vec();
        request.forgotten_topics_data = vec![forgotten];
    }
    client.call(ApiKey::Fetch, 12, &request)
}

fn produce(client: &mut RawClient, partition: i32) {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(simple_batch(1, 1, 10)));
    let mut t = TopicProduceData::default();
    t.name = name("s");
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

fn partitions_in(response: &FetchResponse) -> Vec<(i32, bool)> {
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| (p.partition_index, p.records.as_ref().is_some_and(|r| !r.is_empty())))
        })
        .collect()
}

#[test]
fn sessions_return_only_partitions_with_news() {
    let broker = Broker::start(&["--shards", "2", "--set", "num_partitions=3"]);
    let mut client = RawClient::connect(&broker.address);
    let mut metadata = MetadataRequest::default();
    let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(name("s"));
    metadata.topics = Some(vec![wanted]);
    metadata.allow_auto_topic_creation = true;
    let created: MetadataResponse = client.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(created.topics[0].partitions.len(), 3, "auto-created with num_partitions");
    produce(&mut client, 0);
    let created = fetch(&mut client, 0, 0, &[(0, 0), (1, 0), (2, 0)], &[]);
    assert_eq!(created.error_code, 0);
    let id = created.session_id;
    assert!(id > 0, "a session was created");
    assert_eq!(partitions_in(&created), vec![(0, true), (1, false), (2, false)], "the first response is full");

    let quiet = fetch(&mut client, id, 1, &[(0, 1)], &[]);
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert!(partitions_in(&quiet).is_empty(), "nothing new: {:?}", partitions_in(&quiet));

    produce(&mut client, 2);
    let news = fetch(&mut client, id, 2, &[], &[]);
    assert_eq!(partitions_in(&news), vec![(2, true)], "only the partition with new data");

    assert_eq!(fetch(&mut client, id, 2, &[], &[]).error_code, ResponseError::InvalidFetchSessionEpoch.code());
    assert_eq!(fetch(&mut client, id + 7777, 1, &[], &[]).error_code, ResponseError::FetchSessionIdNotFound.code());

    let forgot = fetch(&mut client, id, 3, &[], &[2]);
    assert_eq!(forgot.error_code, 0);
    produce(&mut client, 2);
    let after_forget = fetch(&mut client, id, 4, &[], &[]);
    assert!(partitions_in(&after_forget).is_empty(), "forgotten partition 2 is no longer fetched");

    let closed = fetch(&mut client, id, -1, &[(1, 0)], &[]);
    assert_eq!((closed.error_code, closed.session_id), (0, 0));
    assert_eq!(partitions_in(&closed), vec![(1, false)]);
    assert_eq!(
        fetch(&mut client, id, 5, &[], &[]).error_code,
        ResponseError::FetchSessionIdNotFound.code(),
        "epoch -1 closed it"
    );
}
