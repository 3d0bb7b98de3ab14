//! Starting and stopping the broker: shards (one pinned executor per core),
//! a SO_REUSEPORT listener per shard, partitions opened on their owning
//! shards, the background timers, and a clean shutdown that answers
//! in-flight requests and closes every partition.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use compio::net::TcpListener;
use futures::StreamExt;
use shardline_engine::runtime::clock::{system_clock, timeout};
use shardline_engine::runtime::mesh::Mesh;
use shardline_engine::runtime::pool::ShardPool;
use shardline_engine::storage::priority_write::set_append_priority;
use shardline_replication::node::MetaProperties;

use crate::cluster::bootstrap::bootstrap;
use crate::cluster::controller_core::{ControllerCore, ControllerHandle};
use crate::cluster::local_view::local_view;
use crate::cluster::member::{announce_shutdown, follow_log, keep_membership};
use crate::cluster::member_state::MemberState;
use crate::config::BrokerConfig;
use crate::registry::partition_dir;
use crate::server::connection::{serve_connection, ConnectionContext};
use crate::server::limits::{ConnectionLimits, Refused};
use crate::server::log_limit::LogLimit;
use crate::server::timers::spawn_timers;
use crate::shard::{BrokerShared, ShardState};
use crate::topics::{log_config_for, TopicStore};

/// A running broker.
pub struct Broker {
    pool: ShardPool<ShardState>,
    shared: Arc<BrokerShared>,
    /// The address the listeners bound (useful with port 0).
    pub local_addr: SocketAddr,
    controller: ControllerCore,
    _data_dir_lock: std::fs::File,
}

/// How long a start waits for this node's controller to lead its quorum
/// and for the broker to be unfenced.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the quorum has a leader and this node has applied what it
/// knows to be committed (a one-voter quorum elects itself at once; a
/// voter of several waits for a majority to be up). A voter that refused
/// this node's handshake (another cluster, other voters) stops the start
/// with its reason.
pub(super) fn wait_for_quorum(controller: &ControllerHandle) -> Result<(), String> {
    let deadline = shardline_engine::runtime::clock::monotonic_now() + JOIN_TIMEOUT;
    let mut said = false;
    loop {
        if let Some(reason) = controller.published().refusal() {
            return Err(format!("another controller refused this node: {reason}"));
        }
        let status = controller.published().status();
        let image = controller.published().image();
        if status.leader >= 0 && status.commit_index > 0 && image.offset >= status.commit_index {
            return Ok(());
        }
        if shardline_engine::runtime::clock::monotonic_now() >= deadline {
            return Err(format!(
                "the metadata quorum elected no leader within {} s (are a majority of the voters up?)",
                JOIN_TIMEOUT.as_secs()
            ));
        }
        if !said && shardline_engine::runtime::clock::monotonic_now() + JOIN_TIMEOUT - Duration::from_secs(5) > deadline
        {
            said = true;
            tracing::info!("waiting for the metadata quorum to elect a leader");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Brings this broker's view of its topics up to the committed image
/// before any shard opens a partition: the placement of every hosted
/// partition, persisted.
fn apply_at_start(
    topics: &TopicStore,
    controller: &ControllerHandle,
    node_id: i32,
    shards: usize,
) -> std::io::Result<()> {
    let cluster = controller.published().image();
    let (view, _) = local_view(&cluster, &topics.image(), node_id, shards);
    topics.persist(&view)?;
    topics.publish(view);
    topics.mark_applied(cluster.offset);
    Ok(())
}

/// What `meta.properties` in the data directory says, checked against the
/// configuration before anything on disk changes: a directory formatted
/// for another cluster or node is refused with a message naming both.
pub(super) fn check_meta_properties(config: &BrokerConfig) -> std::io::Result<Option<MetaProperties>> {
    let path = config.data_dir.join("meta.properties");
    let dir = config.data_dir.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let refused = |e: shardline_replication::node::NodeError| std::io::Error::other(e.to_string());
    let meta = MetaProperties::parse(&text, &dir).map_err(refused)?;
    let expected = config.expected_cluster_id().map_err(std::io::Error::other)?;
    meta.check(config.node_id, expected.as_deref(), &dir).map_err(refused)?;
    Ok(Some(meta))
}

/// The cluster id: the data directory's, or (first start) the configured
/// one or a fresh one, written to `meta.properties`.
pub(super) fn format_data_dir(config: &BrokerConfig, existing: Option<MetaProperties>) -> std::io::Result<String> {
    if let Some(meta) = existing {
        return Ok(meta.cluster_id);
    }
    let cluster_id = match config.expected_cluster_id().map_err(std::io::Error::other)? {
        Some(id) => id,
        None => uuid::Uuid::new_v4().simple().to_string()[..22].to_string(),
    };
    let meta = MetaProperties { cluster_id: cluster_id.clone(), node_id: config.node_id };
    std::fs::write(config.data_dir.join("meta.properties"), meta.to_text())?;
    tracing::info!(cluster_id = %cluster_id, node_id = config.node_id, "formatted the data directory");
    Ok(cluster_id)
}

/// Fails when another process listens on `addr`: SO_REUSEPORT would let a
/// second broker share the port silently, so probe with a plain bind first.
fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = std::net::TcpListener::bind(addr)?;
    drop(probe);
    Ok(())
}

/// Descriptors the broker needs besides segment files: listeners, io_uring,
/// coordinator and metadata files, a margin for connections.
const OTHER_DESCRIPTORS: u64 = 1024;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the segment file
/// budget and connections take descriptors), and warns when the budget of
/// every shard would not fit in it.
fn raise_open_file_limit(config: &BrokerConfig) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let wanted = (config.shard_count() * config.open_files_per_shard) as u64 + OTHER_DESCRIPTORS;
    if limit.rlim_cur < wanted {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-file limit is below shards x open_files_per_shard plus a margin: lower open_files_per_shard or raise ulimit -n"
        );
    }
}

/// Takes an exclusive lock on the data directory for the broker's lifetime,
/// so two brokers never share one.
pub(super) fn lock_data_dir(config: &BrokerConfig) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(config.data_dir.join(".lock"))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "data directory {} is in use by another broker",
            config.data_dir.display()
        )));
    }
    Ok(file)
}

/// A listener on `addr` with SO_REUSEPORT, so every shard can bind the same
/// address and the kernel spreads connections.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Broker {
    /// Validates the configuration, prepares the data directory and starts
    /// every shard. Returns once all shards listen.
    pub fn start(mut config: BrokerConfig) -> Result<Broker, Box<dyn std::error::Error>> {
        config.validate()?;
        // Resolve "one per core" once, here: inside a pinned shard thread the
        // available parallelism is 1.
        config.shards = config.shard_count();
        let formatted = check_meta_properties(&config)?;
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir_lock = lock_data_dir(&config)?;
        if !config.test_sync_ledger.is_empty() {
            shardline_engine::storage::sync_ledger::install(std::path::Path::new(&config.test_sync_ledger))?;
            tracing::warn!(ledger = %config.test_sync_ledger, "test mode: recording every file's durable length");
        }
        ensure_port_free(config.listen_addr()?)?;
        raise_open_file_limit(&config);
        let cluster_id = format_data_dir(&config, formatted)?;
        let topics = TopicStore::load(&config.data_dir)?;
        let shards = config.shard_count();
        let voters = config.voters()?;
        let controller = ControllerCore::start(&config, &voters, &cluster_id)?;
        wait_for_quorum(controller.handle())?;
        let next_producer_id = crate::producer_ids::legacy_next_id(&config.data_dir)?;
        futures::executor::block_on(bootstrap(controller.handle(), &topics.image(), config.node_id, next_producer_id))?;
        apply_at_start(&topics, controller.handle(), config.node_id, shards)?;
        remove_stray_partitions(&config, &topics)?;
        rebalance_shards(&config, &topics, shards)?;
        let advertised = config.advertised()?;
        // Bind the first listener here so port 0 resolves to one port for all.
        let first = reuseport_listener(config.listen_addr()?)?;
        let local_addr = first.local_addr()?;
        let config = Arc::new(config);
        let shared = Arc::new(BrokerShared {
            config: config.clone(),
            topics,
            cluster_id,
            advertised,
            shards,
            controller: controller.handle().clone(),
            member: MemberState::default(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (unfenced_tx, unfenced_rx) = std::sync::mpsc::channel::<()>();
        let unfenced_tx = std::sync::Mutex::new(Some(unfenced_tx));
        let first = std::sync::Mutex::new(Some(first));
        let shared_for_shards = shared.clone();
        let limits = ConnectionLimits::new(&config);
        let pool = ShardPool::start(
            shards,
            {
                let config = config.clone();
                // Each shard's random choices (session and member ids) are
                // seeded here, from the system's randomness.
                move |shard| {
                    ShardState::new(shard, config.clone(), system_clock(), uuid::Uuid::new_v4().as_u64_pair().0)
                }
            },
            move |shard, state: Rc<ShardState>, mesh: Mesh<ShardState>| {
                let shared = shared_for_shards.clone();
                let limits = limits.clone();
                let ready = ready_tx.clone();
                let listener = if shard == 0 { first.lock().ok().and_then(|mut f| f.take()) } else { None };
                let unfenced = if shard == 0 { unfenced_tx.lock().ok().and_then(|mut f| f.take()) } else { None };
                async move {
                    let applied =
                        shared.config.io_priorities().map_err(|e| e.to_string()).and_then(|(thread, appends)| {
                            thread.apply_to_current_thread().map_err(|e| format!("io_priority {thread:?}: {e}"))?;
                            set_append_priority(appends.encoded());
                            Ok(())
                        });
                    if let Err(error) = applied {
                        let _ = ready.send(Err(format!("shard {shard}: {error}")));
                        return;
                    }
                    let started = start_shard(shard, &shared, &state, listener, local_addr).await;
                    let listener = match started {
                        Ok(listener) => {
                            let _ = ready.send(Ok(()));
                            listener
                        }
                        Err(error) => {
                            let _ = ready.send(Err(format!("shard {shard}: {error}")));
                            return;
                        }
                    };
                    spawn_timers(&state, &shared, &mesh);
                    if let Some(unfenced) = unfenced {
                        compio::runtime::spawn(follow_log(shared.clone(), state.clone(), mesh.clone())).detach();
                        compio::runtime::spawn(keep_membership(shared.clone(), state.clone(), unfenced)).detach();
                    }
                    accept_loop(listener, shared, state, mesh, limits).await;
                }
            },
        )?;
        for _ in 0..shards {
            match ready_rx.recv_timeout(Duration::from_secs(300)) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    pool.mesh().close();
                    return Err(error.into());
                }
                Err(_) => return Err("shards did not start".into()),
            }
        }
        if unfenced_rx.recv_timeout(JOIN_TIMEOUT).is_err() {
            pool.mesh().close();
            return Err(
                format!("the controller did not unfence this broker within {} s", JOIN_TIMEOUT.as_secs()).into()
            );
        }
        tracing::info!(%local_addr, shards, cluster_id = %shared.cluster_id, data_dir = %config.data_dir.display(), "shardline broker started");
        Ok(Broker { pool, shared, local_addr, controller, _data_dir_lock: data_dir_lock })
    }

    /// Shared broker state.
    pub fn shared(&self) -> &Arc<BrokerShared> {
        &self.shared
    }

    /// Clean shutdown: stop reading requests, wait (bounded) for in-flight
    /// ones to be answered, close every log (flushed, clean marker), stop.
    pub fn shutdown(self) {
        tracing::info!("shutting down");
        let mesh = self.pool.mesh().clone();
        let shared = self.shared.clone();
        let announced = mesh.call(0, move |state: Rc<ShardState>| async move {
            announce_shutdown(&shared, &state.clock, Duration::from_secs(5)).await;
        });
        let _ = futures::executor::block_on(announced);
        let closes: Vec<_> = (0..mesh.shards())
            .map(|shard| {
                mesh.call(shard, |state: Rc<ShardState>| async move {
                    state.shutting_down.set(true);
                    // Bounded: in-flight requests get 30 s to be answered.
                    let deadline_ms = state.clock.now_ms() + 30_000;
                    while state.in_flight.get() > 0 && state.clock.now_ms() < deadline_ms {
                        let _ = timeout(&*state.clock, Duration::from_millis(100), state.idle.listen()).await;
                    }
                    state.partitions.close_all().await;
                })
            })
            .collect();
        futures::executor::block_on(futures::future::join_all(closes));
        mesh.close();
        self.pool.join();
        self.controller.stop();
        tracing::info!("shutdown complete: all logs flushed and closed");
    }
}

/// Partitions a shard opens at once while the broker starts.
const STARTUP_OPENS_IN_FLIGHT: usize = 64;

/// Logs how many partitions and bytes a shard holds.
fn log_placement(shard: usize, state: &ShardState) {
    let all = state.partitions.all();
    let bytes: u64 = all.iter().map(|(_, replica)| replica.partition.log().size_bytes()).sum();
    tracing::info!(shard, partitions = all.len(), bytes, "shard opened its partitions");
}

/// Opens the partitions this shard owns (and, on the allocating shard, the
/// producer id blocks), then binds its listener.
async fn start_shard(
    shard: usize,
    shared: &BrokerShared,
    state: &ShardState,
    listener: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
) -> Result<TcpListener, Box<dyn std::error::Error>> {
    let image = shared.topics.image();
    let mut owned = Vec::new();
    for topic in image.topics.values() {
        let (log_config, ack) = log_config_for(&shared.config, &topic.configs)?;
        for (index, _) in topic.partition_shards.iter().enumerate() {
            if shared.shard_of(&topic.partition_shards, index as i32) == Some(shard) {
                owned.push((topic.name.as_str(), index as i32, log_config.clone(), ack));
            }
        }
    }
    // Opened STARTUP_OPENS_IN_FLIGHT at a time: their small reads, opens
    // and directory syncs overlap in io_uring instead of queueing.
    let opens = futures::stream::iter(owned)
        .map(|(topic, index, log_config, ack)| state.partitions.open(topic, index, log_config, ack));
    let mut opens = std::pin::pin!(opens.buffer_unordered(STARTUP_OPENS_IN_FLIGHT));
    while let Some(opened) = opens.next().await {
        opened?;
    }
    log_placement(shard, state);
    let std_listener = match listener {
        Some(listener) => listener,
        None => reuseport_listener(local_addr)?,
    };
    Ok(TcpListener::from_std(std_listener)?)
}

/// How often a shard looks again while the broker is at `max_connections`.
const FULL_RECHECK: Duration = Duration::from_millis(10);

/// Accepts this shard's connections within the connection limits: at
/// `max_connections` it stops accepting (new connections wait in the
/// backlog, as Kafka's acceptor waits); one over an address's limit is
/// closed at once.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<BrokerShared>,
    state: Rc<ShardState>,
    mesh: Mesh<ShardState>,
    limits: Arc<ConnectionLimits>,
) {
    let bad_connection_log = Rc::new(LogLimit::default());
    let refused_log = LogLimit::default();
    // Clients are served once the controller unfenced this broker (its
    // view of the metadata is caught up); until then they wait.
    while !shared.member.serving.load(std::sync::atomic::Ordering::Acquire) && !state.shutting_down.get() {
        state.clock.sleep(FULL_RECHECK).await;
    }
    loop {
        while limits.broker_full() && !state.shutting_down.get() {
            state.clock.sleep(FULL_RECHECK).await;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                if state.shutting_down.get() {
                    continue;
                }
                let slot = loop {
                    match limits.admit(peer.ip()) {
                        Ok(slot) => break Some(slot),
                        // Another shard took the last place: hold this one until a place frees.
                        Err(Refused::BrokerFull(_)) if !state.shutting_down.get() => {
                            state.clock.sleep(FULL_RECHECK).await;
                        }
                        Err(refused) => {
                            if let Some(suppressed) = refused_log.admit(state.clock.now_ms()) {
                                tracing::info!(%peer, %refused, suppressed, "connection refused");
                            }
                            break None;
                        }
                    }
                };
                let Some(slot) = slot else { continue };
                let _ = stream.set_nodelay(true);
                let connection = ConnectionContext {
                    peer,
                    shared: shared.clone(),
                    state: state.clone(),
                    mesh: mesh.clone(),
                    slot,
                    bad_connection_log: bad_connection_log.clone(),
                };
                compio::runtime::spawn(serve_connection(stream, connection)).detach();
            }
            Err(error) => {
                if let Some(suppressed) = refused_log.admit(state.clock.now_ms()) {
                    tracing::warn!(%error, suppressed, "accept failed");
                }
                state.clock.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Places the partitions again across the shards when their counts or
/// bytes are out of balance (`placement::rebalance`), before any shard
/// opens one: the new owners are persisted, then every shard opens its own.
fn rebalance_shards(config: &BrokerConfig, topics: &TopicStore, shards: usize) -> std::io::Result<()> {
    if shards < 2 {
        return Ok(());
    }
    let image = topics.image();
    let bytes = |topic: &str, index: i32| log_bytes(&partition_dir(&config.data_dir, topic, index));
    let Some(done) = crate::placement::rebalance(&image, shards, bytes) else { return Ok(()) };
    // Nothing else runs yet: no other holder of the topic store's lock.
    topics.persist(&done.image)?;
    topics.publish(done.image);
    let before: Vec<(usize, u64)> = done.before.iter().map(|l| (l.partitions, l.bytes)).collect();
    let after: Vec<(usize, u64)> = done.after.iter().map(|l| (l.partitions, l.bytes)).collect();
    tracing::info!(
        moved = done.moved,
        ?before,
        ?after,
        "placed partitions again across shards: (partitions, bytes) each"
    );
    Ok(())
}

/// Bytes of a partition's segment data files (0 when it has none yet).
/// After a crash the active segment's reservation counts too.
fn log_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".log")))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Removes `<topic>-<n>` directories of topics no longer in the metadata
/// (a delete interrupted by a crash).
fn remove_stray_partitions(config: &BrokerConfig, topics: &TopicStore) -> std::io::Result<()> {
    let image = topics.image();
    for entry in std::fs::read_dir(&config.data_dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Some((topic, index)) = name.rsplit_once('-') else { continue };
        if !entry.file_type()?.is_dir()
            || index.parse::<u32>().is_err()
            || topic.starts_with("__shardline")
            || topic == crate::topics::CLUSTER_METADATA_TOPIC
        {
            continue;
        }
        let known = image.topics.get(topic).is_some_and(|t| {
            let index = index.parse::<usize>().unwrap_or(usize::MAX);
            t.partition_shards.get(index).is_some_and(|s| *s != crate::topics::NOT_HOSTED)
        });
        if !known {
            tracing::info!(dir = %entry.path().display(), "removing partition of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
