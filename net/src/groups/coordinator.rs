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

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> Coordinator {
        Coordinator::new(
            ClassicLimits {
                min_session_timeout_ms: 1,
                max_session_timeout_ms: 100_000,
                initial_rebalance_delay_ms: 0,
                max_size: 10,
            },
            ConsumerLimits { session_timeout_ms: 45_000, heartbeat_interval_ms: 5000, max_size: 10 },
        )
    }

    fn commit(group: &str, partition: i32, offset: i64, at: i64) -> OffsetsRecord {
        OffsetsRecord::Offset {
            group: group.into(),
            topic: "t".into(),
            partition,
            value: Some(OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: at }),
        }
    }

    #[test]
    fn offsets_of_empty_groups_expire_after_the_retention() {
        let mut c = coordinator();
        c.replay(commit("old", 0, 5, 0), 0);
        c.replay(commit("new", 0, 7, 900), 900);
        let expired = c.expired_offsets(1000, 500);
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(super::super::records::group_of(&expired[0]), "old");
        for record in expired {
            c.replay(record, 1000);
        }
        assert!(c.groups["old"].offsets.is_empty());
        assert_eq!(c.groups["new"].offsets.len(), 1);
    }

    #[test]
    fn transactional_offsets_apply_on_commit_and_vanish_on_abort() {
        let mut c = coordinator();
        c.replay_pending(7, commit("g", 0, 10, 1), 1);
        c.replay_pending(8, commit("g", 1, 20, 1), 1);
        assert!(c.groups["g"].offsets.is_empty(), "pending offsets are not committed yet");
        c.complete_transaction(7, true);
        c.complete_transaction(8, false);
        let offsets: Vec<i64> = c.groups["g"].offsets.values().map(|v| v.offset).collect();
        assert_eq!(offsets, vec![10]);
        assert!(c.groups["g"].pending.is_empty());
    }
}
