//! Which shard owns each partition. New partitions go to the shards with
//! the fewest partitions ([`place_new`]). At start, before any shard opens
//! a partition, [`rebalance`] places them all again so that every shard
//! holds the same number of partitions (within one) and about the same
//! bytes: partitions of one broker share one data directory, so a move is
//! only a new owner in the topic metadata, with nothing copied. Control
//! path only: CreateTopics and CreatePartitions on the shard that handles
//! them, the rebalance on the thread that starts the broker.

use std::sync::Arc;

use crate::topics::{MetadataImage, NOT_HOSTED};

/// Places `count` new partitions on the shards with the fewest partitions
/// (the lowest-numbered first on a tie).
pub fn place_new(image: &MetadataImage, shards: usize, count: usize) -> Vec<usize> {
    assert!(shards >= 1, "a broker has at least one shard");
    let mut load = vec![0usize; shards];
    for topic in image.topics.values() {
        for &shard in topic.partition_shards.iter().filter(|s| **s != NOT_HOSTED) {
            load[shard % shards] += 1;
        }
    }
    (0..count).map(|_| least_loaded(&mut load)).collect()
}

/// The shard with the fewest partitions in `load` (the lowest-numbered on
/// a tie), counted as taking one more.
pub fn least_loaded(load: &mut [usize]) -> usize {
    let (shard, _) = load.iter().enumerate().min_by_key(|(i, n)| (**n, *i)).unwrap_or((0, &0));
    load[shard] += 1;
    shard
}

/// Partitions and bytes of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardLoad {
    /// Partitions the shard owns.
    pub partitions: usize,
    /// Bytes of their logs.
    pub bytes: u64,
}

/// What [`rebalance`] changed.
#[derive(Debug)]
pub struct Rebalanced {
    /// The image with the new placement.
    pub image: MetadataImage,
    /// Partitions whose owner changed.
    pub moved: usize,
    /// Each shard's load before and after.
    pub before: Vec<ShardLoad>,
    /// See `before`.
    pub after: Vec<ShardLoad>,
}

/// Bytes below which a better byte balance is not worth a new placement.
pub const REBALANCE_MIN_GAIN_BYTES: u64 = 1 << 20;

/// The load of each shard under `image`'s placement.
pub fn loads(image: &MetadataImage, shards: usize, bytes: &impl Fn(&str, i32) -> u64) -> Vec<ShardLoad> {
    let mut loads = vec![ShardLoad::default(); shards];
    for topic in image.topics.values() {
        for (index, &shard) in topic.partition_shards.iter().enumerate().filter(|(_, s)| **s != NOT_HOSTED) {
            let load = &mut loads[shard % shards];
            load.partitions += 1;
            load.bytes += bytes(&topic.name, index as i32);
        }
    }
    loads
}

/// A placement of every partition over `shards` shards with each shard's
/// count equal within one and its bytes (`bytes(topic, index)`) balanced
/// greedily, largest partition first, onto the shard with the fewest bytes
/// that may still take one (its current shard on a tie). `None` when the
/// current placement already has balanced counts and its largest shard is
/// within 10% (or [`REBALANCE_MIN_GAIN_BYTES`]) of the new one's.
pub fn rebalance(image: &MetadataImage, shards: usize, bytes: impl Fn(&str, i32) -> u64) -> Option<Rebalanced> {
    assert!(shards >= 1, "a broker has at least one shard");
    let before = loads(image, shards, &bytes);
    let mut partitions: Vec<(u64, &str, usize, usize)> = Vec::new();
    for topic in image.topics.values() {
        for (index, &shard) in topic.partition_shards.iter().enumerate().filter(|(_, s)| **s != NOT_HOSTED) {
            partitions.push((bytes(&topic.name, index as i32), topic.name.as_str(), index, shard % shards));
        }
    }
    // Largest first; equal sizes in name order, so the result depends only
    // on the input.
    partitions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    let floor = partitions.len() / shards;
    let mut at_ceiling_left = partitions.len() % shards;
    let mut after = vec![ShardLoad::default(); shards];
    let mut placed: Vec<(&str, usize, usize)> = Vec::with_capacity(partitions.len());
    for &(size, topic, index, current) in &partitions {
        let may_take = |load: &ShardLoad| load.partitions < floor || (load.partitions == floor && at_ceiling_left > 0);
        let shard = (0..shards)
            .filter(|&s| may_take(&after[s]))
            .min_by_key(|&s| (after[s].bytes, s != current, s))
            .expect("the counts add up to the partitions: some shard has room");
        if after[shard].partitions == floor {
            at_ceiling_left -= 1;
        }
        after[shard].partitions += 1;
        after[shard].bytes += size;
        placed.push((topic, index, shard));
    }
    let counts_balanced = {
        let counts = before.iter().map(|l| l.partitions);
        counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0) <= 1
    };
    let largest = |loads: &[ShardLoad]| loads.iter().map(|l| l.bytes).max().unwrap_or(0);
    let (old_max, new_max) = (largest(&before), largest(&after));
    let worth = old_max > new_max + (new_max / 10).max(REBALANCE_MIN_GAIN_BYTES);
    if counts_balanced && !worth {
        return None;
    }
    let mut topics = image.topics.clone();
    let mut moved = 0;
    for (name, index, shard) in placed {
        let topic = topics.get_mut(name).expect("placed from this image");
        if topic.partition_shards[index] != shard {
            moved += 1;
            Arc::make_mut(topic).partition_shards[index] = shard;
        }
    }
    debug_assert_eq!(after, loads(&MetadataImage { topics: topics.clone() }, shards, &bytes));
    Some(Rebalanced { image: MetadataImage { topics }, moved, before, after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicInfo;

    /// A topic of `partitions` partitions all on `shard` (tests).
    fn topic_on(name: &str, partitions: usize, shard: usize) -> Arc<TopicInfo> {
        Arc::new(TopicInfo {
            name: name.into(),
            id: uuid::Uuid::nil(),
            partition_shards: vec![shard; partitions],
            configs: Default::default(),
        })
    }

    fn image(topics: Vec<Arc<TopicInfo>>) -> MetadataImage {
        MetadataImage { topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect() }
    }

    #[test]
    fn new_partitions_go_to_the_shards_with_fewest() {
        assert_eq!(place_new(&MetadataImage::default(), 2, 5), vec![0, 1, 0, 1, 0]);
        let busy = image(vec![topic_on("a", 3, 0)]);
        assert_eq!(place_new(&busy, 2, 4), vec![1, 1, 1, 0]);
    }

    #[test]
    fn a_balanced_placement_is_kept() {
        let mut t = (*topic_on("a", 4, 0)).clone();
        t.partition_shards = vec![0, 1, 0, 1];
        let img = image(vec![Arc::new(t)]);
        assert!(rebalance(&img, 2, |_, _| 10 << 20).is_none(), "equal counts, equal bytes");
        assert!(rebalance(&img, 1, |_, _| 0).is_none(), "one shard");
        // Slightly uneven bytes are not worth a move.
        assert!(rebalance(&img, 2, |_, i| if i == 0 { 11 << 20 } else { 10 << 20 }).is_none());
    }

    #[test]
    fn heavy_partitions_spread_and_counts_stay_within_one() {
        // Shard 0 holds the two big partitions, shard 1 only small ones.
        let mut t = (*topic_on("a", 6, 0)).clone();
        t.partition_shards = vec![0, 1, 0, 1, 0, 1];
        let img = image(vec![Arc::new(t), topic_on("b", 1, 1)]);
        let size = |topic: &str, i: i32| match (topic, i) {
            ("a", 0) | ("a", 2) => 100 << 20,
            _ => 1 << 20,
        };
        let done = rebalance(&img, 2, size).expect("unbalanced bytes");
        assert_eq!(done.before[0].bytes, 201 << 20);
        let a = &done.image.topics["a"].partition_shards;
        assert_ne!(a[0], a[2], "the two big partitions are on different shards");
        let counts: Vec<usize> = done.after.iter().map(|l| l.partitions).collect();
        assert_eq!(counts.iter().sum::<usize>(), 7);
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
        let bytes: Vec<u64> = done.after.iter().map(|l| l.bytes).collect();
        assert_eq!(bytes.iter().sum::<u64>(), 205 << 20);
        assert!(bytes.iter().max().unwrap() - bytes.iter().min().unwrap() <= 1 << 20, "{bytes:?}");
        assert!(done.moved > 0);
        assert!(rebalance(&done.image, 2, size).is_none(), "a rebalanced placement stays");
    }

    #[test]
    fn uneven_counts_are_evened_and_out_of_range_shards_folded() {
        // Placed on four shards, now started with three; all on one.
        let img = image(vec![topic_on("a", 10, 3), topic_on("b", 2, 0)]);
        let done = rebalance(&img, 3, |_, _| 0).expect("uneven counts");
        let counts: Vec<usize> = done.after.iter().map(|l| l.partitions).collect();
        assert_eq!(counts, vec![4, 4, 4]);
        for topic in done.image.topics.values() {
            assert!(topic.partition_shards.iter().all(|&s| s < 3));
        }
    }
}
