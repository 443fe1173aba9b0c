#!/usr/bin/env python3
"""Records the requests a real client sends: a TCP proxy from LISTEN to TARGET that writes
each client frame (length prefix excluded) to OUT/rdkafka-k<api key>-v<version>-<n>, two
per API and version (forty Produce). Start the broker with `--advertised` set to the proxy's
address so that every connection of the client goes through it.

    python3 proxy.py LISTEN_PORT BROKER_PORT OUT_DIR
"""
import socket, struct, threading, sys, os
LISTEN, TARGET, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.makedirs(OUT, exist_ok=True)
seen = {}
lock = threading.Lock()
def record(frame):
    if len(frame) < 4: return
    key, ver = struct.unpack(">hh", frame[:4])
    with lock:
        n = seen.get((key, ver), 0)
        if n >= (40 if key == 0 else 2): return
        seen[(key, ver)] = n + 1
    open(os.path.join(OUT, f"rdkafka-k{key}-v{ver}-{n}"), "wb").write(frame)
def pump(src, dst, rec):
    buf = b""
    try:
        while True:
            d = src.recv(65536)
            if not d: break
            dst.sendall(d)
            if rec:
                buf += d
                while len(buf) >= 4:
                    n = struct.unpack(">i", buf[:4])[0]
                    if len(buf) < 4 + n: break
                    record(buf[4:4+n]); buf = buf[4+n:]
    except OSError: pass
    for s in (src, dst):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", LISTEN)); srv.listen(64)
while True:
    c, _ = srv.accept()
    b = socket.create_connection(("127.0.0.1", TARGET))
    threading.Thread(target=pump, args=(c, b, True), daemon=True).start()
    threading.Thread(target=pump, args=(b, c, False), daemon=True).start()
