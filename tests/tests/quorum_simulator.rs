//! The controller quorum in the deterministic simulator
//! (`shardline_tests::sim::quorum`): three or five raft-rs voters over a
//! network that drops, delays, duplicates, reorders and partitions, with
//! crashes mid-write, restarts and leader transfers; safety checked after
//! every tick, liveness after the network heals.
//!
//! `SHARDLINE_QUORUM_SIM_SEEDS=N` runs seeds 0..N (CI runs the default
//! slice; `SHARDLINE_SIM_FIRST_SEED` moves the start);
//! `SHARDLINE_QUORUM_SIM_SEED=S` replays one seed, `SHARDLINE_SIM_VERBOSE=1`
//! printing its trace.

use std::time::Instant;

use shardline_tests::sim::quorum::{run_quorum_seed, QuorumSimConfig, LIVENESS_TICKS};

const DEFAULT_SEEDS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config() -> QuorumSimConfig {
    let verbose = std::env::var("SHARDLINE_SIM_VERBOSE").is_ok_and(|v| v == "1");
    let steps = env_u64("SHARDLINE_QUORUM_SIM_STEPS").unwrap_or(QuorumSimConfig::default().steps);
    QuorumSimConfig { steps, verbose }
}

#[test]
fn seeded_quorum_runs_keep_safety_and_recover_after_healing() {
    let config = config();
    if let Some(seed) = env_u64("SHARDLINE_QUORUM_SIM_SEED") {
        match run_quorum_seed(seed, &config) {
            Ok(report) => println!("quorum simulator seed {seed}: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let first = env_u64("SHARDLINE_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("SHARDLINE_QUORUM_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = Instant::now();
    let (mut acknowledged, mut crashes, mut snapshots, mut terms, mut worst_recovery) = (0, 0, 0, 0, 0);
    let mut fencings = 0;
    for seed in first..first + count {
        let report = run_quorum_seed(seed, &config).unwrap_or_else(|failure| panic!("{failure}"));
        acknowledged += report.acknowledged;
        crashes += report.crashes;
        snapshots += report.snapshots_installed;
        terms += report.leader_terms;
        worst_recovery = worst_recovery.max(report.recovery_ticks);
        fencings += report.fencings;
    }
    println!(
        "quorum simulator: {count} seeds in {:.1} s: {acknowledged} proposals acknowledged, {crashes} crashes, \
         {terms} leader terms, {snapshots} snapshots installed, {fencings} brokers fenced, slowest recovery {worst_recovery} ticks (bound {LIVENESS_TICKS})",
        started.elapsed().as_secs_f64()
    );
    assert!(acknowledged > count * 20, "the runs committed work: {acknowledged}");
    assert!(crashes > count, "the runs crashed nodes: {crashes}");
    assert!(terms > count * 2, "the runs changed leaders: {terms} terms");
    assert!(snapshots > 0, "some follower caught up from a snapshot");
    assert!(fencings > count / 2, "brokers lost their leases and were fenced: {fencings}");
}

#[test]
fn the_same_quorum_seed_gives_the_same_trace() {
    let config = QuorumSimConfig { verbose: false, ..config() };
    let mut hashes = Vec::new();
    for seed in [5u64, 17, 42] {
        let first = run_quorum_seed(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        let again = run_quorum_seed(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(first, again, "seed {seed} replays exactly");
        hashes.push(first.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "different seeds make different runs");
}

/// Seed 520 once left two voters with one election timeout splitting every
/// vote while the third, with a longer log, refused both: no leader for
/// 400 ticks after the heal. A failed election now adds a jitter drawn from
/// the node's incarnation and the term.
#[test]
fn voters_in_lockstep_elect_a_leader_after_a_split_vote() {
    let report = run_quorum_seed(520, &config()).unwrap_or_else(|f| panic!("{f}"));
    assert!(report.recovery_ticks < 400, "{report:?}");
}

/// Seed 1397 once ended with a partition leaderless while its only in-sync
/// replica was live: the batch carrying the change owed after the broker's
/// return was dropped by a leader transfer, and nothing owed it again.
#[test]
fn partition_changes_of_a_dropped_batch_are_owed_again() {
    let report = run_quorum_seed(1397, &config()).unwrap_or_else(|f| panic!("{f}"));
    assert!(report.recovery_ticks < 400, "{report:?}");
}
