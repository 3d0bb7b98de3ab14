//! Kafka's on-disk and on-wire record format: record batches (magic 2),
//! the records inside them and the compression codecs. Pure functions over
//! bytes, usable on any core.

pub mod batch;
pub mod compression;
pub mod records;
