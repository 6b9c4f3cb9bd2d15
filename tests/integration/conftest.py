from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import Receiver, running, settings_for


@pytest.fixture
async def receiver(database_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    async with running(settings_for(database_url, tmp_path)) as server:
        yield server
