//! Leader election and ISR changes of one partition, as pure functions of
//! its state and which brokers are alive: what the controller proposes
//! when a broker is fenced or comes back, or when ElectLeaders asks.
//!
//! The order of choice follows Kafka with KIP-966: a live replica from the
//! ISR (preferred order), else one from the ELR (replicas that left the ISR
//! while it was at `min.insync.replicas` or below, so they hold every
//! acknowledged record), else, only when `unclean.leader.election.enable`,
//! any live replica (which may lose acknowledged data: never by default).
//! A partition whose only in-sync replica is fenced keeps it in the ISR
//! and goes leaderless (offline) until it comes back, so no acknowledged
//! record is lost to an election.

use super::super::metadata::image::{PartitionImage, NO_LEADER};

/// How the partition's state should change; `None` fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionChange {
    /// The new leader (may be [`NO_LEADER`]).
    pub leader: Option<i32>,
    /// The new ISR.
    pub isr: Option<Vec<i32>>,
    /// The new ELR.
    pub elr: Option<Vec<i32>>,
}

impl PartitionChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.leader.is_none() && self.isr.is_none() && self.elr.is_none()
    }
}

/// Which elections may pick a replica outside the ISR and ELR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// ISR, then ELR.
    Clean,
    /// ISR, then ELR, then any live replica.
    Unclean,
}

/// The change after the brokers for which `live` is false are gone
/// (fenced or shut down): they leave the ISR (into the ELR when the ISR
/// drops below `min_isr`), and a new leader is elected if the leader left.
pub fn after_replicas_lost(
    p: &PartitionImage,
    live: impl Fn(i32) -> bool,
    min_isr: usize,
    election: Election,
) -> PartitionChange {
    let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| live(*r)).collect();
    let mut elr = p.elr.clone();
    let removed: Vec<i32> = p.isr.iter().copied().filter(|r| !live(*r)).collect();
    if isr.is_empty() && !removed.is_empty() && elr.iter().all(|r| !live(*r)) {
        // The last in-sync replicas stay in the ISR: electing anyone else
        // cleanly would lose what only they hold.
        isr = p.isr.clone();
    } else if isr.len() < min_isr {
        for r in removed {
            if !elr.contains(&r) {
                elr.push(r);
            }
        }
    }
    let mut next = PartitionImage { isr, elr, ..p.clone() };
    if next.leader == NO_LEADER || !live(next.leader) {
        elect_into(&mut next, &live, election);
    }
    diff(p, &next)
}

/// The change that gives a leaderless partition a leader when one of its
/// replicas can lead (a broker came back), and clears the ELR once the ISR
/// reaches `min_isr`.
pub fn after_replicas_back(
    p: &PartitionImage,
    live: impl Fn(i32) -> bool,
    min_isr: usize,
    election: Election,
) -> PartitionChange {
    let mut next = p.clone();
    if next.leader == NO_LEADER {
        elect_into(&mut next, &live, election);
    }
    if next.isr.len() >= min_isr && !next.elr.is_empty() {
        next.elr.clear();
    }
    diff(p, &next)
}

/// The change that moves leadership to the preferred replica (the first),
/// when it is alive and in the ISR (`kafka-leader-election --election-type
/// PREFERRED`, `auto.leader.rebalance.enable`).
pub fn preferred(p: &PartitionImage, live: impl Fn(i32) -> bool) -> PartitionChange {
    let preferred = p.replicas[0];
    if p.leader == preferred || !live(preferred) || !p.isr.contains(&preferred) {
        return PartitionChange::default();
    }
    PartitionChange { leader: Some(preferred), ..PartitionChange::default() }
}

/// The change that moves leadership off `leaving` (a controlled shutdown)
/// to another live ISR member; the ISR keeps `leaving` only when it is the
/// last member.
pub fn away_from(p: &PartitionImage, leaving: i32, live: impl Fn(i32) -> bool, min_isr: usize) -> PartitionChange {
    after_replicas_lost(p, |r| r != leaving && live(r), min_isr, Election::Clean)
}

/// Picks a leader into `next` (ISR, ELR, then any live replica when
/// unclean), adjusting ISR and ELR as the choice requires.
fn elect_into(next: &mut PartitionImage, live: &impl Fn(i32) -> bool, election: Election) {
    let in_order = |set: &[i32]| next.replicas.iter().copied().find(|r| set.contains(r) && live(*r));
    if let Some(leader) = in_order(&next.isr) {
        next.leader = leader;
    } else if let Some(leader) = in_order(&next.elr) {
        next.leader = leader;
        next.isr = vec![leader];
        next.elr.retain(|r| *r != leader);
    } else if let (Election::Unclean, Some(leader)) = (election, next.replicas.iter().copied().find(|r| live(*r))) {
        next.leader = leader;
        next.isr = vec![leader];
        next.elr.clear();
    } else {
        next.leader = NO_LEADER;
    }
    debug_assert!(next.leader == NO_LEADER || next.isr.contains(&next.leader));
}

fn diff(before: &PartitionImage, after: &PartitionImage) -> PartitionChange {
    PartitionChange {
        leader: (after.leader != before.leader).then_some(after.leader),
        isr: (after.isr != before.isr).then(|| after.isr.clone()),
        elr: (after.elr != before.elr).then(|| after.elr.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[i32], isr: &[i32], elr: &[i32], leader: i32) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            elr: elr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
        }
    }

    #[test]
    fn a_lost_leader_is_replaced_from_the_isr_in_preferred_order() {
        let p = partition(&[1, 2, 3], &[1, 2, 3], &[], 1);
        let change = after_replicas_lost(&p, |r| r != 1, 2, Election::Clean);
        assert_eq!(change, PartitionChange { leader: Some(2), isr: Some(vec![2, 3]), elr: None });
    }

    #[test]
    fn below_min_isr_the_removed_replicas_become_eligible_and_can_lead_later() {
        let p = partition(&[1, 2, 3], &[1, 2], &[], 1);
        let change = after_replicas_lost(&p, |r| r == 2, 2, Election::Clean);
        assert_eq!(change, PartitionChange { leader: Some(2), isr: Some(vec![2]), elr: Some(vec![1]) });
        // Then 2 dies too: it is the last ISR member and stays; no leader.
        let p = partition(&[1, 2, 3], &[2], &[1], 2);
        let change = after_replicas_lost(&p, |r| r == 3, 2, Election::Clean);
        assert_eq!(change, PartitionChange { leader: Some(NO_LEADER), isr: None, elr: None });
        // 1 comes back first: elected from the ELR, the ISR is just it.
        let p = partition(&[1, 2, 3], &[2], &[1], NO_LEADER);
        let change = after_replicas_back(&p, |r| r != 2, 2, Election::Clean);
        assert_eq!(change, PartitionChange { leader: Some(1), isr: Some(vec![1]), elr: Some(vec![]) });
    }

    #[test]
    fn a_single_replica_partition_goes_offline_and_comes_back_with_its_replica() {
        let p = partition(&[4], &[4], &[], 4);
        let change = after_replicas_lost(&p, |_| false, 1, Election::Clean);
        assert_eq!(change, PartitionChange { leader: Some(NO_LEADER), isr: None, elr: None });
        let offline = partition(&[4], &[4], &[], NO_LEADER);
        assert_eq!(after_replicas_back(&offline, |_| true, 1, Election::Clean).leader, Some(4));
    }

    #[test]
    fn only_an_unclean_election_picks_a_replica_outside_isr_and_elr() {
        let p = partition(&[1, 2], &[1], &[], NO_LEADER);
        assert!(after_replicas_back(&p, |r| r == 2, 1, Election::Clean).is_empty());
        let change = after_replicas_back(&p, |r| r == 2, 1, Election::Unclean);
        assert_eq!(change, PartitionChange { leader: Some(2), isr: Some(vec![2]), elr: None });
    }

    #[test]
    fn preferred_and_controlled_shutdown_moves() {
        let p = partition(&[1, 2, 3], &[1, 2, 3], &[], 2);
        assert_eq!(preferred(&p, |_| true).leader, Some(1));
        assert!(preferred(&p, |r| r != 1).is_empty());
        let change = away_from(&p, 2, |_| true, 1);
        assert_eq!(change, PartitionChange { leader: Some(1), isr: Some(vec![1, 3]), elr: None });
    }
}
