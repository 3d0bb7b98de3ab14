//! The client side of the `partitions` benchmark (`bench/partitions.sh`
//! runs the brokers): create many partitions (topics of
//! [`PARTITIONS_PER_TOPIC`]), write one record to each, read every one
//! back, then produce for a while spread over all of them; or, after a
//! restart, wait until every record reads back. Runs on ordinary threads
//! with librdkafka, the same client for both brokers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Partitions per topic.
pub const PARTITIONS_PER_TOPIC: usize = 500;

/// What one `fill` measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Fill {
    /// Partitions created.
    pub partitions: usize,
    /// Seconds for every CreateTopics to complete.
    pub create_s: f64,
    /// Seconds to write (acks=all) one record to each.
    pub produce_one_each_s: f64,
    /// Seconds to read every record back.
    pub read_all_s: f64,
    /// MB/s of 1 KiB records produced spread over every partition.
    pub spread_mb_per_s: f64,
}

fn topics(partitions: usize) -> Vec<(String, usize)> {
    (0..partitions.div_ceil(PARTITIONS_PER_TOPIC))
        .map(|t| (format!("many-{t}"), PARTITIONS_PER_TOPIC.min(partitions - t * PARTITIONS_PER_TOPIC)))
        .collect()
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// Creates the topics and measures the phases of [`Fill`]; `spread_s`
/// seconds of spread produce.
pub fn fill(bootstrap: &str, partitions: usize, spread_s: u64) -> Fill {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(300)));
    let started = Instant::now();
    for (name, count) in topics(partitions) {
        let topic = NewTopic::new(&name, count as i32, TopicReplication::Fixed(1));
        let created = futures::executor::block_on(admin.create_topics(&[topic], &options)).expect("create topics");
        for result in created {
            result.unwrap_or_else(|(name, code)| panic!("creating {name}: {code:?}"));
        }
    }
    let create_s = started.elapsed().as_secs_f64();

    let producer = producer(bootstrap);
    let started = Instant::now();
    futures::executor::block_on(async {
        for (name, count) in topics(partitions) {
            let sends: Vec<_> = (0..count)
                .map(|p| {
                    let value = format!("{name}/{p}");
                    producer
                        .send_result(FutureRecord::<(), _>::to(&name).partition(p as i32).payload(&value))
                        .expect("enqueue")
                })
                .collect();
            for send in sends {
                send.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("produce to {name}: {e}"));
            }
        }
    });
    let produce_one_each_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    read_all(bootstrap, partitions, Duration::from_secs(600));
    let read_all_s = started.elapsed().as_secs_f64();

    let spread_mb_per_s = spread(&producer, partitions, Duration::from_secs(spread_s));
    Fill { partitions, create_s, produce_one_each_s, read_all_s, spread_mb_per_s }
}

/// Reads the first record of every partition (retrying while the broker
/// is still loading), within `limit`; panics if one is missing or wrong.
pub fn read_all(bootstrap: &str, partitions: usize, limit: Duration) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-partitions")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for (name, count) in topics(partitions) {
        for p in 0..count {
            assignment.add_partition_offset(&name, p as i32, Offset::Beginning).expect("assign");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + limit;
    while seen.len() < partitions {
        assert!(Instant::now() < deadline, "read {} of {partitions} partitions before the limit", seen.len());
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else { continue };
        if message.offset() != 0 {
            continue;
        }
        let expected = format!("{}/{}", message.topic(), message.partition());
        assert_eq!(message.payload(), Some(expected.as_bytes()), "the first record of {expected}");
        seen.insert((message.topic().to_string(), message.partition()));
    }
}

/// Produces 1 KiB records round-robin over the partitions that [`fill`]
/// created, for `spread_s` seconds; returns the acknowledged MB/s.
pub fn spread_only(bootstrap: &str, partitions: usize, spread_s: u64) -> f64 {
    spread(&producer(bootstrap), partitions, Duration::from_secs(spread_s))
}

/// Produces 1 KiB records round-robin over every partition for `length`;
/// returns the acknowledged MB/s.
fn spread(producer: &FutureProducer, partitions: usize, length: Duration) -> f64 {
    if length.is_zero() {
        return 0.0;
    }
    let topics = topics(partitions);
    let value = vec![b'x'; 1024];
    let started = Instant::now();
    let mut acked = 0u64;
    futures::executor::block_on(async {
        let mut i = 0usize;
        while started.elapsed() < length {
            let sends: Vec<_> = (0..2000)
                .map(|_| {
                    i += 1;
                    let (name, count) = &topics[i % topics.len()];
                    let partition = ((i / topics.len()) % count) as i32;
                    producer
                        .send_result(FutureRecord::<(), _>::to(name).partition(partition).payload(&value))
                        .expect("enqueue")
                })
                .collect();
            for send in sends {
                if matches!(send.await, Ok(Ok(_))) {
                    acked += 1;
                }
            }
        }
    });
    (acked * 1024) as f64 / 1e6 / started.elapsed().as_secs_f64()
}
