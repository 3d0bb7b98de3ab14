//! The controller, sans IO: on the active controller (the quorum's
//! leader) it turns requests into metadata records, proposes them, and
//! answers once they are committed and applied; it holds the brokers'
//! leases and fences a broker whose lease ran out, electing new leaders for
//! its partitions. Runs on one core of each controller node, wrapping that
//! node's [`Quorum`]; on a node that does not lead, requests are answered
//! `NotController` with the leader it knows.
//!
//! One batch is in flight at a time: requests that arrive meanwhile wait
//! and go into the next batch together (a group commit of metadata), each
//! checked against the committed image plus the records before it in the
//! batch, so a batch never breaks the image's rules. A new leader proposes
//! nothing until it has applied its whole log, so it never decides from a
//! stale image. Leases are in memory on the leader only: a new leader
//! gives every unfenced broker a full session from its election.

pub mod changes;
pub mod election;
pub mod placement;
pub mod requests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use uuid::Uuid;

use crate::metadata::image::MetadataImage;
use crate::metadata::records::{MetadataRecord, RecordBatch, MAX_BATCH_BYTES};
use crate::quorum::{Quorum, QuorumAction, QuorumError};
use placement::Loads;
use requests::{ControllerError, ControllerReply, ControllerRequest, RequestId};

/// Requests one batch takes at most.
const MAX_REQUESTS_PER_BATCH: usize = 1024;
/// Requests waiting for a batch at most; more are refused as not
/// controller (the client retries).
const MAX_QUEUED_REQUESTS: usize = 16_384;

/// The controller's settings (Kafka's names in the config).
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// `broker.session.timeout.ms`: a broker without a heartbeat for this
    /// long is fenced.
    pub session_timeout_ms: i64,
    /// `min.insync.replicas` for topics without their own.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable` for topics without their own.
    pub unclean_leader_election: bool,
    /// Producer ids per AllocateProducerIds.
    pub producer_id_block: i64,
    /// The largest replication factor accepted.
    pub max_replication_factor: usize,
    /// `num.partitions`.
    pub default_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i32,
    /// Partition changes one batch takes after a broker's liveness changed;
    /// the rest follow in the next batches (a broker hosting many
    /// partitions is fenced at once, its partitions a batch at a time).
    pub liveness_changes_per_batch: usize,
    /// `auto.leader.rebalance.enable`: every `leader_imbalance_check_interval_ms`
    /// leadership moves back to each partition's preferred replica where
    /// that one is live and in the ISR.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: i64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            session_timeout_ms: 3000,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            producer_id_block: 1000,
            max_replication_factor: 1,
            default_partitions: 1,
            default_replication_factor: 1,
            liveness_changes_per_batch: 8192,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

#[derive(Clone)]
enum Queued {
    Request(RequestId, ControllerRequest),
    /// A lease ran out.
    Expired {
        broker_id: i32,
        broker_epoch: i64,
    },
}

/// A broker being fenced a batch at a time (it led more partitions than
/// one batch moves): its leaderships move first and the fence record comes
/// with the last batch, so no image has a partition led by a fenced broker.
#[derive(Debug, Clone, Copy)]
struct Leaving {
    broker_epoch: i64,
    /// Its lease ran out (a heartbeat since stops the fencing); otherwise
    /// it asked (controlled shutdown).
    expired: bool,
}

struct InFlight {
    token: u64,
    term: u64,
    replies: Vec<(RequestId, ControllerReply)>,
}

/// What one poll produced: quorum actions for the driver to execute in
/// order, and replies to send (only after the actions before them ran).
#[derive(Debug, Default)]
pub struct ControllerOutput {
    /// See [`QuorumAction`].
    pub actions: Vec<QuorumAction>,
    /// Replies, each after the actions that made it true.
    pub replies: Vec<(RequestId, ControllerReply)>,
}

/// See the module documentation.
pub struct Controller {
    quorum: Quorum,
    settings: ControllerSettings,
    now_ms: i64,
    /// Lease deadlines by broker (the leader only).
    leases: BTreeMap<i32, i64>,
    /// Brokers this leader heard from (a registration or a heartbeat of
    /// their current epoch): only their leases refuse a new incarnation.
    /// A lease given at election or backfilled is assumed, not heard, so a
    /// node restarted with its controller registers again at once.
    heard: BTreeSet<i32>,
    expiring: BTreeSet<i32>,
    /// Brokers whose partitions may still need changes after their
    /// liveness changed (more than one batch took, or a new leader took
    /// over): each batch brings them closer, until none is left.
    reconciling: BTreeSet<i32>,
    leaving: BTreeMap<i32, Leaving>,
    /// When the next check for leaders off their preferred replica is due.
    next_rebalance_ms: i64,
    /// A check is due: the next batches move leadership back to preferred
    /// replicas, after the liveness changes.
    rebalance_due: bool,
    queue: VecDeque<Queued>,
    in_flight: Option<InFlight>,
    leading_term: Option<u64>,
    id_state: u64,
}

impl Controller {
    /// A controller over `quorum`; `id_seed` seeds the topic ids it makes
    /// (fresh randomness at every start).
    pub fn new(quorum: Quorum, settings: ControllerSettings, id_seed: u64) -> Controller {
        Controller {
            quorum,
            settings,
            now_ms: 0,
            leases: BTreeMap::new(),
            heard: BTreeSet::new(),
            expiring: BTreeSet::new(),
            reconciling: BTreeSet::new(),
            leaving: BTreeMap::new(),
            next_rebalance_ms: 0,
            rebalance_due: false,
            queue: VecDeque::new(),
            in_flight: None,
            leading_term: None,
            id_state: id_seed,
        }
    }

    /// The quorum underneath (status, image, peer messages).
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// The quorum underneath, to step peer messages and report transport
    /// outcomes.
    pub fn quorum_mut(&mut self) -> &mut Quorum {
        &mut self.quorum
    }

    /// The committed image.
    pub fn image(&self) -> &std::sync::Arc<MetadataImage> {
        self.quorum.image()
    }

    /// One tick at `now_ms`: the quorum's clock, and lease expiry.
    pub fn tick(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.quorum.tick();
        self.observe_leadership();
        if self.leading_term.is_none() {
            return;
        }
        // Every unfenced broker holds a lease, including those unfenced by
        // entries applied since this node became leader, but not one whose
        // lease ran out and that is being fenced: only a heartbeat renews it.
        let deadline = self.now_ms + self.settings.session_timeout_ms;
        let unleased: Vec<i32> = self
            .image()
            .live_brokers()
            .map(|b| b.broker_id)
            .filter(|id| !self.leases.contains_key(id) && !self.expiring.contains(id) && !self.leaving.contains_key(id))
            .collect();
        for id in unleased {
            self.leases.insert(id, deadline);
        }
        if self.settings.auto_leader_rebalance && self.now_ms >= self.next_rebalance_ms {
            self.rebalance_due = true;
            self.next_rebalance_ms = self.now_ms + self.settings.leader_imbalance_check_interval_ms;
        }
        let expired: Vec<i32> = self
            .leases
            .iter()
            .filter(|(id, deadline)| **deadline <= self.now_ms && !self.expiring.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for broker_id in expired {
            self.leases.remove(&broker_id);
            self.heard.remove(&broker_id);
            if let Some(b) = self.image().brokers.get(&broker_id).filter(|b| !b.fenced) {
                let broker_epoch = b.broker_epoch;
                self.expiring.insert(broker_id);
                self.queue.push_back(Queued::Expired { broker_id, broker_epoch });
            }
        }
    }

    /// A request; its reply comes from [`Self::poll`].
    pub fn handle(&mut self, now_ms: i64, id: RequestId, request: ControllerRequest) -> Option<ControllerReply> {
        self.now_ms = self.now_ms.max(now_ms);
        self.observe_leadership();
        if self.leading_term.is_none() || self.queue.len() >= MAX_QUEUED_REQUESTS {
            return Some(ControllerReply::Refused(ControllerError::NotController { leader: self.quorum.leader() }));
        }
        if request == ControllerRequest::DescribeQuorum {
            let voters = self
                .quorum
                .voter_progress()
                .into_iter()
                .map(|(id, log_end)| requests::VoterReport { id, log_end, last_fetch_ms: -1, last_caught_up_ms: -1 })
                .collect();
            return Some(ControllerReply::Quorum(requests::QuorumReport {
                leader: self.quorum.node_id(),
                term: self.quorum.term(),
                high_watermark: self.quorum.commit_index(),
                voters,
            }));
        }
        if let ControllerRequest::Heartbeat { broker_id, broker_epoch, .. } = &request {
            let current = self.image().brokers.get(broker_id).map(|b| b.broker_epoch);
            if current == Some(*broker_epoch) {
                self.leases.insert(*broker_id, self.now_ms + self.settings.session_timeout_ms);
                self.heard.insert(*broker_id);
            }
        }
        self.queue.push_back(Queued::Request(id, request));
        None
    }

    /// Runs the quorum and the controller until nothing is ready.
    pub fn poll(&mut self) -> Result<ControllerOutput, QuorumError> {
        let mut output = ControllerOutput::default();
        // Bounded: each round either proposes a batch or stops.
        for _ in 0..4 {
            let actions = self.quorum.poll()?;
            for action in &actions {
                self.on_action(action, &mut output);
            }
            output.actions.extend(actions);
            self.observe_leadership();
            if !self.propose_next(&mut output) {
                break;
            }
        }
        Ok(output)
    }

    fn on_action(&mut self, action: &QuorumAction, output: &mut ControllerOutput) {
        match action {
            QuorumAction::Applied { proposal: Some(token), .. } => {
                if let Some(done) = self.in_flight.take_if(|f| f.token == *token) {
                    output.replies.extend(done.replies);
                }
            }
            QuorumAction::LeaderChanged { leader, term } => {
                let ours = *leader == self.quorum.node_id();
                if let Some(lost) = self.in_flight.take_if(|f| !ours || f.term != *term) {
                    let refusal = ControllerError::NotController { leader: *leader };
                    let refused =
                        lost.replies.into_iter().map(|(id, _)| (id, ControllerReply::Refused(refusal.clone())));
                    output.replies.extend(refused);
                }
            }
            _ => {}
        }
    }

    /// Notes a change of leadership: a new leader gives every unfenced
    /// broker a fresh lease; a node that stops leading refuses what waits.
    fn observe_leadership(&mut self) {
        let leading = self.quorum.is_leader().then(|| self.quorum.term());
        if leading == self.leading_term {
            return;
        }
        self.leading_term = leading;
        self.leases.clear();
        self.heard.clear();
        self.expiring.clear();
        self.reconciling.clear();
        self.leaving.clear();
        self.rebalance_due = false;
        self.next_rebalance_ms = self.now_ms + self.settings.leader_imbalance_check_interval_ms;
        if leading.is_some() {
            let deadline = self.now_ms + self.settings.session_timeout_ms;
            let unfenced: Vec<i32> = self.image().live_brokers().map(|b| b.broker_id).collect();
            self.leases.extend(unfenced.into_iter().map(|id| (id, deadline)));
            // The last leader may have stopped between a liveness change
            // and the partition changes that follow it.
            let registered: Vec<i32> = self.image().brokers.keys().copied().collect();
            self.reconciling.extend(registered);
        }
    }

    /// Builds and proposes the next batch; whether it proposed one.
    fn propose_next(&mut self, output: &mut ControllerOutput) -> bool {
        if self.leading_term.is_none() {
            let refusal = ControllerError::NotController { leader: self.quorum.leader() };
            for queued in self.queue.drain(..) {
                if let Queued::Request(id, _) = queued {
                    output.replies.push((id, ControllerReply::Refused(refusal.clone())));
                }
            }
            return false;
        }
        // A new leader first applies its whole log (the entries of earlier
        // terms commit with its first entry).
        let idle =
            self.queue.is_empty() && self.reconciling.is_empty() && self.leaving.is_empty() && !self.rebalance_due;
        if self.in_flight.is_some() || idle || self.image().offset < self.quorum.last_index() {
            return false;
        }
        let mut scratch = (**self.image()).clone();
        let mut records = self.reconcile(&mut scratch);
        let mut loads = Loads::of(&scratch);
        // A broker being fenced in steps gets no new partitions.
        loads.exclude(self.leaving.keys().copied());
        let mut replies = Vec::new();
        let mut batch_bytes =
            if records.is_empty() { 0 } else { RecordBatch::of(records.iter().cloned()).encode().len() };
        // The batch lands at the entry after the last: nothing else is in
        // flight and the log is applied.
        let batch_offset = self.quorum.last_index() + 1;
        for _ in 0..MAX_REQUESTS_PER_BATCH {
            let Some(queued) = self.queue.pop_front() else { break };
            let held = queued.clone();
            let (added, reply) = self.change_of(&scratch, &mut loads, batch_offset, queued);
            // A broker that started leaving with this item gets nothing new
            // from the next ones.
            loads.exclude(self.leaving.keys().copied());
            let bytes = if added.is_empty() { 0 } else { RecordBatch::of(added.iter().cloned()).encode().len() };
            if bytes > MAX_BATCH_BYTES / 2 {
                if let Some((id, _)) = reply {
                    replies.push((id, ControllerReply::Refused(ControllerError::RequestTooLarge)));
                }
                continue;
            }
            if batch_bytes + bytes > MAX_BATCH_BYTES / 2 {
                // The next batch takes it, decided again against that image.
                if let Queued::Expired { broker_id, .. } = &held {
                    self.expiring.insert(*broker_id);
                }
                self.queue.push_front(held);
                break;
            }
            batch_bytes += bytes;
            if !added.is_empty() {
                let batch = RecordBatch::of(added.iter().cloned());
                match scratch.applied(scratch.offset + 1, &batch) {
                    Ok(next) => {
                        scratch = next;
                        records.extend(added);
                    }
                    Err(error) => {
                        debug_assert!(false, "a controller change breaks the image: {error}");
                        if let Some((id, _)) = reply {
                            replies.push((id, ControllerReply::Refused(ControllerError::NotController { leader: 0 })));
                        }
                        continue;
                    }
                }
            }
            replies.extend(reply);
        }
        if records.is_empty() {
            output.replies.extend(replies);
            return false;
        }
        match self.quorum.propose(&RecordBatch::of(records)) {
            Ok(token) => {
                let term = self.quorum.term();
                self.in_flight = Some(InFlight { token, term, replies });
                true
            }
            Err(error) => {
                let leader = match error {
                    crate::quorum::ProposeError::NotLeader { leader } => leader,
                    crate::quorum::ProposeError::Dropped => 0,
                };
                let refusal = ControllerError::NotController { leader };
                output
                    .replies
                    .extend(replies.into_iter().map(|(id, _)| (id, ControllerReply::Refused(refusal.clone()))));
                // The batch may have carried partition changes owed after a
                // liveness change (their brokers left `reconciling` when
                // staged): every broker is reconciled again from the image.
                let registered: Vec<i32> = self.image().brokers.keys().copied().collect();
                self.reconciling.extend(registered);
                false
            }
        }
    }

    /// The records and reply of one queued item, against `scratch`.
    fn change_of(
        &mut self,
        scratch: &MetadataImage,
        loads: &mut Loads,
        batch_offset: u64,
        queued: Queued,
    ) -> (Vec<MetadataRecord>, Option<(RequestId, ControllerReply)>) {
        let (id, request) = match queued {
            Queued::Expired { broker_id, broker_epoch } => {
                self.expiring.remove(&broker_id);
                if self.leases.get(&broker_id).is_some_and(|deadline| *deadline > self.now_ms) {
                    // It heartbeated since: the lease holds again.
                    return (Vec::new(), None);
                }
                let room = self.settings.liveness_changes_per_batch;
                let (records, _) =
                    self.fence_in_steps(scratch, broker_id, Leaving { broker_epoch, expired: true }, room);
                return (records, None);
            }
            Queued::Request(id, request) => (id, request),
        };
        let settings = self.settings.clone();
        let (records, reply) = match request {
            ControllerRequest::RegisterBroker { broker_id, incarnation_id, endpoints, rack } => {
                let lease_live =
                    self.heard.contains(&broker_id) && self.leases.get(&broker_id).is_some_and(|d| *d > self.now_ms);
                // A previous incarnation that is unfenced (its lease is not
                // live) is fenced first, its partitions moved before it.
                let replaced = scratch
                    .brokers
                    .get(&broker_id)
                    .filter(|b| !b.fenced && b.incarnation_id != incarnation_id && !lease_live)
                    .map(|b| b.broker_epoch);
                let mut records = Vec::new();
                let mut fenced_image = None;
                if let Some(broker_epoch) = replaced {
                    let room = settings.liveness_changes_per_batch;
                    let leaving = Leaving { broker_epoch, expired: false };
                    let (moved, fenced) = self.fence_in_steps(scratch, broker_id, leaving, room);
                    if !fenced {
                        let retry = ControllerReply::Refused(ControllerError::PreviousIncarnationLeaving(broker_id));
                        return (moved, Some((id, retry)));
                    }
                    match scratch.applied(scratch.offset + 1, &RecordBatch::of(moved.iter().cloned())) {
                        Ok(next) => fenced_image = Some(next),
                        Err(error) => {
                            debug_assert!(false, "fencing an incarnation breaks the image: {error}");
                            let retry = ControllerReply::Refused(ControllerError::NotController { leader: 0 });
                            return (Vec::new(), Some((id, retry)));
                        }
                    }
                    records = moved;
                }
                let base = fenced_image.as_ref().unwrap_or(scratch);
                let (registered, reply) =
                    changes::register(base, batch_offset, broker_id, incarnation_id, endpoints, rack, lease_live);
                if !registered.is_empty() {
                    self.leases.insert(broker_id, self.now_ms + settings.session_timeout_ms);
                    self.heard.insert(broker_id);
                }
                records.extend(self.with_liveness(base, registered, broker_id));
                (records, reply)
            }
            ControllerRequest::Heartbeat { broker_id, broker_epoch, metadata_offset, want_fence, want_shutdown } => {
                let (records, reply) =
                    changes::heartbeat(scratch, broker_id, broker_epoch, metadata_offset, want_fence, want_shutdown);
                if records.iter().any(|r| matches!(r, MetadataRecord::FenceBroker { .. })) {
                    let room = self.settings.liveness_changes_per_batch;
                    let leaving = Leaving { broker_epoch, expired: false };
                    let (records, fenced) = self.fence_in_steps(scratch, broker_id, leaving, room);
                    let reply = match reply {
                        // Still moving its partitions: the broker asks again.
                        ControllerReply::Heartbeat { caught_up, .. } if !fenced => {
                            ControllerReply::Heartbeat { fenced: false, caught_up, should_shut_down: false }
                        }
                        reply => reply,
                    };
                    (records, reply)
                } else {
                    (self.with_liveness(scratch, records, broker_id), reply)
                }
            }
            ControllerRequest::CreateTopics { topics, validate_only } => {
                let mut records = Vec::new();
                let mut results = Vec::new();
                let mut names = BTreeSet::new();
                for topic in &topics {
                    let topic_id = self.fresh_id();
                    let result = if !names.insert(topic.name.clone()) {
                        Err(ControllerError::InvalidTopic(format!(
                            "topic {} is named twice in the request",
                            topic.name
                        )))
                    } else {
                        changes::create_topic(scratch, loads, topic, topic_id, &settings)
                    };
                    match result {
                        Ok(added) => {
                            if !validate_only {
                                records.extend(added);
                            }
                            results.push((topic.name.clone(), Ok(topic_id)));
                        }
                        Err(error) => results.push((topic.name.clone(), Err(error))),
                    }
                }
                (records, ControllerReply::Topics(results))
            }
            ControllerRequest::DeleteTopics { names } => {
                let mut records = Vec::new();
                let mut results = Vec::new();
                let mut seen = BTreeSet::new();
                for name in names {
                    match scratch.topic(&name) {
                        Some(topic) if seen.insert(topic.topic_id) => {
                            records.push(MetadataRecord::RemoveTopic { topic_id: topic.topic_id });
                            results.push((name, Ok(())));
                        }
                        _ => results.push((name, Err(ControllerError::UnknownTopic))),
                    }
                }
                (records, ControllerReply::Deleted(results))
            }
            ControllerRequest::CreatePartitions { topics, validate_only } => {
                let mut records = Vec::new();
                let mut results = Vec::new();
                let mut seen = BTreeSet::new();
                for (name, count, assignments) in topics {
                    if !seen.insert(name.clone()) {
                        let twice =
                            ControllerError::InvalidPartitions(format!("topic {name} is named twice in the request"));
                        results.push((name, Err(twice)));
                        continue;
                    }
                    match changes::create_partitions(scratch, loads, &name, count, assignments.as_deref()) {
                        Ok(added) => {
                            if !validate_only {
                                records.extend(added);
                            }
                            results.push((name, Ok(())));
                        }
                        Err(error) => results.push((name, Err(error))),
                    }
                }
                (records, ControllerReply::Partitions(results))
            }
            ControllerRequest::AllocateProducerIds { broker_id, broker_epoch } => {
                match scratch.brokers.get(&broker_id) {
                    Some(b) if b.broker_epoch == broker_epoch => {
                        let first = scratch.next_producer_id;
                        let count = settings.producer_id_block;
                        let next_producer_id = first + count;
                        let record = MetadataRecord::ProducerIds { broker_id, broker_epoch, next_producer_id };
                        (vec![record], ControllerReply::ProducerIds { first, count })
                    }
                    Some(_) => (Vec::new(), ControllerReply::Refused(ControllerError::StaleBrokerEpoch)),
                    None => (Vec::new(), ControllerReply::Refused(ControllerError::BrokerNotRegistered(broker_id))),
                }
            }
            ControllerRequest::ElectLeaders { preferred, partitions } => {
                let mut records: Vec<MetadataRecord> = Vec::new();
                let mut results = Vec::new();
                let mut seen = BTreeSet::new();
                for (name, partition) in partitions {
                    if !seen.insert((name.clone(), partition)) {
                        continue;
                    }
                    let gone: Vec<i32> = self.leaving.keys().copied().collect();
                    match changes::elect(scratch, &name, partition, preferred, &settings, &gone) {
                        Ok(added) => {
                            records.extend(added);
                            results.push(((name, partition), Ok(())));
                        }
                        Err(error) => results.push(((name, partition), Err(error))),
                    }
                }
                (records, ControllerReply::Elected(results))
            }
            ControllerRequest::DescribeQuorum => (Vec::new(), ControllerReply::Done),
            ControllerRequest::Bootstrap { mut records, complete } => {
                if scratch.features.contains_key(requests::BOOTSTRAP_FEATURE) {
                    (Vec::new(), ControllerReply::Refused(ControllerError::AlreadyBootstrapped))
                } else {
                    if complete {
                        records
                            .push(MetadataRecord::FeatureLevel { name: requests::BOOTSTRAP_FEATURE.into(), level: 1 });
                    }
                    match scratch.applied(scratch.offset + 1, &RecordBatch::of(records.iter().cloned())) {
                        Ok(_) => (records, ControllerReply::Done),
                        Err(error) => {
                            (Vec::new(), ControllerReply::Refused(ControllerError::InvalidBootstrap(error.to_string())))
                        }
                    }
                }
            }
            ControllerRequest::AlterConfigs { resource, name, .. }
                if resource == crate::metadata::records::ConfigResource::Topic && scratch.topic(&name).is_none() =>
            {
                (Vec::new(), ControllerReply::Refused(ControllerError::UnknownTopic))
            }
            ControllerRequest::AlterConfigs { resource, name, changes } => {
                let records = changes
                    .into_iter()
                    .map(|(config, value)| MetadataRecord::Config {
                        resource,
                        resource_name: name.clone(),
                        name: config,
                        value,
                    })
                    .collect();
                (records, ControllerReply::Done)
            }
        };
        (records, Some((id, reply)))
    }

    /// `records` (which change `broker`'s registration or fencing) and the
    /// partition changes that follow from them, as many as one batch
    /// takes; the broker is reconciled in the next batches for the rest.
    fn with_liveness(
        &mut self,
        scratch: &MetadataImage,
        mut records: Vec<MetadataRecord>,
        broker: i32,
    ) -> Vec<MetadataRecord> {
        if records.is_empty() {
            return records;
        }
        let after = scratch.applied(scratch.offset + 1, &RecordBatch::of(records.iter().cloned()));
        if let Ok(after) = after {
            let gone: Vec<i32> = self.leaving.keys().copied().collect();
            let mut partition_changes = changes::liveness_changes(&after, &[broker], &gone, &self.settings);
            if partition_changes.len() > self.settings.liveness_changes_per_batch {
                partition_changes.truncate(self.settings.liveness_changes_per_batch);
                self.reconciling.insert(broker);
            }
            records.extend(partition_changes);
        }
        records
    }

    /// The partition changes still owed to brokers being reconciled, at
    /// most one batch's worth, applied to `scratch`; a broker leaves the
    /// set once nothing more is owed to it. Each change is computed from
    /// the image as it is, so a change made since is never undone.
    fn reconcile(&mut self, scratch: &mut MetadataImage) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let budget = self.settings.liveness_changes_per_batch;
        let leaving: Vec<(i32, Leaving)> = self.leaving.iter().map(|(id, l)| (*id, *l)).collect();
        for (broker, leaving) in leaving {
            let room = budget.saturating_sub(records.len());
            if room == 0 {
                return records;
            }
            if leaving.expired && self.leases.get(&broker).is_some_and(|deadline| *deadline > self.now_ms) {
                // It heartbeated: it stays, and its partitions come back.
                self.leaving.remove(&broker);
                self.reconciling.insert(broker);
                continue;
            }
            let (owed, _) = self.fence_in_steps(scratch, broker, leaving, room);
            if owed.is_empty() {
                continue;
            }
            if !stage(scratch, &mut records, owed) {
                self.leaving.remove(&broker);
            }
        }
        let gone: Vec<i32> = self.leaving.keys().copied().collect();
        // An unfenced broker this leader has not heard from yet may be the
        // dead one an earlier leader was fencing: nothing comes back to it
        // until it heartbeats (or its lease runs out and it is fenced).
        let brokers: Vec<i32> = self
            .reconciling
            .iter()
            .copied()
            .filter(|b| !gone.contains(b))
            .filter(|b| self.heard.contains(b) || scratch.brokers.get(b).is_none_or(|r| r.fenced))
            .collect();
        for broker in brokers {
            let room = budget.saturating_sub(records.len());
            if room == 0 {
                break;
            }
            let mut owed = changes::liveness_changes(scratch, &[broker], &gone, &self.settings);
            if owed.len() <= room {
                self.reconciling.remove(&broker);
            }
            owed.truncate(room);
            if owed.is_empty() {
                continue;
            }
            if !stage(scratch, &mut records, owed) {
                self.reconciling.remove(&broker);
            }
        }
        let room = budget.saturating_sub(records.len());
        if self.rebalance_due && self.reconciling.is_empty() && room > 0 {
            // One more than fits tells whether this batch finishes it.
            let mut owed = changes::preferred_elections(scratch, &gone, room + 1);
            if owed.len() <= room {
                self.rebalance_due = false;
            }
            owed.truncate(room);
            if !owed.is_empty() && !stage(scratch, &mut records, owed) {
                self.rebalance_due = false;
            }
        }
        records
    }

    /// Fences `broker_id` (its epoch as in `leaving`) with the partition
    /// changes that follow, when at most `room` of them are owed; otherwise
    /// the first `room` changes only, computed as if it were gone, with the
    /// broker kept leaving until a later batch fences it. Returns the
    /// records and whether they fence it (or it needs no fencing: fenced
    /// already, or a newer incarnation registered).
    fn fence_in_steps(
        &mut self,
        scratch: &MetadataImage,
        broker_id: i32,
        leaving: Leaving,
        room: usize,
    ) -> (Vec<MetadataRecord>, bool) {
        let fence = changes::fence(scratch, broker_id, leaving.broker_epoch);
        if fence.is_empty() {
            self.leaving.remove(&broker_id);
            return (Vec::new(), true);
        }
        let gone: Vec<i32> = self.leaving.keys().copied().chain([broker_id]).collect();
        let mut records = changes::liveness_changes(scratch, &[broker_id], &gone, &self.settings);
        if records.len() > room {
            records.truncate(room);
            self.leaving.insert(broker_id, leaving);
            return (records, false);
        }
        self.leaving.remove(&broker_id);
        records.extend(fence);
        (records, true)
    }

    fn fresh_id(&mut self) -> Uuid {
        let mut next = || {
            self.id_state = self.id_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.id_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let bits = (u128::from(next()) << 64) | u128::from(next());
        uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
    }
}

/// Applies `owed` to `scratch` and adds it to `records`; false (and
/// nothing staged) when the changes do not apply, which the controller's
/// own changes never do.
fn stage(scratch: &mut MetadataImage, records: &mut Vec<MetadataRecord>, owed: Vec<MetadataRecord>) -> bool {
    match scratch.applied(scratch.offset + 1, &RecordBatch::of(owed.iter().cloned())) {
        Ok(next) => {
            *scratch = next;
            records.extend(owed);
            true
        }
        Err(error) => {
            debug_assert!(false, "a liveness change breaks the image: {error}");
            false
        }
    }
}
