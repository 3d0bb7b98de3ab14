//! DescribeConfigs (v1–4) for topics and this broker: every config the
//! broker understands, with its value, source (explicitly set on the topic,
//! static broker config, or default), synonyms when asked, and type (v3+).
//! `kafka-topics --describe` and AdminClient.describeConfigs rely on it.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::config::BrokerConfig;
use crate::topics::default_topic_configs;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's ConfigType ids (v3+): 1 boolean, 2 string, 3 int, 5 long, 7 list.
fn config_type(name: &str) -> i8 {
    match name {
        "shardline.acks.all.fsync" | "auto.create.topics.enable" => 1,
        "cleanup.policy" => 7,
        "compression.type" | "message.timestamp.type" | "listeners" | "advertised.listeners" | "log.dirs" => 2,
        "index.interval.bytes"
        | "max.message.bytes"
        | "segment.bytes"
        | "num.partitions"
        | "message.max.bytes"
        | "socket.request.max.bytes"
        | "log.segment.bytes"
        | "node.id"
        | "min.insync.replicas" => 3,
        "default.replication.factor" => 4,
        _ => 5,
    }
}

/// This broker's configs under Kafka's names, and whether each was changed
/// from the default.
fn broker_configs(config: &BrokerConfig) -> BTreeMap<String, (String, bool)> {
    let defaults = BrokerConfig::default();
    let mut out = BTreeMap::new();
    let mut put = |name: &str, value: String, default: String| {
        let changed = value != default;
        out.insert(name.to_string(), (value, changed));
    };
    put(
        "auto.create.topics.enable",
        config.auto_create_topics_enable.to_string(),
        defaults.auto_create_topics_enable.to_string(),
    );
    put("num.partitions", config.num_partitions.to_string(), defaults.num_partitions.to_string());
    put(
        "default.replication.factor",
        config.default_replication_factor.to_string(),
        defaults.default_replication_factor.to_string(),
    );
    put("message.max.bytes", config.message_max_bytes.to_string(), defaults.message_max_bytes.to_string());
    put(
        "socket.request.max.bytes",
        config.socket_request_max_bytes.to_string(),
        defaults.socket_request_max_bytes.to_string(),
    );
    put("log.segment.bytes", config.log_segment_bytes.to_string(), defaults.log_segment_bytes.to_string());
    put("log.retention.ms", config.log_retention_ms.to_string(), defaults.log_retention_ms.to_string());
    put("log.retention.bytes", config.log_retention_bytes.to_string(), defaults.log_retention_bytes.to_string());
    put("log.flush.interval.ms", config.log_flush_interval_ms.to_string(), defaults.log_flush_interval_ms.to_string());
    put(
        "log.flush.interval.messages",
        config.log_flush_interval_messages.to_string(),
        defaults.log_flush_interval_messages.to_string(),
    );
    put("log.dirs", config.data_dir.display().to_string(), defaults.data_dir.display().to_string());
    put("listeners", format!("PLAINTEXT://{}", config.listen), format!("PLAINTEXT://{}", defaults.listen));
    put("node.id", config.node_id.to_string(), defaults.node_id.to_string());
    put("shardline.acks.all.fsync", config.acks_all_fsync.to_string(), defaults.acks_all_fsync.to_string());
    out
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    read_only: bool,
    synonyms: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = StrBytes::from_string(name.to_string());
    e.value = Some(StrBytes::from_string(value.to_string()));
    e.read_only = read_only;
    e.config_source = source;
    if synonyms {
        let mut synonym = DescribeConfigsSynonym::default();
        synonym.name = e.name.clone();
        synonym.value = e.value.clone();
        synonym.source = source;
        e.synonyms = vec![synonym];
    }
    if version >= 3 {
        e.config_type = config_type(name);
    }
    e
}

/// Handles DescribeConfigs.
pub fn handle(context: &Context, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let shared = &context.shared;
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = |name: &str| {
            resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let name = resource.resource_name.to_string();
        match resource.resource_type {
            RESOURCE_TOPIC => match shared.topics.image().topics.get(&name) {
                Some(topic) => {
                    for (key, default) in default_topic_configs(&shared.config) {
                        if !wanted(&key) {
                            continue;
                        }
                        let (value, source) = match topic.configs.get(&key) {
                            Some(value) => (value.clone(), SOURCE_TOPIC),
                            None => (default, SOURCE_DEFAULT),
                        };
                        result.configs.push(entry(&key, &value, source, false, request.include_synonyms, version));
                    }
                }
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(StrBytes::from_string(format!("topic {name} does not exist")));
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == shared.config.node_id.to_string() => {
                for (key, (value, changed)) in broker_configs(&shared.config) {
                    if wanted(&key) {
                        let source = if changed { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT };
                        result.configs.push(entry(&key, &value, source, true, request.include_synonyms, version));
                    }
                }
            }
            RESOURCE_BROKER => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message =
                    Some(StrBytes::from_string(format!("this is broker {}, not {name}", shared.config.node_id)));
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(StrBytes::from_string(format!("resource type {other} is not supported")));
            }
        }
        response.results.push(result);
    }
    response
}
