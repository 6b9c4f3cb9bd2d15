"""One duration syntax everywhere: `30s`, `15m`, `24h`, `7d`, `1h30m`, `500ms`;
and one way to say "since": an ISO-8601 time or such a duration ago."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from receiver.core.errors import ConfigError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MAX_SECONDS = 100 * 365 * 86400.0
# [0-9], not \d: \d matches other scripts' digits too, and float() takes them (an Arabic-Indic "1h" was an hour).
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")


def parse(text: str, *, setting: str = "duration") -> timedelta:
    """Parse `1h30m`-style text; raise ConfigError naming `setting` on anything else."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ConfigError(f"{setting}: empty duration; write it like 30s, 15m, 24h, 7d or 1h30m")
    position = 0
    seconds = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(cleaned):
        raise ConfigError(f"{setting}: {text!r} is not a duration; write it like 30s, 15m, 24h, 7d or 1h30m")
    if seconds > MAX_SECONDS:
        raise ConfigError(f"{setting}: {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def format(value: timedelta) -> str:
    """Render a timedelta in the same syntax `parse` reads (`1h30m`, `0s`)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    total_ms = abs(total_ms)
    seconds, ms = divmod(total_ms, 1000)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return sign + "".join(parts)


def since(text: str, *, setting: str, now: datetime | None = None) -> datetime:
    """The moment `text` names: an ISO-8601 time (UTC when it has no offset) or a
    duration (`24h`) before `now`. ConfigError naming `setting` when it is neither."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return (now or datetime.now(UTC)) - parse(text, setting=setting)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
