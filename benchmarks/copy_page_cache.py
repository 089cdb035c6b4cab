"""What SQLite's page cache adds to ``stat copy``'s peak memory: the copy of an existing database with
``bulk.SQLITE_CACHE_KIB`` set to the given size, in this process.

    python benchmarks/copy_page_cache.py --from /tmp/lemur-scale/db/ab.nn.db --to /tmp/copy-8m.db --kib 8192

``benchmarks/lemur_scale.py`` makes the source database; run it with the default cache (65536) too.
"""
from __future__ import annotations

import argparse
import resource
import time

from ab.nn.stat import bulk, versions
from ab.nn.stat.copy import copy_database


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", required=True, help="a SQLite file")
    p.add_argument("--to", dest="target", required=True, help="a new SQLite file")
    p.add_argument("--kib", type=int, default=bulk.SQLITE_CACHE_KIB, help="page cache per connection, KiB")
    args = p.parse_args()
    bulk.SQLITE_CACHE_KIB = args.kib
    target = f"sqlite:///{args.target}"
    versions.upgrade(target)
    start, cpu = time.perf_counter(), time.process_time()
    copy_database(f"sqlite:///{args.source}", target)
    print(f"copy with a {args.kib:,} KiB page cache: {time.perf_counter() - start:.0f} s "
          f"({time.process_time() - cpu:.0f} s CPU), peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
