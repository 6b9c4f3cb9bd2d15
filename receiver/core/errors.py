"""The one root exception and the subclasses a caller can act on.

HTTP status codes are chosen in the app layer (`receiver.inbound.handler`), never here.
"""

from __future__ import annotations


class ReceiverError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ReceiverError):
    """A setting is missing or malformed; the message names the setting and the fix."""


class SignatureError(ReceiverError):
    """A webhook's signature header is missing, malformed or does not match."""


class PayloadError(ReceiverError):
    """A webhook body is not a JSON object with string `id` and `status`."""


class IdempotencyKeyError(ReceiverError):
    """A webhook's idempotency key header is too long or not printable ASCII."""


class BodyTooLarge(ReceiverError):
    """A request body went past the configured limit."""


class ClientGone(ReceiverError):
    """The sender disconnected before its whole body arrived."""


class DatabaseUnavailable(ReceiverError):
    """PostgreSQL could not be reached or the transaction could not commit."""


class SecretDecryptError(ReceiverError):
    """A secret stored at rest does not open under the configured master key."""


class NotFound(ReceiverError):
    """A named row (endpoint, subscription, ...) does not exist."""


class AlreadyExists(ReceiverError):
    """A named row (endpoint, subscription, ...) exists already."""
