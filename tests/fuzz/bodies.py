"""Webhook and job bodies for the fuzz targets: raw bytes, any JSON, documented payloads with
odd values, and deep nesting past every parser's and serialiser's limit."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from tests.fuzz import budget


def encoded(value: object, ascii_only: bool) -> bytes:
    """`value` as JSON bytes: \\u escapes or raw UTF-8 (lone surrogates as the invalid bytes they make)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def deeply_nested(depth: int, kind: str) -> bytes:
    """`depth` levels of lists or objects, written directly (json.dumps would hit Python's recursion limit)."""
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def webhook_documents(draw: st.DrawFn) -> bytes:
    """A body shaped like Doitong's, each field either plausible or any JSON value, with optional
    deep nesting in `metadata`."""
    plausible = {
        "id": st.text(min_size=1, max_size=20) | budget.any_text,
        "status": st.sampled_from(["submitted", "processing", "completed", "failed", "COMPLETED", "queued"])
        | budget.any_text,
        "url": st.just("https://cdn.doitong.com/a.mp4") | budget.any_text,
        "service": st.just("hedra") | budget.any_text,
        "createdAt": st.datetimes().map(lambda d: d.isoformat()) | budget.any_text | st.just("9999-12-31T23:59-05:00"),
        "completedAt": st.datetimes().map(lambda d: d.isoformat() + "Z") | budget.any_text,
    }
    document: dict[str, object] = {}
    for name, strategy in plausible.items():
        # Mostly plausible, so that most bodies get past the `id` and `status` checks to the rest.
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice < 7:
            document[name] = draw(strategy)
        elif choice < 9:
            document[name] = draw(budget.json_values(5))
    metadata = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "duration": st.floats() | st.integers() | budget.json_values(3),
                "width": st.integers() | st.floats() | budget.json_values(3),
                "height": st.integers(min_value=-(2**70), max_value=2**70),
            },
        )
        | budget.json_values()
    )
    document["metadata"] = metadata
    extra = draw(st.dictionaries(budget.any_text, budget.json_values(10), max_size=3))
    body = encoded({**extra, **document}, draw(st.booleans()))
    depth = draw(st.sampled_from([0, 0, 0, 50, 253, 254, 255, 300, 1023, 1024, 1025, 5000]))
    if depth and body.endswith(b"}"):
        # Nest the deep value under `metadata` (ingest re-serialises that) or another field.
        field = draw(st.sampled_from([b"metadata", b"deep"]))
        kind = draw(st.sampled_from(["list", "dict"]))
        value = deeply_nested(depth, kind if field == b"deep" else "dict")
        body = body[:-1] + (b"," if body != b"{}" else b"") + b'"' + field + b'":' + value + b"}"
    return body


any_bytes = st.binary(max_size=2000)
any_json = st.builds(encoded, budget.json_values(), st.booleans())
nested_json = st.builds(deeply_nested, st.integers(min_value=1, max_value=3000), st.sampled_from(["list", "dict"]))
webhook_bodies = st.one_of(any_bytes, any_json, nested_json, webhook_documents(), webhook_documents())
