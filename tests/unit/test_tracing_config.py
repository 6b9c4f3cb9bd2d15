"""When tracing is on (the standard OTEL_* variables decide, once, at start-up), what a bad value
says, and log lines that carry the ids of the span they were written in."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from receiver.core import tracing
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.core.logs import JsonFormatter, TextFormatter

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no endpoint: off
    ],
)
def test_on_only_when_an_endpoint_is_set_and_the_sdk_is_not_disabled(environ: dict[str, str], on: bool) -> None:
    assert Settings.from_env(environ).tracing is on


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT: '127.0.0.1:4318' is not"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not supported"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'udp'"),
    ],
)
def test_a_bad_value_stops_start_up_with_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as raised:
        Settings.from_env(environ)
    assert "\n" not in str(raised.value)


def test_the_traces_protocol_wins_over_the_general_one() -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert Settings.from_env(environ).otlp_protocol == "http/protobuf"


def test_grpc_without_its_exporter_names_the_package_to_install() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the gRPC exporter is installed here")
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        tracing.setup(settings)


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    tracing.use(provider)
    yield provider
    tracing.shutdown()


def _record() -> logging.LogRecord:
    return logging.LogRecord("receiver.access", logging.INFO, __file__, 1, "request", None, None)


def test_log_lines_carry_the_current_spans_ids_when_tracing_is_on(provider: TracerProvider) -> None:
    with tracing.span("work") as span:
        line = orjson.loads(JsonFormatter(traced=True).format(_record()))
        text = TextFormatter(traced=True).format(_record())
        untraced = orjson.loads(JsonFormatter().format(_record()))
    context = span.get_span_context()
    ids = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    assert (line["trace_id"], line["span_id"]) == ids
    assert text.endswith(f" trace_id={ids[0]} span_id={ids[1]}")
    assert "trace_id" not in untraced  # tracing off: not even looked up
    # Outside any span there is nothing to carry.
    assert "trace_id" not in orjson.loads(JsonFormatter(traced=True).format(_record()))
