"""What the benchmarks send: Doitong webhook bodies (~600 bytes, each for a distinct job, so every
one is a first delivery), signed ahead of time into a file of `sha256=<hex> <json>` lines that
wrk's Lua script and the Python load generators read, and the secrets the systems are given.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from receiver.inbound.signatures import sign

WEBHOOK_PATH = "/webhooks/doitong"
_BASE = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ingest_document(i: int, nonce: str) -> dict[str, Any]:
    """Job i of bench/ingest.py: times, URL signature and duration vary from job to job."""
    job_id = f"hedra-{nonce}-{i:08d}"
    created = _BASE + timedelta(seconds=i % 86_400)
    completed = created + timedelta(seconds=37, milliseconds=i % 1000)
    stamp = created.strftime("%Y%m%dT%H%M%SZ")
    return {
        "id": job_id,
        "status": "completed",
        "url": (
            f"https://cdn.doitong-outputs.example/outputs/hedra/{job_id}/hedra-avatar-1280x720-h264.mp4"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={stamp}&X-Amz-Expires=604800&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={secrets.token_hex(32)}"
        ),
        "service": "hedra",
        "createdAt": _iso(created),
        "completedAt": _iso(completed),
        "metadata": {"duration": 12.48 + (i % 97) / 10, "width": 1280, "height": 720},
    }


def publish_document(i: int, nonce: str) -> dict[str, Any]:
    """Job i of bench/publish.py: the same job, URL and times as the events `_publish_drain.py`
    creates in SQL and procrastinate_baseline.py defers."""
    job_id = f"bench-{nonce}-{i:08d}"
    created = _BASE + timedelta(seconds=i % 86_400)
    return {
        "id": job_id,
        "status": "completed",
        "url": (
            f"https://cdn.doitong-outputs.example/outputs/hedra/{job_id}/hedra-avatar-1280x720-h264.mp4"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250601"
            "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250601T120000Z&X-Amz-Expires=604800"
            f"&X-Amz-SignedHeaders=host&X-Amz-Signature={hashlib.sha256(job_id.encode()).hexdigest()}"
        ),
        "service": "hedra",
        "createdAt": _iso(created),
        "completedAt": _iso(created + timedelta(seconds=37.5)),
        "metadata": {"duration": 12.48, "width": 1280, "height": 720},
    }


def write(path: Path, documents: Iterable[dict[str, Any]], secret: str) -> float:
    """Write each document signed, one per line: `sha256=<hex> <json>`. Returns the mean body size."""
    total = count = 0
    with path.open("wb") as out:
        for document in documents:
            body = orjson.dumps(document)
            total += len(body)
            count += 1
            out.write(sign(secret, body).encode() + b" " + body + b"\n")
    return total / count if count else 0.0


def signed_requests(bodies: Path, port: int) -> list[bytes]:
    """Whole HTTP/1.1 requests for the body file's lines (`sha256=<hex> <json>`), ready to write."""
    head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n".encode()
    requests: list[bytes] = []
    with bodies.open("rb") as handle:
        for line in handle:
            signature, _, body = line.rstrip(b"\n").partition(b" ")
            requests.append(
                head + b"X-Doitong-Signature: " + signature + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
    return requests


def webhook_secret() -> str:
    """DOITONG_WEBHOOK_SECRET for a run."""
    return "whsec_bench_" + secrets.token_urlsafe(18)


def subscriber_secret() -> str:
    """A Standard Webhooks secret for the subscriber (`whsec_` + base64 of 24 bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def master_key() -> str:
    """RECEIVER_MASTER_KEY for a run."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
