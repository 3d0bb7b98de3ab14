//! What the simulated clients were told, and the checks of a node against
//! it. The model records every acknowledged append (its offset and bytes
//! and how durable the ack was), every transaction and what is known of
//! its outcome, the acknowledged offset commits, the producer ids handed
//! out and the high watermarks seen. The checks read the node the way a
//! client would and compare:
//!
//! - every acknowledged batch is readable at its offset with its bytes
//!   (after a power loss: those acknowledged as durable), and an offset
//!   once acknowledged never holds anything else;
//! - offsets are contiguous; no idempotent batch is stored twice;
//! - HW ≤ LEO, LSO ≤ HW, and the HW never moves back (across a power loss
//!   only where acks=all waits for fdatasync);
//! - read_committed (with the client's filtering of aborted transactions)
//!   delivers every committed transaction whole, no aborted one, and any
//!   transaction of unknown outcome all or nothing;
//! - acknowledged offset commits survive restarts;
//! - producer ids are never handed out twice.

use std::collections::{BTreeMap, BTreeSet};

use shardline_engine::format::batch::{BatchHeader, BatchIter};
use shardline_engine::partition::producer_state::{marker_type, MARKER_ABORT};
use shardline_engine::partition::{Durability, Isolation};

use crate::sim::node::{SimNode, DATA_PARTITIONS, DATA_TOPIC};

/// Bytes of a stored batch the log must keep exactly: all but the base
/// offset, length and leader epoch.
pub fn payload(batch: &[u8]) -> &[u8] {
    &batch[16..]
}

/// An acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedBatch {
    /// Its stored bytes from the magic byte on.
    pub payload: Vec<u8>,
    /// What the acknowledgement waited for.
    pub durability: Durability,
    /// The transaction it belongs to (index into [`Model::txns`]).
    pub txn: Option<usize>,
}

/// What is known of a transaction's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Records may still be added.
    Open,
    /// EndTxn was sent and not answered (a crash, a failure).
    Ending,
    /// EndTxn(commit) was answered: committed.
    Committed,
    /// EndTxn(abort) was answered, or a new incarnation fenced it.
    Aborted,
}

/// One transaction of a transactional producer.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// Its producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// What is known of its end.
    pub outcome: Outcome,
    /// Acknowledged batches: (partition, base offset).
    pub batches: Vec<(i32, i64)>,
    /// Offsets committed inside it: (group, partition, offset).
    pub offsets: Vec<(String, i32, i64)>,
    /// The step its first EndTxn was sent (its markers may land from then
    /// on, in any order with other transactions ending meanwhile).
    pub ending_since: Option<u64>,
}

/// What the model knows of one group partition's committed offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitState {
    /// The value a fetch must return: the last acknowledged commit (or
    /// committed transaction), if any.
    pub value: Option<i64>,
    /// Values written by commits whose outcome is unknown (crash or
    /// undecided transaction): a fetch may return any of them instead.
    pub maybe: BTreeSet<i64>,
    /// For a value from a transaction: the step its commit was answered.
    pub decided_at: Option<u64>,
}

/// How a node went down before a recovery check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The machine lost power: unsynced writes lost or torn.
    PowerLoss,
    /// The process was killed: every issued write survives.
    ProcessKill,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Model {
    /// Acknowledged batches by (partition, base offset).
    pub acked: BTreeMap<(i32, i64), AckedBatch>,
    /// Every transaction.
    pub txns: Vec<TxnRecord>,
    /// Committed offsets by (group, data partition).
    pub commits: BTreeMap<(String, i32), CommitState>,
    /// Producer ids handed out.
    pub producer_ids: BTreeSet<i64>,
    /// The high watermark last seen per (topic, partition).
    pub high_watermarks: BTreeMap<(String, i32), i64>,
}

impl Model {
    /// Records an acknowledged append; an offset never holds two batches.
    pub fn acked(&mut self, partition: i32, base_offset: i64, batch: AckedBatch) -> Result<(), String> {
        if let Some(before) = self.acked.get(&(partition, base_offset)) {
            if before.payload != batch.payload {
                return Err(format!(
                    "offset {base_offset} of partition {partition} was acknowledged twice for different batches"
                ));
            }
            return Ok(());
        }
        self.acked.insert((partition, base_offset), batch);
        Ok(())
    }

    /// Records a fresh producer id; a repeat is a failure.
    pub fn producer_id(&mut self, id: i64) -> Result<(), String> {
        if !self.producer_ids.insert(id) {
            return Err(format!("producer id {id} was handed out twice"));
        }
        Ok(())
    }

    /// Records a commit acknowledged with `value`.
    pub fn commit_acked(&mut self, group: &str, partition: i32, value: i64) {
        let state = self.commits.entry((group.to_string(), partition)).or_default();
        state.value = Some(value);
        state.maybe.clear();
        state.decided_at = None;
    }

    /// Records a commit whose outcome is unknown.
    pub fn commit_maybe(&mut self, group: &str, partition: i32, value: i64) {
        self.commits.entry((group.to_string(), partition)).or_default().maybe.insert(value);
    }

    /// A transaction's end is known (at `step`): its offsets apply (commit)
    /// or vanish. Markers of transactions ending at overlapping times land
    /// in either order, so the value a commit replaces stays allowed when
    /// that commit was answered after this transaction began to end.
    pub fn txn_decided(&mut self, txn: usize, commit: bool, step: u64) {
        let record = &mut self.txns[txn];
        record.outcome = if commit { Outcome::Committed } else { Outcome::Aborted };
        let since = record.ending_since.unwrap_or(step);
        let offsets = record.offsets.clone();
        for (group, partition, value) in offsets {
            let state = self.commits.entry((group, partition)).or_default();
            state.maybe.remove(&value);
            if !commit {
                continue;
            }
            if let (Some(previous), Some(at)) = (state.value, state.decided_at) {
                if at >= since {
                    state.maybe.insert(previous);
                }
            }
            state.value = Some(value);
            state.decided_at = Some(step);
        }
    }

    /// After a power loss: batches acknowledged as merely written may be
    /// gone; those the recovered log lacks are forgotten, as the clients'
    /// durability setting allowed.
    fn forget_lost(&mut self, stored: &BTreeMap<(i32, i64), Vec<u8>>) {
        self.acked.retain(|key, batch| batch.durability == Durability::Durable || stored.contains_key(key));
    }
}

/// Checks the cheap invariants of every partition of `node`: HW ≤ LEO, LSO
/// ≤ HW, and the HW never moved back since the model last looked.
pub fn check_offsets(node: &SimNode, model: &mut Model) -> Result<(), String> {
    for ((topic, index), replica) in node.registry.all() {
        let offsets = replica.partition.offsets();
        offsets.check();
        let lso = replica.partition.last_stable_offset();
        if lso > offsets.high_watermark {
            return Err(format!("{topic}-{index}: LSO {lso} above HW {}", offsets.high_watermark));
        }
        let seen = model.high_watermarks.entry((topic.clone(), index)).or_insert(offsets.high_watermark);
        if offsets.high_watermark < *seen {
            return Err(format!("{topic}-{index}: HW moved back from {seen} to {}", offsets.high_watermark));
        }
        *seen = offsets.high_watermark;
    }
    Ok(())
}

/// After a crash and reboot: what the HW may have become. A power loss may
/// take back what acks=all did not wait to be synced; nothing else may.
pub fn reset_high_watermarks(node: &SimNode, model: &mut Model, crash: CrashKind) {
    for ((topic, index), replica) in node.registry.all() {
        let may_regress = crash == CrashKind::PowerLoss && replica.acks_all == Durability::Written;
        if may_regress {
            model.high_watermarks.remove(&(topic, index));
        }
    }
}

/// Every batch stored in data partition `index`, from its log start to its
/// log end, as (header, bytes).
async fn stored_batches(node: &SimNode, index: i32) -> Result<Vec<(BatchHeader, Vec<u8>)>, String> {
    let replica = node.replica(DATA_TOPIC, index).ok_or("a data partition is missing")?;
    let log = replica.partition.log();
    let offsets = log.offsets();
    let mut out = Vec::new();
    let mut offset = offsets.log_start;
    // Bounded: each round moves past at least one batch.
    for _ in 0..=(offsets.log_end - offsets.log_start) {
        if offset >= offsets.written {
            break;
        }
        let read = log.read(offset, 64 * 1024, offsets.written).await.map_err(|e| format!("read: {e}"))?;
        let before = offset;
        for chunk in &read.batches {
            for (at, header) in BatchIter::new(chunk) {
                out.push((header, chunk[at..at + header.total_bytes()].to_vec()));
                offset = header.next_offset();
            }
        }
        if offset == before {
            return Err(format!("data-{index}: no progress reading at {offset} of {offsets:?}"));
        }
    }
    Ok(out)
}

/// The full check after a recovery (and at the end of a run).
pub async fn check_log(node: &SimNode, model: &mut Model, crash: Option<CrashKind>) -> Result<(), String> {
    let mut stored: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    let mut headers: BTreeMap<(i32, i64), BatchHeader> = BTreeMap::new();
    for index in 0..DATA_PARTITIONS {
        let batches = stored_batches(node, index).await?;
        let mut expected_next: Option<i64> = None;
        let mut idempotent: BTreeSet<(i64, i16, i32)> = BTreeSet::new();
        for (header, bytes) in batches {
            if let Some(next) = expected_next {
                if header.base_offset != next {
                    return Err(format!("data-{index}: batch at {} follows one ending at {next}", header.base_offset));
                }
            }
            expected_next = Some(header.next_offset());
            if header.producer_id >= 0 && !header.is_control() && header.base_sequence >= 0 {
                let key = (header.producer_id, header.producer_epoch, header.base_sequence);
                if !idempotent.insert(key) {
                    return Err(format!("data-{index}: idempotent batch {key:?} stored twice"));
                }
            }
            headers.insert((index, header.base_offset), header);
            stored.insert((index, header.base_offset), payload(&bytes).to_vec());
        }
    }
    if crash == Some(CrashKind::PowerLoss) {
        model.forget_lost(&stored);
    }
    for ((index, base), batch) in &model.acked {
        match stored.get(&(*index, *base)) {
            None => return Err(format!("data-{index}: acknowledged batch at {base} is gone")),
            Some(bytes) if *bytes != batch.payload => {
                return Err(format!("data-{index}: the batch at {base} is not the one acknowledged there"))
            }
            Some(_) => {}
        }
    }
    check_read_committed(node, model, &headers).await
}

/// Reads every data partition with read_committed, drops what a Kafka
/// client drops (batches of aborted transactions, control batches), and
/// compares with what the model knows of each transaction.
async fn check_read_committed(
    node: &SimNode,
    model: &Model,
    headers: &BTreeMap<(i32, i64), BatchHeader>,
) -> Result<(), String> {
    let mut delivered: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut stable: BTreeMap<i32, i64> = BTreeMap::new();
    for index in 0..DATA_PARTITIONS {
        let replica = node.replica(DATA_TOPIC, index).ok_or("a data partition is missing")?;
        let partition = &replica.partition;
        let offsets = partition.offsets();
        let lso = partition.last_stable_offset();
        stable.insert(index, lso);
        let mut offset = offsets.log_start;
        let mut aborted_producers: BTreeSet<i64> = BTreeSet::new();
        // Aborted transactions the reads listed, as (first offset, producer),
        // and those already applied.
        let mut pending: BTreeSet<(i64, i64)> = BTreeSet::new();
        let mut applied: BTreeSet<(i64, i64)> = BTreeSet::new();
        for _ in 0..=(offsets.log_end - offsets.log_start) {
            if offset >= lso {
                break;
            }
            let read = partition
                .read(offset, 64 * 1024, Isolation::ReadCommitted)
                .await
                .map_err(|e| format!("data-{index}: read_committed at {offset}: {e}"))?;
            for aborted in &read.aborted {
                let key = (aborted.first_offset, aborted.producer_id);
                if !applied.contains(&key) {
                    pending.insert(key);
                }
            }
            let before = offset;
            for chunk in &read.batches {
                for (at, header) in BatchIter::new(chunk) {
                    offset = header.next_offset();
                    // The consumer's rule: a producer is aborted from the
                    // first offset of its aborted transaction to its abort
                    // marker.
                    while let Some(&(first, producer)) = pending.iter().next() {
                        if first > header.last_offset() {
                            break;
                        }
                        aborted_producers.insert(producer);
                        pending.remove(&(first, producer));
                        applied.insert((first, producer));
                    }
                    if header.is_control() {
                        let batch = &chunk[at..at + header.total_bytes()];
                        if marker_type(batch) == Some(MARKER_ABORT) {
                            aborted_producers.remove(&header.producer_id);
                        }
                        continue;
                    }
                    if header.is_transactional() && aborted_producers.contains(&header.producer_id) {
                        continue;
                    }
                    if header.base_offset >= lso {
                        return Err(format!(
                            "data-{index}: read_committed returned {} past the LSO {lso}",
                            header.base_offset
                        ));
                    }
                    delivered.insert((index, header.base_offset));
                }
            }
            if offset == before {
                return Err(format!("data-{index}: read_committed made no progress at {offset}"));
            }
        }
    }
    for ((index, base), batch) in &model.acked {
        let below_lso = *base < stable[index];
        let seen = delivered.contains(&(*index, *base));
        match batch.txn.map(|t| model.txns[t].outcome) {
            None if below_lso && !seen => return Err(format!("data-{index}: committed batch at {base} not delivered")),
            Some(Outcome::Aborted) if seen => {
                return Err(format!("data-{index}: batch at {base} of an aborted transaction delivered"))
            }
            Some(Outcome::Committed) if below_lso && !seen => {
                return Err(format!("data-{index}: batch at {base} of a committed transaction not delivered"))
            }
            _ => {}
        }
    }
    for (t, txn) in model.txns.iter().enumerate() {
        // All or nothing: among the batches below the LSO.
        let visible: Vec<bool> = txn
            .batches
            .iter()
            .filter(|(index, base)| *base < stable[index] && headers.contains_key(&(*index, *base)))
            .map(|key| delivered.contains(key))
            .collect();
        if visible.iter().any(|v| *v) && visible.iter().any(|v| !*v) {
            let mut layout = String::new();
            for ((index, base), h) in headers.iter().filter(|(_, h)| h.producer_id == txn.producer_id) {
                let kind = if h.is_control() { "marker" } else { "data" };
                layout.push_str(&format!(" p{index}@{base}:{kind}:e{}", h.producer_epoch));
            }
            return Err(format!(
                "transaction {t} (producer {} epoch {}, batches {:?}) is partly visible: {visible:?}; producer's batches:{layout}",
                txn.producer_id, txn.epoch, txn.batches
            ));
        }
    }
    Ok(())
}

/// Compares the committed offsets the node reports for every group the
/// model knows.
pub async fn check_commits(node: &SimNode, model: &Model) -> Result<(), String> {
    let groups: BTreeSet<&String> = model.commits.keys().map(|(g, _)| g).collect();
    for group in groups {
        let id = group.clone();
        let stored = node
            .groups
            .inspect(node.offsets_coordinator(group), move |c| {
                c.groups
                    .get(&id)
                    .map(|g| g.offsets.iter().map(|((_, p), v)| (*p, v.offset)).collect::<BTreeMap<i32, i64>>())
            })
            .await
            .map_err(|e| format!("fetching offsets of {group}: {e:?}"))?
            .unwrap_or_default();
        for ((g, partition), expected) in model.commits.iter().filter(|((g, _), _)| g == group) {
            let got = stored.get(partition).copied();
            let allowed = got == expected.value || got.is_some_and(|v| expected.maybe.contains(&v));
            if !allowed {
                return Err(format!(
                    "group {g} partition {partition}: committed {got:?}, expected {:?} or one of {:?}",
                    expected.value, expected.maybe
                ));
            }
        }
    }
    Ok(())
}
