"""The overview: the last hour or day at a glance, refreshed in place every few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from receiver.console import charts, render, web
from receiver.core import db
from receiver.inbound import outcomes
from receiver.jobs import search
from receiver.outbound import deliveries, outbox, subscriptions

REFRESH_SECONDS = 5
# The chart's bars: a minute each over the last hour, a quarter of an hour each over the day.
_BUCKETS = {"1h": (timedelta(minutes=1), 60, "per minute"), "24h": (timedelta(minutes=15), 96, "per 15 minutes")}


@dataclass(frozen=True, slots=True)
class JobCounts:
    services: list[str]  # columns, most jobs first
    rows: list[tuple[str, dict[str, int], int]]  # (status, jobs per service, jobs): known statuses first
    totals: dict[str, int]  # per service
    total: int


async def overview(request: Request) -> Response:
    return render.page(request, "overview.html", section="overview", refresh=REFRESH_SECONDS, **await _data(request))


async def live(request: Request) -> Response:
    """The overview's changing part alone, which console.js swaps in every REFRESH_SECONDS."""
    return HTMLResponse(render.fragment("_overview_live.html", **await _data(request)))


async def _data(request: Request) -> dict[str, Any]:
    name, window = web.window(request)
    width, count, unit = _BUCKETS[name]
    now = datetime.now(UTC)
    since = _floor(now, width) - width * (count - 1)
    state = web.state(request)
    async with db.begin(state.engine) as conn:
        raw = await db.driver_connection(conn)
        buckets = await outcomes.series(raw, since, width)
        backlog = await outbox.backlog(raw)
        jobs = await search.counts(conn, now - window)
        subscribers = await subscriptions.list_all(conn)
        figures = await deliveries.figures(conn, now - window)
        failures = await deliveries.recent(conn, failed_since=now - window, limit=8)
    points = [charts.Point(b.start, b.counts) for b in buckets]
    chart = charts.stacked(
        f"Webhooks received, last {'hour' if name == '1h' else '24 hours'}",
        points,
        list(outcomes.GROUPS),
        width=width,
        unit=unit,
    )
    return {
        "window": name,
        "traffic": chart,
        "backlog": backlog,
        "jobs": _job_counts(jobs),
        "subscribers": subscribers,
        "figures": figures,
        "failures": failures,
        "updated": now,
    }


def _floor(moment: datetime, width: timedelta) -> datetime:
    seconds = int(width.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _job_counts(found: list[tuple[str | None, str, int]]) -> JobCounts:
    by_status: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for service, status, jobs in found:
        name = service or "(none)"
        counts = by_status.setdefault(status, {})
        counts[name] = counts.get(name, 0) + jobs
        totals[name] = totals.get(name, 0) + jobs
    known = [s for s in render.KNOWN_STATUSES if s in by_status]
    others = sorted(set(by_status) - set(render.KNOWN_STATUSES))
    rows = [(status, by_status[status], sum(by_status[status].values())) for status in known + others]
    services = sorted(totals, key=lambda name: -totals[name])
    return JobCounts(services, rows, totals, sum(totals.values()))
