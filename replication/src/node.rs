//! Who this node is in a cluster: its roles (`process_roles`), the
//! controller quorum's voters (`controller_quorum_voters`, `id@host:port`
//! as in Kafka), the cluster id, and the identity its data directory was
//! formatted with (`meta.properties`, as `kafka-storage format` writes it).
//! Pure checks, run on the main thread before anything on disk changes, so
//! a misconfigured node stops with a message that names the problem.

use std::collections::BTreeSet;

/// One voter of the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Its node id.
    pub id: i32,
    /// Its controller listener's host.
    pub host: String,
    /// Its controller listener's port.
    pub port: u16,
}

/// A node's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves clients and holds partitions.
    pub broker: bool,
    /// Votes in the controller quorum.
    pub controller: bool,
}

/// What makes a cluster configuration unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// `process_roles` is not `broker`, `controller` or both.
    #[error("process_roles {0:?}: expected broker, controller, or broker,controller")]
    Roles(String),
    /// A voter entry does not parse.
    #[error("controller_quorum_voters entry {0:?}: expected id@host:port")]
    VoterSyntax(String),
    /// Two voters share an id.
    #[error("controller_quorum_voters names node id {0} twice")]
    DuplicateVoter(i32),
    /// A controller that is not among the voters.
    #[error("node_id {node_id} has the controller role but is not in controller_quorum_voters ({voters})")]
    NotAVoter { node_id: i32, voters: String },
    /// The data directory belongs to another cluster.
    #[error(
        "data directory {dir} was formatted for cluster {found}, but this node is configured for cluster {expected}"
    )]
    OtherCluster { dir: String, found: String, expected: String },
    /// The data directory belongs to another node.
    #[error(
        "data directory {dir} was formatted for node.id {found}, but this node is configured with node_id {expected}"
    )]
    OtherNode { dir: String, found: i32, expected: i32 },
    /// `meta.properties` is there but unreadable.
    #[error("data directory {dir} has a meta.properties without {what}")]
    Damaged { dir: String, what: &'static str },
}

/// Parses `process_roles`.
pub fn parse_roles(text: &str) -> Result<Roles, NodeError> {
    let mut roles = Roles { broker: false, controller: false };
    for role in text.split(',').map(str::trim) {
        match role {
            "broker" if !roles.broker => roles.broker = true,
            "controller" if !roles.controller => roles.controller = true,
            _ => return Err(NodeError::Roles(text.to_string())),
        }
    }
    Ok(roles)
}

/// Parses `controller_quorum_voters` (`1@host:9093,2@host:9093`).
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, NodeError> {
    let mut voters = Vec::new();
    let mut ids = BTreeSet::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let syntax = || NodeError::VoterSyntax(entry.to_string());
        let (id, address) = entry.split_once('@').ok_or_else(syntax)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(syntax)?;
        let id: i32 = id.parse().map_err(|_| syntax())?;
        let port: u16 = port.parse().map_err(|_| syntax())?;
        if id < 0 || host.is_empty() || port == 0 {
            return Err(syntax());
        }
        if !ids.insert(id) {
            return Err(NodeError::DuplicateVoter(id));
        }
        voters.push(Voter { id, host: host.to_string(), port });
    }
    Ok(voters)
}

/// Checks that a controller is a voter.
pub fn check_membership(node_id: i32, roles: Roles, voters: &[Voter], voters_text: &str) -> Result<(), NodeError> {
    if roles.controller && !voters.iter().any(|v| v.id == node_id) {
        return Err(NodeError::NotAVoter { node_id, voters: voters_text.to_string() });
    }
    Ok(())
}

/// The cluster id of a multi-node cluster whose `cluster_id` is not set:
/// derived from the voters, so every node configured with the same quorum
/// agrees on it without a formatting step, and nodes whose voters differ
/// refuse each other. 22 characters of base-64 (URL alphabet), like
/// Kafka's.
pub fn cluster_id_of_voters(voters: &[Voter]) -> String {
    let mut sorted: Vec<String> = voters.iter().map(|v| format!("{}@{}:{}", v.id, v.host, v.port)).collect();
    sorted.sort();
    let text = sorted.join(",");
    let high = crc32c::crc32c(text.as_bytes()) as u128;
    let mut state = 0xcbf2_9ce4_8422_2325u64;
    for byte in text.bytes() {
        state ^= u64::from(byte);
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    let bits = (high << 96) | (u128::from(state) << 32) | u128::from(crc32c::crc32c_append(7, text.as_bytes()));
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22).map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char).collect()
}

/// What `meta.properties` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    /// `cluster.id`.
    pub cluster_id: String,
    /// `node.id`.
    pub node_id: i32,
}

impl MetaProperties {
    /// The file's text.
    pub fn to_text(&self) -> String {
        format!("version=1\ncluster.id={}\nnode.id={}\n", self.cluster_id, self.node_id)
    }

    /// Reads the file's text (`dir` names the directory in errors).
    pub fn parse(text: &str, dir: &str) -> Result<MetaProperties, NodeError> {
        let value = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim);
        let cluster_id = value("cluster.id=").filter(|v| !v.is_empty());
        let cluster_id = cluster_id.ok_or(NodeError::Damaged { dir: dir.to_string(), what: "cluster.id" })?;
        let node_id = value("node.id=").and_then(|v| v.parse().ok());
        let node_id = node_id.ok_or(NodeError::Damaged { dir: dir.to_string(), what: "node.id" })?;
        Ok(MetaProperties { cluster_id: cluster_id.to_string(), node_id })
    }

    /// Checks a formatted directory against the configuration:
    /// `expected_cluster` is `None` for a single node, which keeps the id
    /// it was formatted with.
    pub fn check(&self, node_id: i32, expected_cluster: Option<&str>, dir: &str) -> Result<(), NodeError> {
        if let Some(expected) = expected_cluster {
            if self.cluster_id != expected {
                return Err(NodeError::OtherCluster {
                    dir: dir.to_string(),
                    found: self.cluster_id.clone(),
                    expected: expected.to_string(),
                });
            }
        }
        if self.node_id != node_id {
            return Err(NodeError::OtherNode { dir: dir.to_string(), found: self.node_id, expected: node_id });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_ones_are_named() {
        let voters = parse_voters("1@127.0.0.1:9093, 2@127.0.0.2:9093").unwrap();
        assert_eq!(voters[1], Voter { id: 2, host: "127.0.0.2".into(), port: 9093 });
        assert_eq!(parse_voters("1@a:1,1@b:2"), Err(NodeError::DuplicateVoter(1)));
        assert_eq!(parse_voters("x@a:1"), Err(NodeError::VoterSyntax("x@a:1".into())));
        assert_eq!(parse_voters("1@a"), Err(NodeError::VoterSyntax("1@a".into())));
        let roles = parse_roles("broker,controller").unwrap();
        let error = check_membership(3, roles, &voters, "1@..,2@..").unwrap_err();
        assert!(error.to_string().contains("node_id 3 has the controller role but is not in"), "{error}");
        assert!(check_membership(3, parse_roles("broker").unwrap(), &voters, "").is_ok());
        assert!(parse_roles("broker,broker").is_err() && parse_roles("leader").is_err());
    }

    #[test]
    fn the_same_voters_give_the_same_cluster_id_in_any_order() {
        let a = cluster_id_of_voters(&parse_voters("1@h:1,2@h:2,3@h:3").unwrap());
        let b = cluster_id_of_voters(&parse_voters("3@h:3,1@h:1,2@h:2").unwrap());
        let c = cluster_id_of_voters(&parse_voters("1@h:1,2@h:2,3@h:4").unwrap());
        assert_eq!((a.len(), a == b, a == c), (22, true, false));
    }

    #[test]
    fn a_directory_of_another_cluster_or_node_is_refused_by_name() {
        let meta = MetaProperties::parse("version=1\ncluster.id=abc\nnode.id=2\n", "/d").unwrap();
        assert_eq!(meta, MetaProperties { cluster_id: "abc".into(), node_id: 2 });
        assert_eq!(MetaProperties::parse(&meta.to_text(), "/d"), Ok(meta.clone()));
        assert!(meta.check(2, Some("abc"), "/d").is_ok());
        assert!(meta.check(2, None, "/d").is_ok());
        let other = meta.check(2, Some("xyz"), "/d").unwrap_err();
        assert!(other.to_string().contains("formatted for cluster abc"), "{other}");
        let node = meta.check(1, None, "/d").unwrap_err();
        assert!(node.to_string().contains("formatted for node.id 2"), "{node}");
        assert!(MetaProperties::parse("version=1\n", "/d").is_err());
    }
}
