//! The transaction coordinator of one `__transaction_state` partition,
//! sans IO: per transactional id, its producer id and epoch, status and the
//! partitions in the open transaction. Each call validates a request and
//! returns the new metadata to persist (and, for EndTxn, InitProducerId
//! over an open transaction and timeouts, the markers to write); the driver
//! (`txn::mod`) persists, writes markers and completes. States and errors
//! follow Kafka's `TransactionCoordinator`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

/// Transaction status, with Kafka's byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// No transaction open.
    Empty = 0,
    /// Partitions added, not yet ended.
    Ongoing = 1,
    /// Commit decided; markers being written.
    PrepareCommit = 2,
    /// Abort decided; markers being written.
    PrepareAbort = 3,
    /// Committed, markers written.
    CompleteCommit = 4,
    /// Aborted, markers written.
    CompleteAbort = 5,
    /// Expired id.
    Dead = 6,
    /// Abort with an epoch bump (fencing) in progress.
    PrepareEpochFence = 7,
}

impl TxnStatus {
    /// From the stored byte.
    pub fn from_i8(v: i8) -> Option<Self> {
        Some(match v {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (ListTransactions, DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence)
    }
}

/// One transactional id's metadata (what `__transaction_state` stores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// Status.
    pub status: TxnStatus,
    /// Partitions in the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Last change (wall ms).
    pub last_update_ms: i64,
    /// When the open transaction started (wall ms), or -1.
    pub start_ms: i64,
}

/// Markers to write and the metadata to persist once they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Transactional id.
    pub transactional_id: String,
    /// Producer id of the markers.
    pub producer_id: i64,
    /// Epoch of the markers.
    pub epoch: i16,
    /// Commit or abort.
    pub commit: bool,
    /// Partitions to mark.
    pub partitions: BTreeSet<(String, i32)>,
    /// Metadata once complete.
    pub complete: TxnMeta,
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// Persist this metadata and answer with its id and epoch.
    Ready(TxnMeta),
    /// Abort the open transaction first (fencing its producer), then ask again.
    AbortFirst(Completion, TxnMeta),
    /// A fresh producer id is needed: allocate one, then ask again with it.
    NeedsProducerId,
}

/// Largest epoch before a producer id is replaced.
const MAX_EPOCH: i16 = i16::MAX - 1;

/// The transactional ids of one `__transaction_state` partition.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    /// Metadata by transactional id.
    pub txns: BTreeMap<String, TxnMeta>,
}

/// Kafka's answer to an old epoch: PRODUCER_FENCED from the versions that
/// know it, INVALID_PRODUCER_EPOCH before.
pub fn fenced(new_error_code: bool) -> ResponseError {
    if new_error_code {
        ResponseError::ProducerFenced
    } else {
        ResponseError::InvalidProducerEpoch
    }
}

impl TxnCoordinator {
    /// Applies a record replayed from the log (None: the id was removed).
    pub fn replay(&mut self, transactional_id: String, meta: Option<TxnMeta>) {
        match meta {
            Some(meta) => {
                self.txns.insert(transactional_id, meta);
            }
            None => {
                self.txns.remove(&transactional_id);
            }
        }
    }

    /// Asserts what every transition must leave true (debug builds).
    pub fn check_invariants(&self) {
        for (id, meta) in &self.txns {
            let open = matches!(meta.status, TxnStatus::Ongoing) || meta.status.preparing();
            debug_assert!(meta.epoch >= 0 && meta.producer_id >= 0, "{id}: a valid producer id and epoch");
            debug_assert!(open || meta.partitions.is_empty(), "{id}: only an open transaction has partitions");
            debug_assert!(meta.status != TxnStatus::Ongoing || meta.start_ms >= 0, "{id}: an open transaction started");
        }
    }

    /// Transactions left half-way (Prepare*) by a crash: to complete.
    pub fn unfinished(&self) -> Vec<Completion> {
        self.txns
            .iter()
            .filter(|(_, m)| m.status.preparing())
            .map(|(id, m)| completion(id, m, m.status == TxnStatus::PrepareCommit, m.epoch, m.last_update_ms))
            .collect()
    }

    /// InitProducerId with a transactional id. `fresh_id` is a newly
    /// allocated producer id, when the caller has one (the answer
    /// [`InitPlan::NeedsProducerId`] asks for it); `expected` is the
    /// (id, epoch) a v3+ client says it has.
    pub fn init(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
        fresh_id: Option<i64>,
    ) -> Result<InitPlan, ResponseError> {
        let Some(current) = self.txns.get(transactional_id) else {
            if expected.is_some() {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            let Some(producer_id) = fresh_id else { return Ok(InitPlan::NeedsProducerId) };
            return Ok(InitPlan::Ready(TxnMeta {
                producer_id,
                epoch: 0,
                timeout_ms,
                status: TxnStatus::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now_ms,
                start_ms: -1,
            }));
        };
        if current.status.preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if let Some((id, epoch)) = expected {
            let matches = id == current.producer_id && (epoch == current.epoch || epoch + 1 == current.epoch);
            if !matches {
                return Err(ResponseError::ProducerFenced);
            }
        }
        if current.status == TxnStatus::Ongoing {
            // Fence the old producer: abort its transaction at a new epoch.
            let epoch = current.epoch.saturating_add(1).min(MAX_EPOCH);
            let abort = completion(transactional_id, current, false, epoch, now_ms);
            let mut preparing = current.clone();
            preparing.status = TxnStatus::PrepareEpochFence;
            preparing.epoch = epoch;
            preparing.last_update_ms = now_ms;
            return Ok(InitPlan::AbortFirst(abort, preparing));
        }
        let mut next = current.clone();
        if current.epoch >= MAX_EPOCH {
            let Some(producer_id) = fresh_id else { return Ok(InitPlan::NeedsProducerId) };
            next.producer_id = producer_id;
            next.epoch = 0;
        } else {
            next.epoch += 1;
        }
        next.timeout_ms = timeout_ms;
        next.status = TxnStatus::Empty;
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next.start_ms = -1;
        debug_assert!(
            next.producer_id != current.producer_id || next.epoch > current.epoch,
            "a new incarnation fences the old one"
        );
        Ok(InitPlan::Ready(next))
    }

    fn check_producer(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        new_fenced_code: bool,
    ) -> Result<&TxnMeta, ResponseError> {
        let meta = self.txns.get(transactional_id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch != meta.epoch {
            return Err(fenced(new_fenced_code));
        }
        Ok(meta)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the metadata to persist, or
    /// None when nothing changes.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
        new_fenced_code: bool,
    ) -> Result<Option<TxnMeta>, ResponseError> {
        let meta = self.check_producer(transactional_id, producer_id, epoch, new_fenced_code)?;
        if meta.status.preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if meta.status == TxnStatus::Dead {
            return Err(ResponseError::InvalidTxnState);
        }
        if meta.status == TxnStatus::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p)) {
            return Ok(None);
        }
        let mut next = meta.clone();
        if next.status != TxnStatus::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.status = TxnStatus::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        debug_assert!(partitions.iter().all(|p| next.partitions.contains(p)) && next.start_ms >= 0);
        Ok(Some(next))
    }

    /// EndTxn: the prepare metadata to persist and the completion to carry
    /// out, or Ok(None) for a retry of an already completed end.
    pub fn end(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
        new_fenced_code: bool,
    ) -> Result<Option<(TxnMeta, Completion)>, ResponseError> {
        let meta = self.check_producer(transactional_id, producer_id, epoch, new_fenced_code)?;
        match (meta.status, commit) {
            (TxnStatus::Ongoing, _) => {
                let mut prepare = meta.clone();
                prepare.status = if commit { TxnStatus::PrepareCommit } else { TxnStatus::PrepareAbort };
                prepare.last_update_ms = now_ms;
                let completion = completion(transactional_id, meta, commit, meta.epoch, now_ms);
                debug_assert_eq!(completion.partitions, meta.partitions, "markers go to every partition added");
                debug_assert!(completion.complete.partitions.is_empty() && completion.complete.start_ms == -1);
                Ok(Some((prepare, completion)))
            }
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => Ok(None),
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            (TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence, _) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Transactional ids without an open transaction, unchanged for
    /// `expiration_ms` (`transactional.id.expiration.ms`): to forget.
    pub fn expired_ids(&self, now_ms: i64, expiration_ms: i64) -> Vec<String> {
        self.txns
            .iter()
            .filter(|(_, m)| {
                matches!(m.status, TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
                    && now_ms - m.last_update_ms >= expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the earliest open transaction times out (ms), if any.
    pub fn next_timeout_ms(&self) -> Option<i64> {
        self.txns
            .values()
            .filter(|m| m.status == TxnStatus::Ongoing && m.start_ms >= 0)
            .map(|m| m.start_ms + i64::from(m.timeout_ms))
            .min()
    }

    /// Open transactions past their timeout: abort them at a bumped epoch
    /// (fencing the producer), as Kafka does.
    pub fn timed_out(&self, now_ms: i64) -> Vec<(TxnMeta, Completion)> {
        self.txns
            .iter()
            .filter(|(_, m)| m.status == TxnStatus::Ongoing && m.start_ms >= 0)
            .filter(|(_, m)| now_ms - m.start_ms > i64::from(m.timeout_ms))
            .map(|(id, m)| {
                let epoch = m.epoch.saturating_add(1).min(MAX_EPOCH);
                debug_assert!(epoch > m.epoch || m.epoch == MAX_EPOCH, "a timeout abort fences the producer");
                let mut prepare = m.clone();
                prepare.status = TxnStatus::PrepareEpochFence;
                prepare.epoch = epoch;
                prepare.last_update_ms = now_ms;
                (prepare, completion(id, m, false, epoch, now_ms))
            })
            .collect()
    }
}

fn completion(transactional_id: &str, meta: &TxnMeta, commit: bool, epoch: i16, now_ms: i64) -> Completion {
    let mut complete = meta.clone();
    complete.status = if commit { TxnStatus::CompleteCommit } else { TxnStatus::CompleteAbort };
    complete.epoch = epoch;
    complete.partitions.clear();
    complete.last_update_ms = now_ms;
    complete.start_ms = -1;
    Completion {
        transactional_id: transactional_id.to_string(),
        producer_id: meta.producer_id,
        epoch,
        commit,
        partitions: meta.partitions.clone(),
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(c: &mut TxnCoordinator, id: &str, meta: TxnMeta) {
        c.replay(id.to_string(), Some(meta));
    }

    #[test]
    fn a_transaction_runs_commits_and_fences_older_epochs() {
        let mut c = TxnCoordinator::default();
        assert_eq!(c.init("t", 60_000, None, 0, None), Ok(InitPlan::NeedsProducerId));
        let InitPlan::Ready(meta) = c.init("t", 60_000, None, 0, Some(101)).unwrap() else { panic!() };
        assert_eq!((meta.producer_id, meta.epoch), (101, 0));
        apply(&mut c, "t", meta);
        let parts = [("a".to_string(), 0), ("b".to_string(), 1)];
        let ongoing = c.add_partitions("t", 101, 0, &parts, 1, true).unwrap().unwrap();
        assert_eq!(ongoing.status, TxnStatus::Ongoing);
        apply(&mut c, "t", ongoing);
        assert_eq!(c.add_partitions("t", 101, 0, &parts[..1], 2, true), Ok(None));
        let (prepare, completion) = c.end("t", 101, 0, true, 3, true).unwrap().unwrap();
        assert_eq!(prepare.status, TxnStatus::PrepareCommit);
        assert_eq!(completion.partitions.len(), 2);
        apply(&mut c, "t", prepare);
        assert_eq!(c.end("t", 101, 0, true, 4, true), Err(ResponseError::ConcurrentTransactions));
        assert_eq!(c.unfinished().len(), 1, "a crash here completes the commit on load");
        apply(&mut c, "t", completion.complete.clone());
        assert_eq!(c.end("t", 101, 0, true, 5, true), Ok(None), "a retried commit succeeds");
        assert_eq!(c.end("t", 101, 0, false, 5, true), Err(ResponseError::InvalidTxnState));
        // A new incarnation bumps the epoch; the old one is fenced.
        let InitPlan::Ready(bumped) = c.init("t", 60_000, None, 6, None).unwrap() else { panic!() };
        assert_eq!(bumped.epoch, 1);
        apply(&mut c, "t", bumped);
        assert_eq!(c.add_partitions("t", 101, 0, &parts, 7, true), Err(ResponseError::ProducerFenced));
        assert!(c.expired_ids(100, 1000).is_empty());
        assert_eq!(c.expired_ids(10_000, 1000), vec!["t".to_string()]);
    }

    #[test]
    fn init_over_an_open_transaction_aborts_it_and_timeouts_abort() {
        let mut c = TxnCoordinator::default();
        let InitPlan::Ready(meta) = c.init("t", 1000, None, 0, Some(7)).unwrap() else { panic!() };
        apply(&mut c, "t", meta);
        let ongoing = c.add_partitions("t", 7, 0, &[("a".into(), 0)], 10, true).unwrap().unwrap();
        apply(&mut c, "t", ongoing);
        assert!(c.timed_out(500).is_empty());
        let expired = c.timed_out(2000);
        assert_eq!(expired.len(), 1);
        assert!(!expired[0].1.commit);
        assert_eq!(expired[0].1.epoch, 1, "the timed-out producer is fenced");
        match c.init("t", 1000, None, 20, None).unwrap() {
            InitPlan::AbortFirst(abort, preparing) => {
                assert!(!abort.commit);
                assert_eq!(preparing.status, TxnStatus::PrepareEpochFence);
            }
            other => panic!("{other:?}"),
        }
    }
}
