//! Offsets of one partition replica and the invariants between them:
//! log start ≤ HW ≤ durable ≤ written ≤ LEO, HW never decreasing except by
//! truncation. Pure data, owned by the partition on its shard; replication
//! moves the high watermark, the log moves the rest.

/// What the high watermark follows when this replica is the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighWatermarkPolicy {
    /// HW = durable LEO (fdatasync'ed): the single-node default.
    Durable,
    /// HW = written LEO (on disk, not synced): Kafka's own semantics.
    Written,
    /// HW is set by replication only.
    Replicated,
}

/// The offsets of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset still held (advanced by retention and DeleteRecords).
    pub log_start: i64,
    /// High watermark: consumers read below it.
    pub high_watermark: i64,
    /// Offsets below this are fdatasync'ed.
    pub durable: i64,
    /// Offsets below this are written to the file (survive a process crash).
    pub written: i64,
    /// Log end offset: the next offset to assign.
    pub log_end: i64,
}

impl PartitionOffsets {
    /// Offsets of a log whose data (all durable) spans `[log_start, log_end)`.
    pub fn recovered(log_start: i64, log_end: i64) -> Self {
        let offsets = Self { log_start, high_watermark: log_start, durable: log_end, written: log_end, log_end };
        offsets.check();
        offsets
    }

    /// Asserts the ordering invariants.
    pub fn check(&self) {
        assert!(0 <= self.log_start, "{self:?}");
        assert!(self.log_start <= self.log_end, "{self:?}");
        assert!(self.high_watermark <= self.log_end, "{self:?}");
        assert!(self.durable <= self.written && self.written <= self.log_end, "{self:?}");
    }

    /// Moves the high watermark forward (never back), capped at the LEO.
    pub fn advance_high_watermark(&mut self, to: i64) {
        let to = to.min(self.log_end);
        if to > self.high_watermark {
            self.high_watermark = to;
        }
        self.check();
    }

    /// Applies the policy after `written`/`durable` moved.
    pub fn follow(&mut self, policy: HighWatermarkPolicy) {
        match policy {
            HighWatermarkPolicy::Durable => self.advance_high_watermark(self.durable),
            HighWatermarkPolicy::Written => self.advance_high_watermark(self.written),
            HighWatermarkPolicy::Replicated => {}
        }
    }

    /// Cuts everything at and after `offset` (follower truncation).
    pub fn truncate_to(&mut self, offset: i64) {
        assert!(offset >= self.log_start && offset <= self.log_end);
        self.log_end = offset;
        self.written = self.written.min(offset);
        self.durable = self.durable.min(offset);
        self.high_watermark = self.high_watermark.min(offset);
        self.check();
    }

    /// Moves the log start forward; the HW and LEO follow if they are behind.
    pub fn advance_log_start(&mut self, offset: i64) {
        if offset <= self.log_start {
            return;
        }
        self.log_start = offset;
        self.log_end = self.log_end.max(offset);
        self.written = self.written.max(offset);
        self.durable = self.durable.max(offset);
        self.high_watermark = self.high_watermark.max(offset);
        self.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_follows_policy_and_never_goes_back() {
        let mut offsets = PartitionOffsets::recovered(0, 10);
        assert_eq!(offsets.high_watermark, 0);
        offsets.follow(HighWatermarkPolicy::Durable);
        assert_eq!(offsets.high_watermark, 10);
        offsets.log_end = 20;
        offsets.written = 15;
        offsets.follow(HighWatermarkPolicy::Durable);
        assert_eq!(offsets.high_watermark, 10);
        offsets.follow(HighWatermarkPolicy::Written);
        assert_eq!(offsets.high_watermark, 15);
        offsets.advance_high_watermark(12);
        assert_eq!(offsets.high_watermark, 15);
        offsets.truncate_to(12);
        assert_eq!((offsets.high_watermark, offsets.written, offsets.durable), (12, 12, 10));
        offsets.advance_log_start(11);
        assert_eq!(offsets.log_start, 11);
    }
}
