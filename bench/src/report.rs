//! Reports: one run's figures (throughput, latency percentiles, broker CPU
//! per GB and peak RSS) as JSON, and side-by-side comparisons with medians
//! and Shardline/Kafka ratios as Markdown.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::{LoadResult, Second};
use crate::machine::PageCacheState;
use crate::profile::Profile;
use crate::workload::Workload;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// 99.99th percentile.
    pub p9999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One run of one workload against one broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The workload as run.
    pub workload: Workload,
    /// "shardline" or "kafka".
    pub broker: String,
    /// The durability setting, stated.
    pub durability: String,
    /// Produce throughput over the measured window.
    pub produce_mb_per_s: f64,
    /// Messages per second produced.
    pub produce_msgs_per_s: f64,
    /// Consume throughput (all consumers).
    pub consume_mb_per_s: f64,
    /// Produce acknowledgement latency.
    pub produce_latency: Percentiles,
    /// End-to-end latency.
    pub e2e_latency: Percentiles,
    /// Broker CPU seconds per GB moved (produced + consumed) over the run.
    pub broker_cpu_s_per_gb: f64,
    /// Broker peak resident memory.
    pub broker_peak_rss_mib: f64,
    /// Messages acknowledged over the whole run.
    pub total_acked: u64,
    /// Messages each consumer read over the whole run.
    pub total_consumed_per_consumer: Vec<u64>,
    /// Failed deliveries.
    pub errors: u64,
    /// Throughput each second (negative seconds are warm-up).
    pub seconds: Vec<Second>,
    /// Where the broker's CPU time went (perf), when profiled.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Whether `broker_cpu_s_per_gb` counts the measured window only (else
    /// the whole run, warm-up included).
    #[serde(default)]
    pub cpu_over_window: bool,
    /// The page cache when the run started, after waiting for writeback.
    #[serde(default)]
    pub page_cache: Option<PageCacheState>,
    /// Messages of backlog written before the run.
    #[serde(default)]
    pub backlog_messages: u64,
    /// Bytes of backlog dropped from the page cache before the run.
    #[serde(default)]
    pub backlog_dropped_bytes: Option<u64>,
    /// Bytes the noisy neighbour wrote during the run.
    #[serde(default)]
    pub neighbour_written_bytes: u64,
    /// The CPUs the broker was pinned to (none: unpinned).
    #[serde(default)]
    pub broker_cpus: Option<String>,
}

impl RunReport {
    /// Builds the report of `result`; `cpu_s` is the broker's CPU time over
    /// the whole run (used when the window's was not read) and
    /// `peak_rss_mib` its peak RSS.
    pub fn new(
        workload: &Workload,
        broker: &str,
        durability: &str,
        result: &LoadResult,
        cpu_s: f64,
        peak_rss_mib: f64,
    ) -> Self {
        let window = result.window_s.max(1.0);
        // CPU and bytes over the same span: the measured window when its
        // CPU time was read, else the whole run.
        let (cpu_s, moved_gb) = match result.window_cpu_s {
            Some(window_cpu) => (window_cpu, (result.produced_bytes + result.consumed_bytes) as f64 / 1e9),
            None => {
                let consumed: u64 = result.total_consumed_per_consumer.iter().sum();
                (cpu_s, ((result.total_acked + consumed) * workload.message_bytes.max(16) as u64) as f64 / 1e9)
            }
        };
        RunReport {
            workload: workload.clone(),
            broker: broker.into(),
            durability: durability.into(),
            produce_mb_per_s: result.produced_bytes as f64 / 1e6 / window,
            produce_msgs_per_s: result.produced_messages as f64 / window,
            consume_mb_per_s: result.consumed_bytes as f64 / 1e6 / window,
            produce_latency: Percentiles::from_micros(&result.produce_latency),
            e2e_latency: Percentiles::from_micros(&result.e2e_latency),
            broker_cpu_s_per_gb: if moved_gb > 0.0 { cpu_s / moved_gb } else { 0.0 },
            broker_peak_rss_mib: peak_rss_mib,
            total_acked: result.total_acked,
            total_consumed_per_consumer: result.total_consumed_per_consumer.clone(),
            errors: result.errors,
            seconds: result.seconds.clone(),
            profile: None,
            cpu_over_window: result.window_cpu_s.is_some(),
            page_cache: None,
            backlog_messages: 0,
            backlog_dropped_bytes: None,
            neighbour_written_bytes: result.neighbour_written_bytes,
            broker_cpus: None,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The medians of several runs of one broker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Medians {
    /// Runs.
    pub runs: usize,
    /// MB/s produced.
    pub produce_mb_per_s: f64,
    /// Messages/s produced.
    pub produce_msgs_per_s: f64,
    /// MB/s consumed.
    pub consume_mb_per_s: f64,
    /// Produce latency p50, p99, p99.9, p99.99, max (ms).
    pub produce_latency_ms: [f64; 5],
    /// End-to-end latency p50, p99, p99.9, p99.99, max (ms).
    pub e2e_latency_ms: [f64; 5],
    /// CPU-s per GB.
    pub cpu_s_per_gb: f64,
    /// Peak RSS MiB.
    pub peak_rss_mib: f64,
}

impl Medians {
    /// Medians over `runs`.
    pub fn of(runs: &[RunReport]) -> Self {
        let m = |f: &dyn Fn(&RunReport) -> f64| median(runs.iter().map(f).collect());
        let lat = |f: &dyn Fn(&RunReport) -> &Percentiles| {
            [m(&|r| f(r).p50_ms), m(&|r| f(r).p99_ms), m(&|r| f(r).p999_ms), m(&|r| f(r).p9999_ms), m(&|r| f(r).max_ms)]
        };
        Medians {
            runs: runs.len(),
            produce_mb_per_s: m(&|r| r.produce_mb_per_s),
            produce_msgs_per_s: m(&|r| r.produce_msgs_per_s),
            consume_mb_per_s: m(&|r| r.consume_mb_per_s),
            produce_latency_ms: lat(&|r| &r.produce_latency),
            e2e_latency_ms: lat(&|r| &r.e2e_latency),
            cpu_s_per_gb: m(&|r| r.broker_cpu_s_per_gb),
            peak_rss_mib: m(&|r| r.broker_peak_rss_mib),
        }
    }
}

/// One workload at one durability setting, both brokers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Workload name.
    pub workload: String,
    /// Durability setting, stated.
    pub durability: String,
    /// Shardline medians.
    pub shardline: Medians,
    /// Kafka medians.
    pub kafka: Medians,
    /// Every run, in the order run (A, B, A, B, ...).
    pub runs: Vec<RunReport>,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// How a comparison was run: versions, machine, pinning, warm-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// Shardline's commit (`git describe`), or "unknown".
    pub shardline_version: String,
    /// Apache Kafka's version.
    pub kafka_version: String,
    /// The JVM Kafka ran on (`java -version`'s first line).
    pub java: String,
    /// CPUs and memory of the machine.
    pub machine: String,
    /// The CPUs each broker was pinned to (none: unpinned).
    pub broker_cpus: Option<String>,
    /// The CPUs the load generator was pinned to.
    pub loadgen_cpus: Option<String>,
    /// Warm-up seconds before each measured window (both brokers).
    pub warmup_s: u64,
    /// Measured seconds per run.
    pub duration_s: u64,
    /// Rounds per workload; the order alternates (S,K then K,S).
    pub rounds: usize,
    /// Settings given to every Shardline run (`key=value`), beyond the
    /// durability one.
    #[serde(default)]
    pub shardline_settings: Vec<String>,
}

/// Markdown: the setup, stated.
pub fn setup_markdown(setup: &Setup) -> String {
    format!(
        "Shardline {} vs Apache Kafka {} ({}); {}; brokers pinned to CPUs {}, load generator to {}; \
         {} s warm-up (JIT) then {} s measured per run, broker CPU counted over the measured window; \
         {} rounds, order alternating S,K / K,S; each run starts after the page cache's writeback \
         has finished; Shardline settings: {}.\n\n",
        setup.shardline_version,
        setup.kafka_version,
        setup.java,
        setup.machine,
        setup.broker_cpus.as_deref().unwrap_or("(unpinned)"),
        setup.loadgen_cpus.as_deref().unwrap_or("(unpinned)"),
        setup.warmup_s,
        setup.duration_s,
        setup.rounds,
        if setup.shardline_settings.is_empty() { "defaults".to_string() } else { setup.shardline_settings.join(", ") },
    )
}

/// Markdown table of comparisons: per workload and broker, medians and the
/// Shardline/Kafka ratio.
pub fn markdown(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| workload | durability | broker | MB/s | msg/s | produce p50 / p99 / p99.9 / p99.99 / max ms | e2e p50 / p99 / p99.9 / p99.99 / max ms | CPU-s/GB | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let lat = |l: &[f64; 5]| format!("{:.1} / {:.1} / {:.1} / {:.1} / {:.1}", l[0], l[1], l[2], l[3], l[4]);
    for c in comparisons {
        for (name, m) in [("shardline", &c.shardline), ("kafka", &c.kafka)] {
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {:.2} | {:.0} |\n",
                c.workload,
                c.durability,
                name,
                m.produce_mb_per_s,
                m.produce_msgs_per_s,
                lat(&m.produce_latency_ms),
                lat(&m.e2e_latency_ms),
                m.cpu_s_per_gb,
                m.peak_rss_mib
            ));
        }
        let (s, k) = (&c.shardline, &c.kafka);
        out.push_str(&format!(
            "| {} | {} | **ratio S/K** | {} | {} | p99.9 {} | p99.9 {} | {} | {} |\n",
            c.workload,
            c.durability,
            ratio(s.produce_mb_per_s, k.produce_mb_per_s),
            ratio(s.produce_msgs_per_s, k.produce_msgs_per_s),
            ratio(s.produce_latency_ms[2], k.produce_latency_ms[2]),
            ratio(s.e2e_latency_ms[2], k.e2e_latency_ms[2]),
            ratio(s.cpu_s_per_gb, k.cpu_s_per_gb),
            ratio(s.peak_rss_mib, k.peak_rss_mib)
        ));
    }
    out
}

/// One goal the issue sets, checked against a comparison.
struct Goal {
    what: &'static str,
    target: &'static str,
    ratio: f64,
    met: bool,
}

fn goals_of(c: &Comparison) -> Vec<Goal> {
    let (s, k) = (&c.shardline, &c.kafka);
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let mut goals = Vec::new();
    if c.workload == "throughput" || c.workload.starts_with("many") || c.workload.starts_with("small") {
        let ratio = r(s.produce_mb_per_s, k.produce_mb_per_s);
        goals.push(Goal { what: "throughput", target: ">= 2x", ratio, met: ratio >= 2.0 });
    }
    if matches!(c.workload.as_str(), "latency" | "catch-up" | "noisy-neighbour") {
        let ratio = r(s.produce_latency_ms[2], k.produce_latency_ms[2]);
        goals.push(Goal { what: "produce p99.9 at a fixed rate", target: "<= 0.1x", ratio, met: ratio <= 0.1 });
        // Stability: Shardline's worst round against its best (a ratio
        // between its own rounds, not against Kafka).
        let rounds: Vec<f64> =
            c.runs.iter().filter(|run| run.broker == "shardline").map(|run| run.produce_latency.p999_ms).collect();
        let best = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let worst = rounds.iter().copied().fold(0.0, f64::max);
        let spread = r(worst, best);
        goals.push(Goal {
            what: "p99.9 worst round / best round (Shardline)",
            target: "<= 1.5",
            ratio: spread,
            met: spread <= 1.5,
        });
    }
    let cpu = r(s.cpu_s_per_gb, k.cpu_s_per_gb);
    goals.push(Goal { what: "CPU-s per GB", target: "<= 0.25x", ratio: cpu, met: cpu <= 0.25 });
    let rss = r(s.peak_rss_mib, k.peak_rss_mib);
    goals.push(Goal { what: "peak RSS", target: "<= 0.25x", ratio: rss, met: rss <= 0.25 });
    goals
}

/// Markdown: each goal against Kafka, met or not; then, for every
/// comparison whose Shardline runs were profiled, where the broker's CPU
/// time went (categories and heaviest symbols).
pub fn goals_and_profile(comparisons: &[Comparison]) -> String {
    let mut out = String::from("\n## Goals (Shardline / Kafka)\n\n| workload | durability | goal | target | ratio | met |\n|---|---|---|---|---|---|\n");
    for c in comparisons {
        for g in goals_of(c) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} |\n",
                c.workload,
                c.durability,
                g.what,
                g.target,
                g.ratio,
                if g.met { "yes" } else { "**no**" }
            ));
        }
    }
    for c in comparisons {
        let Some(profile) = c.runs.iter().rev().filter(|r| r.broker == "shardline").find_map(|r| r.profile.as_ref())
        else {
            continue;
        };
        out.push_str(&format!(
            "\n## Where Shardline's time goes: {} / {} (perf, cpu-clock samples of the broker)\n\n| category | share |\n|---|---|\n",
            c.workload, c.durability
        ));
        for share in &profile.categories {
            out.push_str(&format!("| {} | {:.1}% |\n", share.name, share.percent));
        }
        out.push_str("\n| heaviest symbols | share |\n|---|---|\n");
        for share in &profile.top_symbols {
            out.push_str(&format!("| `{}` | {:.1}% |\n", share.name.replace('|', "\\|"), share.percent));
        }
    }
    out
}
