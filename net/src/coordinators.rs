//! What the group and transaction coordinator services share: where a
//! coordinator's partition is ([`CoordinatorLog`]), and one shard's table
//! of loaded coordinators ([`Coordinators`]): each loaded on first use by
//! replaying its internal partition, COORDINATOR_LOAD_IN_PROGRESS while
//! that runs, NOT_COORDINATOR when this shard does not hold the partition.
//! Lives on its shard.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use shardline_engine::Disk;

use crate::registry::{PartitionRegistry, Replica};

/// A coordinator's internal partition: its index, and its replica when
/// this shard holds it (the narrow interface a service gets to its log).
pub struct CoordinatorLog<D: Disk> {
    /// Partition index in `__consumer_offsets` or `__transaction_state`.
    pub index: i32,
    /// The replica, if this shard holds the partition.
    pub replica: Option<Rc<Replica<D>>>,
}

impl<D: Disk> CoordinatorLog<D> {
    /// Partition `index` of internal topic `topic`, as `registry` holds it.
    pub fn of(registry: &PartitionRegistry<D>, topic: &str, index: i32) -> Self {
        CoordinatorLog { index, replica: registry.get(topic, index) }
    }
}

/// A loaded coordinator: its state and its partition's replica.
pub struct Loaded<C, D: Disk> {
    /// The coordinator's state machine.
    pub state: Rc<RefCell<C>>,
    /// Its internal partition.
    pub log: Rc<Replica<D>>,
}

impl<C, D: Disk> Clone for Loaded<C, D> {
    fn clone(&self) -> Self {
        Loaded { state: self.state.clone(), log: self.log.clone() }
    }
}

enum Slot<C, D: Disk> {
    Loading,
    Ready(Loaded<C, D>),
}

/// Clears a Loading slot whose load was dropped before it finished.
struct PendingLoad<'a, C, D: Disk> {
    slots: &'a RefCell<BTreeMap<i32, Slot<C, D>>>,
    index: i32,
    done: bool,
}

impl<C, D: Disk> Drop for PendingLoad<'_, C, D> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut slots) = self.slots.try_borrow_mut() {
                slots.remove(&self.index);
            }
        }
    }
}

/// One shard's coordinators of one kind. See the module documentation.
pub struct Coordinators<C, D: Disk> {
    slots: RefCell<BTreeMap<i32, Slot<C, D>>>,
}

impl<C, D: Disk> Default for Coordinators<C, D> {
    fn default() -> Self {
        Coordinators { slots: RefCell::new(BTreeMap::new()) }
    }
}

impl<C, D: Disk> Coordinators<C, D> {
    /// The coordinator of `at`, loaded with `load` (from its replica) on
    /// first use.
    pub async fn get_or_load<F, Fut, E>(&self, at: CoordinatorLog<D>, load: F) -> Result<Loaded<C, D>, ResponseError>
    where
        F: FnOnce(Rc<Replica<D>>) -> Fut,
        Fut: Future<Output = Result<C, E>>,
        E: Debug,
    {
        match self.slots.borrow().get(&at.index) {
            Some(Slot::Ready(loaded)) => return Ok(loaded.clone()),
            Some(Slot::Loading) => return Err(ResponseError::CoordinatorLoadInProgress),
            None => {}
        }
        let log = at.replica.ok_or(ResponseError::NotCoordinator)?;
        self.slots.borrow_mut().insert(at.index, Slot::Loading);
        // If the load is dropped half-way, the slot must not stay Loading.
        let mut pending = PendingLoad { slots: &self.slots, index: at.index, done: false };
        let loaded = load(log.clone()).await;
        pending.done = true;
        match loaded {
            Ok(state) => {
                let loaded = Loaded { state: Rc::new(RefCell::new(state)), log };
                self.slots.borrow_mut().insert(at.index, Slot::Ready(loaded.clone()));
                Ok(loaded)
            }
            Err(error) => {
                self.slots.borrow_mut().remove(&at.index);
                tracing::error!(index = at.index, ?error, "loading a coordinator failed");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }

    /// Every loaded coordinator, by partition index.
    pub fn all(&self) -> Vec<(i32, Loaded<C, D>)> {
        self.slots
            .borrow()
            .iter()
            .filter_map(|(index, slot)| match slot {
                Slot::Ready(loaded) => Some((*index, loaded.clone())),
                Slot::Loading => None,
            })
            .collect()
    }

    /// Forgets every coordinator.
    pub fn clear(&self) {
        self.slots.borrow_mut().clear();
    }
}
