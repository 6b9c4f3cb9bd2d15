"""The simulator's rules without HTTP: pricing, accounts, flags, rate windows, plan limits."""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path
from typing import Any

import pytest

from receiver.cli import simulate as cli
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.simulator import Account, SimulatorConfig, pricing, webhooks
from receiver.simulator.errors import ApiError
from receiver.simulator.faults import Dice
from receiver.simulator.inputs import GenerateInput
from receiver.simulator.ratelimit import RateLimiter
from receiver.simulator.state import State


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("length", "credits"),
    [(1, 50), (31, 53), (225, 75), (450, 100), (451, 200), (600, 233), (1125, 350), (1800, 500), (5000, 500)],
)
def test_cost_scales_with_length_within_the_documented_bands(length: int, credits: int) -> None:
    assert pricing.cost("x" * length) == credits


def test_duration_is_fifteen_characters_a_second() -> None:
    assert pricing.duration("x" * 450) == 30.0
    assert not pricing.is_long("x" * 450)
    assert pricing.is_long("x" * 451)


def test_api_keys_take_an_optional_plan_and_credits() -> None:
    assert Account.parse("k") == Account("k", "pro", 10_000)
    assert Account.parse("k:free") == Account("k", "free", 10_000)
    assert Account.parse("k:Starter:25") == Account("k", "starter", 25)
    assert Account.parse("k::7") == Account("k", "pro", 7)
    for bad in ("k:gold", "k:pro:lots", "k:pro:-1", ":pro", "a:b:c:d"):
        with pytest.raises(ConfigError, match="--api-key"):
            Account.parse(bad)


@pytest.mark.parametrize(
    "field", ["failure_rate", "duplicate_rate", "reorder_rate", "drop_rate", "bad_signature_rate", "fail_rate"]
)
def test_rates_outside_0_to_1_name_their_flag(field: str) -> None:
    flag = "--" + field.replace("_", "-")
    changes: dict[str, Any] = {field: 1.01}
    with pytest.raises(ConfigError, match=flag):
        SimulatorConfig(accounts=(Account("k"),), webhook_secret="s", **changes)


def test_a_config_needs_keys_once_each_and_a_secret() -> None:
    with pytest.raises(ConfigError, match="--api-key"):
        SimulatorConfig(accounts=(), webhook_secret="s")
    with pytest.raises(ConfigError, match="--api-key"):
        SimulatorConfig(accounts=(Account("k"), Account("k", "free")), webhook_secret="s")
    with pytest.raises(ConfigError, match="--webhook-secret"):
        SimulatorConfig(accounts=(Account("k"),), webhook_secret="")


def _args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["simulate", *flags])


def test_flags_become_a_config_and_the_secret_may_come_from_the_environment() -> None:
    settings = Settings(webhook_secrets=("from-env",))
    config = cli.config_from_args(
        settings, _args("--api-key", "a:free:5", "--api-key", "b", "--latency", "500ms", "--drop-rate", "0.25")
    )
    assert config.accounts == (Account("a", "free", 5), Account("b"))
    assert (config.webhook_secret, config.latency, config.drop_rate) == ("from-env", 0.5, 0.25)
    assert cli.config_from_args(settings, _args("--api-key", "a", "--latency", "3")).latency == 3.0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--webhook-secret", "s"), "--api-key"),
        (("--api-key", "k"), "--webhook-secret"),
        (("--api-key", "k", "--webhook-secret", "s", "--fail-rate", "-0.1"), "--fail-rate"),
        (("--api-key", "k", "--webhook-secret", "s", "--reorder-rate", "often"), "--reorder-rate"),
        (("--api-key", "k", "--webhook-secret", "s", "--latency", "-1"), "--latency"),
        (("--api-key", "k", "--webhook-secret", "s", "--port", "70000"), "--port"),
        (("--api-key", "k", "--webhook-secret", "s", "--attempts", "0"), "--attempts"),
    ],
)
def test_bad_flags_raise_config_errors_naming_them(flags: tuple[str, ...], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        cli.config_from_args(Settings(), _args(*flags))


def test_a_fixed_window_counts_only_allowed_requests_and_resets_after_a_minute() -> None:
    clock = FakeClock(1000.5)
    limiter = RateLimiter(clock)
    quotas = [limiter.hit("k", 2) for _ in range(3)]
    assert [q.allowed for q in quotas] == [True, True, False]
    assert [q.remaining for q in quotas] == [1, 0, 0]
    assert {q.reset for q in quotas} == {1061}
    assert limiter.hit("other", 2).remaining == 1  # per key
    clock.now = 1059.0
    assert limiter.hit("k", 2).retry_after == 2
    clock.now = 1060.5
    again = limiter.hit("k", 2)
    assert (again.allowed, again.remaining, again.reset) == (True, 1, 1121)


def test_the_free_plan_allows_100_jobs_a_day() -> None:
    clock = FakeClock(86_400 * 20_000 + 3600)
    config = SimulatorConfig(accounts=(Account("k", "free", 100_000),), webhook_secret="s", latency=0, clock=clock)
    state = State(config, Dice(1))
    account = config.accounts[0]
    request = GenerateInput("hello", "avatar")
    for _ in range(100):
        state.create(account, request)
    with pytest.raises(ApiError) as refused:
        state.create(account, request)
    assert refused.value.code == "DAILY_LIMIT"
    assert refused.value.retry_after == 86_400 - 3600
    credits = state.credits("k")
    clock.now += 86_400 - 3600  # the next UTC day
    state.create(account, request)
    assert state.credits("k") == credits - pricing.cost("hello")


def test_jobs_are_processing_until_their_latency_has_passed() -> None:
    config = SimulatorConfig(accounts=(Account("k"),), webhook_secret="s", latency=30)
    job = State(config, Dice()).create(config.accounts[0], GenerateInput("hi", "a"))
    assert job.status() == "processing"
    assert job.status(time.monotonic() + 31) == "completed"


def test_webhooks_are_signed_with_the_documented_hmac_by_the_simulators_own_code() -> None:
    # GitHub's published X-Hub-Signature-256 example: the scheme Doitong documents is the same.
    signature = webhooks.sign("It's a Secret to Everybody", b"Hello, World!")
    assert signature == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_the_simulator_imports_nothing_of_the_receiver_but_its_core() -> None:
    # So a mistake in the receiver (its signature scheme, say) cannot hide behind shared code.
    package = Path(webhooks.__file__).parent
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name == "receiver" or name.startswith("receiver.")}
    assert ours, "found no imports at all: the walk is wrong"
    assert {name for name in ours if not name.startswith(("receiver.core", "receiver.simulator"))} == set()
