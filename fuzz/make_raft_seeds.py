#!/usr/bin/env python3
"""Seeds of the `raft_log` fuzz target: a few raft log frames in the target's input format
(kind byte, u16 LE payload length, payload), with protobuf payloads written by hand
(eraftpb Entry: 1 entry_type, 2 term, 3 index, 4 data; HardState: 1 term, 2 vote,
3 commit). Entry data are the `metadata_record` seeds. Run from the repository root."""
import os
import struct

SEEDS = "fuzz/seeds"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(no, v):
    return varint(no << 3) + varint(v)


def field_bytes(no, b):
    return varint((no << 3) | 2) + varint(len(b)) + b


def frame(kind, payload):
    return bytes([kind]) + struct.pack("<H", len(payload)) + payload


def main():
    out = os.path.join(SEEDS, "raft_log")
    os.makedirs(out, exist_ok=True)
    records = sorted(os.listdir(os.path.join(SEEDS, "metadata_record")))
    data = [open(os.path.join(SEEDS, "metadata_record", r), "rb").read() for r in records]
    entries = b""
    for i, d in enumerate(data, start=1):
        e = field_varint(1, 0) + field_varint(2, 1) + field_varint(3, i) + field_bytes(4, d)
        entries += frame(1, e)
    hard_state = frame(2, field_varint(1, 1) + field_varint(2, 1) + field_varint(3, len(data)))
    with open(os.path.join(out, "entries-and-hard-state"), "wb") as f:
        f.write(hard_state + entries)
    with open(os.path.join(out, "entries-only"), "wb") as f:
        f.write(entries)


if __name__ == "__main__":
    main()
