//! The configs this broker describes under Kafka's names: for each topic
//! config its type, documentation and broker-level synonym (the `log.*`
//! setting that gives its default), and for each broker config its type,
//! documentation, the Shardline setting behind it and its value. One home
//! for what DescribeConfigs answers; shared by every shard (static data).

use crate::config::BrokerConfig;

/// Kafka's ConfigType ids as DescribeConfigs v3+ sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// BOOLEAN.
    Boolean = 1,
    /// STRING.
    String = 2,
    /// INT.
    Int = 3,
    /// LONG.
    Long = 5,
    /// LIST.
    List = 7,
}

/// A topic config: its broker synonym and, when this broker has a setting
/// for that synonym, the setting's key (`None`: the built-in default only).
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// Kafka's topic config name.
    pub name: &'static str,
    /// The broker config that gives its default (Kafka's "server default property").
    pub broker_synonym: &'static str,
    /// The Shardline setting behind `broker_synonym`, if there is one.
    pub broker_key: Option<&'static str>,
    /// Its type.
    pub config_type: ConfigType,
    /// What it does.
    pub doc: &'static str,
}

/// Every topic config this broker understands.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        broker_key: None,
        config_type: ConfigType::List,
        doc: "What happens to old segments: \"delete\" removes them past the retention limits (the only policy supported).",
    },
    TopicConfigDef {
        name: "compression.gzip.level",
        broker_synonym: "compression.gzip.level",
        broker_key: None,
        config_type: ConfigType::Int,
        doc: "The gzip level (1-9, -1: 6) batches are recompressed at when compression.type is gzip.",
    },
    TopicConfigDef {
        name: "compression.lz4.level",
        broker_synonym: "compression.lz4.level",
        broker_key: None,
        config_type: ConfigType::Int,
        doc: "The lz4 level (1-17) when compression.type is lz4; checked, but Shardline's lz4 has one (fast) level.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_synonym: "compression.type",
        broker_key: None,
        config_type: ConfigType::String,
        doc: "The stored compression: \"producer\" keeps batches as the producer compressed them; uncompressed, gzip, snappy, lz4 or zstd recompresses, on produce, a batch the producer compressed otherwise.",
    },
    TopicConfigDef {
        name: "compression.zstd.level",
        broker_synonym: "compression.zstd.level",
        broker_key: None,
        config_type: ConfigType::Int,
        doc: "The zstd level (-131072-22) batches are recompressed at when compression.type is zstd.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
        broker_key: Some("log_flush_interval_messages"),
        config_type: ConfigType::Long,
        doc: "fdatasync the log after this many messages even if no acks=all producer waits for it.",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
        broker_key: Some("log_flush_interval_ms"),
        config_type: ConfigType::Long,
        doc: "fdatasync written data at least this often, in milliseconds.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_synonym: "log.index.interval.bytes",
        broker_key: None,
        config_type: ConfigType::Int,
        doc: "Bytes of records between two entries of the sparse offset index.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        broker_key: Some("message_max_bytes"),
        config_type: ConfigType::Int,
        doc: "The largest record batch the topic accepts, after compression.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_synonym: "log.message.timestamp.after.max.ms",
        broker_key: Some("log_message_timestamp_after_max_ms"),
        config_type: ConfigType::Long,
        doc: "How far ahead of the broker's clock a record's CreateTime may be; later ones are refused.",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_synonym: "log.message.timestamp.before.max.ms",
        broker_key: Some("log_message_timestamp_before_max_ms"),
        config_type: ConfigType::Long,
        doc: "How far behind the broker's clock a record's CreateTime may be; older ones are refused.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        broker_key: None,
        config_type: ConfigType::String,
        doc: "Which timestamp records keep: CreateTime, the producer's (the only type supported).",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        broker_key: None,
        config_type: ConfigType::Int,
        doc: "Replicas that must have an acks=all write before it is acknowledged.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        broker_key: Some("log_retention_bytes"),
        config_type: ConfigType::Long,
        doc: "Oldest segments are deleted while a partition is larger than this (-1: no limit).",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        broker_key: Some("log_retention_ms"),
        config_type: ConfigType::Long,
        doc: "Segments whose newest record is older than this are deleted (-1: kept forever).",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        broker_key: Some("log_segment_bytes"),
        config_type: ConfigType::Int,
        doc: "A new segment is started when the active one would grow past this size.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        broker_key: None,
        config_type: ConfigType::Long,
        doc: "A non-empty segment older than this is rolled, so retention can delete it.",
    },
    TopicConfigDef {
        name: "shardline.acks.all.fsync",
        broker_synonym: "shardline.acks.all.fsync",
        broker_key: Some("acks_all_fsync"),
        config_type: ConfigType::Boolean,
        doc: "true: acks=all answers once the records are fdatasynced; false: once written (Kafka's semantics).",
    },
];

/// A broker config: the Shardline setting behind it and its value.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    /// Kafka's broker config name.
    pub name: &'static str,
    /// The Shardline setting (`None`: fixed, not configurable here).
    pub key: Option<&'static str>,
    /// Its type.
    pub config_type: ConfigType,
    /// What it does.
    pub doc: &'static str,
    /// Its value under a configuration.
    pub value: fn(&BrokerConfig) -> String,
}

fn listener(address: &str) -> String {
    format!("PLAINTEXT://{address}")
}

fn advertised(config: &BrokerConfig) -> String {
    match config.advertised() {
        Ok((host, port)) => listener(&format!("{host}:{port}")),
        Err(_) => listener(&config.advertised_listener),
    }
}

/// Every broker config this broker describes.
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    BrokerConfigDef {
        name: "advertised.listeners",
        key: Some("advertised_listener"),
        config_type: ConfigType::String,
        doc: "The address clients are given in Metadata.",
        value: advertised,
    },
    BrokerConfigDef {
        name: "auto.create.topics.enable",
        key: Some("auto_create_topics_enable"),
        config_type: ConfigType::Boolean,
        doc: "Whether Metadata requests create topics that do not exist.",
        value: |c| c.auto_create_topics_enable.to_string(),
    },
    BrokerConfigDef {
        name: "auto.leader.rebalance.enable",
        key: Some("auto_leader_rebalance_enable"),
        config_type: ConfigType::Boolean,
        doc: "Whether the active controller moves leadership back to preferred replicas.",
        value: |c| c.auto_leader_rebalance_enable.to_string(),
    },
    BrokerConfigDef {
        name: "broker.heartbeat.interval.ms",
        key: Some("broker_heartbeat_interval_ms"),
        config_type: ConfigType::Int,
        doc: "How often a broker heartbeats to the active controller.",
        value: |c| c.broker_heartbeat_interval_ms.to_string(),
    },
    BrokerConfigDef {
        name: "broker.id",
        key: Some("node_id"),
        config_type: ConfigType::Int,
        doc: "This broker's id (the same as node.id).",
        value: |c| c.node_id.to_string(),
    },
    BrokerConfigDef {
        name: "broker.session.timeout.ms",
        key: Some("broker_session_timeout_ms"),
        config_type: ConfigType::Int,
        doc: "A broker without a heartbeat for this long is fenced.",
        value: |c| c.broker_session_timeout_ms.to_string(),
    },
    BrokerConfigDef {
        name: "compression.type",
        key: None,
        config_type: ConfigType::String,
        doc: "The default stored compression of topics: as the producer sent it.",
        value: |_| "producer".into(),
    },
    BrokerConfigDef {
        name: "connections.max.idle.ms",
        key: Some("connections_max_idle_ms"),
        config_type: ConfigType::Long,
        doc: "A connection that sends nothing for this long is closed.",
        value: |c| c.connections_max_idle_ms.to_string(),
    },
    BrokerConfigDef {
        name: "default.replication.factor",
        key: Some("default_replication_factor"),
        config_type: ConfigType::Int,
        doc: "Replication factor of auto-created topics and of CreateTopics with -1.",
        value: |c| c.default_replication_factor.to_string(),
    },
    BrokerConfigDef {
        name: "group.consumer.heartbeat.interval.ms",
        key: Some("group_consumer_heartbeat_interval_ms"),
        config_type: ConfigType::Int,
        doc: "The heartbeat interval given to KIP-848 consumer group members.",
        value: |c| c.group_consumer_heartbeat_interval_ms.to_string(),
    },
    BrokerConfigDef {
        name: "group.consumer.session.timeout.ms",
        key: Some("group_consumer_session_timeout_ms"),
        config_type: ConfigType::Int,
        doc: "A KIP-848 member silent this long is removed from its group.",
        value: |c| c.group_consumer_session_timeout_ms.to_string(),
    },
    BrokerConfigDef {
        name: "group.initial.rebalance.delay.ms",
        key: Some("group_initial_rebalance_delay_ms"),
        config_type: ConfigType::Int,
        doc: "How long the first rebalance of an empty classic group waits for more members.",
        value: |c| c.group_initial_rebalance_delay_ms.to_string(),
    },
    BrokerConfigDef {
        name: "group.max.session.timeout.ms",
        key: Some("group_max_session_timeout_ms"),
        config_type: ConfigType::Int,
        doc: "The longest session timeout a classic group member may ask for.",
        value: |c| c.group_max_session_timeout_ms.to_string(),
    },
    BrokerConfigDef {
        name: "group.max.size",
        key: Some("group_max_size"),
        config_type: ConfigType::Int,
        doc: "The most members one group may have.",
        value: |c| c.group_max_size.to_string(),
    },
    BrokerConfigDef {
        name: "group.min.session.timeout.ms",
        key: Some("group_min_session_timeout_ms"),
        config_type: ConfigType::Int,
        doc: "The shortest session timeout a classic group member may ask for.",
        value: |c| c.group_min_session_timeout_ms.to_string(),
    },
    BrokerConfigDef {
        name: "leader.imbalance.check.interval.seconds",
        key: Some("leader_imbalance_check_interval_seconds"),
        config_type: ConfigType::Long,
        doc: "How often the active controller moves leadership back to preferred replicas.",
        value: |c| c.leader_imbalance_check_interval_seconds.to_string(),
    },
    BrokerConfigDef {
        name: "listeners",
        key: Some("listen"),
        config_type: ConfigType::String,
        doc: "The address the broker listens on (each shard binds it with SO_REUSEPORT).",
        value: |c| listener(&c.listen),
    },
    BrokerConfigDef {
        name: "log.cleanup.policy",
        key: None,
        config_type: ConfigType::List,
        doc: "Default cleanup.policy: delete.",
        value: |_| "delete".into(),
    },
    BrokerConfigDef {
        name: "log.dirs",
        key: Some("data_dir"),
        config_type: ConfigType::String,
        doc: "The directory holding partitions and metadata.",
        value: |c| c.data_dir.display().to_string(),
    },
    BrokerConfigDef {
        name: "log.flush.interval.messages",
        key: Some("log_flush_interval_messages"),
        config_type: ConfigType::Long,
        doc: "Default flush.messages.",
        value: |c| long_or_max(c.log_flush_interval_messages),
    },
    BrokerConfigDef {
        name: "log.flush.interval.ms",
        key: Some("log_flush_interval_ms"),
        config_type: ConfigType::Long,
        doc: "Default flush.ms.",
        value: |c| long_or_max(c.log_flush_interval_ms),
    },
    BrokerConfigDef {
        name: "log.index.interval.bytes",
        key: None,
        config_type: ConfigType::Int,
        doc: "Default index.interval.bytes.",
        value: |_| "4096".into(),
    },
    BrokerConfigDef {
        name: "log.message.timestamp.after.max.ms",
        key: Some("log_message_timestamp_after_max_ms"),
        config_type: ConfigType::Long,
        doc: "Default message.timestamp.after.max.ms.",
        value: |c| c.log_message_timestamp_after_max_ms.to_string(),
    },
    BrokerConfigDef {
        name: "log.message.timestamp.before.max.ms",
        key: Some("log_message_timestamp_before_max_ms"),
        config_type: ConfigType::Long,
        doc: "Default message.timestamp.before.max.ms.",
        value: |c| c.log_message_timestamp_before_max_ms.to_string(),
    },
    BrokerConfigDef {
        name: "log.message.timestamp.type",
        key: None,
        config_type: ConfigType::String,
        doc: "Default message.timestamp.type: CreateTime.",
        value: |_| "CreateTime".into(),
    },
    BrokerConfigDef {
        name: "log.retention.bytes",
        key: Some("log_retention_bytes"),
        config_type: ConfigType::Long,
        doc: "Default retention.bytes.",
        value: |c| c.log_retention_bytes.to_string(),
    },
    BrokerConfigDef {
        name: "log.retention.ms",
        key: Some("log_retention_ms"),
        config_type: ConfigType::Long,
        doc: "Default retention.ms.",
        value: |c| c.log_retention_ms.to_string(),
    },
    BrokerConfigDef {
        name: "log.roll.ms",
        key: None,
        config_type: ConfigType::Long,
        doc: "Default segment.ms: seven days.",
        value: |_| (7 * 24 * 3600 * 1000i64).to_string(),
    },
    BrokerConfigDef {
        name: "log.segment.bytes",
        key: Some("log_segment_bytes"),
        config_type: ConfigType::Int,
        doc: "Default segment.bytes.",
        value: |c| c.log_segment_bytes.to_string(),
    },
    BrokerConfigDef {
        name: "max.connections",
        key: Some("max_connections"),
        config_type: ConfigType::Int,
        doc: "Open client connections of the broker; at the limit new ones wait until one closes.",
        value: |c| c.max_connections.to_string(),
    },
    BrokerConfigDef {
        name: "max.connections.per.ip",
        key: Some("max_connections_per_ip"),
        config_type: ConfigType::Int,
        doc: "Open connections from one address; one more is closed at once.",
        value: |c| c.max_connections_per_ip.to_string(),
    },
    BrokerConfigDef {
        name: "max.connections.per.ip.overrides",
        key: Some("max_connections_per_ip_overrides"),
        config_type: ConfigType::String,
        doc: "Per-address limits that replace max.connections.per.ip, as ip:count pairs.",
        value: |c| c.max_connections_per_ip_overrides.clone(),
    },
    BrokerConfigDef {
        name: "message.max.bytes",
        key: Some("message_max_bytes"),
        config_type: ConfigType::Int,
        doc: "Default max.message.bytes.",
        value: |c| c.message_max_bytes.to_string(),
    },
    BrokerConfigDef {
        name: "min.insync.replicas",
        key: None,
        config_type: ConfigType::Int,
        doc: "Default min.insync.replicas.",
        value: |_| "1".into(),
    },
    BrokerConfigDef {
        name: "node.id",
        key: Some("node_id"),
        config_type: ConfigType::Int,
        doc: "This broker's id.",
        value: |c| c.node_id.to_string(),
    },
    BrokerConfigDef {
        name: "num.partitions",
        key: Some("num_partitions"),
        config_type: ConfigType::Int,
        doc: "Partitions of auto-created topics and of CreateTopics with -1.",
        value: |c| c.num_partitions.to_string(),
    },
    BrokerConfigDef {
        name: "offset.metadata.max.bytes",
        key: Some("offset_metadata_max_bytes"),
        config_type: ConfigType::Int,
        doc: "The longest metadata string an offset commit may carry.",
        value: |c| c.offset_metadata_max_bytes.to_string(),
    },
    BrokerConfigDef {
        name: "offsets.retention.check.interval.ms",
        key: Some("offsets_retention_check_interval_ms"),
        config_type: ConfigType::Long,
        doc: "How often expired committed offsets are looked for.",
        value: |c| c.offsets_retention_check_interval_ms.to_string(),
    },
    BrokerConfigDef {
        name: "offsets.retention.minutes",
        key: Some("offsets_retention_minutes"),
        config_type: ConfigType::Int,
        doc: "Committed offsets of a group empty this long are deleted.",
        value: |c| c.offsets_retention_minutes.to_string(),
    },
    BrokerConfigDef {
        name: "offsets.topic.num.partitions",
        key: Some("offsets_topic_num_partitions"),
        config_type: ConfigType::Int,
        doc: "Partitions of __consumer_offsets (fixed once it exists).",
        value: |c| c.offsets_topic_num_partitions.to_string(),
    },
    BrokerConfigDef {
        name: "producer.id.expiration.ms",
        key: Some("producer_id_expiration_ms"),
        config_type: ConfigType::Int,
        doc: "An idempotent producer silent this long is forgotten.",
        value: |c| c.producer_id_expiration_ms.to_string(),
    },
    BrokerConfigDef {
        name: "shardline.acks.all.fsync",
        key: Some("acks_all_fsync"),
        config_type: ConfigType::Boolean,
        doc: "Default shardline.acks.all.fsync: whether acks=all waits for fdatasync.",
        value: |c| c.acks_all_fsync.to_string(),
    },
    BrokerConfigDef {
        name: "socket.request.max.bytes",
        key: Some("socket_request_max_bytes"),
        config_type: ConfigType::Int,
        doc: "The largest request frame; a larger one closes the connection.",
        value: |c| c.socket_request_max_bytes.to_string(),
    },
    BrokerConfigDef {
        name: "transaction.max.timeout.ms",
        key: Some("transaction_max_timeout_ms"),
        config_type: ConfigType::Int,
        doc: "The longest transaction.timeout.ms a producer may ask for.",
        value: |c| c.transaction_max_timeout_ms.to_string(),
    },
    BrokerConfigDef {
        name: "transaction.state.log.num.partitions",
        key: Some("transaction_state_num_partitions"),
        config_type: ConfigType::Int,
        doc: "Partitions of __transaction_state (fixed once it exists).",
        value: |c| c.transaction_state_num_partitions.to_string(),
    },
    BrokerConfigDef {
        name: "transactional.id.expiration.ms",
        key: Some("transactional_id_expiration_ms"),
        config_type: ConfigType::Int,
        doc: "A transactional id without a transaction for this long is forgotten.",
        value: |c| c.transactional_id_expiration_ms.to_string(),
    },
];

fn long_or_max(value: i64) -> String {
    if value < 0 {
        i64::MAX.to_string()
    } else {
        value.to_string()
    }
}

/// The broker config named `name`.
pub fn broker_config(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|def| def.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_unique_and_keys_exist() {
        for list in
            [TOPIC_CONFIGS.iter().map(|d| d.name).collect::<Vec<_>>(), BROKER_CONFIGS.iter().map(|d| d.name).collect()]
        {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {list:?}");
        }
        let mut config = BrokerConfig::default();
        let keys = TOPIC_CONFIGS.iter().filter_map(|d| d.broker_key).chain(BROKER_CONFIGS.iter().filter_map(|d| d.key));
        for key in keys {
            let value = match key {
                "listen" | "advertised_listener" => "127.0.0.1:1".to_string(),
                "data_dir" | "max_connections_per_ip_overrides" => String::new(),
                "acks_all_fsync" | "auto_create_topics_enable" | "auto_leader_rebalance_enable" => "true".into(),
                _ => "1".into(),
            };
            config.set(key, &value).unwrap_or_else(|e| panic!("{key} is a setting: {e}"));
        }
        let known: Vec<String> = crate::topics::default_topic_configs(&config).into_keys().collect();
        assert_eq!(
            TOPIC_CONFIGS.iter().map(|d| d.name.to_string()).collect::<Vec<_>>(),
            known,
            "every topic config is described"
        );
        for def in TOPIC_CONFIGS {
            if let Some(key) = def.broker_key {
                let synonym = broker_config(def.broker_synonym).expect("the synonym is described");
                assert_eq!(synonym.key, Some(key), "{} and its synonym share a setting", def.name);
            }
        }
    }
}
