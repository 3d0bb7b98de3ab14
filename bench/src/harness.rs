//! One measured run: create the topic, run the workload, read the broker's
//! CPU time and peak RSS around it, build the report. Shared by the
//! `shardline-bench` command and the harness's own test.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::broker_stats::{cpu_seconds, peak_rss_mib};
use crate::load;
use crate::profile;
use crate::report::RunReport;
use crate::workload::Workload;

/// Creates `topic` with `partitions` (an existing one is fine).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(
        admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options),
    );
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
    let topic = format!("bench-{}-{}", workload.name, std::process::id());
    create_topic(bootstrap, &topic, workload.partitions);
    let cpu_before = pid.map_or(0.0, cpu_seconds);
    let recording = pid.filter(|_| profile).and_then(profile::start);
    let result = load::run(bootstrap, &topic, workload);
    let profile = recording.and_then(|r| r.finish());
    let cpu = pid.map_or(0.0, cpu_seconds) - cpu_before;
    let rss = pid.map_or(0.0, peak_rss_mib);
    let mut report = RunReport::new(workload, broker, durability, &result, cpu, rss);
    report.profile = profile;
    report
}
