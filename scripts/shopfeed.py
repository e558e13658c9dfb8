#!/usr/bin/env python3
"""Makes and feeds the outbox table of a made-up shop: the sample feed of the quick start,
the tests and the benchmarks.

  shopfeed.py DB --count N             create DB if needed and append N changes
  shopfeed.py DB --follow --log FILE   keep appending small transactions until killed,
                                       appending each committed seq to FILE
"""
import argparse, json, random, signal, sqlite3, sys, time

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  order_id TEXT NOT NULL,
  event TEXT NOT NULL,
  created_at TEXT NOT NULL,
  payload TEXT NOT NULL
);
"""
EVENTS = ["order_placed", "payment_captured", "order_packed", "order_shipped", "order_delivered", "refund_issued"]
SKUS = ["mug-blue", "mug-red", "tee-s", "tee-m", "tee-l", "poster-a2", "sticker-pack", "tote-bag"]

RATE = 1.0

def change(rng, n, start, doc_bytes):
    order = "ord-%06d" % rng.randrange(1, 200000)
    event = EVENTS[n % len(EVENTS)]
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + int(n / RATE))) + "Z"
    items = [{"sku": rng.choice(SKUS), "qty": rng.randrange(1, 4), "price_cents": rng.randrange(300, 4000)} for _ in range(rng.randrange(1, 3))]
    doc = {"order_id": order, "event": event, "at": ts, "customer": {"id": "cus-%05d" % rng.randrange(1, 50000), "country": rng.choice(["DE", "FR", "NL", "US", "JP"])}, "items": items, "note": ""}
    text = json.dumps(doc, separators=(",", ":"))
    if len(text) < doc_bytes:
        doc["note"] = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=doc_bytes - len(text)))
        text = json.dumps(doc, separators=(",", ":"))
    return (order, event, ts, text)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--follow", action="store_true")
    p.add_argument("--log")
    p.add_argument("--doc-bytes", type=int, default=350)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=int, default=1795000000, help="unix time of the first change")
    p.add_argument("--rate", type=float, default=1.0, help="changes per second of commit time")
    p.add_argument("--wal", action="store_true", help="use WAL journal mode")
    a = p.parse_args()
    global RATE
    RATE = a.rate
    db = sqlite3.connect(a.db, timeout=30, isolation_level=None)
    if a.wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    rng = random.Random(a.seed)
    n0 = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    if a.count:
        db.execute("BEGIN")
        for i in range(a.count):
            db.execute("INSERT INTO outbox(order_id,event,created_at,payload) VALUES (?,?,?,?)", change(rng, n0 + i, a.start, a.doc_bytes))
        db.execute("COMMIT")
    if a.follow:
        # SIGTERM ends the loop between transactions, as a well-behaved application would; a
        # kill in the middle of one would leave a hot journal that only a writer can roll back.
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        log = open(a.log, "a") if a.log else None
        n = n0 + a.count
        while not stopping:
            k = rng.randrange(1, 20)
            db.execute("BEGIN IMMEDIATE")
            seqs = []
            for _ in range(k):
                cur = db.execute("INSERT INTO outbox(order_id,event,created_at,payload) VALUES (?,?,?,?)", change(rng, n, a.start, a.doc_bytes))
                seqs.append(cur.lastrowid)
                n += 1
            db.execute("COMMIT")
            if log:
                log.write("".join("%d\n" % s for s in seqs)); log.flush()
            time.sleep(rng.random() * 0.01)

if __name__ == "__main__":
    main()
