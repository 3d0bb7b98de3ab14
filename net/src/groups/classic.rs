//! The classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) as a sans-IO state machine: each call takes the time in and
//! returns effects (delayed replies to earlier calls, a metadata record to
//! persist). One instance per group, owned by the coordinator of the group's
//! `__consumer_offsets` partition on that partition's shard.
//!
//! States follow Kafka: Empty → PreparingRebalance → CompletingRebalance →
//! Stable. A rebalance completes when every known member has rejoined (or at
//! the rebalance timeout, dropping the others); the leader's SyncGroup hands
//! out the assignments. `group.initial.rebalance.delay.ms` delays the first
//! rebalance of an empty group so that members starting together land in
//! one generation. Static members (`group.instance.id`) keep their
//! assignment across a restart within the session timeout.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use crate::groups::effect::{Effect, JoinMember, JoinReply, SyncReply, Token};
use crate::groups::records::{GroupValue, MemberValue};

/// Group-wide limits from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct ClassicLimits {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct Join {
    /// Reply token.
    pub token: Token,
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id` (static membership, v5+).
    pub instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// "consumer", "connect", ...
    pub protocol_type: String,
    /// Protocols (assignor names) with their metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// v9+: the leader may skip computing an assignment (static leader
    /// rejoining a stable group).
    pub supports_skip_assignment: bool,
}

/// Group state, as DescribeGroups names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned and heartbeating.
    Stable,
}

impl State {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
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
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    /// Current assignment.
    pub assignment: Bytes,
    awaiting_join: Option<(Token, bool)>,
    awaiting_sync: Option<Token>,
    last_heartbeat: u64,
    joined_order: u64,
}

impl Member {
    /// Its metadata for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A classic group. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    state: State,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    pending: BTreeMap<String, u64>,
    static_members: BTreeMap<String, String>,
    join_deadline: u64,
    initial_delay: Option<(u64, u64)>,
    joined_during_delay: bool,
    next_order: u64,
    limits: ClassicLimits,
    next_member: u64,
    /// The generation whose assignment is being written: the group stays
    /// CompletingRebalance, and SyncGroup answers wait, until it is durable.
    persisting: Option<i32>,
}

impl ClassicGroup {
    /// An empty group.
    pub fn new(limits: ClassicLimits) -> Self {
        ClassicGroup {
            state: State::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            static_members: BTreeMap::new(),
            join_deadline: 0,
            initial_delay: None,
            joined_during_delay: false,
            next_order: 0,
            limits,
            next_member: 0,
            persisting: None,
        }
    }

    /// A group restored from its metadata record at `now`: with members and
    /// a chosen protocol it is Stable again with their assignments, and its
    /// members' sessions run from `now`, so they carry on without a
    /// rebalance; else it is Empty at that generation.
    pub fn restored(limits: ClassicLimits, value: &GroupValue, now: u64) -> Self {
        let mut group = ClassicGroup::new(limits);
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
        let (Some(protocol), Some(leader)) = (&value.protocol, &value.leader) else { return group };
        if value.members.is_empty() || !value.members.iter().any(|m| &m.member_id == leader) {
            return group;
        }
        for stored in &value.members {
            group.next_order += 1;
            let member = Member {
                member_id: stored.member_id.clone(),
                instance_id: stored.instance_id.clone(),
                client_id: stored.client_id.clone(),
                client_host: stored.client_host.clone(),
                session_timeout_ms: stored.session_timeout_ms,
                rebalance_timeout_ms: if stored.rebalance_timeout_ms < 0 {
                    stored.session_timeout_ms
                } else {
                    stored.rebalance_timeout_ms
                },
                protocols: vec![(protocol.clone(), stored.subscription.clone())],
                assignment: stored.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                last_heartbeat: now,
                joined_order: group.next_order,
            };
            if let Some(instance) = &stored.instance_id {
                group.static_members.insert(instance.clone(), stored.member_id.clone());
            }
            group.members.insert(stored.member_id.clone(), member);
        }
        group.protocol = Some(protocol.clone());
        group.leader = Some(leader.clone());
        group.state = State::Stable;
        group
    }

    /// Raises the generation to at least `generation` (a KIP-848 group
    /// turning classic keeps counting up).
    pub fn restore_generation(&mut self, generation: i32) {
        self.generation = self.generation.max(generation);
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }
    /// Protocol type, once a member joined.
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    /// Chosen protocol.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    /// Leader.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    /// Members.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    /// Whether `member_id` is a member.
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }
    /// Whether the group has no members and nobody waiting to join.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The earliest time at which [`tick`](Self::tick) has work to do: a
    /// pending member's deadline, a member's session end, or the join
    /// deadline of a rebalance. `None` when no timer is armed.
    pub fn next_deadline(&self) -> Option<u64> {
        let pending = self.pending.values().copied();
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(|m| m.last_heartbeat + m.session_timeout_ms.max(0) as u64);
        let join = (self.state == State::PreparingRebalance).then_some(self.join_deadline);
        pending.chain(sessions).chain(join).min()
    }

    /// Asserts what every transition must leave true (debug builds: the
    /// tests and the simulator run them after every call).
    pub fn check_invariants(&self) {
        if self.state == State::Empty {
            debug_assert!(self.members.is_empty(), "an Empty group has no members");
        }
        if matches!(self.state, State::CompletingRebalance | State::Stable) {
            debug_assert!(self.generation > 0, "an assigned group has a generation");
            debug_assert!(self.protocol.is_some(), "an assigned group has chosen a protocol");
            debug_assert!(
                self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)),
                "an assigned group's leader is a member"
            );
        }
        for id in self.pending.keys() {
            debug_assert!(!self.members.contains_key(id), "a pending member {id} is not yet a member");
        }
        for (instance, id) in &self.static_members {
            debug_assert!(
                self.members.get(id).is_some_and(|m| m.instance_id.as_ref() == Some(instance)),
                "static instance {instance} maps to its member"
            );
        }
        if self.persisting.is_some() {
            debug_assert_eq!(self.state, State::CompletingRebalance, "an assignment is written while completing");
            debug_assert_eq!(self.persisting, Some(self.generation), "the assignment written is this generation's");
        }
        for member in self.members.values() {
            if member.awaiting_sync.is_some() {
                debug_assert_eq!(self.state, State::CompletingRebalance, "SyncGroup waits only for the leader");
            }
            if member.awaiting_join.is_some() {
                debug_assert_eq!(self.state, State::PreparingRebalance, "JoinGroup waits only during a rebalance");
            }
        }
    }

    fn value(&self, now: u64) -> GroupValue {
        let protocol = self.protocol.as_deref();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now as i64,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn new_member_id(&mut self, prefix: &str, random: u64) -> String {
        self.next_member += 1;
        format!("{prefix}-{:016x}{:08x}", random, self.next_member)
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// JoinGroup. `random` seeds a new member id; `now` is monotonic ms.
    pub fn join(&mut self, join: Join, now: u64, random: u64, effects: &mut Vec<Effect>) {
        let reply_now = |effects: &mut Vec<Effect>, error: ResponseError, member_id: &str| {
            effects.push(Effect::Join(join.token, JoinReply::error(error, member_id)));
        };
        if join.session_timeout_ms < self.limits.min_session_timeout_ms
            || join.session_timeout_ms > self.limits.max_session_timeout_ms
        {
            return reply_now(effects, ResponseError::InvalidSessionTimeout, &join.member_id);
        }
        if !self.supports_protocols(&join.protocol_type, &join.protocols) {
            return reply_now(effects, ResponseError::InconsistentGroupProtocol, &join.member_id);
        }
        if join.member_id.is_empty() {
            self.join_unknown_member(join, now, random, effects);
        } else {
            self.join_known_member(join, now, effects);
        }
    }

    fn join_unknown_member(&mut self, join: Join, now: u64, random: u64, effects: &mut Vec<Effect>) {
        let prefix = join.instance_id.clone().unwrap_or_else(|| join.client_id.clone());
        let new_id = self.new_member_id(&prefix, random);
        if let Some(instance) = join.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(join, &old_id, new_id, now, effects);
            }
        }
        if self.members.len() + self.pending.len() >= self.limits.max_size {
            effects.push(Effect::Join(join.token, JoinReply::error(ResponseError::GroupMaxSizeReached, "")));
            return;
        }
        if join.require_known_member_id && join.instance_id.is_none() {
            self.pending.insert(new_id.clone(), now + join.session_timeout_ms as u64);
            effects.push(Effect::Join(join.token, JoinReply::error(ResponseError::MemberIdRequired, &new_id)));
            return;
        }
        self.add_member_and_rebalance(join, new_id, now, effects);
    }

    fn join_known_member(&mut self, join: Join, now: u64, effects: &mut Vec<Effect>) {
        let id = join.member_id.clone();
        if self.pending.remove(&id).is_some() {
            return self.add_member_and_rebalance(join, id, now, effects);
        }
        if let Some(instance) = &join.instance_id {
            if self.static_members.get(instance).is_some_and(|known| *known != id) {
                effects.push(Effect::Join(join.token, JoinReply::error(ResponseError::FencedInstanceId, &id)));
                return;
            }
        }
        let Some(member) = self.members.get_mut(&id) else {
            effects.push(Effect::Join(join.token, JoinReply::error(ResponseError::UnknownMemberId, &id)));
            return;
        };
        let protocols_changed = member.protocols != join.protocols;
        member.protocols = join.protocols.clone();
        member.session_timeout_ms = join.session_timeout_ms;
        member.rebalance_timeout_ms = join.rebalance_timeout_ms;
        member.last_heartbeat = now;
        match self.state {
            State::PreparingRebalance => {
                self.set_awaiting_join(&id, join.token, join.supports_skip_assignment, effects);
                self.try_complete_join(now, effects);
            }
            State::CompletingRebalance | State::Stable
                if !protocols_changed && (self.state == State::CompletingRebalance || self.leader() != Some(&id)) =>
            {
                // Nothing changed: the member gets the current generation again.
                let reply = self.join_reply(&id, false);
                effects.push(Effect::Join(join.token, reply));
            }
            _ => {
                self.set_awaiting_join(&id, join.token, join.supports_skip_assignment, effects);
                self.prepare_rebalance(now, effects);
            }
        }
    }

    fn replace_static_member(&mut self, join: Join, old_id: &str, new_id: String, now: u64, effects: &mut Vec<Effect>) {
        let Some(mut member) = self.members.remove(old_id) else {
            self.static_members.remove(join.instance_id.as_deref().unwrap_or_default());
            return self.add_member_and_rebalance(join, new_id, now, effects);
        };
        // The old incarnation's waiting requests are fenced.
        if let Some((token, _)) = member.awaiting_join.take() {
            effects.push(Effect::Join(token, JoinReply::error(ResponseError::FencedInstanceId, old_id)));
        }
        if let Some(token) = member.awaiting_sync.take() {
            effects.push(Effect::Sync(token, SyncReply::error(ResponseError::FencedInstanceId)));
        }
        member.member_id = new_id.clone();
        member.protocols = join.protocols.clone();
        member.session_timeout_ms = join.session_timeout_ms;
        member.rebalance_timeout_ms = join.rebalance_timeout_ms;
        member.client_id = join.client_id.clone();
        member.client_host = join.client_host.clone();
        member.last_heartbeat = now;
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &join.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        // As Kafka: a static member coming back rebalances the group only if
        // the protocol the group would select changes (its metadata may
        // differ: sticky assignors put owned partitions in it).
        let protocol_changed = self.select_protocol() != self.protocol;
        match self.state {
            State::Stable if !protocol_changed => {
                let mut reply = self.join_reply(&new_id, was_leader && join.supports_skip_assignment);
                if was_leader && !join.supports_skip_assignment {
                    // Before v9 the leader cannot skip assigning: it is told
                    // the old leader id, so it only syncs.
                    reply.leader = old_id.to_string();
                    reply.members.clear();
                }
                effects.push(Effect::Join(join.token, reply));
            }
            State::PreparingRebalance => {
                self.set_awaiting_join(&new_id, join.token, join.supports_skip_assignment, effects);
                self.try_complete_join(now, effects);
            }
            _ => {
                self.set_awaiting_join(&new_id, join.token, join.supports_skip_assignment, effects);
                self.prepare_rebalance(now, effects);
            }
        }
    }

    fn add_member_and_rebalance(&mut self, join: Join, id: String, now: u64, effects: &mut Vec<Effect>) {
        if self.members.is_empty() {
            self.protocol_type = Some(join.protocol_type.clone());
        }
        self.next_order += 1;
        let member = Member {
            member_id: id.clone(),
            instance_id: join.instance_id.clone(),
            client_id: join.client_id.clone(),
            client_host: join.client_host.clone(),
            session_timeout_ms: join.session_timeout_ms,
            rebalance_timeout_ms: join.rebalance_timeout_ms,
            protocols: join.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some((join.token, join.supports_skip_assignment)),
            awaiting_sync: None,
            last_heartbeat: now,
            joined_order: self.next_order,
        };
        if let Some(instance) = &join.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(id, member);
        self.joined_during_delay = true;
        if self.state == State::PreparingRebalance {
            self.try_complete_join(now, effects);
        } else {
            self.prepare_rebalance(now, effects);
        }
    }

    fn set_awaiting_join(&mut self, id: &str, token: Token, skip: bool, effects: &mut Vec<Effect>) {
        if let Some(member) = self.members.get_mut(id) {
            if let Some((old, _)) = member.awaiting_join.replace((token, skip)) {
                // A newer JoinGroup from the same member supersedes the old one.
                effects.push(Effect::Join(old, JoinReply::error(ResponseError::RebalanceInProgress, id)));
            }
        }
    }

    fn prepare_rebalance(&mut self, now: u64, effects: &mut Vec<Effect>) {
        // An assignment still being written is superseded.
        self.persisting = None;
        if self.state == State::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(token) = member.awaiting_sync.take() {
                    effects.push(Effect::Sync(token, SyncReply::error(ResponseError::RebalanceInProgress)));
                }
            }
        }
        let rebalance_timeout = self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0);
        let delay = self.limits.initial_rebalance_delay_ms.max(0) as u64;
        if self.state == State::Empty && delay > 0 {
            let first = delay.min(rebalance_timeout.max(1));
            self.initial_delay = Some((delay, rebalance_timeout.saturating_sub(first)));
            self.joined_during_delay = false;
            self.join_deadline = now + first;
        } else {
            self.initial_delay = None;
            self.join_deadline = now + rebalance_timeout;
        }
        self.state = State::PreparingRebalance;
        self.try_complete_join(now, effects);
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn try_complete_join(&mut self, now: u64, effects: &mut Vec<Effect>) {
        if self.state != State::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        if self.all_joined() || now >= self.join_deadline {
            self.complete_join(now, effects);
        }
    }

    fn select_protocol(&self) -> Option<String> {
        // Each member votes for its most preferred protocol all members
        // support; the most votes wins (ties: the first member's order).
        let first = self.members.values().min_by_key(|m| m.joined_order)?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(*name).copied().unwrap_or(0),
                    usize::MAX - candidates.iter().position(|c| c == *name).unwrap_or(0),
                )
            })
            .map(|s| s.to_string())
    }

    fn complete_join(&mut self, now: u64, effects: &mut Vec<Effect>) {
        let dropped: Vec<String> =
            self.members.values().filter(|m| m.awaiting_join.is_none()).map(|m| m.member_id.clone()).collect();
        for id in dropped {
            self.remove_member(&id);
        }
        self.pending.clear();
        let previous_generation = self.generation;
        self.generation += 1;
        debug_assert!(self.generation > previous_generation, "every rebalance is a new generation");
        debug_assert!(self.members.values().all(|m| m.awaiting_join.is_some()), "only rejoined members stay");
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            effects.push(Effect::PersistGroup(self.value(now)));
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.values().min_by_key(|m| m.joined_order).map(|m| m.member_id.clone());
        }
        debug_assert!(
            self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)),
            "a completed join has a leader among its members"
        );
        self.state = State::CompletingRebalance;
        let waiting: Vec<(String, Token, bool)> = self
            .members
            .values_mut()
            .filter_map(|m| m.awaiting_join.take().map(|(t, skip)| (m.member_id.clone(), t, skip)))
            .collect();
        for (id, token, _) in waiting {
            let reply = self.join_reply(&id, false);
            debug_assert!(reply.error.is_none() && reply.generation == self.generation);
            effects.push(Effect::Join(token, reply));
        }
        debug_assert!(self.members.values().all(|m| m.awaiting_join.is_none()), "every waiting join is answered");
    }

    fn join_reply(&self, member_id: &str, skip_assignment: bool) -> JoinReply {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            let mut all: Vec<&Member> = self.members.values().collect();
            all.sort_by_key(|m| m.joined_order);
            all.into_iter()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(self.protocol()),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinReply {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: skip_assignment && is_leader,
            members,
        }
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let member = self.members.remove(id)?;
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.values().min_by_key(|m| m.joined_order).map(|m| m.member_id.clone());
        }
        Some(member)
    }

    /// Validates a member's identity for SyncGroup, Heartbeat and commits.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(known) = self.static_members.get(instance) {
                if known != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup. The leader's call carries the assignments.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        token: Token,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        if let Err(error) = self.check_member(member_id, instance_id, generation) {
            return effects.push(Effect::Sync(token, SyncReply::error(error)));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol())
        {
            return effects.push(Effect::Sync(token, SyncReply::error(ResponseError::InconsistentGroupProtocol)));
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match self.state {
            State::Empty => effects.push(Effect::Sync(token, SyncReply::error(ResponseError::UnknownMemberId))),
            State::PreparingRebalance => {
                effects.push(Effect::Sync(token, SyncReply::error(ResponseError::RebalanceInProgress)))
            }
            State::Stable => {
                let reply = self.sync_reply(member_id);
                effects.push(Effect::Sync(token, reply));
            }
            State::CompletingRebalance => {
                if let Some(member) = self.members.get_mut(member_id) {
                    if let Some(old) = member.awaiting_sync.replace(token) {
                        effects.push(Effect::Sync(old, SyncReply::error(ResponseError::RebalanceInProgress)));
                    }
                }
                if self.leader.as_deref() == Some(member_id) && self.persisting.is_none() {
                    // The assignment is written first; every SyncGroup is
                    // answered once it is durable (`persisted`).
                    let assigned: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = assigned.get(&member.member_id).cloned().unwrap_or_default();
                    }
                    self.persisting = Some(self.generation);
                    effects.push(Effect::PersistGroup(self.value(now)));
                }
            }
        }
    }

    /// The write of `generation`'s assignment finished (`Err`: it failed).
    /// Done: the group is Stable and every waiting SyncGroup gets its
    /// assignment. Failed: they get the error and the group rebalances, as
    /// Kafka's does. A superseded generation changes nothing.
    pub fn persisted(
        &mut self,
        generation: i32,
        written: Result<(), ResponseError>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        if self.persisting != Some(generation) || self.state != State::CompletingRebalance {
            return;
        }
        self.persisting = None;
        let waiting: Vec<(String, Token)> = self
            .members
            .values_mut()
            .filter_map(|m| m.awaiting_sync.take().map(|t| (m.member_id.clone(), t)))
            .collect();
        match written {
            Ok(()) => {
                self.state = State::Stable;
                for (id, token) in waiting {
                    let reply = self.sync_reply(&id);
                    effects.push(Effect::Sync(token, reply));
                }
            }
            Err(error) => {
                for (_, token) in waiting {
                    effects.push(Effect::Sync(token, SyncReply::error(error)));
                }
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                }
                self.prepare_rebalance(now, effects);
            }
        }
    }

    fn sync_reply(&self, member_id: &str) -> SyncReply {
        SyncReply {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: u64,
    ) -> Result<(), ResponseError> {
        if self.state == State::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match self.state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Whether an offset commit from this member at this generation may be
    /// stored (also while the group prepares a rebalance). A commit with generation -1 and no member id is a "simple"
    /// commit, allowed only while the group has no members.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: u64,
    ) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        self.check_member(member_id, instance_id, generation)?;
        // As Kafka's GroupCoordinator: a member of the current generation may
        // commit while the group prepares a rebalance (consumers commit as
        // their partitions are revoked); only the assignment phase refuses.
        match self.state {
            State::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => {
                if let Some(member) = self.members.get_mut(member_id) {
                    member.last_heartbeat = now;
                }
                Ok(())
            }
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for a
    /// static member). Returns that member's error, if any.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ResponseError> {
        let id = match instance_id {
            Some(instance) => {
                let known = self.static_members.get(instance).cloned().ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != known {
                    return Err(ResponseError::FencedInstanceId);
                }
                known
            }
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.try_complete_join(now, effects);
            return Ok(());
        }
        let member = self.remove_member(&id).ok_or(ResponseError::UnknownMemberId)?;
        self.after_removal(member, now, effects);
        Ok(())
    }

    fn after_removal(&mut self, mut member: Member, now: u64, effects: &mut Vec<Effect>) {
        if let Some((token, _)) = member.awaiting_join.take() {
            effects.push(Effect::Join(token, JoinReply::error(ResponseError::UnknownMemberId, &member.member_id)));
        }
        if let Some(token) = member.awaiting_sync.take() {
            effects.push(Effect::Sync(token, SyncReply::error(ResponseError::UnknownMemberId)));
        }
        match self.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(now, effects),
            State::PreparingRebalance => self.try_complete_join(now, effects),
            State::Empty => {}
        }
    }

    /// Session and rebalance timers. Call periodically.
    pub fn tick(&mut self, now: u64, effects: &mut Vec<Effect>) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .filter(|m| m.last_heartbeat + m.session_timeout_ms.max(0) as u64 <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            if let Some(member) = self.remove_member(&id) {
                tracing::info!(member = id, "group member's session expired");
                self.after_removal(member, now, effects);
            }
        }
        if self.state == State::PreparingRebalance && now >= self.join_deadline {
            if let Some((delay, remaining)) = self.initial_delay {
                if self.joined_during_delay && remaining > 0 {
                    let step = delay.min(remaining);
                    self.initial_delay = Some((delay, remaining - step));
                    self.joined_during_delay = false;
                    self.join_deadline = now + step;
                    return;
                }
                self.initial_delay = None;
                let rebalance_timeout =
                    self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0);
                self.join_deadline = now + rebalance_timeout;
                if self.all_joined() {
                    self.complete_join(now, effects);
                }
                return;
            }
            self.complete_join(now, effects);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ClassicLimits = ClassicLimits {
        min_session_timeout_ms: 1000,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        max_size: 100,
    };

    fn join(token: Token, member_id: &str) -> Join {
        Join {
            token,
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn joined(effects: &[Effect], token: Token) -> JoinReply {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Join(t, r) if *t == token => Some(r.clone()),
                _ => None,
            })
            .expect("join reply")
    }

    #[test]
    fn two_members_join_sync_and_one_leaves() {
        let mut group = ClassicGroup::new(LIMITS);
        let mut fx = Vec::new();
        group.join(join(1, ""), 0, 1, &mut fx);
        let a = joined(&fx, 1);
        assert_eq!(a.error, Some(ResponseError::MemberIdRequired));
        fx.clear();
        group.join(join(2, &a.member_id), 0, 0, &mut fx);
        let first = joined(&fx, 2);
        assert_eq!(first.generation, 1);
        assert_eq!(first.leader, a.member_id);
        assert_eq!(first.members.len(), 1);
        fx.clear();
        group.sync(
            3,
            &a.member_id,
            None,
            1,
            None,
            None,
            vec![(a.member_id.clone(), Bytes::from_static(b"p0"))],
            0,
            &mut fx,
        );
        // The assignment is written first; nobody is answered until it is durable.
        assert!(matches!(&fx[..], [Effect::PersistGroup(v)] if v.members[0].assignment == "p0"));
        assert_eq!(group.state(), State::CompletingRebalance);
        fx.clear();
        group.persisted(1, Ok(()), 0, &mut fx);
        assert!(matches!(&fx[..], [Effect::Sync(3, r)] if r.assignment == "p0"));
        assert_eq!(group.state(), State::Stable);

        // A second member joins: the first must rejoin.
        fx.clear();
        group.join(join(4, ""), 10, 2, &mut fx);
        let b_id = joined(&fx, 4).member_id;
        fx.clear();
        group.join(join(5, &b_id), 10, 0, &mut fx);
        assert!(fx.is_empty());
        assert_eq!(group.heartbeat(&a.member_id, None, 1, 20), Err(ResponseError::RebalanceInProgress));
        // While the rebalance is prepared, the current generation may commit.
        assert_eq!(group.check_commit(&a.member_id, None, 1, 20), Ok(()));
        group.join(join(6, &a.member_id), 20, 0, &mut fx);
        assert_eq!(joined(&fx, 6).generation, 2);
        assert_eq!(joined(&fx, 6).members.len(), 2);
        assert!(joined(&fx, 5).members.is_empty());

        // Follower syncs first and waits for the leader.
        fx.clear();
        group.sync(7, &b_id, None, 2, None, None, vec![], 30, &mut fx);
        assert!(fx.is_empty());
        group.sync(8, &a.member_id, None, 2, None, None, vec![(b_id.clone(), Bytes::from_static(b"p1"))], 30, &mut fx);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Sync(..))), "no answer before the write");
        // Commits are still accepted while the group completes? No: the
        // assignment phase refuses them; a rebalance being prepared does not.
        assert_eq!(group.check_commit(&b_id, None, 2, 30), Err(ResponseError::RebalanceInProgress));
        group.persisted(2, Ok(()), 30, &mut fx);
        assert!(fx.iter().any(|e| matches!(e, Effect::Sync(7, r) if r.assignment == "p1")));

        // The leader's session expires: the follower must rejoin.
        fx.clear();
        assert_eq!(group.heartbeat(&b_id, None, 2, 10_000), Ok(()));
        group.tick(10_031, &mut fx);
        assert!(!group.has_member(&a.member_id));
        assert_eq!(group.state(), State::PreparingRebalance);
        group.join(join(9, &b_id), 10_040, 0, &mut fx);
        let rejoined = joined(&fx, 9);
        assert_eq!((rejoined.generation, rejoined.leader.as_str()), (3, b_id.as_str()));

        // Leaving empties the group.
        fx.clear();
        assert_eq!(group.leave(&b_id, None, 10_050, &mut fx), Ok(()));
        assert_eq!(group.leave(&b_id, None, 10_050, &mut fx), Err(ResponseError::UnknownMemberId));
        assert!(group.members().next().is_none());
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let mut group = ClassicGroup::new(LIMITS);
        let mut fx = Vec::new();
        let mut j = join(1, "");
        j.instance_id = Some("i1".into());
        group.join(j.clone(), 0, 1, &mut fx);
        let first = joined(&fx, 1);
        assert_eq!(first.error, None);
        let mut f = join(2, "");
        f.instance_id = Some("i2".into());
        fx.clear();
        group.join(f.clone(), 0, 2, &mut fx);
        // The first member rejoins too, completing generation 2... or 1 if
        // both landed in one rebalance.
        let mut again = j.clone();
        again.member_id = first.member_id.clone();
        again.token = 3;
        group.join(again, 0, 0, &mut fx);
        let gen = group.generation();
        let follower = joined(&fx, 2).member_id;
        fx.clear();
        group.sync(
            4,
            &first.member_id,
            Some("i1"),
            gen,
            None,
            None,
            vec![(follower.clone(), Bytes::from_static(b"x"))],
            0,
            &mut fx,
        );
        group.sync(5, &follower, Some("i2"), gen, None, None, vec![], 0, &mut fx);
        group.persisted(gen, Ok(()), 0, &mut fx);
        assert_eq!(group.state(), State::Stable);
        // The follower restarts: new member id, same assignment, no rebalance.
        fx.clear();
        f.token = 6;
        group.join(f, 100, 3, &mut fx);
        let back = joined(&fx, 6);
        assert_eq!(back.error, None);
        assert_eq!(back.generation, gen);
        assert_eq!(group.state(), State::Stable);
        assert_eq!(group.heartbeat(&follower, Some("i2"), gen, 100), Err(ResponseError::FencedInstanceId));
        fx.clear();
        group.sync(7, &back.member_id, Some("i2"), gen, None, None, vec![], 100, &mut fx);
        assert!(matches!(&fx[..], [Effect::Sync(7, r)] if r.assignment == "x"));
    }

    #[test]
    fn a_stable_group_is_restored_from_its_record_and_a_failed_write_rebalances() {
        let mut group = ClassicGroup::new(LIMITS);
        let mut fx = Vec::new();
        let mut j = join(1, "");
        j.instance_id = Some("i1".into());
        group.join(j, 0, 1, &mut fx);
        let a = joined(&fx, 1);
        fx.clear();
        group.sync(
            2,
            &a.member_id,
            Some("i1"),
            1,
            None,
            None,
            vec![(a.member_id.clone(), Bytes::from_static(b"a0"))],
            0,
            &mut fx,
        );
        let Some(Effect::PersistGroup(value)) = fx.first().cloned() else { panic!("the assignment is written") };
        group.persisted(1, Ok(()), 0, &mut fx);
        // After a restart the record alone brings the group back as it was.
        let restored = ClassicGroup::restored(LIMITS, &value, 5_000);
        assert_eq!((restored.state(), restored.generation()), (State::Stable, 1));
        assert_eq!(restored.leader(), Some(a.member_id.as_str()));
        let mut restored = restored;
        assert_eq!(restored.heartbeat(&a.member_id, Some("i1"), 1, 5_000), Ok(()), "no rebalance after a restart");
        fx.clear();
        restored.sync(3, &a.member_id, Some("i1"), 1, None, None, vec![], 5_000, &mut fx);
        assert!(matches!(&fx[..], [Effect::Sync(3, r)] if r.assignment == "a0"), "the assignment survived");
        // Its session runs from the load: silent past it, it is removed.
        fx.clear();
        restored.tick(5_000 + 10_001, &mut fx);
        assert!(!restored.has_member(&a.member_id));

        // A write that fails answers the waiting syncs with its error and rebalances.
        let mut failing = ClassicGroup::new(LIMITS);
        let mut fx = Vec::new();
        failing.join(join(1, ""), 0, 1, &mut fx);
        let b = joined(&fx, 1);
        fx.clear();
        failing.join(join(4, &b.member_id), 0, 0, &mut fx);
        assert_eq!(joined(&fx, 4).generation, 1);
        fx.clear();
        failing.sync(
            2,
            &b.member_id,
            None,
            1,
            None,
            None,
            vec![(b.member_id.clone(), Bytes::from_static(b"b0"))],
            0,
            &mut fx,
        );
        fx.clear();
        failing.persisted(1, Err(ResponseError::NotCoordinator), 0, &mut fx);
        assert!(
            matches!(&fx[..], [Effect::Sync(2, r), ..] if r.error == Some(ResponseError::NotCoordinator)),
            "{fx:?}"
        );
        assert_eq!(failing.state(), State::PreparingRebalance);
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts_are_refused() {
        let mut group = ClassicGroup::new(LIMITS);
        let mut fx = Vec::new();
        let mut j = join(1, "");
        j.require_known_member_id = false;
        group.join(j.clone(), 0, 1, &mut fx);
        let mut other = j.clone();
        other.token = 2;
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        group.join(other, 0, 2, &mut fx);
        assert_eq!(joined(&fx, 2).error, Some(ResponseError::InconsistentGroupProtocol));
        let mut slow = j;
        slow.token = 3;
        slow.session_timeout_ms = 100;
        group.join(slow, 0, 3, &mut fx);
        assert_eq!(joined(&fx, 3).error, Some(ResponseError::InvalidSessionTimeout));
    }

    #[test]
    fn initial_delay_gathers_members_into_one_generation() {
        let mut group = ClassicGroup::new(ClassicLimits { initial_rebalance_delay_ms: 3000, ..LIMITS });
        let mut fx = Vec::new();
        let mut a = join(1, "");
        a.require_known_member_id = false;
        group.join(a.clone(), 0, 1, &mut fx);
        group.tick(1000, &mut fx);
        let mut b = a.clone();
        b.token = 2;
        group.join(b, 1000, 2, &mut fx);
        group.tick(3000, &mut fx);
        assert!(fx.is_empty(), "the delay is extended while members join");
        group.tick(6000, &mut fx);
        assert_eq!(joined(&fx, 1).generation, 1);
        assert_eq!(joined(&fx, 2).generation, 1);
    }
}
