"""The simulator's settings: accounts and their plans, latency, fault rates.

Everything is validated when the config is built, so a bad value stops
start-up with one ConfigError line naming the flag that set it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

from receiver.core.errors import ConfigError

PlanName = Literal["free", "starter", "pro", "enterprise"]
Clock = Callable[[], float]

DEFAULT_PLAN: PlanName = "pro"
DEFAULT_CREDITS = 10_000


@dataclass(frozen=True)
class Plan:
    """One row of the documented rate-limit table."""

    name: PlanName
    requests_per_minute: int
    concurrent_jobs: int
    daily_jobs: int | None  # None: unlimited


# From the documentation's table. Enterprise is "Custom / Unlimited" there; high
# finite limits keep the X-RateLimit-* headers meaningful while letting the demo
# and bench/simulate.py run one account at the rate the machine sustains.
PLANS: dict[str, Plan] = {
    "free": Plan("free", 10, 1, 100),
    "starter": Plan("starter", 30, 3, 1_000),
    "pro": Plan("pro", 60, 10, 10_000),
    "enterprise": Plan("enterprise", 100_000, 10_000, None),
}


@dataclass(frozen=True)
class Account:
    """An API key, its plan and the credits it starts with."""

    key: str
    plan: PlanName = DEFAULT_PLAN
    credits: int = DEFAULT_CREDITS

    def __post_init__(self) -> None:
        if not self.key or any(c.isspace() for c in self.key):
            raise ConfigError("--api-key: a key must be non-empty and contain no spaces (KEY[:PLAN[:CREDITS]])")
        if self.plan not in PLANS:
            raise ConfigError(f"--api-key: plan {self.plan!r} is not one of {', '.join(PLANS)}")
        if self.credits < 0:
            raise ConfigError(f"--api-key: credits for {self.key!r} must be 0 or more")

    @property
    def limits(self) -> Plan:
        return PLANS[self.plan]

    @classmethod
    def parse(cls, text: str) -> Account:
        """`KEY[:PLAN[:CREDITS]]`, e.g. `sk_test`, `sk_free:free`, `sk_poor:pro:40`."""
        parts = text.split(":")
        if len(parts) > 3:
            raise ConfigError(f"--api-key: {text!r} has too many ':'; write KEY[:PLAN[:CREDITS]]")
        key = parts[0]
        plan = parts[1].strip().lower() if len(parts) > 1 and parts[1].strip() else DEFAULT_PLAN
        if plan not in PLANS:
            raise ConfigError(f"--api-key: plan {plan!r} in {text!r} is not one of {', '.join(PLANS)}")
        credits = DEFAULT_CREDITS
        if len(parts) > 2:
            try:
                credits = int(parts[2])
            except ValueError:
                raise ConfigError(f"--api-key: credits {parts[2]!r} in {text!r} is not a whole number") from None
        return cls(key, cast(PlanName, plan), credits)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator behaves. Rates are fractions 0-1; times are seconds.

    `clock` gives wall time (Unix seconds) for timestamps, rate-limit windows
    and daily limits; tests inject a fake one so they need not wait a minute.
    Job latency and retry back-off use real time.
    """

    accounts: tuple[Account, ...]
    webhook_secret: str
    latency: float = 2.0
    failure_rate: float = 0.0  # jobs that end `failed`
    duplicate_rate: float = 0.0  # webhooks sent twice (same delivery id)
    reorder_rate: float = 0.0  # jobs whose processing webhook follows the terminal one
    drop_rate: float = 0.0  # jobs whose terminal webhook is never sent
    bad_signature_rate: float = 0.0  # webhooks preceded by a forged copy
    fail_rate: float = 0.0  # API requests answered 500 INTERNAL_ERROR
    seed: int | None = None  # seeds the fault decisions (not ids)
    retry_base: float = 0.5  # first back-off; doubles each attempt
    max_attempts: int = 8  # per webhook copy, the first try included
    request_timeout: float = 10.0  # per webhook attempt
    clock: Clock = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ConfigError("--api-key: give at least one, e.g. --api-key sk_test or --api-key sk_test:pro:10000")
        keys = [a.key for a in self.accounts]
        if len(set(keys)) != len(keys):
            raise ConfigError("--api-key: the same key is given more than once")
        if not self.webhook_secret:
            raise ConfigError("--webhook-secret: required (or set DOITONG_WEBHOOK_SECRET)")
        for flag, value in (
            ("--failure-rate", self.failure_rate),
            ("--duplicate-rate", self.duplicate_rate),
            ("--reorder-rate", self.reorder_rate),
            ("--drop-rate", self.drop_rate),
            ("--bad-signature-rate", self.bad_signature_rate),
            ("--fail-rate", self.fail_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{flag}: {value} is not a fraction between 0 and 1")
        if not 0.0 <= self.latency <= 86_400:
            raise ConfigError(f"--latency: {self.latency} is not between 0 and 1 day")
        if self.retry_base < 0:
            raise ConfigError("--retry-base: must be 0 or more")
        if self.max_attempts < 1:
            raise ConfigError("--attempts: use 1 or more")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout: must be more than 0")

    def account(self, key: str) -> Account | None:
        """The account for an API key, if there is one."""
        return next((a for a in self.accounts if a.key == key), None)
