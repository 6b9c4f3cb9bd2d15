from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from receiver.core.config import Settings
from receiver.outbound.publisher import Publisher
from receiver.outbound.sinks.http import denied, retry_after_seconds

METADATA = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]


def test_denied_networks_cover_ipv4_mapped_ipv6() -> None:
    assert denied("169.254.169.254", METADATA)
    assert denied("::ffff:169.254.169.254", METADATA)
    assert denied("fe80::1%eth0", METADATA)
    assert not denied("93.184.216.34", METADATA)
    assert not denied("example.com", METADATA)  # names are checked after resolution


async def test_retry_after_never_shortens_the_schedule() -> None:
    schedule = (timedelta(seconds=30), timedelta(minutes=2))
    publisher = Publisher(Settings(database_url="postgresql://x@127.0.0.1/x", retry_schedule=schedule), b"k" * 32)
    try:
        for attempt, base in ((1, 30.0), (2, 120.0)):
            for retry_after in (None, 0.0, 1.0):
                wait = publisher._wait_before_retry(attempt, retry_after).total_seconds()
                assert base * 0.8 <= wait <= base * 1.2, (attempt, retry_after, wait)
        assert publisher._wait_before_retry(1, 600.0).total_seconds() == 600.0  # a longer ask is honoured
    finally:
        await publisher.engine.dispose()


def test_retry_after_takes_ascii_digits_only() -> None:
    now = datetime.now(UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("\u00b2", now) is None  # '²'.isdigit() is true; int() and float() refuse it
    assert retry_after_seconds("\u0661", now) is None  # an Arabic-Indic digit is no HTTP delta-seconds
