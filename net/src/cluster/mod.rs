//! This node in the cluster: the controller core that runs the metadata
//! quorum and the controller on its own thread ([`controller_core`], with
//! the metadata log's files in [`metadata_log`], its inputs and answers in
//! [`messages`], and the controller listener and links to the other
//! voters in [`transport`]), and the broker's side:
//! following the committed log into this broker's view of its topics
//! ([`local_view`]) and holding its registration and lease ([`member`], [`member_state`]).
//! A single node is its own one-voter controller; the first start of a
//! data directory from before the metadata log brings its topics into the
//! log once ([`bootstrap`]).

pub mod bootstrap;
pub mod controller_core;
pub mod local_view;
pub mod member;
pub mod member_state;
pub mod messages;
pub mod metadata_log;
pub mod transport;
