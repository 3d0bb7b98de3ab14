//! Durability of the single-node broker: a clean restart keeps topics and
//! offsets and needs no recovery scan; kill -9 during a continuous acks=-1
//! produce loses nothing that was acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::{free_port, Broker};

fn producer(address: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "10000")
        .set("retries", "0")
        .create()
        .expect("producer")
}

/// Reads partition 0 of `topic` from offset 0 up to `end`.
fn read_partition(address: &str, topic: &str, end: i64) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("assign");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last().map_or(0, |(o, _)| o + 1) < end {
        assert!(Instant::now() < deadline, "timed out at {:?} of {end}", out.last());
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        out.push((message.offset(), String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf8")));
    }
    out
}

#[test]
fn clean_restart_keeps_topics_and_offsets_without_recovery() {
    let mut broker = Broker::start(&["--shards", "2", "--set", "num_partitions=4"]);
    let producer = producer(&broker.address);
    block_on(async {
        for i in 0..500 {
            let value = format!("v{i}");
            producer
                .send(FutureRecord::<(), _>::to("kept").partition(0).payload(&value), Duration::from_secs(10))
                .await
                .expect("send");
        }
    });
    drop(producer);
    let status = broker.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(broker.stderr().contains("all logs flushed and closed"), "{}", broker.stderr());
    broker.restart();
    let got = read_partition(&broker.address, "kept", 500);
    assert_eq!(got.len(), 500);
    for (i, (offset, value)) in got.iter().enumerate() {
        assert_eq!((*offset, value.as_str()), (i as i64, format!("v{i}").as_str()));
    }
    assert!(
        !broker.stderr().contains("recovered partition log after unclean shutdown"),
        "a clean restart needs no recovery"
    );
    let metadata = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create::<BaseConsumer>()
        .expect("client")
        .fetch_metadata(Some("kept"), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 4, "topic configuration survives restarts");
}

#[test]
fn kill_9_during_acks_all_produce_loses_nothing_acknowledged() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    let port = free_port();
    let mut broker = Broker::start_in(&data, port, &["--shards", "2"]);
    let address = broker.address.clone();
    let acknowledged: Arc<Mutex<Vec<(i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let producer = producer(&address);
            let mut i = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Keep up to 64 sends in flight, like a real producer.
                let batch: Vec<_> = (0..64)
                    .map(|_| {
                        i += 1;
                        let value = format!("m{i}");
                        let future = producer
                            .send_result(FutureRecord::<(), _>::to("durable").partition(0).payload(&value))
                            .expect("enqueue");
                        (value, future)
                    })
                    .collect();
                for (value, future) in batch {
                    if let Ok(Ok(delivered)) = block_on(future) {
                        acknowledged.lock().expect("lock").push((delivered.offset, value));
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().expect("lock").len() < 3000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 1000, "only {} acknowledged before the kill", acknowledged.len());
    broker.restart();
    let end = acknowledged.iter().map(|(o, _)| o + 1).max().expect("some");
    let stored: std::collections::HashMap<i64, String> =
        read_partition(&broker.address, "durable", end).into_iter().collect();
    for (offset, value) in &acknowledged {
        assert_eq!(stored.get(offset), Some(value), "acknowledged message at offset {offset} lost after kill -9");
    }
    assert!(broker.stderr().contains("recovered partition log after unclean shutdown"));
}
