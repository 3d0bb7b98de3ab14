//! `shardline-bench`: the load generator and the side-by-side harness.
//!
//! * `run`: one workload against a broker already running (`--bootstrap`),
//!   optionally measuring its process (`--broker-pid`); writes a JSON report.
//! * `compare`: starts Shardline and Apache Kafka itself (fresh data
//!   directory each run), alternates them A, B, A, B on each workload at each
//!   durability setting, and writes `report.json` and `report.md` with
//!   medians and Shardline/Kafka ratios.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use shardline_bench::harness::measure;
use shardline_bench::report::{goals_and_profile, markdown, Comparison, Medians};
use shardline_bench::workload::Workload;

#[derive(Parser)]
#[command(name = "shardline-bench", about = "Kafka-protocol load generator and Shardline-vs-Kafka harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload against a running broker.
    Run {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "smoke")]
        workload: String,
        /// PID of the broker process, to report its CPU and peak RSS.
        #[arg(long)]
        broker_pid: Option<u32>,
        #[arg(long, default_value = "broker")]
        broker_name: String,
        #[arg(long, default_value = "as configured")]
        durability: String,
        #[arg(long)]
        duration: Option<u64>,
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Sample the broker with perf while the workload runs.
        #[arg(long)]
        profile: bool,
    },
    /// Start both brokers and compare them side by side.
    Compare {
        #[arg(long, default_value = "throughput,latency")]
        workloads: String,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// kafka-default, fsync, or both.
        #[arg(long, default_value = "both")]
        durability: String,
        #[arg(long)]
        duration: Option<u64>,
        #[arg(long, default_value = "target/bench-report")]
        out_dir: PathBuf,
        #[arg(long, default_value = "1G")]
        kafka_heap: String,
        #[arg(long, default_value = "target/release/shardline")]
        shardline_bin: PathBuf,
        /// Do not sample Shardline with perf in the last round.
        #[arg(long)]
        no_profile: bool,
    },
}

/// A broker started by the harness; stopped (SIGTERM, then SIGKILL) on drop.
struct Started {
    child: Child,
    pid: u32,
    bootstrap: String,
    _dir: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process (and Kafka's JVM).
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits for a line containing `ready` on the child's stdout; returns the
/// lines seen.
fn wait_ready(child: &mut Child, ready: &str) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("broker not ready: {seen:?}"));
        let done = line.contains(ready);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

fn start_shardline(binary: &Path, fsync: bool) -> Started {
    let dir = std::env::temp_dir().join(format!("shardline-bench-{}", free_port()));
    let port = free_port();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .args(["--set", &format!("acks_all_fsync={fsync}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardline (build it with cargo build --release)");
    wait_ready(&mut child, "listening");
    let pid = child.id();
    Started { child, pid, bootstrap: format!("127.0.0.1:{port}"), _dir: dir }
}

fn start_kafka(heap: &str, fsync: bool) -> Started {
    let dir = std::env::temp_dir().join(format!("kafka-bench-{}", free_port()));
    let port = free_port();
    let mut command = Command::new("bash");
    command.arg("bench/kafka/start.sh").arg(&dir).arg(port.to_string()).args(["--heap", heap]);
    if fsync {
        command.arg("--fsync-every-message");
    }
    // Kafka's log level stays INFO: start.sh waits for "Kafka Server started".
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("bench/kafka/start.sh");
    let lines = wait_ready(&mut child, "kafka ready");
    let pid = lines
        .iter()
        .find_map(|l| l.strip_prefix("kafka pid ").and_then(|p| p.trim().parse().ok()))
        .unwrap_or_else(|| child.id());
    Started { child, pid, bootstrap: format!("127.0.0.1:{port}"), _dir: dir }
}

fn main() {
    match Cli::parse().command {
        Cmd::Run { bootstrap, workload, broker_pid, broker_name, durability, duration, rate, out, profile } => {
            let mut w = Workload::named(&workload)
                .unwrap_or_else(|| panic!("unknown workload {workload}; known: {:?}", Workload::NAMES));
            if let Some(d) = duration {
                w.duration_s = d;
            }
            if rate.is_some() {
                w.rate = rate;
            }
            let report = measure(&bootstrap, &w, &broker_name, &durability, broker_pid, profile);
            let json = serde_json::to_string_pretty(&report).expect("json");
            match out {
                Some(path) => std::fs::write(&path, json).expect("write report"),
                None => println!("{json}"),
            }
            let m = Medians::of(std::slice::from_ref(&report));
            eprintln!(
                "{}: {:.1} MB/s, {:.0} msg/s, produce p99.9 {:.1} ms, e2e p99.9 {:.1} ms",
                w.name, m.produce_mb_per_s, m.produce_msgs_per_s, m.produce_latency_ms[2], m.e2e_latency_ms[2]
            );
        }
        Cmd::Compare { workloads, rounds, durability, duration, out_dir, kafka_heap, shardline_bin, no_profile } => {
            let status = Command::new("bash").arg("bench/kafka/fetch.sh").status().expect("bench/kafka/fetch.sh");
            assert!(status.success(), "fetching Kafka failed");
            let settings: Vec<(&str, bool)> = match durability.as_str() {
                "kafka-default" => vec![("kafka-default (no fsync per write)", false)],
                "fsync" => vec![("fsync before ack", true)],
                _ => vec![("kafka-default (no fsync per write)", false), ("fsync before ack", true)],
            };
            let mut comparisons = Vec::new();
            for (label, fsync) in settings {
                let mut kafka_max_rate: Option<f64> = None;
                for name in workloads.split(',') {
                    let mut w = Workload::named(name.trim()).unwrap_or_else(|| panic!("unknown workload {name}"));
                    if let Some(d) = duration {
                        w.duration_s = d;
                    }
                    if w.name == "latency" {
                        if let Some(max) = kafka_max_rate {
                            w.rate = Some((max / 2.0).max(1.0) as u64);
                        }
                    }
                    let mut runs = Vec::new();
                    for round in 0..rounds {
                        for broker in ["shardline", "kafka"] {
                            eprintln!("{label} / {} / round {} / {broker}", w.name, round + 1);
                            let started = if broker == "shardline" {
                                start_shardline(&shardline_bin, fsync)
                            } else {
                                start_kafka(&kafka_heap, fsync)
                            };
                            // perf costs the broker a little CPU: only the last
                            // Shardline round is sampled, and medians absorb it.
                            let profile = !no_profile && broker == "shardline" && round + 1 == rounds;
                            runs.push(measure(&started.bootstrap, &w, broker, label, Some(started.pid), profile));
                        }
                    }
                    let of = |b: &str| Medians::of(&runs.iter().filter(|r| r.broker == b).cloned().collect::<Vec<_>>());
                    let (shardline, kafka) = (of("shardline"), of("kafka"));
                    if w.name == "throughput" {
                        kafka_max_rate = Some(kafka.produce_msgs_per_s);
                    }
                    comparisons.push(Comparison {
                        workload: w.name.clone(),
                        durability: label.into(),
                        shardline,
                        kafka,
                        runs,
                    });
                }
            }
            std::fs::create_dir_all(&out_dir).expect("out dir");
            std::fs::write(out_dir.join("report.json"), serde_json::to_string_pretty(&comparisons).expect("json"))
                .expect("write");
            let table = markdown(&comparisons) + &goals_and_profile(&comparisons);
            std::fs::write(out_dir.join("report.md"), &table).expect("write");
            println!("{table}");
            let plotted =
                Command::new("python3").arg("bench/plot.py").arg(out_dir.join("report.json")).arg(&out_dir).status();
            if !plotted.is_ok_and(|s| s.success()) {
                eprintln!("plots not drawn: pip install -r bench/requirements.txt, then python3 bench/plot.py {}/report.json {}", out_dir.display(), out_dir.display());
            }
        }
    }
}
