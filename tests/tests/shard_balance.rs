//! Placement across shards: a two-shard broker whose two heavy partitions
//! landed on one shard places them on different shards at the next start,
//! keeps two partitions on each shard, and every record reads back from
//! its new owner. A balanced placement is left as it is.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_tests::{Broker, RawClient};

const TOPIC: &str = "heavy";
/// Batches written to each heavy partition, of `RECORDS_PER_BATCH` records.
const BATCHES: usize = 24;
const RECORDS_PER_BATCH: usize = 32;
const VALUE_BYTES: usize = 4096;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_string(TOPIC.to_string()))
}

fn produce(client: &mut RawClient, partition: i32, seq: usize) {
    let records: Vec<TestRecord> = (0..RECORDS_PER_BATCH)
        .map(|r| TestRecord { key: None, value: Some(vec![(seq + r) as u8; VALUE_BYTES]), timestamp_delta: 0 })
        .collect();
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(Bytes::from(batch(1_000, &records)));
    let mut topic = TopicProduceData::default();
    topic.name = topic_name();
    topic.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    request.topic_data = vec![topic];
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0, "produce to {partition}");
}

/// Every batch of `partition` from offset 0, in order: their record counts.
fn read_batches(client: &mut RawClient, partition: i32) -> usize {
    let mut offset = 0i64;
    let mut batches = 0;
    for _ in 0..BATCHES * 2 {
        let mut p = FetchPartition::default();
        p.partition = partition;
        p.fetch_offset = offset;
        p.partition_max_bytes = 1 << 20;
        let mut topic = FetchTopic::default();
        topic.topic = topic_name();
        topic.partitions = vec![p];
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.min_bytes = 1;
        request.max_bytes = 4 << 20;
        request.session_epoch = -1;
        request.topics = vec![topic];
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        let answer = &response.responses[0].partitions[0];
        assert_eq!(answer.error_code, 0, "fetch {partition} at {offset}");
        let records = answer.records.clone().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        let mut at = 0;
        while at < records.len() {
            let Ok(header) = shardline_engine::format::batch::validate_batch(&records[at..], true) else { break };
            assert_eq!(header.base_offset, offset, "partition {partition}: batches in order, no gap");
            assert_eq!(header.last_offset_delta as usize + 1, RECORDS_PER_BATCH);
            offset = header.last_offset() + 1;
            at += header.total_bytes();
            batches += 1;
        }
    }
    batches
}

/// (partitions, bytes) each shard reported at its last start.
fn shard_loads(stderr: &str) -> Vec<(usize, u64)> {
    let mut loads = vec![None, None];
    for line in stderr.lines().filter(|l| l.contains("shard opened its partitions")) {
        let field = |name: &str| -> u64 {
            let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
            line[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        loads[field("shard") as usize] = Some((field("partitions") as usize, field("bytes")));
    }
    loads.into_iter().map(|l| l.expect("both shards reported")).collect()
}

#[test]
fn heavy_partitions_on_one_shard_are_spread_at_the_next_start() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let mut client = RawClient::connect(&broker.address);
    client.set_read_timeout(Duration::from_secs(60));
    // New partitions alternate between the shards: 0 and 2 on shard 0.
    client.create_topic(TOPIC, 4);
    for seq in 0..BATCHES {
        produce(&mut client, 0, seq);
        produce(&mut client, 2, seq);
    }
    produce(&mut client, 1, 0);
    drop(client);
    assert!(broker.stop().success());
    broker.restart();
    let stderr = broker.stderr();
    assert_eq!(stderr.matches("placed partitions again across shards").count(), 1, "{stderr}");
    let loads = shard_loads(&stderr);
    assert_eq!((loads[0].0, loads[1].0), (2, 2), "two partitions per shard: {loads:?}");
    let (small, large) = (loads[0].1.min(loads[1].1), loads[0].1.max(loads[1].1));
    assert!(large - small < large / 2, "the heavy partitions are on different shards: {loads:?}");

    let mut client = RawClient::connect(&broker.address);
    client.set_read_timeout(Duration::from_secs(60));
    assert_eq!(read_batches(&mut client, 0), BATCHES);
    assert_eq!(read_batches(&mut client, 2), BATCHES);
    assert_eq!(read_batches(&mut client, 1), 1);
    assert_eq!(read_batches(&mut client, 3), 0);
    // Written to after the move, from the new owner.
    produce(&mut client, 2, BATCHES);
    assert_eq!(read_batches(&mut client, 2), BATCHES + 1);
    drop(client);

    // Balanced now: the next start keeps the placement.
    assert!(broker.stop().success());
    broker.restart();
    let stderr = broker.stderr();
    assert_eq!(stderr.matches("placed partitions again across shards").count(), 1, "no second move: {stderr}");
    let mut client = RawClient::connect(&broker.address);
    client.set_read_timeout(Duration::from_secs(60));
    assert_eq!(read_batches(&mut client, 2), BATCHES + 1);
}
