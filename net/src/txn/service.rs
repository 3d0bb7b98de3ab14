//! The transaction coordinator service of one shard: the coordinators of
//! the `__transaction_state` partitions this shard owns, and the IO around
//! their sans-IO state ([`TxnCoordinator`]). It loads a partition by
//! replaying its records, persists metadata (acks=all) before answering,
//! has commit and abort markers written through a [`MarkerWriter`] (which
//! reaches partitions wherever they live), completes transactions a crash
//! left half-way, aborts transactions past their timeout and forgets idle
//! transactional ids.
//!
//! Like the group service it reaches its own partitions only through the
//! [`Replica`] its caller hands it, and the outside only through the
//! [`MarkerWriter`] and the producer-id source given to each call, so the
//! simulator drives it unchanged. Lives on its shard (`Rc`, no locks).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_engine::format::batch::BatchHeader;
use shardline_engine::format::records::for_each_key_value;
use shardline_engine::partition::{AppendOrigin, WalkError};
use shardline_engine::runtime::clock::{timeout, SharedClock};
use shardline_engine::Disk;

use crate::coordinators::{CoordinatorLog, Coordinators};
use crate::registry::Replica;
use crate::txn::coordinator::{Completion, InitPlan, TxnCoordinator, TxnMeta, TxnStatus};
use crate::txn::records;

/// How long a metadata write may wait for durability.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often unfinished transactions are retried and timeouts checked.
pub const TICK_INTERVAL_MS: i64 = 1000;
/// How often idle transactional ids are looked for.
const EXPIRY_CHECK_INTERVAL_MS: i64 = 60_000;

/// A future a [`MarkerWriter`] or a producer-id source returns.
pub type LocalResult<'a, T> = Pin<Box<dyn Future<Output = Result<T, ResponseError>> + 'a>>;

/// Writes a transaction's markers on every partition in it, wherever the
/// partition lives, and waits until they are as durable as acks=all asks.
/// Offsets partitions also apply (commit) or drop (abort) the producer's
/// pending offsets.
pub trait MarkerWriter {
    /// Writes `completion`'s markers.
    fn write_markers<'a>(&'a self, completion: &'a Completion) -> LocalResult<'a, ()>;
}

/// Hands out fresh producer ids.
pub trait ProducerIdSource {
    /// A fresh producer id.
    fn allocate(&self) -> LocalResult<'_, i64>;
}

/// One transactional id as operators see it (ListTransactions,
/// DescribeTransactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Transactional id.
    pub id: String,
    /// Its metadata.
    pub meta: TxnMeta,
}

type Loaded<D> = crate::coordinators::Loaded<TxnCoordinator, D>;

/// A transactional id whose markers are being written, until dropped.
struct Completing<'a> {
    set: &'a RefCell<BTreeSet<String>>,
    id: &'a str,
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.try_borrow_mut() {
            set.remove(self.id);
        }
    }
}

/// One shard's transaction coordinators. See the module documentation.
pub struct TxnService<D: Disk> {
    clock: SharedClock,
    /// `transactional.id.expiration.ms`.
    id_expiration_ms: i64,
    coordinators: Coordinators<TxnCoordinator, D>,
    /// Transactional ids whose markers are being written.
    completing: RefCell<BTreeSet<String>>,
    last_expiry_check_ms: Cell<i64>,
}

impl<D: Disk> TxnService<D> {
    /// No coordinators loaded yet.
    pub fn new(clock: SharedClock, id_expiration_ms: i64) -> Self {
        let now = clock.now_ms();
        TxnService {
            clock,
            id_expiration_ms,
            coordinators: Coordinators::default(),
            completing: RefCell::new(BTreeSet::new()),
            last_expiry_check_ms: Cell::new(now),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The coordinator of `__transaction_state` partition `at`, loaded on
    /// first use.
    async fn loaded(&self, at: CoordinatorLog<D>) -> Result<Loaded<D>, ResponseError> {
        self.coordinators
            .get_or_load(at, |log| async move {
                let coordinator = load(&log).await?;
                coordinator.check_invariants();
                tracing::info!(ids = coordinator.txns.len(), "loaded transaction coordinator");
                Ok::<_, WalkError<ResponseError>>(coordinator)
            })
            .await
    }

    /// Writes `meta` for `transactional_id` (None: a tombstone forgetting
    /// the id) durably, then applies it.
    async fn write(
        &self,
        loaded: &Loaded<D>,
        transactional_id: &str,
        meta: Option<TxnMeta>,
    ) -> Result<(), ResponseError> {
        let record = TestRecord {
            key: Some(records::encode_key(transactional_id)),
            value: meta.as_ref().map(records::encode_value),
            timestamp_delta: 0,
        };
        let now = self.now_ms();
        let bytes = BytesMut::from(&batch(now, &[record])[..]);
        let partition = &loaded.log.partition;
        let written = async {
            let appended = partition.append_as_leader(bytes, AppendOrigin::Coordinator, 0, now).await?;
            partition.wait_until(appended.end_offset(), loaded.log.acks_all).await
        };
        match timeout(&*self.clock, APPEND_TIMEOUT, written).await {
            Ok(Ok(())) => {
                let mut coordinator = loaded.state.borrow_mut();
                coordinator.replay(transactional_id.to_string(), meta);
                if cfg!(debug_assertions) {
                    coordinator.check_invariants();
                }
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::warn!(transactional_id, %error, "persisting transaction metadata failed");
                Err(ResponseError::CoordinatorNotAvailable)
            }
            Err(_) => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Writes the markers of `completion`, then persists the completed
    /// metadata. A failure leaves the transaction in its prepared state,
    /// retried by [`tick`](Self::tick) until it completes.
    async fn complete(
        &self,
        loaded: &Loaded<D>,
        completion: Completion,
        markers: &dyn MarkerWriter,
    ) -> Result<(), ResponseError> {
        if !self.completing.borrow_mut().insert(completion.transactional_id.clone()) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        // Removed however this ends, a dropped future included, so the
        // timer can retry the completion.
        let _completing = Completing { set: &self.completing, id: &completion.transactional_id };
        match markers.write_markers(&completion).await {
            Ok(()) => self.write(loaded, &completion.transactional_id, Some(completion.complete.clone())).await,
            Err(error) => Err(error),
        }
    }

    /// InitProducerId with a transactional id: a new producer id, or the
    /// next epoch of the existing one (fencing older producers, aborting
    /// their open transaction first).
    #[allow(clippy::too_many_arguments)]
    pub async fn init_producer(
        &self,
        at: CoordinatorLog<D>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        ids: &dyn ProducerIdSource,
        markers: &dyn MarkerWriter,
    ) -> Result<(i64, i16), ResponseError> {
        let loaded = self.loaded(at).await?;
        let mut fresh_id = None;
        // At most: allocate an id, abort an open transaction, then answer.
        for _ in 0..4 {
            let plan = loaded.state.borrow().init(transactional_id, timeout_ms, expected, self.now_ms(), fresh_id)?;
            match plan {
                InitPlan::NeedsProducerId => fresh_id = Some(ids.allocate().await?),
                InitPlan::Ready(meta) => {
                    let answer = (meta.producer_id, meta.epoch);
                    self.write(&loaded, transactional_id, Some(meta)).await?;
                    return Ok(answer);
                }
                InitPlan::AbortFirst(abort, preparing) => {
                    self.write(&loaded, transactional_id, Some(preparing)).await?;
                    self.complete(&loaded, abort, markers).await?;
                }
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: adds `partitions` to the
    /// producer's transaction (persisted before the answer).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_partitions(
        &self,
        at: CoordinatorLog<D>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        new_fenced_code: bool,
    ) -> Result<(), ResponseError> {
        let loaded = self.loaded(at).await?;
        let next = loaded.state.borrow().add_partitions(
            transactional_id,
            producer_id,
            epoch,
            partitions,
            self.now_ms(),
            new_fenced_code,
        )?;
        match next {
            Some(meta) => self.write(&loaded, transactional_id, Some(meta)).await,
            None => Ok(()),
        }
    }

    /// KIP-890 part 1: whether `partition` is in the open transaction of
    /// `transactional_id` at producer (id, epoch), as a partition asks
    /// before it accepts the transaction's first batch there. A fenced
    /// epoch is INVALID_PRODUCER_EPOCH; anything else that is not an open
    /// transaction holding the partition is INVALID_TXN_STATE.
    pub async fn verify(
        &self,
        at: CoordinatorLog<D>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        let loaded = self.loaded(at).await?;
        let coordinator = loaded.state.borrow();
        let meta = coordinator.txns.get(transactional_id).ok_or(ResponseError::InvalidTxnState)?;
        if meta.producer_id != producer_id {
            return Err(ResponseError::InvalidTxnState);
        }
        if epoch < meta.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        let open = meta.status == TxnStatus::Ongoing && meta.epoch == epoch && meta.partitions.contains(partition);
        if !open {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: commit or abort; answered once every marker is written.
    #[allow(clippy::too_many_arguments)]
    pub async fn end(
        &self,
        at: CoordinatorLog<D>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        new_fenced_code: bool,
        markers: &dyn MarkerWriter,
    ) -> Result<(), ResponseError> {
        let loaded = self.loaded(at).await?;
        let decided =
            loaded.state.borrow().end(transactional_id, producer_id, epoch, commit, self.now_ms(), new_fenced_code)?;
        if let Some((prepare, completion)) = decided {
            self.write(&loaded, transactional_id, Some(prepare)).await?;
            self.complete(&loaded, completion, markers).await?;
        }
        Ok(())
    }

    /// Every transactional id of coordinator `index`.
    pub async fn list(&self, at: CoordinatorLog<D>) -> Result<Vec<Listed>, ResponseError> {
        let loaded = self.loaded(at).await?;
        let coordinator = loaded.state.borrow();
        Ok(coordinator.txns.iter().map(|(id, meta)| Listed { id: id.clone(), meta: meta.clone() }).collect())
    }

    /// Forgets every coordinator (the topic was deleted, or the simulator
    /// crashed the node).
    pub fn unload_all(&self) {
        self.coordinators.clear();
        self.completing.borrow_mut().clear();
    }

    fn all_loaded(&self) -> Vec<Loaded<D>> {
        self.coordinators.all().into_iter().map(|(_, loaded)| loaded).collect()
    }

    /// When [`tick`](Self::tick) next has work: the earliest transaction
    /// timeout, a retry of an unfinished one, or the idle-id check.
    pub fn next_deadline_ms(&self) -> i64 {
        let now = self.now_ms();
        let mut next = self.last_expiry_check_ms.get() + EXPIRY_CHECK_INTERVAL_MS;
        for loaded in self.all_loaded() {
            let coordinator = loaded.state.borrow();
            if !coordinator.unfinished().is_empty() {
                next = next.min(now + TICK_INTERVAL_MS);
            }
            if let Some(timeout) = coordinator.next_timeout_ms() {
                next = next.min(timeout + 1);
            }
        }
        next
    }

    /// Completes transactions left prepared (after a crash or a failed
    /// marker write), aborts those past their timeout (with an epoch bump),
    /// and every minute forgets transactional ids idle for
    /// `transactional.id.expiration.ms`.
    pub async fn tick(&self, markers: &dyn MarkerWriter) {
        let now = self.now_ms();
        let expire = now - self.last_expiry_check_ms.get() >= EXPIRY_CHECK_INTERVAL_MS;
        if expire {
            self.last_expiry_check_ms.set(now);
        }
        for loaded in self.all_loaded() {
            if expire {
                let expired = loaded.state.borrow().expired_ids(now, self.id_expiration_ms);
                for id in expired {
                    tracing::info!(id, "forgetting an expired transactional id");
                    let _ = self.write(&loaded, &id, None).await;
                }
            }
            let (unfinished, timed_out) = {
                let c = loaded.state.borrow();
                (c.unfinished(), c.timed_out(now))
            };
            for completion in unfinished {
                if self.completing.borrow().contains(&completion.transactional_id) {
                    continue;
                }
                let _ = self.complete(&loaded, completion, markers).await;
            }
            for (prepare, completion) in timed_out {
                tracing::info!(id = completion.transactional_id, "aborting a transaction past its timeout");
                let id = completion.transactional_id.clone();
                if self.write(&loaded, &id, Some(prepare)).await.is_ok() {
                    let _ = self.complete(&loaded, completion, markers).await;
                }
            }
        }
    }
}

async fn load<D: Disk>(log: &Replica<D>) -> Result<TxnCoordinator, WalkError<ResponseError>> {
    let mut coordinator = TxnCoordinator::default();
    let visit = |header: &BatchHeader, batch: &[u8]| {
        if header.is_control() {
            return Ok(());
        }
        let walked = for_each_key_value(batch, header, |kv| {
            if let Some(id) = kv.key.and_then(records::decode_key) {
                coordinator.replay(id, kv.value.and_then(records::decode_value));
            }
        });
        if let Err(error) = walked {
            // One bad batch must not keep every transactional id of the
            // partition unloaded: it is skipped, loudly.
            tracing::error!(offset = header.base_offset, %error, "skipping an undecodable batch while loading transactions");
        }
        Ok::<(), ResponseError>(())
    };
    log.partition.for_each_batch(visit).await?;
    Ok(coordinator)
}
