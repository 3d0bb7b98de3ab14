//! Cluster metadata: the [`records`] the controller writes to the metadata
//! log, and the [`image`] every node builds by applying them in log order.

pub mod image;
pub mod records;
