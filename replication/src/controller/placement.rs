//! Where new partitions' replicas go: across the live brokers, balanced by
//! how many replicas and preferred leaderships each already has, and
//! rack-aware (a partition's replicas are on as many racks as it can be).
//! The first replica of each partition is its preferred leader. Pure and
//! deterministic: the same image and request give the same placement on
//! every controller.

use std::collections::{BTreeMap, BTreeSet};

use super::super::metadata::image::MetadataImage;

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas than live brokers.
    #[error("replication factor {wanted} is larger than the {live} live brokers")]
    NotEnoughBrokers { wanted: usize, live: usize },
}

/// How loaded each broker is: replicas and preferred leaderships.
#[derive(Debug, Clone, Default)]
pub struct Loads {
    replicas: BTreeMap<i32, u64>,
    leaders: BTreeMap<i32, u64>,
    /// Live brokers that get nothing new (being fenced a batch at a time).
    excluded: BTreeSet<i32>,
}

impl Loads {
    /// The loads of every partition in `image`.
    pub fn of(image: &MetadataImage) -> Loads {
        let mut loads = Loads::default();
        for topic in image.topics.values() {
            for p in &topic.partitions {
                loads.add(&p.replicas);
            }
        }
        loads
    }

    /// Places nothing more on `brokers`.
    pub fn exclude(&mut self, brokers: impl IntoIterator<Item = i32>) {
        self.excluded.extend(brokers);
    }

    /// Whether `broker` gets nothing new.
    pub fn is_excluded(&self, broker: i32) -> bool {
        self.excluded.contains(&broker)
    }

    fn add(&mut self, replicas: &[i32]) {
        for r in replicas {
            *self.replicas.entry(*r).or_default() += 1;
        }
        *self.leaders.entry(replicas[0]).or_default() += 1;
    }
}

/// Places `partitions` new partitions of `replication_factor` replicas on
/// the live brokers of `image` (id and rack) that `loads` does not
/// exclude, updating `loads`.
pub fn place(
    image: &MetadataImage,
    loads: &mut Loads,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    let brokers: Vec<(i32, Option<String>)> = image
        .live_brokers()
        .filter(|b| !loads.excluded.contains(&b.broker_id))
        .map(|b| (b.broker_id, b.rack.clone()))
        .collect();
    if replication_factor == 0 || replication_factor > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers { wanted: replication_factor, live: brokers.len() });
    }
    let mut placed = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let rotation = |id: i32| {
            (brokers.iter().position(|(b, _)| *b == id).unwrap_or(0) + brokers.len() - p % brokers.len())
                % brokers.len()
        };
        let mut replicas: Vec<i32> = Vec::with_capacity(replication_factor);
        let mut racks: BTreeSet<Option<String>> = BTreeSet::new();
        let leader = brokers
            .iter()
            .min_by_key(|(id, _)| {
                (
                    loads.leaders.get(id).copied().unwrap_or(0),
                    loads.replicas.get(id).copied().unwrap_or(0),
                    rotation(*id),
                )
            })
            .expect("at least one broker");
        replicas.push(leader.0);
        racks.insert(leader.1.clone());
        while replicas.len() < replication_factor {
            let candidates: Vec<&(i32, Option<String>)> =
                brokers.iter().filter(|(id, _)| !replicas.contains(id)).collect();
            let new_rack: Vec<&&(i32, Option<String>)> =
                candidates.iter().filter(|(_, rack)| !racks.contains(rack)).collect();
            let pool: Vec<&(i32, Option<String>)> =
                if new_rack.is_empty() { candidates } else { new_rack.into_iter().copied().collect() };
            let next = pool
                .iter()
                .min_by_key(|(id, _)| (loads.replicas.get(id).copied().unwrap_or(0), rotation(*id)))
                .expect("a candidate: replication factor is at most the brokers");
            replicas.push(next.0);
            racks.insert(next.1.clone());
        }
        debug_assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), replicas.len(), "replicas are distinct");
        loads.add(&replicas);
        placed.push(replicas);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::metadata::image::BrokerRegistration;

    fn image(brokers: &[(i32, &str, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let map = brokers
            .iter()
            .map(|(id, rack, fenced)| {
                let registration = BrokerRegistration {
                    broker_id: *id,
                    incarnation_id: Uuid::from_u128(*id as u128),
                    broker_epoch: 1,
                    endpoints: vec![],
                    rack: (!rack.is_empty()).then(|| rack.to_string()),
                    fenced: *fenced,
                    registered_offset: 1,
                };
                (*id, registration)
            })
            .collect();
        image.brokers = Arc::new(map);
        image
    }

    #[test]
    fn twelve_partitions_spread_evenly_over_three_brokers() {
        let image = image(&[(1, "", false), (2, "", false), (3, "", false)]);
        let placed = place(&image, &mut Loads::of(&image), 12, 1).unwrap();
        let mut per_broker = BTreeMap::new();
        for replicas in &placed {
            *per_broker.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(per_broker, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
    }

    #[test]
    fn an_excluded_broker_gets_no_new_partitions() {
        let image = image(&[(1, "", false), (2, "", false), (3, "", false)]);
        let mut loads = Loads::of(&image);
        loads.exclude([2]);
        let placed = place(&image, &mut loads, 6, 1).unwrap();
        assert!(placed.iter().all(|r| r[0] != 2), "{placed:?}");
        assert!(matches!(place(&image, &mut loads, 1, 3), Err(PlacementError::NotEnoughBrokers { live: 2, .. })));
    }

    #[test]
    fn replicas_land_on_different_racks_and_skip_fenced_brokers() {
        let image = image(&[(1, "a", false), (2, "a", false), (3, "b", false), (4, "b", true)]);
        let placed = place(&image, &mut Loads::of(&image), 6, 2).unwrap();
        for replicas in &placed {
            assert!(!replicas.contains(&4), "fenced broker 4 gets nothing: {replicas:?}");
            assert!(replicas.contains(&3), "each partition has a replica on rack b: {replicas:?}");
        }
        let leaders: BTreeSet<i32> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, BTreeSet::from([1, 2, 3]), "preferred leaders rotate");
        assert_eq!(
            place(&image, &mut Loads::of(&image), 1, 4),
            Err(PlacementError::NotEnoughBrokers { wanted: 4, live: 3 })
        );
    }
}
