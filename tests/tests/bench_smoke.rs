//! The benchmark harness works: the `smoke` workload against Shardline
//! yields a report whose every figure is present and non-zero, and whose
//! message counts match what was produced.

use shardline_bench::harness::measure;
use shardline_bench::workload::Workload;
use shardline_tests::Broker;

#[test]
fn smoke_workload_report_is_complete_and_counts_match() {
    let broker = Broker::start(&["--shards", "2"]);
    let workload = Workload::named("smoke").expect("smoke workload");
    let report = measure(&broker.address, &workload, "shardline", "acks=all with fsync", Some(broker.pid()), false);
    assert_eq!(report.errors, 0);
    assert!(report.total_acked > 0);
    assert_eq!(
        report.total_consumed_per_consumer,
        vec![report.total_acked],
        "every acknowledged message was consumed once"
    );
    for (name, value) in [
        ("produce MB/s", report.produce_mb_per_s),
        ("produce msg/s", report.produce_msgs_per_s),
        ("consume MB/s", report.consume_mb_per_s),
        ("CPU-s/GB", report.broker_cpu_s_per_gb),
        ("peak RSS", report.broker_peak_rss_mib),
    ] {
        assert!(value > 0.0, "{name} is {value}");
    }
    for latency in [&report.produce_latency, &report.e2e_latency] {
        assert!(latency.count > 0);
        for value in [latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.p9999_ms, latency.max_ms] {
            assert!(value > 0.0, "{latency:?}");
        }
        assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    }
    let measured: Vec<_> = report.seconds.iter().filter(|s| s.second >= 0).collect();
    assert_eq!(measured.len() as u64, workload.duration_s, "one sample per measured second");
    // Counts, not timing: a second in which a loaded 2-core machine
    // stalled the clients may hold nothing, but the samples add up.
    assert!(measured.iter().any(|s| s.produced_messages > 0 && s.consumed_messages > 0));
    let sampled: u64 = report.seconds.iter().map(|s| s.produced_messages).sum();
    assert!(sampled <= report.total_acked, "the samples ({sampled}) count only acknowledged messages");
    let window: u64 = measured.iter().map(|s| s.produced_messages).sum();
    let rate = window as f64 / workload.duration_s as f64;
    assert!(
        (report.produce_msgs_per_s - rate).abs() < 1e-6,
        "msg/s {} is the window's {rate}",
        report.produce_msgs_per_s
    );
    let json = serde_json::to_value(&report).expect("serializes");
    for field in [
        "produce_mb_per_s",
        "produce_latency",
        "e2e_latency",
        "broker_cpu_s_per_gb",
        "broker_peak_rss_mib",
        "seconds",
        "workload",
    ] {
        assert!(json.get(field).is_some(), "report has {field}");
    }
}

#[test]
fn a_backlog_run_beside_a_noisy_neighbour_reads_the_backlog_and_counts_the_window() {
    use shardline_bench::harness::{measure_with, RunTarget};
    let broker = Broker::start(&["--shards", "1"]);
    let mut workload = Workload::named("smoke").expect("smoke workload");
    workload.name = "smoke-backlog".into();
    workload.backlog_mb = 8;
    workload.consumer_groups = 0;
    workload.background_write_mb_per_s = 20;
    let target = RunTarget {
        bootstrap: &broker.address,
        broker: "shardline",
        durability: "as configured",
        pid: Some(broker.pid()),
        data_dir: Some(&broker.data_dir),
        profile: false,
        settle: Some(std::time::Duration::from_secs(60)),
        cpus: None,
    };
    let report = measure_with(&target, &workload);
    assert_eq!(report.errors, 0);
    assert_eq!(report.backlog_messages, 8_000_000 / workload.message_bytes as u64, "the whole backlog was written");
    assert!(report.backlog_dropped_bytes.is_some_and(|b| b >= 8_000_000), "{:?}", report.backlog_dropped_bytes);
    assert_eq!(
        report.total_consumed_per_consumer,
        vec![report.backlog_messages + report.total_acked],
        "the consumer read the backlog and every message of the run, once"
    );
    assert!(report.cpu_over_window, "broker CPU is counted over the measured window");
    assert!(report.page_cache.is_some(), "the page cache state is recorded");
    assert!(report.neighbour_written_bytes > 0, "the neighbour wrote");
}

#[test]
fn the_compressed_workload_sends_lz4_into_a_zstd_topic() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;
    let broker = Broker::start(&["--shards", "1"]);
    let shipped = Workload::named("compressed").expect("compressed workload");
    assert_eq!((shipped.compression.as_str(), shipped.topic_compression.as_deref()), ("lz4", Some("zstd")));
    let mut workload = Workload::named("smoke").expect("smoke workload");
    workload.name = "smoke-compressed".into();
    workload.compression = shipped.compression.clone();
    workload.topic_compression = shipped.topic_compression.clone();
    let report = measure(&broker.address, &workload, "shardline", "as configured", Some(broker.pid()), false);
    assert_eq!(report.errors, 0);
    assert!(report.total_acked > 0);
    assert_eq!(report.total_consumed_per_consumer, vec![report.total_acked], "every message read once");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("admin client");
    let topic = format!("bench-{}-{}", workload.name, std::process::id());
    let described =
        futures::executor::block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new()))
            .expect("describe configs");
    let resource = described[0].as_ref().expect("the topic's configs");
    let codec = resource.get("compression.type").and_then(|entry| entry.value.clone());
    assert_eq!(codec.as_deref(), Some("zstd"), "the harness created the topic with the workload's codec");
}
