//! The controller on a one-voter quorum, step by step: registration,
//! unfencing on heartbeat, placement, fencing when a lease runs out (its
//! partition goes offline, then comes back with the broker), duplicate
//! registration while a lease holds, and producer-id blocks.

use shardline_replication::controller::requests::{
    ControllerError, ControllerReply, ControllerRequest, NewTopic, RequestId,
};
use shardline_replication::controller::{Controller, ControllerSettings};
use shardline_replication::metadata::image::NO_LEADER;
use shardline_replication::metadata::records::MetadataRecord;
use shardline_replication::quorum::log_codec::{self, RecoveredLog};
use shardline_replication::quorum::{Quorum, QuorumAction, QuorumConfig};
use uuid::Uuid;

const TICK_MS: i64 = 100;

struct Harness {
    controller: Controller,
    now_ms: i64,
    next_id: RequestId,
    /// The metadata log's files as the driver would have written them.
    log: Vec<u8>,
    snapshot: Option<Vec<u8>>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_settings(ControllerSettings::default())
    }

    fn with_settings(settings: ControllerSettings) -> Harness {
        Harness::open(RecoveredLog::default(), Vec::new(), None, settings)
    }

    /// The same node started again from its files.
    fn restart(self) -> Harness {
        let recovered = log_codec::recover(self.snapshot.as_deref(), &self.log).expect("recovers");
        let mut harness = Harness::open(recovered, self.log, self.snapshot, ControllerSettings::default());
        harness.now_ms = self.now_ms;
        harness
    }

    fn open(recovered: RecoveredLog, log: Vec<u8>, snapshot: Option<Vec<u8>>, settings: ControllerSettings) -> Harness {
        let config = QuorumConfig {
            node_id: 1,
            voters: vec![1],
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every_entries: 1000,
            entries_kept_behind_snapshot: 10,
            incarnation: 7,
        };
        let quorum = Quorum::open(config, recovered).expect("opens");
        let mut harness =
            Harness { controller: Controller::new(quorum, settings, 1), now_ms: 0, next_id: 1, log, snapshot };
        for _ in 0..30 {
            harness.tick();
        }
        assert!(harness.controller.quorum().is_leader(), "a single voter elects itself");
        harness
    }

    fn tick(&mut self) -> Vec<(RequestId, ControllerReply)> {
        self.now_ms += TICK_MS;
        self.controller.tick(self.now_ms);
        self.poll()
    }

    /// Polls the controller, writing its log actions to the files.
    fn poll(&mut self) -> Vec<(RequestId, ControllerReply)> {
        let output = self.controller.poll().expect("poll");
        let image = self.controller.image();
        for topic in image.topics.values() {
            for (i, p) in topic.partitions.iter().enumerate() {
                let fenced = image.brokers.get(&p.leader).is_some_and(|b| b.fenced);
                assert!(!fenced, "image {}: {}-{i} is led by fenced broker {}", image.offset, topic.name, p.leader);
            }
        }
        for action in output.actions {
            match action {
                QuorumAction::AppendLog(bytes) => self.log.extend(bytes),
                QuorumAction::ReplaceSnapshot { snapshot, log } => {
                    self.snapshot = Some(snapshot);
                    self.log = log;
                }
                _ => {}
            }
        }
        output.replies
    }

    /// Sends a request and runs until it is answered (bounded).
    fn ask(&mut self, request: ControllerRequest) -> ControllerReply {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(reply) = self.controller.handle(self.now_ms, id, request) {
            return reply;
        }
        for _ in 0..10 {
            let replies = self.poll();
            if let Some((_, reply)) = replies.into_iter().find(|(r, _)| *r == id) {
                return reply;
            }
        }
        panic!("request {id} was not answered");
    }

    fn heartbeat(&mut self, broker_id: i32, broker_epoch: i64) -> ControllerReply {
        let metadata_offset = self.controller.image().offset;
        self.ask(ControllerRequest::Heartbeat {
            broker_id,
            broker_epoch,
            metadata_offset,
            want_fence: false,
            want_shutdown: false,
        })
    }

    fn register(&mut self, broker_id: i32, incarnation: u128) -> ControllerReply {
        self.ask(ControllerRequest::RegisterBroker {
            broker_id,
            incarnation_id: Uuid::from_u128(incarnation),
            endpoints: vec![],
            rack: None,
        })
    }
}

fn epoch_of(reply: ControllerReply) -> i64 {
    match reply {
        ControllerReply::Registered { broker_epoch } => broker_epoch,
        other => panic!("not registered: {other:?}"),
    }
}

#[test]
fn a_broker_that_stops_heartbeating_is_fenced_and_its_partition_comes_back_with_it() {
    let mut h = Harness::new();
    let e1 = epoch_of(h.register(1, 11));
    let e2 = epoch_of(h.register(2, 22));
    assert!(matches!(h.heartbeat(1, e1), ControllerReply::Heartbeat { fenced: false, caught_up: true, .. }));
    assert!(matches!(h.heartbeat(2, e2), ControllerReply::Heartbeat { fenced: false, .. }));
    let topic =
        NewTopic { name: "orders".into(), partitions: 4, replication_factor: -1, assignments: vec![], configs: vec![] };
    let ControllerReply::Topics(results) =
        h.ask(ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false })
    else {
        panic!("topics reply")
    };
    let topic_id = results[0].1.clone().expect("created");
    let leaders: Vec<i32> = (0..4).map(|p| h.controller.image().partition(topic_id, p).unwrap().leader).collect();
    assert_eq!(leaders.iter().filter(|l| **l == 1).count(), 2, "balanced over both brokers: {leaders:?}");

    // Broker 2 stops; broker 1 keeps heartbeating past the 3 s session.
    for tick in 0..40 {
        if tick % 5 == 0 {
            h.heartbeat(1, e1);
        }
        h.tick();
    }
    let image = h.controller.image().clone();
    assert!(image.brokers[&2].fenced && !image.brokers[&1].fenced, "only the silent broker is fenced");
    for p in 0..4 {
        let state = image.partition(topic_id, p).unwrap();
        let expected = if leaders[p as usize] == 2 { NO_LEADER } else { 1 };
        assert_eq!(state.leader, expected, "partition {p} of broker {} ", leaders[p as usize]);
    }

    // A new incarnation of broker 1 is refused while the old one's lease holds.
    assert_eq!(h.register(1, 99), ControllerReply::Refused(ControllerError::DuplicateBrokerRegistration(1)));
    // Broker 2 restarts: registers fenced, then is unfenced and leads again.
    let e2b = epoch_of(h.register(2, 23));
    assert!(e2b > e2, "a new incarnation has a later epoch");
    assert_eq!(h.heartbeat(2, e2), ControllerReply::Refused(ControllerError::StaleBrokerEpoch));
    assert!(matches!(h.heartbeat(2, e2b), ControllerReply::Heartbeat { fenced: false, .. }));
    for p in 0..4 {
        let state = h.controller.image().partition(topic_id, p).unwrap().clone();
        assert_eq!(state.leader, leaders[p as usize], "partition {p} is served by its replica again");
        if leaders[p as usize] == 2 {
            assert_eq!(state.leader_epoch, 2, "offline and back: two leader changes");
        }
    }
}

#[test]
fn producer_id_blocks_never_overlap_and_bad_requests_are_refused_by_name() {
    let mut h = Harness::new();
    let e = epoch_of(h.register(5, 1));
    let first = h.ask(ControllerRequest::AllocateProducerIds { broker_id: 5, broker_epoch: e });
    let second = h.ask(ControllerRequest::AllocateProducerIds { broker_id: 5, broker_epoch: e });
    assert_eq!(first, ControllerReply::ProducerIds { first: 0, count: 1000 });
    assert_eq!(second, ControllerReply::ProducerIds { first: 1000, count: 1000 });
    h.heartbeat(5, e);
    let rf3 =
        NewTopic { name: "wide".into(), partitions: 1, replication_factor: 3, assignments: vec![], configs: vec![] };
    let bad = NewTopic {
        name: "no/slash".into(),
        partitions: 1,
        replication_factor: 1,
        assignments: vec![],
        configs: vec![],
    };
    let ControllerReply::Topics(results) =
        h.ask(ControllerRequest::CreateTopics { topics: vec![rf3, bad], validate_only: false })
    else {
        panic!("topics reply")
    };
    assert!(
        matches!(&results[0].1, Err(ControllerError::InvalidReplicationFactor(why)) if why.contains("replication is not built yet"))
    );
    assert!(matches!(&results[1].1, Err(ControllerError::InvalidTopic(_))));
    assert!(h.controller.image().topics.is_empty());
}

#[test]
fn a_node_restarted_with_its_controller_registers_its_new_incarnation_at_once() {
    let mut h = Harness::new();
    let e1 = epoch_of(h.register(1, 11));
    assert!(matches!(h.heartbeat(1, e1), ControllerReply::Heartbeat { fenced: false, .. }));
    let topic =
        NewTopic { name: "kept".into(), partitions: 2, replication_factor: -1, assignments: vec![], configs: vec![] };
    let ControllerReply::Topics(results) =
        h.ask(ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false })
    else {
        panic!("topics reply")
    };
    let topic_id = results[0].1.clone().expect("created");
    // The process restarts: the controller comes back from its log, and the
    // broker beside it registers a new incarnation. No lease was heard
    // since the restart, so it is not refused as a duplicate.
    let mut h = h.restart();
    h.controller.quorum_mut().campaign();
    h.tick();
    assert!(h.controller.quorum().is_leader());
    assert_eq!(h.controller.image().partition(topic_id, 1).map(|p| p.leader), Some(1), "the log came back");
    let e2 = epoch_of(h.register(1, 12));
    assert!(e2 > e1);
    assert!(matches!(h.heartbeat(1, e2), ControllerReply::Heartbeat { fenced: false, .. }));
    for p in 0..2 {
        assert_eq!(h.controller.image().partition(topic_id, p).map(|p| p.leader), Some(1), "partition {p} led again");
    }
    // A second incarnation while this one is heard from is refused.
    assert_eq!(h.register(1, 13), ControllerReply::Refused(ControllerError::DuplicateBrokerRegistration(1)));
}

/// Leaders of every partition of `topic_id`.
fn leaders_of(h: &Harness, topic_id: Uuid, partitions: i32) -> Vec<i32> {
    (0..partitions).map(|p| h.controller.image().partition(topic_id, p).unwrap().leader).collect()
}

#[test]
fn a_broker_leading_more_partitions_than_one_batch_moves_is_fenced_in_steps_and_comes_back_whole() {
    // Two partition changes a batch: a broker leading 20 partitions takes
    // ten batches to fence, to shut down, and to lead again.
    let settings = ControllerSettings { liveness_changes_per_batch: 2, ..ControllerSettings::default() };
    let mut h = Harness::with_settings(settings);
    let e1 = epoch_of(h.register(1, 11));
    let e2 = epoch_of(h.register(2, 22));
    h.heartbeat(1, e1);
    h.heartbeat(2, e2);
    let partitions = 40;
    let topic =
        NewTopic { name: "wide".into(), partitions, replication_factor: -1, assignments: vec![], configs: vec![] };
    let ControllerReply::Topics(results) =
        h.ask(ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false })
    else {
        panic!("topics reply")
    };
    let topic_id = results[0].1.clone().expect("created");
    let placed = leaders_of(&h, topic_id, partitions);
    assert_eq!(placed.iter().filter(|l| **l == 2).count(), 20, "balanced: {placed:?}");

    // Broker 2 goes silent: every partition of it goes offline, and it is
    // fenced only once they have (the poll checks every image).
    for tick in 0..80 {
        if tick % 5 == 0 {
            h.heartbeat(1, e1);
        }
        h.tick();
    }
    assert!(h.controller.image().brokers[&2].fenced, "the silent broker is fenced");
    let expected: Vec<i32> = placed.iter().map(|l| if *l == 2 { NO_LEADER } else { 1 }).collect();
    assert_eq!(leaders_of(&h, topic_id, partitions), expected, "all of its partitions are offline");

    // It comes back: unfenced at once, its partitions led again over the
    // next batches.
    let e2b = epoch_of(h.register(2, 23));
    assert!(matches!(h.heartbeat(2, e2b), ControllerReply::Heartbeat { fenced: false, .. }));
    for _ in 0..20 {
        h.poll();
    }
    assert_eq!(leaders_of(&h, topic_id, partitions), placed, "every partition is served by its replica again");

    // Broker 1 shuts down cleanly: its notice is answered "not yet" until
    // its partitions are moved, then it is fenced and may stop.
    let mut notices = 0;
    loop {
        notices += 1;
        assert!(notices <= 30, "the controlled shutdown never finished");
        let metadata_offset = h.controller.image().offset;
        let reply = h.ask(ControllerRequest::Heartbeat {
            broker_id: 1,
            broker_epoch: e1,
            metadata_offset,
            want_fence: false,
            want_shutdown: true,
        });
        match reply {
            ControllerReply::Heartbeat { should_shut_down: true, fenced, .. } => {
                assert!(fenced);
                break;
            }
            ControllerReply::Heartbeat { should_shut_down: false, fenced: false, .. } => {}
            other => panic!("shutdown notice answered {other:?}"),
        }
    }
    assert!(notices > 2, "twenty partitions at two a batch take several notices, took {notices}");
    assert!(h.controller.image().brokers[&1].fenced);
    let expected: Vec<i32> = placed.iter().map(|l| if *l == 1 { NO_LEADER } else { 2 }).collect();
    assert_eq!(leaders_of(&h, topic_id, partitions), expected);
}

/// Runs `ticks` ticks, brokers 1 and 2 heartbeating every half second.
fn run_heartbeating(h: &mut Harness, ticks: usize, epochs: (i64, i64)) {
    for tick in 0..ticks {
        if tick % 5 == 0 {
            h.heartbeat(1, epochs.0);
            h.heartbeat(2, epochs.1);
        }
        h.tick();
    }
}

/// The state after bootstrap: brokers 1 and 2 live, partition 0 of
/// "moved" on replicas [1, 2], both in the ISR, led by 2 (not the
/// preferred replica); the interval of leader-imbalance checks 10 s.
fn led_off_its_preferred_replica(auto_leader_rebalance: bool) -> (Harness, Uuid, (i64, i64)) {
    let settings = ControllerSettings {
        max_replication_factor: 2,
        auto_leader_rebalance,
        leader_imbalance_check_interval_ms: 10_000,
        ..ControllerSettings::default()
    };
    let mut h = Harness::with_settings(settings);
    let epochs = (epoch_of(h.register(1, 11)), epoch_of(h.register(2, 22)));
    h.heartbeat(1, epochs.0);
    h.heartbeat(2, epochs.1);
    let topic_id = Uuid::from_u128(77);
    let records = vec![
        MetadataRecord::Topic { name: "moved".into(), topic_id },
        MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            elr: vec![],
            leader: 2,
            leader_epoch: 4,
            partition_epoch: 4,
        },
    ];
    assert_eq!(h.ask(ControllerRequest::Bootstrap { records, complete: true }), ControllerReply::Done);
    (h, topic_id, epochs)
}

#[test]
fn leadership_moves_back_to_the_preferred_replica_at_the_next_imbalance_check() {
    let (mut h, topic_id, epochs) = led_off_its_preferred_replica(true);
    run_heartbeating(&mut h, 50, epochs);
    let before = h.controller.image().partition(topic_id, 0).unwrap().clone();
    assert_eq!((before.leader, before.leader_epoch), (2, 4), "no check before the interval");
    run_heartbeating(&mut h, 60, epochs);
    let after = h.controller.image().partition(topic_id, 0).unwrap().clone();
    assert_eq!((after.leader, after.leader_epoch), (1, 5), "the preferred replica leads, one epoch later");
    assert_eq!(after.isr, vec![1, 2]);

    // Not while auto.leader.rebalance.enable is off.
    let (mut off, topic_id, epochs) = led_off_its_preferred_replica(false);
    run_heartbeating(&mut off, 250, epochs);
    assert_eq!(off.controller.image().partition(topic_id, 0).unwrap().leader, 2);
}

#[test]
fn a_silent_broker_is_fenced_in_steps_with_nothing_else_asked() {
    let mut h =
        Harness::with_settings(ControllerSettings { liveness_changes_per_batch: 2, ..ControllerSettings::default() });
    let e1 = epoch_of(h.register(1, 11));
    h.heartbeat(1, e1);
    let topic =
        NewTopic { name: "alone".into(), partitions: 9, replication_factor: 1, assignments: vec![], configs: vec![] };
    let ControllerReply::Topics(results) =
        h.ask(ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false })
    else {
        panic!("topics reply")
    };
    let topic_id = results[0].1.clone().expect("created");
    // The only broker stops; no request reaches the controller after it.
    for _ in 0..60 {
        h.tick();
    }
    assert!(h.controller.image().brokers[&1].fenced, "fenced within 3 s of session and a few batches");
    assert_eq!(leaders_of(&h, topic_id, 9), vec![NO_LEADER; 9]);
}
