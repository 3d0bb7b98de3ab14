//! Cost per partition: ten thousand partitions on a two-shard broker, one
//! record in each, read back over raw Kafka requests, then a clean
//! restart and every record read again. Between the steps the broker's
//! open descriptors, resident memory and disk use must stay under bounds
//! that do not grow with partition count times a per-partition buffer:
//! these are bounds on resources, not timings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_tests::{Broker, RawClient};

const TOPICS: usize = 20;
const PARTITIONS_PER_TOPIC: i32 = 500;
const PARTITIONS: usize = TOPICS * PARTITIONS_PER_TOPIC as usize;
/// Open segment files each shard may keep (`open_files_per_shard`).
const OPEN_FILES_PER_SHARD: usize = 1000;
const SHARDS: usize = 2;
/// `partition_idle_ms`: after twice this with no traffic, partitions hold
/// no segment descriptors and no reservation past their data.
const IDLE_MS: u64 = 1500;
/// Descriptors besides segment files: listeners, io_uring, eventfds,
/// splice pipes, stdio, the producer-state and group coordinator files.
const OTHER_DESCRIPTORS: usize = 200;
/// Resident memory allowed for the whole broker with every partition idle
/// (about 20 KiB each plus the process's base).
const MAX_RSS_MIB: u64 = 64 + (PARTITIONS as u64 * 20) / 1024;
/// Disk allowed per idle partition with one record (its files' blocks).
const MAX_DISK_PER_PARTITION_KIB: u64 = 64;

fn topic_name(t: usize) -> TopicName {
    TopicName(StrBytes::from_string(format!("cost-{t}")))
}

fn value(t: usize, p: i32) -> String {
    format!("value-of-topic-{t}-partition-{p}")
}

fn descriptors(broker: &Broker) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", broker.pid())).expect("fd list").count()
}

/// Open descriptors of segment and index files.
fn segment_descriptors(broker: &Broker) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("fd list")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(&broker.data_dir)
                && target.extension().is_some_and(|e| e == "log" || e == "index" || e == "timeindex")
        })
        .count()
}

/// Waits (bounded) until the idle sweeps closed every segment descriptor.
fn wait_until_idle_files_close(broker: &Broker, when: &str) {
    let deadline = Instant::now() + Duration::from_millis(IDLE_MS * 2 + 10_000);
    while segment_descriptors(broker) > 0 {
        assert!(Instant::now() < deadline, "{when}: {} segment files still open", segment_descriptors(broker));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn allocated_kib(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("data dir").flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        total += meta.blocks() / 2;
        if meta.is_dir() {
            total += allocated_kib(&path);
        }
    }
    total
}

fn produce_all(client: &mut RawClient) {
    for t in 0..TOPICS {
        let mut data = TopicProduceData::default();
        data.name = topic_name(t);
        data.partition_data = (0..PARTITIONS_PER_TOPIC)
            .map(|p| {
                let record = TestRecord { key: None, value: Some(value(t, p).into_bytes()), timestamp_delta: 0 };
                let mut partition = PartitionProduceData::default();
                partition.index = p;
                partition.records = Some(Bytes::from(batch(1_000, &[record])));
                partition
            })
            .collect();
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 30_000;
        request.topic_data = vec![data];
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        let partitions = &response.responses[0].partition_responses;
        assert_eq!(partitions.len(), PARTITIONS_PER_TOPIC as usize);
        for partition in partitions {
            assert_eq!(partition.error_code, 0, "produce to cost-{t}/{}", partition.index);
            assert_eq!(partition.base_offset, 0, "cost-{t}/{} is new", partition.index);
        }
    }
}

/// Fetches every partition from offset 0 and checks each holds exactly
/// its one record.
fn read_all(client: &mut RawClient) {
    for t in 0..TOPICS {
        let mut topic = FetchTopic::default();
        topic.topic = topic_name(t);
        topic.partitions = (0..PARTITIONS_PER_TOPIC)
            .map(|p| {
                let mut partition = FetchPartition::default();
                partition.partition = p;
                partition.fetch_offset = 0;
                partition.partition_max_bytes = 64 * 1024;
                partition
            })
            .collect();
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.min_bytes = 1;
        request.max_bytes = 64 << 20;
        request.session_epoch = -1;
        request.topics = vec![topic];
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        assert_eq!(response.error_code, 0);
        let answered: HashMap<i32, _> =
            response.responses[0].partitions.iter().map(|p| (p.partition_index, p)).collect();
        assert_eq!(answered.len(), PARTITIONS_PER_TOPIC as usize, "cost-{t}: every partition answered");
        for p in 0..PARTITIONS_PER_TOPIC {
            let partition = answered[&p];
            assert_eq!(partition.error_code, 0, "cost-{t}/{p}");
            assert_eq!(partition.high_watermark, 1, "cost-{t}/{p} holds one record");
            let records = partition.records.as_ref().expect("records");
            let header = shardline_engine::format::batch::validate_batch(records, true).expect("a valid batch");
            assert_eq!((header.base_offset, header.last_offset_delta), (0, 0), "cost-{t}/{p}");
            assert_eq!(header.total_bytes(), records.len(), "cost-{t}/{p}: one batch");
            let wanted = value(t, p);
            assert!(records.windows(wanted.len()).any(|w| w == wanted.as_bytes()), "cost-{t}/{p} holds {wanted}");
        }
    }
}

fn check_resources(broker: &Broker, when: &str) {
    let fds = descriptors(broker);
    let rss_mib = broker.rss_kib() / 1024;
    let disk_kib = allocated_kib(&broker.data_dir);
    eprintln!("{when}: {fds} descriptors, RSS {rss_mib} MiB, disk {disk_kib} KiB for {PARTITIONS} partitions");
    let max_fds = SHARDS * OPEN_FILES_PER_SHARD + OTHER_DESCRIPTORS;
    assert!(fds <= max_fds, "{when}: {fds} open descriptors, more than {max_fds}");
    assert!(rss_mib <= MAX_RSS_MIB, "{when}: RSS {rss_mib} MiB, more than {MAX_RSS_MIB} MiB");
    let max_disk = PARTITIONS as u64 * MAX_DISK_PER_PARTITION_KIB;
    assert!(disk_kib <= max_disk, "{when}: {disk_kib} KiB on disk, more than {max_disk} KiB");
}

#[test]
fn ten_thousand_partitions_fit_in_bounded_descriptors_memory_and_disk() {
    let open_files = format!("open_files_per_shard={OPEN_FILES_PER_SHARD}");
    let idle = format!("partition_idle_ms={IDLE_MS}");
    let shards = SHARDS.to_string();
    let mut broker = Broker::start(&["--shards", &shards, "--set", &open_files, "--set", &idle]);
    let mut client = RawClient::connect(&broker.address);
    client.set_read_timeout(Duration::from_secs(120));
    let started = Instant::now();
    for t in 0..TOPICS {
        client.create_topic(&topic_name(t).0, PARTITIONS_PER_TOPIC);
    }
    eprintln!("created {PARTITIONS} partitions in {:?}", started.elapsed());
    produce_all(&mut client);
    read_all(&mut client);
    check_resources(&broker, "after one record each, read back");
    wait_until_idle_files_close(&broker, "idle");
    // The reservations were given back by the same sweeps.
    std::thread::sleep(Duration::from_millis(IDLE_MS));
    check_resources(&broker, "idle");

    drop(client);
    let stopped = Instant::now();
    assert!(broker.stop().success(), "clean stop");
    let started = Instant::now();
    broker.restart();
    eprintln!("with {PARTITIONS} partitions: clean stop took {:?}, start {:?}", started - stopped, started.elapsed());
    let mut client = RawClient::connect(&broker.address);
    client.set_read_timeout(Duration::from_secs(120));
    read_all(&mut client);
    check_resources(&broker, "after a clean restart, read back");
    wait_until_idle_files_close(&broker, "idle after the restart");
}
