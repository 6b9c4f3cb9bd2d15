"""Who may use the console: the token, login sessions, bearer calls, CSRF and the login rate limit.

There is one credential, RECEIVER_CONSOLE_TOKEN. A person signs in with it once and gets a
session cookie; a script sends it as `Authorization: Bearer …` on every call.

- The session cookie is `<payload>.<signature>`: the payload (a random session id and an
  expiry) signed with HMAC-SHA256 under a key derived from the token, so changing the token
  ends every session, and nothing is stored server-side. HttpOnly, SameSite=Strict, Path
  /console, Secure when the request came over https.
- The CSRF token of a session is HMAC(key, "csrf" + session id): a form carries it, a POST
  without it (or with another session's) is refused. SameSite=Strict alone would do in current
  browsers; the token also covers older ones and same-site attackers. Bearer calls carry no
  cookie for a forger to ride on, so they need none.
- Tokens are compared in constant time (HMAC digests of equal length, whatever was sent), and
  wrong ones are rate-limited per client address: after MAX_FAILURES within FAILURE_WINDOW every
  attempt from it, right or wrong, is refused until the window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

import orjson

from receiver.core import base64url

COOKIE = "receiver_console"
SESSION_SECONDS = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
# Addresses tracked by the rate limit at most; the least recently failing are forgotten first,
# so a flood of addresses cannot grow the table without bound.
MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a request: a signed-in session or a bearer-token script."""

    kind: Literal["session", "bearer"]
    session_id: str | None  # the session's random id (session actors only)
    client: str | None  # the client address

    @property
    def session_digest(self) -> str | None:
        """What the audit log keeps of the session: enough to tell sessions apart, not to forge one."""
        if self.session_id is None:
            return None
        return hashlib.sha256(self.session_id.encode()).hexdigest()[:12]


class Keys:
    """Everything derived from the console token."""

    def __init__(self, token: str) -> None:
        self._token_digest = _digest(token)
        self._key = hmac.new(token.encode(), b"doitong-receiver console session v1", hashlib.sha256).digest()

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the token, in time independent of where they differ or their lengths."""
        return hmac.compare_digest(_digest(given), self._token_digest)

    def new_session(self, now: float | None = None) -> tuple[str, str, int]:
        """(cookie value, session id, expiry as a Unix time) of a fresh session."""
        expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
        session_id = secrets.token_hex(16)
        payload = base64url.encode(orjson.dumps({"sid": session_id, "exp": expires}))
        return f"{payload}.{self._sign('session', payload)}", session_id, expires

    def session(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id in a cookie value, when the signature holds and it has not expired."""
        if not cookie or len(cookie) > 512:
            return None
        payload, dot, signature = cookie.partition(".")
        if not dot or not hmac.compare_digest(signature.encode(), self._sign("session", payload).encode()):
            return None
        try:
            document = orjson.loads(base64url.decode(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(document, dict):
            return None
        session_id, expires = document.get("sid"), document.get("exp")
        if not isinstance(session_id, str) or not isinstance(expires, int):
            return None
        if expires <= (now if now is not None else time.time()):
            return None
        return session_id

    def csrf(self, session_id: str) -> str:
        """The CSRF token forms of this session carry."""
        return self._sign("csrf", session_id)

    def csrf_matches(self, session_id: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf(session_id).encode())

    def _sign(self, purpose: str, value: str) -> str:
        return base64url.encode(hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())


def bearer(authorization: str | None) -> str | None:
    """The token in an `Authorization: Bearer …` header, if that is what it holds."""
    if not authorization:
        return None
    scheme, _, given = authorization.partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


class FailureLimit:
    """Wrong tokens per client address within a sliding window."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        moment = now if now is not None else time.monotonic()
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        while failures and failures[0] <= moment - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        if len(failures) < self.max_failures:
            return 0.0
        return failures[0] + self.window - moment

    def failed(self, client: str, now: float | None = None) -> None:
        moment = now if now is not None else time.monotonic()
        failures = self._failures.setdefault(client, deque())
        failures.append(moment)
        self._failures.move_to_end(client)
        while len(failures) > self.max_failures:
            failures.popleft()
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
