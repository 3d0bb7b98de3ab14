//! The group coordinator service of one shard: the coordinators of the
//! `__consumer_offsets` partitions this shard owns, and the IO around their
//! sans-IO state machines. It loads a partition's groups by replaying its
//! records, carries out the effects the state machines return (answers to
//! waiting JoinGroup and SyncGroup requests, records to append, timers to
//! arm), appends offset commits durably before they are acknowledged, and
//! runs the session, rebalance and offset-expiry timers when asked.
//!
//! It reaches a partition only through the [`Replica`] its caller hands
//! it, never through the shard's registry, so the simulator drives the
//! same service over partitions on the fault disk. Time comes from the
//! shard's clock and member ids from a seeded generator. Lives on its
//! shard (`Rc`; one async lock orders the writes of KIP-848 groups, each of
//! which carries the group's state as it is when the write starts).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{batch, set_producer, TestRecord};
use shardline_engine::format::batch::{BatchHeader, ATTR_TRANSACTIONAL};
use shardline_engine::format::records::for_each_key_value;
use shardline_engine::partition::producer_state::{marker_type, MARKER_COMMIT};
use shardline_engine::partition::{AppendOrigin, PartitionError, WalkError};
use shardline_engine::runtime::clock::{timeout, SharedClock};
use shardline_engine::runtime::event::LocalEvent;
use shardline_engine::runtime::spawn::spawn_local;
use shardline_engine::Disk;

use crate::coordinators::{CoordinatorLog, Coordinators};
use crate::groups::classic::{ClassicLimits, Join};
use crate::groups::consumer::{ConsumerLimits, Heartbeat, HeartbeatReply, TopicsView};
use crate::groups::coordinator::{CommitAsked, Coordinator, Protocol};
use crate::groups::effect::{Effect, JoinReply, SyncReply, Token};
use crate::groups::records::{self, OffsetsRecord};
use crate::registry::Replica;

/// How long a coordinator's own append may wait for durability.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the group coordinators are configured with.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Classic protocol limits.
    pub classic: ClassicLimits,
    /// KIP-848 limits.
    pub consumer: ConsumerLimits,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone)]
pub struct SyncAsk {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Generation.
    pub generation: i32,
    /// Protocol type (v5+).
    pub protocol_type: Option<String>,
    /// Protocol name (v5+).
    pub protocol_name: Option<String>,
    /// The leader's assignments.
    pub assignments: Vec<(String, bytes::Bytes)>,
}

/// An OffsetCommit or TxnOffsetCommit, decoded.
#[derive(Debug, Clone)]
pub struct CommitAsk {
    /// Group id.
    pub group_id: String,
    /// Member id (empty for a simple commit).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Generation or member epoch (-1 for a simple commit).
    pub generation: i32,
    /// Whether the member must be checked (TxnOffsetCommit before v3 does
    /// not check it).
    pub check_member: bool,
    /// Whether a KIP-848 group's member may commit (OffsetCommit v9+).
    pub consumer_groups_allowed: bool,
    /// The offsets, per topic.
    pub offsets: Vec<(String, Vec<CommitAsked>)>,
}

enum Waiter {
    Join(oneshot::Sender<JoinReply>),
    Sync(oneshot::Sender<SyncReply>),
}

type Loaded<D> = crate::coordinators::Loaded<Coordinator, D>;

/// One shard's group coordinators. See the module documentation.
pub struct GroupService<D: Disk> {
    config: GroupConfig,
    clock: SharedClock,
    coordinators: Coordinators<Coordinator, D>,
    waiters: RefCell<BTreeMap<Token, Waiter>>,
    next_token: Cell<Token>,
    random: Cell<u64>,
    /// The earliest deadline a state machine asked to be woken at.
    armed_ms: Cell<Option<i64>>,
    /// Fired when a deadline earlier than the armed one is armed.
    rearmed: LocalEvent,
    last_expiry_ms: Cell<i64>,
    /// Held while a KIP-848 group's records are written, so writes land in
    /// the order they were taken.
    consumer_writes: futures::lock::Mutex<()>,
}

fn storage_error(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::BatchTooLarge { .. } => ResponseError::InvalidCommitOffsetSize,
        // TxnOffsetCommit from a producer its coordinator fenced.
        PartitionError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::NotAvailable => ResponseError::NotCoordinator,
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

fn encode_records(records: &[OffsetsRecord]) -> Vec<TestRecord> {
    records
        .iter()
        .map(|r| {
            let (key, value) = records::encode(r);
            TestRecord { key: Some(key.to_vec()), value: value.map(|v| v.to_vec()), timestamp_delta: 0 }
        })
        .collect()
}

impl<D: Disk> GroupService<D> {
    /// No coordinators loaded yet. `seed` seeds the member-id generator.
    pub fn new(config: GroupConfig, clock: SharedClock, seed: u64) -> Self {
        let now = clock.now_ms();
        GroupService {
            config,
            clock,
            coordinators: Coordinators::default(),
            waiters: RefCell::new(BTreeMap::new()),
            next_token: Cell::new(1),
            random: Cell::new(seed | 1),
            armed_ms: Cell::new(None),
            rearmed: LocalEvent::default(),
            last_expiry_ms: Cell::new(now),
            consumer_writes: futures::lock::Mutex::new(()),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The next value of the seeded generator (xorshift64*).
    fn random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    /// The coordinator of offsets partition `at`, loaded on first use.
    async fn loaded(&self, at: CoordinatorLog<D>) -> Result<Loaded<D>, ResponseError> {
        self.coordinators
            .get_or_load(at, |log| async move {
                let coordinator = self.load(&log).await?;
                coordinator.check_invariants();
                self.rearm(coordinator.next_deadline().map(|d| d as i64));
                Ok::<_, WalkError<ResponseError>>(coordinator)
            })
            .await
    }

    /// Replays a `__consumer_offsets` partition into a coordinator.
    async fn load(&self, log: &Replica<D>) -> Result<Coordinator, WalkError<ResponseError>> {
        let mut coordinator = Coordinator::new(self.config.classic, self.config.consumer.clone());
        let now = self.now_ms();
        let mut count = 0usize;
        let visit = |header: &BatchHeader, batch: &[u8]| {
            if header.is_control() {
                if let Some(kind) = marker_type(batch) {
                    coordinator.complete_transaction(header.producer_id, kind == MARKER_COMMIT);
                }
                return Ok(());
            }
            let walked = for_each_key_value(batch, header, |kv| {
                let Some(record) = kv.key.and_then(|key| records::decode(key, kv.value)) else { return };
                if header.is_transactional() {
                    coordinator.replay_pending(header.producer_id, record, now);
                } else {
                    coordinator.replay(record, now);
                }
                count += 1;
            });
            if let Err(error) = walked {
                // One bad batch must not keep every group of the partition
                // unloaded: it is skipped, loudly.
                tracing::error!(offset = header.base_offset, %error, "skipping an undecodable batch while loading groups");
            }
            Ok::<(), ResponseError>(())
        };
        log.partition.for_each_batch(visit).await?;
        tracing::info!(records = count, groups = coordinator.groups.len(), "loaded group coordinator");
        Ok(coordinator)
    }

    /// Appends `records` to the offsets partition and waits until they are
    /// as durable as acks=all asks; errors as Kafka maps commit failures.
    async fn append(
        &self,
        log: &Replica<D>,
        records: &[OffsetsRecord],
        txn: Option<(i64, i16)>,
    ) -> Result<(), ResponseError> {
        if records.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let mut bytes = batch(now, &encode_records(records));
        if let Some((producer_id, epoch)) = txn {
            set_producer(&mut bytes, producer_id, epoch, -1, ATTR_TRANSACTIONAL);
        }
        let partition = &log.partition;
        let appended = partition
            .append_as_leader(BytesMut::from(&bytes[..]), AppendOrigin::Coordinator, 0, now)
            .await
            .map_err(|e| storage_error(&e))?;
        match timeout(&*self.clock, APPEND_TIMEOUT, partition.wait_until(appended.end_offset(), log.acks_all)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(storage_error(&error)),
            Err(_) => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Carries out group `group`'s effects: answers waiting requests, writes
    /// metadata records in the background, arms the group's timer.
    fn run_effects(&self, loaded: &Loaded<D>, group: &str, effects: Vec<Effect>) {
        let mut persist = Vec::new();
        for effect in effects {
            match effect {
                Effect::Join(token, reply) => {
                    if let Some(Waiter::Join(tx)) = self.waiters.borrow_mut().remove(&token) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::Sync(token, reply) => {
                    if let Some(Waiter::Sync(tx)) = self.waiters.borrow_mut().remove(&token) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::PersistGroup(value) => {
                    persist.push(OffsetsRecord::Group { group: group.to_string(), value: Some(value) })
                }
            }
        }
        if !persist.is_empty() {
            let log = loaded.log.clone();
            let clock = self.clock.clone();
            spawn_local(async move {
                let now = clock.now_ms();
                let bytes = BytesMut::from(&batch(now, &encode_records(&persist))[..]);
                let appended = log.partition.append_as_leader(bytes, AppendOrigin::Coordinator, 0, now).await;
                let waited = match appended {
                    Ok(appended) => log.partition.wait_until(appended.end_offset(), log.acks_all).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = waited {
                    tracing::warn!(%error, "writing group metadata failed");
                }
            });
        }
        let coordinator = loaded.state.borrow();
        if cfg!(debug_assertions) {
            coordinator.check_invariants();
        }
        let deadline = coordinator.groups.get(group).and_then(|g| match &g.protocol {
            Protocol::Classic(g) => g.next_deadline(),
            Protocol::Consumer(g) => g.next_deadline(),
        });
        self.rearm(deadline.map(|d| d as i64));
    }

    /// Arms the timer at `deadline_ms` if that is earlier than the armed one.
    fn rearm(&self, deadline_ms: Option<i64>) {
        let Some(deadline_ms) = deadline_ms else { return };
        if self.armed_ms.get().is_none_or(|armed| deadline_ms < armed) {
            self.armed_ms.set(Some(deadline_ms));
            self.rearmed.notify_all();
        }
    }

    /// When [`tick`](Self::tick) next has work: the earliest armed group
    /// deadline, or the next offsets-expiry check.
    pub fn next_deadline_ms(&self) -> i64 {
        let expiry = self.last_expiry_ms.get() + self.config.offsets_retention_check_interval_ms;
        self.armed_ms.get().map_or(expiry, |armed| armed.min(expiry))
    }

    /// Waits until a deadline earlier than the one armed is armed.
    pub async fn rearmed(&self) {
        self.rearmed.listen().await
    }

    /// JoinGroup: answered once the rebalance completes.
    pub async fn join(&self, at: CoordinatorLog<D>, group_id: &str, join: Join) -> Result<JoinReply, ResponseError> {
        let loaded = self.loaded(at).await?;
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(token, Waiter::Join(tx));
        let now = self.now_ms();
        let random = self.random();
        let effects = {
            let mut c = loaded.state.borrow_mut();
            let classic = match c.classic_for_join(group_id, now) {
                Ok(classic) => classic,
                Err(error) => {
                    self.waiters.borrow_mut().remove(&token);
                    return Err(error);
                }
            };
            let mut effects = Vec::new();
            classic.join(Join { token, ..join }, now as u64, random, &mut effects);
            c.note_membership(group_id, now);
            effects
        };
        self.run_effects(&loaded, group_id, effects);
        rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
    }

    /// SyncGroup: followers wait for the leader's assignment.
    pub async fn sync(&self, at: CoordinatorLog<D>, group_id: &str, ask: SyncAsk) -> Result<SyncReply, ResponseError> {
        let loaded = self.loaded(at).await?;
        let token = self.token();
        let now = self.now_ms() as u64;
        let effects = {
            let mut c = loaded.state.borrow_mut();
            let Some(group) = c.groups.get_mut(group_id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else {
                return Err(ResponseError::InconsistentGroupProtocol);
            };
            let mut effects = Vec::new();
            classic.sync(
                token,
                &ask.member_id,
                ask.instance_id.as_deref(),
                ask.generation,
                ask.protocol_type.as_deref(),
                ask.protocol_name.as_deref(),
                ask.assignments,
                now,
                &mut effects,
            );
            effects
        };
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(token, Waiter::Sync(tx));
        // The leader's assignment is written before any SyncGroup is
        // answered: the group completes once it is durable.
        let (assignment, effects): (Vec<Effect>, Vec<Effect>) =
            effects.into_iter().partition(|e| matches!(e, Effect::PersistGroup(_)));
        self.run_effects(&loaded, group_id, effects);
        if let Some(Effect::PersistGroup(value)) = assignment.into_iter().next() {
            let generation = value.generation;
            let mut pending = PendingAssignment { service: self, loaded: &loaded, group_id, generation, done: false };
            let record = OffsetsRecord::Group { group: group_id.to_string(), value: Some(value) };
            let written = self.append(&loaded.log, &[record], None).await;
            pending.finish(written);
        }
        rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
    }

    /// Tells a classic group how the write of its assignment ended, and
    /// carries out what follows (the waiting SyncGroup answers).
    fn assignment_written(
        &self,
        loaded: &Loaded<D>,
        group_id: &str,
        generation: i32,
        written: Result<(), ResponseError>,
    ) {
        let now = self.now_ms() as u64;
        let effects = {
            let mut c = loaded.state.borrow_mut();
            let mut effects = Vec::new();
            if let Some(Protocol::Classic(classic)) = c.groups.get_mut(group_id).map(|g| &mut g.protocol) {
                classic.persisted(generation, written, now, &mut effects);
            }
            effects
        };
        self.run_effects(loaded, group_id, effects);
    }

    /// Heartbeat of a classic member.
    pub async fn heartbeat(
        &self,
        at: CoordinatorLog<D>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let loaded = self.loaded(at).await?;
        let now = self.now_ms() as u64;
        let result = {
            let mut c = loaded.state.borrow_mut();
            let Some(group) = c.groups.get_mut(group_id) else { return Err(ResponseError::UnknownMemberId) };
            match &mut group.protocol {
                Protocol::Classic(classic) => classic.heartbeat(member_id, instance_id, generation, now),
                Protocol::Consumer(_) => Err(ResponseError::UnknownMemberId),
            }
        };
        self.run_effects(&loaded, group_id, Vec::new());
        result
    }

    /// LeaveGroup for each (member id, instance id): each member's error.
    pub async fn leave(
        &self,
        at: CoordinatorLog<D>,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let loaded = self.loaded(at).await?;
        let now = self.now_ms();
        let (results, effects) = {
            let mut c = loaded.state.borrow_mut();
            let Some(group) = c.groups.get_mut(group_id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else { return Err(ResponseError::UnknownMemberId) };
            let mut effects = Vec::new();
            let results = leaving
                .iter()
                .map(|(member, instance)| classic.leave(member, instance.as_deref(), now as u64, &mut effects).err())
                .collect();
            c.note_membership(group_id, now);
            (results, effects)
        };
        self.run_effects(&loaded, group_id, effects);
        Ok(results)
    }

    /// ConsumerGroupHeartbeat (KIP-848) over the assignable `topics`;
    /// `matches(regex, topic)` evaluates subscription regexes.
    pub async fn consumer_heartbeat(
        &self,
        at: CoordinatorLog<D>,
        group_id: &str,
        heartbeat: Heartbeat,
        topics: &TopicsView,
        matches: &dyn Fn(&str, &str) -> bool,
    ) -> Result<HeartbeatReply, ResponseError> {
        let loaded = self.loaded(at).await?;
        let now = self.now_ms();
        let new_member_id = uuid::Uuid::from_u64_pair(self.random(), self.random()).to_string();
        let (reply, changes) = {
            let mut c = loaded.state.borrow_mut();
            let group = c.consumer_for_heartbeat(group_id, now)?;
            let reply = group.heartbeat(heartbeat, topics, matches, now as u64, new_member_id);
            let changes = group.changes();
            c.note_membership(group_id, now);
            (reply, changes)
        };
        self.run_effects(&loaded, group_id, Vec::new());
        // Answered once what the answer rests on is written (Kafka answers
        // after the records commit): a member never holds an epoch or a
        // partition a restart would take back.
        self.write_consumer_group(&loaded, group_id, changes).await?;
        Ok(reply)
    }

    /// Writes KIP-848 group `group_id`'s unwritten changes unless its first
    /// `changes` changes are written already; fails as a coordinator write
    /// fails. The records are taken under the write lock, so they carry the
    /// group as it is then, and land in the order taken.
    async fn write_consumer_group(
        &self,
        loaded: &Loaded<D>,
        group_id: &str,
        changes: u64,
    ) -> Result<(), ResponseError> {
        let written = |loaded: &Loaded<D>| match loaded.state.borrow().groups.get(group_id).map(|g| &g.protocol) {
            Some(Protocol::Consumer(g)) => g.written_through() >= changes,
            // Gone (deleted, or classic again): nothing of it to write.
            _ => true,
        };
        if written(loaded) {
            return Ok(());
        }
        let _writing = self.consumer_writes.lock().await;
        let write = match loaded.state.borrow_mut().groups.get_mut(group_id).map(|g| &mut g.protocol) {
            Some(Protocol::Consumer(g)) if g.written_through() < changes => g.take_unwritten(group_id),
            _ => None,
        };
        let Some(write) = write else { return Ok(()) };
        let result = self.append(&loaded.log, &write.records, None).await;
        if let Err(error) = &result {
            tracing::warn!(group = group_id, ?error, "writing a consumer group's records failed");
        }
        if let Some(Protocol::Consumer(g)) = loaded.state.borrow_mut().groups.get_mut(group_id).map(|g| &mut g.protocol)
        {
            g.written(write, result.is_ok());
        }
        result
    }

    /// OffsetCommit (or, with `txn`, TxnOffsetCommit inside producer
    /// (id, epoch)'s transaction): the member is checked, each partition
    /// validated (`exists`), and the valid commits appended durably before
    /// they apply. Returns each partition's error code.
    pub async fn commit_offsets(
        &self,
        at: CoordinatorLog<D>,
        ask: CommitAsk,
        txn: Option<(i64, i16)>,
        exists: &dyn Fn(&str, i32) -> bool,
    ) -> Result<Vec<Vec<i16>>, ResponseError> {
        let loaded = self.loaded(at).await?;
        let now = self.now_ms();
        if ask.check_member {
            let mut c = loaded.state.borrow_mut();
            c.check_commit(
                &ask.group_id,
                &ask.member_id,
                ask.instance_id.as_deref(),
                ask.generation,
                ask.consumer_groups_allowed,
                now,
            )?;
        }
        let max_metadata = self.config.offset_metadata_max_bytes;
        let (mut codes, records) = Coordinator::plan_commit(&ask.group_id, &ask.offsets, max_metadata, exists, now);
        match self.append(&loaded.log, &records, txn).await {
            Ok(()) => {
                let mut c = loaded.state.borrow_mut();
                for record in records {
                    match txn {
                        Some((producer_id, _)) => c.replay_pending(producer_id, record, now),
                        None => c.replay(record, now),
                    }
                }
            }
            Err(error) => {
                // The write of the valid commits failed: they get its error.
                for code in codes.iter_mut().flatten().filter(|c| **c == 0) {
                    *code = error.code();
                }
            }
        }
        Ok(codes)
    }

    /// Plans records to append with `plan` (which may refuse), appends them
    /// durably, then applies them: DeleteGroups and OffsetDelete.
    pub async fn append_planned<R>(
        &self,
        at: CoordinatorLog<D>,
        plan: impl FnOnce(&Coordinator) -> Result<(R, Vec<OffsetsRecord>), ResponseError>,
    ) -> Result<R, ResponseError> {
        let loaded = self.loaded(at).await?;
        let (answer, records) = plan(&loaded.state.borrow())?;
        self.append(&loaded.log, &records, None).await?;
        let now = self.now_ms();
        let mut c = loaded.state.borrow_mut();
        for record in records {
            c.replay(record, now);
        }
        if cfg!(debug_assertions) {
            c.check_invariants();
        }
        Ok(answer)
    }

    /// Reads the coordinator of `index` with `read` (OffsetFetch, the
    /// describe and list APIs).
    pub async fn inspect<R>(
        &self,
        at: CoordinatorLog<D>,
        read: impl FnOnce(&Coordinator) -> R,
    ) -> Result<R, ResponseError> {
        let loaded = self.loaded(at).await?;
        let coordinator = loaded.state.borrow();
        Ok(read(&coordinator))
    }

    /// A transaction marker was written to offsets partition `index`:
    /// applies (commit) or drops (abort) the producer's pending offsets.
    pub async fn complete_transaction(
        &self,
        at: CoordinatorLog<D>,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let loaded = self.loaded(at).await?;
        loaded.state.borrow_mut().complete_transaction(producer_id, commit);
        Ok(())
    }

    /// Forgets every coordinator (the offsets topic was deleted, or the
    /// simulator crashed the node). Waiting requests are dropped.
    pub fn unload_all(&self) {
        self.coordinators.clear();
        self.waiters.borrow_mut().clear();
        self.armed_ms.set(None);
    }

    /// Runs the timers that are due: session and rebalance deadlines of
    /// every group, and, every `offsets.retention.check.interval.ms`, the
    /// expiry of offsets of groups empty for `offsets.retention.minutes`.
    pub async fn tick(&self) {
        let now = self.now_ms();
        self.armed_ms.set(None);
        let loaded: Vec<Loaded<D>> = self.coordinators.all().into_iter().map(|(_, loaded)| loaded).collect();
        for coordinator in &loaded {
            let mut due = Vec::new();
            let mut unwritten = Vec::new();
            {
                let mut c = coordinator.state.borrow_mut();
                let ids: Vec<String> = c.groups.keys().cloned().collect();
                for id in ids {
                    let Some(group) = c.groups.get_mut(&id) else { continue };
                    let mut effects = Vec::new();
                    match &mut group.protocol {
                        Protocol::Classic(g) => g.tick(now as u64, &mut effects),
                        Protocol::Consumer(g) => {
                            g.tick(now as u64);
                            // Expiries, and any write that failed before.
                            if g.written_through() < g.changes() {
                                unwritten.push((id.clone(), g.changes()));
                            }
                        }
                    }
                    c.note_membership(&id, now);
                    due.push((id, effects));
                }
            }
            for (id, effects) in due {
                self.run_effects(coordinator, &id, effects);
            }
            for (id, changes) in unwritten {
                // A failure is logged and left for the next tick or change.
                let _ = self.write_consumer_group(coordinator, &id, changes).await;
            }
            self.rearm(coordinator.state.borrow().next_deadline().map(|d| d as i64));
        }
        let interval = self.config.offsets_retention_check_interval_ms;
        if now - self.last_expiry_ms.get() >= interval {
            self.last_expiry_ms.set(now);
            for coordinator in &loaded {
                self.expire_offsets(coordinator, now).await;
            }
        }
    }

    async fn expire_offsets(&self, loaded: &Loaded<D>, now: i64) {
        let expired = loaded.state.borrow().expired_offsets(now, self.config.offsets_retention_ms);
        if expired.is_empty() {
            return;
        }
        if self.append(&loaded.log, &expired, None).await.is_ok() {
            let mut c = loaded.state.borrow_mut();
            for record in expired {
                c.replay(record, now);
            }
            // A group with neither members nor offsets is gone.
            c.groups.retain(|_, g| !(g.is_empty() && g.offsets.is_empty()));
        }
    }
}

/// The write of a classic group's assignment, owned by the leader's
/// SyncGroup: if that request is dropped half-way, the group still learns
/// the write's fate (as a failure), so its members are never left waiting.
struct PendingAssignment<'a, D: Disk> {
    service: &'a GroupService<D>,
    loaded: &'a Loaded<D>,
    group_id: &'a str,
    generation: i32,
    done: bool,
}

impl<D: Disk> PendingAssignment<'_, D> {
    fn finish(&mut self, written: Result<(), ResponseError>) {
        self.done = true;
        self.service.assignment_written(self.loaded, self.group_id, self.generation, written);
    }
}

impl<D: Disk> Drop for PendingAssignment<'_, D> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.service.assignment_written(
                self.loaded,
                self.group_id,
                self.generation,
                Err(ResponseError::CoordinatorNotAvailable),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use shardline_engine::format::batch::{compute_crc, ATTR_COMPRESSION_MASK};
    use shardline_engine::partition::Durability;
    use shardline_engine::runtime::clock::system_clock;
    use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
    use shardline_engine::LogConfig;

    use super::*;
    use crate::groups::OFFSETS_TOPIC;
    use crate::registry::PartitionRegistry;

    fn config() -> GroupConfig {
        GroupConfig {
            classic: ClassicLimits {
                min_session_timeout_ms: 1,
                max_session_timeout_ms: 60_000,
                initial_rebalance_delay_ms: 0,
                max_size: 10,
            },
            consumer: ConsumerLimits { session_timeout_ms: 45_000, heartbeat_interval_ms: 5_000, max_size: 10 },
            offset_metadata_max_bytes: 100,
            offsets_retention_ms: i64::MAX / 2,
            offsets_retention_check_interval_ms: 600_000,
        }
    }

    fn commit(offset: i64) -> CommitAsk {
        CommitAsk {
            group_id: "g".into(),
            member_id: String::new(),
            instance_id: None,
            generation: -1,
            check_member: true,
            consumer_groups_allowed: true,
            offsets: vec![(
                "t".into(),
                vec![CommitAsked { partition: offset as i32, offset, leader_epoch: -1, metadata: None }],
            )],
        }
    }

    #[test]
    fn an_undecodable_batch_is_skipped_and_the_rest_loads() {
        compio::runtime::Runtime::new().expect("runtime").block_on(async {
            let disk = FaultDisk::new(1, FaultConfig::default());
            let registry = PartitionRegistry::new(disk, PathBuf::from("/data"), system_clock(), 1 << 20, 1 << 20);
            let replica =
                registry.open(OFFSETS_TOPIC, 0, LogConfig::default(), Durability::Durable).await.expect("open");
            let at = || CoordinatorLog { index: 0, replica: Some(replica.clone()) };
            let exists = |_: &str, _: i32| true;
            let first = GroupService::new(config(), system_clock(), 1);
            assert_eq!(first.commit_offsets(at(), commit(1), None, &exists).await, Ok(vec![vec![0]]));
            // A batch that claims gzip but holds garbage (its CRC is right).
            let mut bad = batch(0, &[TestRecord { key: Some(vec![1; 8]), value: None, timestamp_delta: 0 }]);
            bad[22] = (bad[22] & !(ATTR_COMPRESSION_MASK as u8)) | 1;
            let crc = compute_crc(&bad);
            bad[17..21].copy_from_slice(&crc.to_be_bytes());
            let appended =
                replica.partition.append_as_leader(BytesMut::from(&bad[..]), AppendOrigin::Coordinator, 0, 0);
            let appended = appended.await.expect("the bad batch is stored");
            replica.partition.wait_until(appended.end_offset(), Durability::Durable).await.expect("durable");
            assert_eq!(first.commit_offsets(at(), commit(2), None, &exists).await, Ok(vec![vec![0]]));
            // A fresh coordinator loads both commits around the bad batch.
            let reloaded = GroupService::new(config(), system_clock(), 2);
            let offsets = reloaded
                .inspect(at(), |c| c.groups["g"].offsets.values().map(|v| v.offset).collect::<Vec<_>>())
                .await
                .expect("loads");
            assert_eq!(offsets, vec![1, 2]);
        });
    }
}
