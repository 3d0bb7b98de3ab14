//! The controller core: one thread of a controller node that owns its
//! sans-IO [`Controller`] (and the quorum under it), the metadata log's
//! files, the tick, and the links to the other voters. Requests come in
//! from any shard through a [`ControllerHandle`] (or from another node,
//! over the controller listener) and are answered once what they changed
//! is committed and applied; a node that does not lead forwards its own
//! shards' requests to the active controller. Every new committed image is
//! published to whoever follows the log on this node ([`Published`]). Its
//! blocking file IO (append, fdatasync, snapshot rename) happens on this
//! thread, never on a shard's reactor.
//!
//! Order of effects, per poll: the quorum's actions run in order (a log
//! append is durable before any message after it leaves), then the image
//! is published, then replies go out, so a reply never runs ahead of the
//! image that makes it true.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::channel::oneshot;
use shardline_engine::runtime::clock::{monotonic_now, Clock, SystemClock};
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest, RequestId};
use shardline_replication::controller::{Controller, ControllerSettings};
use shardline_replication::metadata::image::MetadataImage;
use shardline_replication::node::Voter;
use shardline_replication::quorum::{Quorum, QuorumAction, QuorumConfig};

use super::messages::CoreInput;
pub use super::messages::{node_of_raft, raft_id, ControllerAnswer};
use super::metadata_log::MetadataLogFiles;
use super::transport::{self, answer_remote, canonical_voters, Hello, Outbound, PeerLinks};
use crate::config::BrokerConfig;

/// The controller's tick: the quorum's logical clock and lease checks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before the first voter stands for election;
/// each voter waits a different number (see [`election_ticks`]).
const ELECTION_TICKS: usize = 10;
/// Ticks between the leader's heartbeats to the other voters.
const HEARTBEAT_TICKS: usize = 2;
/// Inputs taken before the controller is polled (one batch of metadata).
const INPUTS_PER_POLL: usize = 1024;
/// How long a request forwarded to the active controller waits for its
/// answer before its caller hears "not controller" and retries.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// The election timeout of a voter, in ticks: pinned per node (raft-rs
/// draws it at random otherwise), spread so two voters rarely stand at
/// once.
pub fn election_ticks(node_id: i32) -> usize {
    ELECTION_TICKS + 3 * (node_id.unsigned_abs() as usize % 4)
}

/// The quorum as this node sees it, for DescribeQuorum and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The leader's node id, or -1.
    pub leader: i32,
    /// The current term (Kafka's leader epoch of the quorum).
    pub term: u64,
    /// The last index in this node's log.
    pub last_index: u64,
    /// The commit index (the quorum's high watermark).
    pub commit_index: u64,
    /// Each voter's node id and its matched index, as the leader knows it.
    pub voters: Vec<(i32, u64)>,
}

/// What the controller core publishes for this node to follow: the newest
/// committed image and the quorum's status. Read by any shard.
#[derive(Debug, Default)]
pub struct Published {
    image: ArcSwap<MetadataImage>,
    status: ArcSwap<QuorumStatus>,
    watchers: Mutex<Vec<futures::channel::mpsc::Sender<()>>>,
    refused: Mutex<Option<String>>,
}

impl Published {
    /// The newest committed image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// The quorum's status as last polled.
    pub fn status(&self) -> Arc<QuorumStatus> {
        self.status.load_full()
    }

    /// A stream that yields whenever a new image is published (changes
    /// that come meanwhile are coalesced: read [`Self::image`]).
    pub fn watch(&self) -> futures::channel::mpsc::Receiver<()> {
        let (tx, rx) = futures::channel::mpsc::channel(1);
        self.watchers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Why another voter refused this node's handshake, if one did (the
    /// start stops with it before the node has joined the quorum).
    pub fn refusal(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refuse(&self, reason: String) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    fn publish(&self, image: Arc<MetadataImage>) {
        self.image.store(image);
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // A full channel already has a wake-up pending; a closed one is dropped.
        watchers.retain_mut(|w| !matches!(w.try_send(()), Err(e) if e.is_disconnected()));
    }
}

/// How shards reach the controller core. Cheap to clone; `Send`.
#[derive(Clone, Debug)]
pub struct ControllerHandle {
    inputs: Sender<CoreInput>,
    published: Arc<Published>,
}

impl ControllerHandle {
    /// Sends a request and waits for its answer: from this node's
    /// controller when it leads, from the active controller it forwards
    /// to otherwise. A stopped controller, or one that knows no leader,
    /// answers `NotController`.
    pub async fn ask(&self, request: ControllerRequest) -> ControllerAnswer {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(CoreInput::Local(request, tx)).is_err() {
            return ControllerAnswer::not_controller();
        }
        rx.await.unwrap_or_else(|_| ControllerAnswer::not_controller())
    }

    /// What the controller core publishes.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }
}

/// The running controller core.
#[derive(Debug)]
pub struct ControllerCore {
    handle: ControllerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: Arc<AtomicBool>,
}

/// The controller settings of a broker configuration.
pub fn controller_settings(config: &BrokerConfig) -> ControllerSettings {
    ControllerSettings {
        session_timeout_ms: config.broker_session_timeout_ms,
        auto_leader_rebalance: config.auto_leader_rebalance_enable,
        leader_imbalance_check_interval_ms: config.leader_imbalance_check_interval_seconds * 1000,
        min_insync_replicas: 1,
        unclean_leader_election: false,
        producer_id_block: 1000,
        // Replication of partition data comes with the replication layer.
        max_replication_factor: 1,
        default_partitions: config.num_partitions,
        default_replication_factor: i32::from(config.default_replication_factor),
        ..ControllerSettings::default()
    }
}

impl ControllerCore {
    /// Opens the metadata log under the data directory, binds the
    /// controller listener (with other voters), and starts the controller
    /// thread. A quorum of one voter elects itself at once.
    pub fn start(config: &BrokerConfig, voters: &[Voter], cluster_id: &str) -> std::io::Result<ControllerCore> {
        let me = voters.iter().find(|v| v.id == config.node_id).cloned();
        let me = me.ok_or_else(|| std::io::Error::other(format!("node {} is not a voter", config.node_id)))?;
        let (inputs, rx) = std::sync::mpsc::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let hello =
            Hello { cluster_id: cluster_id.to_string(), node_id: config.node_id, voters: canonical_voters(voters) };
        let links = if voters.len() > 1 {
            transport::listen(&format!("{}:{}", me.host, me.port), hello.clone(), inputs.clone(), stopped.clone())?;
            PeerLinks::start(voters, &hello, &inputs, &stopped)
        } else {
            PeerLinks::default()
        };
        let (files, recovered) = MetadataLogFiles::open(&config.data_dir)?;
        let incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
        let quorum_config = QuorumConfig {
            node_id: raft_id(config.node_id),
            voters: voters.iter().map(|v| raft_id(v.id)).collect(),
            election_ticks: election_ticks(config.node_id),
            heartbeat_ticks: HEARTBEAT_TICKS,
            snapshot_every_entries: config.metadata_snapshot_entries,
            entries_kept_behind_snapshot: config.metadata_snapshot_entries / 10,
            incarnation,
        };
        let single = quorum_config.voters == [quorum_config.node_id];
        let quorum = Quorum::open(quorum_config, recovered)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("metadata log: {e}")))?;
        let mut controller = Controller::new(quorum, controller_settings(config), incarnation.rotate_left(29));
        if single {
            controller.quorum_mut().campaign();
        }
        let published = Arc::new(Published::default());
        published.image.store(controller.image().clone());
        let handle = ControllerHandle { inputs, published: published.clone() };
        let thread = std::thread::Builder::new().name("controller".into()).spawn(move || {
            let mut core = CoreLoop {
                controller,
                files,
                published,
                links,
                pending: HashMap::new(),
                forwards: HashMap::new(),
                next_id: 1,
                heard: HashMap::new(),
            };
            core.run(rx);
        })?;
        Ok(ControllerCore { handle, thread: Some(thread), stopped })
    }

    /// The handle shards use.
    pub fn handle(&self) -> &ControllerHandle {
        &self.handle
    }

    /// Stops the thread after what it holds is answered.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.handle.inputs.send(CoreInput::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControllerCore {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Where an answer goes.
enum Responder {
    /// A shard of this node.
    Local(oneshot::Sender<ControllerAnswer>),
    /// Another node that forwarded the request, on its connection.
    Remote(Arc<Mutex<TcpStream>>, u64),
}

impl Responder {
    fn answer(self, answer: ControllerAnswer) {
        match self {
            Responder::Local(sender) => {
                let _ = sender.send(answer);
            }
            Responder::Remote(link, id) => answer_remote(&link, id, answer),
        }
    }
}

/// A request this node forwarded to the active controller.
struct Forward {
    voter: u64,
    deadline: Instant,
    responder: Responder,
}

struct CoreLoop {
    controller: Controller,
    files: MetadataLogFiles,
    published: Arc<Published>,
    links: PeerLinks,
    pending: HashMap<RequestId, Responder>,
    forwards: HashMap<u64, Forward>,
    next_id: RequestId,
    /// Per voter (raft id), when this node last heard an answer from it
    /// and when it last held the whole log, in ms since the epoch (as the
    /// leader; for DescribeQuorum).
    heard: HashMap<u64, (i64, i64)>,
}

impl CoreLoop {
    fn run(&mut self, rx: Receiver<CoreInput>) {
        let started = monotonic_now();
        let now_ms = |started: Instant| started.elapsed().as_millis() as i64;
        let mut next_tick = monotonic_now() + TICK;
        // What opening made ready (a one-voter quorum's election) runs now.
        self.poll();
        loop {
            let wait = next_tick.saturating_duration_since(monotonic_now());
            let mut stop = false;
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    stop |= self.take(now_ms(started), input);
                    for _ in 1..INPUTS_PER_POLL {
                        match rx.try_recv() {
                            Ok(input) => stop |= self.take(now_ms(started), input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            if monotonic_now() >= next_tick {
                self.controller.tick(now_ms(started));
                self.expire_forwards();
                next_tick = monotonic_now() + TICK;
            }
            self.poll();
            if stop {
                break;
            }
        }
        for (_, responder) in self.pending.drain() {
            responder.answer(ControllerAnswer::not_controller());
        }
        for (_, forward) in self.forwards.drain() {
            forward.responder.answer(ControllerAnswer::not_controller());
        }
    }

    /// Takes one input; whether it asks the core to stop.
    fn take(&mut self, now_ms: i64, input: CoreInput) -> bool {
        match input {
            CoreInput::Local(request, reply) => self.request(now_ms, request, Responder::Local(reply)),
            CoreInput::Remote { request, link, id } => self.request(now_ms, request, Responder::Remote(link, id)),
            CoreInput::Peer(message) => {
                let from = message.from;
                let answer = matches!(
                    message.get_msg_type(),
                    raft::eraftpb::MessageType::MsgAppendResponse | raft::eraftpb::MessageType::MsgHeartbeatResponse
                ) && !message.reject;
                self.controller.quorum_mut().step(message);
                if answer {
                    self.note_answer(from);
                }
            }
            CoreInput::ForwardAnswer { forward_id, answer } => {
                if let Some(forward) = self.forwards.remove(&forward_id) {
                    forward.responder.answer(answer);
                }
            }
            CoreInput::Unreachable(voter) => {
                self.controller.quorum_mut().report_unreachable(voter);
                let lost: Vec<u64> =
                    self.forwards.iter().filter(|(_, f)| f.voter == voter).map(|(id, _)| *id).collect();
                for id in lost {
                    if let Some(forward) = self.forwards.remove(&id) {
                        forward.responder.answer(ControllerAnswer::not_controller());
                    }
                }
            }
            CoreInput::SnapshotSent { voter, delivered } => {
                self.controller.quorum_mut().report_snapshot(voter, delivered)
            }
            CoreInput::Refused(reason) => self.published.refuse(reason),
            CoreInput::Stop => return true,
        }
        false
    }

    /// A request: answered here when this node leads (or refuses it);
    /// a local request is forwarded to the leader this node knows.
    fn request(&mut self, now_ms: i64, request: ControllerRequest, responder: Responder) {
        let id = self.next_id;
        self.next_id += 1;
        let kept = matches!(responder, Responder::Local(_)).then(|| request.clone());
        let me = self.controller.quorum().node_id();
        match (self.controller.handle(now_ms, id, request), kept) {
            (None, _) => {
                self.pending.insert(id, responder);
            }
            (Some(ControllerReply::Refused(ControllerError::NotController { leader })), Some(request))
                if leader != 0 && leader != me =>
            {
                let forward_id = id;
                if self.links.send(leader, Outbound::Request { forward_id, request }) {
                    let deadline = monotonic_now() + FORWARD_TIMEOUT;
                    self.forwards.insert(forward_id, Forward { voter: leader, deadline, responder });
                } else {
                    responder.answer(ControllerAnswer::not_controller());
                }
            }
            (Some(reply), _) => {
                let offset = self.controller.image().offset;
                responder.answer(ControllerAnswer { reply: self.with_times(reply), offset });
            }
        }
    }

    /// Notes that voter `from` answered the leader, and whether it holds
    /// the whole log now.
    fn note_answer(&mut self, from: u64) {
        let now = SystemClock.now_ms();
        let quorum = self.controller.quorum();
        let last = quorum.last_index();
        let caught_up = quorum.voter_progress().iter().any(|(id, matched)| *id == from && *matched >= last);
        let entry = self.heard.entry(from).or_insert((-1, -1));
        entry.0 = now;
        if caught_up {
            entry.1 = now;
        }
    }

    /// A DescribeQuorum answer with the times this node heard its voters.
    fn with_times(&self, reply: ControllerReply) -> ControllerReply {
        let ControllerReply::Quorum(mut report) = reply else { return reply };
        let now = SystemClock.now_ms();
        for voter in &mut report.voters {
            let (fetched, caught_up) = if voter.id == report.leader {
                (now, now)
            } else {
                self.heard.get(&voter.id).copied().unwrap_or((-1, -1))
            };
            voter.last_fetch_ms = fetched;
            voter.last_caught_up_ms = caught_up;
        }
        ControllerReply::Quorum(report)
    }

    /// Answers forwards whose active controller never answered.
    fn expire_forwards(&mut self) {
        let now = monotonic_now();
        let expired: Vec<u64> = self.forwards.iter().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(forward) = self.forwards.remove(&id) {
                forward.responder.answer(ControllerAnswer::not_controller());
            }
        }
    }

    fn poll(&mut self) {
        let output = match self.controller.poll() {
            Ok(output) => output,
            Err(error) => fail(&format!("the metadata quorum failed: {error}")),
        };
        let before = self.published.image().offset;
        for action in output.actions {
            match action {
                QuorumAction::AppendLog(bytes) => {
                    if let Err(error) = self.files.append(&bytes) {
                        fail(&format!("appending to the metadata log: {error}"));
                    }
                }
                QuorumAction::ReplaceSnapshot { snapshot, log } => {
                    if let Err(error) = self.files.replace(&snapshot, &log) {
                        fail(&format!("writing a metadata snapshot: {error}"));
                    }
                }
                QuorumAction::Send(message) => {
                    let to = message.to;
                    let snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
                    if !self.links.send(to, Outbound::Raft(message)) {
                        let quorum = self.controller.quorum_mut();
                        quorum.report_unreachable(to);
                        if snapshot {
                            quorum.report_snapshot(to, false);
                        }
                    }
                }
                QuorumAction::LeaderChanged { leader, term } => {
                    self.heard.clear();
                    tracing::info!(leader = node_of_raft(leader), term, "metadata quorum leader");
                }
                QuorumAction::Applied { .. } | QuorumAction::ImageReplaced { .. } => {}
            }
        }
        let quorum = self.controller.quorum();
        let status = QuorumStatus {
            leader: node_of_raft(quorum.leader()),
            term: quorum.term(),
            last_index: quorum.last_index(),
            commit_index: quorum.commit_index(),
            voters: quorum.voter_progress().into_iter().map(|(id, matched)| (node_of_raft(id), matched)).collect(),
        };
        if **self.published.status.load() != status {
            self.published.status.store(Arc::new(status));
        }
        let image = self.controller.image().clone();
        if image.offset != before {
            self.published.publish(image.clone());
        }
        for (id, reply) in output.replies {
            if let Some(responder) = self.pending.remove(&id) {
                responder.answer(ControllerAnswer { reply, offset: image.offset });
            }
        }
    }
}

/// A metadata log that cannot be written: the node stops rather than
/// answer from state it could not make durable (as Kafka halts on a
/// failed metadata log directory). Restart recovers from what is on disk.
fn fail(message: &str) -> ! {
    tracing::error!("{message}: stopping the node");
    std::process::exit(70);
}
