//! Power loss, not just kill -9: the broker records each data file's
//! durable (fdatasynced) length in its sync ledger, and after kill -9 the
//! test cuts every file back to it, as a power cut drops what only the page
//! cache held. acks=all with `acks_all_fsync=true` loses nothing
//! acknowledged; with `acks_all_fsync=false` (Kafka's semantics) the same
//! run does lose acknowledged records, which shows the test can tell the two
//! apart. Data a crashed broker recovered from the page cache is made
//! durable before it is served again.

use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::Broker;

const RECORDS: usize = 400;

fn producer(address: &str, acks: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer")
}

/// Produces `RECORDS` records to partition 0 of `topic`; returns each
/// acknowledged (offset, value).
fn produce_acknowledged(address: &str, topic: &str, acks: &str, first: usize) -> Vec<(i64, String)> {
    let producer = producer(address, acks);
    let acknowledged = block_on(async {
        let sends: Vec<_> = (first..first + RECORDS)
            .map(|i| {
                let value = format!("record-{i}");
                let producer = producer.clone();
                async move {
                    let sent = producer
                        .send(FutureRecord::<(), _>::to(topic).partition(0).payload(&value), Duration::from_secs(20))
                        .await;
                    sent.map(|delivery| (delivery.offset, value)).map_err(|(error, _)| error)
                }
            })
            .collect();
        futures::future::join_all(sends).await
    });
    acknowledged.into_iter().map(|sent| sent.expect("acknowledged")).collect()
}

/// Everything partition 0 of `topic` holds: reads to the high watermark.
fn read_all(address: &str, topic: &str) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "power-loss-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(20)).expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("assign");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last().map_or(0, |(offset, _)| offset + 1) < high {
        assert!(Instant::now() < deadline, "read {} records of {high} in 60 s", out.len());
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        let value = String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf8");
        out.push((message.offset(), value));
    }
    out
}

fn sorted(mut records: Vec<(i64, String)>) -> Vec<(i64, String)> {
    records.sort();
    records
}

#[test]
fn acks_all_with_fsync_loses_nothing_acknowledged_in_a_power_cut() {
    let mut broker = Broker::start_with_sync_ledger(&["--shards", "1"]);
    let acknowledged = sorted(produce_acknowledged(&broker.address, "durable", "all", 0));
    assert_eq!(acknowledged.len(), RECORDS);
    broker.power_loss();
    broker.restart();
    assert_eq!(read_all(&broker.address, "durable"), acknowledged, "every acknowledged record survives");
}

#[test]
fn acks_all_without_fsync_loses_acknowledged_records_in_a_power_cut() {
    let mut broker = Broker::start_with_sync_ledger(&["--shards", "1", "--set", "acks_all_fsync=false"]);
    let acknowledged = sorted(produce_acknowledged(&broker.address, "page-cache", "all", 0));
    assert_eq!(acknowledged.len(), RECORDS);
    let cut = broker.power_loss();
    assert!(cut > 0, "the power cut dropped unsynced bytes");
    broker.restart();
    let survived = read_all(&broker.address, "page-cache");
    assert!(
        survived.len() < acknowledged.len(),
        "without fsync a power cut loses acknowledged records: {} of {} survived",
        survived.len(),
        acknowledged.len()
    );
    assert_eq!(survived[..], acknowledged[..survived.len()], "what survives is a prefix of what was acknowledged");
}

#[test]
fn records_recovered_after_a_crash_are_durable_before_they_are_served() {
    // acks=1 without fsync, small segments: the page cache holds sealed and
    // active segments that no fdatasync covered when the broker is killed.
    let mut broker = Broker::start_with_sync_ledger(&[
        "--shards",
        "1",
        "--set",
        "acks_all_fsync=false",
        "--set",
        "log_segment_bytes=1048576",
    ]);
    let producer = producer(&broker.address, "1");
    let big = "x".repeat(20_000);
    let acknowledged: Vec<(i64, String)> = block_on(async {
        let mut out = Vec::new();
        for i in 0..150 {
            let value = format!("{i}-{big}");
            let delivery = producer
                .send(FutureRecord::<(), _>::to("recovered").partition(0).payload(&value), Duration::from_secs(20))
                .await
                .map_err(|(error, _)| error)
                .expect("acknowledged");
            out.push((delivery.offset, value));
        }
        out
    });
    drop(producer);
    broker.kill9();
    broker.restart();
    let served = read_all(&broker.address, "recovered");
    assert_eq!(served, acknowledged, "the page cache survived kill -9 and recovery served it all");
    broker.power_loss();
    broker.restart();
    assert_eq!(read_all(&broker.address, "recovered"), served, "what recovery served was made durable first");
}
