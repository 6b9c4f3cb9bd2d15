"""`receiver serve`/`run` try to listen before anything starts, the way uvicorn will."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from receiver.cli.server import _check_listen
from receiver.core.config import Settings
from receiver.core.errors import ConfigError


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6(), reason="this machine has no IPv6 loopback")


@pytest.fixture
def busy_v4() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_free_port_and_port_0_pass() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    _check_listen(Settings(host="127.0.0.1", port=free))
    _check_listen(Settings(host="0.0.0.0", port=0))
    _check_listen(Settings(host="127.0.0.1", port=0), workers=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_names_the_port(busy_v4: int, workers: int) -> None:
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(ConfigError, match=r"^RECEIVER_PORT \(--port\): cannot listen on .*Address already in use"):
            _check_listen(Settings(host=host, port=busy_v4), workers=workers)


def test_a_host_that_does_not_resolve_or_is_not_ours_names_the_host() -> None:
    with pytest.raises(ConfigError, match=r"^RECEIVER_HOST \(--host\): cannot resolve 'no-such-host.invalid'"):
        _check_listen(Settings(host="no-such-host.invalid", port=0))
    with pytest.raises(ConfigError, match=r"^RECEIVER_HOST \(--host\): cannot listen on 192\.0\.2\.1:"):
        _check_listen(Settings(host="192.0.2.1", port=0))


@needs_ipv6
def test_the_ipv6_wildcard_in_one_process_does_not_collide_with_ipv4(busy_v4: int) -> None:
    # One process binds [::] v6-only (uvloop does), so a port taken on IPv4 is no obstacle.
    _check_listen(Settings(host="::", port=busy_v4))


@needs_ipv6
def test_a_port_in_use_on_ipv6_names_the_port() -> None:
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"^RECEIVER_PORT \(--port\): cannot listen on \[::1\]:"):
            _check_listen(Settings(host="::1", port=port))
