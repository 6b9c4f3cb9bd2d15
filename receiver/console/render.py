"""Pages: Jinja2 templates from the package, autoescaped, and the filters they use.

Everything a page shows that came from outside (payloads, statuses, error strings, URLs,
headers) goes through autoescaping; nothing is marked safe but the SVG the console draws itself.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse

from receiver import __version__
from receiver.console import guard

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("receiver.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
NAV = (
    ("overview", "Overview", "/console/"),
    ("jobs", "Jobs", "/console/jobs"),
    ("deliveries", "Deliveries", "/console/deliveries"),
    ("subscribers", "Subscribers", "/console/subscribers"),
    ("endpoints", "Endpoints", "/console/endpoints"),
    ("audit", "Audit log", "/console/audit"),
)
KNOWN_STATUSES = ("submitted", "processing", "completed", "failed")


def page(request: Request, template: str, *, section: str, status: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered for the signed-in actor, with the navigation and the CSRF token."""
    actor = guard.maybe_actor(request.scope)
    csrf = None
    if actor is not None and actor.session_id is not None:
        csrf = guard.keys(request.scope).csrf(actor.session_id)
    html = _ENV.get_template(template).render(
        section=section,
        nav=NAV,
        actor=actor,
        csrf=csrf,
        version=__version__,
        now=datetime.now(UTC),
        **context,
    )
    return HTMLResponse(html, status)


def fragment(template: str, **context: Any) -> str:
    """A part of a page, for the live updates (the same template the page includes)."""
    return _ENV.get_template(template).render(now=datetime.now(UTC), **context)


def when(value: datetime | None) -> str:
    """A moment as people read it: UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 0:
        return "in " + span(-seconds)
    if seconds < 1:
        return "just now"
    return span(seconds) + " ago"


def span(seconds: float | timedelta | None) -> str:
    """A duration in its two largest units: 2h 5m, 3m 20s, 45s, 120 ms."""
    if seconds is None:
        return "—"
    total = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    if total < 1:
        return f"{round(total * 1000)} ms"
    whole = int(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{round(value)} ms"


def pct(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 0.9995 or value == 0:
        return f"{value * 100:.0f} %"
    return f"{value * 100:.1f} %"


def number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}".replace(",", "\u202f")


def pretty(value: Any) -> str:
    """A JSON document indented for reading (escaped by the template like any text)."""
    if value is None:
        return "null"
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:  # integers past 64 bits
        return json.dumps(value, indent=2, ensure_ascii=False)


def pretty_body(body: bytes | None) -> str:
    """A raw webhook body: indented when it is JSON (it almost always is), else as text."""
    if body is None:
        return "(pruned: raw bodies are kept until `receiver prune` drops them)"
    try:
        return pretty(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def status_class(status: str | None) -> str:
    """The CSS modifier of a job status's badge; statuses we do not know get a neutral one."""
    return status if status in KNOWN_STATUSES else "other"


def safe_url(url: str | None) -> str | None:
    """A URL fit for an href: http(s) only, so a `javascript:` URL from outside stays text."""
    if url and (url.startswith("https://") or url.startswith("http://")):
        return url
    return None


for _name, _function in {
    "when": when,
    "iso": iso,
    "ago": ago,
    "span": span,
    "ms": ms,
    "pct": pct,
    "number": number,
    "pretty": pretty,
    "pretty_body": pretty_body,
    "status_class": status_class,
    "safe_url": safe_url,
}.items():
    _ENV.filters[_name] = _function
