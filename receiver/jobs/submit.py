"""Submitting jobs through us, as a Python API (what `receiver submit` calls).

    from receiver.jobs import submit
    job = await submit.submit(settings, text="Hello!", avatar="professional-1", voice="en-US-neural",
                              client_reference="order-42", tags={"customer": "acme"})

It calls Doitong's `generate` with `webhookUrl` = RECEIVER_PUBLIC_URL + the
endpoint path, then registers the returned job (with its credit cost) in the
same database the webhooks land in, so events carry the client reference and
tags. Registration is an upsert: a job is never recorded twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.core import db, tracing
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.inbound import endpoints
from receiver.jobs import doitong, registration


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    id: str
    status: str
    credit_cost: int | None
    webhook_url: str


def webhook_url(settings: Settings, endpoint: str = endpoints.DEFAULT) -> str:
    if not settings.public_url:
        raise ConfigError(
            "RECEIVER_PUBLIC_URL is not set; set it to the address Doitong reaches this receiver at, "
            "e.g. https://hooks.example.com"
        )
    path = "/webhooks/doitong" if endpoint == endpoints.DEFAULT else f"/webhooks/doitong/{endpoint}"
    return settings.public_url + path


def provider_client(settings: Settings, **options: float) -> doitong.DoitongClient:
    if not settings.doitong_api_key:
        raise ConfigError("DOITONG_API_KEY is not set; use the API key from your Doitong dashboard")
    return doitong.DoitongClient(settings.doitong_api_url, settings.doitong_api_key, **options)  # type: ignore[arg-type]


async def submit(
    settings: Settings,
    *,
    text: str,
    avatar: str,
    voice: str | None = None,
    service: str = "hedra",
    client_reference: str | None = None,
    tags: dict[str, str] | None = None,
    endpoint: str = endpoints.DEFAULT,
    doitong: doitong.DoitongClient | None = None,
    engine: AsyncEngine | None = None,
) -> SubmittedJob:
    """Generate a video at Doitong and register the job here. Doitong's errors are raised as
    `doitong.ProviderError` subclasses with messages fit for a person. Pass `doitong` and
    `engine` to reuse connections across many submissions."""
    if not text.strip():
        raise ConfigError("--text: say something for the avatar to speak")
    url = webhook_url(settings, endpoint)
    owned = doitong is None
    doitong = doitong or provider_client(settings)
    # With tracing on, a submission is a span whose request to Doitong carries `traceparent`.
    with tracing.span("submit", attributes={"doitong.service": service, "doitong.webhook.endpoint": endpoint}) as span:
        try:
            generated = await doitong.generate(text=text, avatar=avatar, voice=voice, service=service, webhook_url=url)
        finally:
            if owned:
                await doitong.close()
        span.set_attribute("doitong.job.id", generated.id)
        own_engine = engine is None
        engine = engine or db.create_engine(settings.require_database_url(), pool_size=1, timeout=settings.db_timeout)
        try:
            async with db.begin(engine) as conn:
                await registration.register(
                    conn,
                    registration.Registration(
                        id=generated.id,
                        service=generated.provider or service,
                        type=generated.type,
                        client_reference=client_reference,
                        tags=tags or None,
                        credit_cost=generated.credit_cost,
                        input={"text": text, "avatarId": avatar, "voice": voice},
                    ),
                )
        finally:
            if own_engine:
                await engine.dispose()
    return SubmittedJob(generated.id, generated.status, generated.credit_cost, url)
