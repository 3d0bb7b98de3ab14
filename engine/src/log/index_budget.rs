//! A shard's memory budget for the indexes of sealed segments. A sealed
//! segment's offset and time indexes are loaded on first use; the budget
//! records each loaded pair with its bytes and, past its limit, asks the
//! least recently used segments' logs to drop theirs (they are loaded
//! again from their files when next needed). The active segment's indexes
//! are not counted: they grow with appends and stay loaded.
//!
//! One budget per shard, shared by its logs (`Rc`, never across cores).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};

use crate::log::cache::CacheKey;

/// A log that can drop the loaded indexes of one of its sealed segments.
pub trait IndexHolder {
    /// Drops the indexes of sealed segment `base` (nothing when it is not
    /// sealed, not loaded, or gone).
    fn unload_index(&self, base: i64);
}

/// Shared handle to a shard's budget.
pub type SharedIndexBudget = Rc<RefCell<IndexBudget>>;

struct Loaded {
    tick: u64,
    bytes: usize,
    holder: Weak<dyn IndexHolder>,
}

/// See the module documentation.
pub struct IndexBudget {
    limit_bytes: usize,
    used_bytes: usize,
    next_tick: u64,
    loaded: HashMap<(CacheKey, i64), Loaded>,
    by_use: BTreeMap<u64, (CacheKey, i64)>,
}

impl std::fmt::Debug for IndexBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBudget")
            .field("limit_bytes", &self.limit_bytes)
            .field("used_bytes", &self.used_bytes)
            .finish()
    }
}

impl IndexBudget {
    /// A budget of `limit_bytes` for one shard.
    pub fn shared(limit_bytes: usize) -> SharedIndexBudget {
        Rc::new(RefCell::new(IndexBudget {
            limit_bytes,
            used_bytes: 0,
            next_tick: 0,
            loaded: HashMap::new(),
            by_use: BTreeMap::new(),
        }))
    }

    /// Bytes of the loaded sealed indexes counted now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Sealed segments whose indexes are counted as loaded.
    pub fn loaded_count(&self) -> usize {
        self.loaded.len()
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// Marks the indexes of segment `base` of log `key` as just used.
    pub fn touch(&mut self, key: CacheKey, base: i64) {
        let tick = self.tick();
        if let Some(loaded) = self.loaded.get_mut(&(key, base)) {
            self.by_use.remove(&loaded.tick);
            loaded.tick = tick;
            self.by_use.insert(tick, (key, base));
        }
    }

    /// Counts indexes of `bytes` just loaded for segment `base` of log
    /// `key`. Returns the segments whose indexes must now be dropped to
    /// stay within the limit (the caller asks them after releasing the
    /// budget); the one just loaded is kept even when it alone is over.
    #[must_use]
    pub fn loaded(
        &mut self,
        key: CacheKey,
        base: i64,
        bytes: usize,
        holder: Weak<dyn IndexHolder>,
    ) -> Vec<(Weak<dyn IndexHolder>, i64)> {
        self.forget(key, base);
        let tick = self.tick();
        self.loaded.insert((key, base), Loaded { tick, bytes, holder });
        self.by_use.insert(tick, (key, base));
        self.used_bytes += bytes;
        let mut evicted = Vec::new();
        while self.used_bytes > self.limit_bytes && self.loaded.len() > 1 {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            if let Some(loaded) = self.loaded.remove(&oldest) {
                self.used_bytes -= loaded.bytes;
                evicted.push((loaded.holder, oldest.1));
            }
        }
        debug_assert_eq!(self.loaded.len(), self.by_use.len());
        evicted
    }

    /// Stops counting the indexes of segment `base` of log `key`.
    pub fn forget(&mut self, key: CacheKey, base: i64) {
        if let Some(loaded) = self.loaded.remove(&(key, base)) {
            self.by_use.remove(&loaded.tick);
            self.used_bytes -= loaded.bytes;
        }
    }
}

/// Asks each evicted segment's log to drop its indexes.
pub fn unload(evicted: Vec<(Weak<dyn IndexHolder>, i64)>) {
    for (holder, base) in evicted {
        if let Some(holder) = holder.upgrade() {
            holder.unload_index(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Holder(RefCell<Vec<i64>>);

    impl IndexHolder for Holder {
        fn unload_index(&self, base: i64) {
            self.0.borrow_mut().push(base);
        }
    }

    #[test]
    fn the_least_recently_used_are_dropped_past_the_limit() {
        let budget = IndexBudget::shared(250);
        let holder: Rc<Holder> = Rc::new(Holder(RefCell::new(Vec::new())));
        let weak = || Rc::downgrade(&holder) as Weak<dyn IndexHolder>;
        for base in [0, 100] {
            assert!(budget.borrow_mut().loaded(1, base, 100, weak()).is_empty());
        }
        budget.borrow_mut().touch(1, 0);
        let evicted = budget.borrow_mut().loaded(1, 200, 100, weak());
        unload(evicted);
        assert_eq!(*holder.0.borrow(), vec![100], "100 was used least recently");
        assert_eq!(budget.borrow().used_bytes(), 200);
        budget.borrow_mut().forget(1, 0);
        assert_eq!(budget.borrow().used_bytes(), 100);
        let evicted = budget.borrow_mut().loaded(2, 0, 1000, weak());
        assert_eq!(evicted.len(), 1, "the others go; the new one alone stays over the limit");
        assert_eq!(budget.borrow().used_bytes(), 1000);
    }
}
