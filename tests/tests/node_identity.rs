//! A node's identity at start: the data directory's `meta.properties`
//! (cluster and node id) and the quorum configuration are checked before
//! anything on disk changes, and a mismatch stops the broker with a
//! message naming it; `broker_rack` shows in Metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use shardline_tests::{broker_binary, free_port, Broker, RawClient};

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            }
            files.insert(entry.path().display().to_string(), (meta.len(), meta.modified().expect("mtime")));
        }
    }
    files
}

/// Runs `shardline serve` on `data_dir` with `extra` and expects it to
/// exit at once with an error; returns its stderr.
fn refused_start(data_dir: &Path, extra: &[&str]) -> String {
    let address = format!("127.0.0.1:{}", free_port());
    let output = Command::new(broker_binary())
        .args(["serve", "--listen", &address, "--data-dir", &data_dir.display().to_string(), "--shards", "1"])
        .args(extra)
        .output()
        .expect("run shardline");
    assert!(!output.status.success(), "the broker must refuse to start with {extra:?}");
    assert!(output.stdout.is_empty(), "it never listened: {:?}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_data_directory_of_another_node_or_cluster_is_refused_and_left_as_it_was() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut client = RawClient::connect(&broker.address);
    client.create_topic("kept", 2);
    drop(client);
    broker.stop();
    let data_dir = broker.data_dir.clone();
    let before = snapshot(&data_dir);
    let meta = std::fs::read_to_string(data_dir.join("meta.properties")).expect("formatted");
    assert!(meta.contains("node.id=0") && meta.contains("cluster.id="), "{meta}");

    let stderr = refused_start(&data_dir, &["--set", "node_id=5"]);
    assert!(stderr.contains("was formatted for node.id 0, but this node is configured with node_id 5"), "{stderr}");
    let stderr = refused_start(&data_dir, &["--set", "cluster_id=someOtherCluster"]);
    assert!(stderr.contains("was formatted for cluster"), "{stderr}");
    assert!(stderr.contains("configured for cluster someOtherCluster"), "{stderr}");
    assert_eq!(snapshot(&data_dir), before, "nothing in the data directory changed");

    // The right identity starts, with the topic.
    broker.restart();
    let mut client = RawClient::connect(&broker.address);
    let mut all_topics = MetadataRequest::default();
    all_topics.topics = None;
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &all_topics);
    assert!(response.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "kept")));
}

#[test]
fn a_controller_missing_from_the_voters_is_refused_before_the_data_directory_is_made() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().join("data");
    let stderr =
        refused_start(&data_dir, &["--set", "node_id=2", "--set", "controller_quorum_voters=1@127.0.0.1:9093"]);
    assert!(stderr.contains("node_id 2 has the controller role but is not in controller_quorum_voters"), "{stderr}");
    let stderr = refused_start(&data_dir, &["--set", "controller_quorum_voters=1@127.0.0.1:9093,1@127.0.0.2:9093"]);
    assert!(stderr.contains("names node id 1 twice"), "{stderr}");
    assert!(!data_dir.exists(), "nothing was created");
}

#[test]
fn broker_rack_is_in_metadata() {
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--set",
        "broker_rack=rack-a",
        "--set",
        "controller_quorum_voters=0@127.0.0.1:9093",
    ]);
    let mut client = RawClient::connect(&broker.address);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(response.brokers.len(), 1);
    assert_eq!(response.brokers[0].rack.as_ref().map(|r| r.as_str()), Some("rack-a"));
}
