//! A node that is only a controller (`process_roles=controller`): a voter
//! of the metadata quorum on its controller listener, with the metadata
//! log in its data directory, and no client listener and no partitions
//! (it never registers as a broker, so nothing is placed on it). It
//! starts and stops as a broker does, minus the shards: the controller
//! core runs on its own thread.

use crate::cluster::controller_core::ControllerCore;
use crate::config::BrokerConfig;

use super::broker::{check_meta_properties, format_data_dir, lock_data_dir, wait_for_quorum};

/// A running controller-only node.
pub struct ControllerNode {
    controller: ControllerCore,
    /// Its controller listener (`host:port` from the voters).
    pub controller_address: String,
    _data_dir_lock: std::fs::File,
}

impl ControllerNode {
    /// Checks the configuration and the data directory (formatting it on
    /// first start), starts the controller core and returns once its
    /// quorum has a leader and this node applied what is committed.
    pub fn start(config: BrokerConfig) -> Result<ControllerNode, Box<dyn std::error::Error>> {
        config.validate()?;
        let roles = config.roles()?;
        assert!(roles.controller && !roles.broker, "a controller-only node: {roles:?}");
        let formatted = check_meta_properties(&config)?;
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir_lock = lock_data_dir(&config)?;
        let cluster_id = format_data_dir(&config, formatted)?;
        let voters = config.voters()?;
        let own = voters.iter().find(|v| v.id == config.node_id).ok_or("a controller is one of the voters")?;
        let controller_address = format!("{}:{}", own.host, own.port);
        let controller = ControllerCore::start(&config, &voters, &cluster_id)?;
        wait_for_quorum(controller.handle())?;
        tracing::info!(%controller_address, %cluster_id, data_dir = %config.data_dir.display(), "shardline controller started");
        Ok(ControllerNode { controller, controller_address, _data_dir_lock: data_dir_lock })
    }

    /// Stops the controller core (its log is durable at every append).
    pub fn shutdown(self) {
        tracing::info!("shutting down");
        self.controller.stop();
        tracing::info!("shutdown complete");
    }
}
