"""Jobs: the search, one job's whole timeline, and "reconcile now"."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from receiver.console import audit, render, web
from receiver.core import db, tables
from receiver.core.errors import ConfigError
from receiver.jobs import doitong, history, reconcile, search, submit
from receiver.outbound import deliveries

PAGE = 50
_DETAIL_COLUMNS = [*search.JOB_COLUMNS, tables.jobs.c.last_polled_at]


async def jobs(request: Request) -> Response:
    params = request.query_params
    shown: dict[str, str] = {
        name: params.get(name, "") for name in ("id", "ref", "status", "service", "tag", "from", "to")
    }
    try:
        filters = search.Filters(
            job_id=web.text(params, "id", label="Job id"),
            client_reference=web.text(params, "ref", label="Client reference"),
            status=web.text(params, "status", label="Status"),
            service=web.text(params, "service", label="Service"),
            tags=_tags(web.text(params, "tag", label="Tags")),
            since=web.moment(web.text(params, "from", label="From"), label="From"),
            until=web.moment(web.text(params, "to", label="To"), label="To"),
        )
        cursor = params.get("cursor")
        after = search.decode_cursor(cursor) if cursor else None
    except web.BadInput as exc:
        return render.page(
            request,
            "jobs.html",
            section="jobs",
            form=shown,
            rows=[],
            next_cursor=None,
            problem=str(exc),
            searched=True,
            status=400,
            statuses=render.KNOWN_STATUSES,
        )
    except search.InvalidCursor:
        return render.page(
            request,
            "jobs.html",
            section="jobs",
            form=shown,
            rows=[],
            next_cursor=None,
            problem="That page link is not one this console made; start from the first page.",
            searched=True,
            status=400,
            statuses=render.KNOWN_STATUSES,
        )
    async with db.begin(web.state(request).engine) as conn:
        rows = [dict(row._mapping) for row in await conn.execute(search.query(filters, limit=PAGE, after=after))]
    page, next_cursor = search.page(rows, PAGE)
    return render.page(
        request,
        "jobs.html",
        section="jobs",
        form=shown,
        rows=page,
        next_cursor=next_cursor,
        problem=None,
        searched=any(shown.values()),
        paged=after is not None,
        statuses=render.KNOWN_STATUSES,
        query={k: v for k, v in shown.items() if v},
    )


def _tags(text: str | None) -> dict[str, str] | None:
    """`key=value, key2=value2` as a tag filter."""
    if text is None:
        return None
    tags: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise web.BadInput(f"Tags: write key=value (e.g. customer=acme), not {part.strip()!r}")
        tags[key.strip()] = value.strip()
    return tags or None


@dataclass
class Entry:
    """One line of a job's timeline."""

    at: datetime | None
    kind: str  # registration, report, event, poll
    report: history.Report | None = None
    event: deliveries.Event | None = None
    events: list[deliveries.Event] = field(default_factory=list)


async def job(request: Request) -> Response:
    return await _render_job(request, notice=web.notice(request))


async def _render_job(request: Request, *, notice: str | None = None, problem: str | None = None) -> Response:
    job_id = request.path_params["job_id"]
    if len(job_id) > search.MAX_ID_LENGTH or "\x00" in job_id:
        return _missing(request, job_id)
    state = web.state(request)
    async with db.begin(state.engine) as conn:
        query = search.query(search.Filters(job_id=job_id), limit=1, columns=_DETAIL_COLUMNS)
        found = (await conn.execute(query)).first()
        if found is None:
            return _missing(request, job_id)
        row = dict(found._mapping)
        reports = await history.reports(conn, job_id, with_bodies=True)
        events = await deliveries.of_job(conn, job_id)
    return render.page(
        request,
        "job.html",
        section="jobs",
        job=row,
        timeline=_timeline(row, reports, events),
        final=row["status"] in ("completed", "failed"),
        reconcilable=bool(state.settings.doitong_api_key),
        notice=notice,
        problem=problem,
        status=200 if problem is None else 502,
    )


def _missing(request: Request, job_id: str) -> Response:
    return render.page(
        request, "missing.html", section="jobs", what="job", name=job_id, back="/console/jobs", status=404
    )


def _timeline(job: dict[str, Any], reports: list[history.Report], events: list[deliveries.Event]) -> list[Entry]:
    by_id = {e.id: e for e in events}
    entries: list[Entry] = []
    registered_by_report = any(r.source == "api" for r in reports)
    if job["registered_at"] is not None and not registered_by_report:
        entries.append(Entry(job["registered_at"], "registration"))
    for report in reports:
        produced = [by_id.pop(report.event_id)] if report.event_id in by_id else []
        entries.append(Entry(report.received_at, "report", report=report, events=produced))
    for event in by_id.values():  # an event whose report is gone (none today, but never hide one)
        entries.append(Entry(event.created_at, "event", event=event))
    if job["last_polled_at"] is not None:
        entries.append(Entry(job["last_polled_at"], "poll"))
    epoch = datetime.min.replace(tzinfo=UTC)
    entries.sort(key=lambda e: e.at or epoch)
    return entries


async def reconcile_now(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    state = web.state(request)
    path = f"/console/jobs/{_quoted(job_id)}"
    try:
        client = submit.provider_client(state.settings, retries=1, timeout=15.0)
    except ConfigError as exc:
        return await _job_with_problem(request, str(exc))
    try:
        async with client as api, state.pool.connection() as conn:
            done = await reconcile.reconcile_once(conn, api, stale_after=timedelta(0), job_id=job_id)
    except doitong.ProviderError as exc:
        return await _job_with_problem(request, f"Doitong did not answer: {exc}")
    async with audit.acting(state.engine, web.actor(request), "job.reconcile", job_id) as (_, detail):
        detail.update(checked=done.checked, changed=done.changed, events=done.events, unknown=done.unknown)
    if done.errors:
        return await _job_with_problem(request, "Doitong did not answer; the publisher's log says why.")
    if not done.checked:
        return web.done(path, "reconciled-final")
    if done.unknown:
        return web.done(path, "reconciled-unknown")
    return web.done(path, "reconciled-changed" if done.changed else "reconciled-unchanged")


async def _job_with_problem(request: Request, problem: str) -> Response:
    """The job page again with `problem` on top: nothing changed, so there is nothing to redirect to."""
    return await _render_job(request, problem=problem)


def _quoted(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")
