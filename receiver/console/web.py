"""What every page and action needs from a request: the running server's state, checked
parameters, and the answer after an action (a redirect that names what happened)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import RedirectResponse

from receiver.console import auth, guard
from receiver.core import durations
from receiver.core.errors import ConfigError, ReceiverError
from receiver.inbound.state import AppState

MAX_TEXT = 255  # ids, references and other one-line values from a form or a query string

# What an action did, as the page it redirects to says it. A redirect carries only the key and
# a count (nothing from outside goes into a URL), and the page shows the words.
NOTICES = {
    "enabled": "Subscriber enabled: its waiting deliveries go out now.",
    "disabled": "Subscriber disabled: its deliveries wait until it is enabled again.",
    "replayed": "{count} deliveries queued again.",
    "replayed-none": "Nothing to queue again: every matching delivery is pending already.",
    "reconciled-changed": "Doitong reported a new status; it went through the state machine (see the timeline).",
    "reconciled-unchanged": "Doitong reports the status the job already has; nothing changed.",
    "reconciled-unknown": "Doitong does not know this job.",
    "reconciled-final": "The job is in a final state; there is nothing to ask Doitong.",
}


class BadInput(ReceiverError):
    """A parameter or form field the console refuses; the message says what to change."""


def state(request: Request) -> AppState:
    found: AppState = request.app.state.receiver
    return found


def text(values: Mapping[str, str] | Mapping[str, list[str]], name: str, *, label: str) -> str | None:
    """A one-line value (a query parameter, or a form field's first value), stripped; None when empty."""
    raw = values.get(name)
    value = (raw[0] if raw else None) if isinstance(raw, list) else raw
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_TEXT or "\x00" in value:
        raise BadInput(f"{label}: at most {MAX_TEXT} characters")
    return value


def moment(value: str | None, *, label: str) -> datetime | None:
    """A time from a form: ISO-8601 (a browser's datetime-local, read as UTC) or a duration ago (`24h`)."""
    if value is None:
        return None
    try:
        found = durations.since(value, setting=label)
    except ConfigError:
        raise BadInput(f"{label}: write a time such as 2024-05-01T12:00 (UTC) or a duration such as 24h") from None
    if found.year < 2000 or found > datetime.now(UTC) + timedelta(days=1):
        raise BadInput(f"{label}: {value!r} is not a time this console can look for")
    return found


def whole(value: str | None, *, label: str, low: int = 1, high: int = 10**12) -> int | None:
    if value is None or not value.strip():
        return None
    cleaned = value.strip()
    if not (cleaned.isascii() and cleaned.isdigit()) or not low <= int(cleaned) <= high:
        raise BadInput(f"{label}: a whole number from {low} to {high}")
    return int(cleaned)


def done(path: str, notice: str, **numbers: int) -> RedirectResponse:
    """After an action: back to `path`, saying `notice` (a key of NOTICES)."""
    query = urllib.parse.urlencode({"notice": notice, **numbers})
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}{query}", 303)


def notice(request: Request) -> str | None:
    """The words of the notice a redirect named, if any (unknown keys say nothing)."""
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    count = whole(request.query_params.get("count"), label="count", low=0) if "{count}" in template else None
    return template.format(count=f"{count:,}" if count is not None else "Some")


def actor(request: Request) -> auth.Actor:
    return guard.actor(request.scope)


def form(request: Request) -> dict[str, list[str]]:
    return guard.form(request.scope)


def window(request: Request) -> tuple[str, timedelta]:
    """The overview's window: the last hour (default) or day."""
    choice = request.query_params.get("window")
    return ("24h", timedelta(hours=24)) if choice == "24h" else ("1h", timedelta(hours=1))
