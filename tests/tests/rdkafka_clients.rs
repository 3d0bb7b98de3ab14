//! librdkafka (through the rdkafka crate, bundled) against the real broker:
//! admin create/delete, produce with every codec and acks, consume with
//! assign + seek; every message exactly once, in order per partition, with
//! key, value, headers and timestamp intact.

use std::collections::HashMap;
use std::time::Duration;

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::Broker;

fn producer(broker: &Broker, codec: &str, acks: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("compression.codec", codec)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

fn consumer(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer")
}

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("admin")
}

/// What a test sent: (key, value, header value, timestamp).
type Sent = (String, String, String, i64);

/// Consumes `expected` messages per partition from `start` offsets, failing
/// after 30 s; returns them per partition in order with their offsets.
fn consume_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    expected: usize,
    start: Offset,
) -> HashMap<i32, Vec<(i64, Sent)>> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, start).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out with {} of {expected}",
            got.values().map(Vec::len).sum::<usize>()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf8");
        let value = String::from_utf8(message.payload().expect("value").to_vec()).expect("utf8");
        let headers = message.headers().expect("headers");
        let header = headers.get(0);
        assert_eq!(header.key, "trace");
        let header_value = String::from_utf8(header.value.expect("header value").to_vec()).expect("utf8");
        let timestamp = message.timestamp().to_millis().expect("timestamp");
        got.entry(message.partition()).or_default().push((message.offset(), (key, value, header_value, timestamp)));
    }
    got
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    count: usize,
    tag: &str,
) -> HashMap<i32, Vec<(i64, Sent)>> {
    let mut sent: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    let base_ts = 1_700_000_000_000i64;
    let mut pending = Vec::new();
    for i in 0..count {
        let key = format!("{tag}-key-{i}");
        let value = format!("{tag}-value-{i}-{}", "x".repeat(i % 300));
        let header = format!("h-{i}");
        let partition = (i as i32) % partitions;
        let timestamp = base_ts + i as i64;
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&value)
            .timestamp(timestamp)
            .headers(OwnedHeaders::new().insert(Header { key: "trace", value: Some(header.as_bytes()) }));
        let delivery = producer.send_result(record).expect("enqueue");
        pending.push(((key.clone(), value.clone(), header, timestamp), delivery));
    }
    for (sent_record, delivery) in pending {
        let delivered = delivery.await.expect("delivery future").expect("delivered");
        sent.entry(delivered.partition).or_default().push((delivered.offset, sent_record));
    }
    for list in sent.values_mut() {
        list.sort_by_key(|(offset, _)| *offset);
    }
    sent
}

#[test]
fn admin_create_list_delete_topics() {
    let broker = Broker::start(&["--shards", "2"]);
    let admin = admin(&broker);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    block_on(async {
        let created = admin
            .create_topics(&[NewTopic::new("orders", 3, TopicReplication::Fixed(1))], &options)
            .await
            .expect("create");
        assert!(created[0].is_ok(), "{created:?}");
        let again = admin
            .create_topics(&[NewTopic::new("orders", 3, TopicReplication::Fixed(1))], &options)
            .await
            .expect("create");
        assert_eq!(again[0].as_ref().err().map(|e| e.1), Some(RDKafkaErrorCode::TopicAlreadyExists));
        let bad_rf = admin
            .create_topics(&[NewTopic::new("rf3", 1, TopicReplication::Fixed(3))], &options)
            .await
            .expect("create");
        assert_eq!(bad_rf[0].as_ref().err().map(|e| e.1), Some(RDKafkaErrorCode::InvalidReplicationFactor));
        let bad_name = admin
            .create_topics(&[NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))], &options)
            .await
            .expect("create");
        assert_eq!(bad_name[0].as_ref().err().map(|e| e.1), Some(RDKafkaErrorCode::InvalidTopic));
        let bad_partitions =
            admin.create_topics(&[NewTopic::new("zero", 0, TopicReplication::Fixed(1))], &options).await;
        assert!(bad_partitions.is_err() || bad_partitions.as_ref().is_ok_and(|r| r[0].is_err()));
        let metadata = admin.inner().fetch_metadata(Some("orders"), Duration::from_secs(10)).expect("metadata");
        assert_eq!(metadata.topics()[0].partitions().len(), 3);
        let deleted = admin.delete_topics(&["orders"], &options).await.expect("delete");
        assert!(deleted[0].is_ok(), "{deleted:?}");
        let all = admin.inner().fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
        assert!(all.topics().iter().all(|t| t.name() != "orders"), "deleted topic still listed");
    });
}

#[test]
fn every_codec_round_trips_exactly_once_in_order() {
    let broker = Broker::start(&["--shards", "2"]);
    let admin = admin(&broker);
    let options = AdminOptions::new();
    for (codec, acks) in [("none", "all"), ("gzip", "1"), ("snappy", "all"), ("lz4", "all"), ("zstd", "1")] {
        let topic = format!("codec-{codec}");
        block_on(async {
            admin
                .create_topics(&[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))], &options)
                .await
                .expect("create")[0]
                .as_ref()
                .expect("created");
            let sent = produce(&producer(&broker, codec, acks), &topic, 3, 600, codec).await;
            let got = consume_all(&consumer(&broker), &topic, 3, 600, Offset::Beginning);
            assert_eq!(got, sent, "codec {codec}: consumed must equal produced, per partition in offset order");
            for list in got.values() {
                for (i, (offset, _)) in list.iter().enumerate() {
                    assert_eq!(*offset, i as i64, "offsets are dense from 0");
                }
            }
        });
    }
}

#[test]
fn seek_to_a_middle_offset_and_watermarks() {
    let broker = Broker::start(&[]);
    block_on(async {
        let sent = produce(&producer(&broker, "none", "all"), "seek", 1, 100, "seek").await;
        let consumer = consumer(&broker);
        let got = consume_all(&consumer, "seek", 1, 60, Offset::Offset(40));
        assert_eq!(got[&0][..], sent[&0][40..]);
        let (low, high) = consumer.fetch_watermarks("seek", 0, Duration::from_secs(10)).expect("watermarks");
        assert_eq!((low, high), (0, 100));
        let mut query = TopicPartitionList::new();
        query.add_partition_offset("seek", 0, Offset::Offset(1_700_000_000_000 + 57)).expect("query");
        let found = consumer.offsets_for_times(query, Duration::from_secs(10)).expect("offsets for times");
        assert_eq!(found.find_partition("seek", 0).expect("partition").offset(), Offset::Offset(57));
    });
}

#[test]
fn one_connection_spans_partitions_on_both_shards() {
    let broker = Broker::start(&["--shards", "2", "--set", "num_partitions=8"]);
    block_on(async {
        let sent = produce(&producer(&broker, "lz4", "all"), "spread", 8, 800, "spread").await;
        assert_eq!(sent.len(), 8, "every partition received messages");
        let got = consume_all(&consumer(&broker), "spread", 8, 800, Offset::Beginning);
        assert_eq!(got, sent);
    });
    let placement = std::fs::read_to_string(broker.data_dir.join("__shardline/topics.json")).expect("topics.json");
    assert!(placement.contains("\"partition_shards\""), "{placement}");
    let shards: Vec<&str> = ["0,", "1,", "0\n", "1\n"].into_iter().filter(|s| placement.contains(*s)).collect();
    assert!(shards.len() >= 2, "partitions placed on both shards: {placement}");
}

/// Every batch of partition 0 of `topic`, fetched raw from offset 0.
fn stored_batch_codecs(broker: &Broker, topic: &str) -> Vec<i16> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use shardline_engine::format::batch::BatchIter;
    let mut client = shardline_tests::RawClient::connect(&broker.address);
    let mut partition = FetchPartition::default();
    partition.partition_max_bytes = 8 << 20;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
    fetch_topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.max_bytes = 8 << 20;
    request.session_epoch = -1;
    request.topics = vec![fetch_topic];
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    let records = response.responses[0].partitions[0].records.clone().unwrap_or_default();
    BatchIter::new(&records).map(|(_, header)| header.compression()).collect()
}

#[test]
fn a_topics_compression_type_recompresses_every_producer_codec() {
    let broker = Broker::start(&["--shards", "1"]);
    let admin = admin(&broker);
    let options = AdminOptions::new();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let producers: Vec<FutureProducer> = codecs.iter().map(|codec| producer(&broker, codec, "all")).collect();
    for (topic_id, topic_codec) in ["uncompressed", "gzip", "snappy", "lz4", "zstd"].into_iter().enumerate() {
        for (producer_codec, producer) in codecs.iter().zip(&producers) {
            let topic = format!("recompress-{topic_codec}-{producer_codec}");
            block_on(async {
                let new_topic =
                    NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("compression.type", topic_codec);
                admin.create_topics(&[new_topic], &options).await.expect("create")[0].as_ref().expect("created");
                let sent = produce(producer, &topic, 1, 120, producer_codec).await;
                let got = consume_all(&consumer(&broker), &topic, 1, 120, Offset::Beginning);
                assert_eq!(got, sent, "{producer_codec} into a {topic_codec} topic: consumed equals produced");
            });
            let stored = stored_batch_codecs(&broker, &topic);
            assert!(!stored.is_empty(), "{topic}: batches stored");
            assert!(
                stored.iter().all(|&codec| codec == topic_id as i16),
                "{producer_codec} into a {topic_codec} topic is stored as codec {topic_id}: {stored:?}"
            );
        }
    }
}
