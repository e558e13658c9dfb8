#!/usr/bin/env python3
"""A straightforward Python replayer of a feedarchive archive into SQLite: the baseline that
`scripts/bench --only replay` measures `feedarchive replay` against.

  replay_baseline.py ARCHIVE TARGET_DB [--table orders] [--replay NAME]

ARCHIVE is an archive job's folder (`<archive.root>/<job>`). The replayer reads the manifest
(`_feedarchive/manifest/*.jsonl`) and takes the blobs of the live lineage as the archive holds
them now, in manifest order (a `compact` line in the place of the first line it replaced,
replaced and pruned lines left out), as `feedarchive replay` does. Each blob is decompressed by
the stock `zstd -dc` (or `lz4 -dc`) through a subprocess, since Python 3.11's standard library
has no zstd; every line is parsed with `json.loads`. Then, in one transaction per blob (`BEGIN
IMMEDIATE` ... `COMMIT`, the default journal and synchronous settings, as feedarchive's
connection has them), into the same layout as `feedarchive replay`:

- `TABLE (key TEXT PRIMARY KEY, doc TEXT)`: `c`, `u`, `r`, `w` upsert (`INSERT ... ON
  CONFLICT(key) DO UPDATE`), `d` deletes by key, `t` deletes every row. `key` is the envelope's
  key and `doc` its `after` document, as JSON text (`json.dumps`, compact, UTF-8 kept);
- `_feedarchive_replay (replay, part, pos)`: the last position applied per partition, written in
  the same transaction. Changes at or before it are skipped, so a second run applies nothing.

Only the standard library (`json`, `sqlite3`, `subprocess`) and the zstd CLI.
"""
import argparse, glob, json, os, sqlite3, subprocess, sys


def manifest_lines(archive):
    lines = []
    for segment in sorted(glob.glob(os.path.join(archive, "_feedarchive", "manifest", "*.jsonl"))):
        with open(segment, "rb") as f:
            for raw in f:
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass  # a torn last line was never committed
    return lines


def current_blob_lines(lines):
    """The live blob and compact lines the archive holds now, in feed order."""
    pruned = {seq for line in lines if line["kind"] == "prune" for seq in line.get("replaces", [])}
    compacts = {line["seq"]: line for line in lines if line["kind"] == "compact"}
    replaced = {seq for line in compacts.values() for seq in line.get("replaces", [])}

    def anchor(seq):
        return anchor(min(compacts[seq]["replaces"])) if seq in compacts and compacts[seq].get("replaces") else seq

    placed = {anchor(min(line["replaces"])): line for line in compacts.values()
              if line["seq"] not in replaced and line["seq"] not in pruned and line.get("replaces")}
    for line in lines:
        if line["seq"] in placed:
            yield placed[line["seq"]]
        elif line["seq"] not in replaced and line["seq"] not in pruned and line["kind"] == "blob":
            yield line


def read_blob(path):
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", "-q", path], check=True, stdout=subprocess.PIPE).stdout
    if path.endswith(".lz4"):
        return subprocess.run(["lz4", "-dc", "-q", path], check=True, stdout=subprocess.PIPE).stdout
    if path.endswith(".jsonl"):
        with open(path, "rb") as f:
            return f.read()
    raise SystemExit(f"replay_baseline: {path}: not a JSON-lines blob")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("archive")
    p.add_argument("target")
    p.add_argument("--table", default="orders")
    p.add_argument("--replay", default="replay")
    a = p.parse_args()
    table = '"%s"' % a.table
    con = sqlite3.connect(a.target, isolation_level=None)
    con.executescript(f"""
        CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, doc TEXT);
        CREATE TABLE IF NOT EXISTS _feedarchive_replay (replay TEXT NOT NULL, part TEXT NOT NULL, pos TEXT NOT NULL, PRIMARY KEY (replay, part));
    """)
    upsert = f"INSERT INTO {table} (key, doc) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET doc = excluded.doc"
    delete = f"DELETE FROM {table} WHERE key = ?"
    truncate = f"DELETE FROM {table}"
    mark = ("INSERT INTO _feedarchive_replay (replay, part, pos) VALUES (?, ?, ?) "
            "ON CONFLICT(replay, part) DO UPDATE SET pos = excluded.pos")
    applied = dict(con.execute("SELECT part, pos FROM _feedarchive_replay WHERE replay = ?", (a.replay,)))
    blobs = changes = 0
    for line in current_blob_lines(manifest_lines(a.archive)):
        if line["lineage"] != "live":
            continue
        part = line["part"]
        if part in applied and line["last_pos"] <= applied[part]:
            continue
        data = read_blob(os.path.join(a.archive, line["path"]))
        con.execute("BEGIN IMMEDIATE")
        reached = None
        for raw in data.splitlines():
            env = json.loads(raw)
            pos = env["pos"]
            if part in applied and pos <= applied[part]:
                continue
            key = json.dumps(env["key"], separators=(",", ":"), ensure_ascii=False)
            op = env["op"]
            if op == "d":
                con.execute(delete, (key,))
            elif op == "t":
                con.execute(truncate)
            else:
                after = env["after"]
                doc = None if after is None else json.dumps(after, separators=(",", ":"), ensure_ascii=False)
                con.execute(upsert, (key, doc))
            reached = pos
            changes += 1
        if reached is not None:
            con.execute(mark, (a.replay, part, reached))
            applied[part] = reached
        con.execute("COMMIT")
        blobs += 1
    con.close()
    print(f"replay_baseline: replayed {changes} changes from {blobs} blobs", file=sys.stderr)


if __name__ == "__main__":
    main()
