//! Broker configuration: embedded defaults, a TOML file and command-line
//! overrides, validated at startup with an error that names the bad key.
//! Built once on the main thread, then shared read-only by every shard.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use shardline_engine::runtime::io_priority::IoPriority;

/// The broker's configuration. See README.md for every key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `listen`: address the Kafka listener binds.
    pub listen: String,
    /// `advertised_listener`: host:port clients are told to connect to.
    pub advertised_listener: String,
    /// `data_dir`: where partitions and metadata live.
    pub data_dir: PathBuf,
    /// `shards`: executor threads (0 = one per available core).
    pub shards: usize,
    /// `node_id`: this broker's id.
    pub node_id: i32,
    /// `auto_create_topics_enable` (Kafka's auto.create.topics.enable).
    pub auto_create_topics_enable: bool,
    /// `auto_leader_rebalance_enable` (Kafka's
    /// auto.leader.rebalance.enable): the active controller moves
    /// leadership back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader_imbalance_check_interval_seconds` (Kafka's
    /// leader.imbalance.check.interval.seconds): how often it does.
    pub leader_imbalance_check_interval_seconds: i64,
    /// `num_partitions`: default partitions of a new topic.
    pub num_partitions: i32,
    /// `default_replication_factor`: default replication factor.
    pub default_replication_factor: i16,
    /// `acks_all_fsync`: true = acks=all waits for fdatasync (default);
    /// false = Kafka's semantics (no fsync before acknowledging).
    pub acks_all_fsync: bool,
    /// `socket_request_max_bytes`: largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `max_connections` (Kafka's `max.connections`): open client
    /// connections of the whole broker; at the limit, new ones wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// `max_connections_per_ip` (Kafka's `max.connections.per.ip`): open
    /// connections from one address; one more is closed at once.
    pub max_connections_per_ip: usize,
    /// `max_connections_per_ip_overrides` (Kafka's
    /// `max.connections.per.ip.overrides`): `ip:count` pairs, comma-separated.
    pub max_connections_per_ip_overrides: String,
    /// `connections_max_idle_ms` (Kafka's `connections.max.idle.ms`): a
    /// connection with no request bytes for this long is closed.
    pub connections_max_idle_ms: i64,
    /// `test_sync_ledger`: for power-loss tests only: a file where every
    /// data file's durable length is recorded (`storage::sync_ledger`);
    /// empty (the default) records nothing.
    pub test_sync_ledger: String,
    /// `log_segment_bytes`: default `segment.bytes`.
    pub log_segment_bytes: u64,
    /// `log_retention_ms`: default `retention.ms` (-1 = forever).
    pub log_retention_ms: i64,
    /// `log_retention_bytes`: default `retention.bytes` (-1 = no limit).
    pub log_retention_bytes: i64,
    /// `log_flush_interval_ms`: default `flush.ms` (-1 = only when asked).
    pub log_flush_interval_ms: i64,
    /// `log_flush_interval_messages`: default `flush.messages` (-1 = only when asked).
    pub log_flush_interval_messages: i64,
    /// `message_max_bytes`: default `max.message.bytes`.
    pub message_max_bytes: usize,
    /// `log_message_timestamp_before_max_ms`: default
    /// `message.timestamp.before.max.ms` (how far in the past a record's
    /// CreateTime may lie).
    pub log_message_timestamp_before_max_ms: i64,
    /// `log_message_timestamp_after_max_ms`: default
    /// `message.timestamp.after.max.ms` (how far in the future).
    pub log_message_timestamp_after_max_ms: i64,
    /// `batch_cache_bytes`: per-shard cache of recent batches.
    pub batch_cache_bytes: usize,
    /// `index_cache_bytes`: per-shard memory for the loaded indexes of
    /// sealed segments (least recently used dropped first, reloaded on use).
    pub index_cache_bytes: usize,
    /// `io_priority`: each shard thread's I/O priority (`default`,
    /// `realtime:N`, `best-effort:N`), which io_uring gives its reads and
    /// writes.
    pub io_priority: String,
    /// `append_io_priority`: the I/O priority on the SQEs of each
    /// partition's O_DIRECT appends (same forms as `io_priority`; `default`
    /// leaves them at the thread's).
    pub append_io_priority: String,
    /// `fetch_splice`: fetches send records still in a resident segment
    /// file with `splice` (no copy through user space); false copies them.
    pub fetch_splice: bool,
    /// `open_files_per_shard`: segment and index descriptors each shard
    /// keeps open (least recently used closed first; reopened on use).
    pub open_files_per_shard: usize,
    /// `partition_idle_ms`: a segment descriptor no read or write used for
    /// this long (up to twice this) is closed, and a partition with no
    /// append for as long gives back its disk reservation.
    pub partition_idle_ms: u64,
    /// `retention_check_interval_ms`: how often retention runs.
    pub retention_check_interval_ms: u64,
    /// `max_incremental_fetch_session_cache_slots`: fetch sessions per shard
    /// (KIP-227; 0 disables them).
    pub max_incremental_fetch_session_cache_slots: usize,
    /// `offsets_topic_num_partitions`: partitions of `__consumer_offsets` (fixed once created).
    pub offsets_topic_num_partitions: i32,
    /// `offset_metadata_max_bytes`: longest metadata string an offset commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `offsets_retention_minutes`: committed offsets of a group that has been empty this long are deleted.
    pub offsets_retention_minutes: i64,
    /// `offsets_retention_check_interval_ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// `group_min_session_timeout_ms`: shortest session timeout a classic member may ask.
    pub group_min_session_timeout_ms: i32,
    /// `group_max_session_timeout_ms`: longest session timeout a classic member may ask.
    pub group_max_session_timeout_ms: i32,
    /// `group_initial_rebalance_delay_ms`: how long the first rebalance of an empty classic group waits for more members.
    pub group_initial_rebalance_delay_ms: i32,
    /// `group_max_size`: most members of one group.
    pub group_max_size: usize,
    /// `group_consumer_session_timeout_ms`: KIP-848 member session timeout.
    pub group_consumer_session_timeout_ms: i32,
    /// `group_consumer_heartbeat_interval_ms`: KIP-848 heartbeat interval told to members.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `producer_id_expiration_ms`: an idempotent producer silent this long is forgotten (its next batch starts afresh).
    pub producer_id_expiration_ms: i64,
    /// `producer_snapshot_interval_ms`: how often producer state is snapshotted (a crash replays the batches since).
    pub producer_snapshot_interval_ms: u64,
    /// `transaction_state_num_partitions`: partitions of `__transaction_state` (fixed once created).
    pub transaction_state_num_partitions: i32,
    /// `transaction_max_timeout_ms`: longest `transaction.timeout.ms` a producer may ask.
    pub transaction_max_timeout_ms: i32,
    /// `transactional_id_expiration_ms`: a transactional id without a transaction for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `process_roles` (Kafka's `process.roles`): `broker`, `controller`
    /// or both; a single node is both.
    pub process_roles: String,
    /// `controller_quorum_voters` (Kafka's `controller.quorum.voters`):
    /// `id@host:port,...`; empty for a single node, its own one voter.
    pub controller_quorum_voters: String,
    /// `cluster_id`: the cluster this node belongs to; empty keeps the id
    /// the data directory was formatted with (a fresh one on first start).
    pub cluster_id: String,
    /// `broker_rack` (Kafka's `broker.rack`): shown in Metadata.
    pub broker_rack: String,
    /// `broker_session_timeout_ms` (Kafka's `broker.session.timeout.ms`):
    /// a broker without a heartbeat for this long is fenced.
    pub broker_session_timeout_ms: i64,
    /// `broker_heartbeat_interval_ms` (Kafka's
    /// `broker.heartbeat.interval.ms`): how often a broker heartbeats to
    /// the active controller.
    pub broker_heartbeat_interval_ms: i64,
    /// `metadata_snapshot_entries`: metadata log entries between
    /// snapshots of the image (the log before a snapshot is dropped).
    pub metadata_snapshot_entries: u64,
    /// The keys set explicitly (in the file or with `--set`), as opposed to
    /// left at their defaults: DescribeConfigs reports them as static
    /// broker configs.
    #[serde(skip)]
    pub explicit: std::collections::BTreeSet<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            advertised_listener: String::new(),
            data_dir: PathBuf::from("./data"),
            shards: 0,
            node_id: 0,
            auto_create_topics_enable: true,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            num_partitions: 1,
            default_replication_factor: 1,
            acks_all_fsync: true,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: i32::MAX as usize,
            max_connections_per_ip: i32::MAX as usize,
            max_connections_per_ip_overrides: String::new(),
            connections_max_idle_ms: 600_000,
            test_sync_ledger: String::new(),
            log_segment_bytes: 1 << 30,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_flush_interval_ms: -1,
            log_flush_interval_messages: -1,
            message_max_bytes: 1_048_588,
            log_message_timestamp_before_max_ms: i64::MAX,
            log_message_timestamp_after_max_ms: 3_600_000,
            batch_cache_bytes: 64 << 20,
            index_cache_bytes: 64 << 20,
            fetch_splice: true,
            io_priority: "default".into(),
            append_io_priority: "default".into(),
            open_files_per_shard: 2048,
            partition_idle_ms: 60_000,
            retention_check_interval_ms: 300_000,
            max_incremental_fetch_session_cache_slots: 1000,
            offsets_topic_num_partitions: 50,
            offset_metadata_max_bytes: 4096,
            offsets_retention_minutes: 10080,
            offsets_retention_check_interval_ms: 600_000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3000,
            group_max_size: 1_000_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5000,
            producer_id_expiration_ms: 86_400_000,
            producer_snapshot_interval_ms: 30_000,
            transaction_state_num_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            process_roles: "broker,controller".into(),
            controller_quorum_voters: String::new(),
            cluster_id: String::new(),
            broker_rack: String::new(),
            broker_session_timeout_ms: 2500,
            broker_heartbeat_interval_ms: 500,
            metadata_snapshot_entries: 1000,
            explicit: Default::default(),
        }
    }
}

/// A configuration value that cannot start the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// Why it is rejected.
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), reason: reason.into() }
}

impl BrokerConfig {
    /// Parses a TOML file's text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: BrokerConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            // Unknown keys are quoted in the message; type errors are located
            // by their span: the key is what precedes `=` on that line.
            let quoted = message.split('`').nth(1).map(str::to_string);
            let from_span = e.span().and_then(|span| {
                let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next()?;
                Some(line.split('=').next()?.trim().to_string()).filter(|k| !k.is_empty())
            });
            let key = quoted.or(from_span).unwrap_or_else(|| "config file".into());
            bad(&key, message)
        })?;
        if let Ok(table) = text.parse::<toml::Table>() {
            config.explicit = table.keys().cloned().collect();
        }
        Ok(config)
    }

    /// Whether `key` was set explicitly rather than left at its default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Applies one `key=value` override (command line `--set`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
            value.parse().map_err(|_| bad(key, format!("cannot parse {value:?}")))
        }
        match key {
            "listen" => self.listen = value.into(),
            "advertised_listener" => self.advertised_listener = value.into(),
            "data_dir" => self.data_dir = value.into(),
            "shards" => self.shards = parse(key, value)?,
            "node_id" => self.node_id = parse(key, value)?,
            "auto_create_topics_enable" => self.auto_create_topics_enable = parse(key, value)?,
            "auto_leader_rebalance_enable" => self.auto_leader_rebalance_enable = parse(key, value)?,
            "leader_imbalance_check_interval_seconds" => {
                self.leader_imbalance_check_interval_seconds = parse(key, value)?
            }
            "num_partitions" => self.num_partitions = parse(key, value)?,
            "default_replication_factor" => self.default_replication_factor = parse(key, value)?,
            "acks_all_fsync" => self.acks_all_fsync = parse(key, value)?,
            "socket_request_max_bytes" => self.socket_request_max_bytes = parse(key, value)?,
            "max_connections" => self.max_connections = parse(key, value)?,
            "max_connections_per_ip" => self.max_connections_per_ip = parse(key, value)?,
            "max_connections_per_ip_overrides" => self.max_connections_per_ip_overrides = value.into(),
            "connections_max_idle_ms" => self.connections_max_idle_ms = parse(key, value)?,
            "test_sync_ledger" => self.test_sync_ledger = value.into(),
            "log_segment_bytes" => self.log_segment_bytes = parse(key, value)?,
            "log_retention_ms" => self.log_retention_ms = parse(key, value)?,
            "log_retention_bytes" => self.log_retention_bytes = parse(key, value)?,
            "log_flush_interval_ms" => self.log_flush_interval_ms = parse(key, value)?,
            "log_flush_interval_messages" => self.log_flush_interval_messages = parse(key, value)?,
            "message_max_bytes" => self.message_max_bytes = parse(key, value)?,
            "log_message_timestamp_before_max_ms" => self.log_message_timestamp_before_max_ms = parse(key, value)?,
            "log_message_timestamp_after_max_ms" => self.log_message_timestamp_after_max_ms = parse(key, value)?,
            "batch_cache_bytes" => self.batch_cache_bytes = parse(key, value)?,
            "index_cache_bytes" => self.index_cache_bytes = parse(key, value)?,
            "fetch_splice" => self.fetch_splice = parse(key, value)?,
            "io_priority" => self.io_priority = value.into(),
            "append_io_priority" => self.append_io_priority = value.into(),
            "open_files_per_shard" => self.open_files_per_shard = parse(key, value)?,
            "partition_idle_ms" => self.partition_idle_ms = parse(key, value)?,
            "retention_check_interval_ms" => self.retention_check_interval_ms = parse(key, value)?,
            "max_incremental_fetch_session_cache_slots" => {
                self.max_incremental_fetch_session_cache_slots = parse(key, value)?
            }
            "offsets_topic_num_partitions" => self.offsets_topic_num_partitions = parse(key, value)?,
            "offset_metadata_max_bytes" => self.offset_metadata_max_bytes = parse(key, value)?,
            "offsets_retention_minutes" => self.offsets_retention_minutes = parse(key, value)?,
            "offsets_retention_check_interval_ms" => self.offsets_retention_check_interval_ms = parse(key, value)?,
            "group_min_session_timeout_ms" => self.group_min_session_timeout_ms = parse(key, value)?,
            "group_max_session_timeout_ms" => self.group_max_session_timeout_ms = parse(key, value)?,
            "group_initial_rebalance_delay_ms" => self.group_initial_rebalance_delay_ms = parse(key, value)?,
            "group_max_size" => self.group_max_size = parse(key, value)?,
            "group_consumer_session_timeout_ms" => self.group_consumer_session_timeout_ms = parse(key, value)?,
            "group_consumer_heartbeat_interval_ms" => self.group_consumer_heartbeat_interval_ms = parse(key, value)?,
            "producer_id_expiration_ms" => self.producer_id_expiration_ms = parse(key, value)?,
            "producer_snapshot_interval_ms" => self.producer_snapshot_interval_ms = parse(key, value)?,
            "transaction_state_num_partitions" => self.transaction_state_num_partitions = parse(key, value)?,
            "transaction_max_timeout_ms" => self.transaction_max_timeout_ms = parse(key, value)?,
            "transactional_id_expiration_ms" => self.transactional_id_expiration_ms = parse(key, value)?,
            "process_roles" => self.process_roles = value.into(),
            "controller_quorum_voters" => self.controller_quorum_voters = value.into(),
            "cluster_id" => self.cluster_id = value.into(),
            "broker_rack" => self.broker_rack = value.into(),
            "broker_session_timeout_ms" => self.broker_session_timeout_ms = parse(key, value)?,
            "broker_heartbeat_interval_ms" => self.broker_heartbeat_interval_ms = parse(key, value)?,
            "metadata_snapshot_entries" => self.metadata_snapshot_entries = parse(key, value)?,
            other => return Err(bad(other, "unknown key")),
        }
        self.explicit.insert(key.to_string());
        Ok(())
    }

    /// `io_priority` (the shard threads') and `append_io_priority` (the
    /// appends' SQEs), parsed.
    pub fn io_priorities(&self) -> Result<(IoPriority, IoPriority), ConfigError> {
        let thread = IoPriority::parse(&self.io_priority).map_err(|why| bad("io_priority", why))?;
        let appends = IoPriority::parse(&self.append_io_priority).map_err(|why| bad("append_io_priority", why))?;
        Ok((thread, appends))
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.advertised()?;
        self.io_priorities()?;
        if self.num_partitions < 1 {
            return Err(bad("num_partitions", "must be at least 1"));
        }
        if self.default_replication_factor != 1 {
            return Err(bad("default_replication_factor", "a single node supports only 1"));
        }
        if self.socket_request_max_bytes < 1024 || self.socket_request_max_bytes > i32::MAX as usize {
            return Err(bad("socket_request_max_bytes", "must be between 1024 and 2147483647"));
        }
        if self.max_connections < 1 {
            return Err(bad("max_connections", "must be at least 1"));
        }
        self.per_ip_overrides()?;
        if self.max_connections_per_ip < 1 && self.max_connections_per_ip_overrides.trim().is_empty() {
            // Kafka: 0 is allowed only with overrides (only listed addresses may connect).
            return Err(bad("max_connections_per_ip", "0 needs max_connections_per_ip_overrides"));
        }
        if self.open_files_per_shard < 4 {
            return Err(bad("open_files_per_shard", "must be at least 4"));
        }
        if self.partition_idle_ms < 1 {
            return Err(bad("partition_idle_ms", "must be positive"));
        }
        if self.connections_max_idle_ms < 1 {
            return Err(bad("connections_max_idle_ms", "must be positive"));
        }
        if self.log_segment_bytes < 1024 * 1024 || self.log_segment_bytes > i32::MAX as u64 {
            return Err(bad("log_segment_bytes", "must be between 1 MiB and 2 GiB"));
        }
        if self.message_max_bytes < 1024 || self.message_max_bytes > 64 << 20 {
            return Err(bad("message_max_bytes", "must be between 1 KiB and 64 MiB"));
        }
        if self.log_message_timestamp_before_max_ms < 0 || self.log_message_timestamp_after_max_ms < 0 {
            return Err(bad("log_message_timestamp_before_max_ms", "timestamp bounds must be 0 or more"));
        }
        if self.shards > 1024 {
            return Err(bad("shards", "at most 1024"));
        }
        if self.log_retention_ms < -1 || self.log_retention_bytes < -1 {
            return Err(bad(
                if self.log_retention_ms < -1 { "log_retention_ms" } else { "log_retention_bytes" },
                "must be -1 or more",
            ));
        }
        if !(1..=10_000).contains(&self.offsets_topic_num_partitions) {
            return Err(bad("offsets_topic_num_partitions", "must be 1 to 10000"));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(bad("group_max_session_timeout_ms", "must be at least group_min_session_timeout_ms (≥ 1)"));
        }
        if self.group_initial_rebalance_delay_ms < 0 {
            return Err(bad("group_initial_rebalance_delay_ms", "must be 0 or more"));
        }
        if self.group_consumer_session_timeout_ms < 1 || self.group_consumer_heartbeat_interval_ms < 1 {
            return Err(bad(
                "group_consumer_session_timeout_ms",
                "session timeout and heartbeat interval must be positive",
            ));
        }
        if self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms {
            return Err(bad("group_consumer_heartbeat_interval_ms", "must be below group_consumer_session_timeout_ms"));
        }
        if self.producer_id_expiration_ms < 1 || self.producer_snapshot_interval_ms < 100 {
            return Err(bad("producer_id_expiration_ms", "expiration ≥ 1 ms and snapshot interval ≥ 100 ms"));
        }
        if !(1..=10_000).contains(&self.transaction_state_num_partitions) {
            return Err(bad("transaction_state_num_partitions", "must be 1 to 10000"));
        }
        if self.node_id < 0 {
            return Err(bad("node_id", "must not be negative"));
        }
        if self.broker_heartbeat_interval_ms < 10 || self.broker_heartbeat_interval_ms > 60_000 {
            return Err(bad("broker_heartbeat_interval_ms", "must be 10 to 60000"));
        }
        if self.broker_session_timeout_ms < 2 * self.broker_heartbeat_interval_ms {
            return Err(bad("broker_session_timeout_ms", "must be at least twice broker_heartbeat_interval_ms"));
        }
        if !(1..=86_400).contains(&self.leader_imbalance_check_interval_seconds) {
            return Err(bad("leader_imbalance_check_interval_seconds", "must be 1 to 86400"));
        }
        if self.metadata_snapshot_entries < 10 {
            return Err(bad("metadata_snapshot_entries", "must be at least 10"));
        }
        if self.transactional_id_expiration_ms < 1 {
            return Err(bad("transactional_id_expiration_ms", "must be positive"));
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err(bad("transaction_max_timeout_ms", "must be positive"));
        }
        if self.log_flush_interval_ms == 0 || self.log_flush_interval_messages == 0 {
            return Err(bad("log_flush_interval_ms", "must be -1 or positive"));
        }
        self.check_cluster()
    }

    /// The controller quorum's voters: `controller_quorum_voters`, or for
    /// a single node without it, this node alone (it binds no controller
    /// listener).
    pub fn voters(&self) -> Result<Vec<shardline_replication::node::Voter>, ConfigError> {
        use shardline_replication::node;
        let voters = node::parse_voters(&self.controller_quorum_voters)
            .map_err(|e| bad("controller_quorum_voters", e.to_string()))?;
        if voters.is_empty() {
            return Ok(vec![node::Voter { id: self.node_id, host: String::new(), port: 0 }]);
        }
        Ok(voters)
    }

    /// The cluster id this node must have: `cluster_id` when set; for a
    /// quorum of several voters without it, the id derived from the
    /// voters (every node configured alike agrees on it); none for a
    /// single node, which keeps the id of its first start.
    pub fn expected_cluster_id(&self) -> Result<Option<String>, ConfigError> {
        if !self.cluster_id.is_empty() {
            return Ok(Some(self.cluster_id.clone()));
        }
        let voters = self.voters()?;
        Ok((voters.len() > 1).then(|| shardline_replication::node::cluster_id_of_voters(&voters)))
    }

    /// `process_roles` parsed.
    pub fn roles(&self) -> Result<shardline_replication::node::Roles, ConfigError> {
        shardline_replication::node::parse_roles(&self.process_roles).map_err(|e| bad("process_roles", e.to_string()))
    }

    /// `process_roles`, `controller_quorum_voters` and `cluster_id`: a
    /// controller is one of the voters; every node is a controller in
    /// this build (brokers follow the log of their own quorum member), a
    /// broker too or not.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        use shardline_replication::node;
        let roles = self.roles()?;
        let voters = node::parse_voters(&self.controller_quorum_voters)
            .map_err(|e| bad("controller_quorum_voters", e.to_string()))?;
        if !voters.is_empty() {
            node::check_membership(self.node_id, roles, &voters, &self.controller_quorum_voters)
                .map_err(|e| bad("controller_quorum_voters", e.to_string()))?;
        }
        if !roles.controller {
            return Err(bad(
                "process_roles",
                "this build runs nodes that are controllers (broker,controller or controller); broker-only nodes, which would follow the quorum without a vote, are not built yet",
            ));
        }
        if !self.cluster_id.is_empty()
            && (self.cluster_id.len() > 64
                || !self.cluster_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(bad("cluster_id", "at most 64 ASCII letters, digits, '-' and '_'"));
        }
        Ok(())
    }

    /// `max_connections_per_ip_overrides` parsed: each address and its limit.
    pub fn per_ip_overrides(&self) -> Result<Vec<(IpAddr, usize)>, ConfigError> {
        let key = "max_connections_per_ip_overrides";
        self.max_connections_per_ip_overrides
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (ip, count) =
                    entry.rsplit_once(':').ok_or_else(|| bad(key, format!("{entry:?} is not ip:count")))?;
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = ip.parse().map_err(|_| bad(key, format!("{ip:?} is not an IP address")))?;
                let count: usize = count.parse().map_err(|_| bad(key, format!("{count:?} is not a count")))?;
                Ok((ip, count))
            })
            .collect()
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| bad("listen", format!("not a host:port address: {:?}", self.listen)))
    }

    /// The advertised (host, port): the listen address when unset.
    pub fn advertised(&self) -> Result<(String, i32), ConfigError> {
        if self.advertised_listener.is_empty() {
            let addr = self.listen_addr()?;
            let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            return Ok((host, i32::from(addr.port())));
        }
        let (host, port) = self
            .advertised_listener
            .rsplit_once(':')
            .ok_or_else(|| bad("advertised_listener", "expected host:port"))?;
        let port: u16 = port.parse().map_err(|_| bad("advertised_listener", "bad port"))?;
        Ok((host.to_string(), i32::from(port)))
    }

    /// Executor threads to start.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.shards
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        BrokerConfig::default().validate().expect("defaults are valid");
        let mut config = BrokerConfig::default();
        assert_eq!(
            config.set("num_partitions", "0").map(|_| config.validate()),
            Ok(Err(bad("num_partitions", "must be at least 1")))
        );
        let err = BrokerConfig::from_toml("num_partitions = \"x\"").expect_err("type error");
        assert_eq!(err.key, "num_partitions", "{err}");
        let err = BrokerConfig::from_toml("no_such_key = 1").expect_err("unknown");
        assert_eq!(err.key, "no_such_key", "{err}");
        let mut config = BrokerConfig::default();
        assert_eq!(
            config.set("listen", "nonsense").map(|_| config.validate().map_err(|e| e.key)),
            Ok(Err("listen".into()))
        );
        assert_eq!(config.advertised().map_err(|e| e.key), Err("listen".into()));
    }
}
