"""Transactional against plain produce throughput with kafka-python, in one run.
Usage: txn_bench.py HOST:PORT [MESSAGES]
Plain: idempotent, acks=all. Transactional: 100 and 1000 messages per transaction.
1 KiB values, 4 partitions per topic; order plain, txn100, txn1000, plain, txn100, txn1000."""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
payload = b"x" * 1024
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
topics = ["tb-plain", "tb-txn100", "tb-txn1000"]
admin.create_topics([NewTopic(t, 4, 1) for t in topics])


def plain():
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                      linger_ms=5, batch_size=65536)
    t = time.time()
    for _ in range(n):
        p.send("tb-plain", payload)
    p.flush()
    rate = n / (time.time() - t)
    p.close()
    return rate


def txn(per, run):
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tb-{per}-{run}",
                      linger_ms=5, batch_size=65536)
    p.init_transactions()
    t = time.time()
    for _ in range(0, n, per):
        p.begin_transaction()
        for _ in range(per):
            p.send(f"tb-txn{per}", payload)
        p.commit_transaction()
    rate = n / (time.time() - t)
    p.close()
    return rate


results = {"plain": [], "txn100": [], "txn1000": []}
for run in range(2):
    results["plain"].append(plain())
    results["txn100"].append(txn(100, run))
    results["txn1000"].append(txn(1000, run))
for k, v in results.items():
    print(f"{k}: " + ", ".join(f"{r:,.0f} msgs/s" for r in v))
base = sum(results["plain"]) / 2
for k in ("txn100", "txn1000"):
    print(f"{k} / plain: {sum(results[k]) / 2 / base:.2f}")
# Every committed message is readable read_committed: count per topic.
c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
for t in topics:
    parts = [TopicPartition(t, i) for i in range(4)]
    ends = c.end_offsets(parts)
    print(f"{t}: read_committed end offsets sum {sum(ends.values())}")
