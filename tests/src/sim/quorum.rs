//! The controller quorum in the simulator: several voters' [`Quorum`]s (the
//! real raft-rs state machines and metadata log codec) over a simulated
//! network that drops, delays, duplicates, reorders and partitions
//! messages, with crashes at any point of a node's action list (a torn log
//! append, a snapshot replaced without its log), restarts from what the
//! simulated disk kept, and leader transfers. Clients propose metadata
//! batches to the leader.
//!
//! Checked after every step: at most one leader per term; every node's
//! image at an offset equals every other node's image at that offset (a
//! committed entry is never lost or changed, and entries apply in log
//! order, which [`Quorum`] also asserts); an acknowledged proposal is in
//! every later image; brokers crash and come back, and their partitions'
//! elections (one to three replicas, some topics with
//! min.insync.replicas=2 so the ELR is used, some allowing unclean
//! elections) keep every rule `check_partitions` asserts. At the end the
//! network heals and every node restarts: within [`LIVENESS_TICKS`] a
//! leader is elected, a new proposal commits, and every node reaches the
//! same image.
//!
//! One seeded generator makes every choice, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shardline_replication::controller::requests::{ControllerReply, ControllerRequest, NewTopic, RequestId};
use shardline_replication::controller::{Controller, ControllerSettings};
use shardline_replication::metadata::image::{MetadataImage, NO_LEADER};
use shardline_replication::metadata::records::{ConfigResource, Endpoint};
use shardline_replication::quorum::log_codec;
use shardline_replication::quorum::{Quorum, QuorumAction, QuorumConfig};
use shardline_replication::raft::eraftpb::{Message, MessageType};
use uuid::Uuid;

use super::rng::SimRng;
use super::trace::Trace;

/// Ticks after the network heals within which a leader is elected, a
/// proposal commits and every node catches up. Election timeouts are
/// 10-19 ticks; pre-vote and check-quorum need two rounds at most after
/// every node restarted, so this leaves room for several split votes.
pub const LIVENESS_TICKS: u64 = 400;

/// Simulated milliseconds per tick.
const TICK_MS: u64 = 100;
/// Ticks between a broker's heartbeats (the session timeout is 30).
const BROKER_HEARTBEAT_TICKS: u64 = 5;

fn settings() -> ControllerSettings {
    // Fewer partition changes a batch than a broker leads, so fencing and
    // coming back take several batches, interleaved with faults and leader
    // changes.
    // Up to three replicas, so fencing elects from the ISR, then the ELR
    // (topics with min.insync.replicas=2), or uncleanly where a topic
    // allows it; imbalance checks every 5 s.
    ControllerSettings {
        session_timeout_ms: 3000,
        liveness_changes_per_batch: 24,
        max_replication_factor: 3,
        leader_imbalance_check_interval_ms: 5000,
        ..ControllerSettings::default()
    }
}

/// How long a run is.
#[derive(Debug, Clone)]
pub struct QuorumSimConfig {
    /// Ticks with faults.
    pub steps: u64,
    /// Print every trace line.
    pub verbose: bool,
}

impl Default for QuorumSimConfig {
    fn default() -> Self {
        QuorumSimConfig { steps: 600, verbose: false }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSimReport {
    /// The seed.
    pub seed: u64,
    /// Voters.
    pub voters: usize,
    /// The trace's hash.
    pub trace_hash: u64,
    /// Proposals committed and acknowledged.
    pub acknowledged: u64,
    /// Crashes.
    pub crashes: u64,
    /// Distinct terms that had a leader.
    pub leader_terms: u64,
    /// Snapshots a node installed from the leader.
    pub snapshots_installed: u64,
    /// The final image's offset.
    pub final_offset: u64,
    /// Brokers fenced (lease expired) and later seen in an image.
    pub fencings: u64,
    /// Ticks from the heal to a converged quorum.
    pub recovery_ticks: u64,
}

#[derive(Default, Clone)]
struct Disk {
    snapshot: Option<Vec<u8>>,
    log: Vec<u8>,
}

struct Voter {
    id: u64,
    election_ticks: usize,
    controller: Option<Controller>,
    disk: Disk,
    down_until: u64,
    /// Requests this incarnation holds, by id.
    pending: BTreeMap<RequestId, Pending>,
}

/// Who waits for a request's reply.
#[derive(Debug, Clone)]
enum Pending {
    /// An admin client creating this topic.
    Create(String),
    /// A broker's registration or heartbeat.
    Broker(usize),
}

/// A broker as the controllers see it: it registers, heartbeats, crashes
/// (stops heartbeating) and starts again as a new incarnation.
struct SimBroker {
    id: i32,
    up: bool,
    incarnation: Uuid,
    epoch: Option<i64>,
    fenced: bool,
    /// The next tick it sends a heartbeat or registration.
    next_contact: u64,
    down_until: u64,
}

struct InFlight {
    deliver_at: u64,
    sequence: u64,
    message: Message,
}

struct Run {
    seed: u64,
    rng: SimRng,
    trace: Trace,
    tick: u64,
    voters: Vec<Voter>,
    ids: Vec<u64>,
    network: Vec<InFlight>,
    sequence: u64,
    /// When set, messages cross only within one side.
    partition: Option<(BTreeSet<u64>, u64)>,
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    max_delay: u64,
    snapshot_every: u64,
    kept_behind: u64,
    leaders: BTreeMap<u64, u64>,
    images: BTreeMap<u64, Arc<MetadataImage>>,
    acknowledged: BTreeMap<String, u64>,
    proposals: u64,
    crashes: u64,
    snapshots_installed: u64,
    /// Crashes mid-action happen only while faults are on.
    faults_on: bool,
    brokers: Vec<SimBroker>,
    next_request: RequestId,
    /// Who led each (topic, partition, leader epoch).
    epoch_leaders: BTreeMap<(Uuid, usize, i32), i32>,
    fencings: u64,
}

/// Runs one seed.
pub fn run_quorum_seed(seed: u64, config: &QuorumSimConfig) -> Result<QuorumSimReport, String> {
    let mut run = Run::new(seed, config.verbose);
    let result = run.play(config.steps);
    result.map_err(|message| run.failure(&message))
}

impl Run {
    fn new(seed: u64, verbose: bool) -> Run {
        let mut rng = SimRng::new(seed);
        let count = if rng.chance(1, 3) { 5 } else { 3 };
        let ids: Vec<u64> = (1..=count).collect();
        let voters = ids
            .iter()
            .map(|&id| Voter {
                id,
                election_ticks: 10 + rng.below(10) as usize,
                controller: None,
                disk: Disk::default(),
                down_until: 0,
                pending: BTreeMap::new(),
            })
            .collect();
        let drop_per_mille = rng.below(100);
        let duplicate_per_mille = rng.below(30);
        let max_delay = 1 + rng.below(5);
        let snapshot_every = 5 + rng.below(40);
        let kept_behind = rng.below(6);
        let brokers = (0..3)
            .map(|b| SimBroker {
                id: 100 + b,
                up: true,
                incarnation: Uuid::from_u128(u128::from(rng.next_u64())),
                epoch: None,
                fenced: true,
                next_contact: 1,
                down_until: 0,
            })
            .collect();
        let mut run = Run {
            seed,
            rng,
            trace: Trace::new(verbose),
            tick: 0,
            voters,
            ids,
            network: Vec::new(),
            sequence: 0,
            partition: None,
            drop_per_mille,
            duplicate_per_mille,
            max_delay,
            snapshot_every,
            kept_behind,
            leaders: BTreeMap::new(),
            images: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            proposals: 0,
            crashes: 0,
            snapshots_installed: 0,
            faults_on: true,
            brokers,
            next_request: 1,
            epoch_leaders: BTreeMap::new(),
            fencings: 0,
        };
        run.trace.line(format!(
            "seed {seed}: {count} voters, drop {drop_per_mille}‰, duplicate {duplicate_per_mille}‰, delay ≤{max_delay}, \
             snapshot every {snapshot_every} keeping {kept_behind}"
        ));
        run
    }

    fn failure(&self, message: &str) -> String {
        let mut text =
            format!("quorum simulator seed {} failed at tick {}: {message}\nlast trace lines:\n", self.seed, self.tick);
        for line in self.trace.recent() {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str(&format!(
            "replay: SHARDLINE_QUORUM_SIM_SEED={} SHARDLINE_SIM_VERBOSE=1 cargo test -p shardline-tests --test quorum_simulator -- --nocapture",
            self.seed
        ));
        text
    }

    fn play(&mut self, steps: u64) -> Result<QuorumSimReport, String> {
        for i in 0..self.voters.len() {
            self.start(i)?;
        }
        for _ in 0..steps {
            self.faults()?;
            self.step()?;
            if self.rng.chance(1, 3) {
                self.propose()?;
            }
        }
        let recovery_ticks = self.heal_and_converge()?;
        let final_image = self.voters[0].controller.as_ref().map(Controller::quorum).expect("running").image().clone();
        for name in self.acknowledged.keys() {
            if final_image.topic(name).is_none() {
                return Err(format!("acknowledged topic {name} is missing from the final image"));
            }
        }
        Ok(QuorumSimReport {
            seed: self.seed,
            voters: self.voters.len(),
            trace_hash: self.trace.hash(),
            acknowledged: self.acknowledged.len() as u64,
            crashes: self.crashes,
            leader_terms: self.leaders.len() as u64,
            snapshots_installed: self.snapshots_installed,
            final_offset: final_image.offset,
            fencings: self.fencings,
            recovery_ticks,
        })
    }

    fn quorum_config(&mut self, i: usize) -> QuorumConfig {
        QuorumConfig {
            node_id: self.voters[i].id,
            voters: self.ids.clone(),
            election_ticks: self.voters[i].election_ticks,
            heartbeat_ticks: 2,
            snapshot_every_entries: self.snapshot_every,
            entries_kept_behind_snapshot: self.kept_behind,
            incarnation: self.rng.next_u64(),
        }
    }

    /// Starts voter `i` from its disk, cutting a torn tail as the driver does.
    fn start(&mut self, i: usize) -> Result<(), String> {
        let config = self.quorum_config(i);
        let disk = &mut self.voters[i].disk;
        let recovered = log_codec::recover(disk.snapshot.as_deref(), &disk.log)
            .map_err(|e| format!("node {} cannot recover its metadata log: {e}", i + 1))?;
        let cut = disk.log.len() - recovered.valid_log_bytes;
        disk.log.truncate(recovered.valid_log_bytes);
        let quorum = Quorum::open(config, recovered).map_err(|e| format!("node {} does not open: {e}", i + 1))?;
        self.trace.line(format!(
            "t{} node {} starts at offset {} (cut {cut} torn bytes)",
            self.tick,
            i + 1,
            quorum.image().offset
        ));
        let id_seed = self.rng.next_u64();
        self.voters[i].controller = Some(Controller::new(quorum, settings(), id_seed));
        self.voters[i].pending.clear();
        self.check_image(i)
    }

    fn faults(&mut self) -> Result<(), String> {
        let tick = self.tick;
        for i in 0..self.voters.len() {
            if self.voters[i].controller.is_none() && self.voters[i].down_until <= tick {
                self.start(i)?;
            }
        }
        if self.rng.chance(1, 120) {
            let i = self.rng.below(self.voters.len() as u64) as usize;
            if self.voters[i].controller.is_some() {
                self.crash(i, None);
            }
        }
        match &self.partition {
            Some((_, until)) if *until <= tick => {
                self.partition = None;
                self.trace.line(format!("t{tick} network heals"));
            }
            None if self.rng.chance(1, 150) => {
                let side: BTreeSet<u64> = self.ids.iter().copied().filter(|_| self.rng.chance(1, 2)).collect();
                let until = tick + 20 + self.rng.below(150);
                self.trace.line(format!("t{tick} network partition {side:?} | rest until t{until}"));
                self.partition = Some((side, until));
            }
            _ => {}
        }
        if self.rng.chance(1, 200) {
            let to = self.ids[self.rng.below(self.ids.len() as u64) as usize];
            if let Some(leader) = self
                .voters
                .iter_mut()
                .filter_map(|v| v.controller.as_mut().map(Controller::quorum_mut))
                .find(|q| q.is_leader())
            {
                self.trace.line(format!("t{tick} leader {} transfers to {to}", leader.node_id()));
                leader.transfer_leadership(to);
            }
        }
        Ok(())
    }

    /// Kills voter `i`; `during` is an action list it was executing.
    fn crash(&mut self, i: usize, during: Option<&QuorumAction>) {
        let tick = self.tick;
        let down = 1 + self.rng.below(60);
        if let Some(QuorumAction::AppendLog(bytes)) = during {
            let written = self.rng.below(bytes.len() as u64 + 1) as usize;
            self.voters[i].disk.log.extend_from_slice(&bytes[..written]);
        }
        if let Some(QuorumAction::ReplaceSnapshot { snapshot, .. }) = during {
            if self.rng.chance(1, 2) {
                // The snapshot's rename made it, the log's did not.
                self.voters[i].disk.snapshot = Some(snapshot.clone());
            }
        }
        let voter = &mut self.voters[i];
        voter.controller = None;
        voter.down_until = tick + down;
        self.crashes += 1;
        self.trace.line(format!(
            "t{tick} node {} crashes{} for {down} ticks",
            i + 1,
            if during.is_some() { " mid-action" } else { "" }
        ));
    }

    fn step(&mut self) -> Result<(), String> {
        self.tick += 1;
        let tick = self.tick;
        let now_ms = (tick * TICK_MS) as i64;
        for voter in self.voters.iter_mut() {
            if let Some(controller) = voter.controller.as_mut() {
                controller.tick(now_ms);
            }
        }
        self.brokers_act()?;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.network).into_iter().partition(|m| m.deliver_at <= tick);
        self.network = later;
        let mut due = due;
        due.sort_by_key(|m| (m.deliver_at, m.sequence));
        for inflight in due {
            let (from, to) = (inflight.message.from, inflight.message.to);
            let snapshot = inflight.message.get_msg_type() == MessageType::MsgSnapshot;
            let delivered = match self.voters[to as usize - 1].controller.as_mut().map(Controller::quorum_mut) {
                Some(quorum) => {
                    quorum.step(inflight.message);
                    true
                }
                None => false,
            };
            if snapshot {
                if let Some(sender) = self.voters[from as usize - 1].controller.as_mut().map(Controller::quorum_mut) {
                    sender.report_snapshot(to, delivered);
                }
            }
        }
        for i in 0..self.voters.len() {
            self.poll(i)?;
        }
        self.check_leaders()
    }

    fn poll(&mut self, i: usize) -> Result<(), String> {
        let Some(controller) = self.voters[i].controller.as_mut() else { return Ok(()) };
        let output = controller.poll().map_err(|e| format!("node {} quorum failed: {e}", i + 1))?;
        let actions = output.actions;
        let crash_at = if self.faults_on && self.rng.chance(1, 200) && !actions.is_empty() {
            Some(self.rng.below(actions.len() as u64) as usize)
        } else {
            None
        };
        for (k, action) in actions.iter().enumerate() {
            if crash_at == Some(k) {
                self.crash(i, Some(action));
                return Ok(());
            }
            self.execute(i, action.clone())?;
        }
        self.check_image(i)?;
        for (id, reply) in output.replies {
            self.on_reply(i, id, reply)?;
        }
        Ok(())
    }

    fn execute(&mut self, i: usize, action: QuorumAction) -> Result<(), String> {
        let tick = self.tick;
        match action {
            QuorumAction::Send(message) => self.send(message),
            QuorumAction::AppendLog(bytes) => self.voters[i].disk.log.extend_from_slice(&bytes),
            QuorumAction::ReplaceSnapshot { snapshot, log } => {
                self.voters[i].disk.snapshot = Some(snapshot);
                self.voters[i].disk.log = log;
            }
            QuorumAction::Applied { .. } => {}
            QuorumAction::ImageReplaced { offset } => {
                self.snapshots_installed += 1;
                self.trace.line(format!("t{tick} node {} installs a snapshot at {offset}", i + 1));
            }
            QuorumAction::LeaderChanged { leader, term } => {
                self.trace.line(format!("t{tick} node {} sees leader {leader} in term {term}", i + 1));
            }
        }
        Ok(())
    }

    fn send(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let cut = self.partition.as_ref().is_some_and(|(side, _)| side.contains(&from) != side.contains(&to));
        if cut || self.rng.below(1000) < self.drop_per_mille {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                // The transport sees the connection fail.
                if let Some(sender) = self.voters[from as usize - 1].controller.as_mut().map(Controller::quorum_mut) {
                    sender.report_snapshot(to, false);
                }
            }
            return;
        }
        let copies = if self.rng.below(1000) < self.duplicate_per_mille { 2 } else { 1 };
        for _ in 0..copies {
            let deliver_at = self.tick + self.rng.below(self.max_delay + 1);
            self.sequence += 1;
            let sequence = self.rng.below(1 << 20) << 20 | self.sequence;
            self.network.push(InFlight { deliver_at, sequence, message: message.clone() });
        }
    }

    /// An admin client creates a topic through the leader.
    fn propose(&mut self) -> Result<(), String> {
        let Some(i) = self.leader_index() else { return Ok(()) };
        self.proposals += 1;
        let name = format!("topic-{}", self.proposals);
        let partitions = 1 + self.rng.below(3) as i32;
        let replication_factor = 1 + self.rng.below(3) as i32;
        let mut configs = Vec::new();
        if self.rng.chance(1, 3) {
            configs.push(("min.insync.replicas".to_string(), "2".to_string()));
        }
        if self.rng.chance(1, 4) {
            configs.push(("unclean.leader.election.enable".to_string(), "true".to_string()));
        }
        let topic = NewTopic { name: name.clone(), partitions, replication_factor, assignments: vec![], configs };
        let request = ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false };
        self.request(i, request, Pending::Create(name))
    }

    fn leader_index(&self) -> Option<usize> {
        self.voters.iter().position(|v| v.controller.as_ref().is_some_and(|c| c.quorum().is_leader()))
    }

    fn request(&mut self, i: usize, request: ControllerRequest, pending: Pending) -> Result<(), String> {
        let id = self.next_request;
        self.next_request += 1;
        let now_ms = (self.tick * TICK_MS) as i64;
        let controller = self.voters[i].controller.as_mut().expect("running");
        match controller.handle(now_ms, id, request) {
            Some(reply) => {
                self.voters[i].pending.insert(id, pending);
                self.on_reply(i, id, reply)
            }
            None => {
                self.voters[i].pending.insert(id, pending);
                Ok(())
            }
        }
    }

    fn on_reply(&mut self, i: usize, id: RequestId, reply: ControllerReply) -> Result<(), String> {
        let tick = self.tick;
        let Some(pending) = self.voters[i].pending.remove(&id) else {
            return Err(format!("node {} answered request {id} it does not hold", i + 1));
        };
        match pending {
            Pending::Create(name) => {
                let ControllerReply::Topics(results) = &reply else { return Ok(()) };
                if results.iter().any(|(n, r)| *n == name && r.is_ok()) {
                    let image = self.voters[i].controller.as_ref().expect("running").image().clone();
                    if image.topic(&name).is_none() {
                        return Err(format!("node {} acknowledged {name} but its image lacks it", i + 1));
                    }
                    self.trace.line(format!("t{tick} node {} acknowledges {name} at offset {}", i + 1, image.offset));
                    self.acknowledged.insert(name, image.offset);
                }
            }
            Pending::Broker(b) => {
                let broker = &mut self.brokers[b];
                match reply {
                    ControllerReply::Registered { broker_epoch } if broker.up => {
                        self.trace.line(format!("t{tick} broker {} registered at epoch {broker_epoch}", broker.id));
                        broker.epoch = Some(broker_epoch);
                    }
                    ControllerReply::Heartbeat { fenced, .. } if broker.up => {
                        if fenced != broker.fenced {
                            self.trace.line(format!(
                                "t{tick} broker {} {}",
                                broker.id,
                                if fenced { "fenced" } else { "unfenced" }
                            ));
                        }
                        broker.fenced = fenced;
                    }
                    ControllerReply::Refused(error) if broker.up => {
                        self.trace.line(format!("t{tick} broker {} refused: {error}", broker.id));
                        if matches!(
                            error,
                            shardline_replication::controller::requests::ControllerError::StaleBrokerEpoch
                                | shardline_replication::controller::requests::ControllerError::BrokerNotRegistered(_)
                        ) {
                            broker.epoch = None;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Each broker that is up registers or heartbeats to the leader every
    /// few ticks; brokers crash and come back as new incarnations.
    fn brokers_act(&mut self) -> Result<(), String> {
        let tick = self.tick;
        for b in 0..self.brokers.len() {
            if self.faults_on && self.brokers[b].up && self.rng.chance(1, 400) {
                let broker = &mut self.brokers[b];
                broker.up = false;
                broker.down_until = tick + 10 + self.rng.below(80);
                self.trace.line(format!("t{tick} broker {} crashes", broker.id));
            }
            if !self.brokers[b].up && self.brokers[b].down_until <= tick {
                let incarnation = Uuid::from_u128(u128::from(self.rng.next_u64()));
                let broker = &mut self.brokers[b];
                *broker = SimBroker { up: true, incarnation, epoch: None, fenced: true, next_contact: tick, ..*broker };
                self.trace.line(format!("t{tick} broker {} starts", broker.id));
            }
            if !self.brokers[b].up || self.brokers[b].next_contact > tick || self.rng.below(1000) < self.drop_per_mille
            {
                continue;
            }
            self.brokers[b].next_contact = tick + BROKER_HEARTBEAT_TICKS;
            let Some(i) = self.leader_index() else { continue };
            let offset = self.voters[i].controller.as_ref().expect("running").image().offset;
            let broker = &self.brokers[b];
            let request = match broker.epoch {
                None => ControllerRequest::RegisterBroker {
                    broker_id: broker.id,
                    incarnation_id: broker.incarnation,
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: format!("127.0.0.{}", broker.id - 99),
                        port: 9092,
                        security_protocol: "PLAINTEXT".into(),
                    }],
                    rack: None,
                },
                Some(broker_epoch) => ControllerRequest::Heartbeat {
                    broker_id: broker.id,
                    broker_epoch,
                    metadata_offset: offset,
                    want_fence: false,
                    want_shutdown: false,
                },
            };
            self.request(i, request, Pending::Broker(b))?;
        }
        Ok(())
    }

    fn check_leaders(&mut self) -> Result<(), String> {
        for voter in &self.voters {
            let Some(quorum) = voter.controller.as_ref().map(Controller::quorum).filter(|q| q.is_leader()) else {
                continue;
            };
            let term = quorum.term();
            match self.leaders.get(&term) {
                Some(&other) if other != voter.id => {
                    return Err(format!("two leaders in term {term}: {other} and {}", voter.id));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, voter.id);
                }
            }
        }
        Ok(())
    }

    fn check_image(&mut self, i: usize) -> Result<(), String> {
        let image = self.voters[i].controller.as_ref().map(Controller::quorum).expect("running").image().clone();
        if image.offset == 0 {
            return Ok(());
        }
        match self.images.get(&image.offset) {
            Some(known) if **known != *image => Err(format!(
                "node {}'s image at offset {} differs from another node's: a committed entry changed",
                i + 1,
                image.offset
            )),
            Some(_) => Ok(()),
            None => {
                // A later image keeps every acknowledged topic before it.
                for (name, offset) in &self.acknowledged {
                    if *offset <= image.offset && image.topic(name).is_none() {
                        return Err(format!("node {}'s image at {} lost acknowledged {name}", i + 1, image.offset));
                    }
                }
                self.check_partitions(&image)?;
                self.images.insert(image.offset, image);
                Ok(())
            }
        }
    }

    /// The controller's rules in a new image: a partition's leader is an
    /// unfenced broker in its ISR (a broker is fenced only after its
    /// partitions got new leaders), a new leader of a topic without
    /// `unclean.leader.election.enable` comes from the ISR or ELR, leader
    /// epochs only increase, and no two brokers lead one partition in one
    /// epoch.
    fn check_partitions(&mut self, image: &MetadataImage) -> Result<(), String> {
        let before = self.images.range(..image.offset).next_back().map(|(_, i)| i.clone());
        let after = self.images.range(image.offset + 1..).next().map(|(_, i)| i.clone());
        for topic in image.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.leader != NO_LEADER && image.brokers.get(&p.leader).is_none_or(|b| b.fenced) {
                    return Err(format!(
                        "image {}: {}-{index} is led by broker {}, which is fenced or unknown",
                        image.offset, topic.name, p.leader
                    ));
                }
                if p.leader != NO_LEADER && !p.isr.contains(&p.leader) {
                    return Err(format!(
                        "image {}: {}-{index}'s leader is not in its ISR {:?}",
                        image.offset, topic.name, p.isr
                    ));
                }
                // A clean election picks a replica from the ISR or ELR, and
                // their union only shrinks, so the leader was in it in every
                // earlier image: no acknowledged record is lost to it.
                let unclean = image
                    .configs
                    .get(&(ConfigResource::Topic, topic.name.clone()))
                    .is_some_and(|c| c.get("unclean.leader.election.enable").is_some_and(|v| v == "true"));
                let earlier = before.as_ref().and_then(|b| b.partition(topic.topic_id, index as i32));
                if let Some(q) = earlier.filter(|q| !unclean && p.leader != NO_LEADER && q.leader != p.leader) {
                    if !q.isr.contains(&p.leader) && !q.elr.contains(&p.leader) {
                        return Err(format!(
                            "image {}: {}-{index} elected {} uncleanly (earlier ISR {:?}, ELR {:?})",
                            image.offset, topic.name, p.leader, q.isr, q.elr
                        ));
                    }
                }
                match self.epoch_leaders.insert((topic.topic_id, index, p.leader_epoch), p.leader) {
                    Some(other) if other != p.leader => {
                        return Err(format!(
                            "{}-{index} has leaders {other} and {} in leader epoch {}",
                            topic.name, p.leader, p.leader_epoch
                        ));
                    }
                    _ => {}
                }
                let epoch_in = |other: &Option<Arc<MetadataImage>>| {
                    other.as_ref().and_then(|o| o.partition(topic.topic_id, index as i32)).map(|q| q.leader_epoch)
                };
                if epoch_in(&before).is_some_and(|e| e > p.leader_epoch)
                    || epoch_in(&after).is_some_and(|e| e < p.leader_epoch)
                {
                    return Err(format!(
                        "{}-{index}'s leader epoch went backwards around offset {}",
                        topic.name, image.offset
                    ));
                }
            }
        }
        if let Some(before) = &before {
            self.fencings += image
                .brokers
                .values()
                .filter(|b| {
                    b.fenced
                        && before
                            .brokers
                            .get(&b.broker_id)
                            .is_some_and(|o| !o.fenced && o.broker_epoch == b.broker_epoch)
                })
                .count() as u64;
        }
        Ok(())
    }

    /// Heals the network, restarts every node, and runs until a new
    /// proposal is acknowledged and every node reaches the leader's image.
    fn heal_and_converge(&mut self) -> Result<u64, String> {
        self.partition = None;
        self.drop_per_mille = 0;
        self.faults_on = false;
        for broker in &mut self.brokers {
            broker.down_until = broker.down_until.min(self.tick);
        }
        self.trace.line(format!("t{} heal: no more faults", self.tick));
        for i in 0..self.voters.len() {
            if self.voters[i].controller.is_none() {
                self.start(i)?;
            }
        }
        let healed_at = self.tick;
        let acknowledged_before = self.acknowledged.len();
        while self.tick < healed_at + LIVENESS_TICKS {
            self.step()?;
            if self.acknowledged.len() == acknowledged_before {
                if self.tick.is_multiple_of(5) {
                    self.propose()?;
                }
                continue;
            }
            let offsets: BTreeSet<u64> = self
                .voters
                .iter()
                .map(|v| v.controller.as_ref().map(Controller::quorum).expect("running").image().offset)
                .collect();
            let leader_commit = self
                .voters
                .iter()
                .filter_map(|v| v.controller.as_ref().map(Controller::quorum))
                .find(|q| q.is_leader())
                .map(|q| q.commit_index());
            let served = self.leader_index().is_some_and(|i| {
                let image = self.voters[i].controller.as_ref().expect("running").image().clone();
                image.live_brokers().count() == self.brokers.len()
                    && image.topics.values().all(|t| t.partitions.iter().all(|p| p.leader != NO_LEADER))
            });
            if offsets.len() == 1 && leader_commit == offsets.first().copied() && served {
                return Ok(self.tick - healed_at);
            }
        }
        let states: Vec<String> = self
            .voters
            .iter()
            .map(|v| {
                let q = v.controller.as_ref().map(Controller::quorum).expect("running");
                format!(
                    "node {}: image {} commit {} last {} term {} leader {}",
                    v.id,
                    q.image().offset,
                    q.commit_index(),
                    q.last_index(),
                    q.term(),
                    q.leader()
                )
            })
            .collect();
        Err(format!(
            "liveness: no converged quorum within {LIVENESS_TICKS} ticks after the network healed ({})",
            states.join("; ")
        ))
    }
}
