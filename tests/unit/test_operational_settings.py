"""What a subscription may ask for (`--events`), and RECEIVER_FORGED_BURST / RECEIVER_UNRESOLVED_AFTER."""

from __future__ import annotations

from datetime import timedelta

import pytest

from receiver.core.config import Burst, Settings
from receiver.core.errors import ConfigError
from receiver.outbound import operational, subscriptions


def test_event_types_take_wildcards_and_exact_operational_types() -> None:
    assert subscriptions.check_event_types(None) is None
    assert subscriptions.check_event_types(["operational.*"]) == ["operational.*"]
    assert subscriptions.check_event_types(["job.*", "operational.delivery_dead", "job.*"]) == [
        "job.*",
        "operational.delivery_dead",
    ]
    assert subscriptions.check_event_types(list(operational.TYPES)) == sorted(operational.TYPES)


@pytest.mark.parametrize(
    ("event_type", "words"),
    [
        ("operational.dead", "is not an operational event type; use operational.* or one of"),
        ("operational.", "is not an operational event type"),
        ("operational.Delivery_Dead", "is not an operational event type"),
        ("job.", "is not an event type"),
        ("job.**", "is not an event type"),
        ("*", "is not an event type"),
        ("ops.*", "is not an event type; use e.g. job.completed,job.failed, job.* or operational.*"),
    ],
)
def test_unknown_event_types_are_refused(event_type: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"^--events: ") as refused:
        subscriptions.check_event_types(["job.completed", event_type])
    assert words in str(refused.value)


def test_forged_burst_setting() -> None:
    assert Settings.from_env({}).forged_burst == Burst(20, timedelta(minutes=5))
    assert Settings.from_env({"RECEIVER_FORGED_BURST": "100/1h"}).forged_burst == Burst(100, timedelta(hours=1))
    assert Settings.from_env({"RECEIVER_FORGED_BURST": "off"}).forged_burst is None
    assert Settings.from_env({"RECEIVER_FORGED_BURST": "0"}).forged_burst is None
    for bad in ("20", "x/5m", "-1/5m", "20/", "20/30s", "20/90s", "20/2d", "20/5q", "\uff120/5m"):
        with pytest.raises(ConfigError, match=r"^RECEIVER_FORGED_BURST: "):
            Settings.from_env({"RECEIVER_FORGED_BURST": bad})


def test_unresolved_after_setting() -> None:
    assert Settings.from_env({}).unresolved_after == timedelta(hours=1)
    assert Settings.from_env({"RECEIVER_UNRESOLVED_AFTER": "3h"}).unresolved_after == timedelta(hours=3)
    with pytest.raises(ConfigError, match=r"^RECEIVER_UNRESOLVED_AFTER"):
        Settings.from_env({"RECEIVER_UNRESOLVED_AFTER": "soon"})
