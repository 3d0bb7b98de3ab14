//! Transactions through librdkafka: committed and aborted transactions as
//! read_committed and read_uncommitted consumers see them, a
//! read-process-write loop with offsets sent to the transaction, fencing of
//! a zombie producer, and a broker killed in the middle of a transaction.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::Broker;

const T: Duration = Duration::from_secs(30);

fn transactional(address: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "20000")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    producer.init_transactions(T).expect("init_transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, values: impl IntoIterator<Item = String>) {
    for value in values {
        let key = value.clone();
        producer.send(BaseRecord::to(topic).key(&key).payload(&value)).expect("queue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(T).expect("flush");
}

fn read_all(address: &str, topic: &str, partitions: i32, isolation: &str, group: Option<&str>) -> Vec<String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", address)
        .set("group.id", group.unwrap_or("txn-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation);
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while idle_since.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            idle_since = Instant::now();
        }
    }
    out
}

#[test]
fn committed_and_aborted_transactions_across_partitions() {
    let broker = Broker::start(&["--set", "num_partitions=3"]);
    let producer = transactional(&broker.address, "tx-basic");
    for round in 0..4 {
        producer.begin_transaction().expect("begin");
        send(&producer, "tx-out", (0..30).map(|i| format!("r{round}-{i}")));
        if round == 2 {
            producer.abort_transaction(T).expect("abort");
        } else {
            producer.commit_transaction(T).expect("commit");
        }
    }
    let committed = read_all(&broker.address, "tx-out", 3, "read_committed", None);
    assert_eq!(committed.len(), 90, "three committed transactions of 30");
    assert!(committed.iter().all(|v| !v.starts_with("r2-")), "nothing of the aborted one");
    assert_eq!(committed.iter().collect::<BTreeSet<_>>().len(), 90, "each once");
    let everything = read_all(&broker.address, "tx-out", 3, "read_uncommitted", None);
    assert_eq!(everything.len(), 120, "read_uncommitted sees the aborted records too");
}

#[test]
fn read_process_write_with_offsets_in_the_transaction() {
    let broker = Broker::start(&["--set", "group_initial_rebalance_delay_ms=0"]);
    let plain: BaseProducer = ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("producer");
    send(&plain, "rpw-in", (0..60).map(|i| format!("in-{i}")));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "rpw")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    consumer.subscribe(&["rpw-in"]).expect("subscribe");
    let producer = transactional(&broker.address, "tx-rpw");
    let mut processed = 0;
    let mut batch_no = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed < 60 && Instant::now() < deadline {
        let mut batch = Vec::new();
        while batch.len() < 10 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                batch.push((String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(), m.offset()));
            }
        }
        batch_no += 1;
        producer.begin_transaction().expect("begin");
        send(&producer, "rpw-out", batch.iter().map(|(v, _)| v.replace("in-", "out-")));
        let mut offsets = TopicPartitionList::new();
        let next = batch.last().map_or(0, |(_, o)| o + 1);
        offsets.add_partition_offset("rpw-in", 0, Offset::Offset(next)).expect("offset");
        producer
            .send_offsets_to_transaction(&offsets, &consumer.group_metadata().expect("group metadata"), T)
            .expect("send offsets");
        if batch_no % 3 == 0 {
            // Abort every third: rewind and process the batch again.
            producer.abort_transaction(T).expect("abort");
            let first = batch.first().map_or(0, |(_, o)| *o);
            consumer.seek("rpw-in", 0, Offset::Offset(first), T).expect("seek");
            batch_no += 1; // the retry of this batch is not the third one
        } else {
            producer.commit_transaction(T).expect("commit");
            processed += batch.len();
        }
    }
    let out = read_all(&broker.address, "rpw-out", 1, "read_committed", None);
    let expected: BTreeSet<String> = (0..60).map(|i| format!("out-{i}")).collect();
    assert_eq!(out.len(), 60, "each input transformed exactly once: {out:?}");
    assert_eq!(out.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let uncommitted = read_all(&broker.address, "rpw-out", 1, "read_uncommitted", None);
    assert!(uncommitted.len() > 60, "the aborted outputs exist in the log");
    // The group's committed offset came from the transactions.
    let committed = consumer.committed(T).expect("committed");
    let offset = committed.find_partition("rpw-in", 0).map(|e| e.offset());
    assert_eq!(offset, Some(Offset::Offset(60)));
}

#[test]
fn a_zombie_producer_is_fenced() {
    let broker = Broker::start(&[]);
    let zombie = transactional(&broker.address, "tx-zombie");
    zombie.begin_transaction().expect("begin");
    send(&zombie, "zombie", ["z-1".to_string()]);
    // A new incarnation with the same id aborts the open transaction and
    // fences the old one.
    let fresh = transactional(&broker.address, "tx-zombie");
    fresh.begin_transaction().expect("begin");
    send(&fresh, "zombie", ["f-1".to_string()]);
    fresh.commit_transaction(T).expect("commit");
    let outcome = zombie.commit_transaction(T);
    match outcome {
        Err(KafkaError::Transaction(e)) => assert!(e.is_fatal() || e.txn_requires_abort(), "{e:?}"),
        other => panic!("the zombie's commit must fail: {other:?}"),
    }
    let committed = read_all(&broker.address, "zombie", 1, "read_committed", None);
    assert_eq!(committed, vec!["f-1".to_string()]);
}

#[test]
fn a_broker_killed_mid_transaction_aborts_it_on_the_next_init() {
    let mut broker = Broker::start(&[]);
    {
        let producer = transactional(&broker.address, "tx-kill");
        producer.begin_transaction().expect("begin");
        send(&producer, "killed", (0..20).map(|i| format!("lost-{i}")));
        producer.commit_transaction(T).expect("commit");
        producer.begin_transaction().expect("begin");
        send(&producer, "killed", (0..20).map(|i| format!("open-{i}")));
        broker.kill9();
    }
    broker.restart();
    let producer = transactional(&broker.address, "tx-kill");
    producer.begin_transaction().expect("begin");
    send(&producer, "killed", ["after".to_string()]);
    producer.commit_transaction(T).expect("commit");
    let committed = read_all(&broker.address, "killed", 1, "read_committed", None);
    assert_eq!(committed.len(), 21, "{committed:?}\n{}", broker.stderr());
    assert!(committed.iter().all(|v| !v.starts_with("open-")), "the open transaction was aborted");
}

#[test]
fn an_open_transaction_times_out_after_a_restart_with_no_client() {
    let mut broker = Broker::start(&[]);
    {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.address)
            .set("transactional.id", "tx-orphan")
            .set("transaction.timeout.ms", "3000")
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        producer.init_transactions(T).expect("init_transactions");
        producer.begin_transaction().expect("begin");
        send(&producer, "orphan", (0..10).map(|i| format!("open-{i}")));
        broker.kill9();
    }
    broker.restart();
    // Nobody touches the transaction coordinator: only a read_committed
    // view of the partition, through ListOffsets, until its LSO passes
    // the transaction (timeout 3 s, plus the timer's and a load's time).
    let mut client = shardline_tests::RawClient::connect(&broker.address);
    let latest = |client: &mut shardline_tests::RawClient, isolation: i8| -> i64 {
        client.list_offset("orphan", 0, -1, isolation).offset
    };
    let high_watermark = latest(&mut client, 0);
    assert_eq!(high_watermark, 10, "the ten records are there, uncommitted");
    let deadline = Instant::now() + Duration::from_secs(3 + 15);
    let mut stable = latest(&mut client, 1);
    while stable < high_watermark && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        stable = latest(&mut client, 1);
    }
    assert!(
        stable > high_watermark,
        "the LSO passed the aborted transaction and its marker: {stable}\n{}",
        broker.stderr()
    );
    let committed = read_all(&broker.address, "orphan", 1, "read_committed", None);
    assert!(committed.is_empty(), "the open transaction was aborted: {committed:?}");
}
