"""Subscribers: their health, and what an operator does to one (enable, disable, rotate its
secret, send it a test event, replay what it missed)."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from receiver.console import audit, render, replays, web
from receiver.core import db, durations
from receiver.core.errors import ConfigError, NotFound
from receiver.outbound import deliveries, outbox, probe, subscriptions

DEAD_SHOWN = 50
GRACES = ("1h", "24h", "72h", "7d")


async def subscribers(request: Request) -> Response:
    since = datetime.now(UTC) - timedelta(hours=24)
    async with db.begin(web.state(request).engine) as conn:
        found = await subscriptions.list_all(conn)
        figures = await deliveries.figures(conn, since)
    return render.page(
        request, "subscribers.html", section="subscribers", subscribers=found, figures=figures, notice=None
    )


async def subscriber(request: Request) -> Response:
    return await _render(request, notice=web.notice(request))


async def _render(
    request: Request, *, notice: str | None = None, problem: str | None = None, status: int = 200, **extra: Any
) -> Response:
    subscription_id = request.path_params["subscription_id"]
    now = datetime.now(UTC)
    async with db.begin(web.state(request).engine) as conn:
        info = next((s for s in await subscriptions.list_all(conn) if s.id == subscription_id), None)
        if info is None:
            return render.page(
                request,
                "missing.html",
                section="subscribers",
                what="subscriber",
                name=subscription_id,
                back="/console/subscribers",
                status=404,
            )
        hour = (await deliveries.figures(conn, now - timedelta(hours=1))).get(subscription_id)
        day = (await deliveries.figures(conn, now - timedelta(hours=24))).get(subscription_id)
        recent = await deliveries.recent(conn, subscription_id=subscription_id, limit=20)
        dead = await deliveries.listing(
            conn, deliveries.Filters(state="dead", subscription_id=subscription_id), limit=DEAD_SHOWN
        )
    return render.page(
        request,
        "subscriber.html",
        section="subscribers",
        subscriber=info,
        hour=hour,
        day=day,
        recent=recent,
        dead=dead,
        graces=GRACES,
        notice=notice,
        problem=problem,
        status=status,
        path=_path(subscription_id),
        **{"secret": None, "probe": None, **extra},
    )


def _path(subscription_id: str) -> str:
    return "/console/subscribers/" + urllib.parse.quote(subscription_id, safe="")


async def enable(request: Request) -> Response:
    return await _set_enabled(request, True)


async def disable(request: Request) -> Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    subscription_id = request.path_params["subscription_id"]
    try:
        reason = None if enabled else web.text(web.form(request), "reason", label="Reason")
    except web.BadInput as exc:
        return await _render(request, problem=str(exc), status=400)
    action = "subscriber.enable" if enabled else "subscriber.disable"
    try:
        async with audit.acting(web.state(request).engine, web.actor(request), action, subscription_id) as (
            conn,
            detail,
        ):
            reason = reason or ("disabled in the console" if not enabled else None)
            await subscriptions.set_enabled(conn, subscription_id, enabled, reason)
            if reason:
                detail["reason"] = reason
    except NotFound:
        return await _render(request)  # the missing page
    return web.done(_path(subscription_id), "enabled" if enabled else "disabled")


async def rotate_secret(request: Request) -> Response:
    """A new signing secret, shown once in this answer (never stored in the clear, never in a URL)."""
    subscription_id = request.path_params["subscription_id"]
    state = web.state(request)
    grace_text = web.text(web.form(request), "grace", label="Grace") or "24h"
    if grace_text not in GRACES:
        return await _render(request, problem=f"Grace: one of {', '.join(GRACES)}", status=400)
    grace = durations.parse(grace_text)
    try:
        async with audit.acting(state.engine, web.actor(request), "subscriber.rotate_secret", subscription_id) as (
            conn,
            detail,
        ):
            secret = await subscriptions.rotate_secret(conn, state.master_key, subscription_id, grace)
            detail["grace"] = grace_text
    except NotFound:
        return await _render(request)
    except ConfigError as exc:
        return await _render(request, problem=str(exc), status=400)
    return await _render(request, secret=secret, grace=grace_text)


async def send_test(request: Request) -> Response:
    subscription_id = request.path_params["subscription_id"]
    state = web.state(request)
    try:
        async with audit.acting(state.engine, web.actor(request), "subscriber.test_event", subscription_id) as (
            conn,
            detail,
        ):
            sent = await probe.send(conn, state.settings, state.master_key, subscription_id)
            detail.update(
                event_id=sent.event_id, ok=sent.result.ok, status=sent.result.status, duration_ms=sent.duration_ms
            )
    except NotFound:
        return await _render(request)
    except ConfigError as exc:
        return await _render(request, problem=str(exc), status=400)
    return await _render(request, probe=sent)


async def replay_dead(request: Request) -> Response:
    """Every dead delivery of this subscriber, in batches with progress."""
    subscription_id = request.path_params["subscription_id"]
    filters = deliveries.Filters(state="dead", subscription_id=subscription_id)
    run_id = await replays.start(request, filters)
    return replays.follow(run_id)


async def replay_since(request: Request) -> Response:
    """Every event since a time, to this subscriber again (those its filters match)."""
    subscription_id = request.path_params["subscription_id"]
    state = web.state(request)
    try:
        since = web.moment(web.text(web.form(request), "since", label="Since"), label="Since")
    except web.BadInput as exc:
        return await _render(request, problem=str(exc), status=400)
    if since is None:
        return await _render(request, problem="Since: say from when, e.g. 24h or 2024-05-01T12:00", status=400)
    async with audit.acting(state.engine, web.actor(request), "subscriber.replay_since", subscription_id) as (
        conn,
        detail,
    ):
        queued = await outbox.replay(await db.driver_connection(conn), since=since, subscription_id=subscription_id)
        detail.update(since=since.isoformat(), queued=queued)
    return web.done(_path(subscription_id), "replayed" if queued else "replayed-none", count=queued)
