#!/usr/bin/env python3
"""Test helper for replay: makes an entity outbox (`make DB N`), or compares a replica table with
the state the outbox describes (`check DB REPLICA [CUTOFF]`): every change of the outbox applied
in seq order (c/u upsert, d delete, t empty), those stamped before CUTOFF only (or, for CUTOFF seq:N, those up to seq N). Prints `ok ROWS`
or the first differences, and exits 1 on a difference. `upserts DB FROM` prints how many c/u
changes are stamped at or after FROM; `make-inserts DB N` makes N inserts of distinct entities, where
every change shows in the final state (what an audit trigger on the replica must have seen once
each). `make-typed DB N` and `check-typed DB REPLICA` do the same for a replica with typed
columns (id text key, v integer, name text, at timestamp, flag boolean, tags json): every 97th
document has a `v` that is not an integer, which must be in the dead letters, not in the table
(the row keeps its previous version)."""
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
    for seq, entity, op, doc, at in sqlite3.connect(db).execute("SELECT seq, entity, op, doc, at FROM outbox ORDER BY seq"):
        if cutoff and cutoff.startswith("seq:"):
            if seq > int(cutoff[4:]):
                break
        elif cutoff and at >= cutoff:
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

def make_typed(db, count):
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, op TEXT, doc TEXT, at TEXT)")
    rng = random.Random(7)
    alive = set()
    for n in range(count):
        entity = "e-%03d" % rng.randrange(150)
        at = "2026-11-18T%02d:%02d:%02dZ" % (11 + n // 3600, (n // 60) % 60, n % 60)
        op = "d" if entity in alive and rng.random() < 0.2 else ("u" if entity in alive else "c")
        doc = None
        if op != "d":
            body = {"id": entity, "v": n if n % 97 else "oops", "name": "naïve \"%d\" \u2603 \U0001F600" % n,
                    "at": "2026-11-18T11:00:%02d.%06dZ" % (n % 60, n), "flag": n % 2 == 0,
                    "tags": [{"k": n}, None, "x"]}
            if n % 13 == 0:
                del body["name"]
            doc = json.dumps(body)
        (alive.discard if op == "d" else alive.add)(entity)
        c.execute("INSERT INTO outbox(entity, op, doc, at) VALUES (?,?,?,?)", (entity, op, doc, at))
    c.commit()

def check_typed(db, replica):
    state, rejected = {}, 0
    for entity, op, doc in sqlite3.connect(db).execute("SELECT entity, op, doc FROM outbox ORDER BY seq"):
        if op == "d":
            state.pop(entity, None)
            continue
        body = json.loads(doc)
        if not isinstance(body["v"], int):
            rejected += 1
            continue
        state[entity] = (entity, body["v"], body.get("name"), body["at"], 1 if body["flag"] else 0,
                         json.dumps(body["tags"], separators=(",", ":")))
    r = sqlite3.connect(replica)
    got = {row[0]: (row[0], row[1], row[2], row[3], row[4], json.dumps(json.loads(row[5]), separators=(",", ":")))
           for row in r.execute("SELECT id, v, name, at, flag, tags FROM entities")}
    types = set(r.execute("SELECT DISTINCT typeof(v) || typeof(flag) FROM entities").fetchall())
    dead = r.execute("SELECT count(*) FROM _feedarchive_replay_rejected WHERE reason LIKE 'column v: \"oops\" is not an integer%'").fetchone()[0]
    if got != state or dead != rejected or types != {("integerinteger",)}:
        wrong = [k for k in state if got.get(k) != state[k]][:2]
        print("differs: %s %s; dead letters %d (want %d); types %s" % (
            [state[k] for k in wrong], [got.get(k) for k in wrong], dead, rejected, types))
        sys.exit(1)
    print("ok %d rows, %d dead letters" % (len(state), dead))

if __name__ == "__main__":
    if sys.argv[1] == "upserts":
        print(sqlite3.connect(sys.argv[2]).execute(
            "SELECT count(*) FROM outbox WHERE op IN ('c', 'u') AND at >= ?", (sys.argv[3],)).fetchone()[0])
    elif sys.argv[1] == "make-typed":
        make_typed(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "check-typed":
        check_typed(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "make-inserts":
        c = sqlite3.connect(sys.argv[2])
        c.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, op TEXT, doc TEXT, at TEXT)")
        c.executemany("INSERT INTO outbox(entity, op, doc, at) VALUES (?,?,?,?)", (
            ("i-%06d" % n, "c", json.dumps({"n": n}), "2026-11-18T%02d:%02d:%02dZ" % (11 + n // 3600, (n // 60) % 60, n % 60))
            for n in range(int(sys.argv[3]))))
        c.commit()
    elif sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
