//! Kafka record batch body codecs. Decompression (gzip, snappy raw or
//! xerial framed, lz4 frame, zstd) is bounded: output beyond the caller's
//! limit is an error, so a small batch can never expand into unbounded
//! memory. Used where the broker must look inside a compressed batch
//! (validation, ListOffsets by timestamp). Compression writes what the Java
//! client writes (gzip, xerial-framed snappy, lz4 frames of independent
//! 64 KiB blocks, zstd frames), for a topic whose `compression.type`
//! differs from the producer's codec. Functions callable on any core; each
//! core keeps its own zstd compression context between calls.

use std::io::Read;

/// Why a body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The codec id is not one Kafka defines.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// The compressed bytes are corrupt.
    #[error("corrupt {0} data")]
    Corrupt(&'static str),
    /// The output would exceed the limit.
    #[error("decompressed size exceeds {0} bytes")]
    TooLarge(usize),
    /// The compressor refused the input (never expected for in-memory output).
    #[error("cannot compress with {0}: {1}")]
    Compress(&'static str, String),
}

/// Reads all of `reader` (decompressing `compressed_len` bytes) into a
/// vector, failing past `limit` bytes. Record batches shrink a few times
/// under compression, so the vector starts at four times the input rather
/// than doubling (and copying) its way up from nothing.
fn read_bounded(
    reader: impl Read,
    compressed_len: usize,
    limit: usize,
    codec: &'static str,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|_| DecompressError::Corrupt(codec))?;
    if read > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(out)
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_raw(data, limit);
    }
    // Xerial framing (the Java client): 8-byte magic, 4-byte version,
    // 4-byte compatible version, then (4-byte big-endian length, raw block)*.
    let mut rest = data.get(16..).ok_or(DecompressError::Corrupt("snappy"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let length = rest.get(..4).ok_or(DecompressError::Corrupt("snappy"))?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let block = rest.get(4..4 + length).ok_or(DecompressError::Corrupt("snappy"))?;
        out.extend_from_slice(&snappy_raw(block, limit.saturating_sub(out.len()))?);
        rest = &rest[4 + length..];
    }
    Ok(out)
}

fn snappy_raw(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let length = snap::raw::decompress_len(data).map_err(|_| DecompressError::Corrupt("snappy"))?;
    if length > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    snap::raw::Decoder::new().decompress_vec(data).map_err(|_| DecompressError::Corrupt("snappy"))
}

/// Decompresses a batch body compressed with `codec` (Kafka's ids: 1 gzip,
/// 2 snappy, 3 lz4, 4 zstd; 0 returns the input), producing at most `limit`
/// bytes.
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    match codec {
        0 if data.len() <= limit => Ok(data.to_vec()),
        0 => Err(DecompressError::TooLarge(limit)),
        1 => read_bounded(flate2::read::GzDecoder::new(data), data.len(), limit, "gzip"),
        2 => snappy(data, limit),
        3 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), data.len(), limit, "lz4"),
        4 => {
            let decoder = zstd::stream::read::Decoder::new(data).map_err(|_| DecompressError::Corrupt("zstd"))?;
            read_bounded(decoder, data.len(), limit, "zstd")
        }
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

/// A codec to compress with, as a topic's `compression.type` and its
/// `compression.<codec>.level` (KIP-390) name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Records stored as they are.
    Uncompressed,
    /// gzip at a level 1–9.
    Gzip {
        /// `compression.gzip.level`.
        level: u32,
    },
    /// snappy (no levels).
    Snappy,
    /// lz4 frames. lz4_flex has one level (the fast one): the topic's
    /// `compression.lz4.level` is accepted and checked but changes nothing.
    Lz4,
    /// zstd at a level -131072–22.
    Zstd {
        /// `compression.zstd.level`.
        level: i32,
    },
}

impl Codec {
    /// Kafka's id of the codec (the low 3 bits of a batch's attributes).
    pub fn id(self) -> i16 {
        match self {
            Codec::Uncompressed => 0,
            Codec::Gzip { .. } => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd { .. } => 4,
        }
    }
}

/// Xerial's block size: the Java client frames snappy in 32 KiB blocks.
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses a batch body with `codec`. The output is in memory, so an
/// error is not expected; it is still answered, never a panic.
pub fn compress(codec: Codec, data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    use std::io::Write;
    let failed = |name: &'static str| move |error: std::io::Error| DecompressError::Compress(name, error.to_string());
    match codec {
        Codec::Uncompressed => Ok(data.to_vec()),
        Codec::Gzip { level } => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::new(level.clamp(1, 9)),
            );
            encoder.write_all(data).map_err(failed("gzip"))?;
            encoder.finish().map_err(failed("gzip"))
        }
        Codec::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&1u32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|error| DecompressError::Compress("snappy", error.to_string()))?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2));
            encoder.write_all(data).map_err(failed("lz4"))?;
            encoder.finish().map_err(|error| DecompressError::Compress("lz4", error.to_string()))
        }
        Codec::Zstd { level } => compress_zstd(data, level).map_err(failed("zstd")),
    }
}

thread_local! {
    /// This core's zstd compression context and the level it is set to. A
    /// context holds megabytes of tables: made afresh for every batch, its
    /// allocation and first touch cost more than the compression.
    static ZSTD_COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_zstd(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut cached = cell.borrow_mut();
        match cached.as_mut() {
            Some((set, compressor)) if *set == level => compressor.compress(data),
            Some((set, compressor)) => {
                compressor.set_compression_level(level)?;
                *set = level;
                compressor.compress(data)
            }
            None => {
                let mut compressor = zstd::bulk::Compressor::new(level)?;
                let compressed = compressor.compress(data);
                *cached = Some((level, compressor));
                compressed
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let input: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&input).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&input).expect("snappy");
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&1u32.to_be_bytes());
        xerial.extend_from_slice(&1u32.to_be_bytes());
        for chunk in input.chunks(7_000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).expect("snappy");
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&input).expect("lz4");
        let lz4 = lz4.finish().expect("lz4");
        let zstd = zstd::encode_all(&input[..], 3).expect("zstd");
        for (codec, data) in [(1, &gzip), (2, &raw_snappy), (2, &xerial), (3, &lz4), (4, &zstd)] {
            assert_eq!(decompress(codec, data, 1 << 20).expect("decompress"), input, "codec {codec}");
            assert_eq!(decompress(codec, data, 1000), Err(DecompressError::TooLarge(1000)), "codec {codec} bounded");
        }
        assert!(decompress(1, b"not gzip", 1 << 20).is_err());
        let codecs = [
            Codec::Uncompressed,
            Codec::Gzip { level: 1 },
            Codec::Gzip { level: 9 },
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd { level: 3 },
            Codec::Zstd { level: 19 },
        ];
        let text: Vec<u8> = (0..3_000).flat_map(|i| format!("record value {i} ").into_bytes()).collect();
        for codec in codecs {
            for data in [&input, &text] {
                let compressed = compress(codec, data).expect("compresses");
                assert_eq!(&decompress(codec.id(), &compressed, 1 << 20).expect("round trip"), data, "{codec:?}");
            }
            if codec != Codec::Uncompressed {
                assert!(compress(codec, &text).expect("compresses").len() < text.len() / 2, "{codec:?} compresses");
            }
        }
        assert!(
            compress(Codec::Snappy, &input).expect("compresses").starts_with(XERIAL_MAGIC),
            "snappy framed as the Java client does"
        );
        assert_eq!(decompress(9, b"", 10), Err(DecompressError::UnknownCodec(9)));
    }
}
