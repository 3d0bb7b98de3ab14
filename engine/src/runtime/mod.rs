//! The runtime seams of the engine: the shard pool (pinned executors), the
//! cross-core mesh with its same-shard fast path, the clock, background
//! task spawning and the single-threaded wake-up event. Everything here is
//! glue between the sans-IO state and the executor it runs on.

pub mod clock;
pub mod event;
pub mod mesh;
pub mod pool;
pub mod spawn;
