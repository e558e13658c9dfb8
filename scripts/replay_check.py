#!/usr/bin/env python3
"""Test helper for replay: makes an entity outbox (`make DB N`), or compares a replica table with
the state the outbox describes (`check DB REPLICA [CUTOFF]`): every change of the outbox applied
in seq order (c/u upsert, d delete, t empty), those stamped before CUTOFF only. Prints `ok ROWS`
or the first differences, and exits 1 on a difference."""
import json, random, sqlite3, sys

def make(db, count):
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, op TEXT, doc TEXT, at TEXT)")
    rng = random.Random(5)
    alive = set()
    for n in range(count):
        entity = "e-%03d" % rng.randrange(200)
        at = "2026-11-18T%02d:%02d:%02dZ" % (11 + n // 3600, (n // 60) % 60, n % 60)
        if n == count // 2:
            c.execute("INSERT INTO outbox(entity, op, doc, at) VALUES (?,?,?,?)", ("*", "t", None, at))
            alive.clear()
            continue
        op = "d" if entity in alive and rng.random() < 0.2 else ("u" if entity in alive else "c")
        doc = None if op == "d" else json.dumps({"id": entity, "v": n, "name": "é\"%d" % n})
        (alive.discard if op == "d" else alive.add)(entity)
        c.execute("INSERT INTO outbox(entity, op, doc, at) VALUES (?,?,?,?)", (entity, op, doc, at))
    c.commit()

def check(db, replica, cutoff=None):
    state = {}
    for entity, op, doc, at in sqlite3.connect(db).execute("SELECT entity, op, doc, at FROM outbox ORDER BY seq"):
        if cutoff and at >= cutoff:
            break
        if op == "t":
            state.clear()
        elif op == "d":
            state.pop(entity, None)
        else:
            state[entity] = json.loads(doc)
    got = {json.loads(k): json.loads(d) for k, d in sqlite3.connect(replica).execute("SELECT key, doc FROM entities")}
    if got != state:
        missing = [k for k in state if k not in got][:3]
        extra = [k for k in got if k not in state][:3]
        wrong = [k for k in state if k in got and got[k] != state[k]][:3]
        print("differs: missing %s extra %s wrong %s (%d vs %d rows)" % (missing, extra, wrong, len(got), len(state)))
        sys.exit(1)
    print("ok %d" % len(state))

if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
