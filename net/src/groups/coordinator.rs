//! One `__consumer_offsets` partition's coordinator state, sans IO: the
//! groups whose ids hash to this partition, their members and their
//! committed offsets. Rebuilt at load by replaying the partition's records
//! ([`Coordinator::replay`]); changed by the group protocols, whose records
//! the driver (`groups::driver`) appends before applying commits. Owned by
//! the shard that owns the partition.

use std::collections::{BTreeMap, HashMap};

use super::classic::{ClassicGroup, ClassicLimits};
use super::consumer::{ConsumerGroup, ConsumerLimits};
use super::records::{OffsetValue, OffsetsRecord};

/// The protocol a group runs.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// JoinGroup/SyncGroup (or no members: offsets only).
    Classic(ClassicGroup),
    /// KIP-848 ConsumerGroupHeartbeat.
    Consumer(ConsumerGroup),
}

/// A group and its committed offsets.
#[derive(Debug, Clone)]
pub struct Group {
    /// Membership protocol state.
    pub protocol: Protocol,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Wall-clock ms when the group last became empty (offset expiry).
    pub empty_since_ms: Option<i64>,
    /// Offsets committed inside open transactions, by producer id: applied
    /// by a commit marker, dropped by an abort marker.
    pub pending: BTreeMap<i64, BTreeMap<(String, i32), OffsetValue>>,
}

impl Group {
    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        match &self.protocol {
            Protocol::Classic(g) => g.is_empty(),
            Protocol::Consumer(g) => g.is_empty(),
        }
    }

    /// Kafka's state name ("Empty", "Stable", ...).
    pub fn state_name(&self) -> &'static str {
        match &self.protocol {
            Protocol::Classic(g) => g.state().name(),
            Protocol::Consumer(g) => g.state_name(),
        }
    }

    /// "classic" or "consumer" (ListGroups v5).
    pub fn type_name(&self) -> &'static str {
        match &self.protocol {
            Protocol::Classic(_) => "classic",
            Protocol::Consumer(_) => "consumer",
        }
    }

    /// The protocol type ListGroups reports ("consumer" for KIP-848 groups;
    /// empty for a group that only has offsets).
    pub fn protocol_type(&self) -> String {
        match &self.protocol {
            Protocol::Classic(g) => g.protocol_type().unwrap_or_default().to_string(),
            Protocol::Consumer(_) => "consumer".into(),
        }
    }
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug)]
pub struct Coordinator {
    /// Groups by id.
    pub groups: HashMap<String, Group>,
    /// Classic protocol limits.
    pub classic_limits: ClassicLimits,
    /// KIP-848 limits.
    pub consumer_limits: ConsumerLimits,
}

impl Coordinator {
    /// No groups yet.
    pub fn new(classic_limits: ClassicLimits, consumer_limits: ConsumerLimits) -> Self {
        Coordinator { groups: HashMap::new(), classic_limits, consumer_limits }
    }

    /// The group, created empty (classic, no members) when missing.
    pub fn group_or_create(&mut self, id: &str, now_wall_ms: i64) -> &mut Group {
        let limits = self.classic_limits;
        self.groups.entry(id.to_string()).or_insert_with(|| Group {
            protocol: Protocol::Classic(ClassicGroup::new(limits)),
            offsets: BTreeMap::new(),
            empty_since_ms: Some(now_wall_ms),
            pending: BTreeMap::new(),
        })
    }

    /// Records an offset committed in producer `producer_id`'s open
    /// transaction (TxnOffsetCommit, or its record replayed).
    pub fn replay_pending(&mut self, producer_id: i64, record: OffsetsRecord, now_wall_ms: i64) {
        if let OffsetsRecord::Offset { group, topic, partition, value: Some(value) } = record {
            self.group_or_create(&group, now_wall_ms)
                .pending
                .entry(producer_id)
                .or_default()
                .insert((topic, partition), value);
        }
    }

    /// A transaction marker: its pending offsets become committed (commit)
    /// or vanish (abort).
    pub fn complete_transaction(&mut self, producer_id: i64, commit: bool) {
        for group in self.groups.values_mut() {
            if let Some(pending) = group.pending.remove(&producer_id) {
                if commit {
                    group.offsets.extend(pending);
                }
            }
        }
    }

    /// Applies one record read back from the log (load) or just written.
    pub fn replay(&mut self, record: OffsetsRecord, now_wall_ms: i64) {
        match record {
            OffsetsRecord::Offset { group, topic, partition, value } => match value {
                Some(value) => {
                    self.group_or_create(&group, now_wall_ms).offsets.insert((topic, partition), value);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            OffsetsRecord::Group { group, value } => match value {
                Some(value) => {
                    let limits = self.classic_limits;
                    let entry = self.group_or_create(&group, now_wall_ms);
                    if entry.is_empty() {
                        entry.protocol = Protocol::Classic(ClassicGroup::restored(limits, &value));
                    }
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            OffsetsRecord::ConsumerGroupEpoch { group, epoch } => match epoch {
                Some(epoch) => {
                    let limits = self.consumer_limits.clone();
                    let entry = self.group_or_create(&group, now_wall_ms);
                    match &mut entry.protocol {
                        Protocol::Consumer(g) => g.restore_epoch(epoch),
                        Protocol::Classic(_) => {
                            entry.protocol = Protocol::Consumer(ConsumerGroup::restored(limits, epoch))
                        }
                    }
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
    }

    /// Offsets of groups that have been empty for `retention_ms`, as
    /// tombstones to write (the caller replays them once written).
    pub fn expired_offsets(&self, now_wall_ms: i64, retention_ms: i64) -> Vec<OffsetsRecord> {
        let mut out = Vec::new();
        for (id, group) in &self.groups {
            let expired =
                group.is_empty() && group.empty_since_ms.is_some_and(|since| now_wall_ms - since >= retention_ms);
            if !expired {
                continue;
            }
            for ((topic, partition), value) in &group.offsets {
                if now_wall_ms - value.commit_timestamp >= retention_ms {
                    out.push(OffsetsRecord::Offset {
                        group: id.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
            }
        }
        out
    }
}
