#!/usr/bin/env python3
"""Seeds of the `decompress` fuzz target: the records section of each `record_batch` seed,
compressed with each codec Kafka uses. The first byte picks the codec (its value mod 4:
0 gzip, 1 snappy, 2 lz4, 3 zstd). Standard library only: snappy, lz4 and zstd are written
as literal / uncompressed blocks, which every decoder must accept.
Run from the repository root: python3 fuzz/make_compressed_seeds.py"""
import gzip
import os
import struct

HEADER_BYTES = 61
SEEDS = "fuzz/seeds"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def snappy_raw(data):
    # One literal covering everything (tag: (len-1) << 2 for len <= 60, else 61 + 2 bytes).
    assert 0 < len(data) <= 65536
    if len(data) <= 60:
        lit = bytes([(len(data) - 1) << 2])
    else:
        lit = bytes([61 << 2]) + struct.pack("<H", len(data) - 1)
    return varint(len(data)) + lit + data


def snappy_xerial(data):
    block = snappy_raw(data)
    return b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + struct.pack(">I", len(block)) + block


def xxh32(data, seed=0):
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    m = 0xFFFFFFFF
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & m
    i, n = 0, len(data)
    if n >= 16:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i + 16 <= n:
            for j in range(4):
                lane = struct.unpack_from("<I", data, i + 4 * j)[0]
                v[j] = (rotl((v[j] + lane * p2) & m, 13) * p1) & m
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 4 <= n:
        h = (rotl((h + struct.unpack_from("<I", data, i)[0] * p3) & m, 17) * p4) & m
        i += 4
    while i < n:
        h = (rotl((h + data[i] * p5) & m, 11) * p1) & m
        i += 1
    h ^= h >> 15
    h = (h * p2) & m
    h ^= h >> 13
    h = (h * p3) & m
    h ^= h >> 16
    return h


def lz4_frame(data):
    # FLG: version 01, block independence; BD: 64 KiB max block. One uncompressed block.
    desc = bytes([0x60, 0x40])
    hc = (xxh32(desc) >> 8) & 0xFF
    block = struct.pack("<I", len(data) | 0x80000000) + data
    return b"\x04\x22\x4d\x18" + desc + bytes([hc]) + block + struct.pack("<I", 0)


def zstd_frame(data):
    # Single segment, 1-byte content size (FCS flag 0 with single segment), one raw block.
    assert len(data) < 256
    header = b"\x28\xb5\x2f\xfd" + bytes([0x20, len(data)])
    block_header = (len(data) << 3) | (0 << 1) | 1  # last block, raw
    return header + struct.pack("<I", block_header)[:3] + data


def main():
    out = os.path.join(SEEDS, "decompress")
    os.makedirs(out, exist_ok=True)
    src = os.path.join(SEEDS, "record_batch")
    for name in sorted(os.listdir(src)):
        if not name.startswith("batch-"):
            continue
        section = open(os.path.join(src, name), "rb").read()[HEADER_BYTES:]
        codecs = [
            gzip.compress(section, mtime=0),
            snappy_xerial(section),
            lz4_frame(section),
            zstd_frame(section),
        ]
        for selector, compressed in enumerate(codecs):
            with open(os.path.join(out, f"{name}-codec{selector + 1}"), "wb") as f:
                f.write(bytes([selector]) + compressed)
        with open(os.path.join(out, f"{name}-snappy-raw"), "wb") as f:
            f.write(bytes([1]) + snappy_raw(section))


if __name__ == "__main__":
    main()
