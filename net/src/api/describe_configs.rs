//! DescribeConfigs (v1–4) for topics and this broker: every config in the
//! catalog (`config_catalog`), with its value and source as Kafka gives
//! them (set on the topic; a static broker config when the broker's setting
//! was set; else the built-in default), synonyms when asked, and type and
//! documentation (v3+). `kafka-topics --describe`, `kafka-configs` and
//! AdminClient.describeConfigs rely on it.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::config::BrokerConfig;
use crate::config_catalog::{BrokerConfigDef, ConfigType, TopicConfigDef, BROKER_CONFIGS, TOPIC_CONFIGS};
use crate::topics::default_topic_configs;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut synonym = DescribeConfigsSynonym::default();
    synonym.name = StrBytes::from_string(name.to_string());
    synonym.value = Some(StrBytes::from_string(value.to_string()));
    synonym.source = source;
    synonym
}

/// What the request asks to be included beside values.
#[derive(Clone, Copy)]
struct Detail {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

/// One config as DescribeConfigs answers it: `synonyms` are the sources
/// more specific than its `default`, in Kafka's order (the most specific
/// first); the value is the first of them, else the default.
fn entry(
    name: &str,
    config_type: ConfigType,
    doc: &'static str,
    read_only: bool,
    mut synonyms: Vec<DescribeConfigsSynonym>,
    default: DescribeConfigsSynonym,
    detail: Detail,
) -> DescribeConfigsResourceResult {
    let effective = synonyms.first().unwrap_or(&default);
    let mut e = DescribeConfigsResourceResult::default();
    e.name = StrBytes::from_string(name.to_string());
    e.value = effective.value.clone();
    e.config_source = effective.source;
    synonyms.push(default);
    e.read_only = read_only;
    if detail.synonyms {
        e.synonyms = synonyms;
    }
    if detail.version >= 3 {
        e.config_type = config_type as i8;
        e.documentation = detail.documentation.then(|| StrBytes::from_static_str(doc));
    }
    e
}

/// A topic config: set on the topic (DYNAMIC_TOPIC_CONFIG), else from the
/// broker's `log.*` synonym when that is set (STATIC_BROKER_CONFIG), else
/// the built-in default (DEFAULT_CONFIG, under the synonym's name).
/// `defaults` are the topic defaults from the broker's configuration and
/// the built-in ones.
fn topic_entry(
    def: &TopicConfigDef,
    set_on_topic: Option<&String>,
    config: &BrokerConfig,
    defaults: &TopicDefaults,
    detail: Detail,
) -> DescribeConfigsResourceResult {
    let value_in = |map: &BTreeMap<String, String>| map.get(def.name).cloned().unwrap_or_default();
    let (broker_value, built_in) = (value_in(&defaults.configured), value_in(&defaults.built_in));
    let mut synonyms = Vec::new();
    if let Some(value) = set_on_topic {
        synonyms.push(synonym(def.name, value, SOURCE_TOPIC));
    }
    if def.broker_key.is_some_and(|key| config.is_explicit(key)) {
        synonyms.push(synonym(def.broker_synonym, &broker_value, SOURCE_STATIC_BROKER));
    }
    let default = synonym(def.broker_synonym, &built_in, SOURCE_DEFAULT);
    entry(def.name, def.config_type, def.doc, false, synonyms, default, detail)
}

/// Topic defaults, computed once per described topic.
struct TopicDefaults {
    configured: BTreeMap<String, String>,
    built_in: BTreeMap<String, String>,
}

/// A broker config: STATIC_BROKER_CONFIG when set in the configuration,
/// else DEFAULT_CONFIG. Read-only: nothing changes them at runtime.
fn broker_entry(def: &BrokerConfigDef, config: &BrokerConfig, detail: Detail) -> DescribeConfigsResourceResult {
    let mut synonyms = Vec::new();
    if def.key.is_some_and(|key| config.is_explicit(key)) {
        synonyms.push(synonym(def.name, &(def.value)(config), SOURCE_STATIC_BROKER));
    }
    let default = synonym(def.name, &(def.value)(&BrokerConfig::default()), SOURCE_DEFAULT);
    entry(def.name, def.config_type, def.doc, true, synonyms, default, detail)
}

/// Handles DescribeConfigs.
pub fn handle(context: &Context, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let shared = &context.shared;
    let detail = Detail { synonyms: request.include_synonyms, documentation: request.include_documentation, version };
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
                    let defaults = TopicDefaults {
                        configured: default_topic_configs(&shared.config),
                        built_in: default_topic_configs(&BrokerConfig::default()),
                    };
                    for def in TOPIC_CONFIGS.iter().filter(|def| wanted(def.name)) {
                        let set_on_topic = topic.configs.get(def.name);
                        result.configs.push(topic_entry(def, set_on_topic, &shared.config, &defaults, detail));
                    }
                }
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(StrBytes::from_string(format!("topic {name} does not exist")));
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == shared.config.node_id.to_string() => {
                for def in BROKER_CONFIGS.iter().filter(|def| wanted(def.name)) {
                    result.configs.push(broker_entry(def, &shared.config, detail));
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
