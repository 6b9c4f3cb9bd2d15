"""End to end through the Doitong simulator with every fault knob on.

    .venv/bin/python bench/simulate.py [--jobs 1000] [--parallel 64] [--latency 1s]

It runs `receiver demo`'s pipeline in one process — the receiver with its
publisher, the simulator sending signed webhooks with duplicates (30 %),
reordering (30 %), dropped final webhooks (20 %, found by reconciliation),
forged copies (30 %), failed jobs (10 %) and API errors (10 %), and a
subscriber that verifies every signature and discards repeats by
`webhook-id` — submitting as fast as `--parallel` submissions in flight
allow, and prints:

- jobs/s: jobs submitted, finished and delivered, over the whole run;
- webhooks/s: requests the receiver answered (genuine, duplicate and forged);
- lost events: outbox events the subscriber never processed (must be 0);
- duplicate deliveries: a job's status processed twice under different
  event ids (must be 0; repeats of one event id are discarded first).

The database is a fresh one on DATABASE_URL's server (default the local
PostgreSQL), dropped afterwards; without a server, an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from receiver.cli import demo
from receiver.core import durations
from receiver.core.config import Settings

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=64, help="submissions in flight (default 64)")
    parser.add_argument("--latency", default="1s", help="simulated time from request to completion (default 1s)")
    parser.add_argument("--timeout", default="10m")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    home = Path(tempfile.mkdtemp(prefix="bench-simulate-"))
    name = f"bench_simulate_{os.getpid()}"
    admin_url: str | None = args.database_url
    try:
        with psycopg.connect(args.database_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = psycopg.conninfo.conninfo_to_dict(args.database_url)
        info["dbname"] = name
        host = str(info.get("host") or "127.0.0.1")
        database_url = f"postgresql://{info.get('user') or 'postgres'}@{host}:{info.get('port') or 5432}/{name}"
    except psycopg.OperationalError:
        admin_url, database_url = None, None
        print("no PostgreSQL server answered: using an embedded one", file=sys.stderr)
    settings = Settings(database_url=database_url, home=home, log_level="ERROR")
    try:
        outcome = asyncio.run(
            demo.run(
                settings,
                jobs=args.jobs,
                live=False,
                timeout=durations.parse(args.timeout, setting="--timeout").total_seconds(),
                latency=durations.parse(args.latency, setting="--latency").total_seconds(),
                parallel=args.parallel,
            )
        )
    finally:
        if admin_url is not None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    f = outcome.figures
    seconds = f["seconds"]
    received = f["webhooks_sent"]
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"jobs {int(f['jobs'])} ({args.parallel} submissions in flight, one enterprise key), "
        f"latency {args.latency}, every fault knob on"
    )
    print()
    print(f"{'figure':<34}{'value':>12}")
    print("-" * 46)
    rows = [
        ("jobs/s (submitted to delivered)", f"{f['jobs'] / seconds:,.1f}"),
        ("webhooks/s answered by the receiver", f"{received / seconds:,.1f}"),
        ("seconds", f"{seconds:,.1f}"),
        ("events created", f"{int(f['events']):,}"),
        ("lost events", f"{int(f['lost'])}"),
        ("duplicate deliveries", f"{int(f['duplicates'])}"),
        ("repeats discarded by webhook-id", f"{int(f['redelivered'])}"),
        ("forged webhooks / refused", f"{int(f['forged'])} / {int(f['rejected'])}"),
        ("jobs found by reconciliation", f"{int(f['reconciled'])}"),
    ]
    for label, value in rows:
        print(f"{label:<34}{value:>12}")
    print()
    print("\n".join(outcome.lines[-8:]))  # the self-check
    ok = outcome.ok and f["lost"] == 0 and f["duplicates"] == 0
    print(f"\nlost events == 0 and duplicate deliveries == 0: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
