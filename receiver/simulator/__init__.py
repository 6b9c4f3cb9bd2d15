"""A local stand-in for Doitong's generation API (`receiver simulate`).

It answers the documented GraphQL (`POST /graphql`: `generate`, `avatar`) and
REST (`POST /v1/avatar`, `GET /v1/avatar/{id}`) requests with the documented
shapes, errors, credits and rate limits, runs each job through
`processing` → `completed`/`failed`, and sends real signed webhooks with
retries and optional faults (duplicates, reordering, drops, forged
signatures), counting what it injected so a test or demo can check itself.

    config = SimulatorConfig(accounts=(Account("key"),), webhook_secret="s", latency=0.1)
    async with server.running(config) as (simulator, url):
        ...

Modules: `config` (settings and plans), `pricing` (credits and durations),
`ratelimit`, `inputs` (request parsing and validation), `jobs` (a job and its
documented renderings), `state` (accounts, credits, jobs), `webhooks`
(signed delivery with retries and per-webhook faults), `lifecycle` (when each
job's webhooks go out), `stats`, `app` (the Starlette app), `server`
(`Simulator` and serving it with uvicorn), `cli` (`receiver simulate`).
"""

from __future__ import annotations

from receiver.simulator.config import Account, SimulatorConfig
from receiver.simulator.server import Simulator, running

__all__ = ["Account", "Simulator", "SimulatorConfig", "running"]
