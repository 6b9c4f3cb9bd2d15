"""`receiver …`: the command line. Settings come from the environment; flags override.

One module per command group, each with a `register(commands)`:
`server` (run, serve, publish, migrate, keygen), `endpoints`, `subscribers`,
`deliveries` (deliveries, replay, prune), `jobs` (submit, reconcile, demo; the demo itself is
`demo.py`), `simulate`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from receiver import __version__
from receiver.cli import deliveries, endpoints, jobs, server, simulate, subscribers
from receiver.core import config, logs, tracing
from receiver.core.config import Settings
from receiver.core.errors import ConfigError, ReceiverError

_VERBOSE_HELP = "log at debug level, the embedded PostgreSQL's own lines included (env RECEIVER_LOG_LEVEL=debug)"
GROUPS = (server, endpoints, subscribers, deliveries, jobs, simulate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        if args.verbose:
            settings = settings.replace(log_level="DEBUG")
        logs.setup(settings)
        tracing.setup(settings)
        result: int = args.handler(settings, args)
        return result
    except ConfigError as exc:
        print(f"receiver: config error: {exc}", file=sys.stderr)
        return 2
    except ReceiverError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver",
        description="Doitong webhook receiver",
        epilog=config.environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"doitong-receiver {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    commands = parser.add_subparsers(metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    # Also after the command (`receiver run --verbose`); SUPPRESS keeps `receiver --verbose run` set.
    for sub in commands.choices.values():
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    return parser
