"""What a video costs and how long it runs, predictably from its text.

The documentation prices a short video (up to 30 s) at 50-100 credits and a
long one (30 s to 2 min) at 200-500. Speech runs at about 15 characters a
second, so with n = len(text):

    duration = round(n / 15, 2) seconds
    short (n <= 450):        cost = 50 + (50 * n) // 450              -> 50..100
    long  (450 < n <= 1800): cost = 200 + (300 * (n - 450)) // 1350  -> 200..500

Text longer than 1800 characters (over 2 minutes) is refused with BAD_REQUEST.
"""

from __future__ import annotations

CHARS_PER_SECOND = 15
SHORT_MAX_CHARS = 30 * CHARS_PER_SECOND  # 450
LONG_MAX_CHARS = 120 * CHARS_PER_SECOND  # 1800


def duration(text: str) -> float:
    """Seconds of speech for `text` (rounded to hundredths)."""
    return round(len(text) / CHARS_PER_SECOND, 2)


def is_long(text: str) -> bool:
    """A long video is one that would speak for more than 30 seconds."""
    return len(text) > SHORT_MAX_CHARS


def cost(text: str) -> int:
    """Credits charged for a video of `text`, scaled by length within its band."""
    n = len(text)
    if n <= SHORT_MAX_CHARS:
        return 50 + (50 * n) // SHORT_MAX_CHARS
    n = min(n, LONG_MAX_CHARS)
    return 200 + (300 * (n - SHORT_MAX_CHARS)) // (LONG_MAX_CHARS - SHORT_MAX_CHARS)
