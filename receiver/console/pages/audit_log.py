"""The audit log: who did what in the console, and when."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from receiver.console import audit, render, web
from receiver.core import db

PAGE = 50


async def audit_page(request: Request) -> Response:
    try:
        before = web.whole(request.query_params.get("before"), label="before")
    except web.BadInput:
        before = None
    async with db.begin(web.state(request).engine) as conn:
        entries = await audit.entries(conn, before=before, limit=PAGE + 1)
    shown = entries[:PAGE]
    return render.page(
        request,
        "audit.html",
        section="audit",
        entries=shown,
        next_before=shown[-1].id if len(entries) > PAGE else None,
        paged=before is not None,
    )
