"""A local OTLP/HTTP endpoint that takes span batches and throws them away, for the `--otel`
runs of bench/ingest.py and bench/publish.py: the receiver pays for making, batching, encoding
and sending its spans, as it would to a collector, and nothing is kept.

It runs in a thread of the bench process (the bench itself is idle while wrk or the publisher
work) and counts what it was sent, so the report can say that spans did arrive.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import _processes


class OtlpSink:
    """POST /v1/traces answered 200 with an empty ExportTraceServiceResponse."""

    def __init__(self) -> None:
        self.port = _processes.free_port()
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                with sink._lock:
                    sink.requests += 1
                    sink.bytes += length
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: one line per batch would flood the bench's output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a receiver process needs to trace every request into this sink."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_TRACES_SAMPLER": "always_on"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
