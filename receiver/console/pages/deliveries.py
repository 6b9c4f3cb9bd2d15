"""Deliveries: the dead-letter view (and pending or delivered ones), replaying a selection or
everything a filter matches, and the progress of a replay."""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.console import audit, render, replays, web
from receiver.core import db
from receiver.outbound import deliveries as sent
from receiver.outbound import outbox, subscriptions

PAGE = 50
MAX_SELECTED = 5000


def _filters(values: Any) -> sent.Filters:
    state = web.text(values, "state", label="State") or "dead"
    if state not in (*sent.STATES, "all"):
        raise web.BadInput("State: dead, pending, delivered or all")
    return sent.Filters(
        state=None if state == "all" else cast(sent.State, state),
        subscription_id=web.text(values, "subscriber", label="Subscriber"),
        job_id=web.text(values, "job", label="Job id"),
    )


async def listing(request: Request) -> Response:
    params = request.query_params
    problem: str | None = None
    try:
        filters = _filters(params)
        before = web.whole(params.get("before"), label="before")
    except web.BadInput as exc:
        filters, before, problem = sent.Filters(state="dead"), None, str(exc)
    async with db.begin(web.state(request).engine) as conn:
        rows = await sent.listing(conn, filters, limit=PAGE + 1, before=before)
        subscribers = await subscriptions.list_all(conn)
    shown = rows[:PAGE]
    return render.page(
        request,
        "deliveries.html",
        section="deliveries",
        rows=shown,
        next_before=shown[-1].id if len(rows) > PAGE else None,
        paged=before is not None,
        state=filters.state or "all",
        subscriber=filters.subscription_id or "",
        job=filters.job_id or "",
        subscribers=subscribers,
        problem=problem,
        notice=web.notice(request),
        status=400 if problem else 200,
    )


async def replay_selected(request: Request) -> Response:
    """The deliveries ticked on a page, queued again in one statement."""
    fields = web.form(request)
    back = _back(web.text(fields, "back", label="back"))
    chosen = fields.get("delivery", [])
    if not chosen or len(chosen) > MAX_SELECTED:
        return web.done(back, "replayed-none")
    try:
        ids = sorted({int(web.whole(value, label="delivery") or 0) for value in chosen})
    except web.BadInput:
        return web.done(back, "replayed-none")
    async with audit.acting(web.state(request).engine, web.actor(request), "deliveries.replay_selected", None) as (
        conn,
        detail,
    ):
        queued = await outbox.replay_deliveries(await db.driver_connection(conn), ids)
        detail.update(deliveries=ids[:100], selected=len(ids), queued=queued)
    return web.done(back, "replayed" if queued else "replayed-none", count=queued)


async def replay_matching(request: Request) -> Response:
    """Everything the filter matches, in batches, followed on the progress page."""
    try:
        filters = _filters(web.form(request))
    except web.BadInput:
        return web.done("/console/deliveries", "replayed-none")
    run_id = await replays.start(request, filters)
    return replays.follow(run_id)


async def replay_progress(request: Request) -> Response:
    run = await _run(request)
    if run is None:
        return render.page(
            request,
            "missing.html",
            section="deliveries",
            what="replay",
            name=request.path_params["run_id"],
            back="/console/deliveries",
            status=404,
        )
    return render.page(request, "replay.html", section="deliveries", run=run)


async def replay_progress_json(request: Request) -> Response:
    """For console.js, which moves the progress bar without reloading the page."""
    run = await _run(request)
    if run is None:
        return JSONResponse({"error": "not_found"}, 404)
    return JSONResponse(
        {
            "state": run.state,
            "total": run.total,
            "examined": run.examined,
            "queued": run.queued,
            "fraction": run.fraction,
            "error": run.error,
        }
    )


async def _run(request: Request) -> replays.Run | None:
    try:
        run_id = web.whole(request.path_params["run_id"], label="replay", high=2**62)
    except web.BadInput:
        return None
    return await replays.get(web.state(request).engine, run_id) if run_id is not None else None


def _back(value: str | None) -> str:
    """Where a form asked to return: a console page, never another site."""
    if value is None or not value.startswith("/console/") or "//" in value or "\\" in value:
        return "/console/deliveries"
    return value
