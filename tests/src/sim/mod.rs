//! The deterministic simulator. One seeded loop drives a node's partitions,
//! its group and transaction coordinators and their effects over the
//! fault-injecting disk and a simulated clock, with clients sending random
//! operations (plain, idempotent and transactional produce, offset commits
//! in and out of transactions, classic and KIP-848 group membership), and
//! with faults: power losses (unsynced writes lost or torn), kill -9 of
//! the process, and fsync and write errors. After every step it checks the
//! cheap invariants against the model; after every restart, and at the
//! end, the full ones ([`model`]).
//!
//! A run depends on nothing but its seed: one thread, a first-in first-out
//! executor, a clock that moves only when the loop says so, and one seeded
//! generator for every choice. The same seed gives the same trace (the run
//! prints its hash); a failing seed prints the command that replays it.
//! The cluster issues add nodes and a network to the same loop.

pub mod clients;
pub mod clock;
pub mod executor;
pub mod model;
pub mod node;
pub mod quorum;
pub mod rng;
pub mod trace;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::ResponseError;
use shardline_engine::partition::Durability;
use shardline_engine::runtime::clock::Clock;
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_net::groups::OFFSETS_TOPIC;

use clients::{as_producer, data_batch, offsets_partition, Client, Op, OpResult, SentBatch};
use clock::SimClock;
use executor::Executor;
use model::{
    check_commits, check_log, check_offsets, reset_high_watermarks, AckedBatch, CrashKind, Model, Outcome, TxnRecord,
};
use node::{data_acks_all, SimNode, DATA_PARTITIONS, DATA_TOPIC};
use rng::SimRng;
use trace::Trace;

/// Polls one step may take before the run counts as a livelock.
const MAX_POLLS_PER_STEP: u64 = 500_000;
/// Where simulated time starts (ms since the epoch).
const START_MS: i64 = 1_700_000_000_000;

/// How long a run is and what it prints.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Steps per run.
    pub steps: u64,
    /// Print every trace line.
    pub verbose: bool,
    /// Run the full checks (every acknowledged batch read back from the
    /// log, read_committed, commits) every this many steps, besides after
    /// every restart and at the end.
    pub full_check_every: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { steps: 250, verbose: false, full_check_every: 1 }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The trace's hash.
    pub trace_hash: u64,
    /// Trace lines.
    pub trace_lines: u64,
    /// Operations answered.
    pub operations: u64,
    /// Crashes and restarts.
    pub crashes: u64,
    /// Acknowledged batches checked at the end.
    pub acknowledged: u64,
}

/// A failing run.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// The step it failed at.
    pub step: u64,
    /// What failed.
    pub message: String,
    /// The last trace lines.
    pub recent: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulator seed {} failed at step {}: {}", self.seed, self.step, self.message)?;
        writeln!(f, "last trace lines:")?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: SHARDLINE_SIM_SEED={} SHARDLINE_SIM_VERBOSE=1 cargo test -p shardline-tests --test simulator -- --nocapture",
            self.seed
        )
    }
}

/// A client's operation in flight.
struct InFlight {
    client: usize,
    op: Op,
    task: executor::TaskId,
}

type Completed = Rc<RefCell<Vec<(usize, OpResult)>>>;

/// One run. See the module documentation.
struct Sim {
    seed: u64,
    config: SimConfig,
    rng: SimRng,
    clock: SimClock,
    executor: Executor,
    node: Rc<SimNode>,
    model: Model,
    trace: Trace,
    clients: Vec<Client>,
    busy: BTreeMap<usize, InFlight>,
    completed: Completed,
    counter: u64,
    step: u64,
    operations: u64,
    crashes: u64,
    /// A crash scheduled at this step (after injected I/O errors).
    crash_due: Option<u64>,
    /// Generations seen per classic group since the last restart.
    generations: BTreeMap<String, i32>,
    /// Each committer's next offset per partition (commits move forward).
    next_commit: BTreeMap<(usize, i32), i64>,
}

fn initial_clients() -> Vec<Client> {
    let mut clients = vec![Client::Plain, Client::Plain];
    for partition in [0, 1] {
        clients.push(Client::Idempotent {
            producer_id: None,
            partition,
            next_sequence: 0,
            last: None,
            unanswered: None,
        });
    }
    for id in ["tx-a", "tx-b"] {
        clients.push(Client::Transactional {
            id: id.to_string(),
            producer: None,
            txn: None,
            added: BTreeSet::new(),
            sequences: BTreeMap::new(),
            ending: None,
        });
    }
    for group in ["og-a", "og-b"] {
        clients.push(Client::Committer { group: group.to_string() });
    }
    for _ in 0..3 {
        clients.push(Client::ClassicMember {
            group: "cg".into(),
            member_id: String::new(),
            generation: None,
            leader_of: Vec::new(),
            needs_sync: false,
        });
    }
    for k in 0..2 {
        clients.push(Client::ConsumerMember {
            group: "kg".into(),
            member_id: format!("kmember-{k}"),
            epoch: 0,
            owned: BTreeSet::new(),
        });
    }
    clients
}

fn short(result: &OpResult) -> String {
    match result {
        OpResult::Appended(a) => {
            format!("appended {}..={}{}", a.base_offset, a.last_offset, if a.duplicate { " dup" } else { "" })
        }
        OpResult::ProducerId(id) => format!("pid {id}"),
        OpResult::Transactional(id, epoch) => format!("pid {id} epoch {epoch}"),
        OpResult::Done => "ok".into(),
        OpResult::Committed(codes) => format!("commit {codes:?}"),
        OpResult::Joined(r) => {
            format!("joined {:?} gen {} leader {} me {}", r.error, r.generation, r.leader, r.member_id)
        }
        OpResult::Synced(r) => format!("synced {:?} {:?}", r.error, r.assignment),
        OpResult::Beat(r) => {
            format!("beat {:?} epoch {} assigned {:?}", r.error, r.member_epoch, r.assignment.as_ref().map(|a| a.len()))
        }
        OpResult::Refused(e) => format!("refused {e:?}"),
        OpResult::OutOfOrder(e) => format!("out of order: {e}"),
        OpResult::Failed(e) => format!("failed {e}"),
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Append { batch, durability } => {
            format!("append p{} seq {} ({} records, {:?})", batch.partition, batch.sequence, batch.records, durability)
        }
        Op::ProduceInTxn { batch } => format!("txn-append p{} seq {}", batch.partition, batch.sequence),
        other => format!("{other:?}"),
    }
}

fn fenced(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::ProducerFenced
            | ResponseError::InvalidProducerEpoch
            | ResponseError::InvalidProducerIdMapping
            | ResponseError::InvalidTxnState
    )
}

impl Sim {
    fn fail(&self, message: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.seed,
            step: self.step,
            message: message.into(),
            recent: self.trace.recent().cloned().collect(),
        }
    }

    fn run_tasks(&mut self) -> Result<(), SimFailure> {
        self.executor
            .run_until_stalled(MAX_POLLS_PER_STEP)
            .map(|_| ())
            .map_err(|livelock| self.fail(format!("livelock: {} polls without stalling", livelock.polls)))
    }

    /// The next operation of idle `client`, if it has one now.
    fn next_op(&mut self, client: usize) -> Option<Op> {
        let now = self.clock.now_ms();
        self.counter += 1;
        let counter = self.counter;
        let rng = &mut self.rng;
        match &mut self.clients[client] {
            Client::Plain => {
                let partition = rng.below(DATA_PARTITIONS as u64) as i32;
                let (bytes, records) = data_batch(rng, client, counter, now);
                let durability = if rng.chance(1, 3) { Durability::Written } else { data_acks_all(partition) };
                let batch = SentBatch { partition, bytes, sequence: -1, records, acked_at: None };
                Some(Op::Append { batch, durability: Some(durability) })
            }
            Client::Idempotent { producer_id: None, .. } => Some(Op::InitProducerId),
            Client::Idempotent { producer_id: Some(pid), partition, next_sequence, last, unanswered } => {
                if let Some(batch) = unanswered.clone() {
                    return Some(Op::Append { batch, durability: Some(Durability::Durable) });
                }
                if let Some(last) = last.as_ref().filter(|_| rng.chance(1, 5)) {
                    return Some(Op::Append { batch: last.clone(), durability: Some(Durability::Durable) });
                }
                let (bytes, records) = data_batch(rng, client, counter, now);
                let bytes = as_producer(bytes, *pid, 0, *next_sequence, false);
                let batch =
                    SentBatch { partition: *partition, bytes, sequence: *next_sequence, records, acked_at: None };
                Some(Op::Append { batch, durability: Some(Durability::Durable) })
            }
            Client::Transactional { producer: None, .. } => Some(Op::InitTransactional),
            Client::Transactional { producer: Some(_), ending: Some(commit), .. } => {
                Some(Op::EndTxn { commit: *commit })
            }
            Client::Transactional { producer: Some((pid, epoch)), txn, added, sequences, .. } => {
                if rng.chance(1, 30) {
                    // A new incarnation fences this one (and aborts its transaction).
                    return Some(Op::InitTransactional);
                }
                let data_added: Vec<i32> = added.iter().filter(|(t, _)| t == DATA_TOPIC).map(|(_, p)| *p).collect();
                let offsets_added = added.iter().any(|(t, _)| t == OFFSETS_TOPIC);
                let choice = rng.below(10);
                if txn.is_none() || data_added.is_empty() || choice == 0 {
                    let partition = rng.below(DATA_PARTITIONS as u64) as i32;
                    let mut partitions = vec![(DATA_TOPIC.to_string(), partition)];
                    if rng.chance(1, 3) {
                        partitions.push((OFFSETS_TOPIC.to_string(), offsets_partition("og-t")));
                    }
                    return Some(Op::AddToTxn { partitions });
                }
                if choice <= 5 {
                    let partition = data_added[rng.below(data_added.len() as u64) as usize];
                    let sequence = *sequences.get(&partition).unwrap_or(&0);
                    let (bytes, records) = data_batch(rng, client, counter, now);
                    let bytes = as_producer(bytes, *pid, *epoch, sequence, true);
                    return Some(Op::ProduceInTxn {
                        batch: SentBatch { partition, bytes, sequence, records, acked_at: None },
                    });
                }
                if choice <= 6 && offsets_added {
                    let partition = rng.below(DATA_PARTITIONS as u64) as i32;
                    return Some(Op::CommitInTxn { group: "og-t".into(), partition, offset: counter as i64 });
                }
                Some(Op::EndTxn { commit: rng.chance(7, 10) })
            }
            Client::Committer { .. } => {
                let partition = rng.below(DATA_PARTITIONS as u64) as i32;
                let next = self.next_commit.entry((client, partition)).or_insert(0);
                *next += 1 + rng.below(20) as i64;
                Some(Op::Commit { partition, offset: *next })
            }
            Client::ClassicMember { member_id, generation, needs_sync, .. } => {
                if member_id.is_empty() || generation.is_none() {
                    return Some(Op::Join);
                }
                if *needs_sync {
                    return Some(Op::Sync);
                }
                match rng.below(10) {
                    0 => Some(Op::Leave),
                    1 | 2 => Some(Op::Join),
                    _ => Some(Op::Heartbeat),
                }
            }
            Client::ConsumerMember { .. } => Some(Op::ConsumerHeartbeat { leave: rng.chance(1, 12) }),
        }
    }

    /// Starts operations of up to three idle clients.
    fn start_ops(&mut self) {
        let count = self.rng.between(1, 3);
        for _ in 0..count {
            let client = self.rng.below(self.clients.len() as u64) as usize;
            if self.busy.contains_key(&client) {
                continue;
            }
            let Some(op) = self.next_op(client) else { continue };
            if let Op::EndTxn { .. } = op {
                if let Client::Transactional { txn: Some(t), .. } = &self.clients[client] {
                    let record = &mut self.model.txns[*t];
                    if record.outcome == Outcome::Open {
                        record.outcome = Outcome::Ending;
                    }
                    record.ending_since.get_or_insert(self.step);
                }
            }
            let (node, snapshot, sent, completed) =
                (self.node.clone(), self.clients[client].clone(), op.clone(), self.completed.clone());
            let task = self.executor.spawn(async move {
                let result = clients::run(node, snapshot, sent).await;
                completed.borrow_mut().push((client, result));
            });
            self.busy.insert(client, InFlight { client, op, task });
        }
    }

    /// Applies every completed operation, in completion order.
    fn collect(&mut self) -> Result<(), SimFailure> {
        let done: Vec<(usize, OpResult)> = std::mem::take(&mut *self.completed.borrow_mut());
        for (client, result) in done {
            let Some(in_flight) = self.busy.remove(&client) else { continue };
            self.operations += 1;
            self.trace.line(format!(
                "s{} c{} {} -> {}",
                self.step,
                in_flight.client,
                describe(&in_flight.op),
                short(&result)
            ));
            self.apply(client, in_flight.op, result).map_err(|message| self.fail(message))?;
        }
        Ok(())
    }

    fn apply(&mut self, client: usize, op: Op, result: OpResult) -> Result<(), String> {
        match (op, result) {
            (Op::Append { batch, durability }, OpResult::Appended(appended)) => {
                self.appended(client, batch, durability.unwrap_or(Durability::Written), appended, None)
            }
            (Op::Append { batch, .. }, OpResult::OutOfOrder(error)) => {
                // Sequences of these producers are contiguous and their
                // batches durable: a retry is a duplicate, never a gap.
                Err(format!(
                    "idempotent batch seq {} of partition {} refused: {error}",
                    batch.sequence, batch.partition
                ))
            }
            (Op::Append { batch, .. }, OpResult::Failed(_)) => {
                if let Client::Idempotent { unanswered, .. } = &mut self.clients[client] {
                    if batch.acked_at.is_none() {
                        *unanswered = Some(batch);
                    }
                }
                Ok(())
            }
            (Op::InitProducerId, OpResult::ProducerId(id)) => {
                self.model.producer_id(id)?;
                if let Client::Idempotent { producer_id, .. } = &mut self.clients[client] {
                    *producer_id = Some(id);
                }
                Ok(())
            }
            (Op::InitTransactional, OpResult::Transactional(pid, epoch)) => self.initialized(client, pid, epoch),
            (Op::AddToTxn { partitions }, OpResult::Done) => {
                if let Client::Transactional { producer: Some((pid, epoch)), txn, added, .. } =
                    &mut self.clients[client]
                {
                    if txn.is_none() {
                        self.model.txns.push(TxnRecord {
                            producer_id: *pid,
                            epoch: *epoch,
                            outcome: Outcome::Open,
                            batches: Vec::new(),
                            offsets: Vec::new(),
                            ending_since: None,
                        });
                        *txn = Some(self.model.txns.len() - 1);
                    }
                    added.extend(partitions);
                }
                Ok(())
            }
            (Op::ProduceInTxn { batch }, OpResult::Appended(appended)) => {
                let txn = match &self.clients[client] {
                    Client::Transactional { txn, .. } => *txn,
                    _ => None,
                };
                self.appended(client, batch, Durability::Durable, appended, txn)
            }
            (Op::CommitInTxn { group, partition, offset }, result) => {
                let acknowledged = matches!(&result, OpResult::Committed(codes) if codes == &[0]);
                if let Client::Transactional { txn: Some(t), .. } = &self.clients[client] {
                    let t = *t;
                    if self.model.txns[t].outcome == Outcome::Committed {
                        return Err("an offset was committed into a finished transaction".into());
                    }
                    if acknowledged {
                        self.model.txns[t].offsets.push((group.clone(), partition, offset));
                    }
                }
                // Written or not, the commit marker decides whether it counts.
                self.model.commit_maybe(&group, partition, offset);
                if let OpResult::Refused(error) = result {
                    self.refused_txn(client, error);
                }
                Ok(())
            }
            (Op::EndTxn { commit }, OpResult::Done) => {
                if let Client::Transactional { txn, added, ending, .. } = &mut self.clients[client] {
                    if let Some(t) = txn.take() {
                        self.model.txn_decided(t, commit, self.step);
                    }
                    added.clear();
                    *ending = None;
                }
                Ok(())
            }
            (Op::EndTxn { commit }, OpResult::Refused(error)) => {
                if let Client::Transactional { ending, .. } = &mut self.clients[client] {
                    *ending = Some(commit);
                }
                self.refused_txn(client, error);
                Ok(())
            }
            (Op::Commit { partition, offset }, OpResult::Committed(codes)) if codes == [0] => {
                if let Client::Committer { group } = &self.clients[client] {
                    let group = group.clone();
                    self.model.commit_acked(&group, partition, offset);
                }
                Ok(())
            }
            (Op::Commit { partition, offset }, _) => {
                if let Client::Committer { group } = &self.clients[client] {
                    let group = group.clone();
                    self.model.commit_maybe(&group, partition, offset);
                }
                Ok(())
            }
            (op @ (Op::Join | Op::Sync | Op::Heartbeat | Op::Leave), result) => self.classic_result(client, op, result),
            (Op::ConsumerHeartbeat { leave }, result) => {
                if let Client::ConsumerMember { epoch, owned, .. } = &mut self.clients[client] {
                    match result {
                        OpResult::Beat(reply) if reply.error.is_none() && !leave => {
                            *epoch = reply.member_epoch;
                            if let Some(assigned) = reply.assignment {
                                *owned = assigned;
                            }
                        }
                        _ => {
                            *epoch = 0;
                            owned.clear();
                        }
                    }
                }
                Ok(())
            }
            (op, OpResult::Refused(error)) => {
                if matches!(
                    op,
                    Op::InitTransactional | Op::AddToTxn { .. } | Op::EndTxn { .. } | Op::ProduceInTxn { .. }
                ) {
                    self.refused_txn(client, error);
                }
                Ok(())
            }
            (Op::ProduceInTxn { .. }, OpResult::Failed(_) | OpResult::OutOfOrder(_)) => {
                // Its fate is unknown: the transaction must not continue
                // with that sequence; abort it by starting over.
                if let Client::Transactional { producer, .. } = &mut self.clients[client] {
                    *producer = None;
                }
                Ok(())
            }
            (op, result) => Err(format!("unexpected answer {result:?} to {op:?}")),
        }
    }

    fn appended(
        &mut self,
        client: usize,
        batch: SentBatch,
        durability: Durability,
        appended: shardline_engine::partition::Appended,
        txn: Option<usize>,
    ) -> Result<(), String> {
        if let Some(at) = batch.acked_at {
            // A retry of an acknowledged batch: the same offsets, nothing new.
            if !appended.duplicate || appended.base_offset != at {
                return Err(format!("retry of the batch acknowledged at {at} answered {appended:?}"));
            }
            return Ok(());
        }
        let payload = model::payload(&batch.bytes).to_vec();
        let expected_last = appended.base_offset + i64::from(batch.records) - 1;
        if appended.last_offset != expected_last {
            return Err(format!("append of {} records answered {appended:?}", batch.records));
        }
        self.model.acked(batch.partition, appended.base_offset, AckedBatch { payload, durability, txn })?;
        match &mut self.clients[client] {
            Client::Idempotent { next_sequence, last, unanswered, .. } => {
                *unanswered = None;
                *next_sequence = (*next_sequence).max(batch.sequence + batch.records);
                *last = Some(SentBatch { acked_at: Some(appended.base_offset), ..batch });
            }
            Client::Transactional { sequences, .. } => {
                let next = sequences.entry(batch.partition).or_insert(0);
                *next = (*next).max(batch.sequence + batch.records);
                if let Some(t) = txn {
                    self.model.txns[t].batches.push((batch.partition, appended.base_offset));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn initialized(&mut self, client: usize, pid: i64, epoch: i16) -> Result<(), String> {
        let Client::Transactional { producer, txn, added, sequences, ending, .. } = &mut self.clients[client] else {
            return Err("init of a non-transactional client".into());
        };
        *ending = None;
        let fresh = producer.is_none_or(|(old, _)| old != pid);
        if let Some((old_pid, old_epoch)) = *producer {
            if old_pid == pid && epoch <= old_epoch {
                return Err(format!("a new incarnation got epoch {epoch} after {old_epoch}"));
            }
        }
        // The open transaction of the old incarnation was aborted.
        if let Some(t) = txn.take() {
            if self.model.txns[t].outcome == Outcome::Open {
                self.model.txn_decided(t, false, self.step);
            }
        }
        *producer = Some((pid, epoch));
        added.clear();
        sequences.clear();
        if fresh && !self.model.producer_ids.contains(&pid) {
            self.model.producer_id(pid)?;
        }
        Ok(())
    }

    fn refused_txn(&mut self, client: usize, error: ResponseError) {
        if let Client::Transactional { producer, txn, added, ending, .. } = &mut self.clients[client] {
            if fenced(error) {
                *producer = None;
                // Its transaction's fate is for the coordinator to tell.
                txn.take();
                added.clear();
                *ending = None;
            }
        }
    }

    fn classic_result(&mut self, client: usize, op: Op, result: OpResult) -> Result<(), String> {
        let Client::ClassicMember { group, member_id, generation, leader_of, needs_sync } = &mut self.clients[client]
        else {
            return Ok(());
        };
        match (op, result) {
            (Op::Join, OpResult::Joined(reply)) => match reply.error {
                None => {
                    let seen = self.generations.entry(group.clone()).or_insert(reply.generation);
                    if reply.generation < *seen {
                        return Err(format!("group {group}: generation went back from {seen} to {}", reply.generation));
                    }
                    *seen = reply.generation;
                    *member_id = reply.member_id.clone();
                    *generation = Some(reply.generation);
                    *leader_of = if reply.leader == reply.member_id {
                        reply.members.iter().map(|m| m.member_id.clone()).collect()
                    } else {
                        Vec::new()
                    };
                    *needs_sync = true;
                }
                Some(ResponseError::MemberIdRequired) => {
                    *member_id = reply.member_id.clone();
                    *generation = None;
                }
                Some(_) => {
                    member_id.clear();
                    *generation = None;
                }
            },
            (Op::Sync, OpResult::Synced(reply)) => match reply.error {
                None => {
                    *needs_sync = false;
                    let expected = format!("assigned-{member_id}");
                    if !reply.assignment.is_empty() && reply.assignment != expected.as_bytes() {
                        return Err(format!("member {member_id} got another member's assignment"));
                    }
                }
                Some(_) => *generation = None,
            },
            (Op::Heartbeat, OpResult::Done) => {}
            (Op::Leave, OpResult::Done) => {
                member_id.clear();
                *generation = None;
            }
            (_, _) => {
                member_id.clear();
                *generation = None;
                *needs_sync = false;
            }
        }
        Ok(())
    }

    /// Advances time and runs the coordinators' timers that are due.
    fn advance_time(&mut self) -> Result<(), SimFailure> {
        let step_ms = if self.rng.chance(1, 25) { self.rng.between(1_000, 12_000) } else { self.rng.below(150) };
        let now = self.clock.now_ms() + step_ms as i64;
        self.clock.advance_to(now);
        self.run_tasks()?;
        if now >= self.node.groups.next_deadline_ms() {
            let groups = self.node.groups.clone();
            self.executor.spawn(async move { groups.tick().await });
        }
        if now >= self.node.txns.next_deadline_ms() {
            let node = self.node.clone();
            self.executor.spawn(async move {
                let markers = node.markers();
                node.txns.tick(&markers).await
            });
        }
        self.run_tasks()
    }

    /// Maybe injects a fault: I/O errors for a while, then a crash.
    fn maybe_fault(&mut self) -> Result<(), SimFailure> {
        if self.crash_due.is_some_and(|due| self.step >= due) {
            self.crash_due = None;
            let kind = if self.rng.chance(1, 2) { CrashKind::PowerLoss } else { CrashKind::ProcessKill };
            return self.crash(kind);
        }
        let roll = self.rng.below(100);
        if roll >= 97 && !self.busy.is_empty() {
            // A client goes away: its request is dropped where it stands.
            let keys: Vec<usize> = self.busy.keys().copied().collect();
            let client = keys[self.rng.below(keys.len() as u64) as usize];
            if let Some(in_flight) = self.busy.remove(&client) {
                self.executor.cancel(in_flight.task);
                self.trace.line(format!("s{} c{client} cancelled {}", self.step, describe(&in_flight.op)));
                self.lost(client, in_flight.op);
            }
            return Ok(());
        }
        if roll < 4 {
            self.crash(CrashKind::PowerLoss)
        } else if roll < 7 {
            self.crash(CrashKind::ProcessKill)
        } else if roll < 9 && self.crash_due.is_none() {
            let faults = if self.rng.chance(1, 2) {
                FaultConfig { sync_failure_one_in: Some(3), write_failure_one_in: None }
            } else {
                FaultConfig { sync_failure_one_in: None, write_failure_one_in: Some(5) }
            };
            self.trace.line(format!("s{} fault {faults:?}", self.step));
            self.node.disk.set_faults(faults);
            self.crash_due = Some(self.step + self.rng.between(2, 12));
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Crashes the node, reboots it on what the disk kept, and checks it.
    fn crash(&mut self, kind: CrashKind) -> Result<(), SimFailure> {
        self.crashes += 1;
        self.trace.line(format!("s{} crash {kind:?} with {} operations in flight", self.step, self.busy.len()));
        self.executor.clear();
        self.clock.clear_timers();
        self.completed.borrow_mut().clear();
        let lost: Vec<(usize, InFlight)> = std::mem::take(&mut self.busy).into_iter().collect();
        for (client, in_flight) in lost {
            self.lost(client, in_flight.op);
        }
        // A classic member rejoins. A KIP-848 member carries on at its
        // epoch with what it owns, as a real client does: the group's
        // records bring it back, or its next heartbeat is fenced and it
        // rejoins.
        for client in &mut self.clients {
            if let Client::ClassicMember { member_id, generation, needs_sync, .. } = client {
                member_id.clear();
                *generation = None;
                *needs_sync = false;
            }
        }
        self.generations.clear();
        let disk = match kind {
            CrashKind::PowerLoss => self.node.disk.crash(),
            CrashKind::ProcessKill => self.node.disk.crash_process(),
        };
        self.boot(disk)?;
        reset_high_watermarks(&self.node, &mut self.model, kind);
        self.full_check(Some(kind))
    }

    /// An operation lost in a crash: its outcome is unknown.
    fn lost(&mut self, client: usize, op: Op) {
        match (op, &mut self.clients[client]) {
            (Op::Append { batch, .. }, Client::Idempotent { unanswered, .. }) if batch.acked_at.is_none() => {
                *unanswered = Some(batch);
            }
            (Op::Commit { partition, offset }, Client::Committer { group }) => {
                let group = group.clone();
                self.model.commit_maybe(&group, partition, offset);
            }
            (Op::CommitInTxn { group, partition, offset }, _) => self.model.commit_maybe(&group, partition, offset),
            (
                Op::ProduceInTxn { .. } | Op::EndTxn { .. } | Op::InitTransactional,
                Client::Transactional { producer, txn, added, .. },
            ) => {
                // Start over: a new incarnation aborts what is still open.
                *producer = None;
                if let Some(t) = txn.take() {
                    let record = &mut self.model.txns[t];
                    if record.outcome == Outcome::Open {
                        record.outcome = Outcome::Ending;
                    }
                    record.ending_since.get_or_insert(self.step);
                }
                added.clear();
            }
            _ => {}
        }
    }

    fn boot(&mut self, disk: FaultDisk) -> Result<(), SimFailure> {
        let clock = self.clock.clone();
        let seed = self.rng.next_u64();
        let booted = self.executor.block_on(SimNode::boot(disk, clock, seed), MAX_POLLS_PER_STEP);
        match booted {
            Some(Ok(node)) => {
                self.node = Rc::new(node);
                Ok(())
            }
            Some(Err(error)) => Err(self.fail(format!("reboot failed: {error}"))),
            None => Err(self.fail("reboot did not finish without time passing")),
        }
    }

    /// The full checks: the log against the model, read_committed, commits.
    fn full_check(&mut self, crash: Option<CrashKind>) -> Result<(), SimFailure> {
        let node = self.node.clone();
        let model = std::mem::take(&mut self.model);
        let checked = self.executor.block_on(
            async move {
                let mut model = model;
                let log = check_log(&node, &mut model, crash).await;
                let commits = match &log {
                    Ok(()) => check_commits(&node, &model).await,
                    Err(_) => Ok(()),
                };
                (model, log.and(commits))
            },
            MAX_POLLS_PER_STEP,
        );
        let Some((model, result)) = checked else { return Err(self.fail("the full check needs time to pass")) };
        self.model = model;
        self.trace.line(format!(
            "s{} full check {:?}: {} acknowledged batches",
            self.step,
            crash,
            self.model.acked.len()
        ));
        result.map_err(|message| self.fail(message))?;
        check_offsets(&self.node, &mut self.model).map_err(|message| self.fail(message))
    }

    fn one_step(&mut self) -> Result<(), SimFailure> {
        self.maybe_fault()?;
        self.start_ops();
        self.run_tasks()?;
        self.collect()?;
        self.advance_time()?;
        self.collect()?;
        check_offsets(&self.node, &mut self.model).map_err(|message| self.fail(message))?;
        if self.config.full_check_every > 0 && self.step.is_multiple_of(self.config.full_check_every) {
            self.full_check(None)?;
        }
        if self.crash_due.is_none() {
            self.node.disk.set_faults(FaultConfig::default());
        }
        Ok(())
    }

    /// Restarts the node if an I/O error left a partition refusing writes,
    /// lets the timers finish what is pending for longer than any
    /// transaction timeout, and checks everything once more, and that
    /// nothing is left hanging: no transaction in a prepared state, no
    /// partition's LSO below its HW.
    fn finish(&mut self) -> Result<(), SimFailure> {
        self.node.disk.set_faults(FaultConfig::default());
        self.crash_due = None;
        if self.node.registry.all().iter().any(|(_, replica)| replica.partition.log().is_poisoned()) {
            self.crash(CrashKind::ProcessKill)?;
        }
        let quiet_ms = i64::from(clients::TXN_TIMEOUT_MS) * 3;
        for _ in 0..quiet_ms / 1_000 {
            let now = self.clock.now_ms() + 1_000;
            self.clock.advance_to(now);
            self.run_tasks()?;
            let node = self.node.clone();
            self.executor.spawn(async move {
                let markers = node.markers();
                node.txns.tick(&markers).await
            });
            self.run_tasks()?;
            self.collect()?;
        }
        self.full_check(None)?;
        self.check_nothing_hangs()
    }

    fn check_nothing_hangs(&mut self) -> Result<(), SimFailure> {
        for index in 0..DATA_PARTITIONS {
            let Some(replica) = self.node.replica(DATA_TOPIC, index) else { continue };
            let (lso, hw) = (replica.partition.last_stable_offset(), replica.partition.offsets().high_watermark);
            if lso != hw {
                return Err(self.fail(format!("data-{index}: a transaction hangs: LSO {lso}, HW {hw}")));
            }
        }
        let node = self.node.clone();
        let listed = self.executor.block_on(
            async move {
                let mut all = Vec::new();
                for id in ["tx-a", "tx-b"] {
                    all.extend(node.txns.list(node.txn_coordinator(id)).await.unwrap_or_default());
                }
                all
            },
            MAX_POLLS_PER_STEP,
        );
        let prepared: Vec<String> = listed
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.meta.status.name().starts_with("Prepare"))
            .map(|t| format!("{} {}", t.id, t.meta.status.name()))
            .collect();
        if !prepared.is_empty() {
            return Err(self.fail(format!("transactions left unfinished: {prepared:?}")));
        }
        Ok(())
    }

    /// Runs `work`, turning a panic (a failed assertion in the code under
    /// test) into a failure with the trace.
    fn guarded(&mut self, work: impl FnOnce(&mut Self) -> Result<(), SimFailure>) -> Result<(), SimFailure> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self))) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                Err(self.fail(format!("panicked: {message}")))
            }
        }
    }

    fn run(mut self) -> Result<SimReport, SimFailure> {
        for step in 0..self.config.steps {
            self.step = step;
            self.guarded(Self::one_step)?;
        }
        self.step = self.config.steps;
        self.guarded(Self::finish)?;
        Ok(SimReport {
            seed: self.seed,
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.len(),
            operations: self.operations,
            crashes: self.crashes,
            acknowledged: self.model.acked.len() as u64,
        })
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let clock = SimClock::new(START_MS);
    let executor = Executor::new();
    executor.install();
    let mut rng = SimRng::new(seed);
    let booted = executor.block_on(
        SimNode::boot(FaultDisk::new(seed, FaultConfig::default()), clock.clone(), rng.next_u64()),
        MAX_POLLS_PER_STEP,
    );
    let result = match booted {
        Some(Ok(node)) => Sim {
            seed,
            config: config.clone(),
            rng,
            clock,
            executor: executor.clone(),
            node: Rc::new(node),
            model: Model::default(),
            trace: Trace::new(config.verbose),
            clients: initial_clients(),
            busy: BTreeMap::new(),
            completed: Rc::new(RefCell::new(Vec::new())),
            counter: 0,
            step: 0,
            operations: 0,
            crashes: 0,
            crash_due: None,
            generations: BTreeMap::new(),
            next_commit: BTreeMap::new(),
        }
        .run(),
        _ => Err(SimFailure { seed, step: 0, message: "the first boot failed".into(), recent: Vec::new() }),
    };
    executor.clear();
    executor.uninstall();
    result
}
