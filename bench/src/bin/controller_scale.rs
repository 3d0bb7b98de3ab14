//! `shardline-controller-scale [partitions] [per_topic] [per_request]`:
//! the metadata controller at scale, in process and sans-IO (one voter,
//! three registered brokers, log bytes written nowhere): CreateTopics of
//! `per_request` topics of `per_topic` partitions each through the real
//! `Controller` until `partitions` exist, timed; then the committed
//! metadata image's heap bytes, counted by this binary's allocator (the
//! image alone: the controller and its quorum are dropped first), and the
//! size and encoding time of its snapshot. Prints one JSON line.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use shardline_replication::controller::requests::{ControllerReply, ControllerRequest, NewTopic};
use shardline_replication::controller::{Controller, ControllerSettings};
use shardline_replication::metadata::records::Endpoint;
use shardline_replication::quorum::log_codec::RecoveredLog;
use shardline_replication::quorum::{Quorum, QuorumConfig};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn arg(args: &[String], index: usize, default: usize) -> usize {
    args.get(index).map_or(default, |a| a.parse().expect("a count"))
}

/// The controller and the clock of its ticks.
struct Driver {
    controller: Controller,
    now_ms: i64,
    next_id: u64,
}

impl Driver {
    fn poll(&mut self) -> Vec<(u64, ControllerReply)> {
        // The log and snapshot bytes are dropped, as if written.
        self.controller.poll().expect("poll").replies
    }

    fn tick(&mut self) {
        self.now_ms += 100;
        self.controller.tick(self.now_ms);
        self.poll();
    }

    fn ask(&mut self, request: ControllerRequest) -> ControllerReply {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(reply) = self.controller.handle(self.now_ms, id, request) {
            return reply;
        }
        for _ in 0..100 {
            if let Some((_, reply)) = self.poll().into_iter().find(|(r, _)| *r == id) {
                return reply;
            }
        }
        panic!("request {id} was not answered");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let partitions = arg(&args, 1, 100_000);
    let per_topic = arg(&args, 2, 1000);
    let per_request = arg(&args, 3, 5);
    let baseline = live();
    let config = QuorumConfig {
        node_id: 1,
        voters: vec![1],
        election_ticks: 10,
        heartbeat_ticks: 2,
        // The broker's default `metadata_snapshot_entries`.
        snapshot_every_entries: 1000,
        entries_kept_behind_snapshot: 100,
        incarnation: 1,
    };
    let quorum = Quorum::open(config, RecoveredLog::default()).expect("opens");
    let mut driver =
        Driver { controller: Controller::new(quorum, ControllerSettings::default(), 1), now_ms: 0, next_id: 1 };
    for _ in 0..30 {
        driver.tick();
    }
    assert!(driver.controller.quorum().is_leader(), "a single voter elects itself");
    for broker_id in 1..=3 {
        let endpoint = Endpoint {
            name: "PLAINTEXT".into(),
            host: format!("127.0.0.{broker_id}"),
            port: 9092,
            security_protocol: "PLAINTEXT".into(),
        };
        let reply = driver.ask(ControllerRequest::RegisterBroker {
            broker_id,
            incarnation_id: uuid::Uuid::from_u128(broker_id as u128),
            endpoints: vec![endpoint],
            rack: None,
        });
        let ControllerReply::Registered { broker_epoch } = reply else { panic!("not registered: {reply:?}") };
        for _ in 0..3 {
            let metadata_offset = driver.controller.image().offset;
            driver.ask(ControllerRequest::Heartbeat {
                broker_id,
                broker_epoch,
                metadata_offset,
                want_fence: false,
                want_shutdown: false,
            });
        }
    }
    let live_brokers = driver.controller.image().live_brokers().count();
    assert_eq!(live_brokers, 3, "three unfenced brokers");
    let started = Instant::now();
    let mut created = 0usize;
    let mut requests = 0usize;
    while created < partitions {
        let topics: Vec<NewTopic> = (0..per_request)
            .map(|i| NewTopic {
                name: format!("scale-{}", requests * per_request + i),
                partitions: per_topic as i32,
                replication_factor: 1,
                assignments: Vec::new(),
                configs: Vec::new(),
            })
            .collect();
        let reply = driver.ask(ControllerRequest::CreateTopics { topics, validate_only: false });
        let ControllerReply::Topics(results) = &reply else { panic!("not created: {reply:?}") };
        assert!(results.iter().all(|(_, r)| r.is_ok()), "every topic created: {reply:?}");
        created += per_request * per_topic;
        requests += 1;
    }
    let create_s = started.elapsed().as_secs_f64();
    let image = driver.controller.image().clone();
    assert_eq!(image.partition_count(), created, "every partition committed");
    let encode_started = Instant::now();
    let encoded = image.to_records().encode().len();
    let encode_s = encode_started.elapsed().as_secs_f64();
    drop(driver);
    let image_bytes = live() - baseline;
    println!(
        "{}",
        serde_json::json!({
            "partitions": created,
            "topics": image.topics.len(),
            "create_topics_requests": requests,
            "create_s": create_s,
            "partitions_per_s": created as f64 / create_s,
            "image_heap_bytes": image_bytes,
            "image_bytes_per_partition": image_bytes as f64 / created as f64,
            "snapshot_bytes": encoded,
            "snapshot_encode_s": encode_s,
        })
    );
}
