//! Errors are answers: each bad request gets Kafka's error code, checked on
//! the wire with a raw client (no client library smoothing it over).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::simple_batch;
use shardline_tests::{Broker, RawClient};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(
    client: &mut RawClient,
    topic: &str,
    partitions: i32,
    replication: i16,
    validate_only: bool,
    configs: &[(&str, &str)],
) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = replication;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = 10_000;
    request.validate_only = validate_only;
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

fn produce(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].clone()
}

use kafka_protocol::messages::produce_response::PartitionProduceResponse;

fn fetch(
    client: &mut RawClient,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.topics = vec![t];
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    response.responses[0].partitions[0].clone()
}

fn list_offset(client: &mut RawClient, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let p = client.list_offset(topic, 0, timestamp, 0);
    (p.error_code, p.timestamp, p.offset)
}

#[test]
fn admin_errors() {
    let broker = Broker::start(&["--set", "auto_create_topics_enable=false"]);
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(create(&mut client, "t", 2, 1, true, &[]), 0, "validate_only succeeds");
    let mut metadata = MetadataRequest::default();
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(name("t"));
    metadata.topics = Some(vec![wanted]);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(
        response.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code(),
        "validate_only created nothing"
    );
    assert_eq!(create(&mut client, "t", 2, 1, false, &[]), 0);
    assert_eq!(create(&mut client, "t", 2, 1, false, &[]), ResponseError::TopicAlreadyExists.code());
    assert_eq!(create(&mut client, "p0", 0, 1, false, &[]), ResponseError::InvalidPartitions.code());
    assert_eq!(create(&mut client, "rf2", 1, 2, false, &[]), ResponseError::InvalidReplicationFactor.code());
    assert_eq!(create(&mut client, "bad name", 1, 1, false, &[]), ResponseError::InvalidTopicException.code());
    assert_eq!(
        create(&mut client, "cfg", 1, 1, false, &[("no.such.config", "1")]),
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        create(&mut client, "cfg", 1, 1, false, &[("retention.ms", "abc")]),
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(create(&mut client, "cfg", 1, 1, false, &[("retention.ms", "60000")]), 0);
    assert_eq!(
        create(&mut client, "cfg", 1, 3, false, &[]),
        ResponseError::TopicAlreadyExists.code(),
        "existence is checked first"
    );
    assert_eq!(
        create(&mut client, "isr", 1, 1, false, &[("min.insync.replicas", "0")]),
        ResponseError::InvalidConfig.code()
    );
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(response.topics[0].error_code, 0);
    assert_ne!(response.topics[0].topic_id, uuid::Uuid::nil(), "topic ids are returned");
    let mut invalid = MetadataRequestTopic::default();
    invalid.name = Some(name("no/slash"));
    let mut bad_metadata = MetadataRequest::default();
    bad_metadata.topics = Some(vec![invalid]);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &bad_metadata);
    assert_eq!(response.topics[0].error_code, ResponseError::InvalidTopicException.code());
    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![name("missing")];
    let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &delete);
    assert_eq!(response.responses[0].error_code, ResponseError::UnknownTopicOrPartition.code());
}

#[test]
fn produce_and_fetch_errors() {
    let broker = Broker::start(&["--set", "auto_create_topics_enable=false"]);
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(create(&mut client, "data", 1, 1, false, &[("max.message.bytes", "2000")]), 0);
    let batch = simple_batch(1_000, 3, 10);
    assert_eq!(
        produce(&mut client, "nope", 0, -1, batch.clone()).error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        produce(&mut client, "data", 7, -1, batch.clone()).error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(produce(&mut client, "data", 0, 2, batch.clone()).error_code, ResponseError::InvalidRequiredAcks.code());
    let mut corrupt = batch.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(produce(&mut client, "data", 0, 1, corrupt).error_code, ResponseError::CorruptMessage.code());
    let big = simple_batch(1_000, 1, 5_000);
    assert_eq!(produce(&mut client, "data", 0, 1, big).error_code, ResponseError::MessageTooLarge.code());
    assert_eq!(create(&mut client, "isr2", 1, 1, false, &[("min.insync.replicas", "2")]), 0);
    assert_eq!(
        produce(&mut client, "isr2", 0, -1, batch.clone()).error_code,
        ResponseError::NotEnoughReplicas.code(),
        "one replica cannot meet min.insync.replicas=2"
    );
    assert_eq!(produce(&mut client, "isr2", 0, 1, batch.clone()).error_code, 0, "acks=1 does not need the ISR");
    let marker = shardline_engine::partition::producer_state::marker_batch(5, 0, true, 0, 1_000);
    assert_eq!(
        produce(&mut client, "data", 0, -1, marker).error_code,
        ResponseError::InvalidRecord.code(),
        "clients may not write control batches"
    );
    let ok = produce(&mut client, "data", 0, -1, batch.clone());
    assert_eq!((ok.error_code, ok.base_offset), (0, 0));
    let ok = produce(&mut client, "data", 0, 1, batch);
    assert_eq!((ok.error_code, ok.base_offset), (0, 3));
    // acks=1 answers once written; the high watermark follows the group
    // commit that the append requested, moments later.
    let mut fetched = fetch(&mut client, "data", 0, 0);
    for _ in 0..100 {
        if fetched.high_watermark == 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        fetched = fetch(&mut client, "data", 0, 0);
    }
    assert_eq!(fetched.error_code, 0);
    assert_eq!(fetched.high_watermark, 6);
    assert!(fetched.records.as_ref().is_some_and(|r| !r.is_empty()));
    assert_eq!(fetch(&mut client, "data", 7, 0).error_code, ResponseError::OffsetOutOfRange.code());
    let at_end = fetch(&mut client, "data", 6, 100);
    assert_eq!(at_end.error_code, 0, "fetching at the log end is not an error");
    assert!(at_end.records.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(list_offset(&mut client, "data", -2), (0, -1, 0));
    assert_eq!(list_offset(&mut client, "data", -1), (0, -1, 6));
    assert_eq!(list_offset(&mut client, "data", 1_001), (0, 1_001, 1));
    assert_eq!(list_offset(&mut client, "data", -3).0, 0);
    assert_eq!(list_offset(&mut client, "data", 99_999), (0, -1, -1));
}

#[test]
fn internal_topics_are_the_coordinators_own() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.address);
    // FindCoordinator creates both internal topics.
    for key_type in [0i8, 1] {
        let mut find = FindCoordinatorRequest::default();
        find.key_type = key_type;
        find.coordinator_keys = vec![StrBytes::from_static_str("k")];
        let response: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &find);
        assert_eq!(response.coordinators[0].error_code, 0);
    }
    for topic in ["__consumer_offsets", "__transaction_state"] {
        let refused = produce(&mut client, topic, 0, -1, simple_batch(1_000, 1, 10));
        assert_eq!(refused.error_code, ResponseError::InvalidTopicException.code(), "{topic}: produce");
        assert_eq!(refused.error_message.as_deref(), Some(format!("Cannot append to internal topic {topic}").as_str()));
        let mut delete = DeleteTopicsRequest::default();
        delete.topic_names = vec![name(topic)];
        let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &delete);
        assert_eq!(response.responses[0].error_code, ResponseError::InvalidTopicException.code(), "{topic}: delete");
        let mut grow = CreatePartitionsRequest::default();
        let mut t = create_partitions_request::CreatePartitionsTopic::default();
        t.name = name(topic);
        t.count = 60;
        grow.topics = vec![t];
        grow.timeout_ms = 10_000;
        let response: CreatePartitionsResponse = client.call(ApiKey::CreatePartitions, 3, &grow);
        assert_eq!(response.results[0].error_code, ResponseError::InvalidRequest.code(), "{topic}: grow");
        let mut metadata = MetadataRequest::default();
        let mut wanted = MetadataRequestTopic::default();
        wanted.name = Some(name(topic));
        metadata.topics = Some(vec![wanted]);
        let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &metadata);
        assert_eq!(response.topics[0].error_code, 0);
        assert!(response.topics[0].is_internal, "{topic} is flagged internal");
        assert_eq!(response.topics[0].partitions.len(), 50, "{topic} was neither deleted nor grown");
    }
}

#[test]
fn offset_fetch_v1_answers_its_errors_per_partition() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.address);
    let mut topic = offset_fetch_request::OffsetFetchRequestTopic::default();
    topic.name = name("t");
    topic.partition_indexes = vec![0, 1];
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(StrBytes::from_static_str(""));
    request.topics = Some(vec![topic]);
    let response: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 1, &request);
    let codes: Vec<i16> = response.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
    assert_eq!(codes, vec![ResponseError::InvalidGroupId.code(); 2], "v1 has no top-level error code");
}

#[test]
fn long_poll_returns_data_that_arrives_while_waiting() {
    let broker = Broker::start(&["--shards", "2"]);
    let mut setup = RawClient::connect(&broker.address);
    assert_eq!(create(&mut setup, "poll", 1, 1, false, &[]), 0);
    let address = broker.address.clone();
    let waiter = std::thread::spawn(move || {
        let mut client = RawClient::connect(&address);
        fetch(&mut client, "poll", 0, 8_000)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(produce(&mut setup, "poll", 0, 1, simple_batch(5, 2, 8)).error_code, 0);
    let fetched = waiter.join().expect("fetch thread");
    assert_eq!(fetched.error_code, 0);
    assert_eq!(fetched.high_watermark, 2);
    assert!(fetched.records.as_ref().is_some_and(|r| !r.is_empty()), "the waiting fetch got the new batch");
}

#[test]
fn too_new_api_versions_gets_the_v0_layout_with_the_api_list() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.address);
    let mut request = vec![];
    request.extend_from_slice(&18i16.to_be_bytes());
    request.extend_from_slice(&99i16.to_be_bytes());
    request.extend_from_slice(&77i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    client.send_raw(&framed).expect("send");
    let mut frame = client.read_frame().expect("answer");
    use bytes::Buf;
    assert_eq!(frame.get_i32(), 77, "correlation id");
    use kafka_protocol::protocol::Decodable;
    let response = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 layout");
    assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code());
    let produce = response.api_keys.iter().find(|k| k.api_key == 0).expect("Produce listed");
    assert_eq!((produce.min_version, produce.max_version), (3, 11));
}

#[test]
fn records_inside_batches_are_checked_as_kafka_checks_them() {
    use shardline_engine::format::batch::build::{batch, body_of, lz4, with_body, TestRecord};
    let broker = Broker::start(&["--set", "auto_create_topics_enable=false"]);
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(create(&mut client, "checked", 1, 1, false, &[]), 0);
    let good = simple_batch(now_ms(), 3, 10);
    let invalid = |answer: PartitionProduceResponse, why: &str| {
        assert_eq!(answer.error_code, ResponseError::InvalidRecord.code(), "{why}");
        assert!(answer.error_message.is_some(), "{why}: the reason is given");
    };
    // Valid CRCs throughout: only the records are wrong.
    invalid(
        produce(&mut client, "checked", 0, 1, with_body(&good, 0, body_of(&good), 4)),
        "one record fewer than counted",
    );
    let mut trailing = body_of(&good).to_vec();
    trailing.push(0);
    invalid(produce(&mut client, "checked", 0, 1, with_body(&good, 0, &trailing, 3)), "bytes after the last record");
    invalid(
        produce(&mut client, "checked", 0, 1, with_body(&good, 3, &lz4(b"not records at all"), 3)),
        "an lz4 body that decompresses to garbage",
    );
    invalid(
        produce(&mut client, "checked", 0, 1, with_body(&good, 3, b"not an lz4 frame", 3)),
        "a body that does not decompress",
    );
    let misnumbered = {
        // Records whose offset deltas run 0, 2, 1: built as two batches' records.
        let one = |delta: i64| {
            let records = [TestRecord { key: None, value: Some(vec![7]), timestamp_delta: delta }];
            body_of(&batch(now_ms(), &records)).to_vec()
        };
        let mut body = one(0);
        let mut second = one(0);
        // The offset delta is the third byte of a one-byte-length record.
        second[3] = 4; // zigzag 2
        body.extend(second);
        with_body(&good, 0, &body, 2)
    };
    let answer = produce(&mut client, "checked", 0, 1, misnumbered);
    invalid(answer.clone(), "offset deltas out of order");
    assert_eq!(answer.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![1]);
    invalid(
        produce(&mut client, "checked", 0, 1, with_body(&good, 3, &lz4(body_of(&good)), 4)),
        "compressed, miscounted",
    );
    // The same records compressed and counted right are accepted.
    let ok = produce(&mut client, "checked", 0, 1, with_body(&good, 3, &lz4(body_of(&good)), 3));
    assert_eq!((ok.error_code, ok.base_offset), (0, 0));
    let ok = produce(&mut client, "checked", 0, 1, good);
    assert_eq!((ok.error_code, ok.base_offset), (0, 3));
}

#[test]
fn record_timestamps_outside_the_topic_bounds_are_refused_per_record() {
    let broker = Broker::start(&["--set", "auto_create_topics_enable=false"]);
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(create(&mut client, "recent", 1, 1, false, &[("message.timestamp.before.max.ms", "60000")]), 0);
    assert_eq!(create(&mut client, "defaults", 1, 1, false, &[]), 0);
    let hour = 3_600_000;
    // Records 0..3 at now-2min, now-1min+1s... only the first two are too old.
    let old = shardline_engine::format::batch::build::batch(
        now_ms() - 120_000,
        &[0, 30_000, 100_000].map(|delta| shardline_engine::format::batch::build::TestRecord {
            key: None,
            value: Some(vec![1]),
            timestamp_delta: delta,
        }),
    );
    let answer = produce(&mut client, "recent", 0, 1, old);
    assert_eq!(answer.error_code, ResponseError::InvalidTimestamp.code());
    assert_eq!(answer.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![0, 1]);
    assert!(answer.record_errors.iter().all(|e| e.batch_index_error_message.is_some()));
    assert_eq!(
        answer.error_message.as_deref(),
        Some("One or more records have been rejected due to invalid timestamp")
    );
    // The default message.timestamp.after.max.ms is one hour (Kafka 4): two
    // hours ahead is refused, old records are not.
    let future = simple_batch(now_ms() + 2 * hour, 1, 1);
    assert_eq!(produce(&mut client, "defaults", 0, 1, future).error_code, ResponseError::InvalidTimestamp.code());
    let ancient = simple_batch(1_000, 1, 1);
    assert_eq!(produce(&mut client, "defaults", 0, 1, ancient).error_code, 0);
    assert_eq!(produce(&mut client, "recent", 0, 1, simple_batch(now_ms(), 2, 1)).error_code, 0);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}
