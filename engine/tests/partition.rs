//! The partition layer on the fault disk: idempotent producers (retries,
//! gaps, fencing), transactions (last stable offset, markers, aborted
//! lists), follower appends that keep the leader's offsets and epochs,
//! truncation by leader epoch, and producer state that survives a clean
//! close, a power loss and a truncation.

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::*;
use shardline_engine::format::batch::build::set_producer;
use shardline_engine::format::batch::{BatchIter, ATTR_TRANSACTIONAL};
use shardline_engine::partition::{
    AppendOrigin, Durability, Isolation, Partition, PartitionError, PartitionRead, TxnMarker,
};
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::Disk;

const LEADER: &str = "/data/leader-0";
const FOLLOWER: &str = "/data/follower-0";

fn producer_batch(seed: u64, records: usize, producer_id: i64, epoch: i16, sequence: i32) -> BytesMut {
    let mut batch = seeded_batch(seed, records, 100, 1_000);
    set_producer(&mut batch, producer_id, epoch, sequence, 0);
    batch
}

fn transactional_batch(seed: u64, producer_id: i64, epoch: i16, sequence: i32) -> BytesMut {
    let mut batch = seeded_batch(seed, 2, 100, 1_000);
    set_producer(&mut batch, producer_id, epoch, sequence, ATTR_TRANSACTIONAL);
    batch
}

async fn open<D: Disk>(disk: &D, dir: &str) -> Partition<D> {
    Partition::open(disk.clone(), Path::new(dir), options(small_config(), 1 << 20), 0).await.expect("open")
}

async fn client_append<D: Disk>(partition: &Partition<D>, batch: BytesMut) -> Result<(i64, bool), PartitionError> {
    let appended = partition.append_as_leader(batch, AppendOrigin::Client, 3, 1_000).await?;
    partition.wait_until(appended.end_offset(), Durability::Durable).await?;
    Ok((appended.base_offset, appended.duplicate))
}

fn bases(read: &PartitionRead) -> Vec<i64> {
    read.batches
        .iter()
        .flat_map(|chunk| BatchIter::new(chunk).map(|(_, h)| h.base_offset).collect::<Vec<_>>())
        .collect()
}

#[test]
fn idempotent_retries_gaps_and_fencing() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(1, FaultConfig::default());
        let partition = open(&disk, LEADER).await;
        assert_eq!(client_append(&partition, producer_batch(1, 3, 7, 0, 0)).await.unwrap(), (0, false));
        assert_eq!(client_append(&partition, producer_batch(2, 2, 7, 0, 3)).await.unwrap(), (3, false));
        // A retry of the first batch gets its original offset and appends nothing.
        assert_eq!(client_append(&partition, producer_batch(1, 3, 7, 0, 0)).await.unwrap(), (0, true));
        assert_eq!(partition.offsets().log_end, 5);
        let gap = client_append(&partition, producer_batch(3, 1, 7, 0, 9)).await;
        assert!(
            matches!(gap, Err(PartitionError::OutOfOrderSequence { producer_id: 7, first_sequence: 9 })),
            "{gap:?}"
        );
        assert_eq!(client_append(&partition, producer_batch(4, 1, 7, 1, 0)).await.unwrap(), (5, false));
        let fenced = client_append(&partition, producer_batch(5, 1, 7, 0, 5)).await;
        assert!(matches!(fenced, Err(PartitionError::ProducerFenced { producer_id: 7, epoch: 0 })), "{fenced:?}");
        // Two batches of one producer in one append are refused.
        let mut two = producer_batch(6, 1, 8, 0, 0);
        two.extend_from_slice(&producer_batch(7, 1, 8, 0, 1));
        let refused = partition.append_as_leader(two, AppendOrigin::Client, 3, 1_000).await;
        assert!(matches!(refused, Err(PartitionError::MultipleProducerBatches)), "{refused:?}");
        // The leader epoch is stamped on the batches.
        let read = partition.read(0, 1 << 20, Isolation::ReadUncommitted).await.expect("read");
        let epochs: Vec<i32> = read
            .batches
            .iter()
            .flat_map(|c| BatchIter::new(c).map(|(_, h)| h.partition_leader_epoch).collect::<Vec<_>>())
            .collect();
        assert_eq!(epochs, vec![3, 3, 3]);
        assert_eq!(partition.end_offset_for_epoch(3), (3, 6));
    });
}

#[test]
fn transactions_bound_the_last_stable_offset_and_aborts_are_listed() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(2, FaultConfig::default());
        let partition = open(&disk, LEADER).await;
        client_append(&partition, seeded_batch(1, 1, 10, 1_000)).await.expect("plain");
        client_append(&partition, transactional_batch(2, 20, 0, 0)).await.expect("txn 20");
        client_append(&partition, transactional_batch(3, 21, 0, 0)).await.expect("txn 21");
        assert_eq!(partition.last_stable_offset(), 1, "the oldest open transaction starts at 1");
        let committed = partition.read(0, 1 << 20, Isolation::ReadCommitted).await.expect("read");
        assert_eq!(bases(&committed), vec![0]);
        assert_eq!(committed.visible_end, 1);
        let abort = TxnMarker { producer_id: 20, producer_epoch: 0, commit: false, coordinator_epoch: 0 };
        let marker = partition.write_marker(abort, 3, 2_000).await.expect("marker");
        assert_eq!(marker.base_offset, 5);
        // A repeated marker (a retried completion) closes nothing more.
        let again = partition.write_marker(abort, 3, 2_000).await.expect("again");
        assert_eq!(again.base_offset, 6);
        assert_eq!(partition.last_stable_offset(), 3, "21 is still open");
        let commit = TxnMarker { producer_id: 21, producer_epoch: 0, commit: true, coordinator_epoch: 0 };
        let marker = partition.write_marker(commit, 3, 2_000).await.expect("marker");
        partition.wait_until(marker.end_offset(), Durability::Durable).await.expect("durable");
        assert_eq!(partition.last_stable_offset(), 8);
        let read = partition.read(0, 1 << 20, Isolation::ReadCommitted).await.expect("read");
        let aborted: Vec<(i64, i64)> = read.aborted.iter().map(|a| (a.producer_id, a.first_offset)).collect();
        assert_eq!(aborted, vec![(20, 1)]);
        // A fencing abort reaches a partition where the producer wrote
        // nothing: its old epoch cannot start a transaction here any more.
        let fence = TxnMarker { producer_id: 22, producer_epoch: 1, commit: false, coordinator_epoch: 0 };
        let marker = partition.write_marker(fence, 3, 2_000).await.expect("marker");
        partition.wait_until(marker.end_offset(), Durability::Durable).await.expect("durable");
        let zombie = client_append(&partition, transactional_batch(4, 22, 0, 0)).await;
        assert!(matches!(zombie, Err(PartitionError::ProducerFenced { producer_id: 22, epoch: 0 })), "{zombie:?}");
        assert_eq!(partition.last_stable_offset(), 9, "nothing is left open");
        // The state survives a power loss: rebuilt from the log.
        drop(partition);
        let crashed = disk.crash();
        let reopened = open(&crashed, LEADER).await;
        assert_eq!(reopened.offsets().log_end, 9);
        assert_eq!(reopened.last_stable_offset(), 9);
        let read = reopened.read(0, 1 << 20, Isolation::ReadCommitted).await.expect("read");
        assert_eq!(read.aborted.len(), 1);
    });
}

#[test]
fn followers_keep_the_leaders_offsets_and_epochs() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(3, FaultConfig::default());
        let leader = open(&disk, LEADER).await;
        let follower = open(&disk, FOLLOWER).await;
        for (i, epoch) in [(1u64, 1), (2, 1), (3, 4), (4, 4)] {
            let appended = leader.append_as_leader(seeded_batch(i, 3, 50, 1_000), AppendOrigin::Client, epoch, 1_000);
            let appended = appended.await.expect("leader append");
            leader.wait_until(appended.end_offset(), Durability::Durable).await.expect("durable");
        }
        let read = leader.read(0, 1 << 20, Isolation::ReadUncommitted).await.expect("read");
        let batches = split_batches(&read.batches);
        assert_eq!(batches.len(), 4);
        // Out of place: the first batch must start at the follower's log end.
        let refused = follower.append_as_follower(BytesMut::from(&batches[1].1[..]), 1_000).await;
        assert!(matches!(refused, Err(PartitionError::NotContiguous { expected: 0, found: 3 })), "{refused:?}");
        // A gap between two batches is refused too, and nothing is appended.
        let mut gapped = BytesMut::from(&batches[0].1[..]);
        gapped.extend_from_slice(&batches[2].1);
        let refused = follower.append_as_follower(gapped, 1_000).await;
        assert!(matches!(refused, Err(PartitionError::NotContiguous { expected: 3, found: 6 })), "{refused:?}");
        assert_eq!(follower.offsets().log_end, 0);
        let mut fetched = BytesMut::new();
        for (_, bytes) in &batches {
            fetched.extend_from_slice(bytes);
        }
        let appended = follower.append_as_follower(fetched, 1_000).await.expect("follower append");
        assert_eq!((appended.base_offset, appended.last_offset), (0, 11));
        follower.wait_until(appended.end_offset(), Durability::Durable).await.expect("durable");
        assert_eq!(follower.end_offset_for_epoch(1), (1, 6));
        assert_eq!(follower.end_offset_for_epoch(4), (4, 12));
        let copy = follower.read(0, 1 << 20, Isolation::ReadUncommitted).await;
        assert_eq!(bases(&copy.expect("read")), vec![0, 3, 6, 9]);
        // Appending the same batches again overlaps: refused.
        let again = leader.read(0, 1 << 20, Isolation::ReadUncommitted).await.expect("read");
        let refused = follower.append_as_follower(BytesMut::from(&again.batches[0][..]), 1_000).await;
        assert!(matches!(refused, Err(PartitionError::NotContiguous { expected: 12, found: 0 })), "{refused:?}");
    });
}

#[test]
fn truncation_by_leader_epoch_keeps_what_both_logs_agree_on() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(4, FaultConfig::default());
        let replica = open(&disk, FOLLOWER).await;
        // Epoch 1 wrote offsets 0..6, then this replica led epoch 2 alone
        // and wrote 6..12 that nobody else has.
        for (i, epoch) in [(1u64, 1), (2, 1), (3, 2), (4, 2)] {
            replica
                .append_as_leader(seeded_batch(i, 3, 50, 1_000), AppendOrigin::Client, epoch, 1_000)
                .await
                .expect("append");
        }
        // The new leader (epoch 3) says epoch 1 ended at offset 6 in its log.
        let end = replica.truncate_to_leader_epoch(1, 6).await.expect("truncate");
        assert_eq!(end, 6);
        assert_eq!(replica.offsets().log_end, 6);
        assert_eq!(replica.end_offset_for_epoch(2), (1, 6), "epoch 2 is gone");
        // A leader answer beyond our own end truncates nothing.
        assert_eq!(replica.truncate_to_leader_epoch(1, 100).await.expect("no-op"), 6);
    });
}

#[test]
fn producer_state_follows_truncation_and_survives_close() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(5, FaultConfig::default());
        let partition = open(&disk, LEADER).await;
        client_append(&partition, producer_batch(1, 2, 9, 0, 0)).await.expect("seq 0");
        client_append(&partition, producer_batch(2, 2, 9, 0, 2)).await.expect("seq 2");
        partition.snapshot_producers(0).await.expect("snapshot");
        client_append(&partition, producer_batch(3, 2, 9, 0, 4)).await.expect("seq 4");
        // Truncating below seq 4 forgets it: sending it again appends it.
        partition.truncate_to(4).await.expect("truncate");
        assert_eq!(client_append(&partition, producer_batch(3, 2, 9, 0, 4)).await.unwrap(), (4, false));
        partition.close().await.expect("close");
        drop(partition);
        let reopened = open(&disk, LEADER).await;
        assert_eq!(
            client_append(&reopened, producer_batch(3, 2, 9, 0, 4)).await.unwrap(),
            (4, true),
            "retry after restart"
        );
        assert_eq!(client_append(&reopened, producer_batch(4, 1, 9, 0, 6)).await.unwrap(), (6, false));
    });
}
