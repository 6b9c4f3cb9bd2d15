"""The console's routes under /console, behind the guard (receiver/console/guard.py).

Every state-changing route is a POST (CSRF-checked by the guard, audited by its handler); every
GET only reads.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.console.guard import PREFIX, Guard
from receiver.console.pages import audit_log, deliveries, endpoints, jobs, login, overview, subscribers
from receiver.console.state import Console


def mount(console: Console) -> Mount:
    """The /console mount for `receiver.app`; everything under it answers 404 while the console is off."""
    routes = [
        Route("/", overview.overview, methods=["GET"]),
        Route("/overview/live", overview.live, methods=["GET"]),
        Route("/login", login.login_page, methods=["GET"]),
        Route("/login", login.login, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/jobs", jobs.jobs, methods=["GET"]),
        Route("/jobs/{job_id:path}/reconcile", jobs.reconcile_now, methods=["POST"]),
        Route("/jobs/{job_id:path}", jobs.job, methods=["GET"]),
        Route("/deliveries", deliveries.listing, methods=["GET"]),
        Route("/deliveries/replay", deliveries.replay_selected, methods=["POST"]),
        Route("/deliveries/replay-matching", deliveries.replay_matching, methods=["POST"]),
        Route("/replays/{run_id}.json", deliveries.replay_progress_json, methods=["GET"]),
        Route("/replays/{run_id}", deliveries.replay_progress, methods=["GET"]),
        Route("/subscribers", subscribers.subscribers, methods=["GET"]),
        Route("/subscribers/{subscription_id}", subscribers.subscriber, methods=["GET"]),
        Route("/subscribers/{subscription_id}/enable", subscribers.enable, methods=["POST"]),
        Route("/subscribers/{subscription_id}/disable", subscribers.disable, methods=["POST"]),
        Route("/subscribers/{subscription_id}/rotate-secret", subscribers.rotate_secret, methods=["POST"]),
        Route("/subscribers/{subscription_id}/test", subscribers.send_test, methods=["POST"]),
        Route("/subscribers/{subscription_id}/replay-dead", subscribers.replay_dead, methods=["POST"]),
        Route("/subscribers/{subscription_id}/replay-since", subscribers.replay_since, methods=["POST"]),
        Route("/endpoints", endpoints.endpoints_page, methods=["GET"]),
        Route("/audit", audit_log.audit_page, methods=["GET"]),
        Mount("/static", app=StaticFiles(packages=[("receiver.console", "static")]), name="static"),
    ]
    return Mount(PREFIX, routes=routes, middleware=[Middleware(Guard, console=console)])
