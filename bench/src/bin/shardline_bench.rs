//! `shardline-bench`: the load generator and the side-by-side harness.
//!
//! * `run`: one workload against a broker already running (`--bootstrap`),
//!   optionally measuring its process (`--broker-pid`); writes a JSON report.
//! * `compare`: starts Shardline and Apache Kafka (4.4.0 by default) itself
//!   (fresh data directory each run), alternates them S,K then K,S on each
//!   workload at each durability setting, each run after the page cache's
//!   writeback has finished and after the same warm-up (30 s by default, for
//!   Kafka's JIT), optionally with both brokers pinned to the same CPUs
//!   (`--broker-cpus`) and the load generator to the rest; writes
//!   `report.json`, `setup.json` and `report.md` with medians and
//!   Shardline/Kafka ratios.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use shardline_bench::harness::{measure_with, RunTarget};
use shardline_bench::machine::{allowed_cpus, cpu_list, parse_cpu_list, pin_current_thread};
use shardline_bench::report::{goals_and_profile, markdown, setup_markdown, Comparison, Medians, Setup};
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
        /// The producers' codec, instead of the workload's.
        #[arg(long)]
        compression: Option<String>,
        /// The topic's compression.type, instead of the workload's.
        #[arg(long)]
        topic_compression: Option<String>,
        /// Sample the broker with perf while the workload runs.
        #[arg(long)]
        profile: bool,
        /// The broker's data directory (a backlog workload drops it from the
        /// page cache before the run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Wait for the page cache's writeback to finish before the run.
        #[arg(long)]
        settle: bool,
    },
    /// The client side of `bench/partitions.sh`: create many partitions and
    /// measure (`fill`), or wait until every one reads back (`--verify`,
    /// after a restart). Prints JSON.
    Partitions {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        partitions: usize,
        /// Seconds of produce spread over every partition after the fill.
        #[arg(long, default_value_t = 10)]
        spread: u64,
        /// Only wait until every partition's first record reads back.
        #[arg(long)]
        verify: bool,
        /// Only produce spread over the partitions an earlier run created.
        #[arg(long)]
        spread_only: bool,
    },
    /// The control plane on a 3-node cluster on loopback (127.0.0.1-3):
    /// controller failover after kill -9, fencing of a killed broker,
    /// metadata propagation. Prints JSON with every sample and a summary.
    Cluster {
        #[arg(long, default_value = "target/release/shardline")]
        shardline_bin: PathBuf,
        /// kill -9s of the active controller (and up to 5 of another broker).
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Topic creations timed until every broker lists them.
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Partitions to create at the end, in topics of 1000 (0: none).
        #[arg(long, default_value_t = 0)]
        scale_partitions: usize,
        #[arg(long, default_value = "target/bench-cluster")]
        dir: PathBuf,
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
        /// Pin each broker to these CPUs (`taskset -c` syntax, e.g. "0") and
        /// the load generator to the others.
        #[arg(long)]
        broker_cpus: Option<String>,
        /// Warm-up seconds before each measured window, for both brokers
        /// (Kafka's JIT needs at least 30 s).
        #[arg(long, default_value_t = 30)]
        warmup: u64,
        /// Apache Kafka version, fetched from Maven Central (default:
        /// $KAFKA_VERSION, else 4.4.0).
        #[arg(long)]
        kafka_version: Option<String>,
        /// A Shardline setting (`key=value`, repeatable) for every
        /// Shardline run, stated in the report.
        #[arg(long = "shardline-set")]
        shardline_set: Vec<String>,
    },
}

/// A broker started by the harness; stopped (SIGTERM, then SIGKILL) on drop.
struct Started {
    child: Child,
    pid: u32,
    bootstrap: String,
    _dir: PathBuf,
    /// Where its partition data lives.
    data_dir: PathBuf,
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

/// The longest a run waits for the page cache's writeback to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

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

/// A command for `program`, pinned to `cpus` with taskset when given.
fn pinned(program: &Path, cpus: Option<&[usize]>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu_list(cpus)).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn start_shardline(binary: &Path, fsync: bool, cpus: Option<&[usize]>, settings: &[String]) -> Started {
    let dir = std::env::temp_dir().join(format!("shardline-bench-{}", free_port()));
    let port = free_port();
    let mut command = pinned(binary, cpus);
    command.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(&dir);
    if let Some(cpus) = cpus {
        // One shard per pinned core.
        command.args(["--shards", &cpus.len().to_string()]);
    }
    for setting in settings {
        command.args(["--set", setting]);
    }
    let mut child = command
        .args(["--set", &format!("acks_all_fsync={fsync}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardline (build it with cargo build --release)");
    wait_ready(&mut child, "listening");
    let pid = child.id();
    Started { child, pid, bootstrap: format!("127.0.0.1:{port}"), data_dir: dir.clone(), _dir: dir }
}

fn start_kafka(heap: &str, fsync: bool, cpus: Option<&[usize]>, version: &str) -> Started {
    let dir = std::env::temp_dir().join(format!("kafka-bench-{}", free_port()));
    let port = free_port();
    let mut command = pinned(Path::new("bash"), cpus);
    command.env("KAFKA_VERSION", version);
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
    Started { child, pid, bootstrap: format!("127.0.0.1:{port}"), data_dir: dir.join("logs"), _dir: dir }
}

/// The first line `program args` prints (stdout or stderr), or "unknown".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            String::from_utf8_lossy(&text).lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine_description() -> String {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    // Online CPUs, not this process's: the load generator may be pinned.
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0);
    format!("{cpus} CPUs, {memory} RAM, {}", first_line("uname", &["-sr"]))
}

fn main() {
    match Cli::parse().command {
        Cmd::Run {
            bootstrap,
            workload,
            broker_pid,
            broker_name,
            durability,
            duration,
            rate,
            out,
            compression,
            topic_compression,
            profile,
            data_dir,
            settle,
        } => {
            let mut w = Workload::named(&workload)
                .unwrap_or_else(|| panic!("unknown workload {workload}; known: {:?}", Workload::NAMES));
            if let Some(d) = duration {
                w.duration_s = d;
            }
            if rate.is_some() {
                w.rate = rate;
            }
            if let Some(codec) = compression {
                w.compression = codec;
            }
            if topic_compression.is_some() {
                w.topic_compression = topic_compression;
            }
            let target = RunTarget {
                bootstrap: &bootstrap,
                broker: &broker_name,
                durability: &durability,
                pid: broker_pid,
                data_dir: data_dir.as_deref(),
                profile,
                settle: settle.then_some(SETTLE_LIMIT),
                cpus: None,
            };
            let report = measure_with(&target, &w);
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
        Cmd::Cluster { shardline_bin, kills, changes, scale_partitions, dir } => {
            let figures = shardline_bench::cluster::run(&shardline_bin, &dir, kills, changes, scale_partitions);
            let summary = |samples: &[f64]| {
                let mut sorted = samples.to_vec();
                sorted.sort_by(f64::total_cmp);
                let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
                let max = sorted.last().copied().unwrap_or(f64::NAN);
                format!("median {median:.3} s, max {max:.3} s of {}", sorted.len())
            };
            eprintln!("controller failover: {}", summary(&figures.controller_failover_s));
            eprintln!("fencing: {}", summary(&figures.fencing_s));
            eprintln!("propagation: {}", summary(&figures.propagation_s));
            println!("{}", serde_json::to_string(&figures).expect("json"));
        }
        Cmd::Partitions { bootstrap, partitions, spread, verify, spread_only } => {
            if spread_only {
                let mb_per_s = shardline_bench::partitions::spread_only(&bootstrap, partitions, spread);
                println!("{{\"spread_mb_per_s\": {mb_per_s:.3}}}");
            } else if verify {
                let started = std::time::Instant::now();
                shardline_bench::partitions::read_all(&bootstrap, partitions, Duration::from_secs(600));
                println!("{{\"verify_s\": {:.3}}}", started.elapsed().as_secs_f64());
            } else {
                let fill = shardline_bench::partitions::fill(&bootstrap, partitions, spread);
                println!("{}", serde_json::to_string(&fill).expect("json"));
            }
        }
        Cmd::Compare {
            workloads,
            rounds,
            durability,
            duration,
            out_dir,
            kafka_heap,
            shardline_bin,
            no_profile,
            broker_cpus,
            warmup,
            kafka_version,
            shardline_set,
        } => {
            let kafka_version =
                kafka_version.or_else(|| std::env::var("KAFKA_VERSION").ok()).unwrap_or_else(|| "4.4.0".into());
            let status =
                Command::new("bash").arg("bench/kafka/fetch.sh").arg(&kafka_version).status().expect("fetch.sh");
            assert!(status.success(), "fetching Kafka {kafka_version} failed");
            let broker_cpus = broker_cpus.map(|list| parse_cpu_list(&list).unwrap_or_else(|e| panic!("{e}")));
            let loadgen_cpus = broker_cpus.as_ref().map(|brokers| {
                let others: Vec<usize> = allowed_cpus().into_iter().filter(|c| !brokers.contains(c)).collect();
                assert!(!others.is_empty(), "--broker-cpus leaves no CPU for the load generator");
                // Pinned before any client thread starts: they all inherit it.
                pin_current_thread(&others).expect("pin the load generator");
                others
            });
            let setup = Setup {
                shardline_version: first_line("git", &["describe", "--always", "--dirty"]),
                kafka_version: kafka_version.clone(),
                java: first_line(&std::env::var("JAVA").unwrap_or_else(|_| "java".into()), &["-version"]),
                machine: machine_description(),
                broker_cpus: broker_cpus.as_deref().map(cpu_list),
                loadgen_cpus: loadgen_cpus.as_deref().map(cpu_list),
                warmup_s: warmup,
                duration_s: duration.unwrap_or(Workload::named("throughput").map_or(30, |w| w.duration_s)),
                rounds,
                shardline_settings: shardline_set.clone(),
            };
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
                    w.warmup_s = warmup;
                    if w.paced_by_kafka_max() {
                        if let Some(max) = kafka_max_rate {
                            w.rate = Some((max / 2.0).max(1.0) as u64);
                        }
                    }
                    let mut runs = Vec::new();
                    for round in 0..rounds {
                        // The order alternates, so neither broker always
                        // runs after the other.
                        let order = if round % 2 == 0 { ["shardline", "kafka"] } else { ["kafka", "shardline"] };
                        for broker in order {
                            eprintln!("{label} / {} / round {} / {broker}", w.name, round + 1);
                            let cpus = broker_cpus.as_deref();
                            let started = if broker == "shardline" {
                                start_shardline(&shardline_bin, fsync, cpus, &shardline_set)
                            } else {
                                start_kafka(&kafka_heap, fsync, cpus, &kafka_version)
                            };
                            // perf costs the broker a little CPU: only the last
                            // Shardline round is sampled, and medians absorb it.
                            let profile = !no_profile && broker == "shardline" && round + 1 == rounds;
                            let target = RunTarget {
                                bootstrap: &started.bootstrap,
                                broker,
                                durability: label,
                                pid: Some(started.pid),
                                data_dir: Some(&started.data_dir),
                                profile,
                                settle: Some(SETTLE_LIMIT),
                                cpus: setup.broker_cpus.clone(),
                            };
                            runs.push(measure_with(&target, &w));
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
            std::fs::write(out_dir.join("setup.json"), serde_json::to_string_pretty(&setup).expect("json"))
                .expect("write");
            let table = setup_markdown(&setup) + &markdown(&comparisons) + &goals_and_profile(&comparisons);
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
