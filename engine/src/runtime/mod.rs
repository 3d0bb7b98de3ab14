//! The runtime seams of the engine: the shard pool (pinned executors), the
//! cross-core mesh with its same-shard fast path, the clock, background
//! task spawning, the single-threaded wake-up event and the shard threads'
//! I/O priority. Everything here is
//! glue between the sans-IO state and the executor it runs on.

pub mod clock;
pub mod event;
pub mod io_priority;
pub mod mesh;
pub mod pool;
pub mod spawn;
