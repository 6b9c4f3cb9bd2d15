"""Webhooks refused for their signature, counted in memory per endpoint and minute.

A 401 must cost the receiver as little as it can: anyone can send one, without the secret. So
the handler only adds one here (a dict update), and a background task of the server adds the
counts to the signature_failures table every few seconds with one upsert
(receiver/outbound/forgeries.py), where a burst is noticed across every server process.
"""

from __future__ import annotations

import time

Counts = dict[tuple[str, int], int]  # (endpoint, minute as Unix seconds) -> failures


class SignatureFailures:
    def __init__(self) -> None:
        self._counts: Counts = {}

    def count(self, endpoint: str) -> None:
        """One request on `endpoint` refused for its signature, now. `endpoint` is a configured
        name (an unknown one is a 404 before any signature is checked), so keys stay few."""
        key = (endpoint, int(time.time()) // 60 * 60)
        self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> Counts:
        """Everything counted since the last take, which starts again from nothing."""
        counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: Counts) -> None:
        """Counts a flush could not write: they go out with the next one."""
        for key, failures in counts.items():
            self._counts[key] = self._counts.get(key, 0) + failures
