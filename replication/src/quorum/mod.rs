//! The controller quorum's consensus, sans-IO: one raft-rs `RawNode` over
//! the metadata log, with pre-vote, check-quorum and leader transfer, and
//! the committed [`MetadataImage`] it applies entries to. Runs on one core
//! of each controller; the driver (the real reactor or the simulator)
//! feeds it ticks and peer messages and executes the [`QuorumAction`]s it
//! returns, strictly in order: an `AppendLog` is written and fdatasync'ed
//! before any later action runs, so no vote or acknowledgement leaves
//! before what it promises is durable, and an entry counts toward the
//! quorum only once it is on disk.
//!
//! The election timeout is chosen here, never by raft-rs's thread-local
//! randomness, so a run depends only on its inputs: a follower waits its
//! node's `election_ticks`; a candidate or pre-candidate whose election
//! failed waits that plus a jitter of up to half of it, drawn from its
//! incarnation and the term. The jitter breaks the lockstep in which two
//! voters with one timeout split every vote while a third, with a longer
//! log, refuses both.

pub mod log_codec;
pub mod storage;

use std::collections::VecDeque;
use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, StateRole};

use crate::metadata::image::{ImageError, MetadataImage};
use crate::metadata::records::{RecordBatch, RecordError};
use log_codec::RecoveredLog;
use storage::MetadataStorage;

/// Bytes of entries one append message carries at most.
const MAX_BYTES_PER_MESSAGE: u64 = 1 << 20;
/// Append messages in flight to one follower.
const MAX_INFLIGHT_MESSAGES: usize = 256;
/// Bytes of proposals not yet committed before new ones are dropped.
const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;

/// How one node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id (a voter).
    pub node_id: u64,
    /// Every voter's id.
    pub voters: Vec<u64>,
    /// Ticks without a leader before this node stands for election
    /// (fixed per node; different nodes should differ).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Entries applied between snapshots.
    pub snapshot_every_entries: u64,
    /// Entries kept before the snapshot point after compaction, so a
    /// follower a little behind catches up from the log.
    pub entries_kept_behind_snapshot: u64,
    /// Distinguishes this process's proposals from an earlier one's
    /// (a fresh random value at every start); also seeds the election
    /// jitter.
    pub incarnation: u64,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum QuorumAction {
    /// Send a message to another voter (best effort: raft resends).
    Send(Message),
    /// Append these bytes to the log file and fdatasync it before the
    /// next action.
    AppendLog(Vec<u8>),
    /// Replace the snapshot file with `snapshot`, then the log file with
    /// `log`, each atomically (write aside, fsync, rename, fsync the
    /// directory), before the next action.
    ReplaceSnapshot { snapshot: Vec<u8>, log: Vec<u8> },
    /// The committed image moved to `offset`: the entry there is applied
    /// (`proposal` is the token [`Quorum::propose`] gave, when this
    /// process proposed it).
    Applied { offset: u64, proposal: Option<u64> },
    /// The image was replaced by a snapshot from the leader.
    ImageReplaced { offset: u64 },
    /// The leader or term changed (`leader` 0 when there is none).
    LeaderChanged { leader: u64, term: u64 },
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node
    /// knows of (0 for none).
    #[error("not the controller leader (leader {leader})")]
    NotLeader { leader: u64 },
    /// raft-rs refused it (a leader transfer in progress, too many
    /// uncommitted bytes).
    #[error("the quorum dropped the proposal")]
    Dropped,
}

/// The quorum cannot go on: its log is damaged or a committed entry breaks
/// the image's rules. The controller stops rather than diverge.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// A committed entry does not decode.
    #[error("committed metadata entry {offset} does not decode: {source}")]
    Record { offset: u64, source: RecordError },
    /// A committed entry breaks the image's rules.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// raft-rs refused the recovered state or the configuration.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// See the module documentation.
pub struct Quorum {
    config: QuorumConfig,
    node: RawNode<MetadataStorage>,
    image: Arc<MetadataImage>,
    actions: VecDeque<QuorumAction>,
    next_token: u64,
    leader: u64,
    term: u64,
    snapshot_index: u64,
}

impl Quorum {
    /// Starts the quorum from what recovery read back.
    pub fn open(config: QuorumConfig, recovered: RecoveredLog) -> Result<Quorum, QuorumError> {
        assert!(config.voters.contains(&config.node_id), "node {} is a voter", config.node_id);
        assert!(config.election_ticks > config.heartbeat_ticks && config.heartbeat_ticks > 0);
        let image = match &recovered.snapshot {
            Some(snapshot) => Arc::new(image_of_snapshot(snapshot)?),
            None => Arc::new(MetadataImage::default()),
        };
        let snapshot_index = image.offset;
        let raft_config = Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks + max_jitter(config.election_ticks) + 1,
            heartbeat_tick: config.heartbeat_ticks,
            applied: snapshot_index,
            max_size_per_msg: MAX_BYTES_PER_MESSAGE,
            max_inflight_msgs: MAX_INFLIGHT_MESSAGES,
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let storage = MetadataStorage::new(&config.voters, recovered.hard_state, recovered.snapshot, recovered.entries);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, storage, &logger)?;
        let mut quorum =
            Quorum { config, node, image, actions: VecDeque::new(), next_token: 1, leader: 0, term: 0, snapshot_index };
        quorum.choose_election_timeout();
        Ok(quorum)
    }

    /// Sets the election timeout raft-rs uses (see the module
    /// documentation); called after every call into raft-rs, which draws a
    /// random one whenever the node changes role or term.
    fn choose_election_timeout(&mut self) {
        let base = self.config.election_ticks;
        let raft = &mut self.node.raft;
        let timeout = if raft.state == StateRole::Follower {
            base
        } else {
            let mut z = self.config.incarnation ^ raft.term.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            base + (z % (max_jitter(base) as u64 + 1)) as usize
        };
        if raft.randomized_election_timeout() != timeout {
            raft.set_randomized_election_timeout(timeout);
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// The committed image.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    /// Whether this node leads the quorum.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this node knows of (0 for none).
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The index of the last entry in this node's log.
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// The commit index this node knows of.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// Each voter's match index as the leader tracks it (the leader only).
    pub fn voter_progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut progress: Vec<_> = self.node.raft.prs().iter().map(|(id, p)| (*id, p.matched)).collect();
        progress.sort_unstable();
        progress
    }

    /// Entries from `from` (inclusive) that are committed, as kept in
    /// memory; `None` when `from` is compacted away (read the image).
    pub fn committed_entries(&self, from: u64, max: usize) -> Option<Vec<Entry>> {
        let storage = self.node.store();
        let first = storage.entries_kept().first().map_or(u64::MAX, |e| e.index);
        if from < first && from <= self.commit_index() {
            return None;
        }
        let commit = self.commit_index();
        Some(
            storage.entries_kept().iter().filter(|e| e.index >= from && e.index <= commit).take(max).cloned().collect(),
        )
    }

    /// One tick of the logical clock (the driver's tick interval).
    pub fn tick(&mut self) {
        self.node.tick();
        self.choose_election_timeout();
    }

    /// Stands for election now, without waiting out the election ticks:
    /// a quorum of one voter elects itself at start. With other voters
    /// it is an ordinary (pre-vote) campaign.
    pub fn campaign(&mut self) {
        if !self.is_leader() {
            // Refused only while a leader transfer runs: nothing to do.
            let _ = self.node.campaign();
            self.choose_election_timeout();
        }
    }

    /// A message from another voter. Messages from non-voters or for
    /// another node are dropped.
    pub fn step(&mut self, message: Message) {
        if message.to != self.config.node_id || !self.config.voters.contains(&message.from) {
            return;
        }
        // A stale or duplicated message is refused by raft-rs: nothing to do.
        let _ = self.node.step(message);
        self.choose_election_timeout();
    }

    /// Proposes a batch of records; the token comes back in
    /// [`QuorumAction::Applied`] once it is committed and applied.
    pub fn propose(&mut self, batch: &RecordBatch) -> Result<u64, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader: self.leader() });
        }
        let token = self.next_token;
        let mut context = Vec::with_capacity(24);
        context.extend_from_slice(&self.config.node_id.to_le_bytes());
        context.extend_from_slice(&self.config.incarnation.to_le_bytes());
        context.extend_from_slice(&token.to_le_bytes());
        let last_before = self.last_index();
        self.node.propose(context, batch.encode()).map_err(|_| ProposeError::Dropped)?;
        if self.last_index() == last_before {
            return Err(ProposeError::Dropped);
        }
        self.next_token += 1;
        Ok(token)
    }

    /// Hands leadership to `to` (a voter); the leader stops taking
    /// proposals until the transfer ends.
    pub fn transfer_leadership(&mut self, to: u64) {
        if self.is_leader() && to != self.config.node_id && self.config.voters.contains(&to) {
            self.node.transfer_leader(to);
        }
    }

    /// Tells raft-rs a voter could not be reached, so it probes it again
    /// instead of streaming appends into the void.
    pub fn report_unreachable(&mut self, voter: u64) {
        self.node.report_unreachable(voter);
    }

    /// Tells raft-rs whether a snapshot message reached `voter` (the
    /// transport knows: the connection took it, or failed). Until it is
    /// told, the leader sends that voter nothing more.
    pub fn report_snapshot(&mut self, voter: u64, delivered: bool) {
        let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.node.report_snapshot(voter, status);
    }

    /// Everything the inputs so far made ready, in the order the driver
    /// must execute it.
    pub fn poll(&mut self) -> Result<Vec<QuorumAction>, QuorumError> {
        // A bound on rounds: each round consumes a Ready; raft-rs produces
        // a new one only from new input or from the round before.
        for _ in 0..64 {
            if !self.node.has_ready() {
                break;
            }
            self.handle_ready()?;
        }
        self.note_leader();
        Ok(self.actions.drain(..).collect())
    }

    fn handle_ready(&mut self) -> Result<(), QuorumError> {
        let mut ready = self.node.ready();
        for message in ready.take_messages() {
            self.actions.push_back(QuorumAction::Send(message));
        }
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        let committed = ready.take_committed_entries();
        self.apply_committed(committed)?;
        let mut log = Vec::new();
        if !ready.entries().is_empty() {
            for entry in ready.entries() {
                log_codec::entry_frame(entry, &mut log);
            }
            self.node.mut_store().append(ready.entries());
        }
        if let Some(hard_state) = ready.hs() {
            log_codec::hard_state_frame(hard_state, &mut log);
            self.node.mut_store().set_hard_state(hard_state.clone());
        }
        if !log.is_empty() {
            self.actions.push_back(QuorumAction::AppendLog(log));
        }
        for message in ready.take_persisted_messages() {
            self.actions.push_back(QuorumAction::Send(message));
        }
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        for message in light.take_messages() {
            self.actions.push_back(QuorumAction::Send(message));
        }
        self.apply_committed(light.take_committed_entries())?;
        self.node.advance_apply();
        self.note_leader();
        self.snapshot_if_due();
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), QuorumError> {
        let image = image_of_snapshot(&snapshot)?;
        assert!(image.offset >= self.image.offset, "a snapshot never moves the image back");
        let offset = image.offset;
        self.image = Arc::new(image);
        self.snapshot_index = offset;
        let file = log_codec::snapshot_file(&snapshot);
        self.node.mut_store().apply_snapshot(snapshot);
        let mut log = Vec::new();
        log_codec::hard_state_frame(self.node.store().hard_state(), &mut log);
        self.actions.push_back(QuorumAction::ReplaceSnapshot { snapshot: file, log });
        self.actions.push_back(QuorumAction::ImageReplaced { offset });
        Ok(())
    }

    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), QuorumError> {
        for entry in entries {
            if entry.index <= self.image.offset {
                continue;
            }
            assert_eq!(entry.index, self.image.offset + 1, "committed entries apply in order, without gaps");
            let proposal = self.own_token(&entry.context);
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                let batch = RecordBatch::decode(&entry.data)
                    .map_err(|source| QuorumError::Record { offset: entry.index, source })?;
                self.image = Arc::new(self.image.applied(entry.index, &batch)?);
            } else {
                let mut image = (*self.image).clone();
                image.offset = entry.index;
                self.image = Arc::new(image);
            }
            self.actions.push_back(QuorumAction::Applied { offset: entry.index, proposal });
        }
        Ok(())
    }

    fn own_token(&self, context: &[u8]) -> Option<u64> {
        if context.len() != 24 {
            return None;
        }
        let node = u64::from_le_bytes(context[0..8].try_into().expect("8 bytes"));
        let incarnation = u64::from_le_bytes(context[8..16].try_into().expect("8 bytes"));
        (node == self.config.node_id && incarnation == self.config.incarnation)
            .then(|| u64::from_le_bytes(context[16..24].try_into().expect("8 bytes")))
    }

    fn note_leader(&mut self) {
        let (leader, term) = (self.node.raft.leader_id, self.node.raft.term);
        if (leader, term) != (self.leader, self.term) {
            self.leader = leader;
            self.term = term;
            self.actions.push_back(QuorumAction::LeaderChanged { leader, term });
        }
    }

    fn snapshot_if_due(&mut self) {
        let applied = self.image.offset;
        if applied < self.snapshot_index + self.config.snapshot_every_entries {
            return;
        }
        let Some(term) = self.node.store().term_of(applied) else { return };
        let mut snapshot = Snapshot { data: self.image.to_records().encode().into(), ..Snapshot::default() };
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.mut_conf_state().voters = self.config.voters.clone();
        let file = log_codec::snapshot_file(&snapshot);
        let keep_from = applied.saturating_sub(self.config.entries_kept_behind_snapshot);
        let storage = self.node.mut_store();
        storage.compact(snapshot, keep_from);
        let mut log = Vec::new();
        for entry in storage.entries_kept() {
            log_codec::entry_frame(entry, &mut log);
        }
        log_codec::hard_state_frame(storage.hard_state(), &mut log);
        self.snapshot_index = applied;
        self.actions.push_back(QuorumAction::ReplaceSnapshot { snapshot: file, log });
    }
}

/// The image a snapshot holds.
fn image_of_snapshot(snapshot: &Snapshot) -> Result<MetadataImage, QuorumError> {
    let offset = snapshot.get_metadata().index;
    let batch =
        RecordBatch::decode_snapshot(&snapshot.data).map_err(|source| QuorumError::Record { offset, source })?;
    Ok(MetadataImage::from_records(offset, &batch)?)
}

/// The most ticks a failed election adds to a voter's election timeout.
fn max_jitter(election_ticks: usize) -> usize {
    election_ticks / 2
}
