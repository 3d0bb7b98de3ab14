//! DescribeConfigs answers as Kafka's does, over a raw socket: a topic's
//! config set on the topic is DYNAMIC_TOPIC_CONFIG; one whose broker `log.*`
//! setting was set is STATIC_BROKER_CONFIG under that synonym; the rest are
//! DEFAULT_CONFIG, named by their broker synonym. Types are Kafka's,
//! documentation comes when asked, and the broker lists the configs a user
//! looks for.

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardline_tests::{Broker, RawClient};

const TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER: i8 = 4;
const DEFAULT: i8 = 5;
const INT: i8 = 3;
const LONG: i8 = 5;
const LIST: i8 = 7;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn describe(client: &mut RawClient, kind: i8, name: &str, version: i16) -> Vec<DescribeConfigsResourceResult> {
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = kind;
    resource.resource_name = s(name);
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    request.include_synonyms = true;
    request.include_documentation = version >= 3;
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, version, &request);
    assert_eq!(response.results[0].error_code, 0);
    response.results[0].configs.clone()
}

fn find<'a>(configs: &'a [DescribeConfigsResourceResult], name: &str) -> &'a DescribeConfigsResourceResult {
    configs.iter().find(|c| c.name.as_str() == name).unwrap_or_else(|| panic!("{name} is described"))
}

/// (value, source) of each synonym, most specific first.
fn synonyms(config: &DescribeConfigsResourceResult) -> Vec<(String, String, i8)> {
    config
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), s.source))
        .collect()
}

#[test]
fn sources_synonyms_types_and_documentation_are_kafkas() {
    let broker = Broker::start(&["--shards", "1", "--set", "log_retention_ms=3600000"]);
    let mut client = RawClient::connect(&broker.address);
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(s("described"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    let mut retention_bytes = CreatableTopicConfig::default();
    retention_bytes.name = s("retention.bytes");
    retention_bytes.value = Some(s("1000000"));
    topic.configs = vec![retention_bytes];
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    let created: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);

    let configs = describe(&mut client, 2, "described", 4);
    let set_on_topic = find(&configs, "retention.bytes");
    assert_eq!((set_on_topic.value.as_deref(), set_on_topic.config_source), (Some("1000000"), TOPIC_CONFIG));
    assert_eq!(
        synonyms(set_on_topic),
        vec![
            ("retention.bytes".into(), "1000000".into(), TOPIC_CONFIG),
            ("log.retention.bytes".into(), "-1".into(), DEFAULT)
        ]
    );
    let from_broker = find(&configs, "retention.ms");
    assert_eq!((from_broker.value.as_deref(), from_broker.config_source), (Some("3600000"), STATIC_BROKER));
    assert_eq!(
        synonyms(from_broker),
        vec![
            ("log.retention.ms".into(), "3600000".into(), STATIC_BROKER),
            ("log.retention.ms".into(), "604800000".into(), DEFAULT)
        ]
    );
    let built_in = find(&configs, "segment.bytes");
    assert_eq!((built_in.value.as_deref(), built_in.config_source), (Some("1073741824"), DEFAULT));
    assert_eq!(synonyms(built_in), vec![("log.segment.bytes".into(), "1073741824".into(), DEFAULT)]);
    assert_eq!((find(&configs, "segment.bytes").config_type, find(&configs, "retention.ms").config_type), (INT, LONG));
    assert_eq!(find(&configs, "cleanup.policy").config_type, LIST);
    assert!(configs.iter().all(|c| c.documentation.as_ref().is_some_and(|d| !d.is_empty())), "documented");
    assert!(configs.iter().all(|c| !c.read_only));

    let broker_configs = describe(&mut client, 4, "0", 4);
    for name in ["advertised.listeners", "listeners", "log.dirs", "num.partitions", "max.connections"] {
        find(&broker_configs, name);
    }
    assert_eq!(find(&broker_configs, "default.replication.factor").config_type, INT);
    assert_eq!(find(&broker_configs, "log.retention.ms").config_source, STATIC_BROKER);
    assert_eq!(find(&broker_configs, "num.partitions").config_source, DEFAULT);
    // The test harness gives --listen and --data-dir: static broker configs.
    let listeners = find(&broker_configs, "listeners");
    assert_eq!(listeners.config_source, STATIC_BROKER);
    assert_eq!(listeners.value.as_deref(), Some(format!("PLAINTEXT://{}", broker.address).as_str()));
    assert_eq!(find(&broker_configs, "log.dirs").config_source, STATIC_BROKER);
    assert!(broker_configs.iter().all(|c| c.read_only), "nothing changes broker configs at runtime");

    // Before v3 there are no types and no documentation.
    let v1 = describe(&mut client, 2, "described", 1);
    assert!(v1.iter().all(|c| c.config_type == 0 && c.documentation.as_ref().is_none_or(|d| d.is_empty())));
    assert_eq!(find(&v1, "retention.ms").config_source, STATIC_BROKER);
}

#[test]
fn metadata_reports_authorized_operations_when_asked() {
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let broker = Broker::start(&["--shards", "1"]);
    let mut client = RawClient::connect(&broker.address);
    let ask = |client: &mut RawClient, version: i16, asked: bool| -> MetadataResponse {
        let mut request = MetadataRequest::default();
        request.topics = None;
        request.allow_auto_topic_creation = false;
        request.include_topic_authorized_operations = asked;
        if version <= 10 {
            request.include_cluster_authorized_operations = asked;
        }
        client.call(ApiKey::Metadata, version, &request)
    };
    let mut create = CreateTopicsRequest::default();
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(s("operations"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    create.topics = vec![topic];
    let _: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &create);
    // No authorizer: every operation a topic and the cluster support.
    let asked = ask(&mut client, 10, true);
    assert_eq!(asked.cluster_authorized_operations, 8096);
    assert!(asked.topics.iter().all(|t| t.topic_authorized_operations == 3576), "{:?}", asked.topics);
    let not_asked = ask(&mut client, 10, false);
    assert_eq!(not_asked.cluster_authorized_operations, i32::MIN);
    assert!(not_asked.topics.iter().all(|t| t.topic_authorized_operations == i32::MIN));
    let v12 = ask(&mut client, 12, true);
    assert!(!v12.topics.is_empty() && v12.topics.iter().all(|t| t.topic_authorized_operations == 3576));
}
