//! The controller core: one thread of a controller node that owns its
//! sans-IO [`Controller`] (and the quorum under it), the metadata log's
//! files, and the tick. Requests come in from any shard through a
//! [`ControllerHandle`] and are answered once what they changed is
//! committed and applied; every new committed image is published to
//! whoever follows the log on this node ([`Published`]). Its blocking file
//! IO (append, fdatasync, snapshot rename) happens on this thread, never
//! on a shard's reactor.
//!
//! Order of effects, per poll: the quorum's actions run in order (log
//! appends are durable before anything after them), then the image is
//! published, then replies go out, so a reply never runs ahead of the
//! image that makes it true.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::channel::oneshot;
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest, RequestId};
use shardline_replication::controller::{Controller, ControllerSettings};
use shardline_replication::metadata::image::MetadataImage;
use shardline_replication::quorum::{Quorum, QuorumAction, QuorumConfig};

use super::metadata_log::MetadataLogFiles;
use crate::config::BrokerConfig;

/// The controller's tick: the quorum's logical clock and lease checks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before a voter stands for election.
const ELECTION_TICKS: usize = 10;
/// Ticks between the leader's heartbeats to the other voters.
const HEARTBEAT_TICKS: usize = 2;
/// Inputs taken before the controller is polled (one batch of metadata).
const INPUTS_PER_POLL: usize = 1024;

/// The raft id of a Kafka node id (raft-rs reserves 0).
pub fn raft_id(node_id: i32) -> u64 {
    u64::try_from(node_id).expect("node ids are not negative") + 1
}

/// The Kafka node id of a raft id (`-1` for none).
pub fn node_of_raft(raft_id: u64) -> i32 {
    if raft_id == 0 {
        -1
    } else {
        i32::try_from(raft_id - 1).unwrap_or(-1)
    }
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

    fn publish(&self, image: Arc<MetadataImage>) {
        self.image.store(image);
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // A full channel already has a wake-up pending; a closed one is dropped.
        watchers.retain_mut(|w| !matches!(w.try_send(()), Err(e) if e.is_disconnected()));
    }
}

/// A reply and the image offset it holds at.
#[derive(Debug, Clone)]
pub struct ControllerAnswer {
    /// The reply.
    pub reply: ControllerReply,
    /// The offset of the published image when the reply was sent: the
    /// change it reports is in every image from there on.
    pub offset: u64,
}

enum Input {
    Request(ControllerRequest, oneshot::Sender<ControllerAnswer>),
    Stop,
}

/// How shards reach the controller core. Cheap to clone; `Send`.
#[derive(Clone, Debug)]
pub struct ControllerHandle {
    inputs: Sender<Input>,
    published: Arc<Published>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Request(request, _) => f.debug_tuple("Request").field(request).finish(),
            Input::Stop => f.write_str("Stop"),
        }
    }
}

impl ControllerHandle {
    /// Sends a request and waits for its answer. A stopped controller
    /// answers `NotController`.
    pub async fn ask(&self, request: ControllerRequest) -> ControllerAnswer {
        let (tx, rx) = oneshot::channel();
        let stopped = ControllerAnswer {
            reply: ControllerReply::Refused(ControllerError::NotController { leader: 0 }),
            offset: 0,
        };
        if self.inputs.send(Input::Request(request, tx)).is_err() {
            return stopped;
        }
        rx.await.unwrap_or(stopped)
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
}

/// The controller settings of a broker configuration.
pub fn controller_settings(config: &BrokerConfig) -> ControllerSettings {
    ControllerSettings {
        session_timeout_ms: config.broker_session_timeout_ms,
        min_insync_replicas: 1,
        unclean_leader_election: false,
        producer_id_block: 1000,
        // Replication of partition data comes with the replication layer.
        max_replication_factor: 1,
        default_partitions: config.num_partitions,
        default_replication_factor: i32::from(config.default_replication_factor),
    }
}

impl ControllerCore {
    /// Opens the metadata log under the data directory and starts the
    /// controller thread. A quorum of one voter elects itself at once.
    pub fn start(config: &BrokerConfig, voters: Vec<i32>) -> std::io::Result<ControllerCore> {
        let (files, recovered) = MetadataLogFiles::open(&config.data_dir)?;
        let incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
        let quorum_config = QuorumConfig {
            node_id: raft_id(config.node_id),
            voters: voters.iter().map(|v| raft_id(*v)).collect(),
            election_ticks: ELECTION_TICKS,
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
        let (inputs, rx) = std::sync::mpsc::channel();
        let handle = ControllerHandle { inputs, published: published.clone() };
        let thread = std::thread::Builder::new().name("controller".into()).spawn(move || {
            let mut core = CoreLoop { controller, files, published, pending: HashMap::new(), next_id: 1 };
            core.run(rx);
        })?;
        Ok(ControllerCore { handle, thread: Some(thread) })
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
        let _ = self.handle.inputs.send(Input::Stop);
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

struct CoreLoop {
    controller: Controller,
    files: MetadataLogFiles,
    published: Arc<Published>,
    pending: HashMap<RequestId, oneshot::Sender<ControllerAnswer>>,
    next_id: RequestId,
}

impl CoreLoop {
    fn run(&mut self, rx: Receiver<Input>) {
        let started = Instant::now();
        let now_ms = |started: Instant| started.elapsed().as_millis() as i64;
        let mut next_tick = Instant::now() + TICK;
        // What opening made ready (a one-voter quorum's election) runs now.
        self.poll();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
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
            if Instant::now() >= next_tick {
                self.controller.tick(now_ms(started));
                next_tick = Instant::now() + TICK;
            }
            self.poll();
            if stop {
                break;
            }
        }
        let refusal = ControllerReply::Refused(ControllerError::NotController { leader: 0 });
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(ControllerAnswer { reply: refusal.clone(), offset: 0 });
        }
    }

    /// Takes one input; whether it asks the core to stop.
    fn take(&mut self, now_ms: i64, input: Input) -> bool {
        match input {
            Input::Request(request, reply) => {
                let id = self.next_id;
                self.next_id += 1;
                match self.controller.handle(now_ms, id, request) {
                    Some(answer) => {
                        let offset = self.controller.image().offset;
                        let _ = reply.send(ControllerAnswer { reply: answer, offset });
                    }
                    None => {
                        self.pending.insert(id, reply);
                    }
                }
                false
            }
            Input::Stop => true,
        }
    }

    fn poll(&mut self) {
        let output = match self.controller.poll() {
            Ok(output) => output,
            Err(error) => fail(&format!("the metadata quorum failed: {error}")),
        };
        let before = self.published.image().offset;
        for action in &output.actions {
            match action {
                QuorumAction::AppendLog(bytes) => {
                    if let Err(error) = self.files.append(bytes) {
                        fail(&format!("appending to the metadata log: {error}"));
                    }
                }
                QuorumAction::ReplaceSnapshot { snapshot, log } => {
                    if let Err(error) = self.files.replace(snapshot, log) {
                        fail(&format!("writing a metadata snapshot: {error}"));
                    }
                }
                QuorumAction::Send(message) => {
                    // Only a one-voter quorum runs in this build: nobody to send to.
                    debug_assert!(false, "a message to voter {} with no transport", message.to);
                }
                QuorumAction::LeaderChanged { leader, term } => {
                    tracing::info!(leader = node_of_raft(*leader), term, "metadata quorum leader");
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
            if let Some(sender) = self.pending.remove(&id) {
                let _ = sender.send(ControllerAnswer { reply, offset: image.offset });
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
