//! KIP-848 consumer groups (ConsumerGroupHeartbeat) as a sans-IO state
//! machine: the broker computes the assignment (uniform or range assignor,
//! chosen by the members) and reconciles each member towards it
//! incrementally: a member first revokes what it must give up, keeping its
//! epoch, and only then moves to the group's assignment epoch and receives
//! partitions that no other member still owns. One instance per group, on
//! the shard owning the group's `__consumer_offsets` partition.
//!
//! Every change is journaled: [`ConsumerGroup::take_unwritten`] hands out
//! the records (Kafka's KIP-848 record types) that bring the log up to the
//! group's state, and [`ConsumerGroup::restore`] rebuilds the group from
//! them at load, so members carry on across a restart at their epochs with
//! their partitions. The driver answers a heartbeat only once what it
//! changed is written.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::groups::consumer_records::{
    member_state, CurrentAssignmentValue, GroupEpochValue, MemberMetadataValue, LEFT_TEMPORARILY_EPOCH,
};
use crate::groups::records::OffsetsRecord;

/// A topic partition by topic id.
pub type TopicPartition = (Uuid, i32);

/// Topics the assignor can see: name → (id, partition count), without
/// internal topics.
pub type TopicsView = BTreeMap<String, (Uuid, i32)>;

/// Limits from the broker configuration.
#[derive(Debug, Clone)]
pub struct ConsumerLimits {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
}

/// Server-side assignors, by the name clients select them with.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// A ConsumerGroupHeartbeat request, decoded. `None` fields are unchanged.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Member id (v1: chosen by the client; v0: empty on join).
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves temporarily (static), >0 heartbeats.
    pub member_epoch: i32,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Rebalance timeout (-1: unchanged).
    pub rebalance_timeout_ms: i32,
    /// Subscribed topic names.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// Subscribed topic regex (RE2 syntax).
    pub subscribed_topic_regex: Option<String>,
    /// Chosen server assignor.
    pub server_assignor: Option<String>,
    /// Partitions the member owns now.
    pub owned: Option<BTreeSet<TopicPartition>>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
}

/// A ConsumerGroupHeartbeat answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReply {
    /// Error.
    pub error: Option<ResponseError>,
    /// Error message.
    pub message: Option<String>,
    /// Member id.
    pub member_id: String,
    /// Member epoch.
    pub member_epoch: i32,
    /// Heartbeat interval.
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or was asked for.
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

impl HeartbeatReply {
    fn error(error: ResponseError, message: &str, member_id: &str) -> Self {
        HeartbeatReply {
            error: Some(error),
            message: Some(message.to_string()),
            member_id: member_id.to_string(),
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Member id.
    pub member_id: String,
    /// Who it is and what it subscribes to, as its record keeps it.
    pub metadata: MemberMetadataValue,
    /// Member epoch.
    pub epoch: i32,
    previous_epoch: i32,
    /// Partitions the member has been given.
    pub assigned: BTreeSet<TopicPartition>,
    revoking: BTreeSet<TopicPartition>,
    last_heartbeat: u64,
    revoke_deadline: Option<u64>,
    left_temporarily: bool,
}

impl Member {
    /// A member that holds nothing yet, its session starting at `now`.
    fn new(member_id: String, metadata: MemberMetadataValue, now: u64) -> Self {
        Member {
            member_id,
            metadata,
            epoch: 0,
            previous_epoch: -1,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            last_heartbeat: now,
            revoke_deadline: None,
            left_temporarily: false,
        }
    }

    fn current_value(&self, target: Option<&BTreeSet<TopicPartition>>) -> CurrentAssignmentValue {
        let state = if !self.revoking.is_empty() {
            member_state::UNREVOKED_PARTITIONS
        } else if target.is_some_and(|t| *t != self.assigned) {
            member_state::UNRELEASED_PARTITIONS
        } else {
            member_state::STABLE
        };
        let (member_epoch, previous_member_epoch) = if self.left_temporarily {
            (LEFT_TEMPORARILY_EPOCH, self.epoch)
        } else {
            (self.epoch, self.previous_epoch)
        };
        CurrentAssignmentValue {
            member_epoch,
            previous_member_epoch,
            state,
            assigned: self.assigned.clone(),
            revoking: self.revoking.clone(),
        }
    }
}

/// What changed since the group's records were last handed out.
#[derive(Debug, Clone, Default)]
struct Unwritten {
    /// Members whose metadata or current assignment changed (or that left).
    members: BTreeSet<String>,
    /// Members whose target changed (or that left).
    targets: BTreeSet<String>,
    epoch: bool,
    target_epoch: bool,
}

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.targets.is_empty() && !self.epoch && !self.target_epoch
    }

    fn merge(&mut self, other: Unwritten) {
        self.members.extend(other.members);
        self.targets.extend(other.targets);
        self.epoch |= other.epoch;
        self.target_epoch |= other.target_epoch;
    }
}

/// The group's changes against what was written: every change counts, and
/// the count written through tells a heartbeat whether its change is
/// durable yet.
#[derive(Debug, Clone, Default)]
struct Journal {
    unwritten: Unwritten,
    changes: u64,
    written_through: u64,
}

impl Journal {
    fn member(&mut self, id: &str) {
        self.unwritten.members.insert(id.to_string());
        self.changes += 1;
    }
    fn target(&mut self, id: &str) {
        self.unwritten.targets.insert(id.to_string());
        self.changes += 1;
    }
    fn epoch(&mut self) {
        self.unwritten.epoch = true;
        self.changes += 1;
    }
    fn target_epoch(&mut self) {
        self.unwritten.target_epoch = true;
        self.changes += 1;
    }
}

/// The records of a group's changes, handed out by
/// [`ConsumerGroup::take_unwritten`] and handed back to
/// [`ConsumerGroup::written`] once the write ended.
#[derive(Debug)]
pub struct GroupWrite {
    /// The records to append, in one batch.
    pub records: Vec<OffsetsRecord>,
    unwritten: Unwritten,
    through: u64,
}

/// A KIP-848 group. See the module documentation.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    subscribed_metadata: BTreeMap<String, (Uuid, i32)>,
    /// [`metadata_hash`] of `subscribed_metadata`, kept with the epoch: at
    /// load the metadata itself is not known, the hash is.
    metadata_hash: i64,
    limits: ConsumerLimits,
    journal: Journal,
}

/// A hash (FNV-1a) of the subscribed topics' names, ids and partition
/// counts; 0 for none. Only compared with itself.
pub fn metadata_hash(metadata: &BTreeMap<String, (Uuid, i32)>) -> i64 {
    if metadata.is_empty() {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, (id, partitions)) in metadata {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(id.as_bytes());
        feed(&partitions.to_be_bytes());
    }
    hash as i64
}

impl ConsumerGroup {
    /// An empty group.
    pub fn new(limits: ConsumerLimits) -> Self {
        ConsumerGroup {
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_metadata: BTreeMap::new(),
            metadata_hash: 0,
            limits,
            journal: Journal::default(),
        }
    }

    /// An empty group taking over from an empty classic group at
    /// `generation`: its epochs continue from there.
    pub fn after_classic(limits: ConsumerLimits, generation: i32) -> Self {
        let mut group = ConsumerGroup::new(limits);
        group.epoch = generation.max(0);
        group.assignment_epoch = group.epoch;
        group
    }

    /// Group epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }
    /// Epoch of the current target assignment.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    /// Members.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    /// Whether `member_id` is a member.
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }
    /// The member's target assignment.
    pub fn target_of(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.target.get(member_id).cloned().unwrap_or_default()
    }
    /// No members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    /// The assignor in use.
    pub fn assignor(&self) -> &str {
        self.members.values().find_map(|m| m.metadata.server_assignor.as_deref()).unwrap_or(ASSIGNORS[0])
    }

    /// Kafka's state name for ConsumerGroupDescribe and ListGroups.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty()) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    fn bump_epoch(&mut self) {
        self.epoch += 1;
        self.journal.epoch();
    }

    /// The earliest time at which [`tick`](Self::tick) has work: a member's
    /// session end or revocation deadline. `None` without members.
    pub fn next_deadline(&self) -> Option<u64> {
        let session = self.limits.session_timeout_ms.max(0) as u64;
        let sessions = self.members.values().map(|m| m.last_heartbeat + session);
        let revocations = self.members.values().filter_map(|m| m.revoke_deadline);
        sessions.chain(revocations).min()
    }

    /// Asserts what every transition must leave true (debug builds: the
    /// tests and the simulator run them after every call).
    pub fn check_invariants(&self) {
        debug_assert!(self.assignment_epoch <= self.epoch, "the target never runs ahead of the group epoch");
        debug_assert!(self.members.len() <= self.limits.max_size, "the group is within its size limit");
        let mut owned = BTreeSet::new();
        for member in self.members.values() {
            debug_assert!(
                member.epoch <= self.assignment_epoch,
                "member {} is not ahead of the target",
                member.member_id
            );
            for tp in member.assigned.iter().chain(member.revoking.iter()) {
                debug_assert!(owned.insert(*tp), "partition {tp:?} is owned by one member at most");
            }
        }
        for id in self.target.keys() {
            debug_assert!(self.members.contains_key(id), "the target assigns only members ({id})");
        }
    }

    /// How many changes the group has seen; a change is durable once
    /// [`written_through`](Self::written_through) reaches its count.
    pub fn changes(&self) -> u64 {
        self.journal.changes
    }

    /// The count of changes known written.
    pub fn written_through(&self) -> u64 {
        self.journal.written_through
    }

    /// The records that bring the log up to the group's state, in one
    /// batch (None when nothing is unwritten): for a member that left, the
    /// tombstones of its current assignment, target and metadata; then the
    /// metadata of changed members, the group epoch, changed targets, the
    /// target's epoch and changed current assignments, each as it is now.
    /// Hand the write back to [`written`](Self::written) once it ended.
    pub fn take_unwritten(&mut self, group: &str) -> Option<GroupWrite> {
        if self.journal.unwritten.is_empty() {
            return None;
        }
        let unwritten = std::mem::take(&mut self.journal.unwritten);
        let mut records = Vec::new();
        let key = |member: &str| (group.to_string(), member.to_string());
        let gone = unwritten.members.union(&unwritten.targets).filter(|id| !self.members.contains_key(*id));
        for id in gone {
            let (group, member) = key(id);
            records.push(OffsetsRecord::ConsumerAssignment {
                group: group.clone(),
                member: member.clone(),
                value: None,
            });
            records.push(OffsetsRecord::ConsumerTarget {
                group: group.clone(),
                member: member.clone(),
                partitions: None,
            });
            records.push(OffsetsRecord::ConsumerMember { group, member, value: None });
        }
        let changed: Vec<&Member> = unwritten.members.iter().filter_map(|id| self.members.get(id)).collect();
        for member in &changed {
            let (group, member_id) = key(&member.member_id);
            records.push(OffsetsRecord::ConsumerMember {
                group,
                member: member_id,
                value: Some(member.metadata.clone()),
            });
        }
        if unwritten.epoch {
            records.push(OffsetsRecord::ConsumerGroupEpoch {
                group: group.to_string(),
                value: Some(GroupEpochValue { epoch: self.epoch, metadata_hash: self.metadata_hash }),
            });
        }
        for id in unwritten.targets.iter().filter(|id| self.members.contains_key(*id)) {
            let (group, member) = key(id);
            records.push(OffsetsRecord::ConsumerTarget {
                group,
                member,
                partitions: Some(self.target.get(id).cloned().unwrap_or_default()),
            });
        }
        if unwritten.target_epoch {
            records.push(OffsetsRecord::ConsumerTargetEpoch {
                group: group.to_string(),
                epoch: Some(self.assignment_epoch),
            });
        }
        for member in &changed {
            let (group, member_id) = key(&member.member_id);
            let value = member.current_value(self.target.get(&member.member_id));
            records.push(OffsetsRecord::ConsumerAssignment { group, member: member_id, value: Some(value) });
        }
        Some(GroupWrite { records, unwritten, through: self.journal.changes })
    }

    /// The end of a write [`take_unwritten`](Self::take_unwritten) handed
    /// out: once written, the changes it covered are durable; if it failed,
    /// they are unwritten again and the next write carries them.
    pub fn written(&mut self, write: GroupWrite, ok: bool) {
        if ok {
            self.journal.written_through = self.journal.written_through.max(write.through);
        } else {
            self.journal.unwritten.merge(write.unwritten);
        }
    }

    /// Applies one of the group's records read back at load. A member
    /// restored runs its session (and any revocation) from `now`.
    pub fn restore(&mut self, record: OffsetsRecord, now: u64) {
        match record {
            OffsetsRecord::ConsumerGroupEpoch { value: Some(value), .. } => {
                self.epoch = value.epoch;
                self.metadata_hash = value.metadata_hash;
            }
            OffsetsRecord::ConsumerMember { member, value: Some(value), .. } => {
                let value = MemberMetadataValue { rebalance_timeout_ms: value.rebalance_timeout_ms.max(0), ..value };
                match self.members.get_mut(&member) {
                    Some(restored) => restored.metadata = value,
                    None => {
                        self.members.insert(member.clone(), Member::new(member, value, now));
                    }
                }
            }
            OffsetsRecord::ConsumerMember { member, value: None, .. } => {
                self.members.remove(&member);
                self.target.remove(&member);
            }
            OffsetsRecord::ConsumerTargetEpoch { epoch: Some(epoch), .. } => self.assignment_epoch = epoch,
            OffsetsRecord::ConsumerTarget { member, partitions, .. } => match partitions {
                Some(partitions) => {
                    self.target.insert(member, partitions);
                }
                None => {
                    self.target.remove(&member);
                }
            },
            OffsetsRecord::ConsumerAssignment { member, value, .. } => {
                let Some(restored) = self.members.get_mut(&member) else { return };
                let value = value.unwrap_or_default();
                restored.left_temporarily = value.member_epoch == LEFT_TEMPORARILY_EPOCH;
                if restored.left_temporarily {
                    (restored.epoch, restored.previous_epoch) = (value.previous_member_epoch, -1);
                } else {
                    (restored.epoch, restored.previous_epoch) = (value.member_epoch, value.previous_member_epoch);
                }
                restored.assigned = value.assigned;
                restored.revoking = value.revoking;
                restored.revoke_deadline =
                    (!restored.revoking.is_empty()).then(|| now + restored.metadata.rebalance_timeout_ms as u64);
            }
            _ => {}
        }
    }

    /// What the records keep of the group: epochs, metadata hash, each
    /// member's metadata and current assignment, the target (tests compare
    /// a live group with one replayed from its records).
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub fn durable_view(
        &self,
    ) -> (
        (i32, i32, i64),
        BTreeMap<String, (MemberMetadataValue, CurrentAssignmentValue)>,
        BTreeMap<String, BTreeSet<TopicPartition>>,
    ) {
        let members = self
            .members
            .values()
            .map(|m| (m.member_id.clone(), (m.metadata.clone(), m.current_value(self.target.get(&m.member_id)))))
            .collect();
        let target = self.target.iter().filter(|(_, t)| !t.is_empty()).map(|(id, t)| (id.clone(), t.clone())).collect();
        ((self.epoch, self.assignment_epoch, self.metadata_hash), members, target)
    }

    /// Whether an offset commit (or a fetch asking for stable offsets) by
    /// `member_id` at `epoch` is allowed.
    pub fn check_member_epoch(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        if epoch < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        let member = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if epoch != member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Handles one heartbeat. `matches(regex, topic)` evaluates a
    /// subscription regex; `new_member_id` is used when a v0 client joins
    /// without one.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        topics: &TopicsView,
        matches: &dyn Fn(&str, &str) -> bool,
        now: u64,
        new_member_id: String,
    ) -> HeartbeatReply {
        let full_request = request.subscribed_topic_names.is_some() || request.subscribed_topic_regex.is_some();
        if let Some(assignor) = &request.server_assignor {
            if !ASSIGNORS.contains(&assignor.as_str()) {
                return HeartbeatReply::error(
                    ResponseError::UnsupportedAssignor,
                    &format!("assignor {assignor} is not supported; use one of {ASSIGNORS:?}"),
                    &request.member_id,
                );
            }
        }
        let mut joined = false;
        let member_id = match request.member_epoch {
            0 => match self.join(&request, now, new_member_id) {
                Ok((id, created)) => {
                    joined = created;
                    id
                }
                Err(reply) => return reply,
            },
            -1 | -2 => return self.leave(&request),
            epoch if epoch > 0 => {
                let Some(member) = self.members.get(&request.member_id) else {
                    return HeartbeatReply::error(ResponseError::UnknownMemberId, "unknown member", &request.member_id);
                };
                let lagging_ok = epoch == member.previous_epoch
                    && request.owned.as_ref().is_some_and(|owned| owned.is_subset(&member.assigned));
                if epoch != member.epoch && !lagging_ok {
                    return HeartbeatReply::error(
                        ResponseError::FencedMemberEpoch,
                        "the member epoch is fenced",
                        &request.member_id,
                    );
                }
                request.member_id.clone()
            }
            _ => return HeartbeatReply::error(ResponseError::InvalidRequest, "bad member epoch", &request.member_id),
        };
        // A new member changes the membership, whatever it subscribes to
        // (even nothing yet): the group epoch moves, so the member leaves its
        // join with an epoch above 0 (KIP-848).
        let mut changed_subscription = joined;
        if let Some(member) = self.members.get_mut(&member_id) {
            let before = member.metadata.clone();
            member.last_heartbeat = now;
            if member.left_temporarily {
                member.left_temporarily = false;
                self.journal.member(&member_id);
            }
            if let Some(names) = &request.subscribed_topic_names {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                changed_subscription |= member.metadata.subscribed_names != names;
                member.metadata.subscribed_names = names;
            }
            if let Some(regex) = &request.subscribed_topic_regex {
                let regex = Some(regex.clone()).filter(|r| !r.is_empty());
                changed_subscription |= member.metadata.subscribed_regex != regex;
                member.metadata.subscribed_regex = regex;
            }
            if request.server_assignor.is_some() && member.metadata.server_assignor != request.server_assignor {
                member.metadata.server_assignor = request.server_assignor.clone();
                changed_subscription = true;
            }
            if request.rebalance_timeout_ms >= 0 {
                member.metadata.rebalance_timeout_ms = request.rebalance_timeout_ms;
            }
            if request.rack_id.is_some() {
                member.metadata.rack_id = request.rack_id.clone();
            }
            if member.metadata != before {
                self.journal.member(&member_id);
            }
        }
        if changed_subscription {
            self.bump_epoch();
        }
        let metadata = self.subscribed_topics(topics, matches);
        let hash = metadata_hash(&metadata);
        self.subscribed_metadata = metadata;
        if hash != self.metadata_hash {
            self.metadata_hash = hash;
            self.bump_epoch();
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target(matches);
        }
        let changed = self.reconcile(&member_id, request.owned.as_ref(), now);
        let member = &self.members[&member_id];
        HeartbeatReply {
            error: None,
            message: None,
            member_id: member_id.clone(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: self.limits.heartbeat_interval_ms,
            assignment: (changed || full_request || request.member_epoch == 0).then(|| member.assigned.clone()),
        }
    }

    /// Admits a joining member; returns its id and whether it is new to the
    /// group (not a rejoin, nor a static member taking over its place).
    fn join(&mut self, request: &Heartbeat, now: u64, new_member_id: String) -> Result<(String, bool), HeartbeatReply> {
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return Err(HeartbeatReply::error(
                ResponseError::InvalidRequest,
                "a joining member must give its subscription",
                &request.member_id,
            ));
        }
        let member_id = if request.member_id.is_empty() { new_member_id } else { request.member_id.clone() };
        let mut inherited: Option<Member> = None;
        if let Some(instance) = &request.instance_id {
            let holder = self.members.values().find(|m| m.metadata.instance_id.as_ref() == Some(instance)).cloned();
            if let Some(old) = holder.filter(|m| m.member_id != member_id) {
                if !old.left_temporarily {
                    return Err(HeartbeatReply::error(
                        ResponseError::UnreleasedInstanceId,
                        "the static member's previous incarnation has not left",
                        &member_id,
                    ));
                }
                self.members.remove(&old.member_id);
                self.journal.member(&old.member_id);
                self.journal.target(&old.member_id);
                if let Some(target) = self.target.remove(&old.member_id) {
                    self.target.insert(member_id.clone(), target);
                    self.journal.target(&member_id);
                }
                inherited = Some(old);
            }
        }
        if let Some(existing) = self.members.get_mut(&member_id) {
            // Rejoining (after a fencing): everything it held is released.
            existing.assigned.clear();
            existing.revoking.clear();
            existing.epoch = 0;
            existing.previous_epoch = -1;
            self.journal.member(&member_id);
            return Ok((member_id, false));
        }
        if self.members.len() >= self.limits.max_size {
            return Err(HeartbeatReply::error(ResponseError::GroupMaxSizeReached, "the group is full", &member_id));
        }
        let is_new = inherited.is_none();
        let member = match inherited {
            Some(mut old) => {
                old.member_id = member_id.clone();
                old.metadata.client_id = request.client_id.clone();
                old.metadata.client_host = request.client_host.clone();
                old.last_heartbeat = now;
                old
            }
            // A new member: the caller sets its subscription and moves the
            // group epoch.
            None => Member::new(
                member_id.clone(),
                MemberMetadataValue {
                    instance_id: request.instance_id.clone(),
                    rack_id: request.rack_id.clone(),
                    client_id: request.client_id.clone(),
                    client_host: request.client_host.clone(),
                    subscribed_names: Vec::new(),
                    subscribed_regex: None,
                    rebalance_timeout_ms: request.rebalance_timeout_ms.max(0),
                    server_assignor: None,
                },
                now,
            ),
        };
        self.members.insert(member_id.clone(), member);
        self.journal.member(&member_id);
        Ok((member_id, is_new))
    }

    fn leave(&mut self, request: &Heartbeat) -> HeartbeatReply {
        if request.member_epoch == -2 && request.instance_id.is_none() {
            return HeartbeatReply::error(
                ResponseError::InvalidRequest,
                "InstanceId can't be null.",
                &request.member_id,
            );
        }
        let id = match &request.instance_id {
            Some(instance) if request.member_id.is_empty() => self
                .members
                .values()
                .find(|m| m.metadata.instance_id.as_ref() == Some(instance))
                .map(|m| m.member_id.clone())
                .unwrap_or_default(),
            _ => request.member_id.clone(),
        };
        if !self.members.contains_key(&id) {
            return HeartbeatReply::error(ResponseError::UnknownMemberId, "unknown member", &request.member_id);
        }
        if request.member_epoch == -2 && request.instance_id.is_some() {
            // A static member leaving for a restart keeps its partitions
            // until its session times out.
            if let Some(member) = self.members.get_mut(&id) {
                member.left_temporarily = true;
                self.journal.member(&id);
            }
        } else {
            self.remove_member(&id);
        }
        HeartbeatReply {
            error: None,
            message: None,
            member_id: id,
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }

    fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.journal.member(id);
            self.journal.target(id);
            self.bump_epoch();
        }
    }

    /// Expires members whose session or revocation deadline passed.
    /// Returns whether anything changed.
    pub fn tick(&mut self, now: u64) -> bool {
        let session = self.limits.session_timeout_ms.max(0) as u64;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.last_heartbeat + session <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = id, "consumer group member expired");
            self.remove_member(id);
        }
        !expired.is_empty()
    }

    /// Topics that are subscribed by some member.
    fn subscribed_topics(
        &self,
        topics: &TopicsView,
        matches: &dyn Fn(&str, &str) -> bool,
    ) -> BTreeMap<String, (Uuid, i32)> {
        topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| subscribes(m, name, matches)))
            .map(|(name, meta)| (name.clone(), *meta))
            .collect()
    }

    fn compute_target(&mut self, matches: &dyn Fn(&str, &str) -> bool) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| {
                let topics = self.subscribed_metadata.keys().filter(|t| subscribes(m, t, matches)).cloned().collect();
                (m.member_id.clone(), topics)
            })
            .collect();
        let target = match self.assignor() {
            "range" => range_assign(&subscriptions, &self.subscribed_metadata),
            _ => uniform_assign(&subscriptions, &self.subscribed_metadata, &self.target),
        };
        for id in self.target.keys().chain(target.keys()) {
            if self.target.get(id) != target.get(id) {
                self.journal.target(id);
            }
        }
        self.target = target;
        if self.assignment_epoch != self.epoch {
            self.assignment_epoch = self.epoch;
            self.journal.target_epoch();
        }
    }

    fn owned_by_others(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).copied())
            .collect()
    }

    /// Moves the member one step towards its target; true when what it was
    /// told changed.
    fn reconcile(&mut self, member_id: &str, owned: Option<&BTreeSet<TopicPartition>>, now: u64) -> bool {
        let target = self.target_of(member_id);
        let others = self.owned_by_others(member_id);
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else { return false };
        if !member.revoking.is_empty() {
            let revoked = owned.is_some_and(|o| o.is_disjoint(&member.revoking));
            if !revoked {
                return false;
            }
            member.revoking.clear();
            member.revoke_deadline = None;
            self.journal.member(member_id);
        }
        if member.epoch == assignment_epoch && member.assigned == target {
            return false;
        }
        let kept: BTreeSet<TopicPartition> = member.assigned.intersection(&target).copied().collect();
        let revoke: BTreeSet<TopicPartition> = member.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            debug_assert!(kept.is_disjoint(&revoke));
            member.assigned = kept;
            member.revoking = revoke;
            member.revoke_deadline = Some(now + member.metadata.rebalance_timeout_ms.max(0) as u64);
            self.journal.member(member_id);
            return true;
        }
        let free: BTreeSet<TopicPartition> =
            target.difference(&member.assigned).filter(|p| !others.contains(p)).copied().collect();
        debug_assert!(free.is_disjoint(&others), "a partition another member still owns is never given");
        let before = (member.epoch, member.assigned.len());
        member.assigned.extend(free);
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
        debug_assert!(member.assigned.is_subset(&target), "a reconciled member owns only its target");
        debug_assert!(member.revoking.is_empty(), "nothing is left to revoke once the epoch moves");
        let changed = before != (member.epoch, member.assigned.len());
        if changed {
            self.journal.member(member_id);
        }
        changed
    }
}

fn subscribes(member: &Member, topic: &str, matches: &dyn Fn(&str, &str) -> bool) -> bool {
    member.metadata.subscribed_names.iter().any(|n| n == topic)
        || member.metadata.subscribed_regex.as_deref().is_some_and(|r| matches(r, topic))
}

/// Range: per topic, its subscribers sorted by id get contiguous ranges,
/// the first ones one partition more.
pub fn range_assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, (Uuid, i32)>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> =
        subscriptions.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (name, (id, count)) in topics {
        let members: Vec<&String> = subscriptions.iter().filter(|(_, t)| t.contains(name)).map(|(m, _)| m).collect();
        if members.is_empty() {
            continue;
        }
        let (per, extra) = (*count as usize / members.len(), *count as usize % members.len());
        let mut next = 0i32;
        for (i, member) in members.iter().enumerate() {
            let take = per + usize::from(i < extra);
            let set = out.entry((*member).clone()).or_default();
            for p in next..next + take as i32 {
                set.insert((*id, p));
            }
            next += take as i32;
        }
    }
    out
}

/// Uniform: every subscribed partition to one subscriber, balanced, keeping
/// each member's previous partitions where balance allows (fewer moves).
pub fn uniform_assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, (Uuid, i32)>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> =
        subscriptions.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    let by_id: BTreeMap<Uuid, &String> = topics.iter().map(|(name, (id, _))| (*id, name)).collect();
    let all: Vec<TopicPartition> = topics.values().flat_map(|(id, count)| (0..*count).map(move |p| (*id, p))).collect();
    let eligible = |member: &String, tp: &TopicPartition| {
        by_id.get(&tp.0).is_some_and(|name| subscriptions.get(member).is_some_and(|t| t.contains(*name)))
    };
    let members = subscriptions.len().max(1);
    let ceiling = all.len().div_ceil(members);
    let mut taken = BTreeSet::new();
    for (member, set) in out.iter_mut() {
        for tp in previous.get(member).into_iter().flatten() {
            if set.len() < ceiling && all.contains(tp) && eligible(member, tp) && taken.insert(*tp) {
                set.insert(*tp);
            }
        }
    }
    for tp in all.iter().filter(|tp| !taken.contains(tp)) {
        let least = out.iter_mut().filter(|(m, _)| eligible(m, tp)).min_by_key(|(m, s)| (s.len(), (*m).clone()));
        if let Some((_, set)) = least {
            set.insert(*tp);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConsumerLimits =
        ConsumerLimits { session_timeout_ms: 45_000, heartbeat_interval_ms: 5000, max_size: 100 };

    fn no_regex(_: &str, _: &str) -> bool {
        false
    }

    fn join(id: &str) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &BTreeSet<TopicPartition>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            ..Default::default()
        }
    }

    #[test]
    fn a_member_joining_with_nothing_to_subscribe_yet_gets_an_epoch() {
        // A Java client subscribed by pattern joins before its metadata
        // matched any topic: an empty subscription. Its join still moves the
        // group epoch, so its next heartbeat (which omits unchanged fields)
        // is not mistaken for another join.
        let topics = TopicsView::new();
        let mut group = ConsumerGroup::new(LIMITS);
        let mut empty = join("a");
        empty.subscribed_topic_names = Some(Vec::new());
        let joined = group.heartbeat(empty, &topics, &no_regex, 0, String::new());
        assert_eq!(joined.error, None);
        assert!(joined.member_epoch > 0, "the join gave epoch {}", joined.member_epoch);
        let next =
            group.heartbeat(beat("a", joined.member_epoch, &BTreeSet::new()), &topics, &no_regex, 1, String::new());
        assert_eq!((next.error, next.member_epoch), (None, joined.member_epoch));
        let second = group.heartbeat(join("b"), &topics, &no_regex, 2, String::new());
        assert!(second.member_epoch > joined.member_epoch, "every new member moves the group epoch");
    }

    #[test]
    fn members_converge_without_double_ownership() {
        let topic = Uuid::from_u128(7);
        let topics: TopicsView = [("t".to_string(), (topic, 6))].into_iter().collect();
        let mut group = ConsumerGroup::new(LIMITS);
        let a = group.heartbeat(join("a"), &topics, &no_regex, 0, String::new());
        assert_eq!(a.assignment.as_ref().map(|s| s.len()), Some(6));
        let mut owned_a = a.assignment.clone().unwrap();
        let b = group.heartbeat(join("b"), &topics, &no_regex, 1, String::new());
        // b's partitions are still owned by a: none yet.
        assert_eq!(b.assignment.as_ref().map(|s| s.len()), Some(0));
        // a is asked to revoke 3 and keeps its epoch.
        let a2 = group.heartbeat(beat("a", a.member_epoch, &owned_a), &topics, &no_regex, 2, String::new());
        assert_eq!(a2.member_epoch, a.member_epoch);
        owned_a = a2.assignment.clone().unwrap();
        assert_eq!(owned_a.len(), 3);
        // Once revoked, a moves to the new epoch; then b gets the rest.
        let a3 = group.heartbeat(beat("a", a2.member_epoch, &owned_a), &topics, &no_regex, 3, String::new());
        assert_eq!(a3.member_epoch, group.assignment_epoch());
        let b2 = group.heartbeat(beat("b", b.member_epoch, &BTreeSet::new()), &topics, &no_regex, 4, String::new());
        let owned_b = b2.assignment.unwrap();
        assert_eq!(owned_b.len(), 3);
        assert!(owned_b.is_disjoint(&owned_a));
        assert_eq!(group.state_name(), "Stable");
        // b's session expires (a keeps heartbeating): a gets everything back.
        group.heartbeat(beat("a", a3.member_epoch, &owned_a), &topics, &no_regex, 40_000, String::new());
        assert!(group.tick(4 + 45_000));
        assert!(!group.has_member("b") && group.has_member("a"));
        let a4 = group.heartbeat(beat("a", a3.member_epoch, &owned_a), &topics, &no_regex, 45_010, String::new());
        assert_eq!(a4.assignment.map(|s| s.len()), Some(6));
        // A stale epoch is fenced.
        let stale =
            group.heartbeat(beat("a", a3.member_epoch - 1, &owned_a), &topics, &no_regex, 45_020, String::new());
        assert_eq!(stale.error, Some(ResponseError::FencedMemberEpoch));
    }

    #[test]
    fn range_and_uniform_cover_every_partition_once() {
        let (t1, t2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let topics: BTreeMap<String, (Uuid, i32)> =
            [("a".to_string(), (t1, 5)), ("b".to_string(), (t2, 3))].into_iter().collect();
        let subs: BTreeMap<String, BTreeSet<String>> = ["m1", "m2", "m3"]
            .iter()
            .map(|m| (m.to_string(), ["a".to_string(), "b".to_string()].into_iter().collect()))
            .collect();
        for assignment in [range_assign(&subs, &topics), uniform_assign(&subs, &topics, &BTreeMap::new())] {
            let mut all: Vec<TopicPartition> = assignment.values().flatten().copied().collect();
            all.sort();
            let before = all.len();
            all.dedup();
            assert_eq!((before, all.len()), (8, 8));
        }
        let uniform = uniform_assign(&subs, &topics, &BTreeMap::new());
        let sizes: Vec<usize> = uniform.values().map(|s| s.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
    }
}
