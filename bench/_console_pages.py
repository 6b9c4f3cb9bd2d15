"""bench/console.py's pages: which console pages and searches are timed, with ids taken from the
filled database (a busy job, a client reference, a tag, a subscriber...), their targets, and the
table of p50/p95 with PASS/FAIL.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import _console_http
import _report
import _run
import psycopg

LIVE = "/console/overview/live"  # what an open overview asks for every 5 s
PAGE_TARGET_MS = 300.0
OVERVIEW_TARGET_MS = 500.0
# The "Older" link: the jobs' cursor, or the deliveries' `before`.
_NEXT = re.compile(r'href="(/console/[^"]*[?&](?:amp;)?(?:cursor|before)=[^"]+)"')


@dataclass
class Page:
    label: str
    path: str
    target_ms: float


def samples(url: str) -> dict[str, Any]:
    """Values to search for, picked from the data the way an operator would meet them."""
    with psycopg.connect(url, autocommit=True) as conn:

        def one(statement: str) -> Any:
            row = conn.execute(statement.encode()).fetchone()
            if row is None:
                raise _run.BenchError(f"the filled database has nothing for: {statement}")
            return row[0]

        now = one("SELECT max(first_seen_at) FROM jobs")
        return {
            # a job with everything: registration, a held-back processing webhook, a redelivery under
            # a new key, replays under the same key
            "busy_job": one(
                "SELECT w.job_id FROM inbound_webhooks w WHERE w.replay_count > 0 AND w.status = 'completed' "
                "AND EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = w.job_id AND e.status = 'processing' "
                "AND NOT e.applied) "
                "AND EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = w.job_id AND e.status = 'completed' "
                "AND NOT e.applied) "
                "AND EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = w.job_id AND e.source = 'api') "
                "ORDER BY w.id DESC LIMIT 1"
            ),
            "old_job": one("SELECT id FROM jobs WHERE first_seen_at < now() - interval '20 days' LIMIT 1"),
            "client_reference": one(
                "SELECT client_reference FROM jobs WHERE client_reference IS NOT NULL "
                "AND first_seen_at < now() - interval '9 days' LIMIT 1"
            ),
            "subscriber": one("SELECT subscription_id FROM deliveries WHERE state = 'dead' LIMIT 1"),
            "failing_subscriber": one("SELECT subscription_id FROM deliveries WHERE last_status = 503 LIMIT 1"),
            "dead_job": one("SELECT job_id FROM deliveries WHERE state = 'dead' ORDER BY id DESC LIMIT 1"),
            "day_from": (now - timedelta(days=10)).replace(microsecond=0),
            "day_to": (now - timedelta(days=9)).replace(microsecond=0),
        }


def pages(s: dict[str, Any]) -> list[Page]:
    """Every page and search the issue names, each once."""

    def q(**params: str) -> str:
        return "?" + urlencode(params)

    def iso(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    job = quote(s["busy_job"], safe="")
    return [
        Page("overview", "/console/", OVERVIEW_TARGET_MS),
        Page("jobs: newest", "/console/jobs", PAGE_TARGET_MS),
        Page("jobs: by job id", "/console/jobs" + q(id=s["old_job"]), PAGE_TARGET_MS),
        Page("jobs: by client reference", "/console/jobs" + q(ref=s["client_reference"]), PAGE_TARGET_MS),
        Page("jobs: status failed", "/console/jobs" + q(status="failed"), PAGE_TARGET_MS),
        Page("jobs: status submitted", "/console/jobs" + q(status="submitted"), PAGE_TARGET_MS),
        Page("jobs: status none match", "/console/jobs" + q(status="queued"), PAGE_TARGET_MS),
        Page("jobs: service sora", "/console/jobs" + q(service="sora"), PAGE_TARGET_MS),
        Page("jobs: service none match", "/console/jobs" + q(service="nosuch"), PAGE_TARGET_MS),
        Page("jobs: tag campaign (rare)", "/console/jobs" + q(tag="campaign=c42"), PAGE_TARGET_MS),
        Page("jobs: tag team (common)", "/console/jobs" + q(tag="team=studio"), PAGE_TARGET_MS),
        Page("jobs: tag none match", "/console/jobs" + q(tag="team=nosuch"), PAGE_TARGET_MS),
        Page(
            "jobs: a day 10 days ago",
            "/console/jobs" + q(**{"from": iso(s["day_from"]), "to": iso(s["day_to"])}),
            PAGE_TARGET_MS,
        ),
        Page(
            "jobs: failed+sora in that day",
            "/console/jobs"
            + q(status="failed", service="sora", **{"from": iso(s["day_from"]), "to": iso(s["day_to"])}),
            PAGE_TARGET_MS,
        ),
        Page("jobs: page 2 (cursor)", "next:/console/jobs", PAGE_TARGET_MS),
        Page("jobs: failed, page 2", "next:/console/jobs" + q(status="failed"), PAGE_TARGET_MS),
        Page("job timeline (busy job)", f"/console/jobs/{job}", PAGE_TARGET_MS),
        Page("subscribers", "/console/subscribers", PAGE_TARGET_MS),
        Page("subscriber (with dead)", "/console/subscribers/" + quote(s["subscriber"], safe=""), PAGE_TARGET_MS),
        Page(
            "subscriber (failing now)",
            "/console/subscribers/" + quote(s["failing_subscriber"], safe=""),
            PAGE_TARGET_MS,
        ),
        Page("deliveries: dead", "/console/deliveries" + q(state="dead"), PAGE_TARGET_MS),
        Page("deliveries: dead, page 2", "next:/console/deliveries" + q(state="dead"), PAGE_TARGET_MS),
        Page("deliveries: pending", "/console/deliveries" + q(state="pending"), PAGE_TARGET_MS),
        Page("deliveries: delivered", "/console/deliveries" + q(state="delivered"), PAGE_TARGET_MS),
        Page(
            "deliveries: dead, subscriber",
            "/console/deliveries" + q(state="dead", subscriber=s["subscriber"]),
            PAGE_TARGET_MS,
        ),
        Page("deliveries: job", "/console/deliveries" + q(job=s["dead_job"]), PAGE_TARGET_MS),
        Page("deliveries: dead, job", "/console/deliveries" + q(state="dead", job=s["dead_job"]), PAGE_TARGET_MS),
        Page("endpoints", "/console/endpoints", PAGE_TARGET_MS),
    ]


def resolve(client: _console_http.Client, pages: list[Page]) -> list[Page]:
    """`next:<path>` is where the first page's "Older" link (the jobs' cursor, the deliveries'
    `before`) leads."""
    out = []
    for page in pages:
        if page.path.startswith("next:"):
            first = client.get(page.path[len("next:") :])
            found = _NEXT.search(first.body.decode(errors="replace"))
            if first.status != 200 or found is None:
                _run.log(f"{page.label}: no next link on {page.path[5:]} ({first.status}); skipped")
                continue
            page = Page(page.label, html.unescape(found.group(1)), page.target_ms)
        out.append(page)
    return out


# The console process is busy a quarter of the time at most: after a page that took t, the next
# request waits until 3t have passed (receiver/console/process.py, Paced). A person reading pages
# leaves more than that between them; so does this client, so as to time the pages, not the pause.
PAUSE_FACTOR = 3.0


def time_pages(client: _console_http.Client, pages: list[Page], requests: int) -> dict[str, _console_http.Series]:
    """Each page `requests` times after two unmeasured requests; pages in turn, so that one page's
    cache does not warm the next request of the same page only."""
    series = {page.label: _console_http.Series() for page in pages}
    for page in pages:
        for _ in range(2):
            _pause(client.get(page.path))
    for _ in range(requests):
        for page in pages:
            timed = client.get(page.path)
            series[page.label].add(timed)
            _pause(timed)
    return series


def _pause(timed: _console_http.Timed) -> None:
    time.sleep((timed.server_ms if timed.server_ms is not None else timed.client_ms) * PAUSE_FACTOR / 1000 + 0.002)


def report(pages: list[Page], series: dict[str, _console_http.Series]) -> bool:
    """The table; True when every page met its target."""
    has_server = any(s.server for s in series.values())
    header = f"{'page':<32} {'status':>8} {'KiB':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    has_cpu = any(s.cpu for s in series.values())
    if has_server:
        header += f" {'srv p95':>8}"
    if has_cpu:
        header += f" {'cpu p50':>8}"
    header += f" {'target':>7}  verdict"
    _report.print_header(header)
    ok_all = True
    for page in pages:
        s = series[page.label]
        several = len(s.statuses) > 1
        statuses = ",".join(f"{code}" + (f"x{n}" if several else "") for code, n in sorted(s.statuses.items()))
        p95 = s.p(95)
        ok = p95 <= page.target_ms and set(s.statuses) == {200}
        ok_all &= ok
        line = (
            f"{page.label:<32} {statuses:>8} {s.bytes / 1024:>6.1f} {s.p(50):>8.1f} {p95:>8.1f} {max(s.client):>8.1f}"
        )
        if has_server:
            line += f" {s.p(95, server=True):>8.1f}" if s.server else f" {'-':>8}"
        if has_cpu:
            line += f" {_report.percentile(sorted(s.cpu), 50):>8.1f}" if s.cpu else f" {'-':>8}"
        line += f" {page.target_ms:>7.0f}  {_report.verdict(ok)}"
        print(line)
    return ok_all
