//! One `__consumer_offsets` partition's coordinator state, sans IO: the
//! groups whose ids hash to this partition, their members and their
//! committed offsets. Rebuilt at load by replaying the partition's records
//! ([`Coordinator::replay`]); changed by the group protocols. Operations
//! that must be durable return the records to append (an offset commit,
//! a deletion, an expiry); the driver (`groups::service`) appends them and
//! only then applies them with [`Coordinator::replay`]. Owned by the shard
//! that owns the partition.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use crate::groups::classic::{ClassicGroup, ClassicLimits};
use crate::groups::consumer::{ConsumerGroup, ConsumerLimits};
use crate::groups::records::{self, OffsetValue, OffsetsRecord};

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

/// One partition's commit as an OffsetCommit or TxnOffsetCommit carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAsked {
    /// Partition.
    pub partition: i32,
    /// Offset to commit.
    pub offset: i64,
    /// Leader epoch (-1 when the version has none).
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug)]
pub struct Coordinator {
    /// Groups by id.
    pub groups: BTreeMap<String, Group>,
    /// Classic protocol limits.
    pub classic_limits: ClassicLimits,
    /// KIP-848 limits.
    pub consumer_limits: ConsumerLimits,
}

impl Coordinator {
    /// No groups yet.
    pub fn new(classic_limits: ClassicLimits, consumer_limits: ConsumerLimits) -> Self {
        Coordinator { groups: BTreeMap::new(), classic_limits, consumer_limits }
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

    /// The classic group `id` for a JoinGroup, created when missing; an
    /// empty KIP-848 group turns classic (keeping its epoch as the
    /// generation), as in Kafka; a KIP-848 group with members refuses.
    pub fn classic_for_join(&mut self, id: &str, now_ms: i64) -> Result<&mut ClassicGroup, ResponseError> {
        let limits = self.classic_limits;
        let group = self.group_or_create(id, now_ms);
        if let Protocol::Consumer(consumer) = &group.protocol {
            if !consumer.is_empty() {
                return Err(ResponseError::InconsistentGroupProtocol);
            }
            let mut classic = ClassicGroup::new(limits);
            classic.restore_generation(consumer.epoch());
            group.protocol = Protocol::Classic(classic);
        }
        match &mut group.protocol {
            Protocol::Classic(classic) => Ok(classic),
            Protocol::Consumer(_) => Err(ResponseError::InconsistentGroupProtocol),
        }
    }

    /// The KIP-848 group `id` for a ConsumerGroupHeartbeat, created when
    /// missing; an empty classic group turns KIP-848 (its generation
    /// becomes the epoch); a classic group with members is not found.
    pub fn consumer_for_heartbeat(&mut self, id: &str, now_ms: i64) -> Result<&mut ConsumerGroup, ResponseError> {
        let limits = self.consumer_limits.clone();
        let group = self.group_or_create(id, now_ms);
        if let Protocol::Classic(classic) = &group.protocol {
            if !classic.is_empty() {
                return Err(ResponseError::GroupIdNotFound);
            }
            group.protocol = Protocol::Consumer(ConsumerGroup::after_classic(limits, classic.generation()));
        }
        match &mut group.protocol {
            Protocol::Consumer(consumer) => Ok(consumer),
            Protocol::Classic(_) => Err(ResponseError::GroupIdNotFound),
        }
    }

    /// After a membership change: notes when group `id` became empty (the
    /// offsets expiry clock starts then) or that it is not empty any more.
    pub fn note_membership(&mut self, id: &str, now_ms: i64) {
        if let Some(group) = self.groups.get_mut(id) {
            if group.is_empty() {
                group.empty_since_ms.get_or_insert(now_ms);
            } else {
                group.empty_since_ms = None;
            }
        }
    }

    /// Whether `member_id` of group `id` may commit offsets at
    /// `generation` (a classic generation or a KIP-848 member epoch).
    /// `consumer_groups_allowed` is false for OffsetCommit versions before
    /// 9, which a KIP-848 group accepts only as a simple commit.
    pub fn check_commit(
        &mut self,
        id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        consumer_groups_allowed: bool,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let group = self.group_or_create(id, now_ms);
        match &mut group.protocol {
            Protocol::Classic(g) => g.check_commit(member_id, instance_id, generation, now_ms as u64),
            Protocol::Consumer(g) => {
                let simple = generation < 0 && member_id.is_empty() && g.is_empty();
                if !consumer_groups_allowed && !simple {
                    return Err(ResponseError::UnsupportedVersion);
                }
                g.check_member_epoch(member_id, generation)
            }
        }
    }

    /// Validates each asked commit of `group` (the partition exists, the
    /// metadata fits) and builds the records of the valid ones. Returns, per
    /// topic and partition, the error code (0: to be written) and the
    /// records to append.
    pub fn plan_commit(
        group: &str,
        asked: &[(String, Vec<CommitAsked>)],
        max_metadata: usize,
        exists: &dyn Fn(&str, i32) -> bool,
        now_ms: i64,
    ) -> (Vec<Vec<i16>>, Vec<OffsetsRecord>) {
        let mut records = Vec::new();
        let codes = asked
            .iter()
            .map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(|p| {
                        let metadata = p.metadata.clone().unwrap_or_default();
                        if !exists(topic, p.partition) {
                            return ResponseError::UnknownTopicOrPartition.code();
                        }
                        if metadata.len() > max_metadata {
                            return ResponseError::OffsetMetadataTooLarge.code();
                        }
                        records.push(OffsetsRecord::Offset {
                            group: group.to_string(),
                            topic: topic.clone(),
                            partition: p.partition,
                            value: Some(OffsetValue {
                                offset: p.offset,
                                leader_epoch: p.leader_epoch,
                                metadata,
                                commit_timestamp: now_ms,
                            }),
                        });
                        0
                    })
                    .collect()
            })
            .collect::<Vec<Vec<i16>>>();
        debug_assert_eq!(
            codes.iter().flatten().filter(|c| **c == 0).count(),
            records.len(),
            "one record per valid commit"
        );
        (codes, records)
    }

    /// The records deleting empty group `id` and its offsets.
    pub fn plan_delete_group(&self, id: &str) -> Result<Vec<OffsetsRecord>, ResponseError> {
        let group = self.groups.get(id).ok_or(ResponseError::GroupIdNotFound)?;
        if !group.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut records: Vec<OffsetsRecord> = group
            .offsets
            .keys()
            .map(|(t, p)| OffsetsRecord::Offset { group: id.to_string(), topic: t.clone(), partition: *p, value: None })
            .collect();
        match group.protocol {
            Protocol::Classic(_) => records.push(OffsetsRecord::Group { group: id.to_string(), value: None }),
            Protocol::Consumer(_) => {
                records.push(OffsetsRecord::ConsumerTargetEpoch { group: id.to_string(), epoch: None });
                records.push(OffsetsRecord::ConsumerGroupEpoch { group: id.to_string(), value: None });
            }
        }
        Ok(records)
    }

    /// Asserts every group's invariants (debug builds).
    pub fn check_invariants(&self) {
        for group in self.groups.values() {
            match &group.protocol {
                Protocol::Classic(g) => g.check_invariants(),
                Protocol::Consumer(g) => g.check_invariants(),
            }
        }
    }

    /// The earliest deadline of any group's timers.
    pub fn next_deadline(&self) -> Option<u64> {
        self.groups
            .values()
            .filter_map(|g| match &g.protocol {
                Protocol::Classic(g) => g.next_deadline(),
                Protocol::Consumer(g) => g.next_deadline(),
            })
            .min()
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
                    // Only loads replay group records, in log order: the
                    // newest is the group's state (members and assignments).
                    let limits = self.classic_limits;
                    let entry = self.group_or_create(&group, now_wall_ms);
                    let restored = ClassicGroup::restored(limits, &value, u64::try_from(now_wall_ms).unwrap_or(0));
                    entry.protocol = Protocol::Classic(restored);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            OffsetsRecord::ConsumerGroupEpoch { group, value: None } => {
                self.groups.remove(&group);
            }
            consumer @ (OffsetsRecord::ConsumerGroupEpoch { .. }
            | OffsetsRecord::ConsumerMember { .. }
            | OffsetsRecord::ConsumerTargetEpoch { .. }
            | OffsetsRecord::ConsumerTarget { .. }
            | OffsetsRecord::ConsumerAssignment { .. }) => {
                // Only loads replay KIP-848 records, in log order: a group
                // that was classic before them has turned KIP-848.
                let limits = self.consumer_limits.clone();
                let entry = self.group_or_create(records::group_of(&consumer), now_wall_ms);
                if let Protocol::Classic(_) = entry.protocol {
                    entry.protocol = Protocol::Consumer(ConsumerGroup::new(limits));
                }
                if let Protocol::Consumer(g) = &mut entry.protocol {
                    g.restore(consumer, u64::try_from(now_wall_ms).unwrap_or(0));
                }
            }
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
    use std::collections::BTreeSet;

    use uuid::Uuid;

    use super::*;
    use crate::groups::consumer::{Heartbeat, TopicsView};

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
        assert_eq!(crate::groups::records::group_of(&expired[0]), "old");
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

    fn consumer_join(id: &str, topics: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 1_000,
            subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
            owned: Some(BTreeSet::new()),
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn no_regex(_: &str, _: &str) -> bool {
        false
    }

    /// Replays `log` into `into` through the bytes, as a load reads them.
    fn replay_all(into: &mut Coordinator, log: &[OffsetsRecord]) {
        for record in log {
            let (key, value) = crate::groups::records::encode(record);
            let decoded = crate::groups::records::decode(&key, value.as_deref()).expect("decodes");
            assert_eq!(&decoded, record);
            into.replay(decoded, 0);
        }
        into.check_invariants();
    }

    /// The group `id` rebuilt from `log` alone.
    fn replayed(log: &[OffsetsRecord], id: &str) -> Option<Coordinator> {
        let mut fresh = coordinator();
        replay_all(&mut fresh, log);
        fresh.groups.contains_key(id).then_some(fresh)
    }

    fn view(c: &Coordinator, id: &str) -> Option<String> {
        match &c.groups.get(id)?.protocol {
            Protocol::Consumer(g) => Some(format!("{:?}", g.durable_view())),
            Protocol::Classic(_) => None,
        }
    }

    #[test]
    fn a_kip848_group_replayed_from_its_records_is_the_group() {
        // Random joins, heartbeats, leaves (dynamic and static) and
        // expiries; some writes fail and are retried by the next. After
        // every successful write, the records written so far rebuild
        // exactly what the records keep of the live group.
        let topics: TopicsView =
            [("a".to_string(), (Uuid::from_u128(1), 4)), ("b".to_string(), (Uuid::from_u128(2), 3))]
                .into_iter()
                .collect();
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut c = coordinator();
        // What a load of the records written so far rebuilds.
        let mut loaded = coordinator();
        let mut clients: BTreeMap<String, (i32, BTreeSet<(Uuid, i32)>)> = BTreeMap::new();
        let mut now = 0u64;
        let mut checked = 0;
        for step in 0..3_000 {
            now += next(400);
            let member = format!("m{}", next(6));
            let group = c.consumer_for_heartbeat("g", now as i64).expect("consumer group");
            match next(10) {
                0 => {
                    group.tick(now);
                }
                1 => {
                    let mut leave = consumer_join(&member, &[]);
                    leave.member_epoch = if next(2) == 0 { -1 } else { -2 };
                    leave.instance_id = (leave.member_epoch == -2).then(|| format!("static-{member}"));
                    group.heartbeat(leave, &topics, &no_regex, now, String::new());
                    clients.remove(&member);
                }
                _ => {
                    let request = match clients.get(&member) {
                        Some((epoch, owned)) if *epoch > 0 => Heartbeat {
                            member_id: member.clone(),
                            member_epoch: *epoch,
                            rebalance_timeout_ms: -1,
                            owned: Some(owned.clone()),
                            ..Default::default()
                        },
                        _ => {
                            let mut join = consumer_join(&member, if next(2) == 0 { &["a"] } else { &["a", "b"] });
                            join.instance_id = (next(3) == 0).then(|| format!("static-{member}"));
                            join
                        }
                    };
                    let reply = group.heartbeat(request, &topics, &no_regex, now, String::new());
                    if reply.error.is_none() {
                        let entry = clients.entry(member.clone()).or_default();
                        entry.0 = reply.member_epoch;
                        if let Some(assigned) = reply.assignment {
                            entry.1 = assigned;
                        }
                    } else {
                        clients.remove(&member);
                    }
                }
            }
            group.check_invariants();
            let Some(write) = group.take_unwritten("g") else { continue };
            let ok = next(5) != 0;
            if ok {
                replay_all(&mut loaded, &write.records);
            }
            group.written(write, ok);
            if ok && group.written_through() == group.changes() {
                let live = view(&c, "g");
                let rebuilt = view(&loaded, "g");
                assert_eq!(rebuilt, live, "step {step}: the records rebuild the group");
                checked += 1;
            }
        }
        assert!(checked > 500, "only {checked} steps were checked");
    }

    #[test]
    fn a_replayed_group_carries_on_without_a_rebalance() {
        let topics: TopicsView = [("a".to_string(), (Uuid::from_u128(1), 4))].into_iter().collect();
        let mut c = coordinator();
        let mut owned = BTreeMap::new();
        let mut log = Vec::new();
        for round in 0..4 {
            for member in ["x", "y"] {
                let group = c.consumer_for_heartbeat("g", 0).unwrap();
                let request = match owned.get(member) {
                    None => consumer_join(member, &["a"]),
                    Some((epoch, parts)) => Heartbeat {
                        member_id: member.into(),
                        member_epoch: *epoch,
                        rebalance_timeout_ms: -1,
                        owned: Some(BTreeSet::clone(parts)),
                        ..Default::default()
                    },
                };
                let reply = group.heartbeat(request, &topics, &no_regex, round * 10, String::new());
                assert_eq!(reply.error, None);
                let entry = owned.entry(member).or_insert((0, BTreeSet::new()));
                entry.0 = reply.member_epoch;
                if let Some(assigned) = reply.assignment {
                    entry.1 = assigned;
                }
                if let Some(write) = group.take_unwritten("g") {
                    log.extend(write.records.iter().cloned());
                    group.written(write, true);
                }
            }
        }
        let Protocol::Consumer(live) = &c.groups["g"].protocol else { panic!("a KIP-848 group") };
        assert_eq!(live.state_name(), "Stable");
        let epoch = live.epoch();
        let mut restarted = replayed(&log, "g").expect("the group is in its records");
        let group = restarted.consumer_for_heartbeat("g", 100).unwrap();
        assert_eq!(group.state_name(), "Stable");
        for (member, (member_epoch, parts)) in &owned {
            let reply = group.heartbeat(
                Heartbeat {
                    member_id: member.to_string(),
                    member_epoch: *member_epoch,
                    rebalance_timeout_ms: -1,
                    owned: Some(parts.clone()),
                    ..Default::default()
                },
                &topics,
                &no_regex,
                100,
                String::new(),
            );
            assert_eq!((reply.error, reply.member_epoch), (None, *member_epoch), "{member} carries on");
        }
        assert_eq!(group.epoch(), epoch, "no rebalance: the epoch did not move");
        assert!(group.take_unwritten("g").is_none(), "nothing changed, nothing to write");
    }
}
