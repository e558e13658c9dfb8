#!/usr/bin/env python3
"""Reads a container's change feed with the official azure-cosmos SDK, as an application would:
`query_items_change_feed` from the beginning (or from the SDK's own continuation) until it is
drained. Used to prove the test server faithful and as the benchmark's baseline.

Writes one `id@_lsn` line per change to --out, the SDK's continuation to --continuation-out, and
prints {"changes": N, "seconds": S} on stdout.
"""
import argparse
import json
import sys
import time

from azure.cosmos import CosmosClient


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--db", default="feeddb")
    parser.add_argument("--coll", default="orders")
    parser.add_argument("--continuation-in")
    parser.add_argument("--continuation-out")
    parser.add_argument("--out")
    parser.add_argument("--max-item-count", type=int, default=1000)
    parser.add_argument("--control-at-page", type=int, help="send --control (JSON) to the test server after this page")
    parser.add_argument("--control", help="a test server control command, e.g. a split in the middle of the read")
    args = parser.parse_args()

    started = time.monotonic()
    # A plain-http loopback endpoint works as is: the SDK reads the account (GET /) first and
    # follows the endpoints it lists, which the test server gives as its own address.
    client = CosmosClient(args.endpoint, credential=args.key)
    container = client.get_database_client(args.db).get_container_client(args.coll)
    if args.continuation_in:
        with open(args.continuation_in) as f:
            feed = container.query_items_change_feed(continuation=f.read().strip(), max_item_count=args.max_item_count)
    else:
        feed = container.query_items_change_feed(start_time="Beginning", max_item_count=args.max_item_count)
    pages = feed.by_page()
    count = 0
    out = open(args.out, "w") if args.out else None
    for number, page in enumerate(pages, 1):
        if args.control and number == args.control_at_page:
            import urllib.request
            urllib.request.urlopen(urllib.request.Request(args.endpoint + "_control", data=args.control.encode(), method="POST")).read()
        for item in page:
            count += 1
            if out:
                out.write("%s@%s\n" % (item["id"], item["_lsn"]))
    if out:
        out.close()
    if args.continuation_out:
        token = pages.continuation_token
        if token is None and args.continuation_in:  # nothing new: the old continuation still holds
            with open(args.continuation_in) as f:
                token = f.read().strip()
        with open(args.continuation_out, "w") as f:
            f.write(token or "")
    json.dump({"changes": count, "seconds": time.monotonic() - started}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
