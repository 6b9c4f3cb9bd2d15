"""Checking what a request asks for against the documented rules.

GraphQL's parser and validator (`schema`) already made sure that an input
has the fields and types the schema declares; what is checked here is what
the schema cannot say: the documented values (`type` AVATAR, provider/service
hedra, version hedra-1.0), non-empty text at most 2 minutes of speech, and an
absolute http(s) `webhookUrl`. The REST body (`POST /v1/avatar`) comes
straight from JSON, so its shape is checked here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from receiver.simulator import pricing
from receiver.simulator.errors import ApiError, bad_request

SERVICE = "hedra"
TYPE = "AVATAR"
VERSIONS = ("hedra-1.0",)


@dataclass(frozen=True)
class GenerateInput:
    """A validated request for one avatar video."""

    text: str
    avatar_id: str
    voice: str | None = None
    webhook_url: str | None = None
    language: str | None = None
    version: str | None = None


def rest(document: Any) -> GenerateInput:
    """The body of `POST /v1/avatar`: `{service, text, avatarId, voice, webhookUrl}`."""
    if not isinstance(document, dict):
        raise bad_request("Request body must be a JSON object")
    return avatar_generation_input(document, where="")


def generate_input(value: Any) -> GenerateInput:
    """The documented `GenerateInput`: `{type, provider, input: {text, avatarId}, options: {voice, …}}`."""
    if not isinstance(value, dict):
        raise bad_request("`$input` is required (a GenerateInput object)")
    if value.get("type") != TYPE:
        raise bad_request(f"input.type must be {TYPE!r}")
    _service(value.get("provider"), "input.provider")
    inner = value.get("input")
    if not isinstance(inner, dict):
        raise bad_request("input.input is required: {text, avatarId}")
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise bad_request("input.options must be an object")
    webhook = value.get("webhookUrl")
    if webhook is None:
        webhook = options.get("webhookUrl")
    return _checked(
        text=inner.get("text"),
        avatar_id=inner.get("avatarId"),
        voice=options.get("voice"),
        webhook_url=webhook,
        language=options.get("language"),
        version=options.get("version"),
        where="input.",
    )


def avatar_generation_input(value: Any, where: str = "input.") -> GenerateInput:
    """The flat shape of the JavaScript example's `AvatarGenerationInput` and of the REST body."""
    if not isinstance(value, dict):
        raise bad_request("`$input` is required (an object with service, text, avatarId)")
    _service(value.get("service"), f"{where}service")
    return _checked(
        text=value.get("text"),
        avatar_id=value.get("avatarId"),
        voice=value.get("voice"),
        webhook_url=value.get("webhookUrl"),
        language=value.get("language"),
        version=value.get("version"),
        where=where,
    )


def _service(value: Any, name: str) -> None:
    if value != SERVICE:
        raise bad_request(f"{name} must be {SERVICE!r} (got {value!r})")


def _checked(
    *, text: Any, avatar_id: Any, voice: Any, webhook_url: Any, language: Any, version: Any, where: str
) -> GenerateInput:
    if not isinstance(text, str) or not text.strip():
        raise bad_request(f"{where}text is required (a non-empty string)")
    if len(text) > pricing.LONG_MAX_CHARS:
        raise bad_request(
            f"{where}text is longer than 2 minutes of speech "
            f"({len(text)} characters; at most {pricing.LONG_MAX_CHARS} at {pricing.CHARS_PER_SECOND} a second)"
        )
    if not isinstance(avatar_id, str) or not avatar_id.strip():
        raise bad_request(f"{where}avatarId is required (a non-empty string)")
    for name, optional in (("voice", voice), ("language", language), ("version", version)):
        if optional is not None and not isinstance(optional, str):
            raise bad_request(f"{where}{name} must be a string")
    if version is not None and version not in VERSIONS:
        raise bad_request(f"{where}version must be one of {', '.join(VERSIONS)}")
    if webhook_url is not None:
        _webhook_url(webhook_url, f"{where}webhookUrl")
    return GenerateInput(text, avatar_id, voice, webhook_url, language, version)


def _webhook_url(value: Any, name: str) -> None:
    error: ApiError = bad_request(f"{name} must be an absolute http(s) URL")
    if not isinstance(value, str):
        raise error
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise error from None
    if parts.scheme not in ("http", "https") or not host:
        raise error
