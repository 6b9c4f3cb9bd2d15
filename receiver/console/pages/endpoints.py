"""Endpoints: each inbound endpoint, its secrets (a fingerprint, never the secret), the last
webhook it accepted and the forged-signature attempts per hour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from receiver.console import charts, render, web
from receiver.core import db
from receiver.inbound import endpoints
from receiver.outbound import forgeries

HOURS = 24


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    secrets: list[tuple[endpoints.ActiveSecret, str]]  # (secret, where it comes from)
    last_accepted: datetime | None
    rejected: charts.Chart


async def endpoints_page(request: Request) -> Response:
    state = web.state(request)
    now = datetime.now(UTC)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    async with db.begin(state.engine) as conn:
        stored = await endpoints.load_active(conn, state.master_key)
        names = sorted(set(stored) | ({endpoints.DEFAULT} if state.settings.webhook_secrets else set()))
        last = await endpoints.last_accepted(conn, names)
        rejected = await forgeries.per_hour(await db.driver_connection(conn), first_hour)
    shown = []
    for name in names:
        secrets = [(endpoints.ActiveSecret(s, None), "DOITONG_WEBHOOK_SECRET") for s in state.settings.webhook_secrets]
        if name != endpoints.DEFAULT:
            secrets = []
        secrets += [(secret, "stored (receiver endpoints)") for secret in stored.get(name, ())]
        per_hour = rejected.get(name, {})
        points = [
            charts.Point(hour, {"rejected signature": per_hour.get(hour, 0)})
            for hour in (first_hour + timedelta(hours=i) for i in range(HOURS))
        ]
        chart = charts.stacked(
            f"Forged or missing signatures on {name}, last 24 hours",
            points,
            ["rejected signature"],
            width=timedelta(hours=1),
            unit="per hour",
        )
        path = "/webhooks/doitong" if name == endpoints.DEFAULT else f"/webhooks/doitong/{name}"
        shown.append(Endpoint(name, path, secrets, last.get(name), chart))
    return render.page(request, "endpoints.html", section="endpoints", endpoints=shown)
