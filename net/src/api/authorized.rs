//! Authorized operations as Metadata, DescribeGroups and
//! ConsumerGroupDescribe report them when asked: a bit field with bit `n`
//! set for each permitted AclOperation code `n` (READ = 3, WRITE = 4,
//! CREATE = 5, DELETE = 6, ALTER = 7, DESCRIBE = 8, CLUSTER_ACTION = 9,
//! DESCRIBE_CONFIGS = 10, ALTER_CONFIGS = 11, IDEMPOTENT_WRITE = 12). With
//! no authorizer configured, as here, every operation a resource type
//! supports is permitted, as Kafka answers; INT32_MIN means "not asked".

/// "Authorized operations were not requested" (Kafka's INT32_MIN).
pub const NOT_REQUESTED: i32 = i32::MIN;

const fn bits(operations: &[u32]) -> i32 {
    let mut out = 0i32;
    let mut i = 0;
    while i < operations.len() {
        out |= 1 << operations[i];
        i += 1;
    }
    out
}

/// A topic's: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// The cluster's: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
/// A group's: READ, DELETE, DESCRIBE.
pub const GROUP: i32 = bits(&[3, 6, 8]);

/// `operations` when the request asked for them, else [`NOT_REQUESTED`].
pub fn when_asked(asked: bool, operations: i32) -> i32 {
    if asked {
        operations
    } else {
        NOT_REQUESTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_bit_fields() {
        assert_eq!(TOPIC, 3576);
        assert_eq!(CLUSTER, 8096);
        assert_eq!(GROUP, 328);
    }
}
