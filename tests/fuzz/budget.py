"""How long each fuzz target runs, and the inputs several targets share.

Hypothesis has no wall-clock budget, so each target names a number of examples
tuned to about 20 s on a CI machine; FUZZ_SCALE multiplies every one of them
(HYPOTHESIS_PROFILE=long is FUZZ_SCALE=50, about a quarter of an hour per target).
The settings are applied per target, not as a loaded profile, so the other tests
that use Hypothesis (schemathesis) keep their own settings.
"""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_PROFILE_SCALE = {"fuzz": 1.0, "long": 50.0}


def scale() -> float:
    explicit = os.environ.get("FUZZ_SCALE", "").strip()
    if explicit:
        return float(explicit)
    return _PROFILE_SCALE.get(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"), 1.0)


def fuzz(examples: int) -> settings:
    """Settings for one target: `examples` at FUZZ_SCALE 1, no per-example deadline (a slow example
    is not a failure here; the benchmarks measure speed), every health check off (large and
    filtered inputs are the point)."""
    return settings(
        max_examples=max(1, round(examples * scale())),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# Characters a fuzzer should try: every code point, lone surrogates included (os.environ carries
# undecodable bytes as surrogates), and the odd ones weighted up so they are not one in a million.
ODD_CHARACTERS = (
    "\x00\t\n\r\x0b\x0c\x1c\x1f\x7f\x85\xa0"  # NUL, controls, latin-1's NEL and no-break space
    "\u1680\u2000\u2028\u200b\u3000\ufeff\ufffd"  # Unicode spaces, separators, BOM, replacement
    "\ud800\udcff"  # lone surrogates
    "\xb2\u0661\u0662\u0969"  # digits str.isdigit() and int() take: superscript, Arabic-Indic, Devanagari
)
any_character = st.one_of(
    st.characters(exclude_categories=()),
    st.sampled_from(ODD_CHARACTERS),
    st.sampled_from(string.printable),
)
any_text = st.text(any_character, max_size=200)
# What a header value can be once uvicorn has parsed it (h11 or httptools), decoded as latin-1 as the
# handler does: any byte but NUL, CR and LF.
header_byte_values = st.binary(max_size=300).map(lambda raw: raw.translate(None, b"\x00\r\n"))
header_text = header_byte_values.map(lambda raw: raw.decode("latin-1"))


def json_values(max_leaves: int = 30) -> st.SearchStrategy[object]:
    """Any JSON value as Python builds it: odd strings, huge integers, floats, nested containers."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**60), max_value=10**60),
        st.floats(allow_nan=False, allow_infinity=False),
        any_text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: object, kind: str) -> object:
    """`leaf` inside `depth` lists or objects."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value
