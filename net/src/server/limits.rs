//! Connection admission, broker-wide: `max.connections`,
//! `max.connections.per.ip` and its overrides, as Kafka counts them. One
//! table shared by every shard's accept loop (a mutex taken once per accepted
//! and once per closed connection, never on the request path).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::BrokerConfig;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The broker has `max.connections` open: the caller waits for a close.
    #[error("the broker has {0} connections open (max_connections)")]
    BrokerFull(usize),
    /// This address has its limit open: Kafka closes the new connection.
    #[error("{0} connections are open from this address (max_connections_per_ip)")]
    TooManyFromAddress(usize),
}

/// Open connections, broker-wide and per address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<OpenCounts>,
}

#[derive(Debug, Default)]
struct OpenCounts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl ConnectionLimits {
    /// The limits of `config` (already validated), nothing open.
    pub fn new(config: &BrokerConfig) -> Arc<Self> {
        let overrides = config.per_ip_overrides().unwrap_or_default().into_iter().collect();
        Arc::new(ConnectionLimits {
            max_total: config.max_connections,
            max_per_address: config.max_connections_per_ip,
            overrides,
            open: Mutex::new(OpenCounts::default()),
        })
    }

    /// Whether the broker-wide limit is reached (accepting would only park
    /// the new connection).
    pub fn broker_full(&self) -> bool {
        self.lock().total >= self.max_total
    }

    /// Admits a connection from `address`, or says why not.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionSlot, Refused> {
        let limit = self.overrides.get(&address).copied().unwrap_or(self.max_per_address);
        let mut open = self.lock();
        let from_address = open.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= limit {
            return Err(Refused::TooManyFromAddress(from_address));
        }
        if open.total >= self.max_total {
            return Err(Refused::BrokerFull(open.total));
        }
        open.total += 1;
        *open.per_address.entry(address).or_insert(0) += 1;
        Ok(ConnectionSlot { limits: self.clone(), address })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenCounts> {
        // The counts stay consistent even if a holder panicked (each update
        // is a few integer writes), so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        assert!(open.total > 0, "a slot is dropped once per admission");
        open.total -= 1;
        let from_address = open.per_address.get_mut(&self.address).expect("an admitted address is counted");
        *from_address -= 1;
        if *from_address == 0 {
            open.per_address.remove(&self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, overrides: &str) -> Arc<ConnectionLimits> {
        let config = BrokerConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_connections_per_ip_overrides: overrides.into(),
            ..BrokerConfig::default()
        };
        config.validate().expect("valid");
        ConnectionLimits::new(&config)
    }

    #[test]
    fn per_address_limit_and_overrides() {
        let limits = limits(100, 2, "127.0.0.9:3");
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.9".parse().unwrap();
        let first = limits.admit(a).expect("first");
        let _second = limits.admit(a).expect("second");
        assert_eq!(limits.admit(a).unwrap_err(), Refused::TooManyFromAddress(2));
        let overridden: Vec<_> = (0..3).map(|_| limits.admit(b).expect("override allows 3")).collect();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::TooManyFromAddress(3));
        drop(first);
        let _again = limits.admit(a).expect("a closed connection frees its place");
        drop(overridden);
        assert_eq!(limits.lock().per_address.len(), 1, "addresses with nothing open are forgotten");
    }

    #[test]
    fn broker_wide_limit() {
        let limits = limits(2, 100, "");
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limits.admit(a).expect("first");
        let _second = limits.admit(b).expect("second");
        assert!(limits.broker_full());
        assert_eq!(limits.admit(b).unwrap_err(), Refused::BrokerFull(2));
        drop(first);
        assert!(!limits.broker_full());
        let _third = limits.admit(b).expect("room again");
    }
}
