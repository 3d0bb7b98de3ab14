//! `__transaction_state` records in Kafka's layout: key (version 0,
//! transactional id) and value (version 0: producer id, epoch, timeout,
//! status, partitions, last update and start timestamps). A null value
//! removes the transactional id. Pure functions; decoding checks every
//! length against the bytes present.

use std::collections::BTreeSet;

use bytes::{BufMut, BytesMut};

use super::coordinator::{TxnMeta, TxnStatus};
use crate::record_codec::{put_string, RecordReader};

/// Key bytes for `transactional_id`.
pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut key = BytesMut::new();
    key.put_i16(0);
    put_string(&mut key, transactional_id);
    key.to_vec()
}

/// Value bytes for `meta`.
pub fn encode_value(meta: &TxnMeta) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i64(meta.producer_id);
    out.put_i16(meta.epoch);
    out.put_i32(meta.timeout_ms);
    out.put_i8(meta.status as i8);
    let mut topics: Vec<(&String, Vec<i32>)> = Vec::new();
    for (topic, partition) in &meta.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic => ps.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    out.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_string(&mut out, topic);
        out.put_i32(partitions.len() as i32);
        for p in partitions {
            out.put_i32(p);
        }
    }
    out.put_i64(meta.last_update_ms);
    out.put_i64(meta.start_ms);
    out.to_vec()
}

/// The transactional id of a key.
pub fn decode_key(key: &[u8]) -> Option<String> {
    let mut r = RecordReader::new(key);
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// A value's transaction metadata.
pub fn decode_value(value: &[u8]) -> Option<TxnMeta> {
    let mut r = RecordReader::new(value);
    if r.i16()? > 1 {
        return None;
    }
    let producer_id = r.i64()?;
    let epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = TxnStatus::from_i8(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    for _ in 0..r.count(6)? {
        let topic = r.string()?;
        for _ in 0..r.count(4)? {
            partitions.insert((topic.clone(), r.i32()?));
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnMeta { producer_id, epoch, timeout_ms, status, partitions, last_update_ms, start_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_truncation_is_refused() {
        let meta = TxnMeta {
            producer_id: 42,
            epoch: 3,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)].into_iter().collect(),
            last_update_ms: 10,
            start_ms: 5,
        };
        let value = encode_value(&meta);
        assert_eq!(decode_value(&value), Some(meta));
        for cut in 0..value.len() {
            assert_eq!(decode_value(&value[..cut]), None);
        }
        assert_eq!(decode_key(&encode_key("tx-1")).as_deref(), Some("tx-1"));
    }
}
