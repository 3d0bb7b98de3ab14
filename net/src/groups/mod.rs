//! Consumer groups: the group coordinator of each `__consumer_offsets`
//! partition. A group lives on the shard that owns partition
//! `hash(group) % 50` of `__consumer_offsets`, so groups spread over cores.
//!
//! - [`classic`] and [`consumer`]: the classic (JoinGroup/SyncGroup) and
//!   KIP-848 (ConsumerGroupHeartbeat) state machines, sans IO;
//! - [`coordinator`]: one partition's groups and committed offsets;
//! - [`effect`]: what the state machines ask their driver to do;
//! - [`records`]: Kafka's key and value layouts in `__consumer_offsets`
//!   ([`consumer_records`]: the KIP-848 values);
//! - [`service`]: the driver: loads, appends, answers, runs timers.

pub mod classic;
pub mod consumer;
pub mod consumer_records;
pub mod coordinator;
pub mod effect;
pub mod records;
pub mod service;

/// The internal topic holding offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
