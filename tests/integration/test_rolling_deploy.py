"""Rolling deploys: the next release's `receiver migrate` runs while this release's processes still
serve. They must stay ready and keep working on the newer schema, and must not try to migrate it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from receiver.cli import server
from receiver.core import migrate
from tests.support import doitong_body, execute, running, scalar, settings_for

NEXT = "9999_next_release"  # a revision this code does not carry, as the next release's would be


def _as_if_the_next_release_migrated(database_url: str) -> None:
    execute(database_url, "UPDATE alembic_version SET version_num = %s", (NEXT,))


def test_standing_of_a_database_against_this_code() -> None:
    head = migrate.head_revision()
    assert migrate.standing(head) == "at_head"
    assert migrate.standing(None) == "behind"
    assert migrate.standing("0001") == "behind"
    assert migrate.standing(NEXT) == "ahead"


async def test_readyz_is_ready_with_a_note_when_the_schema_is_newer(database_url: str, tmp_path: Path) -> None:
    _as_if_the_next_release_migrated(database_url)
    async with running(settings_for(database_url, tmp_path)) as receiver:
        ready = await receiver.client.get(receiver.url + "/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["revision"] == NEXT
        assert f"newer than this release's {migrate.head_revision()}" in body["note"]
        # And this release still does its work on that schema.
        assert (await receiver.post(doitong_body("job-rolling"))).status_code == 200
    assert scalar(database_url, "SELECT status FROM jobs WHERE id = 'job-rolling'") == "completed"


async def test_readyz_at_head_has_no_note(database_url: str, tmp_path: Path) -> None:
    async with running(settings_for(database_url, tmp_path)) as receiver:
        ready = (await receiver.client.get(receiver.url + "/readyz")).json()
        assert ready == {"status": "ready", "revision": migrate.head_revision()}


def test_migrate_leaves_a_newer_schema_alone(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _as_if_the_next_release_migrated(database_url)
    assert migrate.upgrade(database_url) == NEXT
    assert server.cmd_migrate(settings_for(database_url, tmp_path), argparse.Namespace()) == 0
    assert capsys.readouterr().out == f"schema at {NEXT}\n"
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == NEXT


def test_migrate_reports_the_revision_it_reached(empty_database_url: str) -> None:
    assert migrate.upgrade(empty_database_url) == migrate.head_revision()
    assert migrate.upgrade(empty_database_url) == migrate.head_revision()
