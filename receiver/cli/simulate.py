"""`receiver simulate`: run the simulated Doitong API until SIGTERM or Ctrl-C.

`register(commands)` adds the subcommand to the `receiver` parser. The
simulator itself (`receiver.simulator`) knows nothing of the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from receiver.core import config as core_config
from receiver.core import durations
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.simulator.config import Account, SimulatorConfig

_RATES = (
    ("failure_rate", "--failure-rate", "fraction of jobs that end failed"),
    ("duplicate_rate", "--duplicate-rate", "fraction of webhooks sent twice with the same delivery id"),
    ("reorder_rate", "--reorder-rate", "fraction of jobs whose processing webhook follows the terminal one"),
    ("drop_rate", "--drop-rate", "fraction of jobs whose terminal webhook is never sent"),
    ("bad_signature_rate", "--bad-signature-rate", "fraction of webhooks preceded by a forged copy"),
    ("fail_rate", "--fail-rate", "fraction of API requests answered 500 INTERNAL_ERROR"),
)


DESCRIPTION = """\
A local stand-in for Doitong's API that sends real signed webhooks.

As Doitong documents it:
  POST /graphql      mutation generate(input: GenerateInput!) { id status type provider url
                     metadata creditCost createdAt }, and the JavaScript example's
                     generateAvatar(input: AvatarGenerationInput!) { id status videoUrl }
                     (graphql-core: selections, aliases, variables, fragments, introspection)
  POST /v1/avatar    the REST endpoint (service, text, avatarId, voice, version, webhookUrl)
  keys               Authorization: Bearer KEY or X-API-Key: KEY; 401 otherwise
  pricing            50-100 credits up to 30 s of speech, 200-500 up to 2 min; 402 when short
  rate limits        the plan table (free, starter, pro, enterprise), X-RateLimit-Limit,
                     -Remaining, -Reset and 429
  errors             {"errors":[{"message","extensions":{"code",...}}]}
  webhooks           the documented body, signed X-Doitong-Signature: sha256=<HMAC-SHA256 hex>

The simulator's own conveniences (not in Doitong's documentation):
  query avatar(id: ID!) and GET /v1/avatar/{id}   a job's state, for polling and reconciliation
  X-Doitong-Delivery                               a delivery id, the same on every retry
  a `processing` webhook before the final one, and `failed` jobs (--failure-rate)
  GET /_simulator/stats and GET /healthz; retries (--retry-base, --attempts); the fault knobs below
"""


def register(commands: Any) -> None:
    """Add `simulate` to the `receiver` parser."""
    sim = commands.add_parser(
        "simulate",
        help="a local stand-in for Doitong's API that sends real signed webhooks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8090, help="port to bind (default 8090; 0 picks a free one)")
    sim.add_argument(
        "--api-key",
        action="append",
        metavar="KEY[:PLAN[:CREDITS]]",
        help="an accepted API key (repeatable); plans free, starter, pro (default), enterprise; credits default 10000",
    )
    sim.add_argument("--webhook-secret", help="secret webhooks are signed with (env DOITONG_WEBHOOK_SECRET)")
    sim.add_argument("--latency", default="2", help="seconds from request to completion, or a duration (default 2)")
    for _, flag, text in _RATES:
        sim.add_argument(flag, default="0", metavar="0-1", help=f"{text} (default 0)")
    sim.add_argument("--seed", type=int, help="seed the fault decisions, to replay the same faults")
    sim.add_argument("--retry-base", default="0.5", help="first webhook retry delay, doubling each time (default 0.5)")
    sim.add_argument("--attempts", type=int, default=8, help="tries per webhook before giving up (default 8)")
    sim.set_defaults(handler=cmd_simulate)


def config_from_args(settings: Settings, args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the flags describe; ConfigError naming the flag otherwise."""
    if not args.api_key:
        raise ConfigError("--api-key: give at least one, e.g. --api-key sk_test or --api-key sk_test:free:500")
    secret = args.webhook_secret or (settings.webhook_secrets[0] if settings.webhook_secrets else None)
    if not secret:
        raise ConfigError("--webhook-secret: required (or set DOITONG_WEBHOOK_SECRET)")
    core_config.check_port(args.port, setting="--port")
    return SimulatorConfig(
        accounts=tuple(Account.parse(text) for text in args.api_key),
        webhook_secret=secret,
        latency=_seconds(args.latency, "--latency"),
        seed=args.seed,
        retry_base=_seconds(args.retry_base, "--retry-base"),
        max_attempts=args.attempts,
        failure_rate=_rate(args.failure_rate, "--failure-rate"),
        duplicate_rate=_rate(args.duplicate_rate, "--duplicate-rate"),
        reorder_rate=_rate(args.reorder_rate, "--reorder-rate"),
        drop_rate=_rate(args.drop_rate, "--drop-rate"),
        bad_signature_rate=_rate(args.bad_signature_rate, "--bad-signature-rate"),
        fail_rate=_rate(args.fail_rate, "--fail-rate"),
    )


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the simulator until SIGTERM or SIGINT; exit 0."""
    config = config_from_args(settings, args)
    asyncio.run(_serve(config, args.host, args.port))
    return 0


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Imported here: the simulator builds its GraphQL schema on import, which every other
    # command (`receiver --help` included) would pay for.
    from receiver.simulator import server

    async with server.running(config, host, port) as (simulator, url):
        print(_banner(config, url), flush=True)
        await stop.wait()
        stats = simulator.stats()
    hooks = stats["webhooks"]
    print(
        f"simulator stopped: {stats['jobs']['created']} jobs, {hooks['sent']} webhooks sent "
        f"({hooks['delivered']} delivered, {hooks['retries']} retries, {hooks['duplicates']} duplicates, "
        f"{hooks['reordered']} reordered, {hooks['dropped']} dropped, {hooks['forged']} forged)",
        flush=True,
    )


def _banner(config: SimulatorConfig, url: str) -> str:
    lines = [
        "doitong simulator is running",
        f"  base URL       : {url}",
        f"  GraphQL        : POST {url}/graphql     (Authorization: Bearer KEY)",
        f"  REST           : POST {url}/v1/avatar   (X-API-Key: KEY)",
        f"  stats          : GET  {url}/_simulator/stats",
    ]
    lines += [f"  api key        : {a.key} ({a.plan}, {a.credits} credits)" for a in config.accounts]
    lines.append(f"  webhook secret : {config.webhook_secret}")
    faults = ", ".join(f"{flag[2:]} {getattr(config, name)}" for name, flag, _ in _RATES)
    seed = f"; seed {config.seed}" if config.seed is not None else ""
    lines.append(f"  latency {config.latency}s; {faults}{seed}")
    return "\n".join(lines)


def _rate(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a number; give a fraction between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{flag}: {text} is not a fraction between 0 and 1")
    return value


def _seconds(text: str, flag: str) -> float:
    """A plain number of seconds (`2`, `0.1`) or a duration (`500ms`, `1m`)."""
    try:
        value = float(text)
    except ValueError:
        return durations.parse(text, setting=flag).total_seconds()
    if value < 0:
        raise ConfigError(f"{flag}: {text} is negative")
    return value
