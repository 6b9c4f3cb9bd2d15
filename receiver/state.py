"""What a running server holds: settings, pools, the secret cache, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from receiver.config import Settings
from receiver.endpoints import SecretCache
from receiver.metrics import Exposition
from receiver.notify import Notifier


@dataclass
class AppState:
    settings: Settings
    secrets: SecretCache
    pool: AsyncConnectionPool
    engine: AsyncEngine
    exposition: Exposition
    head_revision: str
    master_key: bytes
    notifier: Notifier


def json_response(content: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")
