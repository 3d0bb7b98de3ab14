//! Many partitions on one broker: 400 partitions over 2 shards take
//! messages and give them back, while memory and reserved disk space stay
//! proportional to traffic, not to partition count times segment size.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::Broker;

const PARTITIONS: i32 = 400;

fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("data dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += allocated_bytes(&path);
        } else if let Ok(meta) = entry.metadata() {
            total += meta.blocks() * 512;
        }
    }
    total
}

#[test]
fn four_hundred_partitions_stay_small() {
    let broker = Broker::start(&["--shards", "2", "--set", &format!("num_partitions={PARTITIONS}")]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    block_on(async {
        let sends: Vec<_> = (0..PARTITIONS * 3)
            .map(|i| {
                let value = format!("p{}-{}", i % PARTITIONS, i / PARTITIONS);
                producer
                    .send_result(FutureRecord::<(), _>::to("wide").partition(i % PARTITIONS).payload(&value))
                    .expect("enqueue")
            })
            .collect();
        for send in sends {
            send.await.expect("delivery").expect("delivered");
        }
    });
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset("wide", p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got: HashMap<i32, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().map(Vec::len).sum::<usize>() < (PARTITIONS * 3) as usize {
        assert!(Instant::now() < deadline, "timed out");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf8");
            got.entry(message.partition()).or_default().push(value);
        }
    }
    for p in 0..PARTITIONS {
        let expected: Vec<String> = (0..3).map(|round| format!("p{p}-{round}")).collect();
        assert_eq!(got[&p], expected, "partition {p}");
    }
    let rss_mib = broker.rss_kib() / 1024;
    assert!(rss_mib < 512, "RSS {rss_mib} MiB for {PARTITIONS} nearly idle partitions");
    let reserved_mib = allocated_bytes(&broker.data_dir) >> 20;
    eprintln!("{PARTITIONS} partitions: RSS {rss_mib} MiB, disk reserved {reserved_mib} MiB");
    assert!(reserved_mib < 4 * PARTITIONS as u64, "{reserved_mib} MiB of disk reserved for {PARTITIONS} partitions");
}
