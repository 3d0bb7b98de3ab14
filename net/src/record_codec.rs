//! The field encodings of the records coordinators keep in their internal
//! topics (`__consumer_offsets`, `__transaction_state`), in Kafka's
//! layouts: big-endian integers, int16-length strings and int32-length
//! bytes for the classic layouts; unsigned varints, compact strings and
//! arrays, uuids and tagged-field sections for the flexible ones. One
//! home for both the group and the transaction coordinators' records (and
//! for the few fields the gathered Fetch encoding writes itself).
//! Pure; reading checks every length against the bytes present, so a
//! length read off the disk never sizes an allocation. Runs on whichever
//! shard owns the coordinator.

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

/// Writes an int16-length string (cut at `i16::MAX` bytes).
pub fn put_string(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    out.put_i16(bytes.len() as i16);
    out.put_slice(bytes);
}

/// Writes an int16-length string, -1 for none.
pub fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

/// Writes int32-length bytes.
pub fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_i32(bytes.len() as i32);
    out.put_slice(bytes);
}

/// Writes an unsigned varint.
pub fn put_uvarint(out: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Writes a compact (length + 1) string, 0 for none.
pub fn put_compact_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(out, 0),
        Some(s) => {
            put_uvarint(out, s.len() as u32 + 1);
            out.put_slice(s.as_bytes());
        }
    }
}

/// A bounds-checked reader over one key or value: every read is None once
/// the bytes run out.
pub struct RecordReader<'a>(&'a [u8]);

impl<'a> RecordReader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        RecordReader(bytes)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// An int8.
    pub fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }

    /// An int16.
    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    /// An int32.
    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// An int64.
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// An int16-length string; Some(None) for -1.
    pub fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8(self.take(len as usize)?.to_vec()).ok()?))
    }

    /// An int16-length string that must be there.
    pub fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }

    /// Int32-length bytes.
    pub fn bytes(&mut self) -> Option<bytes::Bytes> {
        let len = usize::try_from(self.i32()?).ok()?;
        Some(bytes::Bytes::copy_from_slice(self.take(len)?))
    }

    /// An int32 element count that `min_element`-byte elements could fill
    /// from what is left (a negative count reads as 0).
    pub fn count(&mut self, min_element: usize) -> Option<usize> {
        let count = usize::try_from(self.i32()?.max(0)).ok()?;
        (count.checked_mul(min_element)? <= self.0.len()).then_some(count)
    }

    /// An unsigned varint of at most 32 bits.
    pub fn uvarint(&mut self) -> Option<u32> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A compact length: Some(None) for null, else a length whose
    /// `min_element`-byte elements fit in what is left.
    pub fn compact_len(&mut self, min_element: usize) -> Option<Option<usize>> {
        let raw = self.uvarint()?;
        if raw == 0 {
            return Some(None);
        }
        let len = raw as usize - 1;
        if len.checked_mul(min_element)? > self.0.len() {
            return None;
        }
        Some(Some(len))
    }

    /// A compact string; Some(None) for null.
    pub fn compact_nullable_string(&mut self) -> Option<Option<String>> {
        match self.compact_len(1)? {
            None => Some(None),
            Some(len) => Some(Some(String::from_utf8(self.take(len)?.to_vec()).ok()?)),
        }
    }

    /// A compact string that must be there.
    pub fn compact_string(&mut self) -> Option<String> {
        self.compact_nullable_string()?
    }

    /// A uuid.
    pub fn uuid(&mut self) -> Option<Uuid> {
        Some(Uuid::from_bytes(self.take(16)?.try_into().ok()?))
    }

    /// A tagged-field section: its fields' bytes by tag.
    pub fn tagged(&mut self) -> Option<BTreeMap<u32, &'a [u8]>> {
        let count = self.uvarint()?;
        let mut fields = BTreeMap::new();
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            fields.insert(tag, self.take(size)?);
        }
        Some(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_compact_strings_round_trip() {
        let mut out = BytesMut::new();
        for value in [0, 1, 127, 128, 300, u32::MAX] {
            put_uvarint(&mut out, value);
        }
        put_compact_string(&mut out, Some("héllo"));
        put_compact_string(&mut out, None);
        let mut r = RecordReader::new(&out);
        for value in [0, 1, 127, 128, 300, u32::MAX] {
            assert_eq!(r.uvarint(), Some(value));
        }
        assert_eq!(r.compact_nullable_string(), Some(Some("héllo".to_string())));
        assert_eq!(r.compact_nullable_string(), Some(None));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn lengths_beyond_the_bytes_are_refused() {
        assert_eq!(RecordReader::new(&[0x7f, 0xff, 0xff, 0xff]).count(1), None);
        assert_eq!(RecordReader::new(&[0xff, 0xff, 0xff, 0x7f]).compact_len(1), None);
        assert_eq!(RecordReader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).uvarint(), None, "over 32 bits");
        assert_eq!(RecordReader::new(&[0, 5, b'a']).string(), None);
    }
}
