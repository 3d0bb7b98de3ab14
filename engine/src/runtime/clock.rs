//! Time, as the engine and the coordinators see it: the one seam through
//! which wall-clock time is read and timers are armed. The broker runs on
//! [`SystemClock`] (compio timers); the deterministic simulator passes its
//! own clock, so a run depends on its seed only. Each shard holds its own
//! clock handle (`Rc`, never shared across cores).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// A timer future armed by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()>>>;

/// Wall-clock time in milliseconds and timers on the same time line.
pub trait Clock: Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// A clock handle as the engine passes it around (one per shard).
pub type SharedClock = Rc<dyn Clock>;

/// The production clock: the system's wall time and compio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since_epoch.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(compio::time::sleep(duration))
    }
}

/// The system clock as a shared handle.
pub fn system_clock() -> SharedClock {
    Rc::new(SystemClock)
}

/// Why [`timeout`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Runs `work` until it completes or `duration` passes on `clock`.
pub async fn timeout<T>(clock: &dyn Clock, duration: Duration, work: impl Future<Output = T>) -> Result<T, Elapsed> {
    let sleep = clock.sleep(duration);
    match futures::future::select(std::pin::pin!(work), sleep).await {
        futures::future::Either::Left((done, _)) => Ok(done),
        futures::future::Either::Right(((), _)) => Err(Elapsed),
    }
}

/// Monotonic time for the threads beside the shards (the controller core
/// and the thread that starts the broker), which block on IO and run no
/// executor; the simulator drives what they drive (the controller) with
/// its own ticks instead.
pub fn monotonic_now() -> std::time::Instant {
    std::time::Instant::now()
}
