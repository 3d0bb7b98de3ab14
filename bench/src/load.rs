//! The load generator: producers and consumers on librdkafka (the same
//! client for every broker under test), open-loop pacing so latency includes
//! queueing (no coordinated omission: latency counts from the *scheduled*
//! send time), hdrhistogram for produce-ack and end-to-end latency (the send
//! time travels in the first 8 bytes of each value), and throughput sampled
//! every second. Runs on ordinary threads, outside the broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::workload::{Keys, Workload};

/// A consumer (no group membership: assign only) reading every partition
/// of `topic` from the beginning.
pub fn assigned_consumer(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// A member of consumer group `group` subscribed to `topic`, reading from
/// the beginning (offsets are not committed: each run uses a fresh topic).
pub fn group_consumer(bootstrap: &str, topic: &str, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Latency histograms record microseconds up to one hour.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

fn wall_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Counters shared by the producers, consumers and the sampler.
#[derive(Default)]
struct Counters {
    acked_messages: AtomicU64,
    acked_bytes: AtomicU64,
    consumed_messages: AtomicU64,
    consumed_bytes: AtomicU64,
    errors: AtomicU64,
}

/// One second of throughput.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Second {
    /// Seconds since the measured window started (negative: warm-up).
    pub second: i64,
    /// Messages acknowledged in that second.
    pub produced_messages: u64,
    /// Bytes acknowledged.
    pub produced_bytes: u64,
    /// Messages consumed (all consumers).
    pub consumed_messages: u64,
    /// Bytes consumed.
    pub consumed_bytes: u64,
}

/// What one run measured.
pub struct LoadResult {
    /// Produce acknowledgement latency (µs), measured window only.
    pub produce_latency: Histogram<u64>,
    /// End-to-end latency (µs) at the consumers, measured window only.
    pub e2e_latency: Histogram<u64>,
    /// Per-second throughput, warm-up included (negative seconds).
    pub seconds: Vec<Second>,
    /// Messages acknowledged in the measured window.
    pub produced_messages: u64,
    /// Value bytes acknowledged in the measured window.
    pub produced_bytes: u64,
    /// Messages consumed in the measured window (all consumers).
    pub consumed_messages: u64,
    /// Value bytes consumed in the measured window.
    pub consumed_bytes: u64,
    /// All messages acknowledged over the run (warm-up and drain included).
    pub total_acked: u64,
    /// All messages consumed over the run, per consumer.
    pub total_consumed_per_consumer: Vec<u64>,
    /// Failed deliveries.
    pub errors: u64,
    /// Measured seconds.
    pub window_s: f64,
    /// The broker's CPU seconds over the measured window, when its pid was given.
    pub window_cpu_s: Option<f64>,
    /// Bytes the noisy neighbour wrote (0: none ran).
    pub neighbour_written_bytes: u64,
}

struct DeliveryContext {
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    measure_from: Instant,
    measure_until: Instant,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<(Instant, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (scheduled, bytes) = *opaque;
        match result {
            Ok(_) => {
                self.counters.acked_messages.fetch_add(1, Ordering::Relaxed);
                self.counters.acked_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                if scheduled >= self.measure_from && scheduled < self.measure_until {
                    let micros = scheduled.elapsed().as_micros().max(1) as u64;
                    if let Ok(mut histogram) = self.latency.lock() {
                        let _ = histogram.record(micros);
                    }
                }
            }
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The value of message `seq`: send time (µs since the epoch), sequence, padding.
fn value(seq: u64, bytes: usize) -> Vec<u8> {
    let mut value = vec![b'x'; bytes.max(16)];
    value[..8].copy_from_slice(&wall_micros().to_be_bytes());
    value[8..16].copy_from_slice(&seq.to_be_bytes());
    value
}

fn key(keys: Keys, seq: u64, rng: &mut u64) -> Option<Vec<u8>> {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    match keys {
        Keys::None => None,
        Keys::Uniform => Some(format!("key-{}", *rng % 10_000).into_bytes()),
        Keys::Hot if (*rng % 10) < 8 => Some(format!("hot-{}", seq % 10).into_bytes()),
        Keys::Hot => Some(format!("key-{}", *rng % 10_000).into_bytes()),
    }
}

#[allow(clippy::too_many_arguments)]
fn producer_thread(
    bootstrap: String,
    topic: String,
    workload: Workload,
    index: usize,
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) {
    let context = DeliveryContext { counters: counters.clone(), latency, measure_from, measure_until: end };
    let producer: ThreadedProducer<DeliveryContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", &workload.acks)
        .set("compression.codec", &workload.compression)
        .set("linger.ms", workload.linger_ms.to_string())
        .set("batch.size", workload.batch_bytes.to_string())
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.kbytes", "524288")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(context)
        .expect("producer");
    let per_producer_rate = workload.rate.map(|r| (r as f64 / workload.producers as f64).max(1.0));
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
    let mut seq = 0u64;
    while Instant::now() < end {
        let scheduled = match per_producer_rate {
            Some(rate) => {
                let at = start + Duration::from_secs_f64(seq as f64 / rate);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                at
            }
            None => Instant::now(),
        };
        let payload = value(seq, workload.message_bytes);
        let record_key = key(workload.keys, seq, &mut rng);
        let mut opaque = Box::new((scheduled, payload.len()));
        loop {
            let mut record = BaseRecord::with_opaque_to(&topic, opaque).payload(&payload);
            if let Some(k) = record_key.as_ref() {
                record = record.key(k);
            } else {
                record = record.partition((seq % workload.partitions as u64) as i32);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((_, record)) => {
                    opaque = record.delivery_opaque;
                    std::thread::sleep(Duration::from_micros(200));
                    if Instant::now() > end + Duration::from_secs(30) {
                        return;
                    }
                }
            }
        }
        seq += 1;
    }
    let _ = producer.flush(Duration::from_secs(60));
}

#[allow(clippy::too_many_arguments)]
fn consumer_thread(
    bootstrap: String,
    topic: String,
    partitions: i32,
    group: Option<String>,
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    window_micros: (u64, u64),
    start_at_window: bool,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> u64 {
    let consumer = match &group {
        Some(group) => group_consumer(&bootstrap, &topic, group),
        None => assigned_consumer(&bootstrap, &topic, partitions),
    };
    let _ = consumer.poll(Duration::from_millis(100));
    // A group member is ready once the group has assigned it partitions
    // (bounded: a member of a group with more members than partitions may
    // get none).
    let joined_by = Instant::now() + Duration::from_secs(30);
    while group.is_some() && Instant::now() < joined_by && consumer.assignment().map_or(0, |a| a.count()) == 0 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let _ = ready.send(());
    if start_at_window {
        let wait = window_micros.0.saturating_sub(wall_micros());
        std::thread::sleep(Duration::from_micros(wait));
    }
    let mut total = 0u64;
    let mut idle_since = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                idle_since = Instant::now();
                total += 1;
                let payload = message.payload().unwrap_or_default();
                counters.consumed_messages.fetch_add(1, Ordering::Relaxed);
                counters.consumed_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                if payload.len() >= 8 {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&payload[..8]);
                    let sent = u64::from_be_bytes(sent);
                    if sent >= window_micros.0 && sent < window_micros.1 {
                        let micros = wall_micros().saturating_sub(sent).max(1);
                        if let Ok(mut histogram) = latency.lock() {
                            let _ = histogram.record(micros);
                        }
                    }
                }
            }
            Some(Err(_)) => {}
            None => {
                if stop.load(Ordering::Relaxed) && idle_since.elapsed() > Duration::from_secs(2) {
                    return total;
                }
            }
        }
        if stop.load(Ordering::Relaxed) && idle_since.elapsed() > Duration::from_secs(30) {
            return total;
        }
    }
}

/// Produces `workload.backlog_mb` MB of the workload's messages to `topic`
/// as fast as the broker takes them (acks=1), before a run. Returns the
/// messages acknowledged.
pub fn fill_backlog(bootstrap: &str, topic: &str, workload: &Workload) -> u64 {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", (1 << 20).to_string())
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("backlog producer");
    let bytes = workload.message_bytes.max(16) as u64;
    let messages = workload.backlog_mb * 1_000_000 / bytes;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seq = 0u64;
    while seq < messages && Instant::now() < deadline {
        let payload = value(seq, workload.message_bytes);
        let partition = (seq % workload.partitions as u64) as i32;
        match producer.send(BaseRecord::<(), _>::to(topic).payload(&payload).partition(partition)) {
            Ok(()) => seq += 1,
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    producer.flush(Duration::from_secs(120)).expect("the backlog is acknowledged");
    seq
}

/// A noisy neighbour: buffered 1 MiB writes at `mb_per_s` into a file in
/// `dir` until `stop`, wrapping at 4 GiB; the file is removed afterwards.
/// Returns the bytes written.
fn background_writer(dir: std::path::PathBuf, mb_per_s: u64, stop: Arc<AtomicBool>) -> u64 {
    use std::io::{Seek, Write};
    let path = dir.join(format!("shardline-bench-neighbour-{}", std::process::id()));
    let Ok(mut file) = std::fs::File::create(&path) else { return 0 };
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(3600) {
        let due = Duration::from_secs_f64(written as f64 / (mb_per_s.max(1) as f64 * 1e6));
        if due > started.elapsed() {
            std::thread::sleep((due - started.elapsed()).min(Duration::from_millis(100)));
            continue;
        }
        if written.is_multiple_of(4 << 30) && written > 0 && file.rewind().is_err() {
            break;
        }
        if file.write_all(&chunk).is_err() {
            break;
        }
        written += chunk.len() as u64;
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    written
}

/// Runs `workload` against `bootstrap` on `topic` (created beforehand with
/// `workload.partitions` partitions). With `pid`, the broker's CPU time is
/// read when the measured window opens and when it closes.
pub fn run(bootstrap: &str, topic: &str, workload: &Workload, pid: Option<u32>) -> LoadResult {
    let counters = Arc::new(Counters::default());
    let produce_latency = Arc::new(Mutex::new(histogram()));
    let e2e_latency = Arc::new(Mutex::new(histogram()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let warmup = Duration::from_secs(workload.warmup_s);
    let duration = Duration::from_secs(workload.duration_s);
    let window_wall = {
        let from = wall_micros() + warmup.as_micros() as u64 + 2_000_000;
        (from, from + duration.as_micros() as u64)
    };
    let consumers: Vec<_> = (0..workload.consumers)
        .map(|i| {
            let group =
                (workload.consumer_groups > 0).then(|| format!("{topic}-group-{}", i % workload.consumer_groups));
            let (b, t, c, l, s, r) = (
                bootstrap.to_string(),
                topic.to_string(),
                counters.clone(),
                e2e_latency.clone(),
                stop.clone(),
                ready_tx.clone(),
            );
            let (partitions, at_window) = (workload.partitions, workload.backlog_mb > 0);
            std::thread::spawn(move || consumer_thread(b, t, partitions, group, c, l, window_wall, at_window, s, r))
        })
        .collect();
    for _ in 0..workload.consumers {
        let _ = ready_rx.recv_timeout(Duration::from_secs(30));
    }
    // Align the producers' clock with the consumers' wall-clock window.
    let now_wall = wall_micros();
    let start = Instant::now() + Duration::from_micros(window_wall.0.saturating_sub(now_wall)) - warmup;
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let sampler = {
        let counters = counters.clone();
        std::thread::spawn(move || sample_seconds(&counters, start, measure_from, end, pid))
    };
    let neighbour_stop = Arc::new(AtomicBool::new(false));
    let neighbour = (workload.background_write_mb_per_s > 0).then(|| {
        let (rate, stop) = (workload.background_write_mb_per_s, neighbour_stop.clone());
        std::thread::spawn(move || background_writer(std::env::temp_dir(), rate, stop))
    });
    while Instant::now() < start {
        std::thread::sleep(Duration::from_millis(5));
    }
    let producers: Vec<_> = (0..workload.producers)
        .map(|index| {
            let (b, t, w, c, l) =
                (bootstrap.to_string(), topic.to_string(), workload.clone(), counters.clone(), produce_latency.clone());
            std::thread::spawn(move || producer_thread(b, t, w, index, c, l, start, measure_from, end))
        })
        .collect();
    for producer in producers {
        let _ = producer.join();
    }
    neighbour_stop.store(true, Ordering::Relaxed);
    let neighbour_written_bytes = neighbour.map_or(0, |n| n.join().unwrap_or(0));
    stop.store(true, Ordering::Relaxed);
    let total_consumed_per_consumer: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap_or(0)).collect();
    let (seconds, window_cpu_s) = sampler.join().unwrap_or_default();
    let window: Vec<&Second> = seconds.iter().filter(|s| s.second >= 0).collect();
    let sum = |f: fn(&Second) -> u64| window.iter().map(|s| f(s)).sum::<u64>();
    let produce_latency = produce_latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    let e2e_latency = e2e_latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    LoadResult {
        produce_latency,
        e2e_latency,
        produced_messages: sum(|s| s.produced_messages),
        produced_bytes: sum(|s| s.produced_bytes),
        consumed_messages: sum(|s| s.consumed_messages),
        consumed_bytes: sum(|s| s.consumed_bytes),
        total_acked: counters.acked_messages.load(Ordering::Relaxed),
        total_consumed_per_consumer,
        errors: counters.errors.load(Ordering::Relaxed),
        window_s: window.len() as f64,
        window_cpu_s,
        neighbour_written_bytes,
        seconds,
    }
}

/// Samples the counters once a second from `start` to `end`, and the CPU
/// time of broker `pid` (when given) over `measure_from..end`.
fn sample_seconds(
    counters: &Counters,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    pid: Option<u32>,
) -> (Vec<Second>, Option<f64>) {
    let mut out = Vec::new();
    let mut cpu_at_window = None;
    let mut window_cpu = None;
    let mut last = (0, 0, 0, 0);
    let mut tick = start + Duration::from_secs(1);
    while tick <= end {
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        }
        if let Some(pid) = pid {
            if tick == measure_from {
                cpu_at_window = Some(crate::broker_stats::cpu_seconds(pid));
            }
            if tick == end {
                window_cpu = cpu_at_window.map(|before| crate::broker_stats::cpu_seconds(pid) - before);
            }
        }
        let current = (
            counters.acked_messages.load(Ordering::Relaxed),
            counters.acked_bytes.load(Ordering::Relaxed),
            counters.consumed_messages.load(Ordering::Relaxed),
            counters.consumed_bytes.load(Ordering::Relaxed),
        );
        let second =
            (tick.duration_since(start).as_secs() as i64) - 1 - measure_from.duration_since(start).as_secs() as i64;
        out.push(Second {
            second,
            produced_messages: current.0 - last.0,
            produced_bytes: current.1 - last.1,
            consumed_messages: current.2 - last.2,
            consumed_bytes: current.3 - last.3,
        });
        last = current;
        tick += Duration::from_secs(1);
    }
    (out, window_cpu)
}
