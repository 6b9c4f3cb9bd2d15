"""The console over HTTP against a real server and database: off unless configured, who gets in
and how, CSRF, the audit log, the headers, escaping, and what its actions do."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from receiver.core import db
from receiver.inbound import outcomes
from receiver.outbound import subscriptions
from tests.support import (
    MASTER_KEY,
    Receiver,
    admin,
    doitong_body,
    eventually,
    execute,
    query,
    running,
    scalar,
    settings_for,
)

TOKEN = "console-token-for-tests-0123"
HTML = {"accept": "text/html,application/xhtml+xml"}
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def receiver(database_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    async with running(settings_for(database_url, tmp_path, console_token=TOKEN)) as server:
        yield server


@contextlib.asynccontextmanager
async def signed_in(receiver: Receiver) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client with a session, and the session's CSRF token."""
    async with httpx.AsyncClient(base_url=receiver.url) as client:
        answer = await client.post("/console/login", data={"token": TOKEN, "next": "/console/jobs"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/jobs"
        page = await client.get("/console/jobs")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        yield client, found.group(1)


async def test_the_console_is_not_there_without_a_token(database_url: str, tmp_path: Path) -> None:
    async with running(settings_for(database_url, tmp_path)) as server:
        for path in ("/console/", "/console/login", "/console/static/console.css", "/console/jobs"):
            answer = await server.client.get(server.url + path, headers=BEARER)
            assert answer.status_code == 404, path
        assert (await server.client.post(server.url + "/console/login", data={"token": TOKEN})).status_code == 404


async def test_without_a_session_pages_redirect_to_login_and_everything_else_is_401(receiver: Receiver) -> None:
    client = receiver.client
    page = await client.get(receiver.url + "/console/jobs?status=failed", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3Dfailed"
    assert (await client.get(receiver.url + "/console/overview/live")).status_code == 401
    assert (await client.get(receiver.url + "/console/jobs")).status_code == 401  # not a browser asking
    refused = await client.post(receiver.url + "/console/subscribers/x/disable", headers=HTML)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    # The login page and the assets it needs are open.
    assert (await client.get(receiver.url + "/console/login", headers=HTML)).status_code == 200
    css = await client.get(receiver.url + "/console/static/console.css")
    assert css.status_code == 200 and "Okabe-Ito" in css.text


async def test_login_sets_a_strict_http_only_cookie_with_an_expiry(receiver: Receiver) -> None:
    answer = await receiver.client.post(receiver.url + "/console/login", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("receiver_console=")
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= flags.keys()
    assert "strict" in flags["samesite"].lower() and flags["path"].strip() == "Path=/console"
    assert "secure" not in flags  # plain http here
    assert TOKEN not in cookie
    # Behind a proxy that terminated TLS (uvicorn trusts X-Forwarded-Proto from 127.0.0.1): Secure.
    tls = await receiver.client.post(
        receiver.url + "/console/login", data={"token": TOKEN}, headers={"x-forwarded-proto": "https"}
    )
    assert "secure" in tls.headers["set-cookie"].lower()


async def test_logout_ends_the_session_in_the_browser(receiver: Receiver) -> None:
    async with signed_in(receiver) as (client, csrf):
        out = await client.post("/console/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        assert "Max-Age=0" in out.headers["set-cookie"] or "expires=" in out.headers["set-cookie"].lower()
        assert (await client.get("/console/", headers=HTML)).status_code == 303


async def test_wrong_tokens_are_refused_then_rate_limited(receiver: Receiver) -> None:
    client = receiver.client
    for _ in range(5):
        wrong = await client.post(receiver.url + "/console/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "not the console token" in wrong.text
    # Locked out: even the right token is refused until the window has passed, and bearer calls too.
    locked = await client.post(receiver.url + "/console/login", data={"token": TOKEN})
    assert locked.status_code == 429 and "set-cookie" not in locked.headers
    bearer = await client.get(receiver.url + "/console/", headers=BEARER)
    assert bearer.status_code == 429 and int(bearer.headers["retry-after"]) > 0


async def test_a_wrong_bearer_token_is_401_and_the_right_one_reads(receiver: Receiver) -> None:
    wrong = await receiver.client.get(receiver.url + "/console/", headers={"authorization": "Bearer nope-nope-nope"})
    assert wrong.status_code == 401
    right = await receiver.client.get(receiver.url + "/console/", headers=BEARER)
    assert right.status_code == 200 and "<h1>Overview</h1>" in right.text


async def test_every_answer_carries_the_security_headers(receiver: Receiver) -> None:
    async with signed_in(receiver) as (client, _):
        for path in ("/console/", "/console/login", "/console/jobs", "/console/overview/live", "/console/audit"):
            answer = await client.get(path)
            headers = answer.headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store", path
            # What the page took, and the CPU of the thread that answers webhooks meanwhile.
            assert re.fullmatch(r"app;dur=[0-9.]+, cpu;dur=[0-9.]+", headers["server-timing"]), path
            # No inline script or style anywhere, and the token nowhere in a page.
            assert "<script>" not in answer.text and " style=" not in answer.text and "onclick" not in answer.text
            assert TOKEN not in answer.text


async def test_posts_need_the_sessions_csrf_token_and_are_audited(receiver: Receiver) -> None:
    url = receiver.settings.database_url or ""
    added = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    async with signed_in(receiver) as (client, csrf):
        path = f"/console/subscribers/{added.id}/disable"
        assert (await client.post(path, data={"reason": "x"})).status_code == 403
        assert (await client.post(path, data={"reason": "x", "csrf": csrf[:-2] + "xx"})).status_code == 403
        async with signed_in(receiver) as (_, other_csrf):
            pass
        assert (await client.post(path, data={"csrf": other_csrf})).status_code == 403  # another session's
        cross = await client.post(path, data={"csrf": csrf}, headers={"origin": "https://evil.example"})
        assert cross.status_code == 403
        assert scalar(url, "SELECT state FROM subscriptions") == "enabled"  # none of them did anything

        # This host behind a proxy that terminated TLS (and did not say so): the same site.
        same_site = {"origin": "https://" + receiver.url.removeprefix("http://")}
        done = await client.post(path, data={"csrf": csrf, "reason": "maintenance <b>window</b>"}, headers=same_site)
        assert done.status_code == 303 and done.headers["location"].endswith("?notice=disabled")
        assert query(url, "SELECT state, disabled_reason FROM subscriptions") == [
            ("disabled", "maintenance <b>window</b>")
        ]
        page = await client.get(done.headers["location"])
        assert "Subscriber disabled" in page.text and "maintenance &lt;b&gt;window&lt;/b&gt;" in page.text

    # A script with the bearer token needs no CSRF token: it carries no cookie a forger could ride on.
    enabled = await receiver.client.post(receiver.url + f"/console/subscribers/{added.id}/enable", headers=BEARER)
    assert enabled.status_code == 303
    entries = query(url, "SELECT actor, session, client, action, target, detail FROM audit_log ORDER BY id")
    actions = [(e[0], e[3], e[4]) for e in entries]
    assert actions == [
        ("session", "console.login", None),
        ("session", "console.login", None),
        ("session", "subscriber.disable", added.id),
        ("bearer", "subscriber.enable", added.id),
    ]
    disable = entries[2]
    assert disable[1] is not None and len(disable[1]) == 12 and disable[2] == "127.0.0.1"
    assert disable[5] == {"reason": "maintenance <b>window</b>"}
    assert entries[3][1] is None  # a bearer call has no session


async def test_outside_text_is_shown_as_text(receiver: Receiver) -> None:
    job = "<script>alert(1)</script>"
    body = doitong_body(job, "<img src=x onerror=alert(2)>", metadata={"note": "</pre><script>alert(3)</script>"})
    assert (await receiver.post(body)).status_code == 200
    jobs = await receiver.client.get(receiver.url + "/console/jobs", headers=BEARER)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in jobs.text and "&lt;img src=x onerror=alert(2)&gt;" in jobs.text
    page = await receiver.client.get(receiver.url + "/console/jobs/%3Cscript%3Ealert(1)%3C%2Fscript%3E", headers=BEARER)
    assert page.status_code == 200
    for raw in ("<script>alert", "<img src=x", "</pre><script>"):
        assert raw not in page.text


async def test_rotating_a_secret_shows_it_once(receiver: Receiver) -> None:
    url = receiver.settings.database_url or ""
    added = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    async with signed_in(receiver) as (client, csrf):
        path = f"/console/subscribers/{added.id}"
        rotated = await client.post(path + "/rotate-secret", data={"csrf": csrf, "grace": "1h"})
        assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
        found = re.search(r'value="(whsec_[A-Za-z0-9+/=]+)"', rotated.text)
        assert found is not None and found.group(1) != added.secret
        later = await client.get(path)
        assert found.group(1) not in later.text and added.secret not in later.text
    detail = scalar(url, "SELECT detail FROM audit_log WHERE action = 'subscriber.rotate_secret'")
    assert detail == {"grace": "1h"}


async def test_replaying_everything_a_filter_matches_runs_in_batches_with_progress(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.console import replays

    monkeypatch.setattr(replays, "BATCH", 2)
    url = receiver.settings.database_url or ""
    added = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    for n in range(5):
        await receiver.post(doitong_body(f"job_{n}_{uuid.uuid4().hex[:6]}", "completed"))
    execute(
        url,
        "INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq, state, attempts)"
        " SELECT id, %s, job_id, seq, 'dead', 11 FROM outbox_events",
        (added.id,),
    )
    started = await receiver.client.post(
        receiver.url + "/console/deliveries/replay-matching",
        data={"state": "dead", "subscriber": added.id},
        headers=BEARER,
    )
    assert started.status_code == 303 and started.headers["location"].startswith("/console/replays/")
    progress = receiver.url + started.headers["location"] + ".json"

    async def finished() -> bool:
        return (await receiver.client.get(progress, headers=BEARER)).json()["state"] == "finished"

    assert await eventually(finished)
    run = (await receiver.client.get(progress, headers=BEARER)).json()
    assert (run["total"], run["examined"], run["queued"], run["fraction"]) == (5, 5, 5, 1.0)
    assert query(url, "SELECT state, attempts FROM deliveries GROUP BY 1, 2") == [("pending", 0)]
    page = await receiver.client.get(receiver.url + started.headers["location"], headers=BEARER)
    assert "5 of 5 gone through, 5 queued again" in page.text
    assert scalar(url, "SELECT detail ->> 'matching' FROM audit_log WHERE action = 'deliveries.replay'") == "5"


async def test_the_overview_counts_webhooks_by_outcome_per_minute(database_url: str, tmp_path: Path) -> None:
    async with running(settings_for(database_url, tmp_path, console_token=TOKEN)) as receiver:
        tally = outcomes.Tally()
        body = doitong_body("job_" + uuid.uuid4().hex[:8], "completed")
        for _ in range(2):
            await receiver.post(body)  # accepted, then a duplicate
        await receiver.post(body, secret="not-the-secret-at-all")
        await receiver.post(b"[]")
        counts = tally.take()
        assert tally.take() == {}  # taken once
        engine = db.create_engine(database_url, pool_size=1)
        try:
            async with db.begin(engine) as conn:
                raw = await db.driver_connection(conn)
                now = datetime.now(UTC)
                await outcomes.add(raw, counts, now)
                await outcomes.add(raw, {("default", "accepted"): 2}, now)  # another process, same minute
                buckets = await outcomes.series(raw, now - timedelta(minutes=2), timedelta(minutes=1))
        finally:
            await engine.dispose()
    assert sum(b.counts.get("accepted", 0) for b in buckets) == 3
    totals = {group: sum(b.counts.get(group, 0) for b in buckets) for group in outcomes.GROUPS}
    assert totals == {"accepted": 3, "duplicate": 1, "rejected signature": 1, "invalid": 1, "other": 0}
    assert len(buckets) in (2, 3)  # every minute of the window, empty ones included


async def test_the_overview_counts_the_hours_jobs_by_status_and_service(receiver: Receiver) -> None:
    """From job_minutes, which the triggers on jobs keep: a job that moves on moves in the table."""
    first, second = ("job_" + uuid.uuid4().hex[:8] for _ in range(2))
    for body in (
        doitong_body(first, "processing", service="kling"),
        doitong_body(second, "processing"),
        doitong_body(second, "completed"),
    ):
        assert (await receiver.post(body)).status_code == 200
    answer = await receiver.client.get(receiver.url + "/console/overview/live", headers=BEARER)
    assert answer.status_code == 200
    table = answer.text[answer.text.index('<thead><tr><th scope="col">Status') :]
    cells = r'<td class="num[^"]*">([^<]*)</td>'
    rows = {
        re.sub(r"<[^>]+>|[^a-z]", "", found.group(1).lower()): re.findall(cells, found.group(2))
        for found in re.finditer(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table, re.S)
    }
    # Columns: hedra, kling (one job each; ties keep the query's order), then All.
    assert sorted(rows["processing"][:2]) == ["0", "1"] and rows["processing"][2] == "1"
    assert sorted(rows["completed"][:2]) == ["0", "1"] and rows["completed"][2] == "1"
    assert rows["all"] == ["1", "1", "2"]


async def test_the_jobs_page_pages_with_the_apis_cursors(receiver: Receiver) -> None:
    url = receiver.settings.database_url or ""
    for n in range(55):
        await receiver.post(doitong_body(f"job_page_{n:03d}", "processing"))
    execute(url, "UPDATE jobs SET client_reference = 'order-7' WHERE id = 'job_page_007'")
    first = await receiver.client.get(receiver.url + "/console/jobs", headers=BEARER)
    assert first.text.count('href="/console/jobs/job_page_') == 50
    found = re.search(r'href="(/console/jobs\?cursor=[^"]+)"', first.text)
    assert found is not None
    second = await receiver.client.get(receiver.url + found.group(1).replace("&amp;", "&"), headers=BEARER)
    assert second.text.count('href="/console/jobs/job_page_') == 5 and "job_page_000" in second.text
    by_reference = await receiver.client.get(receiver.url + "/console/jobs?ref=order-7", headers=BEARER)
    assert by_reference.text.count('href="/console/jobs/job_page_') == 1 and "job_page_007" in by_reference.text
    bad = await receiver.client.get(receiver.url + "/console/jobs?cursor=nonsense", headers=BEARER)
    assert bad.status_code == 400 and "first page" in bad.text


async def test_pages_of_things_that_do_not_exist_are_404(receiver: Receiver) -> None:
    for path in ("/console/jobs/nope", "/console/subscribers/nope", "/console/replays/99", "/console/replays/x"):
        answer = await receiver.client.get(receiver.url + path, headers=BEARER)
        assert answer.status_code == 404, path
    await asyncio.sleep(0)


async def test_reconcile_now_asks_doitong_about_one_job(database_url: str, tmp_path: Path) -> None:
    from receiver.jobs import submit
    from receiver.simulator import Account, SimulatorConfig
    from receiver.simulator import running as simulating
    from tests.support import SECRET

    config = SimulatorConfig(
        accounts=(Account("sk_test"),), webhook_secret=SECRET, latency=0.2, drop_rate=1.0, retry_base=0.05
    )
    async with simulating(config) as (simulator, api_url):
        base = settings_for(database_url, tmp_path, console_token=TOKEN, doitong_api_url=api_url)
        async with running(base.replace(doitong_api_key="sk_test")) as receiver:
            settings = base.replace(public_url=receiver.url, doitong_api_key="sk_test")
            job = await submit.submit(settings, text="Hello", avatar="professional-1")
            assert await simulator.wait_idle(5)  # Doitong finished it; its completed webhook was dropped
            assert scalar(database_url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "processing"
            path = receiver.url + f"/console/jobs/{job.id}"
            done = await receiver.client.post(path + "/reconcile", headers=BEARER)
            assert done.status_code == 303 and done.headers["location"].endswith("notice=reconciled-changed")
            assert scalar(database_url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "completed"
            page = await receiver.client.get(receiver.url + done.headers["location"], headers=BEARER)
            assert "Doitong reported a new status" in page.text and ">Poll<" in page.text
            again = await receiver.client.post(path + "/reconcile", headers=BEARER)
            assert again.headers["location"].endswith("notice=reconciled-final")
    assert query(database_url, "SELECT action, target, detail FROM audit_log ORDER BY id") == [
        ("job.reconcile", job.id, {"checked": 1, "changed": 1, "events": 1, "unknown": 0}),
        ("job.reconcile", job.id, {"checked": 0, "changed": 0, "events": 0, "unknown": 0}),
    ]
