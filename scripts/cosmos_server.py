#!/usr/bin/env python3
"""A test server for the Azure Cosmos DB REST API, on loopback, standard library only.

It follows the public protocol that clients of the change feed use, closely enough for the
official `azure-cosmos` Python SDK to read it (tests prove that), and lets tests script what a
real account does to a client: feed range splits and merges (410 with substatus 1002, or 1007
while a split completes), throttling (429 with x-ms-retry-after-ms), 503s, slow ranges, and the
retention window of the all-versions-and-deletes mode (400).

Served (every request but /_control is checked against the master key, HMAC-SHA256):
  GET  /                                     database account (the SDK's first request)
  GET  /dbs/{db}, /dbs/{db}/colls/{coll}     database and container
  POST /dbs/{db}/colls                       create a container (id, partitionKey.paths)
  GET  /dbs/{db}/colls/{coll}/pkranges       partition key ranges, itself an incremental feed
  GET  /dbs/{db}/colls/{coll}/docs           change feed (A-IM: Incremental Feed, or
                                             Full-Fidelity Feed + wire format 2021-09-15)
  POST /dbs/{db}/colls/{coll}/docs           create or upsert (x-ms-documentdb-is-upsert), or a
                                             query (x-ms-documentdb-isquery; only
                                             SELECT * FROM c WHERE c.id = @id)
  GET  /dbs/{db}/colls/{coll}/docs/{id}      point read (x-ms-documentdb-partitionkey)
  PUT/DELETE /dbs/{db}/colls/{coll}/docs/{id} replace, delete
  POST /_control                             test control, JSON: see `control()`

The partition key path is the container's (`/pk` for the one made at start, any one-level or
nested path for a container created with POST .../colls); the value in a written document
must equal the x-ms-documentdb-partitionkey header, as the service checks.
A storm with `"on": "docs"` answers requests on documents (writes, point reads, queries)
rather than change feed reads, and so does `{"action": "slow", "on": "docs", "seconds": S}`.
`{"action": "previous_images", "deletes": false}` makes deletes come without their previous
image in the all-versions feed (the service's default).

Departures from a real account, none visible to a change feed client: LSNs come from one
counter for the whole container (each range's LSNs increase, with gaps), so children of a
split and a merged range inherit their parents' LSNs; effective partition keys are MD5-based,
not MurmurHash3 (clients of the change feed never compute them).

Usage: cosmos_server.py --port-file F [--port 0] [--key K] [--db D] [--coll C] [--ranges 4]
                        [--seed-docs N] [--doc-bytes 300]
"""
import argparse
import base64
import email.utils
import hashlib
import hmac
import json
import random
import sys
import threading
import time
import urllib.parse
from bisect import bisect_right
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
MAX_EPK = "FF"


def epk_of(pk):
    """Effective partition key: 32 hex digits, the first byte below 0x40 * 4 = the whole space."""
    digest = hashlib.md5(json.dumps([pk], separators=(",", ":")).encode()).hexdigest().upper()
    return digest


def midpoint(lo, hi):
    """A hex EPK between lo and hi (exclusive), as a split point."""
    width = 32
    a = int((lo or "0").ljust(width, "0"), 16)
    b = int((hi if hi != MAX_EPK else "F" * width).ljust(width, "0"), 16) + (1 if hi == MAX_EPK else 0)
    return format((a + b) // 2, "X").rjust(width, "0")


def http_date(ts=None):
    return email.utils.formatdate(ts if ts is not None else time.time(), usegmt=True)


def value_at(doc, path):
    """The value at a partition key path (`/a/b`) in a document, or None."""
    value = doc
    for segment in [p for p in path.split("/") if p]:
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def set_at(doc, path, value):
    """Sets the value at a partition key path, making the objects on the way."""
    segments = [p for p in path.split("/") if p]
    for segment in segments[:-1]:
        doc = doc.setdefault(segment, {})
    doc[segments[-1]] = value


class Change:
    """One write: its LSN, the document after it (None for a delete) and before it."""
    __slots__ = ("lsn", "epk", "key", "op", "ts", "doc", "prev", "prev_lsn", "latest_bytes", "full_bytes")

    def __init__(self, lsn, epk, key, op, ts, doc, prev, prev_lsn, pk_path="/pk", previous_on_delete=True):
        self.lsn, self.epk, self.key, self.op, self.ts = lsn, epk, key, op, ts
        self.doc, self.prev, self.prev_lsn = doc, prev, prev_lsn
        self.latest_bytes = json.dumps(doc, separators=(",", ":")).encode() if doc is not None else None
        metadata = {"operationType": op, "lsn": lsn, "crts": ts, "timeToLiveExpired": False}
        if prev_lsn:
            metadata["previousImageLSN"] = prev_lsn
        item = {}
        if op == "delete":
            item["current"] = {}
            metadata["id"] = key[1]
            metadata["partitionKey"] = {[p for p in pk_path.split("/") if p][-1]: key[0]}
        else:
            item["current"] = doc
        item["metadata"] = metadata
        if prev is not None and (op != "delete" or previous_on_delete):
            item["previous"] = prev
        self.full_bytes = json.dumps(item, separators=(",", ":")).encode()


class Container:
    def __init__(self, db, coll, ranges, rid, pk_path="/pk"):
        self.db, self.id, self.rid = db, coll, rid
        self.pk_path = pk_path
        self.previous_on_delete = True
        self.lsn = 0
        self.changes = []          # in LSN order
        self.lsns = []             # the LSN of each change, for bisect
        self.latest = {}           # (pk, id) -> the Change holding the document's current version
        self.next_range_id = 0
        self.pkranges = []         # every range ever made, in creation order (the pkranges feed)
        self.gone = {}             # range id -> substatus for requests to it
        self.completing = {}       # range id -> (requests left answering 1007, action to run after)
        self.retention_lsn = 0     # all-versions mode: changes at or below this are gone
        self.epk_index = {}        # (lo, hi) -> [changes scanned, indexes of the changes in that EPK range]
        bounds = [""] + [format(i * 256 // ranges, "02X") for i in range(1, ranges)] + [MAX_EPK]
        for lo, hi in zip(bounds, bounds[1:]):
            self.new_range(lo, hi, [])

    def new_range(self, lo, hi, parents):
        rid = str(self.next_range_id)
        self.next_range_id += 1
        self.pkranges.append({
            "id": rid, "_rid": self.rid + "AgAAAA" + rid + "==", "minInclusive": lo, "maxExclusive": hi,
            "ridPrefix": int(rid), "_self": "dbs/x/colls/x/pkranges/" + rid, "throughputFraction": 1.0,
            "status": "online", "parents": parents, "_ts": int(time.time()), "_lsn": len(self.pkranges) + 1,
            "_etag": '"%08d"' % (len(self.pkranges) + 1),
        })
        return rid

    def live_ranges(self):
        return [r for r in self.pkranges if r["id"] not in self.gone]

    def range_by_id(self, rid):
        for r in self.pkranges:
            if r["id"] == rid:
                return r
        return None

    def range_of(self, epk):
        for r in self.live_ranges():
            if r["minInclusive"] <= epk and (r["maxExclusive"] == MAX_EPK or epk < r["maxExclusive"]):
                return r
        raise KeyError(epk)

    def split(self, rid):
        r = self.range_by_id(rid)
        if r is None or rid in self.gone:
            raise ValueError("no live range %s" % rid)
        mid = midpoint(r["minInclusive"], r["maxExclusive"])
        parents = r["parents"] + [rid]
        self.gone[rid] = 1002
        return [self.new_range(r["minInclusive"], mid, parents), self.new_range(mid, r["maxExclusive"], parents)]

    def merge(self, ids):
        ranges = sorted((self.range_by_id(i) for i in ids), key=lambda r: r["minInclusive"])
        for a, b in zip(ranges, ranges[1:]):
            if a["maxExclusive"] != b["minInclusive"]:
                raise ValueError("ranges %s are not adjacent" % ids)
        parents = []
        for r in ranges:
            if r["id"] in self.gone:
                raise ValueError("range %s is gone" % r["id"])
            parents += r["parents"] + [r["id"]]
        for r in ranges:
            self.gone[r["id"]] = 1002
        return self.new_range(ranges[0]["minInclusive"], ranges[-1]["maxExclusive"], parents)

    def write(self, items, ts=None):
        """Applies writes as one transaction: they share one LSN. items: (op, pk, id, body)."""
        self.lsn += 1
        lsn = self.lsn
        ts = int(ts if ts is not None else time.time())
        for op, pk, doc_id, body in items:
            key = (pk, doc_id)
            before = self.latest.get(key)
            if op == "delete":
                if before is None:
                    raise ValueError("no document %s" % (key,))
                doc = None
                kind = "delete"
                del self.latest[key]
            else:
                if op == "create" and before is not None:
                    raise ValueError("document %s exists" % (key,))
                if op == "replace" and before is None:
                    raise ValueError("no document %s" % (key,))
                kind = "replace" if before is not None else "create"
                doc = dict(body)
                doc["id"] = doc_id
                if value_at(doc, self.pk_path) is None:
                    set_at(doc, self.pk_path, pk)
                doc["_rid"] = self.rid + base64.b64encode(lsn.to_bytes(6, "big")).decode().replace("/", "-")
                doc["_self"] = "dbs/%s/colls/%s/docs/%s" % (self.db, self.id, doc_id)
                doc["_etag"] = '"%016x"' % (lsn * 7919 % (1 << 64))
                doc["_attachments"] = "attachments/"
                doc["_ts"] = ts
                doc["_lsn"] = lsn
            change = Change(lsn, epk_of(pk), key, kind, ts, doc,
                            before.doc if before else None, before.lsn if before else 0,
                            self.pk_path, self.previous_on_delete)
            self.changes.append(change)
            self.lsns.append(lsn)
            if doc is not None:
                self.latest[key] = change
        return lsn

    def feed(self, lo, hi, after, since, full, limit):
        """Changes with epk in [lo, hi), LSN > after and _ts >= since, never splitting an LSN."""
        out = []
        changes = self.changes
        # An index per EPK range, extended as changes arrive, so a page costs what it returns
        # rather than a scan of every range's changes (the server must not be what a
        # benchmark of its clients measures).
        scanned, positions = self.epk_index.setdefault((lo, hi), [0, []])
        for index in range(scanned, len(changes)):
            c = changes[index]
            if c.epk >= lo and (hi == MAX_EPK or c.epk < hi):
                positions.append(index)
        self.epk_index[(lo, hi)][0] = len(changes)
        start = bisect_right(positions, after, key=lambda i: changes[i].lsn) if after is not None else 0
        last_lsn = None
        for position in range(start, len(positions)):
            c = changes[positions[position]]
            if len(out) >= limit and c.lsn != last_lsn:
                break
            if since is not None and c.ts < since:
                continue
            if not full and (c.doc is None or self.latest.get(c.key) is not c):
                continue  # latest version mode: only the current version of a live document
            out.append(c)
            last_lsn = c.lsn
        return out


class CosmosError(Exception):
    def __init__(self, status, code, message, substatus=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.substatus = status, code, message, substatus
        self.headers = headers or {}


class Server:
    def __init__(self, key, db, coll, ranges):
        self.key = base64.b64decode(key)
        self.lock = threading.Lock()
        self.db = db
        self.ranges = ranges
        self.containers = {(db, coll): Container(db, coll, ranges, "pLJ8AKkkcQA=")}
        self.storms = []       # {"status", "count", "range", "retry_after_ms", "substatus"}
        self.slow = {}         # range id -> seconds added to each change feed read of it
        self.slow_docs = 0     # seconds added to each request on documents ("on": "docs")
        self.doc_requests = {}  # "upsert", "create", "replace", "delete", "read", "query" -> count
        self.requests = 0
        self.feed_requests = []  # (range id, status) of each change feed read, for tests
        self.endpoint = ""

    # -- authorization ------------------------------------------------------------------
    def check_auth(self, verb, path, headers):
        parts = [p for p in path.strip("/").split("/") if p]
        if len(parts) % 2 == 1:
            resource_type, link = parts[-1], "/".join(parts[:-1])
        elif parts:
            resource_type, link = parts[-2], "/".join(parts)
        else:
            resource_type, link = "", ""
        link = urllib.parse.unquote(link)
        date = headers.get("x-ms-date") or ""
        if not date:
            raise CosmosError(401, "Unauthorized", "the x-ms-date header is missing")
        parsed = email.utils.parsedate_to_datetime(date)
        if abs(parsed.timestamp() - time.time()) > 15 * 60:
            raise CosmosError(403, "Forbidden", "the x-ms-date %s is not within 15 minutes of now" % date)
        text = "%s\n%s\n%s\n%s\n%s\n" % (verb.lower(), resource_type.lower(), link, date.lower(),
                                         (headers.get("Date") or "").lower())
        expected = base64.b64encode(hmac.new(self.key, text.encode(), hashlib.sha256).digest()).decode()
        auth = urllib.parse.unquote(headers.get("authorization") or "")
        fields = dict(p.split("=", 1) for p in auth.split("&") if "=" in p)
        if fields.get("type") != "master" or fields.get("ver") != "1.0" or not hmac.compare_digest(
                fields.get("sig", ""), expected):
            raise CosmosError(401, "Unauthorized",
                              "The input authorization token can't serve the request. The wrong key is being used "
                              "or the expected payload is not built as per the protocol. Server used the following "
                              "payload to sign: '%s'" % text.replace("\n", "\\n"))
        if not headers.get("x-ms-version"):
            raise CosmosError(400, "BadRequest", "the x-ms-version header is missing")

    # -- requests -----------------------------------------------------------------------
    def container(self, db, coll):
        c = self.containers.get((db, coll))
        if c is None:
            raise CosmosError(404, "NotFound", "Resource Not Found: dbs/%s/colls/%s" % (db, coll))
        return c

    def handle(self, verb, path, headers, body):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        self.check_auth(verb, path, headers)
        with self.lock:
            self.requests += 1
        if not parts:
            return 200, {}, self.account()
        if parts[0] != "dbs" or len(parts) < 2:
            raise CosmosError(404, "NotFound", "no resource at /%s" % "/".join(parts))
        if len(parts) == 2:
            if parts[1] != self.db:
                raise CosmosError(404, "NotFound", "Resource Not Found: dbs/%s" % parts[1])
            return 200, {}, {"id": self.db, "_rid": "pLJ8AA==", "_self": "dbs/pLJ8AA==/", "_etag": '"0"',
                             "_colls": "colls/", "_users": "users/", "_ts": 1751371200}
        if parts[2] == "colls" and len(parts) == 3 and verb == "POST":
            return self.create_container(parts[1], json.loads(body or b"{}"))
        if parts[2] != "colls" or len(parts) < 4:
            raise CosmosError(404, "NotFound", "no resource at /%s" % "/".join(parts))
        c = self.container(parts[1], parts[3])
        if len(parts) == 4:
            return 200, {}, self.container_resource(c)
        if parts[4] == "pkranges" and len(parts) == 5 and verb == "GET":
            return self.read_pkranges(c, headers)
        if parts[4] == "docs" and len(parts) == 5 and verb == "GET":
            return self.read_feed(c, headers)
        if parts[4] == "docs" and (verb != "GET" or len(parts) == 6):
            self.write_storm()
        if parts[4] == "docs" and len(parts) == 5 and verb == "POST":
            if (headers.get("x-ms-documentdb-isquery") or "").lower() == "true":
                return self.query(c, headers, body)
            return self.write_doc(c, headers, body, None)
        if parts[4] == "docs" and len(parts) == 6 and verb in ("PUT", "DELETE", "GET"):
            return self.write_doc(c, headers, body, parts[5], verb)
        raise CosmosError(404, "NotFound", "no resource at /%s" % "/".join(parts))

    def write_storm(self):
        """A storm with "on": "docs" answers writes, point reads and queries of documents."""
        with self.lock:
            storm = self.storm_for(None, "docs")
            delay = self.slow_docs
        if delay:
            time.sleep(delay)
        if storm:
            if storm["status"] == 429:
                raise CosmosError(429, "TooManyRequests", "Request rate is large.", 3200,
                                  {"x-ms-retry-after-ms": str(storm.get("retry_after_ms") or 20)})
            raise CosmosError(storm["status"], "ServiceUnavailable", "Service is currently unavailable.",
                              storm.get("substatus") or 0)

    def container_resource(self, c):
        return {
                "id": c.id, "_rid": c.rid, "_self": "dbs/pLJ8AA==/colls/%s/" % c.rid, "_etag": '"0"', "_ts": 1751371200,
                "partitionKey": {"paths": [c.pk_path], "kind": "Hash", "version": 2},
                "indexingPolicy": {"indexingMode": "consistent", "automatic": True, "includedPaths": [{"path": "/*"}],
                                   "excludedPaths": [{"path": "/\"_etag\"/?"}]},
                "conflictResolutionPolicy": {"mode": "LastWriterWins", "conflictResolutionPath": "/_ts"},
                "geospatialConfig": {"type": "Geography"}, "_docs": "docs/", "_sprocs": "sprocs/",
                "_triggers": "triggers/", "_udfs": "udfs/", "_conflicts": "conflicts/"}

    def create_container(self, db, spec):
        if db != self.db:
            raise CosmosError(404, "NotFound", "Resource Not Found: dbs/%s" % db)
        coll = spec.get("id")
        paths = (spec.get("partitionKey") or {}).get("paths") or []
        if not coll or len(paths) != 1 or not paths[0].startswith("/") or len(paths[0]) < 2:
            raise CosmosError(400, "BadRequest", "a container needs an id and one partition key path")
        with self.lock:
            if (db, coll) in self.containers:
                raise CosmosError(409, "Conflict", "Resource with specified id, name, or unique index already exists.")
            rid = base64.b64encode(hashlib.md5(coll.encode()).digest()[:8]).decode()
            c = Container(db, coll, self.ranges, rid, paths[0])
            self.containers[(db, coll)] = c
            return 201, {}, self.container_resource(c)

    def count(self, what):
        with self.lock:
            self.doc_requests[what] = self.doc_requests.get(what, 0) + 1

    def query(self, c, headers, body):
        """Only `SELECT * FROM c WHERE c.id = @id` (any alias), across partitions or in one."""
        self.count("query")
        if (headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/query+json":
            raise CosmosError(400, "BadRequest", "a query is sent as Content-Type: application/query+json")
        spec = json.loads(body or b"{}")
        text = " ".join((spec.get("query") or "").split())
        params = {p.get("name"): p.get("value") for p in spec.get("parameters") or []}
        words = text.split(" ")
        if (len(words) != 8 or [w.upper() for w in words[:3]] != ["SELECT", "*", "FROM"]
                or words[4].upper() != "WHERE" or words[5] != words[3] + ".id" or words[6] != "="
                or words[7] not in params):
            raise CosmosError(400, "BadRequest", "this test server answers only SELECT * FROM c WHERE c.id = @id")
        doc_id = params[words[7]]
        pk_header = headers.get("x-ms-documentdb-partitionkey")
        cross = (headers.get("x-ms-documentdb-query-enablecrosspartition") or "").lower() == "true"
        if pk_header is None and not cross and len(c.live_ranges()) > 1:
            raise CosmosError(400, "BadRequest", "Cross partition query is required but disabled. Please set "
                              "x-ms-documentdb-query-enablecrosspartition to true, specify x-ms-documentdb-partitionkey, "
                              "or revise your query to avoid this exception.")
        with self.lock:
            found = [ch.doc for key, ch in sorted(c.latest.items(), key=lambda kv: kv[1].lsn)
                     if key[1] == doc_id and (pk_header is None or key[0] == json.loads(pk_header)[0])]
        return 200, {"x-ms-item-count": str(len(found))}, {"_rid": c.rid, "Documents": found, "_count": len(found)}

    def account(self):
        location = [{"name": "Local Test", "databaseAccountEndpoint": self.endpoint}]
        return {
            "_self": "", "id": "feedarchive-test", "_rid": "feedarchive-test.documents.azure.com",
            "media": "//media/", "addresses": "//addresses/", "_dbs": "//dbs/",
            "writableLocations": location, "readableLocations": location,
            "enableMultipleWriteLocations": False, "continuousBackupEnabled": True,
            "userReplicationPolicy": {"asyncReplication": False, "minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
            "systemReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
            "queryEngineConfiguration": json.dumps({"maxSqlQueryInputLength": 262144, "maxJoinsPerSqlQuery": 5,
                                                    "maxLogicalAndPerSqlQuery": 500, "maxLogicalOrPerSqlQuery": 500,
                                                    "maxUdfRefPerSqlQuery": 10, "maxInExpressionItemsCount": 16000,
                                                    "queryMaxInMemorySortDocumentCount": 500,
                                                    "maxQueryRequestTimeoutFraction": 0.9, "sqlAllowNonFiniteNumbers": False,
                                                    "sqlAllowAggregateFunctions": True, "sqlAllowSubQuery": True,
                                                    "sqlAllowScalarSubQuery": True, "allowNewKeywords": True,
                                                    "sqlAllowLike": True, "sqlAllowGroupByClause": True,
                                                    "maxSpatialQueryCells": 12, "spatialMaxGeometryPointCount": 256,
                                                    "sqlDisableOptimizationFlags": 0, "sqlAllowTop": True,
                                                    "enableSpatialIndexing": True}),
        }

    def read_pkranges(self, c, headers):
        with self.lock:
            inm = headers.get("If-None-Match")
            if inm:
                after = int(inm.strip('"'))
                ranges = [r for r in c.pkranges if r["_lsn"] > after]
            else:
                ranges = c.live_ranges()
            etag = '"%08d"' % len(c.pkranges)
            if inm and not ranges:
                return 304, {"etag": etag}, None
            return 200, {"etag": etag, "x-ms-item-count": str(len(ranges))}, {
                "_rid": c.rid, "PartitionKeyRanges": ranges, "_count": len(ranges)}

    def storm_for(self, rid, on="feed"):
        for storm in self.storms:
            if storm["count"] > 0 and (storm.get("on") or "feed") == on and storm.get("range") in (None, rid):
                storm["count"] -= 1
                return storm
        return None

    def read_feed(self, c, headers):
        aim = headers.get("A-IM")
        if aim not in ("Incremental Feed", "Full-Fidelity Feed"):
            raise CosmosError(400, "BadRequest", "this test server serves only the change feed on docs (A-IM missing)")
        full = aim == "Full-Fidelity Feed"
        if full and headers.get("x-ms-cosmos-changefeed-wire-format-version") != "2021-09-15":
            raise CosmosError(400, "BadRequest", "Full-Fidelity Feed needs x-ms-cosmos-changefeed-wire-format-version: 2021-09-15")
        rid = headers.get("x-ms-documentdb-partitionkeyrangeid")
        if rid is None:
            raise CosmosError(400, "BadRequest", "x-ms-documentdb-partitionkeyrangeid is required for the change feed")
        delay = 0
        with self.lock:
            rid = rid.split(",")[-1]
            storm = self.storm_for(rid)
            delay = self.slow.get(rid, 0)
        if delay:
            time.sleep(delay)
        with self.lock:
            if storm:
                self.feed_requests.append((rid, storm["status"]))
                extra = {}
                if storm["status"] == 429:
                    extra["x-ms-retry-after-ms"] = str(storm.get("retry_after_ms", 20))
                    raise CosmosError(429, "TooManyRequests", "Request rate is large.", 3200, extra)
                raise CosmosError(storm["status"], "ServiceUnavailable", "Service is currently unavailable.",
                                  storm.get("substatus", 0), extra)
            if rid in c.completing:
                left, _ = c.completing[rid]
                if left > 0:
                    c.completing[rid] = (left - 1, None)
                    self.feed_requests.append((rid, 410))
                    raise CosmosError(410, "Gone", "The split of partition key range %s is completing" % rid, 1007)
                del c.completing[rid]
                c.split(rid)
            if rid in c.gone:
                self.feed_requests.append((rid, 410))
                raise CosmosError(410, "Gone", "The requested partition key range is gone: %s" % rid, c.gone[rid])
            r = c.range_by_id(rid)
            if r is None:
                raise CosmosError(404, "NotFound", "no partition key range %s" % rid)
            lo, hi = r["minInclusive"], r["maxExclusive"]
            if headers.get("x-ms-read-key-type") == "EffectivePartitionKeyRange":
                start, end = headers.get("x-ms-start-epk"), headers.get("x-ms-end-epk")
                if start is None or end is None:
                    raise CosmosError(400, "BadRequest", "x-ms-start-epk and x-ms-end-epk are required")
                if start < lo or (hi != MAX_EPK and (end == MAX_EPK or end > hi)):
                    raise CosmosError(410, "Gone", "EPK range [%s, %s) is not inside range %s" % (start, end, rid), 1002)
                lo, hi = start, end
            limit = int(headers.get("x-ms-max-item-count") or 100)
            if limit <= 0:
                limit = 100
            inm = headers.get("If-None-Match")
            since = None
            if headers.get("If-Modified-Since"):
                since = email.utils.parsedate_to_datetime(headers["If-Modified-Since"]).timestamp()
            if inm == "*":
                self.feed_requests.append((rid, 304))
                return 304, self.feed_headers(c, rid, c.lsn, 0), None
            after = int(inm.strip('"')) if inm else None
            if full:
                if after is None and since is None:
                    raise CosmosError(400, "BadRequest", "ChangeFeed in AllVersionsAndDeletes mode can start from now or from "
                                      "a continuation only: starting from the beginning is not supported")
                if after is not None and after < c.retention_lsn:
                    raise CosmosError(400, "BadRequest", "The continuation (LSN %d) is outside the retention window of the "
                                      "AllVersionsAndDeletes change feed (changes up to LSN %d are no longer held)"
                                      % (after, c.retention_lsn))
            items = c.feed(lo, hi, after, since, full, limit)
            if not items:
                self.feed_requests.append((rid, 304))
                return 304, self.feed_headers(c, rid, after if after is not None else c.lsn, 0), None
            body = b"".join([b'{"_rid":"', c.rid.encode(), b'","Documents":[',
                             b",".join(i.full_bytes if full else i.latest_bytes for i in items),
                             b'],"_count":', str(len(items)).encode(), b"}"])
            self.feed_requests.append((rid, 200))
            return 200, self.feed_headers(c, rid, items[-1].lsn, len(items)), body

    def feed_headers(self, c, rid, lsn, count):
        return {"etag": '"%d"' % lsn, "x-ms-item-count": str(count), "lsn": str(lsn),
                "x-ms-session-token": "%s:-1#%d" % (rid, lsn), "x-ms-global-Committed-lsn": str(c.lsn)}

    def write_doc(self, c, headers, body, doc_id, verb="POST"):
        pk_header = headers.get("x-ms-documentdb-partitionkey")
        if pk_header is None:
            raise CosmosError(400, "BadRequest", "x-ms-documentdb-partitionkey is required")
        pk = json.loads(pk_header)[0]
        doc = json.loads(body) if body else {}
        if verb == "POST":
            self.count("upsert" if headers.get("x-ms-documentdb-is-upsert", "").lower() == "true" else "create")
        else:
            self.count({"GET": "read", "PUT": "replace", "DELETE": "delete"}[verb])
        if verb == "POST" and not isinstance(doc.get("id"), str):
            raise CosmosError(400, "BadRequest", "The input content is invalid because the required properties - 'id; ' - are missing")
        with self.lock:
            if verb == "GET":
                current = c.latest.get((pk, doc_id))
                if current is None:
                    raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.")
                return 200, {"etag": current.doc["_etag"]}, current.doc
            if verb == "DELETE":
                try:
                    c.write([("delete", pk, doc_id, None)])
                except ValueError as e:
                    raise CosmosError(404, "NotFound", str(e))
                return 204, {}, None
            if verb == "PUT":
                op = "replace"
            else:
                doc_id = doc.get("id")
                op = "upsert" if headers.get("x-ms-documentdb-is-upsert", "").lower() == "true" else "create"
            if verb != "DELETE" and value_at(doc, c.pk_path) not in (None, pk):
                raise CosmosError(400, "BadRequest", "PartitionKey extracted from document doesn't match the one in the header")
            existed = (pk, doc_id) in c.latest
            try:
                c.write([(op, pk, doc_id, {k: v for k, v in doc.items() if not k.startswith("_")})])
            except ValueError as e:
                raise CosmosError(409 if op == "create" else 404, "Conflict", str(e))
            written = c.latest[(pk, doc_id)].doc
            return 200 if existed else 201, {"etag": written["_etag"]}, written

    # -- test control -------------------------------------------------------------------
    def control(self, command):
        """insert/generate documents, split, merge, storm, slow, retention, history, stats."""
        action = command.get("action")
        c = self.container(command.get("db", self.db), command.get("coll", next(iter(self.containers))[1]))
        with self.lock:
            if action == "write":
                # {"items": [[op, pk, id, body], ...], "transaction": bool, "ts": optional}
                items = command["items"]
                if command.get("transaction"):
                    return {"lsns": [c.write([tuple(i) for i in items], command.get("ts"))]}
                return {"lsns": [c.write([tuple(i)], command.get("ts")) for i in items]}
            if action == "generate":
                return self.generate(c, command)
            if action == "split":
                if command.get("completing"):
                    c.completing[command["range"]] = (int(command["completing"]), None)
                    return {"completing": command["range"]}
                return {"children": c.split(command["range"])}
            if action == "merge":
                return {"merged": c.merge(command["ranges"])}
            if action == "storm":
                self.storms.append({k: command.get(k) for k in ("status", "count", "range", "retry_after_ms", "substatus",
                                                                 "on")})
                return {"ok": True}
            if action == "calm":
                self.storms = []
                self.slow = {}
                self.slow_docs = 0
                return {"ok": True}
            if action == "slow":
                if command.get("on") == "docs":
                    self.slow_docs = float(command["seconds"])
                    return {"ok": True}
                self.slow[command["range"]] = float(command["seconds"])
                return {"ok": True}
            if action == "retention":
                c.retention_lsn = int(command["lsn"])
                return {"ok": True}
            if action == "previous_images":
                c.previous_on_delete = bool(command.get("deletes", True))
                return {"ok": True}
            if action == "ranges":
                return {"live": c.live_ranges(), "all": c.pkranges}
            if action == "history":
                return {"lsn": c.lsn, "changes": [
                    {"lsn": x.lsn, "op": x.op, "pk": x.key[0], "id": x.key[1], "ts": x.ts, "epk": x.epk,
                     "doc": x.doc} for x in c.changes]}
            if action == "documents":
                return {"documents": [x.doc for x in c.latest.values()]}
            if action == "stats":
                return {"requests": self.requests, "feed_requests": self.feed_requests, "lsn": c.lsn,
                        "doc_requests": self.doc_requests}
        raise CosmosError(400, "BadRequest", "unknown control action %r" % action)

    def generate(self, c, command):
        """count changes: creates, then updates/deletes of earlier documents, in transactions of
        `transaction` items (same partition key); optionally only into range `range`."""
        rng = random.Random(command.get("seed", 1))
        count = int(command["count"])
        tx = int(command.get("transaction", 1))
        updates = float(command.get("updates", 0))
        deletes = float(command.get("deletes", 0))
        size = int(command.get("doc_bytes", 200))
        only = command.get("range")
        target = c.range_by_id(only) if only is not None else None
        written = 0
        base = len(c.changes)
        keys = list(c.latest.keys())
        filler = "x" * max(0, size - 150)
        while written < count:
            n = min(tx, count - written)
            roll = rng.random()
            if keys and roll < deletes:
                key = keys.pop(rng.randrange(len(keys)))
                if key not in c.latest:
                    continue
                c.write([("delete", key[0], key[1], None)], command.get("ts"))
                written += 1
                continue
            if keys and roll < deletes + updates:
                key = keys[rng.randrange(len(keys))]
                if key not in c.latest:
                    continue
                body = {"n": base + written, "v": rng.randrange(1 << 30), "note": filler}
                c.write([("upsert", key[0], key[1], body)], command.get("ts"))
                written += 1
                continue
            while True:
                pk = "p%d" % rng.randrange(1 << 40)
                if target is None or (target["minInclusive"] <= epk_of(pk) and
                                      (target["maxExclusive"] == MAX_EPK or epk_of(pk) < target["maxExclusive"])):
                    break
            items = []
            for i in range(n):
                doc_id = "d%d" % (base + written + i)
                items.append(("create", pk, doc_id, {"n": base + written + i, "v": rng.randrange(1 << 30),
                                                       "title": "doc \u00e9 %d" % (base + written + i), "note": filler}))
                keys.append((pk, doc_id))
            c.write(items, command.get("ts"))
            written += n
        return {"lsn": c.lsn, "changes": len(c.changes)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cosmos-test-server"
    # Headers and body are two writes: with Nagle's algorithm the body's last segment could
    # wait for the client's delayed ACK (40 ms stalls on loopback, for every client alike).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def send(self, status, headers, body):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":")).encode()
        body = body or b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-ms-activity-id", "00000000-0000-0000-0000-%012d" % self.server.app.requests)
        self.send_header("x-ms-request-charge", "1")
        self.send_header("x-ms-serviceversion", "version=2.14.0.0")
        self.send_header("x-ms-gatewayversion", "version=2.14.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def dispatch(self, verb):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        app = self.server.app
        try:
            if path.rstrip("/") == "/_control":
                self.send(200, {}, app.control(json.loads(body or b"{}")))
                return
            status, headers, payload = app.handle(verb, path, self.headers, body)
            self.send(status, headers, payload)
        except CosmosError as e:
            headers = dict(e.headers)
            if e.substatus is not None:
                headers["x-ms-substatus"] = str(e.substatus)
            self.send(e.status, headers, {"code": e.code, "message": e.message})
        except (ValueError, KeyError) as e:
            self.send(400, {}, {"code": "BadRequest", "message": "%s: %s" % (type(e).__name__, e)})

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="written with the port once the server listens")
    parser.add_argument("--key", default=DEFAULT_KEY)
    parser.add_argument("--db", default="feeddb")
    parser.add_argument("--coll", default="orders")
    parser.add_argument("--ranges", type=int, default=4)
    parser.add_argument("--seed-docs", type=int, default=0)
    parser.add_argument("--doc-bytes", type=int, default=300)
    args = parser.parse_args()
    app = Server(args.key, args.db, args.coll, args.ranges)
    if args.seed_docs:
        app.control({"action": "generate", "count": args.seed_docs, "doc_bytes": args.doc_bytes, "seed": 7})
    server = HTTPServer(("127.0.0.1", args.port), Handler)
    server.app = app
    port = server.server_address[1]
    app.endpoint = "http://127.0.0.1:%d/" % port
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    print("cosmos test server on %s" % app.endpoint, file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
