//! Incremental fetch sessions (KIP-227), per shard: which partitions a
//! session fetches (with the offset and max bytes last requested), what the
//! client last saw of each (high watermark, log start), and the epoch the
//! next request must carry. Pure state, no I/O; bounded in size, least
//! recently used sessions evicted first (their clients get
//! FETCH_SESSION_ID_NOT_FOUND and start a new one, as Kafka's do).

use std::collections::{BTreeMap, HashMap, HashSet};

/// How long (ms) a session must be idle before a new one may replace it.
pub const EVICTION_IDLE_MS: i64 = 120_000;

/// A partition in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Offset from the latest request that named this partition.
    pub fetch_offset: i64,
    /// Partition max bytes from that request.
    pub max_bytes: usize,
    /// High watermark last sent to the client (-1: never).
    pub last_high_watermark: i64,
    /// Log start offset last sent to the client (-1: never).
    pub last_log_start: i64,
}

/// One session.
#[derive(Debug, Clone)]
pub struct FetchSession {
    /// Partitions in insertion order.
    pub partitions: Vec<SessionPartition>,
    /// The epoch the next incremental request must carry.
    pub next_epoch: i32,
    /// Clock time (ms) of the last request in the session.
    last_used_ms: i64,
}

impl FetchSession {
    /// Adds or updates the partitions named in a request (topic, partition,
    /// fetch offset, max bytes): one pass over the session.
    pub fn upsert_all<'a>(&mut self, named: impl IntoIterator<Item = (&'a str, i32, i64, usize)>) {
        let mut added: Vec<SessionPartition> = Vec::new();
        let mut updates: Vec<(usize, i64, usize)> = Vec::new();
        {
            let mut position: HashMap<(String, i32), usize> =
                self.partitions.iter().enumerate().map(|(i, p)| ((p.topic.clone(), p.partition), i)).collect();
            for (topic, partition, fetch_offset, max_bytes) in named {
                match position.get(&(topic.to_string(), partition)) {
                    Some(&at) => updates.push((at, fetch_offset, max_bytes)),
                    None => {
                        position.insert((topic.to_string(), partition), self.partitions.len() + added.len());
                        added.push(SessionPartition {
                            topic: topic.to_string(),
                            partition,
                            fetch_offset,
                            max_bytes,
                            last_high_watermark: -1,
                            last_log_start: -1,
                        });
                    }
                }
            }
        }
        self.partitions.extend(added);
        for (at, fetch_offset, max_bytes) in updates {
            let existing = &mut self.partitions[at];
            existing.fetch_offset = fetch_offset;
            existing.max_bytes = max_bytes;
        }
    }

    /// Moves partitions that just returned records to the end, so the next
    /// response (cut by max bytes) serves the others first, as Kafka does.
    pub fn rotate_served(&mut self, served: &[(String, i32)]) {
        let served: HashSet<(&str, i32)> = served.iter().map(|(t, i)| (t.as_str(), *i)).collect();
        let (rest, moved): (Vec<_>, Vec<_>) =
            self.partitions.drain(..).partition(|p| !served.contains(&(p.topic.as_str(), p.partition)));
        self.partitions = rest;
        self.partitions.extend(moved);
    }

    /// Removes the partitions the client forgot: one pass over the session.
    pub fn forget_all<'a>(&mut self, forgotten: impl IntoIterator<Item = (&'a str, i32)>) {
        let forgotten: HashSet<(&str, i32)> = forgotten.into_iter().collect();
        if !forgotten.is_empty() {
            self.partitions.retain(|p| !forgotten.contains(&(p.topic.as_str(), p.partition)));
        }
    }

    /// Whether a partition's answer must be sent in an incremental response
    /// (data, an error, or a changed high watermark or log start), and
    /// records what the client will now have seen.
    pub fn should_send(
        &mut self,
        index: usize,
        has_records: bool,
        error_code: i16,
        high_watermark: i64,
        log_start: i64,
    ) -> bool {
        let p = &mut self.partitions[index];
        let changed =
            has_records || error_code != 0 || p.last_high_watermark != high_watermark || p.last_log_start != log_start;
        p.last_high_watermark = high_watermark;
        p.last_log_start = log_start;
        changed
    }
}

/// Why an incremental request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND.
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH.
    InvalidEpoch,
}

/// The sessions of one shard. See the module documentation.
#[derive(Debug)]
pub struct FetchSessions {
    sessions: BTreeMap<i32, FetchSession>,
    max_sessions: usize,
    shard: usize,
    shards: usize,
    rng: u64,
}

impl FetchSessions {
    /// At most `max_sessions` on shard `shard` of `shards` (ids are unique
    /// across shards); `seed` seeds the random session ids.
    pub fn new(max_sessions: usize, shard: usize, shards: usize, seed: u64) -> Self {
        assert!(shards > 0 && shard < shards);
        Self {
            sessions: BTreeMap::new(),
            max_sessions,
            shard,
            shards,
            rng: (seed ^ (shard as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Creates a session at `now_ms`; `None` when sessions are disabled or
    /// the cache is full of sessions used within [`EVICTION_IDLE_MS`]. Ids are
    /// random (a restarted broker does not hand out ids its clients still
    /// remember) and ≡ shard (mod shards), so shards never collide.
    pub fn create(&mut self, now_ms: i64) -> Option<i32> {
        if self.max_sessions == 0 {
            return None;
        }
        if self.sessions.len() >= self.max_sessions {
            let (&oldest, session) = self.sessions.iter().min_by_key(|(_, s)| s.last_used_ms)?;
            if now_ms - session.last_used_ms < EVICTION_IDLE_MS {
                return None;
            }
            self.sessions.remove(&oldest);
        }
        let slots = ((i32::MAX as u64) - self.shard as u64 - 1) / self.shards as u64;
        let id = loop {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let candidate = ((self.rng % slots) * self.shards as u64 + self.shard as u64 + 1) as i32;
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        debug_assert!(id > 0 && (id as usize - 1) % self.shards == self.shard);
        self.sessions.insert(id, FetchSession { partitions: Vec::new(), next_epoch: 1, last_used_ms: now_ms });
        debug_assert!(self.sessions.len() <= self.max_sessions);
        Some(id)
    }

    /// Removes a session (FINAL epoch or replaced).
    pub fn remove(&mut self, id: i32) {
        self.sessions.remove(&id);
    }

    /// The session for an incremental request with `epoch`, which must be
    /// the one expected; the expected epoch then advances.
    pub fn incremental(&mut self, id: i32, epoch: i32, now_ms: i64) -> Result<&mut FetchSession, SessionError> {
        let session = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if session.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used_ms = now_ms;
        Ok(session)
    }

    /// The session `id` (just created), to fill.
    pub fn get_mut(&mut self, id: i32) -> Option<&mut FetchSession> {
        self.sessions.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_epochs_and_eviction() {
        let start = 1_000_000i64;
        let mut sessions = FetchSessions::new(2, 1, 2, 7);
        let a = sessions.create(start).expect("id");
        let b = sessions.create(start).expect("id");
        assert_ne!(a, b);
        assert!(a > 0 && b > 0 && (a - 1) % 2 == 1 && (b - 1) % 2 == 1, "ids belong to shard 1");
        sessions.get_mut(a).expect("a").upsert_all([("t", 0, 5, 100), ("t", 1, 5, 100)]);
        assert_eq!(sessions.incremental(a, 2, start).err(), Some(SessionError::InvalidEpoch));
        let session = sessions.incremental(a, 1, start).expect("epoch 1");
        assert_eq!(session.partitions.len(), 2);
        assert!(session.should_send(0, false, 0, 10, 0), "first sight of the high watermark");
        assert!(!session.should_send(0, false, 0, 10, 0), "nothing changed");
        assert!(session.should_send(0, true, 0, 10, 0), "records");
        session.rotate_served(&[("t".to_string(), 0)]);
        assert_eq!(session.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![1, 0]);
        session.forget_all([("t", 0), ("t", 1)]);
        assert!(session.partitions.is_empty());
        let later = start + EVICTION_IDLE_MS / 2;
        assert!(sessions.incremental(a, 2, later).is_ok());
        assert!(sessions.create(later).is_none(), "full of recently used sessions: no new session");
        let much_later = start + EVICTION_IDLE_MS * 2;
        let c = sessions.create(much_later).expect("evicts the idle one (b)");
        assert_eq!(sessions.incremental(b, 1, much_later).err(), Some(SessionError::NotFound));
        assert!(sessions.incremental(c, 1, much_later).is_ok());
        assert_eq!(sessions.len(), 2);
        assert!(FetchSessions::new(0, 0, 1, 7).create(start).is_none());
    }
}
