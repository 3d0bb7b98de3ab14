//! The workloads the harness ships, and their knobs. A workload is data: the
//! load generator (`load.rs`) runs it against any Kafka-protocol broker.

use serde::{Deserialize, Serialize};

/// How record keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keys {
    /// No key (partition chosen round-robin by the generator).
    None,
    /// Uniformly random keys over 10 000 values.
    Uniform,
    /// 80% of records on 10 hot keys, the rest uniform.
    Hot,
}

/// One workload. Rates are totals over all producers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Name in reports.
    pub name: String,
    /// Producer clients (each its own librdkafka instance and thread).
    pub producers: usize,
    /// Consumer clients.
    pub consumers: usize,
    /// Consumer groups the consumers are spread over (round-robin); each
    /// group receives every message. 0: consumers assign every partition
    /// themselves (no group).
    #[serde(default)]
    pub consumer_groups: usize,
    /// Value size in bytes (the first 16 carry the send time and a sequence).
    pub message_bytes: usize,
    /// Key distribution.
    pub keys: Keys,
    /// Partitions of the topic.
    pub partitions: i32,
    /// "all", "1" or "0".
    pub acks: String,
    /// The producers' codec: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// The topic's `compression.type` (None: the broker default,
    /// `producer`, which keeps the producers' codec).
    #[serde(default)]
    pub topic_compression: Option<String>,
    /// Producer linger.
    pub linger_ms: u32,
    /// Producer batch size in bytes.
    pub batch_bytes: usize,
    /// Open-loop target rate in messages per second (None: as fast as possible).
    pub rate: Option<u64>,
    /// Measured seconds.
    pub duration_s: u64,
    /// Seconds before measuring.
    pub warmup_s: u64,
    /// A noisy neighbour: MB/s of buffered writes by another process on the
    /// same file system while the run lasts (0: none).
    #[serde(default)]
    pub background_write_mb_per_s: u64,
    /// A backlog of this many MB written before the run and dropped from the
    /// page cache; the consumers start reading it from the beginning when
    /// the measured window opens (0: none, consumers read from the start).
    #[serde(default)]
    pub backlog_mb: u64,
}

impl Workload {
    fn base(name: &str) -> Self {
        Workload {
            name: name.into(),
            producers: 1,
            consumers: 1,
            consumer_groups: 1,
            message_bytes: 1024,
            keys: Keys::None,
            partitions: 16,
            acks: "all".into(),
            compression: "none".into(),
            topic_compression: None,
            linger_ms: 5,
            batch_bytes: 1 << 20,
            rate: None,
            duration_s: 30,
            warmup_s: 5,
            background_write_mb_per_s: 0,
            backlog_mb: 0,
        }
    }

    /// The shipped workloads.
    pub fn named(name: &str) -> Option<Workload> {
        let mut w = Workload::base(name);
        match name {
            // Seconds long: proves the harness works (CI), not for numbers.
            "smoke" => {
                w.partitions = 4;
                w.rate = Some(2_000);
                w.duration_s = 3;
                w.warmup_s = 1;
            }
            "throughput" => {}
            // Fixed rate; the compare command sets it to half of Kafka's max.
            "latency" => w.rate = Some(50_000),
            "many-producers" => {
                w.producers = 50;
                w.keys = Keys::Uniform;
            }
            "fanout" => {
                w.consumers = 4;
                w.consumer_groups = 4;
            }
            "small-messages" => w.message_bytes = 100,
            // Fixed rate (set like latency's) while one consumer catches up
            // on a backlog that is no longer in the page cache.
            "catch-up" => {
                w.rate = Some(50_000);
                w.backlog_mb = 2048;
                w.consumer_groups = 0;
            }
            // Producers compress with lz4 and the topic stores zstd, so the
            // broker recompresses every batch on produce.
            "compressed" => {
                w.compression = "lz4".into();
                w.topic_compression = Some("zstd".into());
            }
            // Fixed rate (set like latency's) while another writer fills
            // the page cache with dirty pages at a fixed rate.
            "noisy-neighbour" => {
                w.rate = Some(50_000);
                w.background_write_mb_per_s = 100;
            }
            _ => return None,
        }
        Some(w)
    }

    /// Names of every shipped workload.
    pub const NAMES: &'static [&'static str] = &[
        "smoke",
        "throughput",
        "latency",
        "many-producers",
        "fanout",
        "small-messages",
        "catch-up",
        "noisy-neighbour",
        "compressed",
    ];

    /// Whether the compare command runs this at a fixed rate of half
    /// Kafka's maximum (measured by the throughput workload first).
    pub fn paced_by_kafka_max(&self) -> bool {
        matches!(self.name.as_str(), "latency" | "catch-up" | "noisy-neighbour")
    }
}
