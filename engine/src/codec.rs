//! Decompression of a record batch's records section (gzip, snappy as Kafka frames it,
//! lz4 frames, zstd), used only off the hot path: by compaction, by the keyless-record
//! check of compacted topics, and by the recompression of batches a topic's
//! `compression.type` stores with another codec — the one place records are compressed
//! (as Kafka's clients frame each codec: xerial snappy, lz4 frames of independent 64 KiB
//! blocks). Compaction writes the records it keeps from a compressed batch uncompressed.
//!
//! Invariant: output is bounded by the caller's `max_bytes` (a decompression bomb is an
//! error, never an allocation); corrupt input is an error, never a panic.

use std::io::Read;

/// Largest decompressed records section accepted.
pub(crate) const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// xerial snappy-java framing, which Kafka clients use for snappy.
const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER_BYTES: usize = 16;

/// Why a records section cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("decompresses to more than {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    /// The input ends inside the named part (a snappy header or block, the batch itself).
    #[error("{0}")]
    Truncated(&'static str),
    /// The codec library refused the input (its message).
    #[error("{0}")]
    Codec(String),
}

fn codec_error(e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Codec(e.to_string())
}

/// The records section of a batch compressed with `codec` (1 gzip, 2 snappy, 3 lz4,
/// 4 zstd), at most `max_bytes` long.
pub(crate) fn decompress(
    codec: u8,
    data: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, DecompressError> {
    let out = match codec {
        1 => read_bounded(flate2::read::GzDecoder::new(data), max_bytes),
        2 => snappy(data, max_bytes),
        3 => lz4::Decoder::new(data)
            .map_err(codec_error)
            .and_then(|d| read_bounded(d, max_bytes)),
        4 => zstd::stream::read::Decoder::new(data)
            .map_err(codec_error)
            .and_then(|d| read_bounded(d, max_bytes)),
        other => Err(DecompressError::UnknownCodec(other)),
    }?;
    Ok(out)
}

/// Why records could not be compressed (the codec library's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compressing with codec {codec}: {message}")]
pub struct CompressError {
    pub codec: u8,
    pub message: String,
}

/// Xerial snappy's block size (snappy-java's `SnappyOutputStream` default).
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;

/// `data` compressed with `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd) as Kafka's clients
/// compress a records section; 0 copies it.
pub(crate) fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CompressError> {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| CompressError {
        codec,
        message: e.to_string(),
    };
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).map_err(|e| fail(&e))?;
            w.finish().map_err(|e| fail(&e))
        }
        2 => {
            let mut out = SNAPPY_MAGIC.to_vec();
            out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(SNAPPY_BLOCK_BYTES) {
                let block = encoder.compress_vec(chunk).map_err(|e| fail(&e))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        3 => {
            let mut w = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(|e| fail(&e))?;
            w.write_all(data).map_err(|e| fail(&e))?;
            let (out, r) = w.finish();
            r.map_err(|e| fail(&e))?;
            Ok(out)
        }
        4 => zstd::stream::encode_all(data, 3).map_err(|e| fail(&e)),
        other => Err(CompressError {
            codec: other,
            message: "unknown codec".to_string(),
        }),
    }
}

fn read_bounded(reader: impl Read, max_bytes: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(codec_error)?;
    if out.len() > max_bytes {
        return Err(DecompressError::TooLarge { max_bytes });
    }
    Ok(out)
}

/// Kafka's snappy: xerial framing (magic, version, compatible version, then blocks each
/// prefixed by a big-endian u32 length), or a raw snappy block when the magic is absent.
fn snappy(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, DecompressError> {
    if !data.starts_with(SNAPPY_MAGIC) {
        return snappy_block(data, max_bytes, Vec::new());
    }
    let mut out = Vec::new();
    let mut rest = data
        .get(SNAPPY_HEADER_BYTES..)
        .ok_or(DecompressError::Truncated("truncated snappy header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecompressError::Truncated("truncated snappy block length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or(DecompressError::Truncated("truncated snappy block"))?;
        out = snappy_block(block, max_bytes, out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Appends one raw snappy block's contents to `out`.
fn snappy_block(
    block: &[u8],
    max_bytes: usize,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, DecompressError> {
    let len = snap::raw::decompress_len(block).map_err(codec_error)?;
    if out.len() + len > max_bytes {
        return Err(DecompressError::TooLarge { max_bytes });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(codec_error)?;
    out.truncate(start + n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn what_compress_writes_decompresses_to_the_same_bytes() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        for codec in 0..=4u8 {
            let packed = compress(codec, &data).unwrap();
            if codec == 0 {
                assert_eq!(packed, data);
                continue;
            }
            assert!(packed.len() < data.len(), "codec {codec}");
            assert_eq!(
                decompress(codec, &packed, data.len()).unwrap(),
                data,
                "codec {codec}"
            );
        }
        assert!(compress(5, &data).is_err());
    }

    fn sample() -> Vec<u8> {
        (0..5000u32).flat_map(|i| (i % 251).to_be_bytes()).collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut framed = SNAPPY_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(7000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&data).unwrap();
        let (lz, r) = lz.finish();
        r.unwrap();
        let zs = zstd::stream::encode_all(&data[..], 1).unwrap();
        for (codec, bytes) in [(1, &gz), (2, &raw_snappy), (2, &framed), (3, &lz), (4, &zs)] {
            assert_eq!(
                decompress(codec, bytes, 1 << 20).as_ref(),
                Ok(&data),
                "codec {codec}"
            );
            assert!(
                decompress(codec, bytes, data.len() - 1).is_err(),
                "bounded {codec}"
            );
            // A truncated stream is an error or (lz4 stops quietly at the end of its input)
            // shorter output, which the record walk then refuses.
            let cut = &bytes[..bytes.len() / 2];
            assert_ne!(
                decompress(codec, cut, 1 << 20).as_ref(),
                Ok(&data),
                "truncated {codec}"
            );
        }
        assert!(decompress(5, &gz, 1 << 20).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(codec in 1u8..5, bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decompress(codec, &bytes, 1 << 16);
        }
    }
}
