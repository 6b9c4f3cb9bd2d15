"""A benchmark script's own process: its one error type, its progress lines, and its exit status.

The scripts are run as files (`python bench/ingest.py`), so this module and the other `_*.py`
modules are imported from the scripts' own folder.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

import psycopg


class BenchError(Exception):
    """Something that stops the benchmark; printed as one line."""


def log(message: str) -> None:
    print(f"  .. {message}", flush=True)


def terminate(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so every `finally` cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(
    script: str,
    run: Callable[[argparse.Namespace, contextlib.ExitStack[bool | None]], int],
    args: argparse.Namespace,
    cleanup: Callable[[], None],
) -> int:
    """Run a benchmark to its exit status: 2 when it could not run, 130 when interrupted
    (Ctrl-C or SIGTERM); `cleanup` (kill what it started) runs whatever happened."""
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    with contextlib.ExitStack() as stack:
        try:
            return run(args, stack)
        except (BenchError, psycopg.Error) as exc:
            print(f"bench/{script}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\nbench/{script}: interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            cleanup()
