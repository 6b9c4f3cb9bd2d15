"""What a running server holds: settings, pools, the secret cache, metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from receiver.core.config import Settings
from receiver.core.metrics import Exposition
from receiver.core.notify import Notifier
from receiver.inbound.endpoints import SecretCache


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
    try:
        body = orjson.dumps(content)
    except TypeError:
        # orjson stops at 64-bit integers; stored free-form JSON (a job's `input`) may hold bigger ones.
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type="application/json")
