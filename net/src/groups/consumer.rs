//! KIP-848 consumer groups (ConsumerGroupHeartbeat) as a sans-IO state
//! machine: the broker computes the assignment (uniform or range assignor,
//! chosen by the members) and reconciles each member towards it
//! incrementally: a member first revokes what it must give up, keeping its
//! epoch, and only then moves to the group's assignment epoch and receives
//! partitions that no other member still owns. One instance per group, on
//! the shard owning the group's `__consumer_offsets` partition.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::groups::effect::Effect;

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
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed names.
    pub subscribed_names: Vec<String>,
    /// Subscribed regex.
    pub subscribed_regex: Option<String>,
    /// Assignor asked for.
    pub assignor: Option<String>,
    rebalance_timeout_ms: i32,
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

/// A KIP-848 group. See the module documentation.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    subscribed_metadata: BTreeMap<String, (Uuid, i32)>,
    limits: ConsumerLimits,
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
            limits,
        }
    }

    /// An empty group at `epoch` (after a restart).
    pub fn restored(limits: ConsumerLimits, epoch: i32) -> Self {
        let mut group = ConsumerGroup::new(limits);
        group.restore_epoch(epoch);
        group
    }

    /// Raises the epoch to at least `epoch` (replay).
    pub fn restore_epoch(&mut self, epoch: i32) {
        self.epoch = self.epoch.max(epoch);
        self.assignment_epoch = self.assignment_epoch.max(epoch);
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
        self.members.values().find_map(|m| m.assignor.as_deref()).unwrap_or(ASSIGNORS[0])
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
        effects: &mut Vec<Effect>,
    ) -> HeartbeatReply {
        let epoch_before = self.epoch;
        let reply = self.heartbeat_inner(request, topics, matches, now, new_member_id);
        if self.epoch != epoch_before {
            effects.push(Effect::PersistEpoch(self.epoch));
        }
        reply
    }

    fn heartbeat_inner(
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
            member.last_heartbeat = now;
            member.left_temporarily = false;
            if let Some(names) = &request.subscribed_topic_names {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                changed_subscription |= member.subscribed_names != names;
                member.subscribed_names = names;
            }
            if let Some(regex) = &request.subscribed_topic_regex {
                let regex = Some(regex.clone()).filter(|r| !r.is_empty());
                changed_subscription |= member.subscribed_regex != regex;
                member.subscribed_regex = regex;
            }
            if request.server_assignor.is_some() && member.assignor != request.server_assignor {
                member.assignor = request.server_assignor.clone();
                changed_subscription = true;
            }
            if request.rebalance_timeout_ms >= 0 {
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            }
            if request.rack_id.is_some() {
                member.rack_id = request.rack_id.clone();
            }
        }
        if changed_subscription {
            self.bump_epoch();
        }
        let metadata = self.subscribed_topics(topics, matches);
        if metadata != self.subscribed_metadata {
            self.subscribed_metadata = metadata;
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
            let holder = self.members.values().find(|m| m.instance_id.as_ref() == Some(instance)).cloned();
            if let Some(old) = holder.filter(|m| m.member_id != member_id) {
                if !old.left_temporarily {
                    return Err(HeartbeatReply::error(
                        ResponseError::UnreleasedInstanceId,
                        "the static member's previous incarnation has not left",
                        &member_id,
                    ));
                }
                self.members.remove(&old.member_id);
                if let Some(target) = self.target.remove(&old.member_id) {
                    self.target.insert(member_id.clone(), target);
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
            return Ok((member_id, false));
        }
        if self.members.len() >= self.limits.max_size {
            return Err(HeartbeatReply::error(ResponseError::GroupMaxSizeReached, "the group is full", &member_id));
        }
        let is_new = inherited.is_none();
        let member = match inherited {
            Some(mut old) => {
                old.member_id = member_id.clone();
                old.client_id = request.client_id.clone();
                old.client_host = request.client_host.clone();
                old.last_heartbeat = now;
                old
            }
            // A new member: the caller sets its subscription and moves the
            // group epoch.
            None => Member {
                member_id: member_id.clone(),
                instance_id: request.instance_id.clone(),
                rack_id: request.rack_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                subscribed_names: Vec::new(),
                subscribed_regex: None,
                assignor: None,
                rebalance_timeout_ms: request.rebalance_timeout_ms.max(0),
                epoch: 0,
                previous_epoch: -1,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                last_heartbeat: now,
                revoke_deadline: None,
                left_temporarily: false,
            },
        };
        let created = is_new;
        self.members.insert(member_id.clone(), member);
        Ok((member_id, created))
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
                .find(|m| m.instance_id.as_ref() == Some(instance))
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
            self.bump_epoch();
        }
    }

    /// Expires members whose session or revocation deadline passed.
    /// Returns whether anything changed.
    pub fn tick(&mut self, now: u64, effects: &mut Vec<Effect>) -> bool {
        let epoch_before = self.epoch;
        let changed = self.expire(now);
        if self.epoch != epoch_before {
            effects.push(Effect::PersistEpoch(self.epoch));
        }
        changed
    }

    fn expire(&mut self, now: u64) -> bool {
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
        self.target = match self.assignor() {
            "range" => range_assign(&subscriptions, &self.subscribed_metadata),
            _ => uniform_assign(&subscriptions, &self.subscribed_metadata, &self.target),
        };
        self.assignment_epoch = self.epoch;
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
            member.revoke_deadline = Some(now + member.rebalance_timeout_ms.max(0) as u64);
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
        before != (member.epoch, member.assigned.len())
    }
}

fn subscribes(member: &Member, topic: &str, matches: &dyn Fn(&str, &str) -> bool) -> bool {
    member.subscribed_names.iter().any(|n| n == topic)
        || member.subscribed_regex.as_deref().is_some_and(|r| matches(r, topic))
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
        let joined = group.heartbeat(empty, &topics, &no_regex, 0, String::new(), &mut Vec::new());
        assert_eq!(joined.error, None);
        assert!(joined.member_epoch > 0, "the join gave epoch {}", joined.member_epoch);
        let next = group.heartbeat(
            beat("a", joined.member_epoch, &BTreeSet::new()),
            &topics,
            &no_regex,
            1,
            String::new(),
            &mut Vec::new(),
        );
        assert_eq!((next.error, next.member_epoch), (None, joined.member_epoch));
        let second = group.heartbeat(join("b"), &topics, &no_regex, 2, String::new(), &mut Vec::new());
        assert!(second.member_epoch > joined.member_epoch, "every new member moves the group epoch");
    }

    #[test]
    fn members_converge_without_double_ownership() {
        let topic = Uuid::from_u128(7);
        let topics: TopicsView = [("t".to_string(), (topic, 6))].into_iter().collect();
        let mut group = ConsumerGroup::new(LIMITS);
        let a = group.heartbeat(join("a"), &topics, &no_regex, 0, String::new(), &mut Vec::new());
        assert_eq!(a.assignment.as_ref().map(|s| s.len()), Some(6));
        let mut owned_a = a.assignment.clone().unwrap();
        let b = group.heartbeat(join("b"), &topics, &no_regex, 1, String::new(), &mut Vec::new());
        // b's partitions are still owned by a: none yet.
        assert_eq!(b.assignment.as_ref().map(|s| s.len()), Some(0));
        // a is asked to revoke 3 and keeps its epoch.
        let a2 =
            group.heartbeat(beat("a", a.member_epoch, &owned_a), &topics, &no_regex, 2, String::new(), &mut Vec::new());
        assert_eq!(a2.member_epoch, a.member_epoch);
        owned_a = a2.assignment.clone().unwrap();
        assert_eq!(owned_a.len(), 3);
        // Once revoked, a moves to the new epoch; then b gets the rest.
        let a3 = group.heartbeat(
            beat("a", a2.member_epoch, &owned_a),
            &topics,
            &no_regex,
            3,
            String::new(),
            &mut Vec::new(),
        );
        assert_eq!(a3.member_epoch, group.assignment_epoch());
        let b2 = group.heartbeat(
            beat("b", b.member_epoch, &BTreeSet::new()),
            &topics,
            &no_regex,
            4,
            String::new(),
            &mut Vec::new(),
        );
        let owned_b = b2.assignment.unwrap();
        assert_eq!(owned_b.len(), 3);
        assert!(owned_b.is_disjoint(&owned_a));
        assert_eq!(group.state_name(), "Stable");
        // b's session expires (a keeps heartbeating): a gets everything back.
        group.heartbeat(
            beat("a", a3.member_epoch, &owned_a),
            &topics,
            &no_regex,
            40_000,
            String::new(),
            &mut Vec::new(),
        );
        assert!(group.tick(4 + 45_000, &mut Vec::new()));
        assert!(!group.has_member("b") && group.has_member("a"));
        let a4 = group.heartbeat(
            beat("a", a3.member_epoch, &owned_a),
            &topics,
            &no_regex,
            45_010,
            String::new(),
            &mut Vec::new(),
        );
        assert_eq!(a4.assignment.map(|s| s.len()), Some(6));
        // A stale epoch is fenced.
        let stale = group.heartbeat(
            beat("a", a3.member_epoch - 1, &owned_a),
            &topics,
            &no_regex,
            45_020,
            String::new(),
            &mut Vec::new(),
        );
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
