#!/usr/bin/env python3
"""Writes and reads documents with the official azure-cosmos SDK, as an application would, for
the replay tests:

  create-container --coll C --partition-key /tenantId   a container with that key path
  workload --seed N --count M [--tenants T]              creates, replaces, upserts and deletes in
                                                         --coll (partition key /pk), of its own
                                                         documents and of those already there;
                                                         documents carry
                                                         tenantId (a few do not) and some replaces
                                                         move a document to another tenant
  dump --out F                                           every document of --coll: read with the
                                                         change feed from the beginning (latest
                                                         version), each one then read again by
                                                         id and partition key (the value at the
                                                         container's key path); one JSON array
"""
import argparse
import json
import random
import sys

from azure.cosmos import CosmosClient, PartitionKey, exceptions


def container_client(args):
    client = CosmosClient(args.endpoint, credential=args.key)
    return client.get_database_client(args.db), client.get_database_client(args.db).get_container_client(args.coll)


def value_at(doc, path):
    for segment in [p for p in path.split("/") if p]:
        if not isinstance(doc, dict) or segment not in doc:
            return None
        doc = doc[segment]
    return doc


def create_container(args):
    database, _ = container_client(args)
    database.create_container(id=args.coll, partition_key=PartitionKey(path=args.partition_key))


def workload(args):
    _, container = container_client(args)
    rng = random.Random(args.seed)
    live = {}  # id -> document: those already there (the change feed's latest versions), then ours
    for item in container.query_items_change_feed(start_time="Beginning", max_item_count=500):
        live[item["id"]] = {k: v for k, v in item.items() if not k.startswith("_")}
    made = 0
    for _ in range(args.count):
        roll = rng.random()
        if live and roll < 0.15:
            doc_id = rng.choice(sorted(live))
            doc = live.pop(doc_id)
            container.delete_item(doc_id, partition_key=doc["pk"])
        elif live and roll < 0.55:
            doc_id = rng.choice(sorted(live))
            doc = dict(live[doc_id])
            if "tenantId" not in doc:
                continue  # documents without a tenant stay as they were made
            doc["v"] = rng.randrange(1 << 30)
            doc["note"] = "updated \u00e9 %d" % rng.randrange(1000)
            if rng.random() < 0.2:
                doc["tenantId"] = "t%d" % rng.randrange(args.tenants)  # moves to another partition
            if rng.random() < 0.5:
                written = container.replace_item(doc_id, doc)
            else:
                written = container.upsert_item(doc)
            live[doc_id] = {k: v for k, v in written.items() if not k.startswith("_")}
        else:
            made += 1
            doc_id = "s%d-%d" % (args.seed, made)
            doc = {"id": doc_id, "pk": "p%d" % rng.randrange(40), "v": rng.randrange(1 << 30),
                   "nested": {"a": [1, 2.5, None, True], "s": "x\"y\\z"}}
            if rng.random() < 0.95:
                doc["tenantId"] = "t%d" % rng.randrange(args.tenants)
            if doc_id in live:
                doc["pk"] = live[doc_id]["pk"]  # the same document, not another one with its id
            written = container.upsert_item(doc) if args.upsert_creates else container.create_item(doc)
            live[doc_id] = {k: v for k, v in written.items() if not k.startswith("_")}
    json.dump({"live": len(live)}, sys.stdout)
    print()


def dump(args):
    database, container = container_client(args)
    path = container.read()["partitionKey"]["paths"][0]
    docs = []
    for page in container.query_items_change_feed(start_time="Beginning", max_item_count=100).by_page():
        for item in page:
            again = container.read_item(item["id"], partition_key=value_at(item, path))
            if again != item:
                raise SystemExit("document %s read by id differs from its change feed version" % item["id"])
            docs.append(item)
    with open(args.out, "w") as f:
        json.dump(docs, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["create-container", "workload", "dump"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--db", default="feeddb")
    parser.add_argument("--coll", default="orders")
    parser.add_argument("--partition-key", default="/tenantId")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--tenants", type=int, default=7)
    parser.add_argument("--upsert-creates", action="store_true",
                        help="make documents with upsert_item (the ids of an earlier --seed come back)")
    parser.add_argument("--out")
    args = parser.parse_args()
    try:
        {"create-container": create_container, "workload": workload, "dump": dump}[args.command](args)
    except exceptions.CosmosHttpResponseError as e:
        raise SystemExit("%s: HTTP %s: %s" % (args.command, e.status_code, e.message))


if __name__ == "__main__":
    main()
