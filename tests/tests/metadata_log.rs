//! The single node as its own one-voter controller: topics are records of
//! the metadata log under `<data_dir>/__cluster_metadata-0/`, durable once
//! CreateTopics or DeleteTopics answers (kill -9 right after loses
//! nothing, and a deleted topic stays deleted), compacted into snapshots;
//! and a data directory from before the metadata log keeps its topics,
//! ids, configs and data on its first start with it, brought in once.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use shardline_tests::{Broker, RawClient};
use uuid::Uuid;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Every topic the broker lists, with its id and partition count.
fn topics(address: &str) -> BTreeMap<String, (Uuid, usize)> {
    let mut client = RawClient::connect(address);
    let mut request = MetadataRequest::default();
    request.topics = None;
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    response
        .topics
        .iter()
        .map(|t| {
            assert_eq!(t.error_code, 0, "{:?}", t.name);
            (t.name.as_ref().expect("named").0.to_string(), (t.topic_id, t.partitions.len()))
        })
        .collect()
}

fn create(client: &mut RawClient, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(s(name));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    topic.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = s(k);
            c.value = Some(s(v));
            c
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 30_000;
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0, "create {name}: {:?}", response.topics[0].error_message);
}

fn delete(client: &mut RawClient, name: &str) {
    let mut request = DeleteTopicsRequest::default();
    request.topic_names = vec![TopicName(s(name))];
    request.timeout_ms = 30_000;
    let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &request);
    assert_eq!(response.responses[0].error_code, 0, "delete {name}");
}

fn topic_config(client: &mut RawClient, topic: &str, name: &str) -> Option<String> {
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = s(topic);
    resource.configuration_keys = Some(vec![s(name)]);
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &request);
    assert_eq!(response.results[0].error_code, 0);
    response.results[0].configs.iter().find(|c| c.name.as_str() == name)?.value.as_ref().map(|v| v.to_string())
}

fn produce(address: &str, topic: &str, partition: i32, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    futures::executor::block_on(async {
        for i in 0..count {
            let value = format!("v{i}");
            producer
                .send(FutureRecord::<(), _>::to(topic).partition(partition).payload(&value), Duration::from_secs(20))
                .await
                .expect("acknowledged");
        }
    });
}

#[test]
fn topic_changes_are_durable_when_answered_and_snapshots_compact_the_log() {
    let mut broker = Broker::start(&["--shards", "2", "--set", "metadata_snapshot_entries=10"]);
    let mut client = RawClient::connect(&broker.address);
    for i in 0..25 {
        create(&mut client, &format!("t{i:02}"), 1 + (i % 3), &[]);
    }
    for i in (0..25).step_by(5) {
        delete(&mut client, &format!("t{i:02}"));
    }
    let before = topics(&broker.address);
    assert_eq!(before.len(), 20, "{before:?}");
    // kill -9 right after the last answer: every answered change is in the log.
    broker.kill9();
    let dir = broker.data_dir.join("__cluster_metadata-0");
    assert!(dir.join("log").is_file(), "the metadata log is under __cluster_metadata-0");
    assert!(dir.join("snapshot").is_file(), "35 entries with a snapshot every 10 leave a snapshot");
    broker.restart();
    assert_eq!(topics(&broker.address), before, "the same topics, ids and partitions after kill -9");
    for i in (0..25).step_by(5) {
        assert!(!broker.data_dir.join(format!("t{i:02}-0")).exists(), "a deleted topic's files stay removed");
    }
    // Topics keep working: produce to one created before the kill.
    produce(&broker.address, "t01", 1, 3);
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(client.list_offset("t01", 1, -1, 0).offset, 3);
    // The log was compacted: it holds far fewer entries than were written.
    let log_bytes = std::fs::metadata(dir.join("log")).expect("log").len();
    assert!(log_bytes < 64 * 1024, "the log is compacted behind the snapshot: {log_bytes} bytes");
}

#[test]
fn a_data_directory_from_before_the_metadata_log_keeps_its_topics_once_brought_in() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let mut client = RawClient::connect(&broker.address);
    create(&mut client, "old-a", 3, &[("retention.ms", "12345678")]);
    create(&mut client, "old-b", 1, &[]);
    produce(&broker.address, "old-a", 1, 10);
    let before = topics(&broker.address);
    assert!(broker.stop().success());
    // What a data directory of the earlier layout holds: topics.json and
    // the partitions, no metadata log.
    std::fs::remove_dir_all(broker.data_dir.join("__cluster_metadata-0")).expect("remove the metadata log");
    // It had handed out producer ids below 7000.
    std::fs::write(broker.data_dir.join("__shardline/producer-ids"), "7000\n").expect("legacy producer ids");
    broker.restart();
    assert!(
        broker.stderr().contains("brought the data directory's topics into the metadata log"),
        "{}",
        broker.stderr()
    );
    assert_eq!(topics(&broker.address), before, "ids and partitions kept");
    let mut client = RawClient::connect(&broker.address);
    assert_eq!(client.list_offset("old-a", 1, -1, 0).offset, 10, "data kept");
    assert_eq!(topic_config(&mut client, "old-a", "retention.ms").as_deref(), Some("12345678"), "configs kept");
    assert!(shardline_tests::init_producer_id(&mut client) >= 7000, "producer ids continue after the old ones");
    // Once in the log, a later start does not bring them in again, and
    // a topic deleted since stays deleted.
    delete(&mut client, "old-b");
    assert!(broker.stop().success());
    broker.restart();
    assert_eq!(broker.stderr().matches("brought the data directory's topics into the metadata log").count(), 1);
    let after = topics(&broker.address);
    assert_eq!(after.keys().collect::<Vec<_>>(), vec!["old-a"]);
}
