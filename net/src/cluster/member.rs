//! The broker as a member of the cluster, on shard 0: it follows the
//! committed metadata log (each new image becomes this broker's view:
//! partitions it hosts are opened on their shards, deleted topics'
//! logs removed, and the view published to every shard), and it holds
//! its registration: it registers with the active controller, heartbeats
//! to keep its lease, and says it is shutting down before it stops
//! (controlled shutdown). A refused registration is retried, and the log
//! says why.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shardline_engine::runtime::clock::SharedClock;
use shardline_engine::runtime::mesh::Mesh;
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest};
use shardline_replication::metadata::records::Endpoint;

use super::local_view::local_view;
use crate::shard::{BrokerShared, ShardState};
use crate::topics::log_config_for;

/// Applies the newest published image, if this broker's view is behind
/// it. Serialized with every other change of the view by the topic
/// store's lock.
pub async fn apply_latest(shared: &BrokerShared, mesh: &Mesh<ShardState>) {
    let _guard = shared.topics.lock().await;
    let cluster = shared.controller.published().image();
    if cluster.offset <= shared.topics.applied_offset() {
        return;
    }
    let current = shared.topics.image();
    let (view, changes) = local_view(&cluster, &current, shared.config.node_id, shared.shards);
    let same = view.topics.len() == current.topics.len()
        && view.topics.iter().all(|(name, t)| current.topics.get(name).is_some_and(|c| Arc::ptr_eq(c, t)));
    if !same {
        if let Err(error) = shared.topics.persist(&view) {
            // The view stays behind; the next image (or heartbeat) retries.
            tracing::error!(%error, "persisting the broker's topic placement");
            return;
        }
    }
    // The local view places every partition it opens on a shard.
    let (placed, opens): (Vec<_>, Vec<_>) = changes
        .opened
        .iter()
        .filter_map(|(topic, index)| {
            let (topic, index) = (topic.clone(), *index);
            let shard = shared.shard_of(&topic.partition_shards, index)?;
            let config = shared.config.clone();
            let named = (topic.name.clone(), index);
            let open = mesh.call(shard, move |state: Rc<ShardState>| async move {
                let (log_config, ack) = log_config_for(&config, &topic.configs)?;
                state.partitions.open(&topic.name, index, log_config, ack).await.map(|_| ()).map_err(|e| e.to_string())
            });
            Some((named, open))
        })
        .unzip();
    for ((topic, index), opened) in placed.into_iter().zip(futures::future::join_all(opens).await) {
        if let Err(message) = opened.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::error!(%topic, index, %message, "opening a partition this broker hosts");
        }
    }
    shared.topics.publish(view);
    shared.topics.mark_applied(cluster.offset);
    for topic in &changes.removed {
        let deletes = topic.partition_shards.iter().enumerate().filter_map(|(index, _)| {
            let shard = shared.shard_of(&topic.partition_shards, index as i32)?;
            let name = topic.name.clone();
            Some(mesh.call(shard, move |state: Rc<ShardState>| async move {
                state.partitions.delete(&name, index as i32).await.map_err(|e| e.to_string())
            }))
        });
        for deleted in futures::future::join_all(deletes).await {
            if let Err(message) = deleted.map_err(|e| e.to_string()).and_then(|r| r) {
                tracing::warn!(topic = %topic.name, %message, "removing partition files of a deleted topic");
            }
        }
        tracing::info!(topic = %topic.name, "deleted topic");
    }
}

/// Follows the published images until the broker stops.
pub async fn follow_log(shared: Arc<BrokerShared>, state: Rc<ShardState>, mesh: Mesh<ShardState>) {
    let mut changes = shared.controller.published().watch();
    loop {
        apply_latest(&shared, &mesh).await;
        if state.shutting_down.get() {
            return;
        }
        // A wake-up per new image; a second look after a bounded wait
        // catches an image whose wake-up was coalesced away.
        let _ = shardline_engine::runtime::clock::timeout(&*state.clock, Duration::from_secs(1), changes.next()).await;
    }
}

/// Pause between shutdown notices while the controller moves partitions.
const SHUTDOWN_RETRY: Duration = Duration::from_millis(50);

/// Pause between refused registrations.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// The endpoints this broker registers: its advertised listener.
fn endpoints(shared: &BrokerShared) -> Vec<Endpoint> {
    let (host, port) = &shared.advertised;
    vec![Endpoint {
        name: "PLAINTEXT".into(),
        host: host.clone(),
        port: u16::try_from(*port).unwrap_or(0),
        security_protocol: "PLAINTEXT".into(),
    }]
}

/// Registers this broker until the controller takes it, retrying (and
/// saying why) while it refuses. Returns the broker epoch, or `None` once
/// the broker is stopping.
async fn register(shared: &BrokerShared, state: &ShardState) -> Option<i64> {
    let mut attempts = 0u64;
    loop {
        if state.shutting_down.get() {
            return None;
        }
        let request = ControllerRequest::RegisterBroker {
            broker_id: shared.config.node_id,
            incarnation_id: shared.member.incarnation_id,
            endpoints: endpoints(shared),
            rack: (!shared.config.broker_rack.is_empty()).then(|| shared.config.broker_rack.clone()),
        };
        match shared.controller.ask(request).await.reply {
            ControllerReply::Registered { broker_epoch } => {
                tracing::info!(broker_epoch, "registered with the controller");
                shared.member.broker_epoch.store(broker_epoch, Ordering::Release);
                return Some(broker_epoch);
            }
            ControllerReply::Refused(error) => {
                // Said at the first refusal, then every 20th: bounded logs.
                if attempts.is_multiple_of(20) {
                    tracing::warn!(%error, attempts, "the controller refused this broker's registration; retrying");
                }
            }
            other => tracing::warn!(?other, "unexpected answer to a registration"),
        }
        attempts += 1;
        state.clock.sleep(REGISTER_RETRY).await;
    }
}

/// Holds this broker's registration and lease until it stops: registers,
/// heartbeats every `broker_heartbeat_interval_ms`, registers again when
/// the controller no longer knows this epoch. `unfenced` hears once the
/// broker is first unfenced.
pub async fn keep_membership(shared: Arc<BrokerShared>, state: Rc<ShardState>, unfenced: std::sync::mpsc::Sender<()>) {
    let interval = Duration::from_millis(shared.config.broker_heartbeat_interval_ms as u64);
    let mut told = false;
    'register: loop {
        let Some(broker_epoch) = register(&shared, &state).await else { return };
        loop {
            if state.shutting_down.get() {
                return;
            }
            match shared.controller.ask(heartbeat(&shared, broker_epoch, false)).await.reply {
                ControllerReply::Heartbeat { fenced, .. } => {
                    let was = shared.member.fenced.swap(fenced, Ordering::AcqRel);
                    if was != fenced {
                        tracing::info!(fenced, broker_epoch, "the controller changed this broker's state");
                    }
                    if !fenced && !told {
                        told = true;
                        shared.member.serving.store(true, Ordering::Release);
                        let _ = unfenced.send(());
                    }
                }
                ControllerReply::Refused(
                    ControllerError::StaleBrokerEpoch | ControllerError::BrokerNotRegistered(_),
                ) => {
                    tracing::warn!(broker_epoch, "the controller no longer knows this registration; registering again");
                    shared.member.fenced.store(true, Ordering::Release);
                    continue 'register;
                }
                ControllerReply::Refused(error) => tracing::debug!(%error, "heartbeat refused"),
                other => tracing::warn!(?other, "unexpected answer to a heartbeat"),
            }
            state.clock.sleep(interval).await;
        }
    }
}

/// This broker's heartbeat, with how far it applied the log.
fn heartbeat(shared: &BrokerShared, broker_epoch: i64, want_shutdown: bool) -> ControllerRequest {
    ControllerRequest::Heartbeat {
        broker_id: shared.config.node_id,
        broker_epoch,
        metadata_offset: shared.topics.applied_offset(),
        want_fence: false,
        want_shutdown,
    }
}

/// Controlled shutdown: tells the controller this broker is stopping, so
/// it is fenced at once rather than after its session times out, asking
/// again while the controller is still moving its partitions (a broker
/// hosting more than one metadata batch moves). Bounded by `wait`; a
/// controller that does not answer in time is not waited for.
pub async fn announce_shutdown(shared: &BrokerShared, clock: &SharedClock, wait: Duration) {
    let broker_epoch = shared.member.broker_epoch.load(Ordering::Acquire);
    if broker_epoch < 0 {
        return;
    }
    let notice = async {
        loop {
            let answer = shared.controller.ask(heartbeat(shared, broker_epoch, true)).await;
            match answer.reply {
                ControllerReply::Heartbeat { should_shut_down: false, .. } => clock.sleep(SHUTDOWN_RETRY).await,
                reply => return reply,
            }
        }
    };
    match shardline_engine::runtime::clock::timeout(&**clock, wait, notice).await {
        Ok(reply) => tracing::info!(?reply, "told the controller this broker is shutting down"),
        Err(_) => tracing::warn!("the controller did not finish the controlled shutdown in time"),
    }
}
