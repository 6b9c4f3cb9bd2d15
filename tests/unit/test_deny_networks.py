"""RECEIVER_DENY_NETWORKS: which addresses count as inside a denied network (#10 item 8)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from receiver.core.config import DEFAULT_DENY_NETWORKS
from receiver.outbound.sinks.http import DeniedAddress, denied, denying_socket_factory

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
LOOPBACK_V4 = (ipaddress.ip_network("127.0.0.0/8"),)
LOOPBACK_V6 = (ipaddress.ip_network("::1/128"),)
METADATA = DEFAULT_DENY_NETWORKS

# address, networks, denied?
CASES = [
    # The unspecified addresses connect to this host: denied whenever a loopback is.
    ("0.0.0.0", LOOPBACK, True),
    ("0.1.2.3", LOOPBACK, True),
    ("::", LOOPBACK, True),
    ("0.0.0.0", LOOPBACK_V6, True),
    ("::", LOOPBACK_V4, True),
    ("::ffff:0.0.0.0", LOOPBACK, True),
    ("0.0.0.0", METADATA, False),  # no loopback denied, nothing to treat it as
    ("::", (), False),
    # Loopback itself, and ::1 (which is also the IPv4-compatible form of 0.0.0.1).
    ("127.0.0.1", LOOPBACK, True),
    ("127.8.9.10", LOOPBACK, True),
    ("::1", LOOPBACK, True),
    ("::1", LOOPBACK_V4, True),
    # Every IPv6 form that embeds 169.254.169.254 is the metadata service under the default list.
    ("169.254.169.254", METADATA, True),
    ("::ffff:169.254.169.254", METADATA, True),  # IPv4-mapped
    ("::169.254.169.254", METADATA, True),  # IPv4-compatible
    ("::ffff:0:169.254.169.254", METADATA, True),  # IPv4-translated (SIIT)
    ("64:ff9b::a9fe:a9fe", METADATA, True),  # NAT64 well-known prefix
    ("64:ff9b::169.254.169.254", METADATA, True),
    ("64:ff9b:1::a9fe:a9fe", METADATA, True),  # local-use NAT64, /96 layout
    ("64:ff9b:1:a9fe:a9:fe00::", METADATA, True),  # local-use NAT64, /48 layout (bits 64-71 skipped)
    ("64:ff9b:1:ff00:a9:fea9:fe00:0", METADATA, True),  # local-use NAT64, /64 layout
    ("2002:a9fe:a9fe::1", METADATA, True),  # 6to4
    ("2001:0:4136:e378:8000:63bf:5601:5601", METADATA, True),  # Teredo client 169.254.169.254 (inverted)
    ("2001:0:a9fe:a9fe:8000:63bf:3fff:fdd2", METADATA, True),  # Teredo server 169.254.169.254
    ("2001:db8::5efe:a9fe:a9fe", METADATA, True),  # ISATAP interface id
    ("fe80::1%eth0", METADATA, True),
    ("fd00:ec2::254", METADATA, True),
    # Embedded loopback in the same forms.
    ("::ffff:127.0.0.1", LOOPBACK, True),
    ("::127.0.0.1", LOOPBACK, True),
    ("64:ff9b::7f00:1", LOOPBACK, True),
    ("2002:7f00:1::", LOOPBACK, True),
    # What stays allowed.
    ("93.184.216.34", METADATA, False),
    ("2606:2800:220:1:248:1893:25c8:1946", METADATA, False),
    ("64:ff9b::5db8:d822", METADATA, False),  # NAT64 of 93.184.216.34
    ("2002:5db8:d822::1", METADATA, False),
    ("127.0.0.1", METADATA, False),
    ("example.com", METADATA, False),  # names are checked after resolution
    ("", LOOPBACK, False),
]


@pytest.mark.parametrize(("address", "networks", "expected"), CASES)
def test_denied(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], expected: bool
) -> None:
    assert denied(address, networks) is expected


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "127.0.0.1", "::ffff:127.0.0.1"])
def test_the_socket_factory_refuses_a_denied_address_before_any_socket_exists(address: str) -> None:
    make = denying_socket_factory(LOOPBACK)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with pytest.raises(DeniedAddress, match="denied"):
        make((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 80)))


def test_the_socket_factory_makes_a_socket_for_an_allowed_address() -> None:
    make = denying_socket_factory(METADATA)
    sock = make((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)))
    try:
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()
