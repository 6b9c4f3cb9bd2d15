"""Signing in with the console token, and out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console import audit, auth, guard, render, web

HOME = "/console/"


async def login_page(request: Request) -> Response:
    target = _next(request.query_params.get("next"))
    if guard.maybe_actor(request.scope) is not None:
        return RedirectResponse(target, 303)
    return render.page(request, "login.html", section="login", next=target, problem=None)


async def login(request: Request) -> Response:
    fields = web.form(request)
    target = _next(next(iter(fields.get("next", [])), None))
    token = next(iter(fields.get("token", [])), "").strip()
    client = guard.client(request.scope)
    refused = guard.of(request.scope).check_token(token, client)
    if refused is not None:
        if refused.status_code == 429:
            problem = f"Too many wrong tokens from your address: wait {refused.headers['retry-after']} s."
        else:
            problem = "That is not the console token (RECEIVER_CONSOLE_TOKEN; `make run` keeps it in .receiver/)."
        return render.page(
            request, "login.html", section="login", next=target, problem=problem, status=refused.status_code
        )
    keys = guard.keys(request.scope)
    cookie, session_id, _ = keys.new_session()
    actor = auth.Actor("session", session_id, client)
    async with audit.acting(web.state(request).engine, actor, "console.login", None):
        pass
    response = RedirectResponse(target, 303)
    response.set_cookie(
        auth.COOKIE,
        cookie,
        max_age=auth.SESSION_SECONDS,
        path="/console",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    actor = web.actor(request)
    async with audit.acting(web.state(request).engine, actor, "console.logout", None):
        pass
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(
        auth.COOKIE, path="/console", secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )
    return response


def _next(value: str | None) -> str:
    """Where to go after signing in: a console path only, never another site (`//evil`, `/\\evil`)."""
    if (
        value is None
        or not (value == "/console" or value.startswith(("/console/", "/console?")))
        or value.startswith("/console/login")
        or "//" in value
        or "\\" in value
        or len(value) > 2000
        or any(ord(c) < 32 for c in value)
    ):
        return HOME
    return value
