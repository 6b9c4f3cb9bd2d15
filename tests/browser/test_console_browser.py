"""The console as an operator uses it, in Chromium: signing in, finding a job and reading its
timeline, replaying a dead delivery, disabling and enabling a subscriber, rotating its secret,
the overview updating by itself, outside text shown as text, and a forged POST refused.
Every page is saved as a screenshot at desktop and phone size (see conftest.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import API_TOKEN, DESKTOP, PHONE, TOKEN, Stack
from tests.support import doitong_body, execute, scalar

pytestmark = pytest.mark.slow


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A desktop page, signed in through the link `receiver run` prints (token in the fragment)."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    missing: list[str] = []
    page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    page.goto(f"{stack.url}/console/login#token={TOKEN}")
    page.wait_for_url(f"{stack.url}/console/")
    assert "token" not in page.url
    yield page
    context.close()
    # No script error, no CSP violation (Chromium reports those on the console), nothing missing.
    assert errors == []
    assert missing == []


def _job(stack: Stack, job_id: str, *statuses: str, **fields: Any) -> None:
    for status in statuses:
        answer = stack.run(stack.receiver.post(doitong_body(job_id, status, **fields)))
        assert answer.status_code == 200


def _register(stack: Stack, job_id: str, reference: str) -> None:
    answer = stack.run(
        stack.receiver.client.post(
            stack.url + "/v1/jobs",
            json={"id": job_id, "service": "hedra", "client_reference": reference, "tags": {"customer": "acme"}},
            headers={"authorization": f"Bearer {API_TOKEN}"},
        )
    )
    assert answer.status_code == 201


def _section(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Console sections").get_by_role("link", name=name).click()


def _shoot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}-desktop.png"), full_page=True)


def test_sign_in_with_the_form_and_out(browser: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(stack.url + "/console/jobs")
    assert page.url.startswith(stack.url + "/console/login?next=")
    _shoot(page, screenshots, "login")
    page.get_by_label("Console token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the console token")
    page.get_by_label("Console token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.url + "/console/jobs")  # back where it was going
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "receiver_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/console/login")
    page.goto(stack.url + "/console/")
    assert page.url.startswith(stack.url + "/console/login")
    context.close()


def test_find_a_job_by_client_reference_and_see_the_duplicate_in_its_timeline(
    page: Any, stack: Stack, screenshots: Path
) -> None:
    expect = _expect()
    job_id = "job_" + uuid.uuid4().hex[:10]
    _register(stack, job_id, "order-4711")
    _job(stack, job_id, "processing", "processing", "completed")  # the second is a replay
    _section(page, "Jobs")
    page.get_by_label("Client reference").fill("order-4711")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table.rows tbody tr")
    expect(rows).to_have_count(1)
    _shoot(page, screenshots, "jobs")
    rows.get_by_role("link", name=job_id).click()
    expect(page.get_by_role("heading", name=job_id)).to_be_visible()
    replayed = page.locator(".tl-item", has=page.locator(".duplicate"))
    expect(replayed).to_have_count(1)
    expect(replayed).to_contain_text("duplicate")
    expect(replayed).to_contain_text("Came 1 more time under the same idempotency key (replays, not applied)")
    expect(replayed.locator(".tl-status")).to_contain_text("processing")
    expect(page.locator(".tl-item")).to_have_count(3)  # registration, processing, completed
    expect(page.locator(".delivery .badge.ds-delivered").first).to_be_visible()
    replayed.get_by_text("Payload as received").click()
    expect(replayed.locator("pre.payload").first).to_contain_text('"status": "processing"')
    _shoot(page, screenshots, "job")


def test_a_dead_delivery_is_replayed_and_becomes_delivered(page: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    job_id = "job_" + uuid.uuid4().hex[:10]
    _job(stack, job_id, "completed")

    def delivered() -> bool:
        return scalar(stack.database_url, "SELECT state FROM deliveries WHERE job_id = %s", (job_id,)) == "delivered"

    page.wait_for_function("() => true")  # let the publisher deliver it first
    for _ in range(100):
        if delivered():
            break
        page.wait_for_timeout(100)
    # What a subscriber that failed for two days leaves behind.
    execute(
        stack.database_url,
        "UPDATE deliveries SET state = 'dead', attempts = 11, last_status = 503, last_error = 'HTTP 503',"
        " delivered_at = NULL WHERE job_id = %s",
        (job_id,),
    )
    _section(page, "Deliveries")
    row = page.locator("tbody tr", has=page.get_by_role("link", name=job_id))
    expect(row.locator(".badge")).to_have_text(re.compile("dead"))
    _shoot(page, screenshots, "deliveries")
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Replay selected (1)").click()
    expect(page.get_by_role("status")).to_contain_text("1 deliveries queued again")
    page.get_by_text("Delivered", exact=True).click()  # the state filter
    page.get_by_label("Job id").fill(job_id)
    page.get_by_role("button", name="Show").click()
    for _ in range(50):  # the publisher sends it again; the page shows it once reloaded
        if page.locator("tbody tr .badge.ds-delivered").count():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator("tbody tr .badge.ds-delivered")).to_have_count(1)
    page.goto(f"{stack.url}/console/jobs/{job_id}")
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts.last).to_contain_text("delivered")


def test_disable_and_enable_a_subscriber(page: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    _section(page, "Subscribers")
    _shoot(page, screenshots, "subscribers")
    page.get_by_role("link", name=stack.subscription_id).click()
    page.get_by_label("Disable, with a reason").fill("maintenance until 14:00")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text("Subscriber disabled")
    expect(page.locator(".page-head .badge")).to_have_text(re.compile("disabled"))
    expect(page.get_by_text("maintenance until 14:00")).to_be_visible()
    assert scalar(stack.database_url, "SELECT state FROM subscriptions WHERE id = %s", (stack.subscription_id,)) == (
        "disabled"
    )
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status")).to_contain_text("Subscriber enabled")
    expect(page.locator(".page-head .badge")).to_have_text(re.compile("enabled"))
    _section(page, "Audit log")
    expect(page.locator("tbody tr").first).to_contain_text("subscriber.enable")
    expect(page.locator("tbody tr").nth(1)).to_contain_text("subscriber.disable")
    _shoot(page, screenshots, "audit")


def test_rotate_a_secret(page: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    page.goto(f"{stack.url}/console/subscribers/{stack.subscription_id}")
    page.get_by_label("Rotate the signing secret").select_option("1h")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate secret").click()
    secret = page.get_by_role("textbox", name="New signing secret")
    expect(secret).to_have_value(re.compile(r"^whsec_"))
    value = secret.input_value()
    _shoot(page, screenshots, "subscriber-rotated")
    page.goto(f"{stack.url}/console/subscribers/{stack.subscription_id}")
    assert value not in page.content()  # shown once
    _shoot(page, screenshots, "subscriber")


def test_the_overview_updates_when_a_webhook_arrives(page: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    page.goto(stack.url + "/console/")
    page.evaluate("window.stillTheSamePage = true")
    service = "live-" + uuid.uuid4().hex[:6]
    total = page.get_by_test_id("webhooks-total")
    before = int(total.inner_text().replace("\u202f", ""))
    _job(stack, "job_" + uuid.uuid4().hex[:10], "completed", service=service)
    # Jobs are read at once; the webhook counts are added every 2 s: both within a refresh or two.
    expect(page.locator("#live")).to_contain_text(service, timeout=15_000)
    expect(total).not_to_have_text(str(before), timeout=15_000)
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    _shoot(page, screenshots, "overview")


def test_a_script_status_renders_as_text(page: Any, stack: Stack) -> None:
    expect = _expect()
    job_id = "<script>window.pwned = 1</script>"
    status = '<img src=x onerror="window.pwned = 2">'
    _job(stack, job_id, status, metadata={"html": "<b onmouseover='window.pwned = 3'>bold</b>"})
    page.goto(stack.url + "/console/jobs")
    expect(page.get_by_role("link", name=job_id)).to_be_visible()
    expect(page.locator("table.rows").get_by_text(status).first).to_be_visible()
    page.get_by_role("link", name=job_id).click()
    expect(page.get_by_role("heading", name=job_id)).to_be_visible()
    page.get_by_text("Metadata", exact=True).click()
    expect(page.locator("pre.payload").first).to_contain_text("<b onmouseover=")
    page.goto(stack.url + "/console/")
    assert page.evaluate("window.pwned") is None
    assert page.locator("img[src=x], b[onmouseover]").count() == 0


def test_a_post_without_the_csrf_token_is_refused(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.url}/console/subscribers/{stack.subscription_id}")
    # A form as a forger would post it: the session's cookie, but no CSRF token.
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach((field) => field.remove())")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.url.endswith("/disable")) as answer:
        page.get_by_role("button", name="Disable").click()
    assert answer.value.status == 403
    assert "CSRF token missing or wrong" in page.content()
    assert scalar(stack.database_url, "SELECT state FROM subscriptions WHERE id = %s", (stack.subscription_id,)) == (
        "enabled"
    )
    status = page.evaluate(
        """async (path) => (await fetch(path, {method: 'POST', body: new URLSearchParams({reason: 'x'})})).status""",
        f"/console/subscribers/{stack.subscription_id}/disable",
    )
    assert status == 403


def test_every_page_fits_a_phone_and_is_keyboard_navigable(browser: Any, stack: Stack, screenshots: Path) -> None:
    expect = _expect()
    job_id = scalar(stack.database_url, "SELECT id FROM jobs WHERE client_reference = 'order-4711'") or "none"
    pages = {
        "overview": "/console/",
        "jobs": "/console/jobs",
        "job": f"/console/jobs/{job_id}",
        "deliveries": "/console/deliveries?state=all",
        "subscribers": "/console/subscribers",
        "subscriber": f"/console/subscribers/{stack.subscription_id}",
        "endpoints": "/console/endpoints",
        "audit": "/console/audit",
    }
    for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(f"{stack.url}/console/login#token={TOKEN}")
        page.wait_for_url(f"{stack.url}/console/")
        for name, path in pages.items():
            page.goto(stack.url + path)
            # Nothing wider than the window: tables scroll inside their own box.
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} is {overflow}px wider than a {size} window"
            if size == "phone" or name == "endpoints":
                page.screenshot(path=str(screenshots / f"{name}-{size}.png"), full_page=True)
        # The first Tab reaches the skip link, which shows itself and moves focus to the content.
        page.goto(stack.url + "/console/jobs")
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        expect(skip).to_be_in_viewport()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('main') !== null")
        context.close()
