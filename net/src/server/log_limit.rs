//! A bound on repetitive log lines: at most [`LINES_PER_WINDOW`] of one kind
//! per [`WINDOW_MS`]; the rest are counted and the count is reported on the
//! next line let through, so a flood of bad connections writes a few lines a
//! minute, not one per connection. Sans-IO (the caller passes the time); one
//! per shard, owned by its accept loop.

use std::cell::Cell;

/// Length of one window.
pub const WINDOW_MS: i64 = 10_000;
/// Lines let through per window.
pub const LINES_PER_WINDOW: u32 = 10;

/// The state of one kind of log line.
#[derive(Debug, Default)]
pub struct LogLimit {
    window_start_ms: Cell<i64>,
    written: Cell<u32>,
    suppressed: Cell<u64>,
}

impl LogLimit {
    /// Whether a line at `now_ms` may be written: `Some(n)` with the number
    /// of lines suppressed since the last one written, `None` to drop it.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        if now_ms - self.window_start_ms.get() >= WINDOW_MS || now_ms < self.window_start_ms.get() {
            self.window_start_ms.set(now_ms);
            self.written.set(0);
        }
        if self.written.get() >= LINES_PER_WINDOW {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.written.set(self.written.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_bounded_and_counted() {
        let limit = LogLimit::default();
        let mut written = 0;
        let mut reported = 0;
        // 10,000 lines within one window: ten get through.
        for i in 0..10_000 {
            if let Some(suppressed) = limit.admit(1_000 + i / 10) {
                written += 1;
                reported += suppressed;
            }
        }
        assert_eq!(written, LINES_PER_WINDOW);
        assert_eq!(reported, 0);
        // The next window's first line reports the rest.
        assert_eq!(limit.admit(1_000 + WINDOW_MS), Some(10_000 - u64::from(LINES_PER_WINDOW)));
        assert_eq!(limit.admit(1_001 + WINDOW_MS), Some(0));
    }
}
