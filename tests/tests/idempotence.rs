//! The idempotent producer: InitProducerId, a retried batch answered with
//! its original offset and appended once (also after a clean restart and
//! after kill -9), gaps refused with OUT_OF_ORDER_SEQUENCE_NUMBER, older
//! epochs with INVALID_PRODUCER_EPOCH; and librdkafka with
//! enable.idempotence=true through broker kills.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_engine::format::batch::build::simple_batch;
use shardline_engine::format::batch::compute_crc;
use shardline_tests::{Broker, RawClient};

fn init_producer_id(client: &mut RawClient) -> (i64, i16) {
    let mut request = InitProducerIdRequest::default();
    request.transaction_timeout_ms = 60_000;
    request.producer_id = kafka_protocol::messages::ProducerId(-1);
    request.producer_epoch = -1;
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &request);
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// A batch of `count` records from producer `id` at `epoch`, sequences
/// starting at `sequence`.
fn idempotent_batch(id: i64, epoch: i16, sequence: i32, count: usize) -> Vec<u8> {
    let mut batch = simple_batch(1_700_000_000_000, count, 10);
    batch[43..51].copy_from_slice(&id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Auto-creates `topic` through a Metadata request.
fn create(client: &mut RawClient, topic: &str) {
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut request = kafka_protocol::messages::MetadataRequest::default();
    request.topics = Some(vec![t]);
    request.allow_auto_topic_creation = true;
    let response: kafka_protocol::messages::MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    assert_eq!(response.topics[0].error_code, 0);
}

fn produce(client: &mut RawClient, topic: &str, records: Vec<u8>) -> PartitionProduceResponse {
    let request = shardline_tests::produce_request(topic, 0, records);
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].clone()
}

#[test]
fn sequences_duplicates_gaps_and_epochs() {
    let mut broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.address);
    let (id, epoch) = init_producer_id(&mut client);
    let (other, _) = init_producer_id(&mut client);
    create(&mut client, "idem");
    assert_ne!(id, other, "every InitProducerId gets a new id");

    let first = produce(&mut client, "idem", idempotent_batch(id, epoch, 0, 3));
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    let retry = produce(&mut client, "idem", idempotent_batch(id, epoch, 0, 3));
    assert_eq!((retry.error_code, retry.base_offset), (0, 0), "a retry gets the original offset");
    let next = produce(&mut client, "idem", idempotent_batch(id, epoch, 3, 2));
    assert_eq!((next.error_code, next.base_offset), (0, 3));
    let gap = produce(&mut client, "idem", idempotent_batch(id, epoch, 9, 1));
    assert_eq!(gap.error_code, ResponseError::OutOfOrderSequenceNumber.code());
    let bumped = produce(&mut client, "idem", idempotent_batch(id, epoch + 1, 0, 1));
    assert_eq!((bumped.error_code, bumped.base_offset), (0, 5));
    let fenced = produce(&mut client, "idem", idempotent_batch(id, epoch, 5, 1));
    assert_eq!(fenced.error_code, ResponseError::InvalidProducerEpoch.code());

    // After a clean restart the retry is still recognised...
    broker.stop();
    broker.restart();
    let mut client = RawClient::connect(&broker.address);
    let again = produce(&mut client, "idem", idempotent_batch(id, epoch + 1, 0, 1));
    assert_eq!((again.error_code, again.base_offset), (0, 5));
    // ...and after kill -9 too (the state is rebuilt from the log).
    let more = produce(&mut client, "idem", idempotent_batch(id, epoch + 1, 1, 4));
    assert_eq!((more.error_code, more.base_offset), (0, 6));
    broker.kill9();
    broker.restart();
    let mut client = RawClient::connect(&broker.address);
    let after_kill = produce(&mut client, "idem", idempotent_batch(id, epoch + 1, 1, 4));
    assert_eq!((after_kill.error_code, after_kill.base_offset), (0, 6), "deduplicated after kill -9");
    let end = produce(&mut client, "idem", idempotent_batch(id, epoch + 1, 5, 1));
    assert_eq!((end.error_code, end.base_offset), (0, 10), "nothing was appended twice");
    // A new producer id restarts anywhere; ids keep growing across restarts.
    let (fresh, _) = init_producer_id(&mut client);
    assert!(fresh > other);
}

#[test]
fn librdkafka_idempotent_producer_through_kills() {
    let mut broker = Broker::start(&[]);
    let address = broker.address.clone();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .expect("producer");
    let total = 3000usize;
    let mut sent = 0usize;
    for round in 0..3 {
        let until = (round + 1) * total / 3;
        while sent < until {
            let value = format!("m{sent}");
            match producer.send(BaseRecord::<(), String>::to("idem-rd").payload(&value)) {
                Ok(()) => sent += 1,
                Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        broker.kill9();
        std::thread::sleep(Duration::from_millis(300));
        broker.restart();
    }
    assert_eq!(producer.flush(Duration::from_secs(120)).map_err(|e| e.to_string()), Ok(()));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("group.id", "idem-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("idem-rd", 0, Offset::Beginning).expect("assign");
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // Anything more would be a duplicate.
    let extra_deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < extra_deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), total, "every acknowledged message is there");
    assert_eq!(seen.len(), total, "and none twice");
    // In order: the idempotent producer keeps the order through retries.
    let numbers: Vec<usize> = seen.iter().map(|s| s[1..].parse().expect("number")).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "ordered");
}
