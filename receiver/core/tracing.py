"""OpenTelemetry traces over OTLP, on when the standard OTEL_* variables ask for them.

`Settings.tracing` decides at start-up (an OTLP endpoint is set and OTEL_SDK_DISABLED is not
`true`); `setup()` then installs the SDK's tracer provider, whose exporter, sampler, resource and
batch processor read the rest of the OTEL_* variables themselves (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*...).

Off, nothing here runs on a request: the webhook handler and the publisher's sends check the
one boolean and take their untraced path, and the spans of the slower paths (reconciliation,
`receiver submit`, replay) go to the API's no-op tracer, which records and sends nothing.

The context crosses process boundaries as W3C Trace Context (`traceparent`, `tracestate`):
from the caller of a webhook, into `outbox_events` (`w3c()`), and out to subscribers and
brokers (`headers()`). It is always W3C, whatever OTEL_PROPAGATORS says, because it is also
what the database stores.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver import __version__
from receiver.core.config import Settings
from receiver.core.errors import ConfigError

SERVICE_NAME = "doitong-receiver"
GRPC_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"
# Probes and scrapes every few seconds would bury the traces people look for.
_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_CARRIED = (b"traceparent", b"tracestate")

_W3C = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None  # the SDK's TracerProvider once set up (the SDK is imported only then)

Attributes = Mapping[str, AttributeValue]


def setup(settings: Settings) -> None:
    """Install the SDK's tracer provider with an OTLP exporter, when `settings.tracing`; its
    spans are flushed at exit (the provider's own atexit hook, which SIGTERM reaches too:
    every process turns it into a clean exit)."""
    if not settings.tracing:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The variables name the service; "doitong-receiver" only when they do not.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    use(provider)
    trace.set_tracer_provider(provider)


def _exporter(settings: Settings) -> Any:
    if settings.otlp_protocol == "grpc":
        try:
            # Not a dependency: grpcio is large, and http/protobuf is the default.
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: grpc needs the package {GRPC_PACKAGE}; "
                f"pip install {GRPC_PACKAGE}, or use http/protobuf"
            ) from None
        return grpc.OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def use(provider: trace.TracerProvider) -> None:
    """Make spans with `provider` from now on (setup(); tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _tracer = provider.get_tracer("receiver", __version__)
    _provider = provider


def shutdown() -> None:
    """Export what is still queued and stop (also done at exit)."""
    global _tracer, _provider
    provider, _provider = _provider, None
    _tracer = trace.NoOpTracer()
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
    parent: Context | None = None,
    links: Sequence[Link] = (),
) -> AbstractContextManager[Span]:
    """A span, current inside the `with` block; a child of the current span, or of `parent` when
    given (`Context()` makes it the root of a new trace). An exception escaping the block is
    recorded and sets the status to ERROR."""
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes, links=links)


def failed(target: Span, description: str, error_type: str) -> None:
    """Mark `target` as failed: status ERROR and the semantic conventions' `error.type`."""
    target.set_status(Status(StatusCode.ERROR, description))
    target.set_attribute("error.type", error_type)


def w3c(target: Span | None = None) -> tuple[str | None, str | None]:
    """`traceparent` and `tracestate` of `target` (default: the current span): what a row stores
    to be continued later; (None, None) when no span is being traced."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(target) if target is not None else None)
    return carrier.get("traceparent"), carrier.get("tracestate")


def headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span, for a request or message that
    carries the trace on; empty when no span is being traced."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def context_of(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The stored context to continue, or None when there is none (or it is not W3C)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    found = _W3C.extract(carrier, context=Context())
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def link_to(traceparent: str | None, tracestate: str | None = None) -> Link | None:
    """A link to a stored context (a replay's original trace), or None."""
    found = context_of(traceparent, tracestate)
    return Link(trace.get_current_span(found).get_span_context()) if found is not None else None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as hex, for log lines; None outside any span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class ServerSpans:
    """Pure ASGI middleware, put in front only when tracing is on: one SERVER span per HTTP
    request (probes and /metrics excepted), continuing the caller's `traceparent`, current
    while the request and its access log line run.

    Our own rather than opentelemetry-instrumentation-asgi: that middleware also makes a span
    per `receive` and `send` message unless told not to, and pulls in its own dependency tree
    for one span; this is the one span, with the attributes the HTTP conventions ask for.
    `route(scope)` names the matched route after the app has run (None: unknown)."""

    def __init__(self, app: ASGIApp, route: Callable[[Scope], str | None]) -> None:
        self.app = app
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {}
        for name, value in scope["headers"]:
            if name in _CARRIED:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if scope.get("server"):
            attributes["server.address"], attributes["server.port"] = scope["server"][0], scope["server"][1]
        if scope.get("client"):
            attributes["client.address"] = scope["client"][0]
        parent = _W3C.extract(carrier, context=Context()) if carrier else Context()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        name = "HTTP" if method == "_OTHER" else method
        with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes) as server:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = self._route(scope)
                if route is not None:
                    server.update_name(f"{name} {route}")
                    server.set_attribute("http.route", route)
                server.set_attribute("http.response.status_code", status)
                if status >= 500:  # a 4xx is the client's error, not the server's (HTTP conventions)
                    failed(server, f"HTTP {status}", str(status))
