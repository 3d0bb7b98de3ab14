//! The deterministic simulator (`shardline_tests::sim`) over many seeds:
//! partitions, group and transaction coordinators on the fault disk with a
//! simulated clock, random client operations, power losses, kill -9 and
//! I/O errors, every invariant checked against the model.
//!
//! `SHARDLINE_SIM_SEEDS=N` runs seeds 0..N (`SHARDLINE_SIM_FIRST_SEED`
//! moves the start; CI runs the default slice); `SHARDLINE_SIM_SEED=S`
//! replays one seed, `SHARDLINE_SIM_VERBOSE=1` printing its trace.

use std::time::Instant;

use shardline_tests::sim::{run_seed, SimConfig};

const DEFAULT_SEEDS: u64 = 300;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config() -> SimConfig {
    let verbose = std::env::var("SHARDLINE_SIM_VERBOSE").is_ok_and(|v| v == "1");
    let defaults = SimConfig::default();
    let steps = env_u64("SHARDLINE_SIM_STEPS").unwrap_or(defaults.steps);
    let full_check_every = env_u64("SHARDLINE_SIM_FULL_CHECK_EVERY").unwrap_or(defaults.full_check_every);
    SimConfig { steps, verbose, full_check_every }
}

#[test]
fn seeded_runs_keep_every_invariant() {
    let config = config();
    if let Some(seed) = env_u64("SHARDLINE_SIM_SEED") {
        match run_seed(seed, &config) {
            Ok(report) => println!("simulator seed {seed}: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let first = env_u64("SHARDLINE_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("SHARDLINE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = Instant::now();
    let (mut operations, mut crashes, mut acknowledged) = (0u64, 0u64, 0u64);
    for seed in first..first + count {
        match run_seed(seed, &config) {
            Ok(report) => {
                operations += report.operations;
                crashes += report.crashes;
                acknowledged += report.acknowledged;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "simulator: {count} seeds ({first}..{}) of {} steps in {seconds:.1} s ({:.0} seeds/minute): \
         {operations} operations, {crashes} crashes, {acknowledged} acknowledged batches checked",
        first + count,
        config.steps,
        count as f64 * 60.0 / seconds.max(0.001),
    );
    assert!(operations > count * config.steps / 2, "the runs did work: {operations} operations");
    assert!(crashes > count, "the runs crashed and recovered: {crashes} crashes");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let config = SimConfig { verbose: false, ..config() };
    let mut hashes = Vec::new();
    for seed in [3u64, 11, 97] {
        let first = run_seed(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        let again = run_seed(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(first, again, "seed {seed} replays exactly");
        println!("simulator seed {seed}: trace hash {:016x} ({} lines)", first.trace_hash, first.trace_lines);
        hashes.push(first.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "different seeds make different runs");
}
