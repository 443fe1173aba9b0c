#!/usr/bin/env python3
"""Takes the record batches out of captured Produce frames (non-flexible versions), one per
compression codec, as seeds of `record_batch` and `decompress`. Run in the capture folder
(frames under ./out) with the seeds folder as argument."""
import os, struct, sys
out_dir = sys.argv[1]
def rd(fmt, b, at):
    return struct.unpack_from(fmt, b, at), at + struct.calcsize(fmt)
batches = {}
for name in sorted(os.listdir("out")):
    if not name.startswith("rdkafka-k0-"): continue
    b = open(os.path.join("out", name), "rb").read()
    (key, ver, corr, cl), at = rd(">hhih", b, 0)
    at += max(cl, 0)
    assert ver < 9, ver  # non-flexible produce only
    (tl,), at = rd(">h", b, at); at += max(tl, 0)
    (acks, timeout, ntopics), at = rd(">hii", b, at)
    for _ in range(ntopics):
        (nl,), at = rd(">h", b, at); at += nl
        (nparts,), at = rd(">i", b, at)
        for _ in range(nparts):
            (idx, rl), at = rd(">ii", b, at)
            recs = b[at:at+rl]; at += rl
            codec = struct.unpack_from(">h", recs, 21)[0] & 7
            if codec not in batches and len(recs) < 8192:
                batches[codec] = recs
for codec, recs in sorted(batches.items()):
    open(os.path.join(out_dir, "record_batch", f"rdkafka-codec{codec}"), "wb").write(recs)
    if codec:
        # decompress target: selector byte (codec - 1) then the records section.
        open(os.path.join(out_dir, "decompress", f"rdkafka-codec{codec}"), "wb").write(bytes([codec - 1]) + recs[61:])
print(sorted((c, len(r)) for c, r in batches.items()))
