//! Consumer groups: the coordinators of this shard's `__consumer_offsets`
//! partitions and the IO around their sans-IO state machines. A group
//! lives on the shard that owns partition `hash(group) % 50` of
//! `__consumer_offsets`, so groups spread over cores; every request for it
//! is sent there over the mesh. This module loads a partition's groups by
//! replaying its records, appends new records (offset commits durably,
//! before they are acknowledged), delivers delayed JoinGroup and SyncGroup
//! answers, and runs the session, rebalance and offset-expiry timers.

pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod records;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_engine::format::batch::BatchHeader;
use shardline_engine::format::records::for_each_key_value;
use shardline_engine::partition::producer_state::{marker_type, MARKER_COMMIT};

use crate::config::BrokerConfig;
use crate::partitions::ShardPartitions;
use classic::{ClassicLimits, Effect, JoinReply, SyncReply, Token};
use consumer::ConsumerLimits;
use coordinator::{Coordinator, Protocol};
use records::OffsetsRecord;

/// The internal topic holding offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

enum Waiter {
    Join(oneshot::Sender<JoinReply>),
    Sync(oneshot::Sender<SyncReply>),
}

enum Slot {
    Loading,
    Ready(Rc<RefCell<Coordinator>>),
}

/// This shard's group coordinators and their waiting requests.
pub struct GroupShard {
    slots: RefCell<HashMap<i32, Slot>>,
    waiters: RefCell<HashMap<Token, Waiter>>,
    next_token: Cell<Token>,
    started: Instant,
}

impl Default for GroupShard {
    fn default() -> Self {
        GroupShard {
            slots: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            started: Instant::now(),
        }
    }
}

/// Classic-protocol limits from the configuration.
pub fn classic_limits(config: &BrokerConfig) -> ClassicLimits {
    ClassicLimits {
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        max_size: config.group_max_size,
    }
}

/// KIP-848 limits from the configuration.
pub fn consumer_limits(config: &BrokerConfig) -> ConsumerLimits {
    ConsumerLimits {
        session_timeout_ms: config.group_consumer_session_timeout_ms,
        heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
        max_size: config.group_max_size,
    }
}

impl GroupShard {
    /// Monotonic milliseconds for the state machines.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A fresh reply token.
    pub fn token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    /// Registers a JoinGroup waiting for its answer.
    pub fn wait_join(&self, token: Token) -> oneshot::Receiver<JoinReply> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(token, Waiter::Join(tx));
        rx
    }

    /// Registers a SyncGroup waiting for its answer.
    pub fn wait_sync(&self, token: Token) -> oneshot::Receiver<SyncReply> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(token, Waiter::Sync(tx));
        rx
    }

    /// Every loaded coordinator of this shard.
    fn loaded(&self) -> Vec<(i32, Rc<RefCell<Coordinator>>)> {
        self.slots
            .borrow()
            .iter()
            .filter_map(|(p, slot)| match slot {
                Slot::Ready(c) => Some((*p, c.clone())),
                Slot::Loading => None,
            })
            .collect()
    }

    /// Forgets every coordinator (the offsets topic was deleted).
    pub fn unload_all(&self) {
        self.slots.borrow_mut().clear();
    }
}

/// The coordinator of `partition`, loading it on first use. Errors are
/// Kafka's: NOT_COORDINATOR when this shard does not own the partition,
/// COORDINATOR_LOAD_IN_PROGRESS while another request is loading it.
pub async fn coordinator(
    state: &Rc<ShardPartitions>,
    partition: i32,
) -> Result<Rc<RefCell<Coordinator>>, ResponseError> {
    match state.groups.slots.borrow().get(&partition) {
        Some(Slot::Ready(c)) => return Ok(c.clone()),
        Some(Slot::Loading) => return Err(ResponseError::CoordinatorLoadInProgress),
        None => {}
    }
    if state.get(OFFSETS_TOPIC, partition).is_none() {
        return Err(ResponseError::NotCoordinator);
    }
    state.groups.slots.borrow_mut().insert(partition, Slot::Loading);
    let loaded = load(state, partition).await;
    match loaded {
        Ok(c) => {
            let c = Rc::new(RefCell::new(c));
            state.groups.slots.borrow_mut().insert(partition, Slot::Ready(c.clone()));
            Ok(c)
        }
        Err(code) => {
            state.groups.slots.borrow_mut().remove(&partition);
            tracing::error!(partition, code, "loading group coordinator failed");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// Replays a `__consumer_offsets` partition into a coordinator.
async fn load(state: &Rc<ShardPartitions>, partition: i32) -> Result<Coordinator, i16> {
    let config = &state.config;
    let mut coordinator = Coordinator::new(classic_limits(config), consumer_limits(config));
    let now = wall_ms();
    let mut records = 0usize;
    let mut visit = |header: &BatchHeader, batch: &[u8]| {
        if header.is_control() {
            if let Some(kind) = marker_type(batch) {
                coordinator.complete_transaction(header.producer_id, kind == MARKER_COMMIT);
            }
            return Ok(());
        }
        for_each_key_value(batch, header, |kv| {
            let Some(record) = kv.key.and_then(|key| records::decode(key, kv.value)) else { return };
            if header.is_transactional() {
                coordinator.replay_pending(header.producer_id, record, now);
            } else {
                coordinator.replay(record, now);
            }
            records += 1;
        })
        .map_err(|_| ResponseError::CorruptMessage.code())
    };
    state.for_each_batch(OFFSETS_TOPIC, partition, &mut visit).await?;
    tracing::info!(partition, records, groups = coordinator.groups.len(), "loaded group coordinator");
    Ok(coordinator)
}

/// Appends `records` to the partition durably (acks=all). Returns the
/// Kafka error of a failed write, mapped as Kafka maps commit failures.
pub async fn append(
    state: &Rc<ShardPartitions>,
    partition: i32,
    records: &[OffsetsRecord],
) -> Result<(), ResponseError> {
    if records.is_empty() {
        return Ok(());
    }
    let encoded: Vec<TestRecord> = records
        .iter()
        .map(|r| {
            let (key, value) = records::encode(r);
            TestRecord { key: Some(key.to_vec()), value: value.map(|v| v.to_vec()), timestamp_delta: 0 }
        })
        .collect();
    let bytes = BytesMut::from(&batch(wall_ms(), &encoded)[..]);
    let outcome = state.produce(OFFSETS_TOPIC, partition, bytes, -1, Duration::from_secs(30)).await;
    match outcome.error_code {
        0 => Ok(()),
        code if code == ResponseError::MessageTooLarge.code() => Err(ResponseError::InvalidCommitOffsetSize),
        code if code == ResponseError::UnknownTopicOrPartition.code()
            || code == ResponseError::NotLeaderOrFollower.code() =>
        {
            Err(ResponseError::NotCoordinator)
        }
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// A transaction marker was written to offsets partition `partition`:
/// applies (commit) or drops (abort) the producer's pending offsets.
pub async fn complete_transaction(state: &Rc<ShardPartitions>, partition: i32, producer_id: i64, commit: bool) {
    if let Ok(c) = coordinator(state, partition).await {
        c.borrow_mut().complete_transaction(producer_id, commit);
    }
}

/// Appends offset `records` inside producer `producer_id`'s transaction
/// (a transactional batch, durable before it returns).
pub async fn append_transactional(
    state: &Rc<ShardPartitions>,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    records: &[OffsetsRecord],
) -> Result<(), ResponseError> {
    let encoded: Vec<TestRecord> = records
        .iter()
        .map(|r| {
            let (key, value) = records::encode(r);
            TestRecord { key: Some(key.to_vec()), value: value.map(|v| v.to_vec()), timestamp_delta: 0 }
        })
        .collect();
    let mut bytes = batch(wall_ms(), &encoded);
    let attributes = shardline_engine::format::batch::ATTR_TRANSACTIONAL;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = shardline_engine::format::batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    match state.append_internal_transactional(OFFSETS_TOPIC, partition, BytesMut::from(&bytes[..])).await {
        0 => Ok(()),
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// Carries out a state machine's effects: answers waiting requests and
/// writes group metadata in the background.
pub fn run_effects(state: &Rc<ShardPartitions>, partition: i32, group: &str, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Join(token, reply) => {
                if let Some(Waiter::Join(tx)) = state.groups.waiters.borrow_mut().remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            Effect::Sync(token, reply) => {
                if let Some(Waiter::Sync(tx)) = state.groups.waiters.borrow_mut().remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            Effect::Persist(value) => {
                let record = OffsetsRecord::Group { group: group.to_string(), value: Some(value) };
                let state = state.clone();
                compio::runtime::spawn(async move {
                    if let Err(error) = append(&state, partition, &[record]).await {
                        tracing::warn!(?error, "writing group metadata failed");
                    }
                })
                .detach();
            }
        }
    }
}

/// Writes the epoch of every KIP-848 group whose epoch moved.
pub fn persist_consumer_epochs(state: &Rc<ShardPartitions>, partition: i32, coordinator: &mut Coordinator) {
    let mut records = Vec::new();
    for (id, group) in coordinator.groups.iter_mut() {
        if let Protocol::Consumer(g) = &mut group.protocol {
            if std::mem::take(&mut g.epoch_dirty) {
                records.push(OffsetsRecord::ConsumerGroupEpoch { group: id.clone(), epoch: Some(g.epoch()) });
            }
        }
    }
    if records.is_empty() {
        return;
    }
    let state = state.clone();
    compio::runtime::spawn(async move {
        if let Err(error) = append(&state, partition, &records).await {
            tracing::warn!(?error, "writing consumer group epochs failed");
        }
    })
    .detach();
}

/// Runs the group timers of this shard until shutdown: sessions and
/// rebalances every 100 ms, offset expiry every
/// `offsets_retention_check_interval_ms`.
pub fn spawn_timers(state: Rc<ShardPartitions>) {
    compio::runtime::spawn(async move {
        let mut last_expiry = Instant::now();
        loop {
            compio::time::sleep(Duration::from_millis(100)).await;
            if state.shutting_down.get() {
                return;
            }
            let now = state.groups.now();
            let wall = wall_ms();
            for (partition, coordinator) in state.groups.loaded() {
                let mut all_effects = Vec::new();
                {
                    let mut c = coordinator.borrow_mut();
                    for (id, group) in c.groups.iter_mut() {
                        let was_empty = group.is_empty();
                        let mut effects = Vec::new();
                        match &mut group.protocol {
                            Protocol::Classic(g) => g.tick(now, &mut effects),
                            Protocol::Consumer(g) => {
                                g.tick(now);
                            }
                        }
                        if !was_empty && group.is_empty() {
                            group.empty_since_ms = Some(wall);
                        }
                        if !effects.is_empty() {
                            all_effects.push((id.clone(), effects));
                        }
                    }
                    persist_consumer_epochs(&state, partition, &mut c);
                }
                for (id, effects) in all_effects {
                    run_effects(&state, partition, &id, effects);
                }
            }
            let interval = Duration::from_millis(state.config.offsets_retention_check_interval_ms.max(1000));
            if last_expiry.elapsed() >= interval {
                last_expiry = Instant::now();
                expire_offsets(&state, wall).await;
            }
        }
    })
    .detach();
}

async fn expire_offsets(state: &Rc<ShardPartitions>, wall: i64) {
    let retention_ms = state.config.offsets_retention_minutes.saturating_mul(60_000);
    for (partition, coordinator) in state.groups.loaded() {
        let expired = coordinator.borrow().expired_offsets(wall, retention_ms);
        if expired.is_empty() {
            continue;
        }
        if append(state, partition, &expired).await.is_ok() {
            let mut c = coordinator.borrow_mut();
            for record in expired {
                c.replay(record, wall);
            }
            // A group with neither members nor offsets is gone.
            c.groups.retain(|_, g| !(g.is_empty() && g.offsets.is_empty()));
        }
    }
}
