"""One simulated job and the documented shapes it is rendered in.

A job's status is derived from the time: `processing` until `latency` seconds
after the request, then its outcome (`completed`, or `failed` at the failure
rate). So `avatar(id)` tells the truth even when a webhook was dropped or the
sender is not running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import orjson

from receiver.simulator import pricing
from receiver.simulator.inputs import SERVICE, TYPE, GenerateInput

Status = Literal["processing", "completed", "failed"]
Outcome = Literal["completed", "failed"]
WIDTH, HEIGHT = 1280, 720
CDN = "https://cdn.doitong.com/outputs"


class Metadata(TypedDict):
    duration: float | None
    width: int | None
    height: int | None


class WebhookBody(TypedDict):
    """The documented webhook payload, keys in the documented order."""

    id: str
    status: Status
    url: str | None
    service: str
    createdAt: str
    completedAt: str | None
    metadata: Metadata


@dataclass(frozen=True)
class Job:
    """A job as accepted, with every random decision about it already taken."""

    id: str
    account: str  # the API key that created it; other keys cannot see it
    input: GenerateInput
    cost: int
    created_at: float  # wall clock, Unix seconds
    latency: float
    due: float  # time.monotonic() when it finishes
    outcome: Outcome
    reorder: bool  # its processing webhook goes out after the terminal one
    drop: bool  # its terminal webhook is never sent

    def status(self, now: float | None = None) -> Status:
        """`processing` until due, then the outcome (`now` is time.monotonic())."""
        return self.outcome if self.finished(now) else "processing"

    def finished(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.due

    @property
    def completed_at(self) -> float:
        return self.created_at + self.latency

    @property
    def url(self) -> str:
        """Where the finished video is (only shown once completed)."""
        return f"{CDN}/{self.id}.mp4"

    def webhook(self, status: Status) -> bytes:
        """The raw webhook body announcing `status` (exactly these bytes are signed)."""
        completed = status == "completed"
        body: WebhookBody = {
            "id": self.id,
            "status": status,
            "url": self.url if completed else None,
            "service": SERVICE,
            "createdAt": timestamp(self.created_at),
            "completedAt": None if status == "processing" else timestamp(self.completed_at),
            "metadata": {
                "duration": pricing.duration(self.input.text) if completed else None,
                "width": WIDTH if completed else None,
                "height": HEIGHT if completed else None,
            },
        }
        return orjson.dumps(body)

    def avatar(self, now: float | None = None) -> dict[str, Any]:
        """`avatar(id)` and `GET /v1/avatar/{id}`: the documented status shape."""
        status = self.status(now)
        return {
            "id": self.id,
            "status": status,
            "url": self.url if status == "completed" else None,
            "webhookUrl": self.input.webhook_url,
            "duration": pricing.duration(self.input.text) if status == "completed" else None,
            "createdAt": timestamp(self.created_at),
        }

    def accepted(self) -> dict[str, Any]:
        """`POST /v1/avatar`: the documented success response."""
        return {
            "id": self.id,
            "status": "processing",
            "url": None,
            "webhookUrl": self.input.webhook_url,
            "createdAt": timestamp(self.created_at),
        }

    def generated(self) -> dict[str, Any]:
        """The `generate` mutation's result: every documented field."""
        return {
            "id": self.id,
            "status": "processing",
            "type": TYPE,
            "provider": SERVICE,
            "url": None,
            "metadata": {
                "avatarId": self.input.avatar_id,
                "voice": self.input.voice,
                "webhookUrl": self.input.webhook_url,
                "estimatedDuration": pricing.duration(self.input.text),
            },
            "creditCost": self.cost,
            "createdAt": timestamp(self.created_at),
        }

    def generated_alias(self) -> dict[str, Any]:
        """The JavaScript example's `generateAvatar` result (`videoUrl` instead of `url`)."""
        return {
            "id": self.id,
            "status": "processing",
            "videoUrl": None,
            "webhookUrl": self.input.webhook_url,
            "creditCost": self.cost,
            "createdAt": timestamp(self.created_at),
        }


def timestamp(seconds: float) -> str:
    """ISO-8601 UTC with `Z`, to the second like the documentation's examples."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
