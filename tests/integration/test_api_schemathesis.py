"""/openapi.json and the app agree: schemathesis with every check it has, against a real server.

The property-based test in test_api.py leaves out "schema-valid data is accepted"; this one runs
the command-line tool with `--checks all` and all four phases (examples, coverage: every boundary
and undocumented method, fuzzing, stateful), bounded by --max-time.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from receiver.core.config import Settings
from tests import support
from tests.support import settings_for

TOKEN = "test-api-token-0123456789"
SECONDS = 40
# `cursor` is opaque: a string of the documented shape that this API never issued is a 400 by
# design, and the only one the positive-data check may see.
CURSOR_REFUSED = "`cursor` is not one this API returned"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The app behind uvicorn in a thread of its own: the schemathesis process calls it."""
    settings: Settings = settings_for(database_url, tmp_path, api_token=TOKEN)
    with support.running_in_a_thread(settings) as url:
        yield url


@pytest.mark.slow
def test_schemathesis_with_every_check_finds_nothing(served: str, tmp_path: Path) -> None:
    report = tmp_path / "events.ndjson"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            served + "/openapi.json",
            "--checks=all",
            "--phases=examples,coverage,fuzzing,stateful",
            f"--max-time={SECONDS}",
            "--workers=1",
            "--seed=10",
            "--generation-database=none",
            "--continue-on-failure",  # every failure in the report, not the first of each operation
            f"--header=Authorization: Bearer {TOKEN}",
            "--no-color",
            "--report=ndjson",
            f"--report-ndjson-path={report}",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS * 4,
        cwd=tmp_path,
    )
    found, cursors, cases = _failures(report)
    assert not found, "\n".join(found) + "\n" + result.stdout[-8000:]
    assert result.returncode == 0 or cursors, result.stdout[-8000:] + result.stderr[-4000:]
    assert cases > 500, result.stdout[-4000:]  # it did run


def _failures(report: Path) -> tuple[list[str], int, int]:
    """Every failed check in the event stream but refused cursors; how many of those; how many cases."""
    found: list[str] = []
    cursors = cases = 0
    for line in report.read_text().splitlines():
        event = orjson.loads(line)
        if "ScenarioFinished" not in event:
            continue
        recorder = event["ScenarioFinished"].get("recorder") or {}
        cases += len(recorder.get("cases") or {})
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                case = recorder["cases"][case_id]["value"]
                exchange = recorder["interactions"].get(case_id) or {}
                answer = (exchange.get("response") or {}).get("content") or {}
                body = base64.b64decode(answer["$base64"]) if "$base64" in answer else b""
                if (
                    check["name"] == "positive_data_acceptance"
                    and "cursor" in (case.get("query") or {})
                    and CURSOR_REFUSED.encode() in body
                ):
                    cursors += 1
                    continue
                request = exchange.get("request") or {}
                found.append(f"{check['name']}: {request.get('method')} {request.get('uri')} -> {body[:300]!r}")
    return found, cursors, cases
