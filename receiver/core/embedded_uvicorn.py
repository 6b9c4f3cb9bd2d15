"""uvicorn inside an event loop we already run (the publisher's /metrics, the simulator,
the demo's subscriber): the process's signals stay ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its caller."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
