//! A fetch is bounded by what it sends: a librdkafka consumer over 1,000
//! backlogged partitions (400 KiB each, 400 MiB in all) with
//! `fetch.max.bytes` of 50 MiB. Each response carries at most 50 MiB, so the
//! broker's peak RSS while the consumer drains the backlog stays within
//! three responses' worth (the records read, the response built from them,
//! its encoding) plus 32 MiB. Reading every partition up to its own
//! `max.partition.fetch.bytes` would hold the whole backlog at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_engine::format::batch::build::simple_batch;
use shardline_tests::{Broker, RawClient};

const TOPIC: &str = "backlog";
const PARTITIONS: i32 = 1000;
/// Batches per partition, each of `RECORDS_PER_BATCH` records of `VALUE_BYTES`.
const BATCHES: usize = 4;
const RECORDS_PER_BATCH: usize = 10;
const VALUE_BYTES: usize = 10_000;
const FETCH_MAX_BYTES: u64 = 50 << 20;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.into()))
}

/// Appends `BATCHES` batches to every partition, 50 partitions a request.
fn produce_backlog(client: &mut RawClient) {
    let batch = Bytes::from(simple_batch(1_000, RECORDS_PER_BATCH, VALUE_BYTES));
    for _ in 0..BATCHES {
        for first in (0..PARTITIONS).step_by(50) {
            let mut data = TopicProduceData::default();
            data.name = name(TOPIC);
            data.partition_data = (first..first + 50)
                .map(|index| {
                    let mut p = PartitionProduceData::default();
                    p.index = index;
                    p.records = Some(batch.clone());
                    p
                })
                .collect();
            let mut request = ProduceRequest::default();
            request.acks = 1;
            request.timeout_ms = 30_000;
            request.topic_data = vec![data];
            let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
            for p in &response.responses[0].partition_responses {
                assert_eq!(p.error_code, 0, "partition {}", p.index);
            }
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("field")
}

#[test]
fn a_consumer_over_a_large_backlog_keeps_the_broker_small() {
    let broker = Broker::start(&["--shards", "1", "--set", "batch_cache_bytes=8388608"]);
    let mut client = RawClient::connect(&broker.address);
    client.create_topic(TOPIC, PARTITIONS);
    produce_backlog(&mut client);
    drop(client);
    let per_partition = (BATCHES * RECORDS_PER_BATCH) as i64;

    // Peak RSS from here on (writing 5 to clear_refs resets VmHWM).
    std::fs::write(format!("/proc/{}/clear_refs", broker.pid()), "5").expect("reset peak RSS");
    let rss_before = status_kib(broker.pid(), "VmRSS:");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "backlog-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", FETCH_MAX_BYTES.to_string())
        .set("max.partition.fetch.bytes", "1048576")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(TOPIC, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut received = 0i64;
    let want = per_partition * i64::from(PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(240);
    while received < want {
        assert!(Instant::now() < deadline, "consumed {received} of {want} records in 240 s");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        let expected = next.entry(message.partition()).or_insert(0);
        assert_eq!(message.offset(), *expected, "partition {} in order, once", message.partition());
        assert_eq!(message.payload().map(<[u8]>::len), Some(VALUE_BYTES));
        *expected += 1;
        received += 1;
    }
    assert_eq!(next.len(), PARTITIONS as usize);
    assert!(next.values().all(|&n| n == per_partition));

    let peak = status_kib(broker.pid(), "VmHWM:");
    eprintln!("broker RSS {rss_before} KiB before consuming, peak {peak} KiB (+{} KiB)", peak - rss_before);
    let bound_kib = (3 * FETCH_MAX_BYTES + (32 << 20)) / 1024;
    assert!(
        peak < rss_before + bound_kib,
        "peak RSS {peak} KiB while consuming, from {rss_before} KiB: more than +{bound_kib} KiB"
    );
}

#[test]
fn a_fetch_naming_a_million_partitions_does_not_stall_the_shard() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse};
    let broker = Broker::start(&["--shards", "1"]);
    let mut big = RawClient::connect(&broker.address);
    let mut small = RawClient::connect(&broker.address);
    for client in [&mut big, &mut small] {
        let _: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    let mut topic = FetchTopic::default();
    topic.topic = name("nowhere");
    topic.partitions = (0..1_000_000)
        .map(|index| {
            let mut p = FetchPartition::default();
            p.partition = index;
            p.partition_max_bytes = 1024;
            p
        })
        .collect();
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.session_epoch = -1;
    request.topics = vec![topic];
    big.send_request(ApiKey::Fetch, 12, &request);
    // Another connection on the same shard is answered while the big
    // request is still being worked through.
    let answer: ApiVersionsResponse = small.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(answer.error_code, 0);
    big.set_read_timeout(Duration::from_millis(50));
    assert!(big.is_silent(), "the million-partition fetch was not yet answered when the small request was");
    big.set_read_timeout(Duration::from_secs(120));
    let response: FetchResponse = big.read_response(12);
    let partitions: Vec<_> = response.responses.iter().flat_map(|t| t.partitions.iter()).collect();
    assert_eq!(partitions.len(), 1_000_000, "every partition is answered");
    assert!(partitions.iter().all(|p| p.error_code == 3), "unknown topic or partition");
}
