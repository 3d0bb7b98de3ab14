//! One measured run: create the topic, run the workload, read the broker's
//! CPU time and peak RSS around it, build the report. Shared by the
//! `shardline-bench` command and the harness's own test.

use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::broker_stats::{cpu_seconds, peak_rss_mib};
use crate::load;
use crate::machine;
use crate::profile;
use crate::report::RunReport;
use crate::workload::Workload;

/// Creates `topic` with `partitions` and the topic configs `configs` (an
/// existing one is fine).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let created = futures::executor::block_on(admin.create_topics(&[new_topic], &options));
    match created {
        Ok(results) => {
            if let Some(Err((_, code))) = results.first() {
                if *code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    panic!("creating {topic}: {code:?}");
                }
            }
        }
        Err(error) => panic!("creating {topic}: {error}"),
    }
}

/// The broker a run measures, and how.
#[derive(Debug, Clone, Default)]
pub struct RunTarget<'a> {
    /// Its bootstrap address.
    pub bootstrap: &'a str,
    /// "shardline" or "kafka".
    pub broker: &'a str,
    /// The durability setting, stated.
    pub durability: &'a str,
    /// Its process, for CPU time and peak RSS.
    pub pid: Option<u32>,
    /// Its data directory, so a backlog can be dropped from the page cache.
    pub data_dir: Option<&'a Path>,
    /// Sample it with perf while the workload runs.
    pub profile: bool,
    /// Wait for the page cache's writeback before the run, at most this long.
    pub settle: Option<Duration>,
    /// The CPUs it is pinned to, stated.
    pub cpus: Option<String>,
}

/// Runs `workload` on a fresh topic and measures the broker process `pid`;
/// with `profile`, also samples it with perf (where perf works).
pub fn measure(
    bootstrap: &str,
    workload: &Workload,
    broker: &str,
    durability: &str,
    pid: Option<u32>,
    profile: bool,
) -> RunReport {
    measure_with(&RunTarget { bootstrap, broker, durability, pid, profile, ..RunTarget::default() }, workload)
}

/// Runs `workload` against `target`: fills its backlog (then writes it back
/// and drops it from the page cache), waits for writeback when asked, and
/// measures the run.
pub fn measure_with(target: &RunTarget<'_>, workload: &Workload) -> RunReport {
    let topic = format!("bench-{}-{}", workload.name, std::process::id());
    let configs: Vec<(&str, &str)> =
        workload.topic_compression.as_deref().map(|codec| ("compression.type", codec)).into_iter().collect();
    create_topic(target.bootstrap, &topic, workload.partitions, &configs);
    let mut backlog_dropped_bytes = None;
    let mut backlog_messages = 0;
    if workload.backlog_mb > 0 {
        backlog_messages = load::fill_backlog(target.bootstrap, &topic, workload);
        backlog_dropped_bytes = target.data_dir.map(machine::drop_from_page_cache);
    }
    let page_cache = target.settle.map(machine::settle_writeback);
    let recording = target.pid.filter(|_| target.profile).and_then(profile::start);
    let cpu_before = target.pid.map_or(0.0, cpu_seconds);
    let result = load::run(target.bootstrap, &topic, workload, target.pid);
    let profile = recording.and_then(|r| r.finish());
    let cpu = target.pid.map_or(0.0, cpu_seconds) - cpu_before;
    let rss = target.pid.map_or(0.0, peak_rss_mib);
    let mut report = RunReport::new(workload, target.broker, target.durability, &result, cpu, rss);
    report.profile = profile;
    report.page_cache = page_cache;
    report.backlog_messages = backlog_messages;
    report.backlog_dropped_bytes = backlog_dropped_bytes;
    report.broker_cpus = target.cpus.clone();
    report
}
