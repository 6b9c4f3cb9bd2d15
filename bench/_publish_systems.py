"""bench/publish.py's run and the two systems it measures: where each measurement's database
and stream come from, and how `receiver publish` and the procrastinate baseline are started and
configured (the settings the report prints).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import _databases
import _nats
import _processes

BASELINE = Path(__file__).resolve().parent / "procrastinate_baseline.py"


@dataclass
class Ctx:
    """What every measurement of one run shares: the options, the clean-up stack, the server,
    the secrets, the job-id nonce, and the NATS connection (None when NATS is left out)."""

    args: argparse.Namespace
    stack: contextlib.ExitStack[bool | None]
    admin_url: str
    tmp: Path
    webhook_secret: str
    subscriber_secret: str
    master_key: str
    nonce: str
    nats: _nats.Nats | None
    streams: int = 0

    def db(self, name: str) -> contextlib.AbstractContextManager[str]:
        return _databases.database(self.admin_url, f"{name}_{os.getpid()}")

    def stream(self) -> tuple[str, str]:
        """A fresh JetStream stream and subject prefix for one measurement."""
        assert self.nats is not None
        self.streams += 1
        name, prefix = f"BENCHPUB_{os.getpid()}_{self.streams}", f"benchpub{os.getpid()}n{self.streams}"
        self.nats.add_stream(name, f"{prefix}.>")
        return name, prefix

    def receiver_env(self, url: str, **extra: str) -> dict[str, str]:
        return _processes.child_env(
            DATABASE_URL=url,
            RECEIVER_MASTER_KEY=self.master_key,
            RECEIVER_HOME=str(self.tmp / "receiver-home"),
            RECEIVER_LOG_LEVEL="warning",
            RECEIVER_DENY_NETWORKS="",
            RECEIVER_SUBSCRIBER_CONCURRENCY=str(self.args.subscriber_concurrency),
            DOITONG_WEBHOOK_SECRET=self.webhook_secret,
            **extra,
        )

    def baseline_env(self, url: str, **extra: str) -> dict[str, str]:
        return _processes.child_env(
            DATABASE_URL=url,
            BENCH_PROCRASTINATE_POOL=str(self.args.baseline_pool),
            DOITONG_WEBHOOK_SECRET=self.webhook_secret,
            BENCH_SUBSCRIBER_SECRET=self.subscriber_secret,
            **extra,
        )

    def publisher_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "receiver",
            "publish",
            "--metrics-port",
            "0",
            "--concurrency",
            str(self.args.concurrency),
        ]

    def workers(self, env: dict[str, str], tag: str) -> _processes.Procs:
        argv = [sys.executable, str(BASELINE), "worker", "--concurrency", str(self.args.concurrency)]
        return _processes.Procs(
            [
                _processes.Proc(f"procrastinate worker ({tag})", argv, env, self.tmp / f"worker-{tag}-{n}.log")
                for n in range(self.args.baseline_workers)
            ]
        )

    @property
    def receiver_settings(self) -> str:
        return (
            f"receiver publish --concurrency {self.args.concurrency}, "
            f"RECEIVER_SUBSCRIBER_CONCURRENCY={self.args.subscriber_concurrency}, other settings default "
            "(RECEIVER_POLL_INTERVAL 1s, pool 4+1 connections + LISTEN)"
        )

    @property
    def baseline_settings(self) -> str:
        return (
            f"{self.args.baseline_workers} procrastinate worker process(es), concurrency={self.args.concurrency}"
            f" each, PsycopgConnector pool "
            f"{self.args.baseline_pool}, listen_notify on, fetch_job_polling_interval 1 s, delete_jobs never, "
            "retry 10 x 5 s"
        )


def migrate(ctx: Ctx, url: str) -> None:
    _processes.run_cli(
        [sys.executable, "-m", "receiver", "migrate"], ctx.receiver_env(url), "receiver migrate", timeout=300
    )
    if ctx.args.receiver_sql is not None:
        _databases.execute_file(url, ctx.args.receiver_sql)


def baseline_schema(env: dict[str, str]) -> None:
    """procrastinate's schema and the baseline's own tables, in the database `env` names."""
    _processes.run_cli([sys.executable, str(BASELINE), "schema"], env, "procrastinate schema")


def add_subscriber(ctx: Ctx, url: str, target: str) -> None:
    _processes.run_cli(
        [sys.executable, "-m", "receiver", "subscribers", "add", target, "--secret", ctx.subscriber_secret],
        ctx.receiver_env(url),
        "receiver subscribers add",
    )
